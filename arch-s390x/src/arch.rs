//! `Arch` for s390x, on this crate's own ioctls.
//!
//! Everything here issues real ioctls with s390x's numbers and structs; it
//! is compiled and type-checked on every host, and runs only on an s390x
//! host with KVM (none was available to this project: see the README).

use crate::exit::{off, KVM_RUN_SIZE};
use crate::sys::{self, RunMapping};
use crate::uapi::{
    kvm_enable_cap, kvm_fpu, kvm_regs, kvm_s390_irq, kvm_s390_irq_u, kvm_s390_pgm_info,
    kvm_s390_psw, kvm_sregs, kvm_userspace_memory_region, KVM_API_VERSION, KVM_S390_PROGRAM_INT,
    KVM_SYNC_PREFIX,
};
use crate::{
    caps, decode_exit, BootSetup, Error, GuestDebug, Result, S390Exit, S390Io, S390VcpuState,
    VcpuConfig, VcpuReset, VmConfig, SAVED_ONE_REGS, STATE_VERSION,
};
use kvmkit_core::{
    Arch, ArchExitOutcome, Capability, DecodeError, RunOutcome, UserMemoryRegion, VcpuExit, VcpuId,
};
use std::fs::File;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::OnceLock;

/// The s390x architecture: the marker type implementing [`Arch`].
///
/// ```
/// use kvmkit_arch_s390x::S390x;
/// use kvmkit_core::Arch;
/// assert_eq!(S390x::NAME, "s390x");
/// // Shared code names it only through the contract:
/// fn arch_name<A: Arch>() -> &'static str { A::NAME }
/// assert_eq!(arch_name::<S390x>(), "s390x");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct S390x;

/// An open `/dev/kvm` on s390x, with the size of the `kvm_run` mapping.
///
/// ```no_run
/// use kvmkit_arch_s390x::S390x;
/// let kvm = kvmkit_core::Kvm::<S390x>::new().unwrap(); // opens an S390System
/// let _sys: &kvmkit_arch_s390x::S390System = kvm.arch_system();
/// ```
#[derive(Debug)]
pub struct S390System {
    kvm: File,
    run_len: usize,
}

impl AsRawFd for S390System {
    fn as_raw_fd(&self) -> RawFd {
        self.kvm.as_raw_fd()
    }
}

/// A VM fd on s390x.
///
/// ```no_run
/// use kvmkit_arch_s390x::{Flic, S390x};
/// let kvm = kvmkit_core::Kvm::<S390x>::new().unwrap();
/// let vm = kvm.create_vm(&Default::default()).unwrap();
/// let flic = Flic::new(vm.arch_fd()).unwrap(); // the VM's FLIC
/// ```
#[derive(Debug)]
pub struct S390Vm {
    fd: File,
    dirty_slots: kvmkit_core::SlotSizes,
    /// The FLIC device fd (a duplicate), once [`crate::Flic::new`] created
    /// it: KVM allows one per VM, and the VM state reads its interrupts.
    flic: OnceLock<File>,
}

impl S390Vm {
    pub(crate) fn file(&self) -> &File {
        &self.fd
    }

    /// The VM's FLIC device, if [`crate::Flic::new`] created one.
    pub(crate) fn flic(&self) -> Option<&File> {
        self.flic.get()
    }

    /// Records the FLIC device of this VM (KVM creates at most one).
    pub(crate) fn set_flic(&self, dev: File) {
        // A second FLIC is refused by KVM_CREATE_DEVICE before this point.
        let _ = self.flic.set(dev);
    }

    /// The slot sizes `KVM_GET_DIRTY_LOG` is checked against.
    pub(crate) fn dirty_slots(&self) -> &kvmkit_core::SlotSizes {
        &self.dirty_slots
    }

    /// A VM over any file, for tests of the calls that reach the kernel.
    #[cfg(test)]
    pub(crate) fn from_file(fd: File) -> S390Vm {
        S390Vm {
            fd,
            dirty_slots: kvmkit_core::SlotSizes::default(),
            flic: OnceLock::new(),
        }
    }
}

impl AsRawFd for S390Vm {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

/// A vCPU fd on s390x with its mapped `kvm_run` area.
///
/// ```no_run
/// use kvmkit_arch_s390x::{S390x, VcpuReset};
/// use kvmkit_core::VcpuId;
/// let kvm = kvmkit_core::Kvm::<S390x>::new().unwrap();
/// let vm = kvm.create_vm(&Default::default()).unwrap();
/// let vcpu = vm.create_vcpu(VcpuId(0), &Default::default()).unwrap();
/// vcpu.arch_fd().reset(VcpuReset::Initial).unwrap();
/// vcpu.arch_fd().inject_program_interrupt(0x0006).unwrap(); // specification exception
/// ```
#[derive(Debug)]
pub struct S390Vcpu {
    fd: File,
    run: RunMapping,
    id: VcpuId,
}

impl AsRawFd for S390Vcpu {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl S390Vcpu {
    /// The vCPU id (the CPU address the guest sees).
    pub fn id(&self) -> VcpuId {
        self.id
    }

    /// Resets the vCPU: `KVM_S390_INITIAL_RESET`, `KVM_S390_NORMAL_RESET` or
    /// `KVM_S390_CLEAR_RESET` (the last two need `KVM_CAP_S390_VCPU_RESETS`;
    /// the kernel refuses them otherwise).
    pub fn reset(&self, kind: VcpuReset) -> Result<()> {
        let (req, name) = match kind {
            VcpuReset::None => return Ok(()),
            VcpuReset::Initial => (sys::KVM_S390_INITIAL_RESET, "KVM_S390_INITIAL_RESET"),
            VcpuReset::Normal => (sys::KVM_S390_NORMAL_RESET, "KVM_S390_NORMAL_RESET"),
            VcpuReset::Clear => (sys::KVM_S390_CLEAR_RESET, "KVM_S390_CLEAR_RESET"),
        };
        sys::vcpu_reset(&self.fd, req).map_err(Error::ioctl(name))
    }

    /// Injects a program interruption with `code` into this vCPU
    /// (`KVM_S390_IRQ`, `KVM_S390_PROGRAM_INT`), e.g. 0x0006 (specification)
    /// for an instruction the VMM refuses. Needs `KVM_CAP_S390_INJECT_IRQ`.
    pub fn inject_program_interrupt(&self, code: u16) -> Result<()> {
        let irq = kvm_s390_irq {
            type_: u64::from(KVM_S390_PROGRAM_INT),
            u: kvm_s390_irq_u {
                pgm: kvm_s390_pgm_info {
                    code,
                    ..Default::default()
                },
            },
        };
        sys::s390_irq(&self.fd, &irq).map_err(Error::ioctl("KVM_S390_IRQ(KVM_S390_PROGRAM_INT)"))
    }

    fn read_run_u64(&self, off: usize) -> u64 {
        let mut b = [0u8; 8];
        // The mapping is at least KVM_RUN_SIZE bytes (checked at creation).
        self.run.read(off, &mut b);
        u64::from_be_bytes(b)
    }

    fn write_run_u64(&self, off: usize, v: u64) {
        self.run.write(off, &v.to_be_bytes());
    }

    /// Sets the prefix through the sync-regs area: KVM loads it on the next
    /// `KVM_RUN` (`KVM_SYNC_PREFIX` in `kvm_dirty_regs`).
    fn set_prefix(&self, prefix: u64) {
        self.write_run_u64(off::SYNC_PREFIX, prefix);
        let dirty = self.read_run_u64(off::DIRTY_REGS) | KVM_SYNC_PREFIX;
        self.write_run_u64(off::DIRTY_REGS, dirty);
    }
}

fn enable_vm_cap(vm: &S390Vm, cap: Capability) -> Result<()> {
    if sys::check_extension(&vm.fd, cap.number()).unwrap_or(0) <= 0 {
        return Err(Error::MissingCapability {
            name: cap.name(),
            number: cap.number(),
        });
    }
    let arg = kvm_enable_cap {
        cap: cap.number(),
        ..Default::default()
    };
    sys::enable_cap(&vm.fd, &arg).map_err(|source| Error::Ioctl {
        ioctl: "KVM_ENABLE_CAP",
        source,
    })
}

impl Arch for S390x {
    const NAME: &'static str = "s390x";

    type Error = Error;
    type System = S390System;
    type VmFd = S390Vm;
    type VcpuFd = S390Vcpu;
    type Regs = kvm_regs;
    type Sregs = kvm_sregs;
    type Fpu = kvm_fpu;
    type GuestDebug = GuestDebug;
    type VcpuState = S390VcpuState;
    type VmConfig = VmConfig;
    type VcpuConfig = VcpuConfig;
    type BootSetup = BootSetup;
    type ArchExit<'a> = S390Exit<'a>;
    type ArchIo = S390Io;

    fn open_system() -> Result<S390System> {
        let kvm = sys::open_kvm().map_err(Error::OpenKvm)?;
        let v = sys::get_api_version(&kvm).map_err(Error::ioctl("KVM_GET_API_VERSION"))?;
        if u32::try_from(v) != Ok(KVM_API_VERSION) {
            return Err(Error::ApiVersion(v));
        }
        let run_len =
            sys::get_vcpu_mmap_size(&kvm).map_err(Error::ioctl("KVM_GET_VCPU_MMAP_SIZE"))?;
        Ok(S390System { kvm, run_len })
    }

    fn check_extension(sys: &S390System, cap: Capability) -> i32 {
        sys::check_extension(&sys.kvm, cap.number()).unwrap_or(0)
    }

    fn vcpu_mmap_size(sys: &S390System) -> Result<usize> {
        Ok(sys.run_len)
    }

    /// `KVM_CREATE_VM` with machine type 0: a regular (not user-controlled)
    /// VM. The contract passes no configuration here, so ucontrol VMs
    /// (`KVM_VM_S390_UCONTROL`) cannot be asked for.
    fn create_vm(sys: &S390System, config: &VmConfig) -> Result<S390Vm> {
        // KVM_VM_S390_UCONTROL = 1: a user-controlled VM (the VMM manages the
        // guest's address space; see `S390Exit::Ucontrol`).
        let ty = u64::from(config.ucontrol);
        let fd = sys::create_vm(&sys.kvm, ty).map_err(Error::ioctl("KVM_CREATE_VM"))?;
        Ok(S390Vm {
            fd,
            dirty_slots: kvmkit_core::SlotSizes::default(),
            flic: OnceLock::new(),
        })
    }

    fn vm_check_extension(vm: &S390Vm, cap: Capability) -> i32 {
        sys::check_extension(&vm.fd, cap.number()).unwrap_or(0)
    }

    fn init_vm(vm: &S390Vm, config: &VmConfig) -> Result<()> {
        if config.irqchip {
            enable_vm_cap(vm, Capability::S390_IRQCHIP)?;
        }
        if config.user_sigp {
            enable_vm_cap(vm, caps::S390_USER_SIGP)?;
        }
        if config.user_stsi {
            enable_vm_cap(vm, caps::S390_USER_STSI)?;
        }
        Ok(())
    }

    unsafe fn set_user_memory_region(vm: &S390Vm, r: &UserMemoryRegion) -> Result<()> {
        let region = kvm_userspace_memory_region {
            slot: r.slot.0,
            flags: r.flags.bits(),
            guest_phys_addr: r.guest_phys_addr,
            memory_size: r.memory_size,
            userspace_addr: r.userspace_addr,
        };
        // The slot's size is recorded for `DirtyLogArch::get_dirty_log`.
        vm.dirty_slots.update(region.slot, region.memory_size, || {
            // SAFETY: the caller guarantees the host range stays mapped while
            // the slot exists (the contract of `Arch::set_user_memory_region`).
            unsafe { sys::set_user_memory_region(&vm.fd, &region) }
                .map_err(Error::ioctl("KVM_SET_USER_MEMORY_REGION"))
        })
    }

    fn create_vcpu(sys: &S390System, vm: &S390Vm, id: VcpuId) -> Result<S390Vcpu> {
        if sys.run_len < KVM_RUN_SIZE {
            return Err(Error::RunAreaTooSmall {
                len: sys.run_len,
                needed: KVM_RUN_SIZE,
            });
        }
        let fd = sys::create_vcpu(&vm.fd, id.0).map_err(Error::ioctl("KVM_CREATE_VCPU"))?;
        let run = RunMapping::new(&fd, sys.run_len).map_err(|source| Error::MapRun {
            vcpu: id.0,
            len: sys.run_len,
            source,
        })?;
        Ok(S390Vcpu { fd, run, id })
    }

    fn init_vcpu(
        _sys: &S390System,
        vm: &S390Vm,
        vcpu: &S390Vcpu,
        _id: VcpuId,
        config: &VcpuConfig,
    ) -> Result<()> {
        if matches!(config.reset, VcpuReset::Normal | VcpuReset::Clear)
            && Self::vm_check_extension(vm, caps::S390_VCPU_RESETS) <= 0
        {
            return Err(Error::MissingCapability {
                name: caps::S390_VCPU_RESETS.name(),
                number: caps::S390_VCPU_RESETS.number(),
            });
        }
        vcpu.reset(config.reset)
    }

    fn get_regs(vcpu: &S390Vcpu) -> Result<kvm_regs> {
        sys::get_regs(&vcpu.fd).map_err(Error::ioctl("KVM_GET_REGS"))
    }

    fn set_regs(vcpu: &S390Vcpu, regs: &kvm_regs) -> Result<()> {
        sys::set_regs(&vcpu.fd, regs).map_err(Error::ioctl("KVM_SET_REGS"))
    }

    fn get_sregs(vcpu: &S390Vcpu) -> Result<kvm_sregs> {
        sys::get_sregs(&vcpu.fd).map_err(Error::ioctl("KVM_GET_SREGS"))
    }

    fn set_sregs(vcpu: &S390Vcpu, sregs: &kvm_sregs) -> Result<()> {
        sys::set_sregs(&vcpu.fd, sregs).map_err(Error::ioctl("KVM_SET_SREGS"))
    }

    fn get_fpu(vcpu: &S390Vcpu) -> Result<kvm_fpu> {
        sys::get_fpu(&vcpu.fd).map_err(Error::ioctl("KVM_GET_FPU"))
    }

    fn set_fpu(vcpu: &S390Vcpu, fpu: &kvm_fpu) -> Result<()> {
        sys::set_fpu(&vcpu.fd, fpu).map_err(Error::ioctl("KVM_SET_FPU"))
    }

    /// The PSW address from the vCPU's `kvm_run` area (`psw_addr`), where
    /// KVM stores it at every exit.
    fn program_counter(vcpu: &S390Vcpu) -> Result<u64> {
        Ok(vcpu.read_run_u64(off::PSW_ADDR))
    }

    fn get_one_reg(vcpu: &S390Vcpu, id: u64, data: &mut [u8]) -> Result<usize> {
        let needed = sys::one_reg_size(id);
        if data.len() < needed {
            return Err(Error::OneRegBuffer {
                id,
                needed,
                len: data.len(),
            });
        }
        sys::get_one_reg(&vcpu.fd, id, data).map_err(Error::ioctl("KVM_GET_ONE_REG"))
    }

    fn set_one_reg(vcpu: &S390Vcpu, id: u64, data: &[u8]) -> Result<usize> {
        let needed = sys::one_reg_size(id);
        if data.len() < needed {
            return Err(Error::OneRegBuffer {
                id,
                needed,
                len: data.len(),
            });
        }
        sys::set_one_reg(&vcpu.fd, id, data).map_err(Error::ioctl("KVM_SET_ONE_REG"))
    }

    fn set_guest_debug(vcpu: &S390Vcpu, debug: &GuestDebug) -> Result<()> {
        sys::set_guest_debug(&vcpu.fd, debug.control(), debug.breakpoints())
            .map_err(Error::ioctl("KVM_SET_GUEST_DEBUG"))
    }

    fn save_vcpu_state(vcpu: &S390Vcpu) -> Result<S390VcpuState> {
        let mut one_regs = Vec::with_capacity(SAVED_ONE_REGS.len());
        for (_, id) in SAVED_ONE_REGS {
            let mut v = vec![0u8; sys::one_reg_size(id)];
            Self::get_one_reg(vcpu, id, &mut v)?;
            one_regs.push((id, v));
        }
        Ok(S390VcpuState {
            version: STATE_VERSION,
            regs: Self::get_regs(vcpu)?,
            sregs: Self::get_sregs(vcpu)?,
            fpu: Self::get_fpu(vcpu)?,
            psw_mask: vcpu.read_run_u64(off::PSW_MASK),
            psw_addr: vcpu.read_run_u64(off::PSW_ADDR),
            prefix: vcpu.read_run_u64(off::SYNC_PREFIX),
            one_regs,
        })
    }

    /// Refuses a state of another format version, then writes the
    /// registers back; the PSW and prefix go into the `kvm_run` area, which
    /// KVM loads on the next `KVM_RUN` (as QEMU restores them).
    fn restore_vcpu_state(vcpu: &S390Vcpu, s: &S390VcpuState) -> Result<()> {
        if s.version != STATE_VERSION {
            return Err(Error::StateVersion {
                what: "vCPU",
                found: s.version,
                supported: STATE_VERSION,
            });
        }
        Self::set_sregs(vcpu, &s.sregs)?;
        Self::set_regs(vcpu, &s.regs)?;
        Self::set_fpu(vcpu, &s.fpu)?;
        for (id, v) in &s.one_regs {
            Self::set_one_reg(vcpu, *id, v)?;
        }
        vcpu.write_run_u64(off::PSW_MASK, s.psw_mask);
        vcpu.write_run_u64(off::PSW_ADDR, s.psw_addr);
        vcpu.set_prefix(s.prefix);
        Ok(())
    }

    /// Writes the IPL lowcore at `boot.prefix` ([`crate::write_ipl_lowcore`],
    /// no IPL device), sets the prefix through the sync-regs area and the
    /// PSW with `KVM_S390_SET_INITIAL_PSW` (the vCPU must not have run yet:
    /// KVM refuses it on a started CPU). Load the kernel first
    /// ([`crate::load_kernel_image`]).
    fn setup_boot<M: vm_memory::GuestMemory>(
        vcpu: &S390Vcpu,
        mem: &M,
        boot: &BootSetup,
    ) -> Result<()> {
        crate::write_ipl_lowcore(mem, boot.prefix, 0)?;
        vcpu.set_prefix(boot.prefix);
        let psw = kvm_s390_psw {
            mask: boot.psw_mask,
            addr: boot.psw_addr,
        };
        sys::set_initial_psw(&vcpu.fd, &psw).map_err(Error::ioctl("KVM_S390_SET_INITIAL_PSW"))
    }

    fn kvm_run(vcpu: &mut S390Vcpu) -> &mut [u8] {
        vcpu.run.as_mut_slice()
    }

    fn run(vcpu: &mut S390Vcpu) -> Result<RunOutcome> {
        match sys::run(&vcpu.fd) {
            Ok(()) => Ok(RunOutcome::Exited),
            Err(e) if matches!(e.raw_os_error(), Some(libc::EINTR | libc::EAGAIN)) => {
                Ok(RunOutcome::Interrupted)
            }
            Err(source) => Err(Error::Ioctl {
                ioctl: "KVM_RUN",
                source,
            }),
        }
    }

    fn decode_exit(run: &mut [u8]) -> std::result::Result<VcpuExit<'_, Self>, DecodeError> {
        decode_exit(run)
    }

    fn handle_arch_exit(io: &S390Io, exit: S390Exit<'_>) -> ArchExitOutcome {
        io.handle(exit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Handles over non-KVM files: every kernel call must fail with an
    /// error naming its ioctl, never panic.
    fn fakes() -> (S390System, S390Vm) {
        let f = || File::open("/dev/null").unwrap();
        (
            S390System {
                kvm: f(),
                run_len: 4096,
            },
            S390Vm::from_file(f()),
        )
    }

    fn vcpu() -> S390Vcpu {
        let file = vmm_sys_util::tempfile::TempFile::new().unwrap().into_file();
        file.set_len(4096).unwrap();
        let run = RunMapping::new(&file, 4096).unwrap();
        S390Vcpu {
            fd: File::open("/dev/null").unwrap(),
            run,
            id: VcpuId(2),
        }
    }

    fn ioctl_name<T: std::fmt::Debug>(r: Result<T>) -> &'static str {
        match r {
            Err(Error::Ioctl { ioctl, .. }) => ioctl,
            other => panic!("expected an ioctl error, got {other:?}"),
        }
    }

    #[test]
    fn system_and_vm_calls_fail_cleanly_on_invalid_fds() {
        let (sys, vm) = fakes();
        assert!(sys.as_raw_fd() >= 0 && vm.as_raw_fd() >= 0);
        assert_eq!(S390x::check_extension(&sys, Capability::USER_MEMORY), 0);
        assert_eq!(S390x::vm_check_extension(&vm, Capability::USER_MEMORY), 0);
        assert_eq!(S390x::vcpu_mmap_size(&sys).unwrap(), 4096);
        assert_eq!(
            ioctl_name(S390x::create_vm(&sys, &VmConfig::default())),
            "KVM_CREATE_VM"
        );
        assert_eq!(
            ioctl_name(S390x::create_vcpu(&sys, &vm, VcpuId(0))),
            "KVM_CREATE_VCPU"
        );
        let small = S390System {
            kvm: File::open("/dev/null").unwrap(),
            run_len: 1024,
        };
        assert!(matches!(
            S390x::create_vcpu(&small, &vm, VcpuId(0)),
            Err(Error::RunAreaTooSmall { .. })
        ));
        // A capability the (fake) kernel lacks is named.
        let e = S390x::init_vm(&vm, &VmConfig::default()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "KVM capability KVM_CAP_S390_IRQCHIP (99) is not supported by this kernel"
        );
        for cfg in [
            VmConfig {
                irqchip: false,
                user_sigp: true,
                user_stsi: false,
                ucontrol: false,
            },
            VmConfig {
                irqchip: false,
                user_sigp: false,
                user_stsi: true,
                ucontrol: false,
            },
        ] {
            assert!(matches!(
                S390x::init_vm(&vm, &cfg),
                Err(Error::MissingCapability { .. })
            ));
        }
        let none = VmConfig {
            irqchip: false,
            user_sigp: false,
            user_stsi: false,
            ucontrol: false,
        };
        assert!(S390x::init_vm(&vm, &none).is_ok());
        let region = UserMemoryRegion {
            slot: kvmkit_core::SlotId(0),
            flags: kvmkit_core::MemoryFlags::NONE,
            guest_phys_addr: 0,
            memory_size: 0,
            userspace_addr: 0,
        };
        // SAFETY: a zero-sized region names no memory; the fd is not KVM's.
        let r = unsafe { S390x::set_user_memory_region(&vm, &region) };
        assert_eq!(ioctl_name(r), "KVM_SET_USER_MEMORY_REGION");
        assert!(matches!(
            enable_vm_cap(&vm, caps::S390_USER_STSI),
            Err(Error::MissingCapability { number: 109, .. })
        ));
    }

    #[test]
    fn vcpu_calls_fail_cleanly_on_invalid_fds() {
        let (sys, vm) = fakes();
        let mut v = vcpu();
        assert_eq!(v.id(), VcpuId(2));
        assert!(v.as_raw_fd() >= 0);
        assert_eq!(ioctl_name(S390x::get_regs(&v)), "KVM_GET_REGS");
        assert_eq!(
            ioctl_name(S390x::set_regs(&v, &kvm_regs::default())),
            "KVM_SET_REGS"
        );
        assert_eq!(ioctl_name(S390x::get_sregs(&v)), "KVM_GET_SREGS");
        assert_eq!(
            ioctl_name(S390x::set_sregs(&v, &kvm_sregs::default())),
            "KVM_SET_SREGS"
        );
        assert_eq!(ioctl_name(S390x::get_fpu(&v)), "KVM_GET_FPU");
        assert_eq!(
            ioctl_name(S390x::set_fpu(&v, &kvm_fpu::default())),
            "KVM_SET_FPU"
        );
        let mut b = [0u8; 8];
        assert_eq!(
            ioctl_name(S390x::get_one_reg(&v, crate::uapi::KVM_REG_S390_PP, &mut b)),
            "KVM_GET_ONE_REG"
        );
        assert_eq!(
            ioctl_name(S390x::set_one_reg(&v, crate::uapi::KVM_REG_S390_PP, &b)),
            "KVM_SET_ONE_REG"
        );
        assert!(matches!(
            S390x::get_one_reg(&v, crate::uapi::KVM_REG_S390_PP, &mut b[..2]),
            Err(Error::OneRegBuffer {
                needed: 8,
                len: 2,
                ..
            })
        ));
        assert!(matches!(
            S390x::set_one_reg(&v, crate::uapi::KVM_REG_S390_PP, &b[..2]),
            Err(Error::OneRegBuffer { .. })
        ));
        assert_eq!(
            ioctl_name(S390x::set_guest_debug(
                &v,
                &GuestDebug::new().single_step(true)
            )),
            "KVM_SET_GUEST_DEBUG"
        );
        assert_eq!(ioctl_name(S390x::save_vcpu_state(&v)), "KVM_GET_ONE_REG");
        assert_eq!(
            ioctl_name(S390x::restore_vcpu_state(&v, &S390VcpuState::default())),
            "KVM_SET_SREGS"
        );
        assert_eq!(ioctl_name(S390x::run(&mut v)), "KVM_RUN");
        assert_eq!(
            ioctl_name(S390x::init_vcpu(
                &sys,
                &vm,
                &v,
                VcpuId(2),
                &VcpuConfig::default()
            )),
            "KVM_S390_INITIAL_RESET"
        );
        assert!(S390x::init_vcpu(
            &sys,
            &vm,
            &v,
            VcpuId(2),
            &VcpuConfig {
                reset: VcpuReset::None
            }
        )
        .is_ok());
        assert!(matches!(
            S390x::init_vcpu(
                &sys,
                &vm,
                &v,
                VcpuId(2),
                &VcpuConfig {
                    reset: VcpuReset::Clear
                }
            ),
            Err(Error::MissingCapability { number: 179, .. })
        ));
        assert_eq!(
            ioctl_name(v.reset(VcpuReset::Normal)),
            "KVM_S390_NORMAL_RESET"
        );
        assert_eq!(
            ioctl_name(v.reset(VcpuReset::Clear)),
            "KVM_S390_CLEAR_RESET"
        );
        assert_eq!(
            ioctl_name(v.inject_program_interrupt(6)),
            "KVM_S390_IRQ(KVM_S390_PROGRAM_INT)"
        );
    }

    #[test]
    fn a_state_of_another_version_is_refused_before_any_write() {
        let mut v = vcpu();
        let before = S390x::kvm_run(&mut v).to_vec();
        let newer = S390VcpuState {
            version: STATE_VERSION + 1,
            psw_addr: 0x1_0000,
            prefix: 0x8000,
            ..S390VcpuState::default()
        };
        let e = S390x::restore_vcpu_state(&v, &newer).unwrap_err();
        assert!(
            matches!(
                e,
                Error::StateVersion {
                    what: "vCPU",
                    found,
                    supported: STATE_VERSION
                } if found == STATE_VERSION + 1
            ),
            "{e:?}"
        );
        assert_eq!(
            e.to_string(),
            "cannot restore vCPU state of format version 2: this build reads version 1"
        );
        // Neither the PSW nor the prefix (nor the dirty mark) reached the
        // run area, and no ioctl was issued (it would have failed first).
        assert_eq!(S390x::kvm_run(&mut v), &before[..]);
    }

    /// `KVM_CREATE_VM` and `KVM_CREATE_VCPU` have the same numbers on this
    /// host's KVM (see tests/kvm_host.rs): a real vCPU fd whose `kvm_run`
    /// cannot be mapped at the length asked.
    #[test]
    fn kvm_a_run_area_that_cannot_be_mapped_names_vcpu_and_length() {
        let Some(kvm) = kvmkit_test_support::kvm_or_skip!(S390x) else {
            return;
        };
        let plain = VmConfig {
            irqchip: false,
            user_sigp: false,
            user_stsi: false,
            ucontrol: false,
        };
        let vm = S390x::create_vm(kvm.arch_system(), &plain).expect("KVM_CREATE_VM");
        // More than any address space: mmap fails with ENOMEM.
        let huge = S390System {
            kvm: kvm.arch_system().kvm.try_clone().unwrap(),
            run_len: usize::MAX & !0xfff,
        };
        let e = S390x::create_vcpu(&huge, &vm, VcpuId(5)).unwrap_err();
        match &e {
            Error::MapRun { vcpu, len, source } => {
                assert_eq!((*vcpu, *len), (5, huge.run_len));
                assert_eq!(source.raw_os_error(), Some(libc::ENOMEM));
            }
            other => panic!("expected MapRun, got {other:?}"),
        }
        assert!(e.to_string().starts_with("cannot map the "), "{e}");
        assert!(
            e.to_string().ends_with("-byte kvm_run area of vCPU 5"),
            "{e}"
        );
    }

    /// `KVM_CHECK_EXTENSION` and `KVM_ENABLE_CAP` are generic: on this
    /// host's KVM the helper behind `init_vm`'s capabilities enables a
    /// capability the VM has, and names the ioctl when the kernel refuses.
    #[test]
    fn kvm_vm_capabilities_are_checked_then_enabled() {
        let Some(kvm) = kvmkit_test_support::kvm_or_skip!(S390x) else {
            return;
        };
        let plain = VmConfig {
            irqchip: false,
            user_sigp: false,
            user_stsi: false,
            ucontrol: false,
        };
        let vm = S390x::create_vm(kvm.arch_system(), &plain).expect("KVM_CREATE_VM");
        // Enabling with no option bits is accepted by any KVM that has it.
        assert!(S390x::vm_check_extension(&vm, Capability::MANUAL_DIRTY_LOG_PROTECT2) > 0);
        enable_vm_cap(&vm, Capability::MANUAL_DIRTY_LOG_PROTECT2).unwrap();
        // A capability that exists but cannot be enabled: the kernel's
        // EINVAL, named.
        let e = enable_vm_cap(&vm, Capability::USER_MEMORY).unwrap_err();
        assert!(
            matches!(&e, Error::Ioctl { ioctl: "KVM_ENABLE_CAP", source }
                if source.raw_os_error() == Some(libc::EINVAL)),
            "{e:?}"
        );
        // One it lacks is refused before KVM_ENABLE_CAP.
        assert!(matches!(
            enable_vm_cap(&vm, Capability::S390_IRQCHIP),
            Err(Error::MissingCapability { number: 99, .. })
        ));
    }

    #[test]
    fn vcpu_state_takes_psw_and_prefix_from_kvm_run_and_puts_them_back() {
        use crate::sys::tests::with_ioctls_accepted;
        let mut v = vcpu();
        // Where the guest stopped, as KVM leaves it in kvm_run: a 64-bit
        // PSW and the prefix in the sync regs.
        v.write_run_u64(off::PSW_MASK, 0x0705_0001_8000_0000);
        v.write_run_u64(off::PSW_ADDR, 0x1_0042);
        v.write_run_u64(off::SYNC_PREFIX, 0x8000);
        let accepted = [
            sys::KVM_GET_ONE_REG,
            sys::KVM_GET_REGS,
            sys::KVM_GET_SREGS,
            sys::KVM_GET_FPU,
            sys::KVM_SET_ONE_REG,
            sys::KVM_SET_REGS,
            sys::KVM_SET_SREGS,
            sys::KVM_SET_FPU,
        ];
        let (saved, run) = with_ioctls_accepted(&accepted, move || {
            let saved = S390x::save_vcpu_state(&v).unwrap();
            // The vCPU ran on and its kvm_run changed.
            v.write_run_u64(off::PSW_MASK, 0);
            v.write_run_u64(off::PSW_ADDR, 0x9999);
            v.write_run_u64(off::SYNC_PREFIX, 0);
            v.write_run_u64(off::DIRTY_REGS, 0);
            S390x::restore_vcpu_state(&v, &saved).unwrap();
            (saved, S390x::kvm_run(&mut v).to_vec())
        });
        assert_eq!(saved.version, STATE_VERSION);
        assert_eq!(
            (saved.psw_mask, saved.psw_addr, saved.prefix),
            (0x0705_0001_8000_0000, 0x1_0042, 0x8000)
        );
        // Every saved ONE_REG register, at its size.
        let ids: Vec<u64> = saved.one_regs.iter().map(|(id, _)| *id).collect();
        let want: Vec<u64> = SAVED_ONE_REGS.iter().map(|&(_, id)| id).collect();
        assert_eq!(ids, want);
        assert!(saved
            .one_regs
            .iter()
            .all(|(id, b)| b.len() == sys::one_reg_size(*id)));
        // The restore wrote them back into kvm_run, big-endian, and marked
        // the prefix dirty so that KVM loads it on the next KVM_RUN.
        let u64_at = |o: usize| u64::from_be_bytes(run[o..o + 8].try_into().unwrap());
        assert_eq!(u64_at(off::PSW_MASK), 0x0705_0001_8000_0000);
        assert_eq!(u64_at(off::PSW_ADDR), 0x1_0042);
        assert_eq!(u64_at(off::SYNC_PREFIX), 0x8000);
        assert_eq!(u64_at(off::DIRTY_REGS) & KVM_SYNC_PREFIX, KVM_SYNC_PREFIX);
    }

    #[test]
    fn psw_and_prefix_live_in_the_run_area() {
        let mut v = vcpu();
        let run = S390x::kvm_run(&mut v);
        assert_eq!(run.len(), 4096);
        run[off::PSW_ADDR..off::PSW_ADDR + 8].copy_from_slice(&0x1_0042u64.to_be_bytes());
        assert_eq!(S390x::program_counter(&v).unwrap(), 0x1_0042);
        v.set_prefix(0x4000);
        let run = S390x::kvm_run(&mut v);
        assert_eq!(run[off::SYNC_PREFIX + 6..off::SYNC_PREFIX + 8], [0x40, 0]);
        assert_eq!(run[off::DIRTY_REGS + 7], 1); // KVM_SYNC_PREFIX
                                                 // setup_boot: lowcore written, prefix set, then the PSW ioctl fails
                                                 // (no KVM here) naming itself.
        let mem =
            vm_memory::GuestMemoryMmap::<()>::from_ranges(&[(vm_memory::GuestAddress(0), 0x10000)])
                .unwrap();
        let boot = BootSetup {
            prefix: 0x2000,
            ..BootSetup::linux(0x10000)
        };
        assert_eq!(
            ioctl_name(S390x::setup_boot(&v, &mem, &boot)),
            "KVM_S390_SET_INITIAL_PSW"
        );
        assert_eq!(v.read_run_u64(off::SYNC_PREFIX), 0x2000);
        let bad = BootSetup {
            prefix: 0x1000,
            ..boot
        };
        assert!(matches!(
            S390x::setup_boot(&v, &mem, &bad),
            Err(Error::InvalidBootParameter { .. })
        ));
        // decode and handle through the trait.
        let run = S390x::kvm_run(&mut v);
        run[8..12].copy_from_slice(&14u32.to_be_bytes());
        match S390x::decode_exit(run).unwrap() {
            VcpuExit::Arch(e) => assert!(matches!(
                S390x::handle_arch_exit(&S390Io::new(), e),
                ArchExitOutcome::SystemEvent {
                    kind: kvmkit_core::SystemEventKind::Reset
                }
            )),
            e => panic!("{e:?}"),
        }
    }
}
