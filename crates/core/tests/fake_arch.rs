//! The generic handles (`Kvm`, `Vm`, `Vcpu`, `ScriptedVcpu`) over a fake
//! architecture whose "kernel" is a table of capability values: what the
//! portable layer decides on its own (where a capability is asked, which
//! vCPU ids it accepts, how it names things) without any `/dev/kvm`.

use kvmkit_core::{
    Arch, ArchExitOutcome, Capability, DecodeError, Error, Kvm, RunOutcome, RunVcpu, ScriptedVcpu,
    UserMemoryRegion, VcpuExit, VcpuId, KVM_RUN_EXIT_REASON_OFFSET,
};
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::convert::Infallible;
use std::io;

/// The fake architecture.
#[derive(Debug)]
struct Fake;

/// `/dev/kvm` of the fake kernel: its `KVM_CHECK_EXTENSION` answers.
#[derive(Debug, Clone, Default)]
struct FakeSystem {
    caps: BTreeMap<u32, i32>,
}

/// A VM of the fake kernel: the answers on the VM fd.
#[derive(Debug)]
struct FakeVm {
    caps: BTreeMap<u32, i32>,
}

/// A vCPU of the fake kernel: its `kvm_run` area.
#[derive(Debug)]
struct FakeVcpu {
    run: Vec<u8>,
}

#[derive(Debug, Clone, Default)]
struct FakeVmConfig {
    /// The answers on the VM fd.
    vm_caps: Vec<(Capability, i32)>,
}

#[derive(Debug, Clone, Default)]
struct FakeVcpuConfig {
    /// `init_vcpu` fails (as a vCPU ioctl would).
    fail_init: bool,
}

thread_local! {
    /// What the next `Kvm::<Fake>::new()` opens (tests run on their own threads).
    static NEXT_SYSTEM: RefCell<FakeSystem> = RefCell::default();
}

fn kvm_with(caps: &[(Capability, i32)]) -> Kvm<Fake> {
    NEXT_SYSTEM.with(|s| {
        s.borrow_mut().caps = caps.iter().map(|&(c, v)| (c.number(), v)).collect();
    });
    Kvm::new().expect("the fake system opens")
}

const EXIT_HLT: u32 = 5;

impl Arch for Fake {
    const NAME: &'static str = "fake";

    type Error = io::Error;
    type System = FakeSystem;
    type VmFd = FakeVm;
    type VcpuFd = FakeVcpu;
    type Regs = ();
    type Sregs = ();
    type Fpu = ();
    type GuestDebug = ();
    type VcpuState = ();
    type VmConfig = FakeVmConfig;
    type VcpuConfig = FakeVcpuConfig;
    type BootSetup = ();
    type ArchExit<'a> = Infallible;
    type ArchIo = ();

    fn open_system() -> io::Result<FakeSystem> {
        Ok(NEXT_SYSTEM.with(|s| s.borrow().clone()))
    }

    fn check_extension(sys: &FakeSystem, cap: Capability) -> i32 {
        sys.caps.get(&cap.number()).copied().unwrap_or(0)
    }

    fn vcpu_mmap_size(_: &FakeSystem) -> io::Result<usize> {
        Ok(64)
    }

    fn create_vm(_: &FakeSystem, config: &FakeVmConfig) -> io::Result<FakeVm> {
        Ok(FakeVm {
            caps: config
                .vm_caps
                .iter()
                .map(|&(c, v)| (c.number(), v))
                .collect(),
        })
    }

    fn vm_check_extension(vm: &FakeVm, cap: Capability) -> i32 {
        vm.caps.get(&cap.number()).copied().unwrap_or(0)
    }

    fn init_vm(_: &FakeVm, _: &FakeVmConfig) -> io::Result<()> {
        Ok(())
    }

    unsafe fn set_user_memory_region(_: &FakeVm, _: &UserMemoryRegion) -> io::Result<()> {
        Ok(())
    }

    fn create_vcpu(_: &FakeSystem, _: &FakeVm, _: VcpuId) -> io::Result<FakeVcpu> {
        Ok(FakeVcpu { run: vec![0; 64] })
    }

    fn init_vcpu(
        _: &FakeSystem,
        _: &FakeVm,
        _: &FakeVcpu,
        _: VcpuId,
        config: &FakeVcpuConfig,
    ) -> io::Result<()> {
        if config.fail_init {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        Ok(())
    }

    fn get_regs(_: &FakeVcpu) -> io::Result<()> {
        Ok(())
    }
    fn set_regs(_: &FakeVcpu, _: &()) -> io::Result<()> {
        Ok(())
    }
    fn get_sregs(_: &FakeVcpu) -> io::Result<()> {
        Ok(())
    }
    fn set_sregs(_: &FakeVcpu, _: &()) -> io::Result<()> {
        Ok(())
    }
    fn get_fpu(_: &FakeVcpu) -> io::Result<()> {
        Ok(())
    }
    fn set_fpu(_: &FakeVcpu, _: &()) -> io::Result<()> {
        Ok(())
    }
    fn program_counter(_: &FakeVcpu) -> io::Result<u64> {
        Ok(0)
    }
    fn get_one_reg(_: &FakeVcpu, _: u64, _: &mut [u8]) -> io::Result<usize> {
        Err(io::Error::from_raw_os_error(libc::ENOENT))
    }
    fn set_one_reg(_: &FakeVcpu, _: u64, _: &[u8]) -> io::Result<usize> {
        Err(io::Error::from_raw_os_error(libc::ENOENT))
    }
    fn set_guest_debug(_: &FakeVcpu, _: &()) -> io::Result<()> {
        Ok(())
    }
    fn save_vcpu_state(_: &FakeVcpu) -> io::Result<()> {
        Ok(())
    }
    fn restore_vcpu_state(_: &FakeVcpu, _: &()) -> io::Result<()> {
        Ok(())
    }
    fn setup_boot<M: vm_memory::GuestMemory>(_: &FakeVcpu, _: &M, _: &()) -> io::Result<()> {
        Ok(())
    }

    fn kvm_run(vcpu: &mut FakeVcpu) -> &mut [u8] {
        &mut vcpu.run
    }

    fn run(_: &mut FakeVcpu) -> io::Result<RunOutcome> {
        Ok(RunOutcome::Exited)
    }

    /// `exit_reason` at its portable offset: 5 (`KVM_EXIT_HLT`) is a halt,
    /// others are unknown; an area too short to hold it is refused.
    fn decode_exit(run: &mut [u8]) -> Result<VcpuExit<'_, Self>, DecodeError> {
        let at = KVM_RUN_EXIT_REASON_OFFSET;
        let Some(b) = run.get(at..at + 4) else {
            return Err(DecodeError::Truncated {
                reason: 0,
                len: run.len(),
                needed: at + 4,
            });
        };
        match u32::from_ne_bytes(b.try_into().expect("4 bytes")) {
            EXIT_HLT => Ok(VcpuExit::Hlt),
            reason => Ok(VcpuExit::Unknown { reason }),
        }
    }

    fn handle_arch_exit(_: &(), exit: Infallible) -> ArchExitOutcome {
        match exit {}
    }
}

fn area(reason: u32) -> Vec<u8> {
    let mut run = vec![0u8; 16];
    run[KVM_RUN_EXIT_REASON_OFFSET..KVM_RUN_EXIT_REASON_OFFSET + 4]
        .copy_from_slice(&reason.to_ne_bytes());
    run
}

#[test]
fn vm_capabilities_come_from_the_vm_fd_only_where_the_kernel_allows() {
    let vm_config = FakeVmConfig {
        vm_caps: vec![(Capability::MAX_VCPUS, 8), (Capability::IRQFD, 1)],
    };
    // A kernel without KVM_CAP_CHECK_EXTENSION_VM: /dev/kvm answers for
    // every VM, whatever the VM fd would say.
    let kvm = kvm_with(&[(Capability::MAX_VCPUS, 288)]);
    let vm = kvm.create_vm(&vm_config).unwrap();
    assert_eq!(vm.check_extension(Capability::MAX_VCPUS), 288);
    assert!(!vm.has(Capability::IRQFD));
    let e = vm.require(Capability::IRQFD).unwrap_err();
    assert!(
        matches!(
            e,
            Error::MissingCapability {
                name: "KVM_CAP_IRQFD",
                number: 32
            }
        ),
        "{e:?}"
    );
    // With it, the VM fd answers (a VM type may have fewer vCPUs).
    let kvm = kvm_with(&[
        (Capability::CHECK_EXTENSION_VM, 1),
        (Capability::MAX_VCPUS, 288),
    ]);
    let vm = kvm.create_vm(&vm_config).unwrap();
    assert_eq!(vm.check_extension(Capability::MAX_VCPUS), 8);
    assert_eq!(vm.require(Capability::IRQFD).unwrap(), 1);
    assert!(vm.has(Capability::IRQFD) && !kvm.has(Capability::IRQFD));
    // The VM keeps the Kvm it came from.
    assert_eq!(vm.kvm().check_extension(Capability::MAX_VCPUS), 288);
    assert_eq!(vm.kvm().require(Capability::MAX_VCPUS).unwrap(), 288);
}

#[test]
fn vcpu_ids_are_checked_and_released_when_creation_fails() {
    // No KVM_CAP_MAX_VCPU_ID: KVM_CAP_MAX_VCPUS bounds the ids.
    let kvm = kvm_with(&[(Capability::MAX_VCPUS, 2)]);
    assert_eq!((kvm.max_vcpu_id(), kvm.max_vcpus()), (2, 2));
    let vm = kvm.create_vm(&FakeVmConfig::default()).unwrap();
    let ok = FakeVcpuConfig::default();
    let v0 = vm.create_vcpu(VcpuId(0), &ok).unwrap();
    assert_eq!(v0.id(), VcpuId(0));
    assert!(matches!(
        vm.create_vcpu(VcpuId(0), &ok),
        Err(Error::VcpuExists { id: 0 })
    ));
    assert!(matches!(
        vm.create_vcpu(VcpuId(2), &ok),
        Err(Error::VcpuIdOutOfRange { id: 2, max: 2 })
    ));
    // A failed initialisation is the arch's error, and frees the id.
    let e = vm
        .create_vcpu(VcpuId(1), &FakeVcpuConfig { fail_init: true })
        .unwrap_err();
    let Error::Arch(inner) = &e else {
        panic!("not an arch error: {e:?}")
    };
    let io = inner.downcast_ref::<io::Error>().expect("the fake's error");
    assert_eq!(io.raw_os_error(), Some(libc::EINVAL));
    let v1 = vm.create_vcpu(VcpuId(1), &ok).unwrap();
    assert_eq!(v1.id(), VcpuId(1));
    // Without any limit from the kernel, the API document's default of 4.
    let kvm = kvm_with(&[]);
    assert_eq!((kvm.max_vcpu_id(), kvm.max_vcpus()), (4, 4));
}

#[test]
fn handles_name_their_architecture_in_debug_output() {
    let kvm = kvm_with(&[(Capability::USER_MEMORY, 1)]);
    let k = format!("{kvm:?}");
    assert!(k.starts_with("Kvm { arch: \"fake\""), "{k}");
    let vm = kvm.create_vm(&FakeVmConfig::default()).unwrap();
    let v = format!("{vm:?}");
    assert!(v.starts_with("Vm { arch: \"fake\", fd: FakeVm"), "{v}");
    let vcpu = vm
        .create_vcpu(VcpuId(3), &FakeVcpuConfig::default())
        .unwrap();
    let c = format!("{vcpu:?}");
    assert!(
        c.starts_with("Vcpu { arch: \"fake\", id: VcpuId(3), fd: FakeVcpu"),
        "{c}"
    );
}

#[test]
fn a_scripted_vcpu_replays_its_areas_in_order() {
    let mut s = ScriptedVcpu::<Fake>::new(VcpuId(7), vec![area(EXIT_HLT), area(99), vec![0; 4]]);
    assert_eq!(s.remaining(), 3);
    assert_eq!(
        format!("{s:?}"),
        "ScriptedVcpu { arch: \"fake\", id: VcpuId(7), next: 0, len: 3 }"
    );
    assert_eq!(s.id(), VcpuId(7));
    // The program counter of a script is the index of its next exit.
    assert_eq!(s.program_counter().unwrap(), 0);
    assert!(matches!(s.run().unwrap(), VcpuExit::Hlt));
    assert!(matches!(s.run().unwrap(), VcpuExit::Unknown { reason: 99 }));
    assert_eq!((s.remaining(), s.program_counter().unwrap()), (1, 2));
    assert_eq!(s.completed(), [area(EXIT_HLT), area(99)]);
    // A damaged area is a decode error naming the vCPU, and is consumed.
    let e = s.run().unwrap_err();
    assert!(
        matches!(
            e,
            Error::DecodeExit {
                vcpu: 7,
                source: DecodeError::Truncated {
                    len: 4,
                    needed: 12,
                    ..
                }
            }
        ),
        "{e:?}"
    );
    assert_eq!(s.remaining(), 0);
    assert!(format!("{s:?}").contains("next: 3, len: 3"));
    // Exhausted, it spins until kicked, like a guest in a loop.
    let kicker = s.kicker();
    let t = std::thread::spawn(move || matches!(s.run(), Ok(VcpuExit::Interrupted)));
    kicker.kick();
    assert!(t.join().unwrap(), "a kick ends the wait with Interrupted");
}
