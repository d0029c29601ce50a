//! Per-exit cost of the kvmkit run loop against a raw kvm-ioctls `run()` loop.
//!
//! The same tiny real-mode guest runs `N` port I/O (or MMIO) writes and halts,
//! (a) under a bare `VcpuFd::run()` loop that only counts exits and (b) under
//! `kvmkit_runloop::RunLoop`, which decodes each exit, dispatches it through
//! the bus to a device and checks the control state. Rounds alternate a and b,
//! each on a fresh thread; medians (with the min..max spread) are printed with
//! the ratio b/a, and the ratio of the minima, which is less sensitive to
//! other load on the machine.
//!
//! `cargo bench -p kvmkit-runloop` runs it; `KVMKIT_BENCH_EXITS` sets N
//! (default 20000) and `KVMKIT_BENCH_ROUNDS` the rounds (default 7). Without
//! `--bench` (as `cargo test --all-targets` runs it) it does one short round
//! as a smoke test.

// Guest addresses here are small constants that fit every narrower type.
#![allow(clippy::cast_possible_truncation)]

use kvm_ioctls::{Kvm as RawKvm, VcpuExit as RawExit};
use kvmkit_arch_x86_64::{BootSetup, PortIoBus, VcpuConfig, X86_64};
use kvmkit_core::{Kvm, MemoryFlags, SlotId, UserMemoryRegion, VcpuId};
use kvmkit_runloop::{Buses, MmioBus, RunLoop, VcpuEvent};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use vm_device::bus::{MmioAddress, MmioAddressOffset, PioAddress, PioAddressOffset};
use vm_device::{DeviceMmio, DevicePio};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};

const CODE: u64 = 0x1000;
const MEM: usize = 0x10000;
const MMIO_BASE: u64 = 0x20000;

/// mov ecx, N ; l: out 0x80, al ; dec ecx ; jnz l ; hlt
fn pio_guest(n: u32) -> Vec<u8> {
    let mut g = vec![0x66, 0xb9];
    g.extend(n.to_le_bytes());
    g.extend([0xe6, 0x80, 0x66, 0x49, 0x75, 0xfa, 0xf4]);
    g
}

/// mov ecx, N ; mov ax, 0x2000 ; mov ds, ax ; xor bx, bx ;
/// l: mov [bx], al ; dec ecx ; jnz l ; hlt      (writes to GPA 0x20000)
fn mmio_guest(n: u32) -> Vec<u8> {
    let mut g = vec![0x66, 0xb9];
    g.extend(n.to_le_bytes());
    g.extend([
        0xb8, 0x00, 0x20, 0x8e, 0xd8, 0x31, 0xdb, 0x88, 0x07, 0x66, 0x49, 0x75, 0xfa, 0xf4,
    ]);
    g
}

#[derive(Default)]
struct Counter(AtomicU64);

impl DevicePio for Counter {
    fn pio_read(&self, _: PioAddress, _: PioAddressOffset, data: &mut [u8]) {
        data.fill(0);
    }
    fn pio_write(&self, _: PioAddress, _: PioAddressOffset, _: &[u8]) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

impl DeviceMmio for Counter {
    fn mmio_read(&self, _: MmioAddress, _: MmioAddressOffset, data: &mut [u8]) {
        data.fill(0);
    }
    fn mmio_write(&self, _: MmioAddress, _: MmioAddressOffset, _: &[u8]) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

fn memory(code: &[u8]) -> GuestMemoryMmap {
    let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), MEM)]).expect("mmap");
    mem.write_slice(code, GuestAddress(CODE))
        .expect("write code");
    mem
}

/// (a): a bare kvm-ioctls loop that counts exits until HLT (on its own thread).
fn raw_round(code: &[u8], n: u32) -> Duration {
    let mem = memory(code);
    let kvm = RawKvm::new().expect("open /dev/kvm");
    let vm = kvm.create_vm().expect("create VM");
    vm.set_tss_address(0xfffb_d000).expect("tss");
    let r = mem.iter().next().expect("one region");
    let region = kvm_bindings::kvm_userspace_memory_region {
        slot: 0,
        flags: 0,
        guest_phys_addr: 0,
        memory_size: r.len(),
        userspace_addr: r.as_ptr() as u64,
    };
    // SAFETY: `mem` outlives the VM in this function.
    unsafe { vm.set_user_memory_region(region) }.expect("set memory");
    let mut vcpu = vm.create_vcpu(0).expect("create vCPU");
    let mut sregs = vcpu.get_sregs().expect("sregs");
    sregs.cs.base = 0;
    sregs.cs.selector = 0;
    vcpu.set_sregs(&sregs).expect("set sregs");
    let regs = kvm_bindings::kvm_regs {
        rip: CODE,
        rflags: 2,
        rsp: 0x8000,
        ..Default::default()
    };
    vcpu.set_regs(&regs).expect("set regs");
    let mut exits = 0u32;
    let t0 = Instant::now();
    loop {
        match vcpu.run().expect("KVM_RUN") {
            RawExit::IoOut(..) | RawExit::MmioWrite(..) => exits += 1,
            RawExit::Hlt => break,
            e => panic!("unexpected exit {e:?}"),
        }
    }
    let t = t0.elapsed();
    assert_eq!(exits, n);
    t
}

/// (b): the kvmkit run loop with bus dispatch to a counting device.
fn runloop_round(code: &[u8], n: u32) -> Duration {
    let mem = memory(code);
    let kvm = Kvm::<X86_64>::new().expect("open /dev/kvm");
    let vm = kvm.create_vm(&Default::default()).expect("create VM");
    let r = mem.iter().next().expect("one region");
    // SAFETY: `mem` outlives the VM in this function.
    unsafe {
        vm.set_user_memory_region(&UserMemoryRegion {
            slot: SlotId(0),
            flags: MemoryFlags::NONE,
            guest_phys_addr: 0,
            memory_size: r.len(),
            userspace_addr: r.as_ptr() as u64,
        })
    }
    .expect("set memory");
    let vcpu = vm
        .create_vcpu(
            VcpuId(0),
            &VcpuConfig {
                cpuid: None,
                boot_msrs: false,
                lapic_lints: false,
            },
        )
        .expect("create vCPU");
    vcpu.setup_boot(
        &mem,
        &BootSetup::RealMode {
            cs_base: 0,
            ip: CODE as u16,
            sp: 0x8000,
        },
    )
    .expect("boot");
    let counter = Arc::new(Counter::default());
    let mut pio = PortIoBus::new();
    pio.register(0x80, 1, counter.clone()).expect("pio");
    let mut mmio = MmioBus::new();
    mmio.register(MMIO_BASE, 0x1000, counter.clone())
        .expect("mmio");
    let buses = Arc::new(Buses::<X86_64>::new(mmio, pio.into()));
    let t0 = Instant::now();
    let (rl, events) = RunLoop::start(vec![vcpu], buses).expect("start");
    let report = events.recv().expect("an event");
    let t = t0.elapsed();
    assert!(matches!(report.event, VcpuEvent::Halted), "{report:?}");
    drop(rl);
    assert_eq!(counter.0.load(Ordering::Relaxed), u64::from(n));
    t
}

/// The run loop's own work per exit, without KVM: decode a PIO `kvm_run`
/// area and dispatch it through the bus to the device, `n` times.
fn userspace_cost(n: u32) -> f64 {
    use kvmkit_core::Arch;
    let counter = Arc::new(Counter::default());
    let mut pio = PortIoBus::new();
    pio.register(0x80, 1, counter.clone()).expect("pio");
    let buses = Buses::<X86_64>::new(MmioBus::new(), pio.into());
    let mut run = vec![0u8; 4096 + 64];
    run[8..12].copy_from_slice(&2u32.to_ne_bytes()); // KVM_EXIT_IO
    run[32] = 1; // out
    run[33] = 1; // 1 byte
    run[34..36].copy_from_slice(&0x80u16.to_ne_bytes());
    run[36..40].copy_from_slice(&1u32.to_ne_bytes());
    run[40..48].copy_from_slice(&4096u64.to_ne_bytes());
    let t0 = Instant::now();
    for _ in 0..n {
        let exit = X86_64::decode_exit(std::hint::black_box(&mut run)).expect("decode");
        std::hint::black_box(kvmkit_runloop::dispatch_exit(exit, &buses));
    }
    let t = t0.elapsed();
    assert_eq!(counter.0.load(Ordering::Relaxed), u64::from(n));
    t.as_nanos() as f64 / f64::from(n)
}

fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn env(name: &str, default: u32) -> u32 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    if !std::path::Path::new("/dev/kvm").exists() {
        println!("exit_cost: /dev/kvm unavailable, nothing to measure");
        return;
    }
    let bench = std::env::args().any(|a| a == "--bench");
    let (n, rounds) = if bench {
        (
            env("KVMKIT_BENCH_EXITS", 20_000),
            env("KVMKIT_BENCH_ROUNDS", 7).max(1),
        )
    } else {
        (200, 1)
    };
    println!("exit_cost: {n} exits per round, {rounds} rounds, alternating raw / run loop");
    let iters = if bench { 1_000_000 } else { 1000 };
    println!(
        "userspace decode + bus dispatch, no KVM: {:.1} ns/exit",
        userspace_cost(iters)
    );
    for (kind, code) in [("pio", pio_guest(n)), ("mmio", mmio_guest(n))] {
        let (mut raw, mut ours) = (Vec::new(), Vec::new());
        for _ in 0..rounds {
            // Both run on a fresh thread, as the run loop's vCPU does.
            let c = code.clone();
            raw.push(
                std::thread::spawn(move || raw_round(&c, n))
                    .join()
                    .expect("raw round"),
            );
            ours.push(runloop_round(&code, n));
        }
        let per = |d: Duration| d.as_nanos() as f64 / f64::from(n);
        let a = per(median(&mut raw));
        let b = per(median(&mut ours));
        // After `median` both are sorted: report the spread too.
        let spread = |v: &[Duration]| (per(v[0]), per(v[v.len() - 1]));
        let ((a0, a1), (b0, b1)) = (spread(&raw), spread(&ours));
        println!(
            "{kind:>4}: raw kvm-ioctls loop {a:6.0} ns/exit ({a0:.0}..{a1:.0}) | \
             kvmkit run loop {b:6.0} ns/exit ({b0:.0}..{b1:.0}) | \
             ratio b/a {:.3} (of minima {:.3})",
            b / a,
            b0 / a0
        );
    }
}
