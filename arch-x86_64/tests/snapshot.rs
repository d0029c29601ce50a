//! The portable snapshot contract (`kvmkit_core::SnapshotArch`) on real KVM:
//! code generic over the architecture saves a paused VM (stopped by a kick
//! right after the host answered an `in`), sends the snapshot through JSON,
//! checks its ABI profile against this host and restores it into a new VM,
//! which continues where the first stopped. A profile this host cannot
//! satisfy is refused with `Error::ProfileMismatch`.

// Guest addresses here are small constants that fit every narrower type.
#![allow(clippy::cast_possible_truncation)]

mod common;

use kvmkit_arch_x86_64::{
    BootSetup, IoDirection, IrqchipMode, ProfileMismatch, VcpuConfig, VmConfig, X86AbiProfile,
    X86Exit, X86_64,
};
use kvmkit_core::{Error, Kvm, SnapshotArch, Vcpu, VcpuExit, VcpuId, Vm};
use kvmkit_test_support::kvm_or_skip;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

const MEM_SIZE: usize = 0x20000;
const CODE: u64 = 0x10000;

/// Everything of a snapshot but guest memory, as a file or a migration
/// stream would carry it: the vCPUs' states, the VM state and the profile.
fn save<A: SnapshotArch>(vm: &Vm<A>, vcpus: &[Vcpu<A>]) -> kvmkit_core::Result<String> {
    let states = vcpus
        .iter()
        .map(Vcpu::save_state)
        .collect::<kvmkit_core::Result<Vec<_>>>()?;
    let vm_state = vm.save_state()?;
    let profile = A::state_profile(&vm_state, &states);
    Ok(serde_json::to_string(&(states, vm_state, profile)).expect("serialisable"))
}

/// The restore order of the contract: profile check, VM, memory (by the
/// caller's `add_memory`), vCPUs, VM state, vCPU states.
fn restore<A: SnapshotArch>(
    kvm: &Kvm<A>,
    json: &str,
    vm_cfg: &A::VmConfig,
    vcpu_cfg: &A::VcpuConfig,
    add_memory: impl FnOnce(&Vm<A>),
) -> kvmkit_core::Result<(Vm<A>, Vec<Vcpu<A>>)> {
    let (states, vm_state, profile): (Vec<A::VcpuState>, A::VmState, A::AbiProfile) =
        serde_json::from_str(json).expect("a snapshot this test wrote");
    kvm.check_profile(&profile, vm_cfg, vcpu_cfg)?;
    let vm = kvm.create_vm(vm_cfg)?;
    add_memory(&vm);
    let vcpus = (0..states.len())
        .map(|i| vm.create_vcpu(VcpuId(u32::try_from(i).unwrap()), vcpu_cfg))
        .collect::<kvmkit_core::Result<Vec<_>>>()?;
    vm.restore_state(&vm_state)?;
    for (v, s) in vcpus.iter().zip(&states) {
        v.restore_state(s)?;
    }
    Ok((vm, vcpus))
}

/// Guest memory holding `image` at GPA 0.
fn memory(image: &[u8]) -> GuestMemoryMmap {
    common::memory(MEM_SIZE, &[(0, image)])
}

/// Real mode at 0x10000:
/// ```text
/// l:  in al, 0x10     ; the host answers
///     out 0x11, al    ; and sees the answer again
///     jmp l
/// ```
fn echo_guest() -> Vec<u8> {
    let mut image = vec![0u8; MEM_SIZE];
    let code = [0xe4, 0x10, 0xe6, 0x11, 0xeb, 0xfa];
    image[CODE as usize..CODE as usize + code.len()].copy_from_slice(&code);
    image
}

fn answer_in(vcpu: &mut Vcpu<X86_64>, value: u8) {
    match vcpu.run().unwrap() {
        VcpuExit::Arch(X86Exit::Io {
            direction: IoDirection::In,
            port: 0x10,
            data,
            ..
        }) => data.fill(value),
        e => panic!("expected in from 0x10, got {e:?}"),
    }
}

fn echoed(vcpu: &mut Vcpu<X86_64>) -> u8 {
    match vcpu.run().unwrap() {
        VcpuExit::Arch(X86Exit::Io {
            direction: IoDirection::Out,
            port: 0x11,
            data,
            ..
        }) => data[0],
        e => panic!("expected out to 0x11, got {e:?}"),
    }
}

#[test]
fn kvm_generic_snapshot_of_a_paused_vm_continues_in_a_new_vm() {
    let Some(kvm) = kvm_or_skip!(X86_64) else {
        return;
    };
    let vm_cfg = VmConfig {
        irqchip: IrqchipMode::Kernel,
        pit: true,
        ..Default::default()
    };
    let vcpu_cfg = VcpuConfig::default();
    let mem = memory(&echo_guest());
    let vm = kvm.create_vm(&vm_cfg).unwrap();
    // SAFETY: `mem` is dropped after `vm` (below, in one tuple).
    unsafe { common::add_slot(&vm, &mem) };
    let mut vcpu = vm.create_vcpu(VcpuId(0), &vcpu_cfg).unwrap();
    let boot = BootSetup::RealMode {
        cs_base: CODE as u32,
        ip: 0,
        sp: 0x8000,
    };
    vcpu.setup_boot(&mem, &boot).unwrap();
    answer_in(&mut vcpu, 0x11);
    assert_eq!(echoed(&mut vcpu), 0x11);
    // Answered, then paused by a kick before the vCPU entered again.
    answer_in(&mut vcpu, 0x42);
    vcpu.kicker().kick();
    assert!(matches!(vcpu.run().unwrap(), VcpuExit::Interrupted));
    let json = save(&vm, std::slice::from_ref(&vcpu)).unwrap();
    let mut image = vec![0u8; MEM_SIZE];
    mem.read_slice(&mut image, GuestAddress(0)).unwrap();
    drop((vcpu, vm, mem));

    let mem = memory(&image);
    // SAFETY: `mem` lives until the end of the test, after the restored VM
    // is dropped.
    let add_memory = |vm: &Vm<X86_64>| unsafe { common::add_slot(vm, &mem) };
    let (vm, mut vcpus) = restore::<X86_64>(&kvm, &json, &vm_cfg, &vcpu_cfg, add_memory).unwrap();
    assert_eq!(echoed(&mut vcpus[0]), 0x42, "the `in` kept its data");
    answer_in(&mut vcpus[0], 0x43);
    assert_eq!(echoed(&mut vcpus[0]), 0x43);
    assert!(vm.arch_fd().vm_fd().get_pit2().is_ok(), "the PIT came back");
    drop((vcpus, vm));
}

#[test]
fn kvm_a_profile_this_host_cannot_satisfy_is_refused() {
    let Some(kvm) = kvm_or_skip!(X86_64) else {
        return;
    };
    let vm_cfg = VmConfig::default();
    let vcpu_cfg = VcpuConfig::default();
    let host = kvm.abi_profile(&vm_cfg, &vcpu_cfg).unwrap();
    assert_eq!(host.header.arch, "x86_64");
    kvm.check_profile(&host, &vm_cfg, &vcpu_cfg).unwrap();
    let mut saved: X86AbiProfile = host.clone();
    saved.msrs.push(0x4000_dead);
    let e = kvm.check_profile(&saved, &vm_cfg, &vcpu_cfg).unwrap_err();
    assert_eq!(
        e.to_string(),
        "the saved x86_64 state cannot be restored on this host"
    );
    assert!(matches!(e, Error::ProfileMismatch { arch: "x86_64", .. }));
    let source = std::error::Error::source(&e).unwrap();
    assert_eq!(
        source.downcast_ref::<ProfileMismatch>(),
        Some(&ProfileMismatch::Msr { index: 0x4000_dead })
    );
    assert_eq!(
        X86_64::check_profile(&saved, &host),
        Err(ProfileMismatch::Msr { index: 0x4000_dead })
    );
}
