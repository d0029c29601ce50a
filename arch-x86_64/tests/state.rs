//! Snapshot and restore on real KVM: a guest runs, its vCPU and VM state and
//! its memory are saved (and sent through JSON), the VM is dropped, and a new
//! VM made from the same configuration continues exactly where the first one
//! stopped: counters in memory and registers, an `in` whose data arrived
//! just before the save, a halted vCPU with an interrupt pending, a
//! programmed LAPIC timer and TSC deadline, the IOAPIC, the PIT, the clock.
//! And a state that does not fit this host is refused before anything is
//! written.

// Guest addresses, vectors and counts here are small constants that fit every narrower type.
#![allow(clippy::cast_possible_truncation)]

mod common;

use common::Guest as Machine;
use kvmkit_arch_x86_64::kvm_bindings::{kvm_mp_state, KVM_MP_STATE_HALTED, KVM_MP_STATE_RUNNABLE};
use kvmkit_arch_x86_64::{
    abi_profile, restore_vm_state, save_vm_state, BootSetup, Error as X86Error, GdtLayout,
    IoDirection, IrqchipMode, ProfileMismatch, StatePiece, VcpuConfig, VmConfig, X86AbiProfile,
    X86Exit, X86VcpuState, X86VmState, X86_64,
};
use kvmkit_core::{Error, Kicker, Kvm, Vcpu, VcpuExit, VcpuId};
use kvmkit_irq::{InterruptController, Msi};
use kvmkit_test_support::kvm_or_skip;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;
use vm_memory::{Bytes, GuestAddress};

const MEM_SIZE: usize = 0x20000;
const CODE: u64 = 0x10000;
const HANDLERS: u64 = CODE + 0x200;
const IDT: u64 = 0x11000;
const COUNTER: u64 = 0x9000;
const WAIT: Duration = Duration::from_secs(20);

/// A VM made with `cfg` whose one slot holds `image` (the memory is
/// dropped after the VM).
fn machine(kvm: &Kvm<X86_64>, cfg: &VmConfig, image: &[u8]) -> Machine {
    assert_eq!(image.len(), MEM_SIZE);
    common::guest(kvm, cfg, common::memory(MEM_SIZE, &[(0, image)]))
}

impl Machine {
    fn image(&self) -> Vec<u8> {
        let mut v = vec![0u8; MEM_SIZE];
        self.mem.read_slice(&mut v, GuestAddress(0)).unwrap();
        v
    }

    fn counter(&self) -> u64 {
        self.mem.read_obj(GuestAddress(COUNTER)).unwrap()
    }
}

/// Saves, sends both states through JSON (what a snapshot file or a
/// migration stream carries), and decodes them.
fn through_json(vcpu: &X86VcpuState, vm: &X86VmState) -> (X86VcpuState, X86VmState) {
    let v = serde_json::to_string(vcpu).unwrap();
    let m = serde_json::to_string(vm).unwrap();
    (
        serde_json::from_str(&v).unwrap(),
        serde_json::from_str(&m).unwrap(),
    )
}

fn long_mode() -> BootSetup {
    BootSetup::LongMode {
        entry: CODE,
        stack: 0x8000,
        rsi: 0,
    }
}

/// The I/O exits of the counting guest, as the test saw them.
#[derive(Debug, PartialEq, Eq)]
enum Io {
    Out(u32),
    In(u32),
}

/// The counting guest, 64-bit:
/// ```text
/// l:  inc rbx
///     mov [0x9000], rbx        ; the counter, in memory too
///     test bl, 0x3f
///     jnz l
///     mov eax, ebx
///     out 0x80, eax            ; report every 64
///     in eax, 0x81             ; the host answers
///     add r12, rax             ; the sum of the answers
///     jmp l
/// ```
fn counting_guest() -> Vec<u8> {
    let mut image = vec![0u8; MEM_SIZE];
    let code = [
        0x48, 0xff, 0xc3, // inc rbx
        0x48, 0x89, 0x1c, 0x25, 0x00, 0x90, 0x00, 0x00, // mov [0x9000], rbx
        0xf6, 0xc3, 0x3f, // test bl, 0x3f
        0x75, 0xf0, // jnz l
        0x89, 0xd8, // mov eax, ebx
        0xe7, 0x80, // out 0x80, eax
        0xe5, 0x81, // in eax, 0x81
        0x49, 0x01, 0xc4, // add r12, rax
        0xeb, 0xe5, // jmp l
    ];
    image[CODE as usize..CODE as usize + code.len()].copy_from_slice(&code);
    image
}

/// The offset of `add r12, rax`, right after the `in`.
const AFTER_IN: u64 = 22;

/// The host's answer to the `in` that follows report `out`.
fn answer(out: u32) -> u32 {
    3 * out + 1
}

/// Runs until `count` exits (outs and answered ins) have happened.
fn run_io(vcpu: &mut Vcpu<X86_64>, count: usize) -> Vec<Io> {
    let mut seen = Vec::new();
    let mut last_out = 0;
    while seen.len() < count {
        match vcpu.run().unwrap() {
            VcpuExit::Arch(X86Exit::Io {
                direction: IoDirection::Out,
                port: 0x80,
                data,
                ..
            }) => {
                last_out = u32::from_le_bytes(data.try_into().unwrap());
                seen.push(Io::Out(last_out));
            }
            VcpuExit::Arch(X86Exit::Io {
                direction: IoDirection::In,
                port: 0x81,
                data,
                ..
            }) => {
                let a = answer(last_out);
                data.copy_from_slice(&a.to_le_bytes());
                seen.push(Io::In(a));
            }
            e => panic!("unexpected exit {e:?}"),
        }
    }
    seen
}

#[test]
fn kvm_guest_without_irqchip_continues_in_a_new_vm() {
    let Some(kvm) = kvm_or_skip!(X86_64) else {
        return;
    };
    let cfg = VmConfig::default();
    let a = machine(&kvm, &cfg, &counting_guest());
    let mut va = a.vm.create_vcpu(VcpuId(0), &VcpuConfig::default()).unwrap();
    va.setup_boot(&a.mem, &long_mode()).unwrap();
    // Three reports and three answers; stop right after the third answer
    // went into kvm_run, before KVM has given it to the guest.
    let before = run_io(&mut va, 6);
    assert_eq!(
        before,
        [
            Io::Out(64),
            Io::In(answer(64)),
            Io::Out(128),
            Io::In(answer(128)),
            Io::Out(192),
            Io::In(answer(192))
        ]
    );
    let saved = va.save_state().unwrap();
    // Saving finished the pending `in` (KVM_RUN with immediate_exit): the
    // answer is in RAX and RIP is past the `in`, not on it.
    assert_eq!(saved.regs.rax, u64::from(answer(192)));
    assert_eq!(saved.regs.rip, CODE + AFTER_IN);
    assert_eq!(saved.regs.rbx, 192);
    assert_eq!(saved.regs.r12, u64::from(answer(64) + answer(128)));
    assert!(saved.lapic.is_none(), "no irqchip, no LAPIC");
    assert!(saved.omission(StatePiece::Lapic).is_some());
    assert!(saved.msr(0x10).is_some(), "the TSC is saved");
    assert!(!saved.cpuid.is_empty(), "the CPUID the vCPU was given");
    let saved_vm = save_vm_state(a.vm.arch_fd()).unwrap();
    assert!(saved_vm.irqchip.is_none() && saved_vm.pit.is_none());
    println!(
        "vCPU state: {} MSRs, XSAVE {:?} bytes, XCRs {}, TSC {:?} kHz; omitted: {}",
        saved.msrs.len(),
        saved.xsave.as_ref().map(|x| x.len() * 4),
        saved.xcrs.is_some(),
        saved.tsc_khz,
        saved
            .omitted
            .iter()
            .chain(&saved_vm.omitted)
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ")
    );
    // The profile of the state fits this host, as a restore would check.
    let host = abi_profile(kvm.arch_system(), &VcpuConfig::default()).unwrap();
    X86AbiProfile::of_state(Some(&saved_vm), std::slice::from_ref(&saved))
        .check(&host)
        .unwrap();
    let image = a.image();
    assert_eq!(a.counter(), 192);

    // The reference: what the first VM does next.
    let reference = run_io(&mut va, 4);
    let reference_regs = va.get_regs().unwrap();
    drop(va);
    drop(a);

    let (state, vm_state) = through_json(&saved, &saved_vm);
    let b = machine(&kvm, &cfg, &image);
    restore_vm_state(b.vm.arch_fd(), &vm_state).unwrap();
    let mut vb = b.vm.create_vcpu(VcpuId(0), &VcpuConfig::default()).unwrap();
    vb.restore_state(&state).unwrap();
    assert_eq!(
        vb.get_regs().unwrap(),
        saved.regs,
        "RIP and registers match"
    );
    assert_eq!(vb.get_sregs().unwrap(), saved.sregs);
    assert_eq!(b.counter(), 192);
    assert_eq!(
        run_io(&mut vb, 4),
        reference,
        "the new VM does what the old one did"
    );
    assert_eq!(
        reference,
        [
            Io::Out(256),
            Io::In(answer(256)),
            Io::Out(320),
            Io::In(answer(320))
        ],
        "the counter continues from 192"
    );
    assert_eq!(vb.get_regs().unwrap().r12, reference_regs.r12);
    assert_eq!(b.counter(), 320);
}

/// `mov dword [base + disp], value` with `modrm_and_disp` naming the base.
fn mov_mem32(code: &mut Vec<u8>, modrm_and_disp: &[u8], value: u32) {
    code.push(0xc7);
    code.extend(modrm_and_disp);
    code.extend(value.to_le_bytes());
}

/// `[rbx + disp32]`.
fn rbx32(disp: u32) -> Vec<u8> {
    let mut v = vec![0x83];
    v.extend(disp.to_le_bytes());
    v
}

const PIN: u32 = 5;
const PIN_VECTOR: u8 = 0x41;
const MSI_VECTOR: u8 = 0x51;
const TIMER_VECTOR: u8 = 0x40;
const READY: u32 = 0xaa;
const PIT_COUNT: u16 = 0x1234;

/// The interrupt guest, 64-bit:
/// ```text
///     mov ebx, 0xfee00000                   ; LAPIC
///     mov ecx, 0xfec00000                   ; IOAPIC
///     mov dword [rbx + 0xf0], 0x1ff         ; SVR: enable
///     mov dword [rbx + 0x350], 0x10000      ; LINT0 masked
///     (IOAPIC pin 5: destination 0, vector 0x41, edge, unmasked)
///     mov dword [rbx + 0x3e0], 0xa          ; timer: divide by 128
///     mov dword [rbx + 0x320], 0x40         ; one-shot, vector 0x40
///     mov dword [rbx + 0x380], 0xffffffff   ; ~9 minutes
///     (PIT channel 0: mode 2, count 0x1234)
///     mov al, 0xaa
///     out 0x80, al                          ; ready
/// l:  sti
///     hlt
///     jmp l
/// ```
/// and for vector `v` a handler reporting `count << 8 | v`:
/// ```text
///     inc r15
///     mov eax, r15d
///     shl eax, 8
///     mov al, v
///     out 0x81, eax
///     mov dword [rbx + 0xb0], 0             ; EOI
///     iretq
/// ```
fn interrupt_guest() -> Vec<u8> {
    let mut c = vec![0xbb];
    c.extend(0xfee0_0000u32.to_le_bytes());
    c.push(0xb9);
    c.extend(0xfec0_0000u32.to_le_bytes());
    mov_mem32(&mut c, &rbx32(0xf0), 0x1ff);
    mov_mem32(&mut c, &rbx32(0x350), 0x1_0000);
    mov_mem32(&mut c, &[0x01], 0x11 + 2 * PIN);
    mov_mem32(&mut c, &[0x41, 0x10], 0);
    mov_mem32(&mut c, &[0x01], 0x10 + 2 * PIN);
    mov_mem32(&mut c, &[0x41, 0x10], u32::from(PIN_VECTOR));
    mov_mem32(&mut c, &rbx32(0x3e0), 0xa);
    mov_mem32(&mut c, &rbx32(0x320), u32::from(TIMER_VECTOR));
    mov_mem32(&mut c, &rbx32(0x380), 0xffff_ffff);
    let [lo, hi] = PIT_COUNT.to_le_bytes();
    c.extend([
        0xb0, 0x34, 0xe6, 0x43, 0xb0, lo, 0xe6, 0x40, 0xb0, hi, 0xe6, 0x40,
    ]);
    c.extend([0xb0, READY as u8, 0xe6, 0x80, 0xfb, 0xf4, 0xeb, 0xfc]);
    let mut image = vec![0u8; MEM_SIZE];
    image[CODE as usize..CODE as usize + c.len()].copy_from_slice(&c);
    let mut idt = vec![0u8; 0x1000];
    for (i, v) in [TIMER_VECTOR, PIN_VECTOR, MSI_VECTOR]
        .into_iter()
        .enumerate()
    {
        let mut h = vec![
            0x49, 0xff, 0xc7, 0x44, 0x89, 0xf8, 0xc1, 0xe0, 0x08, 0xb0, v,
        ];
        h.extend([0xe7, 0x81]);
        mov_mem32(&mut h, &rbx32(0xb0), 0);
        h.extend([0x48, 0xcf]);
        let at = HANDLERS + 0x40 * i as u64;
        image[at as usize..at as usize + h.len()].copy_from_slice(&h);
        let gate = at & 0xffff
            | u64::from(GdtLayout::CODE64) << 16
            | 0x8e00 << 32
            | ((at >> 16) & 0xffff) << 48;
        let slot = usize::from(v) * 16;
        idt[slot..slot + 8].copy_from_slice(&gate.to_le_bytes());
    }
    image[IDT as usize..IDT as usize + idt.len()].copy_from_slice(&idt);
    image
}

fn report(count: u32, vector: u8) -> (u16, u32) {
    (0x81, count << 8 | u32::from(vector))
}

/// A vCPU running on its own thread, reporting `out`s; `pause` hands the
/// vCPU back once a kick finds it halted (or, with `halted` false, at the
/// first kick).
struct Runner {
    reports: Receiver<(u16, u32)>,
    paused: Receiver<Vcpu<X86_64>>,
    stop: Arc<AtomicBool>,
    kicker: Kicker,
    thread: JoinHandle<()>,
}

impl Runner {
    fn start(mut vcpu: Vcpu<X86_64>, halted: bool) -> Runner {
        let (tx, reports) = channel();
        let (ptx, paused): (Sender<Vcpu<X86_64>>, _) = channel();
        let stop = Arc::new(AtomicBool::new(false));
        let kicker = vcpu.kicker();
        let stop2 = stop.clone();
        let thread = std::thread::spawn(move || loop {
            match vcpu.run() {
                Ok(VcpuExit::Arch(X86Exit::Io {
                    direction: IoDirection::Out,
                    port,
                    data,
                    ..
                })) => {
                    let mut b = [0u8; 4];
                    b[..data.len()].copy_from_slice(data);
                    if tx.send((port, u32::from_le_bytes(b))).is_err() {
                        return;
                    }
                }
                Ok(VcpuExit::Interrupted) if stop2.load(Ordering::SeqCst) => {
                    let mp = vcpu.arch_fd().vcpu_fd().get_mp_state().unwrap();
                    if !halted || mp.mp_state == KVM_MP_STATE_HALTED {
                        let _ = ptx.send(vcpu);
                        return;
                    }
                }
                Ok(VcpuExit::Interrupted) => {}
                Ok(e) => panic!("unexpected exit {e:?}"),
                Err(e) => panic!("KVM_RUN: {e}"),
            }
        });
        Runner {
            reports,
            paused,
            stop,
            kicker,
            thread,
        }
    }

    fn next(&self) -> (u16, u32) {
        self.reports
            .recv_timeout(WAIT)
            .unwrap_or_else(|e| panic!("no report from the guest within {WAIT:?}: {e}"))
    }

    /// Kicks until the vCPU thread hands the vCPU back.
    fn pause(self) -> Vcpu<X86_64> {
        self.stop.store(true, Ordering::SeqCst);
        for _ in 0..400 {
            self.kicker.kick();
            match self.paused.recv_timeout(Duration::from_millis(50)) {
                Ok(v) => {
                    self.thread.join().unwrap();
                    return v;
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(e) => panic!("vCPU thread ended: {e}"),
            }
        }
        panic!("the vCPU never paused");
    }
}

fn lapic_reg(l: &kvmkit_arch_x86_64::kvm_bindings::kvm_lapic_state, at: usize) -> u32 {
    u32::from_le_bytes([0, 1, 2, 3].map(|i| l.regs[at + i] as u8))
}

#[test]
fn kvm_halted_vcpu_with_pending_interrupt_timer_ioapic_and_pit_survives() {
    let Some(kvm) = kvm_or_skip!(X86_64) else {
        return;
    };
    let cfg = VmConfig {
        irqchip: IrqchipMode::Kernel,
        pit: true,
        ..Default::default()
    };
    let a = machine(&kvm, &cfg, &interrupt_guest());
    let va = a.vm.create_vcpu(VcpuId(0), &VcpuConfig::default()).unwrap();
    va.setup_boot(&a.mem, &long_mode()).unwrap();
    let mut sregs = va.get_sregs().unwrap();
    sregs.idt.base = IDT;
    sregs.idt.limit = 0xfff;
    va.set_sregs(&sregs).unwrap();
    let run = Runner::start(va, true);
    assert_eq!(run.next(), (0x80, READY));
    let msi = Msi {
        address: 0xfee0_0000,
        data: u32::from(MSI_VECTOR),
        devid: None,
    };
    a.vm.arch_fd().signal_msi(msi).unwrap();
    assert_eq!(run.next(), report(1, MSI_VECTOR));
    // Out of KVM_RUN, halted in `sti; hlt`; an MSI now stays pending in
    // the LAPIC's IRR until the vCPU runs.
    let va = run.pause();
    a.vm.arch_fd().signal_msi(msi).unwrap();
    let saved = va.save_state().unwrap();
    let saved_vm = save_vm_state(a.vm.arch_fd()).unwrap();
    let image = a.image();
    assert_eq!(
        saved.mp_state,
        Some(kvm_mp_state {
            mp_state: KVM_MP_STATE_HALTED
        })
    );
    assert_eq!(saved.regs.r15, 1, "one interrupt taken");
    let lapic = saved.lapic.expect("in-kernel LAPIC");
    let irr = |l: &_| lapic_reg(l, 0x200 + usize::from(MSI_VECTOR / 32) * 0x10);
    assert_ne!(
        irr(&lapic) & 1 << (MSI_VECTOR % 32),
        0,
        "the MSI is pending"
    );
    let (tmict, tmcct) = (lapic_reg(&lapic, 0x380), lapic_reg(&lapic, 0x390));
    assert_eq!(tmict, 0xffff_ffff);
    assert!(tmcct < tmict, "the timer was counting down: {tmcct:#x}");
    let pit = saved_vm.pit.expect("the PIT");
    assert_eq!(
        (pit.channels[0].count, pit.channels[0].mode),
        (u32::from(PIT_COUNT), 2)
    );
    assert!(saved_vm.irqchip.is_some());
    let clock = saved_vm.clock.expect("KVM_GET_CLOCK");
    drop(va);
    drop(a);

    let (state, vm_state) = through_json(&saved, &saved_vm);
    let b = machine(&kvm, &cfg, &image);
    restore_vm_state(b.vm.arch_fd(), &vm_state).unwrap();
    let vb = b.vm.create_vcpu(VcpuId(0), &VcpuConfig::default()).unwrap();
    vb.restore_state(&state).unwrap();
    let fd = vb.arch_fd().vcpu_fd();
    assert_eq!(fd.get_mp_state().unwrap().mp_state, KVM_MP_STATE_HALTED);
    let l = fd.get_lapic().unwrap();
    assert_ne!(irr(&l) & 1 << (MSI_VECTOR % 32), 0, "still pending");
    assert_eq!(lapic_reg(&l, 0x320), u32::from(TIMER_VECTOR));
    assert_eq!(lapic_reg(&l, 0x380), tmict);
    let now = lapic_reg(&l, 0x390);
    assert!(
        now <= tmcct && now > 0,
        "the timer counts on from {tmcct:#x}, not from the start: {now:#x}"
    );
    let pit_b = b.vm.arch_fd().vm_fd().get_pit2().unwrap();
    assert_eq!(pit_b.channels[0].count, pit.channels[0].count);
    assert_eq!(pit_b.channels[0].mode, pit.channels[0].mode);
    let clock_b = b.vm.arch_fd().vm_fd().get_clock().unwrap();
    assert!(
        clock_b.clock >= clock.clock,
        "kvmclock continues: {} < {}",
        clock_b.clock,
        clock.clock
    );

    // Run: the pending MSI wakes the vCPU first, and the count goes on.
    let run = Runner::start(vb, false);
    assert_eq!(run.next(), report(2, MSI_VECTOR));
    // The IOAPIC entry the guest programmed came with the VM state (a new
    // IOAPIC has every pin masked).
    b.vm.arch_fd().set_irq(PIN, true).unwrap();
    b.vm.arch_fd().set_irq(PIN, false).unwrap();
    assert_eq!(run.next(), report(3, PIN_VECTOR));
    let vb = run.pause();
    assert_eq!(vb.get_regs().unwrap().r15, 3);
}

/// `MSR_IA32_TSC_DEADLINE` only sticks once the LAPIC timer is in
/// TSC-deadline mode: restoring it before the LAPIC loses it.
#[test]
fn kvm_tsc_deadline_and_tsc_survive_restore() {
    let Some(kvm) = kvm_or_skip!(X86_64) else {
        return;
    };
    let cfg = VmConfig {
        irqchip: IrqchipMode::Kernel,
        ..Default::default()
    };
    let image = vec![0u8; MEM_SIZE];
    let tsc_deadline_vcpu = |m: &Machine| {
        let v = m.vm.create_vcpu(VcpuId(0), &VcpuConfig::default()).unwrap();
        let fd = v.arch_fd().vcpu_fd();
        let mut cpuid = fd.get_cpuid2(256).unwrap();
        for e in cpuid.as_mut_slice() {
            if e.function == 1 {
                e.ecx |= 1 << 24; // TSC-deadline timer
            }
        }
        fd.set_cpuid2(&cpuid).unwrap();
        v
    };
    let msr = |v: &Vcpu<X86_64>, index: u32| {
        let mut m = kvmkit_arch_x86_64::kvm_bindings::Msrs::from_entries(&[
            kvmkit_arch_x86_64::kvm_bindings::kvm_msr_entry {
                index,
                ..Default::default()
            },
        ])
        .unwrap();
        assert_eq!(v.arch_fd().vcpu_fd().get_msrs(&mut m).unwrap(), 1);
        m.as_slice()[0].data
    };
    let set_msr = |v: &Vcpu<X86_64>, index: u32, data: u64| {
        let m = kvmkit_arch_x86_64::kvm_bindings::Msrs::from_entries(&[
            kvmkit_arch_x86_64::kvm_bindings::kvm_msr_entry {
                index,
                data,
                ..Default::default()
            },
        ])
        .unwrap();
        assert_eq!(v.arch_fd().vcpu_fd().set_msrs(&m).unwrap(), 1);
    };
    let deadline_mode = |v: &Vcpu<X86_64>| {
        let fd = v.arch_fd().vcpu_fd();
        let mut l = fd.get_lapic().unwrap();
        for (at, val) in [(0xf0, 0x1ffu32), (0x320, u32::from(TIMER_VECTOR) | 2 << 17)] {
            for (i, b) in val.to_le_bytes().into_iter().enumerate() {
                l.regs[at + i] = b as _;
            }
        }
        fd.set_lapic(&l).unwrap();
    };

    // The control: the deadline written before the LAPIC is in
    // TSC-deadline mode is dropped.
    let c = machine(&kvm, &cfg, &image);
    let vc = tsc_deadline_vcpu(&c);
    set_msr(&vc, 0x6e0, 1 << 50);
    deadline_mode(&vc);
    assert_eq!(msr(&vc, 0x6e0), 0, "KVM dropped the early deadline");
    // Whether this KVM lets userspace set the TSC. PVM does not quite: its
    // reads return the host's TSC while the LAPIC timer goes by the
    // written one.
    let far = 1u64 << 50; // days of uptime: far from any new vCPU's TSC
    set_msr(&vc, 0x10, far);
    let tsc_settable = msr(&vc, 0x10) >= far;
    drop(vc);
    drop(c);

    let a = machine(&kvm, &cfg, &image);
    let va = tsc_deadline_vcpu(&a);
    deadline_mode(&va);
    if tsc_settable {
        set_msr(&va, 0x10, far);
    }
    let deadline = msr(&va, 0x10) + (1 << 45);
    set_msr(&va, 0x6e0, deadline);
    assert_eq!(msr(&va, 0x6e0), deadline);
    let saved = va.save_state().unwrap();
    assert_eq!(saved.msr(0x6e0), Some(deadline));
    let tsc = saved.msr(0x10).unwrap();
    let vm_state = save_vm_state(a.vm.arch_fd()).unwrap();
    drop(va);
    drop(a);

    let (state, vm_state) = through_json(&saved, &vm_state);
    let b = machine(&kvm, &cfg, &image);
    restore_vm_state(b.vm.arch_fd(), &vm_state).unwrap();
    let vb = b.vm.create_vcpu(VcpuId(0), &VcpuConfig::default()).unwrap();
    if tsc_settable {
        assert!(msr(&vb, 0x10) < far, "a new vCPU's TSC starts near 0");
    } else {
        println!("MSR_IA32_TSC reads do not follow writes on this KVM (PVM): whether a new vCPU starts near 0 is not checked");
    }
    vb.restore_state(&state).unwrap();
    assert_eq!(msr(&vb, 0x6e0), deadline, "written after the LAPIC");
    assert!(msr(&vb, 0x10) >= tsc, "the TSC continues");
    let l = vb.arch_fd().vcpu_fd().get_lapic().unwrap();
    assert_eq!(lapic_reg(&l, 0x320) >> 17 & 3, 2, "TSC-deadline mode");
}

fn refused(r: Result<(), Error>) -> X86Error {
    match r {
        Err(Error::Arch(e)) => *e.downcast::<X86Error>().expect("the x86 backend's error"),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn kvm_restore_refuses_a_state_that_does_not_fit_before_writing_anything() {
    let Some(kvm) = kvm_or_skip!(X86_64) else {
        return;
    };
    let cfg = VmConfig::default();
    let a = machine(&kvm, &cfg, &counting_guest());
    let va = a.vm.create_vcpu(VcpuId(0), &VcpuConfig::default()).unwrap();
    va.setup_boot(&a.mem, &long_mode()).unwrap();
    let saved = va.save_state().unwrap();

    let b = machine(&kvm, &cfg, &counting_guest());
    let vb = b.vm.create_vcpu(VcpuId(1), &VcpuConfig::default()).unwrap();
    let untouched = |v: &Vcpu<X86_64>| {
        let mut s = v.save_state().unwrap();
        s.msrs.retain(|&(i, _)| i != 0x10); // the TSC runs on
        s
    };
    let before = untouched(&vb);
    assert_ne!(before.regs, saved.regs, "a restore would change them");

    let host = abi_profile(kvm.arch_system(), &VcpuConfig::default()).unwrap();
    let tamper = |f: &dyn Fn(&mut X86VcpuState)| {
        let mut s = saved.clone();
        f(&mut s);
        s
    };
    // An MSR this host's KVM does not have.
    let s = tamper(&|s| s.msrs.push((0xdead_beef, 1)));
    let e = refused(vb.restore_state(&s));
    assert!(
        matches!(
            e,
            X86Error::RestoreRefused(ProfileMismatch::Msr { index: 0xdead_beef })
        ),
        "{e}"
    );
    assert!(X86AbiProfile::of_state(None, &[s]).check(&host).is_err());
    assert_eq!(untouched(&vb), before);

    // A CPUID feature bit this host does not give (leaf 7 EBX).
    let own = vb.arch_fd().vcpu_fd().get_cpuid2(256).unwrap();
    let leaf7 = own
        .as_slice()
        .iter()
        .find(|e| e.function == 7 && e.index == 0)
        .expect("leaf 7");
    let lacking = (0..32)
        .map(|b| 1u32 << b)
        .find(|b| leaf7.ebx & b == 0)
        .expect("a leaf 7 EBX bit this host lacks");
    let s = tamper(&|s| {
        for e in &mut s.cpuid {
            if e.function == 7 && e.index == 0 {
                e.ebx |= lacking;
            }
        }
    });
    let e = refused(vb.restore_state(&s));
    match &e {
        X86Error::RestoreRefused(ProfileMismatch::CpuidFeature { word, missing, .. }) => {
            assert_eq!((word.as_str(), *missing), ("CPUID 0x7.0 EBX", lacking));
        }
        e => panic!("{e}"),
    }
    assert!(e
        .to_string()
        .starts_with("restore refused, nothing was written: CPUID 0x7.0 EBX"));
    assert_eq!(untouched(&vb), before);

    // An XSAVE area larger than this host's.
    if let Some(host_bytes) = host.xsave_bytes {
        let s = tamper(&|s| s.xsave = Some(vec![0; host_bytes as usize / 4 + 1024]));
        let e = refused(vb.restore_state(&s));
        assert!(
            matches!(e, X86Error::RestoreRefused(ProfileMismatch::XsaveArea { host, .. }) if host == host_bytes),
            "{e}"
        );
        assert_eq!(untouched(&vb), before);
    }

    // A LAPIC on a VM without one, a future format version.
    let s = tamper(&|s| s.lapic = Some(Default::default()));
    let e = refused(vb.restore_state(&s));
    assert!(
        matches!(
            e,
            X86Error::StateDoesNotFit {
                piece: StatePiece::Lapic,
                ..
            }
        ),
        "{e}"
    );
    let s = tamper(&|s| s.version = 99);
    let e = refused(vb.restore_state(&s));
    assert_eq!(
        e.to_string(),
        "cannot restore vCPU state of format version 99: this build reads version 1"
    );
    assert_eq!(untouched(&vb), before);

    // The VM state: another version, or a PIT this VM does not have.
    let mut vm_state = save_vm_state(a.vm.arch_fd()).unwrap();
    vm_state.version = 2;
    assert!(matches!(
        restore_vm_state(b.vm.arch_fd(), &vm_state),
        Err(X86Error::StateVersion {
            what: "VM",
            found: 2,
            ..
        })
    ));
    vm_state.version = 1;
    vm_state.pit = Some(Default::default());
    let e = restore_vm_state(b.vm.arch_fd(), &vm_state).unwrap_err();
    assert_eq!(
        e.to_string(),
        "restore refused, nothing was written: the state holds the in-kernel PIT but this VM has no PIT"
    );

    // Another TSC frequency: refused unless this host can scale the TSC
    // (then restored and scaled: the vCPU is touched from here on).
    if let Some(khz) = saved.tsc_khz {
        let s = tamper(&|s| s.tsc_khz = Some(khz * 2));
        if host.capability(kvmkit_core::Capability::TSC_CONTROL.number()) > 0 {
            vb.restore_state(&s).unwrap();
            assert_eq!(vb.arch_fd().vcpu_fd().get_tsc_khz().unwrap(), khz * 2);
            println!("KVM_CAP_TSC_CONTROL: the TSC frequency was scaled");
        } else {
            let e = refused(vb.restore_state(&s));
            assert!(
                matches!(
                    e,
                    X86Error::RestoreRefused(ProfileMismatch::TscFrequency { .. })
                ),
                "{e}"
            );
            assert_eq!(untouched(&vb), before);
        }
    }

    // The state itself fits: restored, the vCPU holds it.
    vb.restore_state(&saved).unwrap();
    assert_eq!(vb.get_regs().unwrap(), saved.regs);
    assert_eq!(
        vb.arch_fd().vcpu_fd().get_mp_state().unwrap().mp_state,
        KVM_MP_STATE_RUNNABLE
    );
}
