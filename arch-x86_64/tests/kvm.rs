//! The x86_64 backend on real KVM: boot modes, registers, debug, irqchips,
//! state, kicks and the errors of the generic handles.

// Guest addresses here are small constants that fit every narrower type.
#![allow(clippy::cast_possible_truncation)]

mod common;

use common::Guest;
use kvmkit_arch_x86_64::{
    msr_one_reg_id, BootSetup, GuestDebugBuilder, IoDirection, IrqchipMode, VcpuConfig, VmConfig,
    X86Exit, X86_64,
};
use kvmkit_core::{
    Capability, Error, Kvm, MemoryFlags, SlotId, UserMemoryRegion, Vcpu, VcpuExit, VcpuId,
};
use kvmkit_test_support::kvm_or_skip;
use std::time::Duration;
use vm_memory::GuestMemoryBackend;

const CODE: u64 = 0x10000;

fn guest_with(kvm: &Kvm<X86_64>, cfg: &VmConfig, code: &[u8]) -> Guest {
    common::guest(kvm, cfg, common::memory(0x20000, &[(CODE, code)]))
}

fn guest(kvm: &Kvm<X86_64>, code: &[u8]) -> Guest {
    guest_with(kvm, &VmConfig::default(), code)
}

impl Guest {
    fn vcpu(&self, id: u32, boot: &BootSetup) -> Vcpu<X86_64> {
        let v = self
            .vm
            .create_vcpu(VcpuId(id), &VcpuConfig::default())
            .unwrap();
        v.setup_boot(&self.mem, boot).unwrap();
        v
    }
}

fn real_mode() -> BootSetup {
    BootSetup::RealMode {
        cs_base: CODE as u32,
        ip: 0,
        sp: 0x8000,
    }
}

fn expect_out(vcpu: &mut Vcpu<X86_64>, want_port: u16) -> Vec<u8> {
    match vcpu.run().unwrap() {
        VcpuExit::Arch(X86Exit::Io {
            direction: IoDirection::Out,
            port,
            data,
            ..
        }) if port == want_port => data.to_vec(),
        e => panic!("expected out to {want_port:#x}, got {e:?}"),
    }
}

#[test]
fn kvm_long_mode_guest_runs_64_bit_code() {
    let Some(kvm) = kvm_or_skip!(X86_64) else {
        return;
    };
    // mov rax, 0x1122334455667788 ; out 0x80, al ; shr rax, 32 ; out 0x80, al ; hlt
    let mut code = vec![0x48, 0xb8];
    code.extend(0x1122_3344_5566_7788u64.to_le_bytes());
    code.extend([0xe6, 0x80, 0x48, 0xc1, 0xe8, 0x20, 0xe6, 0x80, 0xf4]);
    let g = guest(&kvm, &code);
    let boot = BootSetup::LongMode {
        entry: CODE,
        stack: 0x8000,
        rsi: 0x7000,
    };
    let mut v = g.vcpu(0, &boot);
    assert_eq!(expect_out(&mut v, 0x80), [0x88]);
    assert_eq!(expect_out(&mut v, 0x80), [0x44], "shr of a 64-bit register");
    assert!(matches!(v.run().unwrap(), VcpuExit::Hlt));
    let regs = v.get_regs().unwrap();
    assert_eq!(regs.rax, 0x1122_3344);
    assert_eq!(regs.rsi, 0x7000);
    let sregs = v.get_sregs().unwrap();
    assert_eq!(sregs.cs.l, 1);
    assert_ne!(sregs.efer & (1 << 10), 0, "EFER.LMA");
}

#[test]
fn kvm_protected_mode_guest_sees_ebx() {
    let Some(kvm) = kvm_or_skip!(X86_64) else {
        return;
    };
    // mov eax, ebx ; out 0x80, al ; hlt
    let g = guest(&kvm, &[0x89, 0xd8, 0xe6, 0x80, 0xf4]);
    let mut v = g.vcpu(
        0,
        &BootSetup::Protected32 {
            entry: CODE as u32,
            ebx: 0x6042,
        },
    );
    assert_eq!(expect_out(&mut v, 0x80), [0x42]);
    assert!(matches!(v.run().unwrap(), VcpuExit::Hlt));
}

#[test]
fn kvm_registers_round_trip() {
    let Some(kvm) = kvm_or_skip!(X86_64) else {
        return;
    };
    let g = guest(&kvm, &[0xf4]);
    let v = g.vcpu(0, &real_mode());
    let mut regs = v.get_regs().unwrap();
    regs.rax = 0xdead_beef;
    regs.r15 = 0x1234_5678_9abc_def0;
    v.set_regs(&regs).unwrap();
    assert_eq!(v.get_regs().unwrap().r15, 0x1234_5678_9abc_def0);
    let mut sregs = v.get_sregs().unwrap();
    sregs.es.base = 0x5000;
    sregs.es.selector = 0x500;
    v.set_sregs(&sregs).unwrap();
    assert_eq!(v.get_sregs().unwrap().es.base, 0x5000);
    let mut fpu = v.get_fpu().unwrap();
    fpu.fcw = 0x27f;
    v.set_fpu(&fpu).unwrap();
    assert_eq!(v.get_fpu().unwrap().fcw, 0x27f);
    assert_eq!(v.program_counter().unwrap(), 0);
}

#[test]
fn kvm_one_reg_reads_msrs_like_get_msrs() {
    let Some(kvm) = kvm_or_skip!(X86_64) else {
        return;
    };
    let g = guest(&kvm, &[0xf4]);
    let v = g.vcpu(0, &real_mode());
    // MTRRdefType was set by the boot MSRs to 0x806.
    let mut buf = [0u8; 8];
    match v.get_one_reg(msr_one_reg_id(0x2ff), &mut buf) {
        Ok(n) => {
            assert_eq!(n, 8);
            assert_eq!(u64::from_le_bytes(buf), 0x806);
            v.set_one_reg(msr_one_reg_id(0x2ff), &0x6u64.to_le_bytes())
                .unwrap();
            let state = v.save_state().unwrap();
            assert!(state.msrs.contains(&(0x2ff, 0x6)), "KVM_GET_MSRS agrees");
        }
        Err(e) => {
            // Kernels before 6.18 have no x86 ONE_REG: the error must say so.
            assert!(e.to_string().contains("KVM_GET_ONE_REG"), "{e}");
            println!("x86 ONE_REG unsupported by this kernel: {e}");
        }
    }
    let short = v
        .get_one_reg(msr_one_reg_id(0x2ff), &mut [0u8; 4])
        .unwrap_err();
    assert!(short.to_string().contains("needs 8 bytes"), "{short}");
}

#[test]
fn kvm_single_step_reports_each_instruction() {
    let Some(kvm) = kvm_or_skip!(X86_64) else {
        return;
    };
    let g = guest(&kvm, &[0x90, 0x90, 0x90, 0xf4]); // nop ; nop ; nop ; hlt
    let mut v = g.vcpu(0, &real_mode());
    v.set_guest_debug(&GuestDebugBuilder::new().single_step(true).build())
        .unwrap();
    let mut pcs = Vec::new();
    for _ in 0..3 {
        match v.run().unwrap() {
            VcpuExit::Debug { pc } => pcs.push(pc),
            e => panic!("unexpected {e:?}"),
        }
    }
    assert_eq!(
        pcs,
        [0x10001, 0x10002, 0x10003],
        "one debug exit per instruction"
    );
    v.set_guest_debug(&GuestDebugBuilder::new().build())
        .unwrap();
    assert!(
        matches!(v.run().unwrap(), VcpuExit::Hlt),
        "runs freely again"
    );
}

#[test]
fn kvm_state_saved_from_one_vcpu_continues_on_another() {
    let Some(kvm) = kvm_or_skip!(X86_64) else {
        return;
    };
    // mov al, 0x42 ; out 0x80, al ; inc al ; out 0x80, al ; hlt
    let g = guest(
        &kvm,
        &[0xb0, 0x42, 0xe6, 0x80, 0xfe, 0xc0, 0xe6, 0x80, 0xf4],
    );
    let mut a = g.vcpu(0, &real_mode());
    assert_eq!(expect_out(&mut a, 0x80), [0x42]);
    let state = a.save_state().unwrap();
    assert!(state.lapic.is_none() && state.mp_state.is_some());
    let mut b = g.vm.create_vcpu(VcpuId(1), &VcpuConfig::default()).unwrap();
    b.restore_state(&state).unwrap();
    assert_eq!(
        expect_out(&mut b, 0x80),
        [0x43],
        "vCPU 1 continued where vCPU 0 stopped"
    );
    assert!(matches!(b.run().unwrap(), VcpuExit::Hlt));
}

#[test]
fn kvm_irqchip_modes() {
    let Some(kvm) = kvm_or_skip!(X86_64) else {
        return;
    };
    kvm.require(Capability::IRQCHIP).unwrap();
    let cfg = VmConfig {
        irqchip: IrqchipMode::Kernel,
        pit: true,
        ..Default::default()
    };
    let g = guest_with(&kvm, &cfg, &[0xf4]);
    assert_eq!(g.vm.arch_fd().irqchip(), IrqchipMode::Kernel);
    let v =
        g.vm.create_vcpu(
            VcpuId(0),
            &VcpuConfig {
                lapic_lints: true,
                ..Default::default()
            },
        )
        .unwrap();
    let lapic = v.save_state().unwrap().lapic.expect("in-kernel LAPIC");
    let lvt0 = u32::from_le_bytes([0, 1, 2, 3].map(|i| lapic.regs[0x350 + i] as u8));
    assert_eq!((lvt0 >> 8) & 7, 7, "LINT0 is ExtINT");

    kvm.require(Capability::SPLIT_IRQCHIP).unwrap();
    let cfg = VmConfig {
        irqchip: IrqchipMode::Split { ioapic_pins: 24 },
        ..Default::default()
    };
    let g = guest_with(&kvm, &cfg, &[0xf4]);
    let v = g.vm.create_vcpu(VcpuId(0), &VcpuConfig::default()).unwrap();
    assert!(v.save_state().unwrap().lapic.is_some());
}

#[test]
fn kvm_handle_errors_are_clear() {
    let Some(kvm) = kvm_or_skip!(X86_64) else {
        return;
    };
    let e = kvm.require(Capability::PPC_PAPR).unwrap_err();
    assert_eq!(
        e.to_string(),
        "KVM capability KVM_CAP_PPC_PAPR (68) is not supported by this kernel"
    );
    assert!(kvm.max_vcpus() >= 1 && kvm.max_vcpu_id() >= kvm.max_vcpus());
    let g = guest(&kvm, &[0xf4]);
    let max = kvm.max_vcpu_id();
    let e =
        g.vm.create_vcpu(VcpuId(max), &VcpuConfig::default())
            .unwrap_err();
    assert!(matches!(e, Error::VcpuIdOutOfRange { .. }), "{e}");
    let _v = g.vm.create_vcpu(VcpuId(0), &VcpuConfig::default()).unwrap();
    let e =
        g.vm.create_vcpu(VcpuId(0), &VcpuConfig::default())
            .unwrap_err();
    assert_eq!(e.to_string(), "vCPU 0 already exists in this VM");
    // Overlapping a slot with another slot is refused by KVM, with the ioctl named.
    let bad = UserMemoryRegion {
        slot: SlotId(1),
        flags: MemoryFlags::NONE,
        guest_phys_addr: 0x1000,
        memory_size: 0x1000,
        userspace_addr: g.mem.iter().next().unwrap().as_ptr() as u64,
    };
    // SAFETY: the range is part of `g.mem`, alive for the test.
    let e = unsafe { g.vm.set_user_memory_region(&bad) }.unwrap_err();
    assert!(e.to_string().contains("KVM_SET_USER_MEMORY_REGION"), "{e}");
}

#[test]
fn kvm_kick_before_run_and_during_run() {
    let Some(kvm) = kvm_or_skip!(X86_64) else {
        return;
    };
    let g = guest(&kvm, &[0xeb, 0xfe]); // jmp $
    let mut v = g.vcpu(0, &real_mode());
    let k = v.kicker();
    k.kick();
    assert!(
        matches!(v.run().unwrap(), VcpuExit::Interrupted),
        "a kick before run is kept"
    );
    // From another thread, while the vCPU spins inside KVM_RUN.
    let k2 = v.kicker();
    let t = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(50));
        k2.kick();
    });
    // `jmp $` never exits on its own: only the kick ends this run.
    match v.run().unwrap() {
        VcpuExit::Interrupted => {}
        e => panic!("unexpected {e:?}"),
    }
    t.join().unwrap();
    assert_eq!(v.get_regs().unwrap().rip, 0, "still in the jmp $ loop");
}

/// Kicks `vcpu` from another thread (as a pause from the VMM's control
/// thread would) and waits until the kick has been sent.
fn kick_from_another_thread(vcpu: &Vcpu<X86_64>) {
    let k = vcpu.kicker();
    std::thread::spawn(move || k.kick()).join().unwrap();
}

/// A kick that arrives while the vCPU's thread is handling an exit must not
/// leave that exit's I/O unfinished: the next `run` enters `KVM_RUN` with
/// `immediate_exit` set, KVM finishes the I/O, and only then does `run`
/// return `Interrupted`. Before the fix `run` returned at once and the
/// registers read then (or saved into a snapshot) had the `in` without its
/// data, the MMIO read without its value and RIP still on the `out`.
#[test]
fn kvm_kick_while_handling_an_exit_finishes_its_io() {
    let Some(kvm) = kvm_or_skip!(X86_64) else {
        return;
    };
    // Real mode at 0x10000; 0x20000 and up is not memory, so MMIO.
    let code = [
        0xe4, 0x10, // 0:  in al, 0x10
        0x88, 0xc3, // 2:  mov bl, al
        0xb8, 0x00, 0x20, // 4:  mov ax, 0x2000
        0x8e, 0xd8, // 7:  mov ds, ax
        0xa0, 0x00, 0x00, // 9:  mov al, [0]        ; MMIO read at 0x20000
        0xe6, 0x11, // 12: out 0x11, al
        0x88, 0xd8, // 14: mov al, bl
        0xe6, 0x12, // 16: out 0x12, al        ; what the `in` gave
        0xf4, // 18: hlt
    ];
    let g = guest(&kvm, &code);
    let mut v = g.vcpu(0, &real_mode());

    // `in`: answered, then kicked before the vCPU enters again.
    match v.run().unwrap() {
        VcpuExit::Arch(X86Exit::Io {
            direction: IoDirection::In,
            port: 0x10,
            data,
            ..
        }) => data.fill(0x5a),
        e => panic!("expected in from 0x10, got {e:?}"),
    }
    kick_from_another_thread(&v);
    assert!(matches!(v.run().unwrap(), VcpuExit::Interrupted));
    let r = v.get_regs().unwrap();
    assert_eq!(r.rax & 0xff, 0x5a, "the `in` has its data");
    assert_eq!(r.rip, 2, "and the guest is past it");

    // MMIO read: the same.
    match v.run().unwrap() {
        VcpuExit::MmioRead {
            addr: 0x20000,
            data,
        } => data.fill(0xa5),
        e => panic!("expected an MMIO read of 0x20000, got {e:?}"),
    }
    kick_from_another_thread(&v);
    assert!(matches!(v.run().unwrap(), VcpuExit::Interrupted));
    let r = v.get_regs().unwrap();
    assert_eq!(r.rax & 0xff, 0xa5, "the MMIO read has its value");
    assert_eq!(r.rip, 12);

    // `out`: done once, the guest is past it.
    assert_eq!(expect_out(&mut v, 0x11), [0xa5]);
    kick_from_another_thread(&v);
    assert!(matches!(v.run().unwrap(), VcpuExit::Interrupted));
    assert_eq!(v.get_regs().unwrap().rip, 14, "past the `out`");

    // The guest saw what the host answered, and the `out` is not repeated.
    assert_eq!(expect_out(&mut v, 0x12), [0x5a]);
    assert!(matches!(v.run().unwrap(), VcpuExit::Hlt));
}

#[test]
fn kvm_capabilities_we_rely_on_are_present() {
    let Some(kvm) = kvm_or_skip!(X86_64) else {
        return;
    };
    for cap in [
        Capability::USER_MEMORY,
        Capability::IRQCHIP,
        Capability::SPLIT_IRQCHIP,
        Capability::IRQFD,
        Capability::IOEVENTFD,
        Capability::IRQ_ROUTING,
        Capability::SIGNAL_MSI,
        Capability::READONLY_MEM,
        Capability::SET_GUEST_DEBUG,
        Capability::IMMEDIATE_EXIT,
        Capability::MANUAL_DIRTY_LOG_PROTECT2,
    ] {
        kvm.require(cap).unwrap_or_else(|e| panic!("{e}"));
    }
    let g = guest(&kvm, &[0xf4]);
    assert!(g.vm.has(Capability::READONLY_MEM));
}

#[test]
fn kvm_interrupt_controller_of_the_in_kernel_irqchip() {
    use kvmkit_irq::{Error as IrqError, InterruptController, Msi};
    use vmm_sys_util::eventfd::EventFd;
    let Some(kvm) = kvm_or_skip!(X86_64) else {
        return;
    };
    let cfg = VmConfig {
        irqchip: IrqchipMode::Kernel,
        ..Default::default()
    };
    let g = guest_with(&kvm, &cfg, &[0xf4]);
    let ic = g.vm.arch_fd();
    assert_eq!(ic.irq_count(), 24);
    ic.set_irq(4, true).unwrap();
    ic.set_irq(4, false).unwrap();
    let e = ic.set_irq(24, true).unwrap_err();
    assert!(
        matches!(e, IrqError::OutOfRange { irq: 24, count: 24 }),
        "{e}"
    );
    let fd = EventFd::new(0).unwrap();
    ic.register_irqfd(&fd, 5, None).unwrap();
    fd.write(1).unwrap();
    ic.unregister_irqfd(&fd, 5).unwrap();
    let (fd, rs) = (EventFd::new(0).unwrap(), EventFd::new(0).unwrap());
    ic.register_irqfd(&fd, 10, Some(&rs)).unwrap();
    ic.unregister_irqfd(&fd, 10).unwrap();
    // An MSI to the BSP's LAPIC, vector 0x30 (KVM needs a LAPIC to deliver to).
    let _bsp = g.vm.create_vcpu(VcpuId(0), &VcpuConfig::default()).unwrap();
    ic.signal_msi(Msi {
        address: 0xfee0_0000,
        data: 0x30,
        devid: None,
    })
    .unwrap();

    // Without an irqchip: lines and MSIs are unsupported, by name.
    let g = guest(&kvm, &[0xf4]);
    let e = g.vm.arch_fd().set_irq(4, true).unwrap_err();
    assert_eq!(
        e.to_string(),
        "KVM_IRQ_LINE is not supported by the no irqchip interrupt controller"
    );
    assert!(g.vm.arch_fd().signal_msi(Msi::default()).is_err());
}
