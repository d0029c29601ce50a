//! `Arch` for 64-bit PowerPC, on raw ioctls with PowerPC's encoding.
//!
//! Every function here issues the real ioctl a PowerPC host needs; on other
//! hosts `/dev/kvm` does not speak PowerPC and the tests only reach these
//! through non-KVM file descriptors (errors naming the ioctl).

use crate::exit::PpcExit;
use crate::ioctls::*;
use crate::irq::PpcIrqChip;
use crate::sys::{self, RunMap};
use crate::uapi::*;
use crate::{
    decode_exit, fpr, snapshot_one_regs, BootSetup, Error, PaprIo, PpcVcpuState, Result,
    VcpuConfig, VmConfig, VmType, STATE_VERSION,
};
use kvmkit_core::{
    Arch, ArchExitOutcome, Capability, DecodeError, RunOutcome, UserMemoryRegion, VcpuExit, VcpuId,
};
use std::fs::OpenOptions;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};

/// 64-bit PowerPC (Book3S, pseries guests on KVM-HV or KVM-PR): the marker
/// type implementing [`Arch`].
///
/// ```
/// use kvmkit_arch_powerpc::Ppc64;
/// use kvmkit_core::Arch;
/// fn arch_name<A: Arch>() -> &'static str { A::NAME }
/// assert_eq!(arch_name::<Ppc64>(), "powerpc");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ppc64;

/// `/dev/kvm` on a PowerPC host, with the `kvm_run` size and the VM type the
/// next `KVM_CREATE_VM` uses.
///
/// ```
/// use kvmkit_arch_powerpc::PpcSystem;
/// // /dev/null is no KVM: the first ioctl fails and says which.
/// let e = PpcSystem::open("/dev/null".as_ref()).unwrap_err();
/// assert_eq!(e.to_string(), "KVM_GET_API_VERSION failed");
/// ```
#[derive(Debug)]
pub struct PpcSystem {
    kvm: OwnedFd,
    run_len: usize,
}

impl PpcSystem {
    /// Opens `path` (normally `/dev/kvm`), checks the API version and reads
    /// the `kvm_run` size.
    pub fn open(path: &Path) -> Result<PpcSystem> {
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_CLOEXEC)
            .open(path)
            .map_err(Error::OpenKvm)?;
        let kvm = OwnedFd::from(f);
        let v = sys::ioctl_val(kvm.as_fd(), KVM_GET_API_VERSION, 0)
            .map_err(Error::ioctl("KVM_GET_API_VERSION"))?;
        if u64::try_from(v).ok() != Some(KVM_API_VERSION) {
            return Err(Error::ApiVersion(v));
        }
        let len = sys::ioctl_val(kvm.as_fd(), KVM_GET_VCPU_MMAP_SIZE, 0)
            .map_err(Error::ioctl("KVM_GET_VCPU_MMAP_SIZE"))?;
        Ok(PpcSystem {
            kvm,
            run_len: usize::try_from(len).unwrap_or(0),
        })
    }

    /// The `/dev/kvm` descriptor, for ioctls this crate does not wrap.
    pub fn as_fd(&self) -> BorrowedFd<'_> {
        self.kvm.as_fd()
    }
}

/// A PowerPC VM fd, its type and its in-kernel interrupt controller.
///
/// ```no_run
/// use kvmkit_arch_powerpc::{Ppc64, VmConfig, VmType};
/// use kvmkit_irq::InterruptController;
/// let kvm = kvmkit_core::Kvm::<Ppc64>::new().unwrap();
/// let vm = kvm.create_vm(&VmConfig { vm_type: VmType::Pr, ..VmConfig::default() }).unwrap();
/// assert_eq!(vm.arch_fd().vm_type(), VmType::Pr);
/// let xics = vm.arch_fd().irqchip().unwrap();
/// xics.set_irq(3, true).unwrap();
/// ```
#[derive(Debug)]
pub struct PpcVm {
    fd: Arc<OwnedFd>,
    vm_type: VmType,
    irqchip: OnceLock<Option<Arc<PpcIrqChip>>>,
    dirty_slots: kvmkit_core::SlotSizes,
}

impl PpcVm {
    /// The type it was created with.
    pub fn vm_type(&self) -> VmType {
        self.vm_type
    }

    /// The in-kernel XICS or XIVE, once `init_vm` created it.
    pub fn irqchip(&self) -> Option<Arc<PpcIrqChip>> {
        self.irqchip.get().cloned().flatten()
    }

    /// The VM descriptor, for ioctls this crate does not wrap.
    pub fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// The slot sizes `KVM_GET_DIRTY_LOG` is checked against.
    pub(crate) fn dirty_slots(&self) -> &kvmkit_core::SlotSizes {
        &self.dirty_slots
    }

    /// Wraps `KVM_PPC_RTAS_DEFINE_TOKEN`: KVM itself handles RTAS service
    /// `name` (the in-kernel XICS's `ibm,set-xive`, `ibm,get-xive`,
    /// `ibm,int-off`, `ibm,int-on`) when the guest calls it by `token`; 0
    /// undefines it.
    pub fn define_rtas_token(&self, name: &str, token: u64) -> Result<()> {
        let mut args = kvm_rtas_token_args {
            name: [0; 120],
            token,
        };
        if name.len() >= args.name.len() || name.contains('\0') {
            return Err(Error::RtasName(name.to_string()));
        }
        args.name[..name.len()].copy_from_slice(name.as_bytes());
        sys::ioctl_plain(self.fd.as_fd(), KVM_PPC_RTAS_DEFINE_TOKEN, &mut args)
            .map_err(Error::ioctl("KVM_PPC_RTAS_DEFINE_TOKEN"))?;
        Ok(())
    }
}

/// A PowerPC vCPU fd with its mapped `kvm_run` area.
///
/// ```no_run
/// use kvmkit_arch_powerpc::{uapi::KVM_REG_PPC_TB_OFFSET, Ppc64};
/// use kvmkit_core::VcpuId;
/// let kvm = kvmkit_core::Kvm::<Ppc64>::new().unwrap();
/// let vm = kvm.create_vm(&Default::default()).unwrap();
/// let vcpu = vm.create_vcpu(VcpuId(0), &Default::default()).unwrap();
/// let mut tb = [0u8; 8];
/// vcpu.get_one_reg(KVM_REG_PPC_TB_OFFSET, &mut tb).unwrap();
/// let _fd = vcpu.arch_fd().as_fd();
/// ```
#[derive(Debug)]
pub struct PpcVcpu {
    fd: OwnedFd,
    run: RunMap,
}

impl PpcVcpu {
    /// The vCPU descriptor, for ioctls this crate does not wrap.
    pub fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Wraps `KVM_RUN` with `kvm_run.immediate_exit` set: KVM finishes the
    /// last exit (an MMIO load gets its data, a hypercall its return values
    /// in r3 to r12, an OSI or EPR exit its results) and returns `EINTR`
    /// without entering the guest. `Arch::save_vcpu_state` and
    /// `Arch::restore_vcpu_state` do it themselves, as the KVM API document
    /// asks before a vCPU's state is read. Call it from the thread that runs
    /// the vCPU.
    ///
    /// Fails with [`Error::PendingExit`] when finishing needed another exit
    /// (a VSX MMIO access split in parts), which must be handled first.
    ///
    /// ```no_run
    /// use kvmkit_arch_powerpc::Ppc64;
    /// use kvmkit_core::VcpuId;
    /// let kvm = kvmkit_core::Kvm::<Ppc64>::new().unwrap();
    /// let vm = kvm.create_vm(&Default::default()).unwrap();
    /// let vcpu = vm.create_vcpu(VcpuId(0), &Default::default()).unwrap();
    /// // Nothing pending: KVM returns at once, the guest never ran.
    /// vcpu.arch_fd().complete_pending_exit().unwrap();
    /// ```
    pub fn complete_pending_exit(&self) -> Result<()> {
        let flag = self.run.immediate_exit();
        let before = flag.swap(1, Ordering::SeqCst);
        let r = sys::ioctl_val(self.fd.as_fd(), KVM_RUN, 0);
        // A kick that came meanwhile is still pending in the kicker's mark.
        flag.store(before, Ordering::SeqCst);
        match r {
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => Ok(()),
            Err(source) => Err(Error::Ioctl {
                ioctl: "KVM_RUN",
                source,
            }),
            Ok(_) => Err(Error::PendingExit {
                reason: self.run.exit_reason(),
            }),
        }
    }
}

/// Reads every ONE_REG register of [`snapshot_one_regs`] the vCPU has.
pub(crate) fn read_one_regs(vcpu: &PpcVcpu) -> Result<Vec<(u64, Vec<u8>)>> {
    let mut one_regs = Vec::new();
    for id in snapshot_one_regs() {
        let mut b = vec![0u8; sys::reg_size(id)];
        match sys::get_one_reg(vcpu.fd.as_fd(), id, &mut b) {
            Ok(_) => one_regs.push((id, b)),
            Err(e) if is_absent(&e) => {}
            Err(source) => {
                return Err(Error::Ioctl {
                    ioctl: "KVM_GET_ONE_REG",
                    source,
                })
            }
        }
    }
    Ok(one_regs)
}

fn enable_cap(fd: BorrowedFd<'_>, cap: Capability, name: &'static str) -> Result<()> {
    let mut ec = kvm_enable_cap::new(cap.number(), [0; 4]);
    sys::ioctl_plain(fd, KVM_ENABLE_CAP, &mut ec).map_err(Error::ioctl(name))?;
    Ok(())
}

/// Registers a kernel without them (KVM-PR, older CPUs) rejects with these.
fn is_absent(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EINVAL | libc::ENOENT))
}

impl Arch for Ppc64 {
    const NAME: &'static str = "powerpc";

    type Error = Error;
    type System = PpcSystem;
    type VmFd = PpcVm;
    type VcpuFd = PpcVcpu;
    type Regs = kvm_regs;
    type Sregs = kvm_sregs;
    type Fpu = kvm_fpu;
    type GuestDebug = kvm_guest_debug;
    type VcpuState = PpcVcpuState;
    type VmConfig = VmConfig;
    type VcpuConfig = VcpuConfig;
    type BootSetup = BootSetup;
    type ArchExit<'a> = PpcExit<'a>;
    type ArchIo = PaprIo;

    fn open_system() -> Result<PpcSystem> {
        PpcSystem::open(Path::new("/dev/kvm"))
    }

    fn check_extension(sys: &PpcSystem, cap: Capability) -> i32 {
        sys::ioctl_val(
            sys.kvm.as_fd(),
            KVM_CHECK_EXTENSION,
            u64::from(cap.number()),
        )
        .unwrap_or(0)
    }

    fn vcpu_mmap_size(sys: &PpcSystem) -> Result<usize> {
        Ok(sys.run_len)
    }

    fn create_vm(sys: &PpcSystem, config: &VmConfig) -> Result<PpcVm> {
        let vm_type = config.vm_type;
        let raw = loop {
            match sys::ioctl_val(sys.kvm.as_fd(), KVM_CREATE_VM, vm_type.raw()) {
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
                r => break r.map_err(Error::ioctl("KVM_CREATE_VM"))?,
            }
        };
        Ok(PpcVm {
            fd: Arc::new(sys::owned_fd(raw)),
            vm_type,
            irqchip: OnceLock::new(),
            dirty_slots: kvmkit_core::SlotSizes::default(),
        })
    }

    fn vm_check_extension(vm: &PpcVm, cap: Capability) -> i32 {
        sys::ioctl_val(vm.fd.as_fd(), KVM_CHECK_EXTENSION, u64::from(cap.number())).unwrap_or(0)
    }

    fn init_vm(vm: &PpcVm, config: &VmConfig) -> Result<()> {
        if config.vm_type != VmType::Default && config.vm_type != vm.vm_type {
            return Err(Error::VmTypeMismatch {
                created: vm.vm_type.name(),
                wanted: config.vm_type.name(),
            });
        }
        crate::irq::validate(config)?;
        if let Some(order) = config.hpt_order {
            let mut o = order;
            sys::ioctl_plain(vm.fd.as_fd(), KVM_PPC_ALLOCATE_HTAB, &mut o)
                .map_err(Error::ioctl("KVM_PPC_ALLOCATE_HTAB"))?;
        }
        let chip = PpcIrqChip::create(&vm.fd, config)?;
        // `init_vm` runs once per VM (from `Kvm::create_vm`); a second call
        // fails above (KVM_CREATE_DEVICE refuses a second XICS with EEXIST).
        let _ = vm.irqchip.set(chip.map(Arc::new));
        Ok(())
    }

    unsafe fn set_user_memory_region(vm: &PpcVm, r: &UserMemoryRegion) -> Result<()> {
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
            unsafe { sys::set_user_memory_region(vm.fd.as_fd(), &region) }
                .map_err(Error::ioctl("KVM_SET_USER_MEMORY_REGION"))
        })
    }

    fn create_vcpu(sys: &PpcSystem, vm: &PpcVm, id: VcpuId) -> Result<PpcVcpu> {
        let raw = sys::ioctl_val(vm.fd.as_fd(), KVM_CREATE_VCPU, u64::from(id.0))
            .map_err(Error::ioctl("KVM_CREATE_VCPU"))?;
        let fd = sys::owned_fd(raw);
        let run = RunMap::new(fd.as_fd(), sys.run_len).map_err(|source| Error::MapKvmRun {
            vcpu: id.0,
            len: sys.run_len,
            source,
        })?;
        Ok(PpcVcpu { fd, run })
    }

    fn init_vcpu(
        _sys: &PpcSystem,
        vm: &PpcVm,
        vcpu: &PpcVcpu,
        id: VcpuId,
        config: &VcpuConfig,
    ) -> Result<()> {
        if config.papr {
            enable_cap(
                vcpu.fd.as_fd(),
                Capability::PPC_PAPR,
                "KVM_ENABLE_CAP(KVM_CAP_PPC_PAPR)",
            )?;
        }
        if let Some(pvr) = config.pvr {
            let mut sregs = Self::get_sregs(vcpu)?;
            sregs.pvr = pvr;
            Self::set_sregs(vcpu, &sregs)?;
        }
        if let Some(compat) = config.arch_compat {
            Self::set_one_reg(vcpu, KVM_REG_PPC_ARCH_COMPAT, &compat.to_ne_bytes())?;
        }
        if let Some(chip) = vm.irqchip() {
            chip.connect_vcpu(vcpu.fd.as_fd(), id.0)?;
        }
        Ok(())
    }

    fn get_regs(vcpu: &PpcVcpu) -> Result<kvm_regs> {
        let mut regs = kvm_regs::default();
        sys::ioctl_plain(vcpu.fd.as_fd(), KVM_GET_REGS, &mut regs)
            .map_err(Error::ioctl("KVM_GET_REGS"))?;
        Ok(regs)
    }

    fn set_regs(vcpu: &PpcVcpu, regs: &kvm_regs) -> Result<()> {
        let mut r = *regs;
        sys::ioctl_plain(vcpu.fd.as_fd(), KVM_SET_REGS, &mut r)
            .map_err(Error::ioctl("KVM_SET_REGS"))?;
        Ok(())
    }

    fn get_sregs(vcpu: &PpcVcpu) -> Result<kvm_sregs> {
        let mut sregs = kvm_sregs::default();
        sys::ioctl_plain(vcpu.fd.as_fd(), KVM_GET_SREGS, &mut sregs)
            .map_err(Error::ioctl("KVM_GET_SREGS"))?;
        Ok(sregs)
    }

    fn set_sregs(vcpu: &PpcVcpu, sregs: &kvm_sregs) -> Result<()> {
        let mut s = *sregs;
        sys::ioctl_plain(vcpu.fd.as_fd(), KVM_SET_SREGS, &mut s)
            .map_err(Error::ioctl("KVM_SET_SREGS"))?;
        Ok(())
    }

    /// PowerPC's KVM has no `KVM_GET_FPU` (it returns `ENOTSUPP`): the 32
    /// FPRs are read with `KVM_GET_ONE_REG` (`KVM_REG_PPC_FPR0` + n).
    fn get_fpu(vcpu: &PpcVcpu) -> Result<kvm_fpu> {
        let mut fpu = kvm_fpu::default();
        for (n, f) in (0..).zip(fpu.fpr.iter_mut()) {
            let mut b = [0u8; 8];
            let id = fpr(n).expect("n < 32");
            sys::get_one_reg(vcpu.fd.as_fd(), id, &mut b)
                .map_err(Error::ioctl("KVM_GET_ONE_REG(KVM_REG_PPC_FPR)"))?;
            *f = u64::from_ne_bytes(b);
        }
        Ok(fpu)
    }

    /// Writes the 32 FPRs with `KVM_SET_ONE_REG` (see `get_fpu`).
    fn set_fpu(vcpu: &PpcVcpu, fpu: &kvm_fpu) -> Result<()> {
        for (n, f) in (0..).zip(fpu.fpr.iter()) {
            let id = fpr(n).expect("n < 32");
            sys::set_one_reg(vcpu.fd.as_fd(), id, &f.to_ne_bytes())
                .map_err(Error::ioctl("KVM_SET_ONE_REG(KVM_REG_PPC_FPR)"))?;
        }
        Ok(())
    }

    fn program_counter(vcpu: &PpcVcpu) -> Result<u64> {
        Ok(Self::get_regs(vcpu)?.pc)
    }

    fn get_one_reg(vcpu: &PpcVcpu, id: u64, data: &mut [u8]) -> Result<usize> {
        let needed = sys::reg_size(id);
        if data.len() < needed {
            return Err(Error::OneRegBuffer {
                id,
                needed,
                len: data.len(),
            });
        }
        sys::get_one_reg(vcpu.fd.as_fd(), id, data).map_err(Error::ioctl("KVM_GET_ONE_REG"))
    }

    fn set_one_reg(vcpu: &PpcVcpu, id: u64, data: &[u8]) -> Result<usize> {
        let needed = sys::reg_size(id);
        if data.len() < needed {
            return Err(Error::OneRegBuffer {
                id,
                needed,
                len: data.len(),
            });
        }
        sys::set_one_reg(vcpu.fd.as_fd(), id, data).map_err(Error::ioctl("KVM_SET_ONE_REG"))
    }

    fn set_guest_debug(vcpu: &PpcVcpu, debug: &kvm_guest_debug) -> Result<()> {
        let mut d = *debug;
        sys::ioctl_plain(vcpu.fd.as_fd(), KVM_SET_GUEST_DEBUG, &mut d)
            .map_err(Error::ioctl("KVM_SET_GUEST_DEBUG"))?;
        Ok(())
    }

    /// First finishes the last exit (see [`PpcVcpu::complete_pending_exit`]),
    /// then reads the registers and every ONE_REG register of
    /// [`snapshot_one_regs`] the kernel has.
    fn save_vcpu_state(vcpu: &PpcVcpu) -> Result<PpcVcpuState> {
        vcpu.complete_pending_exit()?;
        Ok(PpcVcpuState {
            version: STATE_VERSION,
            regs: Self::get_regs(vcpu)?,
            sregs: Self::get_sregs(vcpu)?,
            fpu: Self::get_fpu(vcpu)?,
            one_regs: read_one_regs(vcpu)?,
        })
    }

    /// Refuses a state of another format version; finishes the target's
    /// last exit, so that no later `KVM_RUN` writes over the restored
    /// registers; then writes sregs (the PVR decides what the other
    /// registers mean), regs, FPRs and the ONE_REG registers in order.
    fn restore_vcpu_state(vcpu: &PpcVcpu, s: &PpcVcpuState) -> Result<()> {
        if s.version != STATE_VERSION {
            return Err(Error::StateVersion {
                what: "vCPU",
                found: s.version,
                supported: STATE_VERSION,
            });
        }
        vcpu.complete_pending_exit()?;
        Self::set_sregs(vcpu, &s.sregs)?;
        Self::set_regs(vcpu, &s.regs)?;
        Self::set_fpu(vcpu, &s.fpu)?;
        for (id, bytes) in &s.one_regs {
            Self::set_one_reg(vcpu, *id, bytes)?;
        }
        Ok(())
    }

    /// Writes the device tree, sets NIP, MSR and r3–r5, and marks the vCPU
    /// online (`KVM_REG_PPC_ONLINE`, which KVM-HV on POWER9 uses; kernels
    /// without it reject the id and that is not an error).
    fn setup_boot<M: vm_memory::GuestMemory>(
        vcpu: &PpcVcpu,
        mem: &M,
        boot: &BootSetup,
    ) -> Result<()> {
        boot.write_boot_data(mem)?;
        let mut regs = Self::get_regs(vcpu)?;
        boot.boot_regs(&mut regs);
        Self::set_regs(vcpu, &regs)?;
        match sys::set_one_reg(vcpu.fd.as_fd(), KVM_REG_PPC_ONLINE, &1u32.to_ne_bytes()) {
            Err(e) if !is_absent(&e) => Err(Error::Ioctl {
                ioctl: "KVM_SET_ONE_REG(KVM_REG_PPC_ONLINE)",
                source: e,
            }),
            _ => Ok(()),
        }
    }

    fn kvm_run(vcpu: &mut PpcVcpu) -> &mut [u8] {
        vcpu.run.bytes()
    }

    fn run(vcpu: &mut PpcVcpu) -> Result<RunOutcome> {
        match sys::ioctl_val(vcpu.fd.as_fd(), KVM_RUN, 0) {
            Ok(_) => Ok(RunOutcome::Exited),
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

    fn handle_arch_exit(io: &PaprIo, exit: PpcExit<'_>) -> ArchExitOutcome {
        match exit {
            PpcExit::PaprHcall { nr, args, mut out } => io.handle(nr, &args, &mut out),
            PpcExit::Osi { gprs } => ArchExitOutcome::Unhandled {
                space: "osi",
                addr: gprs.get(3).unwrap_or(0),
                write: false,
            },
            PpcExit::Dcr {
                dcrn,
                data,
                is_write,
            } => {
                if !is_write {
                    data.fill(0xff);
                }
                ArchExitOutcome::Unhandled {
                    space: "dcr",
                    addr: u64::from(dcrn),
                    write: is_write,
                }
            }
            PpcExit::Epr { epr } => {
                epr.fill(0xff);
                ArchExitOutcome::Unhandled {
                    space: "epr",
                    addr: 0,
                    write: false,
                }
            }
            PpcExit::MachineCheck { disposition } => ArchExitOutcome::Stop {
                reason: format!("machine check ({disposition:?})"),
            },
            PpcExit::Watchdog => ArchExitOutcome::Stop {
                reason: "BookE watchdog expired".into(),
            },
            PpcExit::HardwareUnknown {
                hardware_exit_reason,
            } => ArchExitOutcome::Stop {
                reason: format!("KVM could not handle hardware exit {hardware_exit_reason:#x}"),
            },
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::{decode_exit, IrqchipKind, KVM_RUN_MIN_LEN};
    use vm_memory::{GuestAddress, GuestMemoryMmap};

    fn dev(path: &str) -> OwnedFd {
        OwnedFd::from(
            OpenOptions::new()
                .read(true)
                .write(true)
                .open(path)
                .unwrap(),
        )
    }

    pub(crate) fn fake_system() -> PpcSystem {
        PpcSystem {
            kvm: dev("/dev/null"),
            run_len: 4096,
        }
    }

    /// A VM over /dev/null: every ioctl fails (ENOTTY).
    pub(crate) fn fake_vm(vm_type: VmType) -> PpcVm {
        PpcVm {
            fd: Arc::new(dev("/dev/null")),
            vm_type,
            irqchip: OnceLock::new(),
            dirty_slots: kvmkit_core::SlotSizes::default(),
        }
    }

    /// A VM over /dev/null whose `init_vm` made `chip` (itself over
    /// /dev/null, see `irq::tests::fake`).
    pub(crate) fn fake_vm_with_chip(vm_type: VmType, chip: PpcIrqChip) -> PpcVm {
        let vm = fake_vm(vm_type);
        vm.irqchip
            .set(Some(Arc::new(chip)))
            .expect("a fresh VM has no irqchip yet");
        vm
    }

    /// A vCPU over /dev/zero: the mapping works, every ioctl fails (ENOTTY).
    pub(crate) fn fake_vcpu() -> PpcVcpu {
        let fd = dev("/dev/zero");
        let run = RunMap::new(fd.as_fd(), 4096).unwrap();
        PpcVcpu { fd, run }
    }

    fn msg<T: std::fmt::Debug>(r: Result<T>) -> String {
        r.unwrap_err().to_string()
    }

    #[test]
    fn system_opens_only_a_powerpc_kvm() {
        assert_eq!(
            msg(PpcSystem::open(Path::new("/nonexistent/kvm"))),
            "cannot open /dev/kvm"
        );
        let e = PpcSystem::open(Path::new("/dev/null")).unwrap_err();
        assert_eq!(e.to_string(), "KVM_GET_API_VERSION failed");
        assert_eq!(e.errno(), Some(libc::ENOTTY));
        if !std::env::consts::ARCH.starts_with("powerpc") {
            // No /dev/kvm, or one that does not know PowerPC's numbers.
            assert!(Ppc64::open_system().is_err());
        }
        let sys = fake_system();
        assert_eq!(Ppc64::check_extension(&sys, Capability::PPC_PAPR), 0);
        assert_eq!(Ppc64::vcpu_mmap_size(&sys).unwrap(), 4096);
        let _ = sys.as_fd();
        assert_eq!(
            msg(Ppc64::create_vm(&sys, &VmConfig::default())),
            "KVM_CREATE_VM failed"
        );
        let vm = fake_vm(VmType::Hv);
        assert_eq!(
            msg(Ppc64::create_vcpu(&sys, &vm, VcpuId(0))),
            "KVM_CREATE_VCPU failed"
        );
    }

    #[test]
    fn vm_set_up_checks_type_then_calls_the_kernel() {
        let vm = fake_vm(VmType::Hv);
        assert_eq!(vm.vm_type(), VmType::Hv);
        assert_eq!(Ppc64::vm_check_extension(&vm, Capability::IRQ_XICS), 0);
        let e = Ppc64::init_vm(
            &vm,
            &VmConfig {
                vm_type: VmType::Pr,
                ..VmConfig::default()
            },
        )
        .unwrap_err();
        assert!(e.to_string().starts_with(
            "the VM was created as KVM_VM_PPC_HV but its configuration asks for KVM_VM_PPC_PR"
        ));
        let e = Ppc64::init_vm(
            &vm,
            &VmConfig {
                vm_type: VmType::Hv,
                hpt_order: Some(24),
                ..VmConfig::default()
            },
        );
        assert_eq!(msg(e), "KVM_PPC_ALLOCATE_HTAB failed");
        assert_eq!(
            msg(Ppc64::init_vm(&vm, &VmConfig::default())),
            "KVM_CREATE_DEVICE failed"
        );
        assert!(msg(Ppc64::init_vm(
            &vm,
            &VmConfig {
                irq_count: 0,
                ..VmConfig::default()
            }
        ))
        .starts_with("invalid interrupt controller"));
        let none = VmConfig {
            irqchip: IrqchipKind::None,
            ..VmConfig::default()
        };
        Ppc64::init_vm(&vm, &none).unwrap();
        assert!(vm.irqchip().is_none());
        let _ = vm.as_fd();
        let region = UserMemoryRegion {
            slot: kvmkit_core::SlotId(0),
            flags: kvmkit_core::MemoryFlags::NONE,
            guest_phys_addr: 0,
            memory_size: 0,
            userspace_addr: 0,
        };
        // SAFETY: a size-0 region maps nothing (and /dev/null is no VM).
        let r = unsafe { Ppc64::set_user_memory_region(&vm, &region) };
        assert_eq!(msg(r), "KVM_SET_USER_MEMORY_REGION failed");
        assert_eq!(
            msg(vm.define_rtas_token("ibm,set-xive", 0x2000)),
            "KVM_PPC_RTAS_DEFINE_TOKEN failed"
        );
        assert!(msg(vm.define_rtas_token(&"x".repeat(120), 1)).starts_with("RTAS service name"));
        assert!(vm.define_rtas_token("a\0b", 1).is_err());
    }

    #[test]
    fn vcpu_calls_name_their_ioctls() {
        let sys = fake_system();
        let vm = fake_vm(VmType::Default);
        let mut vcpu = fake_vcpu();
        let _ = vcpu.as_fd();
        assert_eq!(msg(Ppc64::get_regs(&vcpu)), "KVM_GET_REGS failed");
        assert_eq!(
            msg(Ppc64::set_regs(&vcpu, &kvm_regs::default())),
            "KVM_SET_REGS failed"
        );
        assert_eq!(msg(Ppc64::get_sregs(&vcpu)), "KVM_GET_SREGS failed");
        assert_eq!(
            msg(Ppc64::set_sregs(&vcpu, &kvm_sregs::default())),
            "KVM_SET_SREGS failed"
        );
        assert_eq!(
            msg(Ppc64::get_fpu(&vcpu)),
            "KVM_GET_ONE_REG(KVM_REG_PPC_FPR) failed"
        );
        assert_eq!(
            msg(Ppc64::set_fpu(&vcpu, &kvm_fpu::default())),
            "KVM_SET_ONE_REG(KVM_REG_PPC_FPR) failed"
        );
        assert_eq!(msg(Ppc64::program_counter(&vcpu)), "KVM_GET_REGS failed");
        let mut small = [0u8; 4];
        assert_eq!(
            msg(Ppc64::get_one_reg(&vcpu, KVM_REG_PPC_TB_OFFSET, &mut small)),
            "register 0x103000000000009c needs 8 bytes, the buffer has 4"
        );
        assert!(Ppc64::set_one_reg(&vcpu, KVM_REG_PPC_TB_OFFSET, &small).is_err());
        assert_eq!(
            msg(Ppc64::get_one_reg(&vcpu, KVM_REG_PPC_DSISR, &mut small)),
            "KVM_GET_ONE_REG failed"
        );
        assert_eq!(
            msg(Ppc64::set_one_reg(&vcpu, KVM_REG_PPC_DSISR, &small)),
            "KVM_SET_ONE_REG failed"
        );
        assert_eq!(
            msg(Ppc64::set_guest_debug(&vcpu, &kvm_guest_debug::default())),
            "KVM_SET_GUEST_DEBUG failed"
        );
        // Saving and restoring first finish the last exit with KVM_RUN.
        assert_eq!(msg(Ppc64::save_vcpu_state(&vcpu)), "KVM_RUN failed");
        assert_eq!(
            msg(Ppc64::restore_vcpu_state(&vcpu, &PpcVcpuState::default())),
            "KVM_RUN failed"
        );
        assert_eq!(msg(vcpu.complete_pending_exit()), "KVM_RUN failed");
        assert_eq!(
            vcpu.run.immediate_exit().load(Ordering::SeqCst),
            0,
            "immediate_exit is put back"
        );
        assert_eq!(msg(read_one_regs(&vcpu)), "KVM_GET_ONE_REG failed");
        let old = PpcVcpuState {
            version: 0,
            ..PpcVcpuState::default()
        };
        assert_eq!(
            msg(Ppc64::restore_vcpu_state(&vcpu, &old)),
            "cannot restore vCPU state of format version 0: this build reads version 1"
        );
        assert_eq!(msg(Ppc64::run(&mut vcpu)), "KVM_RUN failed");
        assert_eq!(
            msg(Ppc64::init_vcpu(
                &sys,
                &vm,
                &vcpu,
                VcpuId(0),
                &VcpuConfig::default()
            )),
            "KVM_ENABLE_CAP(KVM_CAP_PPC_PAPR) failed"
        );
        let no_papr = VcpuConfig {
            papr: false,
            ..VcpuConfig::default()
        };
        Ppc64::init_vcpu(&sys, &vm, &vcpu, VcpuId(0), &no_papr).unwrap();
        let pvr = VcpuConfig {
            pvr: Some(0x004e_1202),
            ..no_papr.clone()
        };
        assert_eq!(
            msg(Ppc64::init_vcpu(&sys, &vm, &vcpu, VcpuId(0), &pvr)),
            "KVM_GET_SREGS failed"
        );
        let compat = VcpuConfig {
            arch_compat: Some(0x0f00_0005),
            ..no_papr
        };
        assert_eq!(
            msg(Ppc64::init_vcpu(&sys, &vm, &vcpu, VcpuId(0), &compat)),
            "KVM_SET_ONE_REG failed"
        );

        // setup_boot writes the device tree before touching registers.
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x10000)]).unwrap();
        let boot = BootSetup::pseries(0, 0x8000, vec![0xd0, 0x0d], crate::Endian::Big);
        assert_eq!(
            msg(Ppc64::setup_boot(&vcpu, &mem, &boot)),
            "KVM_GET_REGS failed"
        );
        let mut b = [0u8; 2];
        vm_memory::Bytes::read_slice(&mem, &mut b, GuestAddress(0x8000)).unwrap();
        assert_eq!(b, [0xd0, 0x0d]);

        // The kvm_run mapping is the vCPU's, and decodes through the Arch.
        let run = Ppc64::kvm_run(&mut vcpu);
        assert_eq!(run.len(), 4096);
        run[8..12].copy_from_slice(&KVM_EXIT_HLT.to_ne_bytes());
        assert!(matches!(
            Ppc64::decode_exit(Ppc64::kvm_run(&mut vcpu)).unwrap(),
            VcpuExit::Hlt
        ));
    }

    #[test]
    fn init_vcpu_connects_the_vcpu_to_the_vms_irqchip() {
        let sys = fake_system();
        let vcpu = fake_vcpu();
        let no_papr = VcpuConfig {
            papr: false,
            ..VcpuConfig::default()
        };
        // The server number is the vCPU id; the connection is the vCPU's
        // KVM_ENABLE_CAP with the controller's capability.
        for (kind, ioctl) in [
            (IrqchipKind::Xics, "KVM_ENABLE_CAP(KVM_CAP_IRQ_XICS)"),
            (IrqchipKind::Xive, "KVM_ENABLE_CAP(KVM_CAP_PPC_IRQ_XIVE)"),
        ] {
            let vm = fake_vm_with_chip(VmType::Hv, crate::irq::tests::fake(kind));
            let e = Ppc64::init_vcpu(&sys, &vm, &vcpu, VcpuId(3), &no_papr).unwrap_err();
            assert!(
                matches!(&e, Error::Ioctl { ioctl: i, source } if *i == ioctl
                    && source.raw_os_error() == Some(libc::ENOTTY)),
                "{e:?}"
            );
        }
        // Without an irqchip there is nothing to connect: no ioctl at all.
        Ppc64::init_vcpu(&sys, &fake_vm(VmType::Hv), &vcpu, VcpuId(3), &no_papr).unwrap();
    }

    #[test]
    fn registers_the_kernel_lacks_are_left_out_of_a_snapshot() {
        // /dev/urandom answers every ioctl it does not know with EINVAL, the
        // errno of KVM_GET_ONE_REG for a register the kernel does not have
        // (KVM-PR, an older CPU); its kvm_run comes from /dev/zero.
        let zero = dev("/dev/zero");
        let vcpu = PpcVcpu {
            fd: dev("/dev/urandom"),
            run: RunMap::new(zero.as_fd(), 4096).unwrap(),
        };
        assert!(read_one_regs(&vcpu).unwrap().is_empty());
        // ENOENT means absent too; ENOTTY (no KVM at all) fails the read,
        // as vcpu_calls_name_their_ioctls checks.
        assert!(is_absent(&std::io::Error::from_raw_os_error(libc::ENOENT)));
        assert!(!is_absent(&std::io::Error::from_raw_os_error(libc::ENOTTY)));
        // An explicit read of one of them is an error, with the errno.
        let mut b = [0u8; 8];
        let e = Ppc64::get_one_reg(&vcpu, KVM_REG_PPC_TB_OFFSET, &mut b).unwrap_err();
        assert_eq!(e.errno(), Some(libc::EINVAL));
    }

    #[test]
    fn a_kvm_run_that_exits_again_is_a_pending_exit() {
        use crate::sys::tests::with_ioctls_accepted;
        // KVM_RUN with immediate_exit set returns 0 instead of EINTR when
        // finishing the last exit led to another (here a hypercall, as
        // kvm_run says): the state must not be read past it.
        let mut vcpu = fake_vcpu();
        Ppc64::kvm_run(&mut vcpu)[8..12].copy_from_slice(&KVM_EXIT_PAPR_HCALL.to_ne_bytes());
        let (pending, flag, save, outcome) = with_ioctls_accepted(&[KVM_RUN], move || {
            let pending = vcpu.complete_pending_exit().unwrap_err();
            let flag = vcpu.run.immediate_exit().load(Ordering::SeqCst);
            let save = Ppc64::save_vcpu_state(&vcpu).unwrap_err();
            // A plain run that returns 0 exited: its exit is to decode.
            let outcome = Ppc64::run(&mut vcpu).unwrap();
            (pending, flag, save, outcome)
        });
        assert!(
            matches!(pending, Error::PendingExit { reason } if reason == KVM_EXIT_PAPR_HCALL),
            "{pending:?}"
        );
        assert_eq!(
            pending.to_string(),
            "the vCPU has an unfinished exit (reason 19): run it to completion before saving or restoring its state"
        );
        assert_eq!(flag, 0, "immediate_exit is put back");
        assert!(
            matches!(save, Error::PendingExit { reason: 19 }),
            "{save:?}"
        );
        assert_eq!(outcome, RunOutcome::Exited);
    }

    #[test]
    fn a_kernel_with_every_register_gives_a_complete_vcpu_state() {
        use crate::sys::tests::with_ioctls_answered;
        // KVM_RUN finishes the last exit (EINTR, nothing pending); every
        // register call is accepted.
        let answers = [
            (KVM_RUN, libc::EINTR),
            (KVM_GET_REGS, 0),
            (KVM_GET_SREGS, 0),
            (KVM_GET_ONE_REG, 0),
            (KVM_SET_REGS, 0),
            (KVM_SET_SREGS, 0),
            (KVM_SET_ONE_REG, 0),
        ];
        let vcpu = fake_vcpu();
        let s = with_ioctls_answered(&answers, move || {
            let s = Ppc64::save_vcpu_state(&vcpu)?;
            Ppc64::restore_vcpu_state(&vcpu, &s)?;
            Ok::<_, Error>(s)
        })
        .unwrap();
        assert_eq!(s.version, STATE_VERSION);
        // Every register of the snapshot list, at its size.
        let ids: Vec<u64> = s.one_regs.iter().map(|(id, _)| *id).collect();
        assert_eq!(ids, crate::snapshot_one_regs());
        assert!(s
            .one_regs
            .iter()
            .all(|(id, b)| b.len() == sys::reg_size(*id)));
    }

    #[test]
    fn booting_marks_the_vcpu_online_where_the_kernel_knows_how() {
        use crate::sys::tests::with_ioctls_answered;
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x10000)]).unwrap();
        let boot = BootSetup::pseries(0x10, 0x8000, vec![0xd0, 0x0d], crate::Endian::Big);
        let regs = [(KVM_GET_REGS, 0), (KVM_SET_REGS, 0)];
        // KVM_REG_PPC_ONLINE accepted, or unknown to the kernel (EINVAL,
        // before POWER9's KVM-HV): the vCPU boots either way.
        for errno in [0, libc::EINVAL, libc::ENOENT] {
            let answers = [regs[0], regs[1], (KVM_SET_ONE_REG, errno)];
            let (vcpu, mem, boot) = (fake_vcpu(), &mem, &boot);
            with_ioctls_answered(&answers, move || Ppc64::setup_boot(&vcpu, mem, boot))
                .unwrap_or_else(|e| panic!("errno {errno}: {e}"));
        }
        // Any other refusal is an error naming the register.
        let answers = [regs[0], regs[1], (KVM_SET_ONE_REG, libc::EPERM)];
        let (vcpu, mem, boot) = (fake_vcpu(), &mem, &boot);
        let e = with_ioctls_answered(&answers, move || Ppc64::setup_boot(&vcpu, mem, boot))
            .unwrap_err();
        assert_eq!(e.to_string(), "KVM_SET_ONE_REG(KVM_REG_PPC_ONLINE) failed");
        assert_eq!(e.errno(), Some(libc::EPERM));
    }

    #[test]
    fn a_kernel_of_another_api_version_is_refused() {
        use crate::sys::tests::with_ioctls_accepted;
        // KVM_GET_API_VERSION answering 0 (not 12).
        let e = with_ioctls_accepted(&[KVM_GET_API_VERSION], || {
            PpcSystem::open(Path::new("/dev/null")).unwrap_err()
        });
        assert!(matches!(e, Error::ApiVersion(0)), "{e:?}");
        assert_eq!(
            e.to_string(),
            "KVM API version 0 is not the supported version 12"
        );
        // An RTAS token the kernel accepts.
        let vm = fake_vm(VmType::Hv);
        with_ioctls_accepted(&[KVM_PPC_RTAS_DEFINE_TOKEN], || {
            vm.define_rtas_token("ibm,int-on", 0x2003)
        })
        .unwrap();
    }

    fn arch_exit(reason: u32, fill: impl FnOnce(&mut [u8])) -> ArchExitOutcome {
        let mut run = vec![0u8; KVM_RUN_MIN_LEN];
        run[8..12].copy_from_slice(&reason.to_ne_bytes());
        fill(&mut run);
        let io = PaprIo::new(Box::new(std::io::sink()));
        let VcpuExit::Arch(e) = decode_exit(&mut run).unwrap() else {
            panic!("not an arch exit")
        };
        Ppc64::handle_arch_exit(&io, e)
    }

    #[test]
    fn arch_exits_are_handled_or_reported() {
        let unhandled = |space, addr, write| ArchExitOutcome::Unhandled { space, addr, write };
        assert_eq!(
            arch_exit(KVM_EXIT_PAPR_HCALL, |r| r[32] = 0x77),
            unhandled("hcall", 0x77, false)
        );
        assert_eq!(
            arch_exit(KVM_EXIT_OSI, |r| r[56] = 9),
            unhandled("osi", 9, false)
        );
        assert_eq!(
            arch_exit(KVM_EXIT_DCR, |r| r[32] = 0x10),
            unhandled("dcr", 0x10, false)
        );
        assert_eq!(
            arch_exit(KVM_EXIT_DCR, |r| r[40] = 1),
            unhandled("dcr", 0, true)
        );
        assert_eq!(arch_exit(KVM_EXIT_EPR, |_| ()), unhandled("epr", 0, false));
        for (reason, why) in [
            (KVM_EXIT_NMI, "machine check (FullyRecovered)"),
            (KVM_EXIT_WATCHDOG, "BookE watchdog expired"),
            (KVM_EXIT_UNKNOWN, "KVM could not handle hardware exit 0x700"),
        ] {
            let out = arch_exit(reason, |r| {
                r[14] = 1;
                r[32..40].copy_from_slice(&0x700u64.to_ne_bytes());
            });
            assert_eq!(out, ArchExitOutcome::Stop { reason: why.into() });
        }
    }
}
