//! Portability proof: the SHARED run loop (`kvmkit_runloop::RunLoop`) drives
//! a scripted s390x vCPU (`kvmkit_core::ScriptedVcpu<S390x>`) whose
//! `kvm_run` areas are laid out, big-endian, as an s390x kernel lays them
//! out (offsets from the header-checked `uapi` mirror). The "guest" prints
//! "hi" on the SCLP VT220 console (two `SERVC` interceptions with SCCBs in
//! guest memory), reads a device register over MMIO, and halts with a
//! disabled-wait PSW. No KVM, no s390x host.

use kvmkit_arch_s390x::{
    icpt, S390Io, S390x, Sclp, ServiceSignal, KVM_RUN_SIZE, SCLP_CMD_WRITE_EVENT_DATA,
    SCLP_CMD_WRITE_EVENT_MASK, SCLP_RC_NORMAL_COMPLETION,
};
use kvmkit_core::{ScriptedVcpu, SystemEventKind, VcpuId};
use kvmkit_runloop::{Buses, MmioBus, RunLoop, VcpuEvent};
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use vm_device::bus::{MmioAddress, MmioAddressOffset};
use vm_device::MutDeviceMmio;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

// Offsets in s390x's struct kvm_run (tests/uapi.rs checks them all).
const EXIT_REASON: usize = 8;
const PSW_MASK: usize = 32;
const PSW_ADDR: usize = 40;
const UNION: usize = 48;
const GPRS: usize = 328; // kvm_run.s.regs.gprs

const KVM_EXIT_MMIO: u32 = 6;
const KVM_EXIT_S390_SIEIC: u32 = 13;
const KVM_EXIT_S390_RESET: u32 = 14;
const KVM_EXIT_SYSTEM_EVENT: u32 = 24;

const MASK_SCCB: u64 = 0x3000;
const DATA_SCCB: u64 = 0x4000;
const DEVICE: u64 = 0x1000_0000;

fn area(reason: u32, psw_addr: u64) -> Vec<u8> {
    let mut v = vec![0u8; 4096];
    assert!(v.len() >= KVM_RUN_SIZE);
    v[EXIT_REASON..EXIT_REASON + 4].copy_from_slice(&reason.to_be_bytes());
    // 64-bit addressing, condition code 3 left over from earlier code.
    v[PSW_MASK..PSW_MASK + 8].copy_from_slice(&0x0000_3001_8000_0000u64.to_be_bytes());
    v[PSW_ADDR..PSW_ADDR + 8].copy_from_slice(&psw_addr.to_be_bytes());
    v
}

/// `servc %r2,%r3` (B220 0023) with R2 = command, R3 = SCCB address.
fn servc(command: u32, sccb: u64, psw_addr: u64) -> Vec<u8> {
    let mut v = area(KVM_EXIT_S390_SIEIC, psw_addr);
    v[UNION] = icpt::INSTRUCTION;
    v[UNION + 2..UNION + 4].copy_from_slice(&0xb220u16.to_be_bytes());
    v[UNION + 4..UNION + 8].copy_from_slice(&0x0023_0000u32.to_be_bytes());
    v[GPRS + 16..GPRS + 24].copy_from_slice(&u64::from(command).to_be_bytes());
    v[GPRS + 24..GPRS + 32].copy_from_slice(&sccb.to_be_bytes());
    v
}

/// An MMIO read of `len` bytes.
fn mmio_read(addr: u64, len: u32) -> Vec<u8> {
    let mut v = area(KVM_EXIT_MMIO, 0x1_0010);
    v[UNION..UNION + 8].copy_from_slice(&addr.to_be_bytes());
    v[UNION + 16..UNION + 20].copy_from_slice(&len.to_be_bytes());
    v
}

/// A disabled-wait interception: how an s390x guest halts.
fn disabled_wait() -> Vec<u8> {
    let mut v = area(KVM_EXIT_S390_SIEIC, 0x1_0020);
    v[PSW_MASK..PSW_MASK + 8].copy_from_slice(&0x0002_0001_8000_0000u64.to_be_bytes());
    v[UNION] = icpt::WAIT;
    v
}

#[derive(Clone, Default)]
struct Console(Arc<Mutex<Vec<u8>>>);

impl Write for Console {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[derive(Default)]
struct Signals(Mutex<Vec<u32>>);

impl ServiceSignal for Signals {
    fn raise_service_signal(&self, param: u32) -> std::io::Result<()> {
        self.0.lock().unwrap().push(param);
        Ok(())
    }
}

struct Register(u32);

impl MutDeviceMmio for Register {
    fn mmio_read(&mut self, _: MmioAddress, _: MmioAddressOffset, data: &mut [u8]) {
        data.copy_from_slice(&self.0.to_be_bytes()[..data.len()]);
    }
    fn mmio_write(&mut self, _: MmioAddress, _: MmioAddressOffset, data: &[u8]) {
        let mut b = [0u8; 4];
        b[..data.len()].copy_from_slice(data);
        self.0 = u32::from_be_bytes(b);
    }
}

/// The SCCBs the guest built: event mask (VT220 both ways, mask length 4)
/// and one VT220 event buffer with "hi".
fn guest_memory() -> Arc<GuestMemoryMmap<()>> {
    let mem = Arc::new(GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x1_0000)]).unwrap());
    let mut mask = vec![0u8; 28];
    mask[0..2].copy_from_slice(&28u16.to_be_bytes());
    mask[10..12].copy_from_slice(&4u16.to_be_bytes());
    mask[12..16].copy_from_slice(&0x40u32.to_be_bytes());
    mask[16..20].copy_from_slice(&0x40u32.to_be_bytes());
    mem.write_slice(&mask, GuestAddress(MASK_SCCB)).unwrap();
    let mut data = vec![0u8; 8];
    data[0..2].copy_from_slice(&16u16.to_be_bytes());
    data.extend(8u16.to_be_bytes());
    data.extend([0x1a, 0, 0, 0]);
    data.extend(b"hi");
    mem.write_slice(&data, GuestAddress(DATA_SCCB)).unwrap();
    mem
}

fn run_to_final(
    areas: Vec<Vec<u8>>,
    io: S390Io,
    mmio: MmioBus,
) -> (Vec<VcpuEvent>, ScriptedVcpu<S390x>, u64) {
    let buses = Arc::new(Buses::<S390x>::new(mmio, io));
    let vcpu = ScriptedVcpu::<S390x>::new(VcpuId(0), areas);
    let (rl, rx) = RunLoop::start(vec![vcpu], buses).unwrap();
    let mut events = Vec::new();
    loop {
        let r = rx.recv_timeout(Duration::from_secs(10)).expect("an event");
        assert_eq!(r.vcpu, VcpuId(0));
        let fin = r.event.is_final();
        events.push(r.event);
        if fin {
            break;
        }
    }
    let mut vcpus = rl.stop();
    let (vcpu, unhandled) = vcpus.pop().expect("the vCPU comes back");
    (events, vcpu, unhandled)
}

#[test]
fn guest_prints_hi_reads_a_device_and_halts() {
    let mem = guest_memory();
    let console = Console::default();
    let signals = Arc::new(Signals::default());
    let sclp =
        Sclp::new(mem.clone(), Box::new(console.clone())).with_service_signal(signals.clone());
    let mut mmio = MmioBus::new();
    mmio.register(DEVICE, 0x1000, Arc::new(Mutex::new(Register(0xdead_beef))))
        .unwrap();
    let (events, vcpu, unhandled) = run_to_final(
        vec![
            servc(SCLP_CMD_WRITE_EVENT_MASK, MASK_SCCB, 0x1_0004),
            servc(SCLP_CMD_WRITE_EVENT_DATA, DATA_SCCB, 0x1_0008),
            mmio_read(DEVICE, 4),
            disabled_wait(),
        ],
        S390Io::with_sclp(sclp),
        mmio,
    );

    assert_eq!(unhandled, 0);
    // The console got the guest's text; each SCCB completed normally and
    // was signalled with its address.
    assert_eq!(&*console.0.lock().unwrap(), b"hi");
    assert_eq!(*signals.0.lock().unwrap(), vec![0x3000, 0x4000]);
    for sccb in [MASK_SCCB, DATA_SCCB] {
        let rc: [u8; 2] = mem.read_obj(GuestAddress(sccb + 6)).unwrap();
        assert_eq!(u16::from_be_bytes(rc), SCLP_RC_NORMAL_COMPLETION);
    }
    let accepted: u8 = mem.read_obj(GuestAddress(DATA_SCCB + 11)).unwrap();
    assert_eq!(accepted, 0x80);

    // The only event is the final one: the disabled wait.
    match &events[..] {
        [VcpuEvent::ArchStop { reason }] => {
            assert!(reason.starts_with("disabled wait"), "{reason}")
        }
        e => panic!("{e:?}"),
    }

    // What the loop wrote back into the kvm_run areas: condition code 0 in
    // each SERVC's PSW (the kernel loads it on the next entry) and the
    // device's bytes in the MMIO exit.
    let done = vcpu.completed();
    assert_eq!(done.len(), 4);
    for a in &done[..2] {
        let mask = u64::from_be_bytes(a[PSW_MASK..PSW_MASK + 8].try_into().unwrap());
        assert_eq!((mask >> 44) & 3, 0, "condition code");
    }
    assert_eq!(done[2][UNION + 8..UNION + 12], [0xde, 0xad, 0xbe, 0xef]);
}

#[test]
fn system_event_and_reset_end_the_vcpu() {
    let mut ev = area(KVM_EXIT_SYSTEM_EVENT, 0);
    ev[UNION..UNION + 4].copy_from_slice(&1u32.to_be_bytes());
    let (events, _, _) = run_to_final(vec![ev], S390Io::new(), MmioBus::new());
    assert!(matches!(
        events[..],
        [VcpuEvent::SystemEvent {
            kind: SystemEventKind::Shutdown,
            ..
        }]
    ));

    let mut reset = area(KVM_EXIT_S390_RESET, 0);
    reset[UNION..UNION + 8].copy_from_slice(&16u64.to_be_bytes());
    let (events, _, _) = run_to_final(vec![reset], S390Io::new(), MmioBus::new());
    match &events[..] {
        [VcpuEvent::SystemEvent {
            kind: SystemEventKind::Reset,
            ..
        }] => {}
        e => panic!("{e:?}"),
    }
}

#[test]
fn a_service_call_without_an_sclp_is_reported_not_fatal() {
    let (events, _, unhandled) = run_to_final(
        vec![
            servc(SCLP_CMD_WRITE_EVENT_DATA, DATA_SCCB, 0x1_0004),
            disabled_wait(),
        ],
        S390Io::new(),
        MmioBus::new(),
    );
    assert!(matches!(
        events[0],
        VcpuEvent::UnhandledAccess {
            space: "sclp",
            addr: DATA_SCCB,
            write: true
        }
    ));
    assert!(matches!(events[1], VcpuEvent::ArchStop { .. }));
    assert_eq!(unhandled, 1);
}
