//! The dirty tracker on real `/dev/kvm`: every backend, tiny guests.
//!
//! Each scenario runs once per backend (`get`, `manual`, `ring` in the test
//! names). The pages a guest writes are chosen by the test and compared with
//! what the tracker harvests, exactly.

mod common;

use std::collections::BTreeSet;
use std::sync::mpsc::Receiver;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Machine, XorShift, DONE_PORT};
use kvmkit_arch_x86_64::{PortIoBus, X86_64};
use kvmkit_core::{Capability, Kvm, SlotId};
use kvmkit_dirty_log::{damage_rects, Backend, DirtyBitmap, Preference, Rect};
use kvmkit_runloop::{Buses, MmioBus, RunLoop, VcpuEvent, VcpuReport};
use kvmkit_test_support::kvm_or_skip;
use vm_memory::bitmap::AtomicBitmap;
use vm_memory::{Bytes, GuestAddress};

/// How long a test waits for a guest before it fails: a hang guard, not a
/// performance threshold.
const WAIT: Duration = Duration::from_secs(120);

type Vmm = Machine<AtomicBitmap>;

fn get() -> Preference {
    Preference::GetLog
}

fn manual() -> Preference {
    Preference::ManualProtect
}

/// The largest ring KVM allows (65536 entries): the guests of the tests
/// below never fill it, except where a test fills a ring on purpose.
fn ring() -> Preference {
    Preference::Ring { bytes: 1 << 20 }
}

/// The pages of `bm`, as a set.
fn pages(bm: &DirtyBitmap) -> BTreeSet<usize> {
    bm.pages_iter().collect()
}

/// What the first harvest after logging was turned on reports for a slot of
/// `n` pages the guest did not touch: every page with manual protect's
/// INITIALLY_SET, none otherwise.
fn initial(m: &Vmm, n: usize) -> BTreeSet<usize> {
    match m.tracker.backend() {
        Backend::ManualProtect {
            initially_set: true,
        } => (0..n).collect(),
        _ => BTreeSet::new(),
    }
}

/// Harvests and takes `slot`.
fn harvest_take(m: &Vmm, slot: SlotId) -> BTreeSet<usize> {
    m.tracker.harvest().expect("harvest");
    pages(&m.tracker.take(slot).expect("tracked slot"))
}

/// Three slots: 256 pages at 1 MiB, 130 pages at 4 MiB (not a whole number
/// of bitmap words), 4096 pages at 256 MiB.
fn three_slots(m: &mut Vmm) -> [(SlotId, usize); 3] {
    [
        (m.add_logged_slot(0x10_0000, 256 * 0x1000), 256),
        (m.add_logged_slot(0x40_0000, 130 * 0x1000), 130),
        (m.add_logged_slot(0x1000_0000, 4096 * 0x1000), 4096),
    ]
}

fn exact_pages(pref: Preference) {
    let Some(kvm) = kvm_or_skip!(X86_64) else {
        return;
    };
    let mut m = Vmm::new(&kvm, pref);
    let slots = three_slots(&mut m);
    let mut vcpu = m.protected_vcpu();
    for (id, n) in slots {
        assert_eq!(harvest_take(&m, id), initial(&m, n), "slot {id}");
    }
    // Both sides of a word boundary, the first and last page of each slot,
    // and random pages of the big slot.
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    let chosen: [Vec<usize>; 3] = [
        vec![0, 63, 64, 127, 128, 255],
        vec![0, 1, 64, 128, 129],
        rng.distinct(200, 4096),
    ];
    let mut addrs = Vec::new();
    for ((id, _), set) in slots.iter().zip(&chosen) {
        addrs.extend(set.iter().map(|p| m.gpa(*id, *p) + 0x7ff));
    }
    m.write_list(&mut vcpu, &addrs, 0xa5);
    let stats = m.tracker.harvest().expect("harvest");
    for ((id, _), set) in slots.iter().zip(&chosen) {
        let got = m.tracker.take(*id).expect("tracked");
        assert_eq!(pages(&got), set.iter().copied().collect(), "slot {id}");
    }
    let total: usize = chosen.iter().map(Vec::len).sum();
    assert_eq!(stats.kvm_pages, total as u64);
    assert_eq!(stats.host_pages, 0);
    assert_eq!(stats.per_slot.len(), 3);
    // The guest really wrote them.
    let mem = m.table.guest_memory();
    for a in &addrs {
        assert_eq!(mem.read_obj::<u8>(GuestAddress(*a)).unwrap(), 0xa5);
    }
}

#[test]
fn kvm_get_exact_pages() {
    exact_pages(get());
}

#[test]
fn kvm_manual_exact_pages() {
    exact_pages(manual());
}

#[test]
fn kvm_ring_exact_pages() {
    exact_pages(ring());
}

fn epochs(pref: Preference) {
    let Some(kvm) = kvm_or_skip!(X86_64) else {
        return;
    };
    let mut m = Vmm::new(&kvm, pref);
    let slot = m.add_logged_slot(0x10_0000, 512 * 0x1000);
    let mut vcpu = m.protected_vcpu();
    assert_eq!(harvest_take(&m, slot), initial(&m, 512));
    let addrs = |set: &[usize]| -> Vec<u64> { set.iter().map(|p| m.gpa(slot, *p)).collect() };
    let a = [3, 64, 65, 300, 511];
    let b = [4, 63, 200];
    let c = [63, 128, 129, 510];
    // Epoch 1: A.
    m.write_list(&mut vcpu, &addrs(&a), 1);
    assert_eq!(harvest_take(&m, slot), BTreeSet::from(a));
    assert_eq!(m.tracker.log().epoch(slot).map(|e| e.0), Some(2));
    // Epoch 2: B, a harvest, C, a harvest, then one take: nothing is lost
    // between harvests, and A (not written again) is not reported again.
    m.write_list(&mut vcpu, &addrs(&b), 2);
    m.tracker.harvest().unwrap();
    assert_eq!(m.tracker.log().pending_count(slot), b.len());
    m.write_list(&mut vcpu, &addrs(&c), 3);
    let got = harvest_take(&m, slot);
    assert_eq!(got, b.iter().chain(&c).copied().collect());
    // Epoch 3: nothing written, nothing reported: harvested pages were
    // cleared (re-protected) in KVM.
    assert_eq!(harvest_take(&m, slot), BTreeSet::new());
    assert_eq!(harvest_take(&m, slot), BTreeSet::new());
    // Epoch 4: A again: cleared pages come back once written again.
    m.write_list(&mut vcpu, &addrs(&a), 4);
    assert_eq!(harvest_take(&m, slot), BTreeSet::from(a));
    let totals = m.tracker.stats();
    assert!(totals.harvests >= 7);
    let expected = initial(&m, 512).len() + 2 * a.len() + b.len() + c.len();
    assert_eq!(totals.kvm_pages, expected as u64);
    assert_eq!(totals.ring_overflows, 0);
}

#[test]
fn kvm_get_epochs_lose_nothing() {
    epochs(get());
}

#[test]
fn kvm_manual_epochs_lose_nothing() {
    epochs(manual());
}

#[test]
fn kvm_ring_epochs_lose_nothing() {
    epochs(ring());
}

fn vmm_writes(pref: Preference) {
    let Some(kvm) = kvm_or_skip!(X86_64) else {
        return;
    };
    let mut m = Vmm::new(&kvm, pref);
    let slot = m.add_slot(0x10_0000, 200 * 0x1000);
    let mem = m.table.guest_memory();
    // Written before logging: does not count (logging starts clean).
    mem.write_obj(7u64, GuestAddress(m.gpa(slot, 9))).unwrap();
    m.tracker.enable_logging(&mut m.table, slot).unwrap();
    let mut vcpu = m.protected_vcpu();
    assert_eq!(harvest_take(&m, slot), initial(&m, 200));
    // A device writes pages 10, 63..65 (one write across a word boundary)
    // and 199; the guest writes 5 and 10.
    mem.write_obj(1u32, GuestAddress(m.gpa(slot, 10))).unwrap();
    mem.write_slice(&[0xee; 0x2001], GuestAddress(m.gpa(slot, 63) + 0xfff))
        .unwrap();
    mem.write_obj(1u8, GuestAddress(m.gpa(slot, 199) + 0xfff))
        .unwrap();
    m.write_list(&mut vcpu, &[m.gpa(slot, 5), m.gpa(slot, 10)], 9);
    let stats = m.tracker.harvest().unwrap();
    assert_eq!(stats.host_pages, 5, "{stats:?}");
    assert_eq!(stats.kvm_pages, 2, "{stats:?}");
    let got = pages(&m.tracker.take(slot).unwrap());
    assert_eq!(got, BTreeSet::from([5, 10, 63, 64, 65, 199]));
    // The vm-memory bitmap was taken: the next harvest is clean.
    assert_eq!(harvest_take(&m, slot), BTreeSet::new());
    // Device writes between two harvests, without a take, are kept too.
    mem.write_obj(2u8, GuestAddress(m.gpa(slot, 100))).unwrap();
    m.tracker.harvest().unwrap();
    mem.write_obj(2u8, GuestAddress(m.gpa(slot, 101))).unwrap();
    assert_eq!(harvest_take(&m, slot), BTreeSet::from([100, 101]));
}

#[test]
fn kvm_get_vmm_writes_appear() {
    vmm_writes(get());
}

#[test]
fn kvm_manual_vmm_writes_appear() {
    vmm_writes(manual());
}

#[test]
fn kvm_ring_vmm_writes_appear() {
    vmm_writes(ring());
}

/// Waits for the next report that is not the guest's `out` to the done port.
fn next_final(events: &Receiver<VcpuReport>) -> VcpuReport {
    loop {
        let r = events.recv_timeout(WAIT).expect("a vCPU report");
        match r.event {
            VcpuEvent::UnhandledAccess {
                space: "pio",
                addr,
                write: true,
            } if addr == u64::from(DONE_PORT) => continue,
            _ => return r,
        }
    }
}

/// Harvests until every page of `want` has been taken at least once; fails
/// after [`WAIT`] (a hang guard).
fn harvest_until(m: &Vmm, slot: SlotId, want: &BTreeSet<usize>) -> BTreeSet<usize> {
    let t0 = Instant::now();
    let mut seen = BTreeSet::new();
    while !want.is_subset(&seen) {
        assert!(t0.elapsed() < WAIT, "saw only {seen:?} of {want:?}");
        seen.extend(harvest_take(m, slot));
        std::thread::yield_now();
    }
    seen
}

fn toggle_while_running(pref: Preference) {
    let Some(kvm) = kvm_or_skip!(X86_64) else {
        return;
    };
    let mut m = Vmm::new(&kvm, pref);
    // The guest rewrites the 16 pages of `spun` forever; `quiet` is logged
    // all along and never written.
    let spun = m.add_slot(0x20_0000, 16 * 0x1000);
    let quiet = m.add_logged_slot(0x40_0000, 64 * 0x1000);
    let vcpu = m.protected_vcpu();
    m.spin_writer(&vcpu, m.gpa(spun, 0), 16);
    let buses = Buses::<X86_64>::new(MmioBus::new(), PortIoBus::new().into())
        .with_dirty_ring_full(m.tracker.ring_full_hook());
    let (run_loop, events) = RunLoop::start(vec![vcpu], Arc::new(buses)).unwrap();
    let all: BTreeSet<usize> = (0..16).collect();
    assert_eq!(harvest_take(&m, quiet), initial(&m, 64));
    let mut quiet_overflows = m.tracker.stats().ring_overflows;
    for round in 0..3 {
        m.tracker.enable_logging(&mut m.table, spun).unwrap();
        assert!(m.table.slot(spun).unwrap().logs_dirty_pages());
        assert_eq!(harvest_until(&m, spun, &all), all, "round {round}");
        let last = m.tracker.disable_logging(&mut m.table, spun).unwrap();
        assert!(last.pages_iter().all(|p| p < 16));
        assert!(!m.table.slot(spun).unwrap().logs_dirty_pages());
        assert_eq!(m.tracker.tracked(), vec![quiet]);
        // Untracked: harvests go on without it and without errors.
        m.tracker.harvest().unwrap();
        assert!(m.tracker.take(spun).is_none());
        let overflows = m.tracker.stats().ring_overflows;
        let got = harvest_take(&m, quiet);
        // `quiet` is never written; a ring KVM overfilled (see
        // `HarvestStats::ring_overflows`) makes every tracked page dirty.
        if overflows == quiet_overflows {
            assert_eq!(got, BTreeSet::new(), "round {round}");
        }
        quiet_overflows = overflows;
    }
    // The guest ran all along.
    assert!(
        events.try_recv().is_err(),
        "no event from the spinning vCPU"
    );
    let mut vcpus = run_loop.stop();
    assert!(matches!(next_final(&events).event, VcpuEvent::Stopped));
    let (vcpu, _) = vcpus.pop().unwrap();
    // Stopped inside the spinner, where it ran all along.
    let rip = vcpu.get_regs().unwrap().rip;
    assert!(
        (common::SPIN32..common::SPIN32_END).contains(&rip),
        "{rip:#x}"
    );
}

#[test]
fn kvm_get_toggle_logging_while_running() {
    toggle_while_running(get());
}

#[test]
fn kvm_manual_toggle_logging_while_running() {
    toggle_while_running(manual());
}

#[test]
fn kvm_ring_toggle_logging_while_running() {
    toggle_while_running(ring());
}

fn damage(pref: Preference) {
    let Some(kvm) = kvm_or_skip!(X86_64) else {
        return;
    };
    let mut m = Vmm::new(&kvm, pref);
    // A 256x256 framebuffer at 32 bpp with a 1024-byte stride: 4 rows a page.
    let (w, h, bpp, stride) = (256u32, 256u32, 4u32, 1024u32);
    let fb_pages = (h * stride) as usize / 0x1000;
    let fb = m.add_logged_slot(0x80_0000, fb_pages as u64 * 0x1000);
    let mut vcpu = m.protected_vcpu();
    let first = m.tracker.harvest().map(|_| m.tracker.take(fb).unwrap());
    let full = if initial(&m, fb_pages).is_empty() {
        vec![]
    } else {
        vec![Rect {
            x: 0,
            y: 0,
            width: w,
            height: h,
        }]
    };
    assert_eq!(
        damage_rects(&first.unwrap(), 0, w, h, bpp, stride).unwrap(),
        full
    );
    // The guest draws a 10x11 box at (10, 40) and a pixel at (255, 255).
    let base = m.gpa(fb, 0);
    let mut addrs: Vec<u64> = (40..=50u64)
        .flat_map(|y| (10..20u64).map(move |x| base + y * u64::from(stride) + x * 4))
        .collect();
    addrs.push(base + 255 * u64::from(stride) + 255 * 4);
    m.write_list(&mut vcpu, &addrs, 0xff);
    m.tracker.harvest().unwrap();
    let dirty = m.tracker.take(fb).unwrap();
    let rows_per_page = 0x1000 / stride;
    // Damage is page granular: whole pages of rows around the box.
    let top = 40 / rows_per_page * rows_per_page;
    let bottom = (50 / rows_per_page + 1) * rows_per_page;
    assert_eq!(
        damage_rects(&dirty, 0, w, h, bpp, stride).unwrap(),
        vec![
            Rect {
                x: 0,
                y: top,
                width: w,
                height: bottom - top
            },
            Rect {
                x: 0,
                y: h - rows_per_page,
                width: w,
                height: rows_per_page
            },
        ]
    );
    // Nothing drawn since: no damage.
    m.tracker.harvest().unwrap();
    let clean = m.tracker.take(fb).unwrap();
    assert!(damage_rects(&clean, 0, w, h, bpp, stride)
        .unwrap()
        .is_empty());
}

#[test]
fn kvm_get_framebuffer_damage() {
    damage(get());
}

#[test]
fn kvm_manual_framebuffer_damage() {
    damage(manual());
}

#[test]
fn kvm_ring_framebuffer_damage() {
    damage(ring());
}

fn above_4_gib(pref: Preference) {
    let Some(kvm) = kvm_or_skip!(X86_64) else {
        return;
    };
    let mut m = Vmm::new(&kvm, pref);
    let high = m.add_logged_slot(0x1_0000_0000, 1024 * 0x1000);
    let mut vcpu = m.long_mode_vcpu();
    assert_eq!(harvest_take(&m, high), initial(&m, 1024));
    // Every 7th page from page 3.
    m.write_stride(&mut vcpu, m.gpa(high, 3), 7 * 0x1000, 140, 0x42);
    let want: BTreeSet<usize> = (0..140).map(|i| 3 + 7 * i).collect();
    assert_eq!(harvest_take(&m, high), want);
    let mem = m.table.guest_memory();
    assert_eq!(
        mem.read_obj::<u8>(GuestAddress(m.gpa(high, 976))).unwrap(),
        0x42
    );
}

#[test]
fn kvm_get_long_mode_above_4_gib() {
    above_4_gib(get());
}

#[test]
fn kvm_manual_long_mode_above_4_gib() {
    above_4_gib(manual());
}

#[test]
fn kvm_ring_long_mode_above_4_gib() {
    above_4_gib(ring());
}

/// The smallest ring this kernel accepts, and the tracker with it.
fn smallest_ring(kvm: &Kvm<X86_64>) -> Vmm {
    let mut bytes = kvmkit_dirty_log::MIN_RING_BYTES;
    loop {
        let vm = Arc::new(kvm.create_vm(&Default::default()).unwrap());
        match kvmkit_dirty_log::DirtyTracker::new(vm, Preference::Ring { bytes }) {
            Ok(_) => return Vmm::new(kvm, Preference::Ring { bytes }),
            Err(e) => {
                // KVM also wants room for its reserved entries.
                println!("a {bytes}-byte ring was refused: {e}");
                bytes *= 2;
                assert!(bytes <= 1 << 20, "no ring size accepted");
            }
        }
    }
}

#[test]
fn kvm_ring_full_is_harvested_by_the_run_loop_hook() {
    let Some(kvm) = kvm_or_skip!(X86_64) else {
        return;
    };
    let mut m = smallest_ring(&kvm);
    let entries = match m.tracker.backend() {
        Backend::Ring { entries, .. } => entries as usize,
        b => panic!("{b}"),
    };
    // More pages than the ring holds, several times over: every other page
    // of a slot twice that size.
    let n = 3 * entries + 17;
    let slot = m.add_logged_slot(0x10_0000, 2 * n as u64 * 0x1000);
    let written: BTreeSet<usize> = (0..n).map(|i| 2 * i).collect();
    let vcpu = m.protected_vcpu();
    // The list writer, run by the run loop this time.
    let addrs: Vec<u64> = written.iter().map(|p| m.gpa(slot, *p)).collect();
    m.load_list(&vcpu, common::LIST, &addrs, 1);
    let buses = Buses::<X86_64>::new(MmioBus::new(), PortIoBus::new().into())
        .with_dirty_ring_full(m.tracker.ring_full_hook());
    let (run_loop, events) = RunLoop::start(vec![vcpu], Arc::new(buses)).unwrap();
    // The guest gets past `out` to the `hlt` behind it: every full ring was
    // emptied and the vCPU ran on.
    let r = next_final(&events);
    assert!(matches!(r.event, VcpuEvent::Halted), "{r:?}");
    let (vcpu, _) = run_loop.stop().pop().unwrap();
    assert_eq!(vcpu.get_regs().unwrap().rcx, 0, "all {n} writes done");
    let got = harvest_take(&m, slot);
    let stats = m.tracker.stats();
    println!("{n} pages through a {entries}-entry ring: {stats:?}");
    assert!(stats.ring_full >= (n / entries) as u64, "{stats:?}");
    assert_eq!(stats.ignored_entries, 0);
    // No page lost: the hook's harvests and the last one hold all of them.
    assert!(written.is_subset(&got));
    if stats.ring_overflows == 0 {
        // The kernel stopped the vCPU at the soft limit: exactly the pages.
        assert_eq!(got, written);
    } else {
        // The kernel overfilled a ring (this project's PVM host does): the
        // lost entries are unknown, so every page was reported.
        assert_eq!(got, (0..2 * n).collect());
    }
}

#[test]
fn kvm_ring_full_without_hook_stops_the_vcpu() {
    let Some(kvm) = kvm_or_skip!(X86_64) else {
        return;
    };
    let mut m = smallest_ring(&kvm);
    let entries = m.tracker.backend().ring_bytes().unwrap() as usize / 16;
    let n = 2 * entries;
    let slot = m.add_logged_slot(0x10_0000, n as u64 * 0x1000);
    let vcpu = m.protected_vcpu();
    m.spin_writer(&vcpu, m.gpa(slot, 0), u32::try_from(n).unwrap());
    let buses = Buses::<X86_64>::new(MmioBus::new(), PortIoBus::new().into());
    let (run_loop, events) = RunLoop::start(vec![vcpu], Arc::new(buses)).unwrap();
    let r = next_final(&events);
    match r.event {
        VcpuEvent::DirtyRingFull { reason } => {
            assert_eq!(reason, "dirty ring full but nothing harvests it")
        }
        e => panic!("{e:?}"),
    }
    assert_eq!(run_loop.live_vcpus(), 0);
    // The ring still holds the pages: a harvest finds them.
    let got = harvest_take(&m, slot);
    assert!(!got.is_empty() && got.iter().all(|p| *p < n));
    drop(run_loop);
}

fn two_vcpus(pref: Preference) {
    let Some(kvm) = kvm_or_skip!(X86_64) else {
        return;
    };
    let mut m = Vmm::new(&kvm, pref);
    let slot = m.add_logged_slot(0x10_0000, 1024 * 0x1000);
    assert_eq!(harvest_take(&m, slot), initial(&m, 1024));
    // Two vCPUs under the run loop, each writing its own pages (and one
    // page both write), each from its own list.
    let mut rng = XorShift(0x2545_f491_4f6c_dd1d);
    let sets = [rng.distinct(300, 1024), rng.distinct(300, 1024)];
    let vcpus: Vec<_> = (0..2)
        .map(|i| {
            let vcpu = m.protected_vcpu_id(i);
            let mut pages = sets[i as usize].clone();
            pages.push(512);
            let addrs: Vec<u64> = pages.iter().map(|p| m.gpa(slot, *p)).collect();
            m.load_list(&vcpu, common::LIST + u64::from(i) * 0x2_0000, &addrs, 1);
            vcpu
        })
        .collect();
    let buses = Buses::<X86_64>::new(MmioBus::new(), PortIoBus::new().into())
        .with_dirty_ring_full(m.tracker.ring_full_hook());
    let (run_loop, events) = RunLoop::start(vcpus, Arc::new(buses)).unwrap();
    for _ in 0..2 {
        let r = next_final(&events);
        assert!(matches!(r.event, VcpuEvent::Halted), "{r:?}");
    }
    run_loop.stop();
    let mut want: BTreeSet<usize> = sets.iter().flatten().copied().collect();
    want.insert(512);
    assert_eq!(harvest_take(&m, slot), want);
}

#[test]
fn kvm_get_two_vcpus() {
    two_vcpus(get());
}

#[test]
fn kvm_manual_two_vcpus() {
    two_vcpus(manual());
}

#[test]
fn kvm_ring_two_vcpus() {
    two_vcpus(ring());
}

#[test]
fn kvm_auto_chooses_the_best_backend_offered() {
    let Some(kvm) = kvm_or_skip!(X86_64) else {
        return;
    };
    let m = Vmm::new(&kvm, Preference::auto());
    let vm = &m.vm;
    let acq_rel = vm.check_extension(Capability::DIRTY_LOG_RING_ACQ_REL);
    let plain = vm.check_extension(Capability::DIRTY_LOG_RING);
    let manual_flags = vm.check_extension(Capability::MANUAL_DIRTY_LOG_PROTECT2);
    let backend = m.tracker.backend();
    println!("auto chose {backend} (ring caps {acq_rel}/{plain}, manual {manual_flags:#x})");
    if acq_rel > 0 || plain > 0 {
        let max = acq_rel.max(plain) as u32;
        assert_eq!(
            backend,
            Backend::Ring {
                acq_rel: acq_rel > 0,
                entries: kvmkit_dirty_log::DEFAULT_RING_BYTES.min(max) / 16
            }
        );
    } else if manual_flags > 0 {
        assert!(matches!(backend, Backend::ManualProtect { .. }));
    } else {
        assert_eq!(backend, Backend::GetLog);
    }
    // Forcing each backend the kernel offers works; the others are named.
    for (pref, offered) in [
        (manual(), manual_flags > 0),
        (ring(), acq_rel > 0 || plain > 0),
    ] {
        let vm = Arc::new(kvm.create_vm(&Default::default()).unwrap());
        match kvmkit_dirty_log::DirtyTracker::new(vm, pref) {
            Ok(t) => assert!(offered, "{}", t.backend()),
            Err(e) => {
                assert!(!offered, "{e}");
                assert!(e.to_string().contains("KVM_CAP_"));
            }
        }
    }
}

#[test]
fn kvm_errors_name_the_operation() {
    let Some(kvm) = kvm_or_skip!(X86_64) else {
        return;
    };
    // Harvesting a slot KVM does not log: GET_DIRTY_LOG fails naming it.
    let mut m = Vmm::new(&kvm, get());
    let slot = m.add_slot(0x10_0000, 0x4000);
    m.tracker.track(slot, 0x4000).unwrap();
    let e = m.tracker.harvest().unwrap_err();
    assert_eq!(
        e.to_string(),
        format!("KVM_GET_DIRTY_LOG failed for slot {slot}")
    );
    assert!(std::error::Error::source(&e).is_some());
    assert!(matches!(
        m.tracker.track(slot, 0x4000),
        Err(kvmkit_dirty_log::Error::SlotTracked { .. })
    ));
    m.tracker.untrack(slot).unwrap();
    assert!(m.tracker.untrack(slot).is_err());
    // Turning logging on for a slot the table does not have.
    let e = m
        .tracker
        .enable_logging(&mut m.table, SlotId(9))
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "turning dirty logging of slot 9 on or off: no such slot in the table"
    );
    // A table of another VM.
    let mut other = Vmm::new(&kvm, get());
    let id = other.add_slot(0x10_0000, 0x1000);
    let e = m.tracker.enable_logging(&mut other.table, id).unwrap_err();
    assert!(matches!(e, kvmkit_dirty_log::Error::ForeignTable { .. }));
    // Disabling a slot that is not tracked.
    let e = m.tracker.disable_logging(&mut m.table, slot).unwrap_err();
    assert_eq!(e.to_string(), format!("slot {slot} is not tracked"));
    // A ring backend: a vCPU attached twice, a full ring of an unknown vCPU.
    let r = Vmm::new(&kvm, ring());
    let vcpu = r.protected_vcpu();
    let e = r.tracker.attach_vcpu(&vcpu).unwrap_err();
    assert_eq!(
        e.to_string(),
        "attaching the dirty ring of vCPU 0: it is attached already"
    );
    // A full-ring report with nothing in the ring: once may be a race with
    // another harvest, twice in a row is a stuck ring, not a spinning vCPU.
    assert_eq!(
        r.tracker
            .on_ring_full(kvmkit_core::VcpuId(0))
            .unwrap()
            .pages(),
        0
    );
    let e = r.tracker.on_ring_full(kvmkit_core::VcpuId(0)).unwrap_err();
    assert_eq!(
        e.to_string(),
        "the dirty ring of vCPU 0 stays full but holds nothing to collect"
    );
    let e = r.tracker.on_ring_full(kvmkit_core::VcpuId(5)).unwrap_err();
    assert_eq!(
        e.to_string(),
        "the dirty ring of vCPU 5 is full but was never attached to the tracker"
    );
    // Without a ring, attaching is a no-op.
    let g = Vmm::new(&kvm, get());
    let v =
        g.vm.create_vcpu(kvmkit_core::VcpuId(1), &Default::default())
            .unwrap();
    assert!(!g.tracker.attach_vcpu(&v).unwrap());
}

#[test]
fn kvm_manual_clears_only_chunks_with_dirty_pages() {
    let Some(kvm) = kvm_or_skip!(X86_64) else {
        return;
    };
    // 64-page chunks over a 1024-page slot: 16 chunks.
    let mut m = Vmm::with_clear_chunk(&kvm, manual(), 64);
    assert_eq!(m.tracker.clear_chunk_pages(), 64);
    let slot = m.add_logged_slot(0x10_0000, 1024 * 0x1000);
    let mut vcpu = m.protected_vcpu();
    let first = m.tracker.harvest().unwrap();
    assert_eq!(pages(&m.tracker.take(slot).unwrap()), initial(&m, 1024));
    assert_eq!(harvest_take(&m, slot), BTreeSet::new());
    if first.kvm_pages == 1024 {
        // INITIALLY_SET: every chunk had bits, so every chunk was cleared.
        assert_eq!(first.ioctls, 1 + 16);
    }
    // Pages in chunks 0 and 14 only: one GET and two CLEARs.
    m.write_list(&mut vcpu, &[m.gpa(slot, 5), m.gpa(slot, 900)], 1);
    let stats = m.tracker.harvest().unwrap();
    assert_eq!(stats.ioctls, 3, "{stats:?}");
    assert_eq!(stats.per_slot, vec![(slot, 2)]);
    assert_eq!(
        pages(&m.tracker.take(slot).unwrap()),
        BTreeSet::from([5, 900])
    );
    // Both were cleared: nothing more, and no CLEAR for an empty bitmap.
    let stats = m.tracker.harvest().unwrap();
    assert_eq!((stats.kvm_pages, stats.ioctls), (0, 1));
}

#[test]
fn kvm_ring_entries_of_untracked_slots_are_ignored() {
    let Some(kvm) = kvm_or_skip!(X86_64) else {
        return;
    };
    let mut m = Vmm::new(&kvm, ring());
    let tracked = m.add_logged_slot(0x10_0000, 16 * 0x1000);
    // Logging on in KVM, but the tracker was not told.
    let stray = m.add_slot(0x20_0000, 16 * 0x1000);
    m.table.set_dirty_logging(stray, true).unwrap();
    let mut vcpu = m.protected_vcpu();
    let addrs = [
        m.gpa(tracked, 1),
        m.gpa(stray, 2),
        m.gpa(stray, 3),
        m.gpa(stray, 15),
    ];
    m.write_list(&mut vcpu, &addrs, 1);
    // A device write as well: harvest_rings leaves vm-memory's bitmap alone.
    m.table
        .guest_memory()
        .write_obj(1u8, GuestAddress(m.gpa(tracked, 9)))
        .unwrap();
    let stats = m.tracker.harvest_rings().unwrap();
    assert_eq!(
        (stats.kvm_pages, stats.ignored_entries),
        (1, 3),
        "{stats:?}"
    );
    assert_eq!(stats.host_pages, 0);
    let stats = m.tracker.harvest().unwrap();
    assert_eq!((stats.kvm_pages, stats.host_pages), (0, 1), "{stats:?}");
    assert_eq!(
        pages(&m.tracker.take(tracked).unwrap()),
        BTreeSet::from([1, 9])
    );
    assert!(m.tracker.take(stray).is_none());
    assert_eq!(m.tracker.stats().ignored_entries, 3);
}

#[test]
fn kvm_tracking_calls_refuse_misuse() {
    let Some(kvm) = kvm_or_skip!(X86_64) else {
        return;
    };
    for pref in [get(), ring()] {
        let mut m = Vmm::new(&kvm, pref);
        let debug = format!("{:?}", m.tracker);
        assert!(debug.starts_with("DirtyTracker"), "{debug}");
        assert!(Arc::ptr_eq(m.tracker.vm(), &m.vm));
        let slot = m.add_logged_slot(0x10_0000, 0x4000);
        let e = m.tracker.enable_logging(&mut m.table, slot).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("tracking slot {slot}: it is tracked already")
        );
        let e = m.tracker.track(slot, 0x4000).unwrap_err();
        assert!(matches!(e, kvmkit_dirty_log::Error::SlotTracked { .. }));
        let e = m.tracker.track(SlotId(20), 0x1800).unwrap_err();
        assert!(matches!(
            e,
            kvmkit_dirty_log::Error::SlotSize { len: 0x1800, .. }
        ));
        m.tracker.disable_logging(&mut m.table, slot).unwrap();
        let e = m.tracker.disable_logging(&mut m.table, slot).unwrap_err();
        assert_eq!(e.to_string(), format!("slot {slot} is not tracked"));
        // track_slot brings the slot's vm-memory bitmap.
        m.table.set_dirty_logging(slot, true).unwrap();
        m.tracker.track_slot(m.table.slot(slot).unwrap()).unwrap();
        m.table
            .guest_memory()
            .write_obj(1u8, GuestAddress(m.gpa(slot, 2)))
            .unwrap();
        assert_eq!(harvest_take(&m, slot), BTreeSet::from([2]));
        // A chunk that is not a multiple of 64 pages.
        let vm = Arc::new(kvm.create_vm(&Default::default()).unwrap());
        let t = kvmkit_dirty_log::DirtyTracker::new(vm, get()).unwrap();
        let e = t.with_clear_chunk_pages(100).unwrap_err();
        assert_eq!(
            e.to_string(),
            "a KVM_CLEAR_DIRTY_LOG chunk of 100 pages: it must be a non-zero multiple of 64"
        );
    }
}
