//! The run loop on real KVM with tiny real-mode guests.

mod common;

use common::{guest, Probe, CODE};
use kvmkit_arch_x86_64::{PortIoBus, X86_64};
use kvmkit_runloop::{Buses, MmioBus, RunLoop, RunState, VcpuEvent};
use kvmkit_test_support::kvm_or_skip;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(30);

#[test]
fn kvm_pio_in_and_out() {
    let Some(kvm) = kvm_or_skip!(X86_64) else {
        return;
    };
    // in al, 0x60 ; out 0x61, al ; mov bl, al ; hlt
    let g = guest(&kvm, &[0xe4, 0x60, 0xe6, 0x61, 0x88, 0xc3, 0xf4]);
    let (probe, writes) = Probe::new(0x5a);
    let mut pio = PortIoBus::new();
    pio.register(0x60, 2, Arc::new(probe)).unwrap();
    let buses = Arc::new(Buses::<X86_64>::new(MmioBus::new(), pio.into()));
    let (rl, events) = RunLoop::start(vec![g.vcpu(0, 1)], buses).unwrap();
    let r = events.recv_timeout(WAIT).unwrap();
    assert!(matches!(r.event, VcpuEvent::Halted), "{r:?}");
    assert_eq!(r.pc, Some(CODE + 7));
    assert_eq!(writes.recv_timeout(WAIT).unwrap(), (1, vec![0x5a]));
    let mut vcpus = rl.stop();
    let (vcpu, unhandled) = vcpus.pop().unwrap();
    assert_eq!(unhandled, 0);
    let regs = vcpu.get_regs().unwrap();
    assert_eq!(regs.rax & 0xff, 0x5a, "the device's value landed in AL");
    assert_eq!(regs.rbx & 0xff, 0x5a);
}

#[test]
fn kvm_mmio_read_and_write() {
    let Some(kvm) = kvm_or_skip!(X86_64) else {
        return;
    };
    // mov ax, 0x2000 ; mov ds, ax ; mov eax, [0x10] ; inc eax ; mov [0x20], eax ; hlt
    let code = [
        0xb8, 0x00, 0x20, 0x8e, 0xd8, 0x66, 0xa1, 0x10, 0x00, 0x66, 0x40, 0x66, 0xa3, 0x20, 0x00,
        0xf4,
    ];
    let g = guest(&kvm, &code);
    let (probe, writes) = Probe::new(0x1122_3344);
    let mut mmio = MmioBus::new();
    mmio.register(0x20000, 0x1000, Arc::new(probe)).unwrap();
    let buses = Arc::new(Buses::<X86_64>::new(mmio, PortIoBus::new().into()));
    let (rl, events) = RunLoop::start(vec![g.vcpu(0, 1)], buses).unwrap();
    let r = events.recv_timeout(WAIT).unwrap();
    assert!(matches!(r.event, VcpuEvent::Halted), "{r:?}");
    let (off, bytes) = writes.recv_timeout(WAIT).unwrap();
    assert_eq!(off, 0x20);
    assert_eq!(bytes, 0x1122_3345u32.to_le_bytes());
    drop(rl);
}

#[test]
fn kvm_hlt_is_a_final_event() {
    let Some(kvm) = kvm_or_skip!(X86_64) else {
        return;
    };
    let g = guest(&kvm, &[0x90, 0xf4]); // nop ; hlt
    let (rl, events) = RunLoop::start(vec![g.vcpu(0, 1)], Arc::new(Buses::default())).unwrap();
    let r = events.recv_timeout(WAIT).unwrap();
    assert!(matches!(r.event, VcpuEvent::Halted) && r.event.is_final());
    assert_eq!(r.pc, Some(CODE + 2));
    assert_eq!(rl.live_vcpus(), 0);
}

#[test]
fn kvm_unmapped_mmio_reads_all_ones_and_is_reported() {
    let Some(kvm) = kvm_or_skip!(X86_64) else {
        return;
    };
    // mov ax, 0x3000 ; mov ds, ax ; mov al, [0] ; out 0x61, al ; hlt
    let g = guest(
        &kvm,
        &[
            0xb8, 0x00, 0x30, 0x8e, 0xd8, 0xa0, 0x00, 0x00, 0xe6, 0x61, 0xf4,
        ],
    );
    let (probe, writes) = Probe::new(0);
    let mut pio = PortIoBus::new();
    pio.register(0x61, 1, Arc::new(probe)).unwrap();
    let buses = Arc::new(Buses::<X86_64>::new(MmioBus::new(), pio.into()));
    let (rl, events) = RunLoop::start(vec![g.vcpu(0, 1)], buses).unwrap();
    let r = events.recv_timeout(WAIT).unwrap();
    assert!(
        matches!(
            r.event,
            VcpuEvent::UnhandledAccess {
                space: "mmio",
                addr: 0x30000,
                write: false
            }
        ),
        "{r:?}"
    );
    assert!(!r.event.is_final());
    assert_eq!(writes.recv_timeout(WAIT).unwrap(), (0, vec![0xff]));
    let r = events.recv_timeout(WAIT).unwrap();
    assert!(matches!(r.event, VcpuEvent::Halted), "{r:?}");
    let (_, unhandled) = rl.stop().pop().unwrap();
    assert_eq!(unhandled, 1);
}

#[test]
fn kvm_triple_fault_is_a_shutdown_event() {
    let Some(kvm) = kvm_or_skip!(X86_64) else {
        return;
    };
    // Protected mode with an empty IDT: ud2 -> #UD cannot be delivered ->
    // #GP cannot -> #DF cannot -> triple fault.
    let g = guest(&kvm, &[0x0f, 0x0b]);
    let (_rl, events) =
        RunLoop::start(vec![g.protected_vcpu()], Arc::new(Buses::default())).unwrap();
    let r = events.recv_timeout(WAIT).unwrap();
    assert!(matches!(r.event, VcpuEvent::Shutdown), "{r:?}");
    assert_eq!(r.pc, Some(CODE), "the faulting ud2");
}

#[test]
fn kvm_four_vcpus_run_at_once_and_report_their_ids() {
    let Some(kvm) = kvm_or_skip!(X86_64) else {
        return;
    };
    // mov eax, 1 ; cpuid ; shr ebx, 24 ; mov al, bl ; out 0x70, al ; jmp $
    let code = [
        0x66, 0xb8, 0x01, 0x00, 0x00, 0x00, 0x0f, 0xa2, 0x66, 0xc1, 0xeb, 0x18, 0x88, 0xd8, 0xe6,
        0x70, 0xeb, 0xfe,
    ];
    let g = guest(&kvm, &code);
    let (probe, writes) = Probe::new(0);
    let mut pio = PortIoBus::new();
    pio.register(0x70, 1, Arc::new(probe)).unwrap();
    let buses = Arc::new(Buses::<X86_64>::new(MmioBus::new(), pio.into()));
    let vcpus = (0..4).map(|i| g.vcpu(i, 4)).collect();
    let (rl, events) = RunLoop::start(vcpus, buses).unwrap();
    let mut ids = BTreeSet::new();
    while ids.len() < 4 {
        let (_, v) = writes
            .recv_timeout(WAIT)
            .expect("every vCPU reports its APIC id");
        ids.insert(v[0]);
    }
    assert_eq!(ids, BTreeSet::from([0, 1, 2, 3]));
    // All four are spinning in guest code at the same time.
    assert_eq!(rl.live_vcpus(), 4);
    let took = rl.pause(WAIT).unwrap();
    println!("pause of 4 spinning vCPUs took {took:?}");
    assert_eq!(rl.state(), RunState::Paused);
    rl.resume().unwrap();
    let stopped = rl.stop();
    assert_eq!(stopped.len(), 4);
    let mut n = 0;
    while let Ok(r) = events.recv_timeout(Duration::from_millis(100)) {
        assert!(matches!(r.event, VcpuEvent::Stopped), "{r:?}");
        n += 1;
    }
    assert_eq!(n, 4);
}

#[test]
fn kvm_spinning_vcpu_is_kicked_paused_and_stopped() {
    let Some(kvm) = kvm_or_skip!(X86_64) else {
        return;
    };
    // out 0x70, al ; jmp $
    let g = guest(&kvm, &[0xe6, 0x70, 0xeb, 0xfe]);
    let (probe, writes) = Probe::new(0);
    let mut pio = PortIoBus::new();
    pio.register(0x70, 1, Arc::new(probe)).unwrap();
    let buses = Arc::new(Buses::<X86_64>::new(MmioBus::new(), pio.into()));
    let (rl, events) = RunLoop::start(vec![g.vcpu(0, 1)], buses).unwrap();
    writes.recv_timeout(WAIT).expect("the guest started");
    for _ in 0..3 {
        let took = rl.pause(WAIT).unwrap();
        println!("pause latency {took:?}");
        rl.resume().unwrap();
    }
    let vcpus = rl.stop();
    assert_eq!(vcpus.len(), 1);
    let r = events.recv_timeout(WAIT).unwrap();
    assert!(matches!(r.event, VcpuEvent::Stopped), "{r:?}");
    let rip = vcpus[0].0.get_regs().unwrap().rip;
    assert_eq!(rip, CODE + 2, "stopped inside the jmp $ loop");
}

/// A port whose reads take a while and say when they start.
struct SlowPort(std::sync::Mutex<std::sync::mpsc::Sender<()>>);

impl vm_device::DevicePio for SlowPort {
    fn pio_read(
        &self,
        _: vm_device::bus::PioAddress,
        _: vm_device::bus::PioAddressOffset,
        data: &mut [u8],
    ) {
        let _ = self.0.lock().unwrap().send(());
        std::thread::sleep(Duration::from_millis(100));
        data.fill(0x5a);
    }
    fn pio_write(
        &self,
        _: vm_device::bus::PioAddress,
        _: vm_device::bus::PioAddressOffset,
        _: &[u8],
    ) {
    }
}

#[test]
fn kvm_pause_during_an_exit_finishes_its_io_first() {
    let Some(kvm) = kvm_or_skip!(X86_64) else {
        return;
    };
    // in al, 0x60 ; hlt
    let g = guest(&kvm, &[0xe4, 0x60, 0xf4]);
    let (tx, started) = std::sync::mpsc::channel();
    let mut pio = PortIoBus::new();
    pio.register(0x60, 1, Arc::new(SlowPort(std::sync::Mutex::new(tx))))
        .unwrap();
    let buses = Arc::new(Buses::<X86_64>::new(MmioBus::new(), pio.into()));
    let (rl, _events) = RunLoop::start(vec![g.vcpu(0, 1)], buses).unwrap();
    // The pause (and its kick) lands while the device is answering.
    started.recv_timeout(WAIT).unwrap();
    rl.pause(WAIT).unwrap();
    let (vcpu, _) = rl.stop().pop().unwrap();
    let regs = vcpu.get_regs().unwrap();
    assert_eq!(regs.rax & 0xff, 0x5a, "the device's answer reached AL");
    assert_eq!(
        regs.rip,
        CODE + 2,
        "RIP is past the `in`, not on the `hlt` yet"
    );
}

#[test]
fn kvm_start_paused_runs_nothing_until_resumed() {
    let Some(kvm) = kvm_or_skip!(X86_64) else {
        return;
    };
    // out 0x61, al ; hlt
    let g = guest(&kvm, &[0xe6, 0x61, 0xf4]);
    let (probe, writes) = Probe::new(0);
    let mut pio = PortIoBus::new();
    pio.register(0x60, 2, Arc::new(probe)).unwrap();
    let buses = Arc::new(Buses::<X86_64>::new(MmioBus::new(), pio.into()));
    let (rl, events) = RunLoop::start_paused(vec![g.vcpu(0, 1)], buses).unwrap();
    assert_eq!(rl.state(), RunState::Paused);
    // Paused already: pause returns at once, and nothing ran.
    rl.pause(WAIT).unwrap();
    assert!(writes.recv_timeout(Duration::from_millis(200)).is_err());
    rl.resume().unwrap();
    assert_eq!(writes.recv_timeout(WAIT).unwrap().0, 1);
    let r = events.recv_timeout(WAIT).unwrap();
    assert!(matches!(r.event, VcpuEvent::Halted), "{r:?}");
}
