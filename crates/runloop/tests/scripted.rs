//! The run loop driven by a scripted vCPU backend: `kvm_run` areas laid out
//! as the x86_64 kernel lays them out, decoded by the real arch decoder. No KVM.

use kvmkit_arch_x86_64::{PortIoBus, X86_64};
use kvmkit_core::{ScriptedVcpu, SystemEventKind, VcpuId};
use kvmkit_runloop::{Buses, MmioBus, RunLoop, VcpuEvent};
use std::sync::Arc;
use std::time::Duration;

fn area(reason: u32, union: &[u8]) -> Vec<u8> {
    let mut v = vec![0u8; 4096 + 64];
    v[8..12].copy_from_slice(&reason.to_ne_bytes());
    v[32..32 + union.len()].copy_from_slice(union);
    v
}

fn script(areas: Vec<Vec<u8>>) -> Scripted {
    ScriptedVcpu::new(VcpuId(7), areas)
}

type Scripted = ScriptedVcpu<X86_64>;

fn run_one(s: Scripted) -> Vec<VcpuEvent> {
    let buses = Arc::new(Buses::<X86_64>::new(
        MmioBus::new(),
        PortIoBus::new().into(),
    ));
    let (rl, rx) = RunLoop::start(vec![s], buses).unwrap();
    let mut out = Vec::new();
    while let Ok(r) = rx.recv_timeout(Duration::from_secs(10)) {
        assert_eq!(r.vcpu, VcpuId(7));
        let fin = r.event.is_final();
        out.push(r.event);
        if fin {
            break;
        }
    }
    drop(rl);
    out
}

#[test]
fn final_events_from_kernel_laid_out_exits() {
    // KVM_EXIT_SYSTEM_EVENT, type SHUTDOWN.
    let ev = run_one(script(vec![area(24, &1u32.to_ne_bytes())]));
    assert!(matches!(
        ev[..],
        [VcpuEvent::SystemEvent {
            kind: SystemEventKind::Shutdown,
            ..
        }]
    ));
    // KVM_EXIT_INTERNAL_ERROR, emulation failure with two data words.
    let mut u = vec![];
    u.extend(1u32.to_ne_bytes());
    u.extend(2u32.to_ne_bytes());
    u.extend(0xaau64.to_ne_bytes());
    u.extend(0xbbu64.to_ne_bytes());
    let ev = run_one(script(vec![area(17, &u)]));
    match &ev[..] {
        [VcpuEvent::InternalError { suberror: 1, data }] => assert_eq!(data, &[0xaa, 0xbb]),
        e => panic!("{e:?}"),
    }
    // KVM_EXIT_FAIL_ENTRY.
    let ev = run_one(script(vec![area(9, &0x80000021u64.to_ne_bytes())]));
    assert!(matches!(
        ev[..],
        [VcpuEvent::FailEntry { reason: 0x80000021 }]
    ));
    // A malformed area is an error event naming the vCPU, not a panic.
    let mut bad = area(6, &[]);
    bad[32 + 16] = 99; // mmio.len = 99
    let ev = run_one(script(vec![bad]));
    match &ev[..] {
        [VcpuEvent::Error(e)] => assert_eq!(e.to_string(), "cannot decode the exit of vCPU 7"),
        e => panic!("{e:?}"),
    }
}

#[test]
fn reports_then_final() {
    // An unknown exit reason, an unhandled port write (rep of 2), then HLT.
    let mut io = vec![1u8, 1, 0x34, 0x12];
    io.extend(2u32.to_ne_bytes());
    io.extend(4096u64.to_ne_bytes());
    let ev = run_one(script(vec![area(999, &[]), area(2, &io), area(5, &[])]));
    assert!(matches!(ev[0], VcpuEvent::UnknownExit { reason: 999 }));
    assert!(matches!(
        ev[1],
        VcpuEvent::UnhandledAccess {
            space: "pio",
            addr: 0x1234,
            write: true
        }
    ));
    assert!(matches!(ev[2], VcpuEvent::Halted));
}

#[test]
fn debug_exit_waits_for_resume() {
    let mut dbg = vec![0u8; 8];
    dbg.extend(0x4000u64.to_ne_bytes());
    let buses = Arc::new(Buses::<X86_64>::new(
        MmioBus::new(),
        PortIoBus::new().into(),
    ));
    let (rl, rx) = RunLoop::start(vec![script(vec![area(4, &dbg), area(5, &[])])], buses).unwrap();
    let r = rx.recv_timeout(Duration::from_secs(10)).unwrap();
    assert!(matches!(r.event, VcpuEvent::Debug { pc: 0x4000 }));
    assert!(
        rx.recv_timeout(Duration::from_millis(100)).is_err(),
        "parked until resume"
    );
    rl.pause(Duration::from_secs(10))
        .expect("a debug-parked vCPU counts as paused");
    rl.resume().unwrap();
    let r = rx.recv_timeout(Duration::from_secs(10)).unwrap();
    assert!(matches!(r.event, VcpuEvent::Halted), "{r:?}");
    assert!(rl.resume().is_ok());
    drop(rl);
}

/// `KVM_EXIT_DIRTY_RING_FULL`.
const DIRTY_RING_FULL: u32 = 31;

fn run_with(s: Scripted, buses: Buses<X86_64>) -> Vec<VcpuEvent> {
    let (rl, rx) = RunLoop::start(vec![s], Arc::new(buses)).unwrap();
    let mut out = Vec::new();
    while let Ok(r) = rx.recv_timeout(Duration::from_secs(10)) {
        let fin = r.event.is_final();
        out.push(r.event);
        if fin {
            break;
        }
    }
    drop(rl);
    out
}

fn pio_buses() -> Buses<X86_64> {
    Buses::new(MmioBus::new(), PortIoBus::new().into())
}

#[test]
fn dirty_ring_full_without_hook_ends_the_vcpu() {
    // The HLT after the full ring must never be reached: re-entering with a
    // full ring would only exit again.
    let ev = run_with(
        script(vec![area(DIRTY_RING_FULL, &[]), area(5, &[])]),
        pio_buses(),
    );
    match &ev[..] {
        [VcpuEvent::DirtyRingFull { reason }] => {
            assert_eq!(reason, kvmkit_runloop::NO_DIRTY_RING_HOOK);
            assert_eq!(reason, "dirty ring full but nothing harvests it");
        }
        e => panic!("{e:?}"),
    }
}

#[test]
fn dirty_ring_full_calls_the_hook_then_runs_on() {
    use std::sync::Mutex;
    let calls = Arc::new(Mutex::new(Vec::new()));
    let seen = calls.clone();
    let buses = pio_buses().with_dirty_ring_full(Arc::new(move |vcpu| {
        seen.lock().unwrap().push(vcpu);
        Ok(())
    }));
    let ev = run_with(
        script(vec![
            area(DIRTY_RING_FULL, &[]),
            area(DIRTY_RING_FULL, &[]),
            area(5, &[]),
        ]),
        buses,
    );
    // No event for a handled full ring: the next one is the HLT.
    assert!(matches!(ev[..], [VcpuEvent::Halted]), "{ev:?}");
    assert_eq!(*calls.lock().unwrap(), vec![VcpuId(7), VcpuId(7)]);
}

#[test]
fn dirty_ring_hook_failure_is_a_final_event_with_its_causes() {
    #[derive(Debug, thiserror::Error)]
    #[error("harvesting the rings failed")]
    struct Outer(#[source] std::io::Error);
    let buses = pio_buses().with_dirty_ring_full(Arc::new(|vcpu| {
        Err(Box::new(Outer(std::io::Error::other(format!(
            "KVM_RESET_DIRTY_RINGS failed for vCPU {vcpu}"
        )))))
    }));
    let ev = run_with(
        script(vec![area(DIRTY_RING_FULL, &[]), area(5, &[])]),
        buses,
    );
    match &ev[..] {
        [VcpuEvent::DirtyRingFull { reason }] => assert_eq!(
            reason,
            "harvesting the rings failed: KVM_RESET_DIRTY_RINGS failed for vCPU 7"
        ),
        e => panic!("{e:?}"),
    }
}

#[test]
fn buses_report_their_dirty_ring_hook() {
    let plain = pio_buses();
    assert!(!plain.has_dirty_ring_full());
    assert!(format!("{plain:?}").contains("dirty_ring_full: false"));
    let e = plain.dirty_ring_full(VcpuId(2)).unwrap_err();
    assert_eq!(e.to_string(), kvmkit_runloop::NO_DIRTY_RING_HOOK);
    let hooked = pio_buses().with_dirty_ring_full(Arc::new(|_| Ok(())));
    assert!(hooked.has_dirty_ring_full());
    assert!(format!("{hooked:?}").contains("dirty_ring_full: true"));
    assert!(hooked.dirty_ring_full(VcpuId(2)).is_ok());
}
