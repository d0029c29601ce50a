//! Shared set-up for the run-loop KVM tests: a 64 KiB real-mode guest.

#![allow(clippy::cast_possible_truncation)] // small guest-address constants

use kvmkit_arch_x86_64::{BootSetup, CpuidPolicy, VcpuConfig, X86_64};
use kvmkit_core::{Kvm, MemoryFlags, SlotId, UserMemoryRegion, Vcpu, VcpuId, Vm};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Mutex;
use vm_device::bus::{MmioAddress, MmioAddressOffset, PioAddress, PioAddressOffset};
use vm_device::{DeviceMmio, DevicePio};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};

pub const CODE: u64 = 0x1000;

pub struct Guest {
    pub vm: Vm<X86_64>,
    pub mem: GuestMemoryMmap,
}

pub fn guest(kvm: &Kvm<X86_64>, code: &[u8]) -> Guest {
    let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x10000)]).unwrap();
    mem.write_slice(code, GuestAddress(CODE)).unwrap();
    let vm = kvm.create_vm(&Default::default()).unwrap();
    let r = mem.iter().next().unwrap();
    // SAFETY: `mem` lives in the returned `Guest` next to the VM.
    unsafe {
        vm.set_user_memory_region(&UserMemoryRegion {
            slot: SlotId(0),
            flags: MemoryFlags::NONE,
            guest_phys_addr: 0,
            memory_size: r.len(),
            userspace_addr: r.as_ptr() as u64,
        })
    }
    .unwrap();
    Guest { vm, mem }
}

impl Guest {
    /// A vCPU in 32-bit protected mode at `CODE` (flat segments, empty IDT).
    pub fn protected_vcpu(&self) -> Vcpu<X86_64> {
        let vcpu = self
            .vm
            .create_vcpu(VcpuId(0), &VcpuConfig::default())
            .unwrap();
        vcpu.setup_boot(
            &self.mem,
            &BootSetup::Protected32 {
                entry: CODE as u32,
                ebx: 0,
            },
        )
        .unwrap();
        vcpu
    }

    pub fn vcpu(&self, id: u32, nr_vcpus: u32) -> Vcpu<X86_64> {
        let cfg = VcpuConfig {
            cpuid: Some(CpuidPolicy {
                nr_vcpus,
                hypervisor_bit: true,
            }),
            ..Default::default()
        };
        let vcpu = self.vm.create_vcpu(VcpuId(id), &cfg).unwrap();
        vcpu.setup_boot(
            &self.mem,
            &BootSetup::RealMode {
                cs_base: 0,
                ip: CODE as u16,
                sp: 0x8000,
            },
        )
        .unwrap();
        vcpu
    }
}

/// A device that answers reads with `value` and sends (offset, bytes) of
/// every write on a channel.
pub struct Probe {
    value: u64,
    tx: Mutex<Sender<(u64, Vec<u8>)>>,
}

impl Probe {
    pub fn new(value: u64) -> (Self, Receiver<(u64, Vec<u8>)>) {
        let (tx, rx) = channel();
        (
            Probe {
                value,
                tx: Mutex::new(tx),
            },
            rx,
        )
    }

    fn read(&self, data: &mut [u8]) {
        let n = data.len();
        data.copy_from_slice(&self.value.to_le_bytes()[..n]);
    }

    fn write(&self, offset: u64, data: &[u8]) {
        let _ = self.tx.lock().unwrap().send((offset, data.to_vec()));
    }
}

impl DevicePio for Probe {
    fn pio_read(&self, _: PioAddress, _: PioAddressOffset, data: &mut [u8]) {
        self.read(data)
    }
    fn pio_write(&self, _: PioAddress, offset: PioAddressOffset, data: &[u8]) {
        self.write(u64::from(offset), data)
    }
}

impl DeviceMmio for Probe {
    fn mmio_read(&self, _: MmioAddress, _: MmioAddressOffset, data: &mut [u8]) {
        self.read(data)
    }
    fn mmio_write(&self, _: MmioAddress, offset: MmioAddressOffset, data: &[u8]) {
        self.write(offset, data)
    }
}
