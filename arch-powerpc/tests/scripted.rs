//! Portability, shown: the SHARED run loop of kvmkit-runloop drives a
//! PowerPC vCPU whose `kvm_run` areas are laid out as the ppc64 kernel lays
//! them out (offsets verified against the header by tests/uapi.rs), decoded
//! by this crate's `decode_exit` and dispatched to its `PaprIo` and to a
//! device on the MMIO bus. No KVM, no PowerPC host.
//!
//! The guest: prints "hi" with two `H_PUT_TERM_CHAR` hypercalls, makes an
//! hypercall nobody implements, reads a device register, and powers off.

use kvmkit_arch_powerpc::{PaprIo, Ppc64, H_FUNCTION, H_PUT_TERM_CHAR, KVM_RUN_MIN_LEN, VTY_REG};
use kvmkit_core::{ScriptedVcpu, SystemEventKind, VcpuId};
use kvmkit_runloop::{Buses, MmioBus, RunLoop, VcpuEvent};
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use vm_device::bus::{MmioAddress, MmioAddressOffset};
use vm_device::MutDeviceMmio;

const AREA: usize = 4096;
const KVM_EXIT_MMIO: u32 = 6;
const KVM_EXIT_PAPR_HCALL: u32 = 19;
const KVM_EXIT_SYSTEM_EVENT: u32 = 24;
const DEVICE: u64 = 0x2000_0000;
/// What `ret` holds before the VMM answers, so that an answer is visible.
const STALE: u64 = 0xdead_beef;

fn area(reason: u32) -> Vec<u8> {
    let mut v = vec![0u8; AREA];
    v[8..12].copy_from_slice(&reason.to_ne_bytes());
    v
}

fn put64(v: &mut [u8], off: usize, x: u64) {
    v[off..off + 8].copy_from_slice(&x.to_ne_bytes());
}

fn get64(v: &[u8], off: usize) -> u64 {
    u64::from_ne_bytes(v[off..off + 8].try_into().unwrap())
}

/// `kvm_run.papr_hcall`: nr at 32, ret at 40, args[i] at 48 + 8i.
fn hcall(nr: u64, args: &[u64]) -> Vec<u8> {
    let mut v = area(KVM_EXIT_PAPR_HCALL);
    put64(&mut v, 32, nr);
    put64(&mut v, 40, STALE);
    for (i, a) in args.iter().enumerate() {
        put64(&mut v, 48 + 8 * i, *a);
    }
    v
}

/// One character for H_PUT_TERM_CHAR: packed big-endian in args[2].
fn put_char(c: u8) -> Vec<u8> {
    hcall(H_PUT_TERM_CHAR, &[VTY_REG, 1, u64::from(c) << 56, 0])
}

/// `kvm_run.mmio`: phys_addr at 32, data at 40, len at 48, is_write at 52.
fn mmio_read(addr: u64, len: u32) -> Vec<u8> {
    let mut v = area(KVM_EXIT_MMIO);
    put64(&mut v, 32, addr);
    v[48..52].copy_from_slice(&len.to_ne_bytes());
    v
}

/// `kvm_run.system_event`: type at 32 (1 = shutdown).
fn power_off() -> Vec<u8> {
    let mut v = area(KVM_EXIT_SYSTEM_EVENT);
    v[32..36].copy_from_slice(&1u32.to_ne_bytes());
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

struct IdRegister;

impl MutDeviceMmio for IdRegister {
    fn mmio_read(&mut self, _: MmioAddress, offset: MmioAddressOffset, data: &mut [u8]) {
        assert_eq!(offset, 4);
        data.copy_from_slice(&[0x50, 0x50, 0x43, 0x21]);
    }
    fn mmio_write(&mut self, _: MmioAddress, _: MmioAddressOffset, _: &[u8]) {}
}

#[test]
fn shared_run_loop_runs_a_powerpc_guest() {
    const { assert!(AREA >= KVM_RUN_MIN_LEN) };
    let console = Console::default();
    let mut mmio = MmioBus::new();
    mmio.register(DEVICE, 0x1000, Arc::new(Mutex::new(IdRegister)))
        .unwrap();
    let buses = Arc::new(Buses::<Ppc64>::new(
        mmio,
        PaprIo::new(Box::new(console.clone())),
    ));
    let script = vec![
        put_char(b'h'),
        put_char(b'i'),
        hcall(0x9999, &[]),
        mmio_read(DEVICE + 4, 4),
        power_off(),
    ];
    let vcpu = ScriptedVcpu::<Ppc64>::new(VcpuId(0), script);
    let (rl, rx) = RunLoop::start(vec![vcpu], buses).unwrap();

    let mut events = Vec::new();
    while let Ok(r) = rx.recv_timeout(Duration::from_secs(10)) {
        assert_eq!(r.vcpu, VcpuId(0));
        let last = r.event.is_final();
        events.push(r.event);
        if last {
            break;
        }
    }
    assert!(
        matches!(
            events[..],
            [
                VcpuEvent::UnhandledAccess {
                    space: "hcall",
                    addr: 0x9999,
                    write: false
                },
                VcpuEvent::SystemEvent {
                    kind: SystemEventKind::Shutdown,
                    ..
                }
            ]
        ),
        "{events:?}"
    );
    assert_eq!(console.0.lock().unwrap().as_slice(), b"hi");

    let mut vcpus = rl.stop();
    assert_eq!(vcpus.len(), 1);
    let (vcpu, unhandled) = vcpus.pop().unwrap();
    assert_eq!(unhandled, 1);
    let done = vcpu.completed();
    assert_eq!(done.len(), 5);
    // The hypercalls were answered in kvm_run.papr_hcall.ret (the guest's r3).
    assert_eq!(get64(&done[0], 40), 0, "H_SUCCESS for 'h'");
    assert_eq!(get64(&done[1], 40), 0, "H_SUCCESS for 'i'");
    assert_eq!(get64(&done[2], 40), H_FUNCTION as u64);
    // The device's answer landed in kvm_run.mmio.data.
    assert_eq!(done[3][40..44], [0x50, 0x50, 0x43, 0x21]);
}
