//! Memory slots, the x86_64 arch and the run loop composed as a VMM does,
//! on real KVM: PC memory layout with the legacy hole, two vCPUs, port I/O and
//! MMIO devices on the buses.

use kvmkit_arch_x86_64::{BootSetup, CpuidPolicy, PortIoBus, VcpuConfig, X86_64};
use kvmkit_core::{MemoryFlags, VcpuId};
use kvmkit_memory::{pc_layout, SlotTable};
use kvmkit_runloop::{Buses, MmioBus, RunLoop, VcpuEvent};
use kvmkit_test_support::kvm_or_skip;
use std::sync::mpsc::{channel, Sender};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use vm_device::bus::{MmioAddress, MmioAddressOffset, PioAddress, PioAddressOffset};
use vm_device::{DeviceMmio, DevicePio};
use vm_memory::{Bytes, GuestAddress};

const CODE: u64 = 0x10000;

/// Records (port, byte) writes; answers MMIO reads with 0x5c.
struct Recorder(Mutex<Sender<(u64, u8)>>);

impl DevicePio for Recorder {
    fn pio_read(&self, _: PioAddress, _: PioAddressOffset, d: &mut [u8]) {
        d.fill(0)
    }
    fn pio_write(&self, base: PioAddress, off: PioAddressOffset, d: &[u8]) {
        let _ = self.0.lock().unwrap().send((u64::from(base.0 + off), d[0]));
    }
}

impl DeviceMmio for Recorder {
    fn mmio_read(&self, _: MmioAddress, _: MmioAddressOffset, d: &mut [u8]) {
        d.fill(0x5c)
    }
    fn mmio_write(&self, _: MmioAddress, _: MmioAddressOffset, _: &[u8]) {}
}

#[test]
fn kvm_two_vcpus_on_pc_layout_with_devices() {
    let Some(kvm) = kvm_or_skip!(X86_64) else {
        return;
    };
    let vm = Arc::new(kvm.create_vm(&Default::default()).unwrap());
    let mut table = SlotTable::<X86_64>::for_vm(vm.clone()).unwrap();
    // 2 MiB of RAM: [0, 640 KiB) and [1 MiB, 2 MiB + 384 KiB).
    let layout = pc_layout(2 << 20).unwrap();
    assert_eq!(layout[0], (GuestAddress(0), 0xa_0000));
    assert_eq!(layout[1].0, GuestAddress(0x10_0000));
    table.add_ram(&layout, MemoryFlags::NONE).unwrap();
    let mem = table.guest_memory();

    // 32-bit code below 640 KiB:
    //   mov eax, [0x100010]      ; a byte the host put above 1 MiB
    //   out 0x80, al
    //   mov al, [0xa0000]        ; the legacy hole: an MMIO device
    //   out 0x81, al
    //   mov dword [0x100020], 0xcafe
    //   hlt
    let code = [
        0xa1, 0x10, 0x00, 0x10, 0x00, 0xe6, 0x80, 0xa0, 0x00, 0x00, 0x0a, 0x00, 0xe6, 0x81, 0xc7,
        0x05, 0x20, 0x00, 0x10, 0x00, 0xfe, 0xca, 0x00, 0x00, 0xf4,
    ];
    mem.write_slice(&code, GuestAddress(CODE)).unwrap();
    mem.write_obj(0x77u8, GuestAddress(0x10_0010)).unwrap();

    let (tx, writes) = channel();
    let rec = Arc::new(Recorder(Mutex::new(tx)));
    let mut pio = PortIoBus::new();
    pio.register(0x80, 2, rec.clone()).unwrap();
    let mut mmio = MmioBus::new();
    mmio.register(0xa_0000, 0x2_0000, rec).unwrap();
    let buses = Arc::new(Buses::<X86_64>::new(mmio, pio.into()));

    let cfg = VcpuConfig {
        cpuid: Some(CpuidPolicy {
            nr_vcpus: 2,
            hypervisor_bit: true,
        }),
        ..Default::default()
    };
    let vcpus: Vec<_> = (0..2)
        .map(|i| {
            let v = vm.create_vcpu(VcpuId(i), &cfg).unwrap();
            v.setup_boot(
                mem.as_ref(),
                &BootSetup::Protected32 {
                    entry: 0x10000,
                    ebx: 0,
                },
            )
            .unwrap();
            v
        })
        .collect();
    let (rl, events) = RunLoop::start(vcpus, buses).unwrap();
    let mut halted = 0;
    while halted < 2 {
        let r = events.recv_timeout(Duration::from_secs(30)).unwrap();
        assert!(matches!(r.event, VcpuEvent::Halted), "{r:?}");
        assert_eq!(r.pc, Some(CODE + code.len() as u64));
        halted += 1;
    }
    let mut got: Vec<(u64, u8)> = writes.try_iter().collect();
    got.sort();
    assert_eq!(
        got,
        [(0x80, 0x77), (0x80, 0x77), (0x81, 0x5c), (0x81, 0x5c)]
    );
    let v: u32 = mem.read_obj(GuestAddress(0x10_0020)).unwrap();
    assert_eq!(
        v, 0xcafe,
        "the guest's write above 1 MiB is visible to the host"
    );
    assert_eq!(rl.stop().len(), 2);
}
