//! The VMM's generic core (`run_machine`) instantiated for all three
//! architectures on this host: each runs a scripted vCPU whose `kvm_run`
//! areas are laid out as that architecture's kernel lays them out (offsets
//! from the arch crate's header-checked `uapi_facts`, its byte order), through
//! the shared run loop and the arch's own decoder, to the same `VmmExit`.

use kvmkit_arch_powerpc::{PaprIo, Ppc64};
use kvmkit_arch_s390x::{S390Io, S390x};
use kvmkit_arch_x86_64::{PortIoBus, X86_64};
use kvmkit_core::{Arch, ScriptedVcpu, VcpuId};
use kvmkit_runloop::{Buses, MmioBus};
use kvmkit_vmm_reference::devices::PlatformEvent;
use kvmkit_vmm_reference::{
    run_machine, run_machine_with, ControlRequest, MachineControl, MachineEvent, MachineObserver,
    MachineStatus, RunStatus, ShutdownCause, VmmExit,
};
use std::collections::BTreeMap;
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use vm_device::bus::{MmioAddress, MmioAddressOffset};
use vm_device::MutDeviceMmio;

const KVM_EXIT_MMIO: u32 = 6;
const KVM_EXIT_SYSTEM_EVENT: u32 = 24;
const KVM_SYSTEM_EVENT_SHUTDOWN: u32 = 1;
const DEVICE: u64 = 0x1000_0000;

/// Builds `kvm_run` areas for one architecture from its facts.
struct Layout {
    facts: BTreeMap<String, u64>,
    big_endian: bool,
}

impl Layout {
    fn off(&self, field: &str) -> usize {
        usize::try_from(self.facts[&format!("kvm_run.{field}.offset")]).expect("small offset")
    }

    fn put(&self, v: &mut [u8], field: &str, x: u64, len: usize) {
        let off = self.off(field);
        let b = if self.big_endian {
            x.to_be_bytes()
        } else {
            x.to_le_bytes()
        };
        let bytes = if self.big_endian {
            &b[8 - len..]
        } else {
            &b[..len]
        };
        v[off..off + len].copy_from_slice(bytes);
    }

    fn area(&self, reason: u32) -> Vec<u8> {
        let mut v = vec![0u8; 4096 + 512];
        self.put(&mut v, "exit_reason", u64::from(reason), 4);
        v
    }

    /// A 4-byte guest read of the device register.
    fn mmio_read(&self) -> Vec<u8> {
        let mut v = self.area(KVM_EXIT_MMIO);
        self.put(&mut v, "mmio.phys_addr", DEVICE, 8);
        self.put(&mut v, "mmio.len", 4, 4);
        v
    }

    fn power_off(&self) -> Vec<u8> {
        let mut v = self.area(KVM_EXIT_SYSTEM_EVENT);
        self.put(
            &mut v,
            "system_event.type",
            u64::from(KVM_SYSTEM_EVENT_SHUTDOWN),
            4,
        );
        v
    }
}

/// A device register that counts reads and answers 0x11223344.
struct Reg(Arc<Mutex<u32>>);

impl MutDeviceMmio for Reg {
    fn mmio_read(&mut self, _: MmioAddress, _: MmioAddressOffset, data: &mut [u8]) {
        *self.0.lock().unwrap() += 1;
        data.copy_from_slice(&0x1122_3344u32.to_le_bytes()[..data.len()]);
    }
    fn mmio_write(&mut self, _: MmioAddress, _: MmioAddressOffset, _: &[u8]) {}
}

/// Runs the same guest story on architecture `A` through `run_machine`.
fn run_on<A: Arch>(layout: Layout, arch_io: A::ArchIo) {
    let reads = Arc::new(Mutex::new(0));
    let mut mmio = MmioBus::new();
    mmio.register(DEVICE, 0x1000, Arc::new(Mutex::new(Reg(reads.clone()))))
        .unwrap();
    let buses = Arc::new(Buses::<A>::new(mmio, arch_io));
    let vcpu = ScriptedVcpu::<A>::new(VcpuId(0), vec![layout.mmio_read(), layout.power_off()]);
    let (_tx, platform) = channel::<PlatformEvent>();
    let (exit, mut vcpus) = run_machine(vec![vcpu], buses, platform).unwrap();
    assert_eq!(exit, VmmExit::PowerOff, "{}", A::NAME);
    assert_eq!(
        *reads.lock().unwrap(),
        1,
        "{}: the device was read once",
        A::NAME
    );
    let vcpu = vcpus.pop().unwrap();
    let read = &vcpu.completed()[0];
    let data = layout.off("mmio.data");
    assert_eq!(
        read[data..data + 4],
        0x1122_3344u32.to_le_bytes(),
        "{}",
        A::NAME
    );
}

#[test]
fn the_generic_core_runs_x86_64() {
    let layout = Layout {
        facts: kvmkit_arch_x86_64::uapi_facts(),
        big_endian: false,
    };
    run_on::<X86_64>(layout, PortIoBus::new().into());
}

#[test]
fn the_generic_core_runs_powerpc() {
    let layout = Layout {
        facts: kvmkit_arch_powerpc::uapi_facts(),
        big_endian: false,
    };
    run_on::<Ppc64>(layout, PaprIo::new(Box::new(std::io::sink())));
}

#[test]
fn the_generic_core_runs_s390x() {
    let layout = Layout {
        facts: kvmkit_arch_s390x::uapi_facts(),
        big_endian: true,
    };
    run_on::<S390x>(layout, S390Io::new());
}

/// Forwards the machine loop's events to a channel.
struct Events(Mutex<Sender<MachineEvent>>);

impl MachineObserver for Events {
    fn machine_event(&self, e: MachineEvent) {
        let _ = self.0.lock().unwrap().send(e);
    }
}

/// Starts the generic core with a control channel on one scripted x86
/// vCPU that reads the device once, then idles until stopped.
#[allow(clippy::type_complexity)]
fn controlled() -> (
    Sender<ControlRequest>,
    Receiver<MachineEvent>,
    Arc<MachineStatus>,
    Sender<PlatformEvent>,
    std::thread::JoinHandle<VmmExit>,
    Arc<Mutex<u32>>,
) {
    let layout = Layout {
        facts: kvmkit_arch_x86_64::uapi_facts(),
        big_endian: false,
    };
    let reads = Arc::new(Mutex::new(0));
    let mut mmio = MmioBus::new();
    mmio.register(DEVICE, 0x1000, Arc::new(Mutex::new(Reg(reads.clone()))))
        .unwrap();
    let buses = Arc::new(Buses::<X86_64>::new(mmio, PortIoBus::new().into()));
    let vcpu = ScriptedVcpu::<X86_64>::new(VcpuId(0), vec![layout.mmio_read()]);
    let (etx, erx) = channel();
    let status = Arc::new(MachineStatus::new());
    let observer: Arc<dyn MachineObserver> = Arc::new(Events(Mutex::new(etx)));
    let (control, requests) = MachineControl::channel(status.clone(), Some(observer));
    let (ptx, platform) = channel::<PlatformEvent>();
    let h = std::thread::spawn(move || {
        run_machine_with(vec![vcpu], buses, platform, control)
            .unwrap()
            .0
    });
    (requests, erx, status, ptx, h, reads)
}

fn ask(
    requests: &Sender<ControlRequest>,
    make: fn(Sender<Result<(), kvmkit_runloop::Error>>) -> ControlRequest,
) {
    let (tx, rx) = channel();
    requests.send(make(tx)).unwrap();
    rx.recv_timeout(Duration::from_secs(60))
        .expect("the machine loop answers")
        .expect("the request succeeds");
}

#[test]
fn the_generic_core_pauses_resumes_and_quits_on_request() {
    let (requests, events, status, _platform, h, reads) = controlled();
    assert_eq!(status.get(), RunStatus::Running);
    ask(&requests, ControlRequest::Pause);
    assert_eq!(status.get(), RunStatus::Paused);
    assert_eq!(events.recv().unwrap(), MachineEvent::Stopped);
    // Pausing a paused machine: nothing happens, nothing is reported.
    ask(&requests, ControlRequest::Pause);
    ask(&requests, ControlRequest::Resume);
    assert_eq!(status.get(), RunStatus::Running);
    assert_eq!(events.recv().unwrap(), MachineEvent::Resumed);
    ask(&requests, ControlRequest::Resume);
    requests.send(ControlRequest::Quit).unwrap();
    assert_eq!(h.join().unwrap(), VmmExit::Quit);
    assert_eq!(
        events.recv().unwrap(),
        MachineEvent::Shutdown(ShutdownCause::HostQmpQuit)
    );
    assert!(events.try_recv().is_err(), "no other event");
    assert_eq!(status.get(), RunStatus::Shutdown);
    assert_eq!(*reads.lock().unwrap(), 1, "the vCPU ran its script");
}

#[test]
fn the_generic_core_reports_why_it_ended() {
    for (event, exit, cause) in [
        (
            PlatformEvent::PowerOff,
            VmmExit::PowerOff,
            ShutdownCause::GuestShutdown,
        ),
        (
            PlatformEvent::Reset,
            VmmExit::Reset,
            ShutdownCause::GuestReset,
        ),
        (PlatformEvent::Quit, VmmExit::Quit, ShutdownCause::HostUi),
    ] {
        let (requests, events, status, platform, h, _) = controlled();
        // The end comes while paused: the paused vCPU is stopped too.
        ask(&requests, ControlRequest::Pause);
        assert_eq!(events.recv().unwrap(), MachineEvent::Stopped);
        platform.send(event).unwrap();
        assert_eq!(h.join().unwrap(), exit);
        assert_eq!(events.recv().unwrap(), MachineEvent::Shutdown(cause));
        assert_eq!(status.get(), RunStatus::Shutdown);
        assert_eq!(cause.by_guest(), event != PlatformEvent::Quit);
        // A request after the end gets no answer (and no wait).
        let (tx, rx) = channel();
        let _ = requests.send(ControlRequest::Pause(tx));
        assert!(rx.recv_timeout(Duration::from_secs(60)).is_err());
    }
}
