//! `Arch` for x86_64, on kvm-ioctls.

use crate::boot::prepare;
use crate::cpuid::vcpu_cpuid;
use crate::exit::X86Exit;
use crate::host::HostFacts;
use crate::msrs::boot_msr_entries;
use crate::sys::RunArea;
use crate::vcpu_state::write_msrs;
use crate::{
    decode_exit, BootSetup, Error, IoDirection, IrqchipMode, Result, VcpuConfig, VmConfig, X86Io,
    X86VcpuState,
};
use kvm_bindings::{
    kvm_cpuid_entry2, kvm_enable_cap, kvm_fpu, kvm_guest_debug, kvm_pit_config, kvm_regs,
    kvm_sregs, CpuId, KVM_CAP_SPLIT_IRQCHIP, KVM_MAX_CPUID_ENTRIES, KVM_PIT_SPEAKER_DUMMY,
};
use kvm_ioctls::{Kvm, VcpuFd, VmFd};
use kvmkit_core::{
    Arch, ArchExitOutcome, Capability, DecodeError, RunOutcome, UserMemoryRegion, VcpuExit, VcpuId,
};
use std::sync::{Arc, OnceLock};

/// The x86_64 architecture: the marker type implementing [`Arch`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct X86_64;

/// `/dev/kvm` for x86_64, with the supported CPUID read once.
#[derive(Debug)]
pub struct X86System {
    kvm: Kvm,
    run_len: usize,
    supported_cpuid: OnceLock<CpuId>,
    facts: OnceLock<Arc<HostFacts>>,
}

impl X86System {
    /// kvm-ioctls' handle, for calls this crate does not wrap.
    pub fn kvm_ioctls(&self) -> &Kvm {
        &self.kvm
    }

    fn supported_cpuid(&self) -> Result<&CpuId> {
        if let Some(c) = self.supported_cpuid.get() {
            return Ok(c);
        }
        let c = self
            .kvm
            .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
            .map_err(Error::ioctl("KVM_GET_SUPPORTED_CPUID"))?;
        Ok(self.supported_cpuid.get_or_init(|| c))
    }

    /// What this `/dev/kvm` offers for saving and restoring state.
    pub(crate) fn facts(&self) -> Result<Arc<HostFacts>> {
        if let Some(f) = self.facts.get() {
            return Ok(f.clone());
        }
        let f = Arc::new(HostFacts::read(&self.kvm, self.supported_cpuid()?)?);
        Ok(self.facts.get_or_init(|| f).clone())
    }
}

/// A VM fd for x86_64 and how its irqchip was set up.
///
/// Clones share the VM (the fd and the irqchip mode): an owned handle for
/// what must outlive a borrow of the `kvmkit_core::Vm`, such as the
/// userspace IOAPIC of [`crate::SplitIrqchip`], which sends MSIs and
/// installs routes from vCPU threads.
#[derive(Debug, Clone)]
pub struct X86Vm {
    fd: Arc<VmFd>,
    irqchip: Arc<OnceLock<IrqchipMode>>,
    pit: Arc<OnceLock<bool>>,
    slot_sizes: Arc<kvmkit_core::SlotSizes>,
}

impl X86Vm {
    /// kvm-ioctls' handle, for calls this crate does not wrap (irqfd, ioeventfd…).
    pub fn vm_fd(&self) -> &VmFd {
        &self.fd
    }

    /// The irqchip this VM was created with.
    pub fn irqchip(&self) -> IrqchipMode {
        self.irqchip.get().copied().unwrap_or_default()
    }

    /// True when the VM was created with the in-kernel PIT (`VmConfig::pit`
    /// with `IrqchipMode::Kernel`).
    pub fn has_pit(&self) -> bool {
        self.pit.get().copied().unwrap_or(false)
    }

    /// Wraps `KVM_CHECK_EXTENSION` on the VM fd; 0 means absent.
    pub(crate) fn check_extension(&self, cap: Capability) -> i32 {
        self.fd
            .check_extension_raw(libc::c_ulong::from(cap.number()))
    }

    /// The slot sizes `KVM_GET_DIRTY_LOG` is checked against.
    pub(crate) fn slot_sizes(&self) -> &kvmkit_core::SlotSizes {
        &self.slot_sizes
    }
}

/// A vCPU fd for x86_64 with its `kvm_run` mapping and what saving and
/// restoring its state needs (its VM, the host's facts).
#[derive(Debug)]
pub struct X86Vcpu {
    fd: VcpuFd,
    run_len: usize,
    pub(crate) has_lapic: bool,
    pub(crate) run_area: RunArea,
    pub(crate) vm: X86Vm,
    pub(crate) host: Arc<HostFacts>,
    /// The CPUID `init_vcpu` set, for kernels without `KVM_GET_CPUID2`.
    pub(crate) cpuid_set: OnceLock<Vec<kvm_cpuid_entry2>>,
}

impl X86Vcpu {
    /// kvm-ioctls' handle, for x86-only calls (MSRs, LAPIC, events…).
    pub fn vcpu_fd(&self) -> &VcpuFd {
        &self.fd
    }

    /// Wraps `KVM_RUN` with `kvm_run.immediate_exit` set: KVM finishes the
    /// port I/O or MMIO access of the last exit (an `in` gets its data, RIP
    /// moves past an `out`) and returns without entering the guest. The KVM
    /// API document asks this of userspace before it reads a vCPU's state;
    /// `Arch::save_vcpu_state` and `Arch::restore_vcpu_state` do it
    /// themselves. Call it from the thread that runs the vCPU.
    ///
    /// Fails with [`Error::PendingExit`] when finishing the access led to
    /// another exit (a `rep` string I/O), which must be handled first.
    ///
    /// ```
    /// use kvmkit_arch_x86_64::X86_64;
    /// use kvmkit_core::VcpuId;
    /// # let Some(kvm) = kvmkit_test_support::kvm_or_skip!(X86_64) else { return };
    /// let vm = kvm.create_vm(&Default::default()).unwrap();
    /// let vcpu = vm.create_vcpu(VcpuId(0), &Default::default()).unwrap();
    /// // Nothing pending: KVM returns at once, the guest never ran.
    /// vcpu.arch_fd().complete_pending_io().unwrap();
    /// ```
    pub fn complete_pending_io(&self) -> Result<()> {
        if self
            .run_area
            .complete_pending_io(&self.fd)
            .map_err(Error::ioctl("KVM_RUN"))?
        {
            Ok(())
        } else {
            Err(Error::PendingExit {
                reason: self.run_area.exit_reason(),
            })
        }
    }
}

/// LVT entries of the LAPIC register page.
const APIC_LVT0: usize = 0x350;
const APIC_LVT1: usize = 0x360;
const APIC_MODE_NMI: u32 = 0x4;
const APIC_MODE_EXTINT: u32 = 0x7;

fn set_lint(lapic: &mut kvm_bindings::kvm_lapic_state, reg: usize, mode: u32) {
    let mut b = [0u8; 4];
    for (i, x) in b.iter_mut().enumerate() {
        *x = lapic.regs[reg + i] as u8;
    }
    let v = (u32::from_le_bytes(b) & !0x700) | (mode << 8);
    for (i, x) in v.to_le_bytes().into_iter().enumerate() {
        lapic.regs[reg + i] = x as _;
    }
}

impl Arch for X86_64 {
    const NAME: &'static str = "x86_64";

    type Error = Error;
    type System = X86System;
    type VmFd = X86Vm;
    type VcpuFd = X86Vcpu;
    type Regs = kvm_regs;
    type Sregs = kvm_sregs;
    type Fpu = kvm_fpu;
    type GuestDebug = kvm_guest_debug;
    type VcpuState = X86VcpuState;
    type VmConfig = VmConfig;
    type VcpuConfig = VcpuConfig;
    type BootSetup = BootSetup;
    type ArchExit<'a> = X86Exit<'a>;
    type ArchIo = X86Io;

    fn open_system() -> Result<X86System> {
        let kvm = Kvm::new().map_err(Error::OpenKvm)?;
        let v = kvm.get_api_version();
        if v != 12 {
            return Err(Error::ApiVersion(v));
        }
        let run_len = kvm
            .get_vcpu_mmap_size()
            .map_err(Error::ioctl("KVM_GET_VCPU_MMAP_SIZE"))?;
        Ok(X86System {
            kvm,
            run_len,
            supported_cpuid: OnceLock::new(),
            facts: OnceLock::new(),
        })
    }

    fn check_extension(sys: &X86System, cap: Capability) -> i32 {
        sys.kvm
            .check_extension_raw(libc::c_ulong::from(cap.number()))
    }

    fn vcpu_mmap_size(sys: &X86System) -> Result<usize> {
        Ok(sys.run_len)
    }

    fn create_vm(sys: &X86System, _config: &VmConfig) -> Result<X86Vm> {
        let fd = sys.kvm.create_vm().map_err(Error::ioctl("KVM_CREATE_VM"))?;
        Ok(X86Vm {
            fd: Arc::new(fd),
            irqchip: Arc::new(OnceLock::new()),
            pit: Arc::new(OnceLock::new()),
            slot_sizes: Arc::default(),
        })
    }

    fn vm_check_extension(vm: &X86Vm, cap: Capability) -> i32 {
        vm.fd.check_extension_raw(libc::c_ulong::from(cap.number()))
    }

    fn init_vm(vm: &X86Vm, config: &VmConfig) -> Result<()> {
        vm.fd
            .set_identity_map_address(config.identity_map_address)
            .map_err(Error::ioctl("KVM_SET_IDENTITY_MAP_ADDR"))?;
        let tss = usize::try_from(config.tss_address).map_err(|_| Error::Ioctl {
            ioctl: "KVM_SET_TSS_ADDR",
            source: kvm_ioctls::Error::new(libc::EINVAL),
        })?;
        vm.fd
            .set_tss_address(tss)
            .map_err(Error::ioctl("KVM_SET_TSS_ADDR"))?;
        match config.irqchip {
            IrqchipMode::None => {}
            IrqchipMode::Kernel => {
                vm.fd
                    .create_irq_chip()
                    .map_err(Error::ioctl("KVM_CREATE_IRQCHIP"))?;
                crate::routing::set_pc_routing(&vm.fd)?;
                if config.pit {
                    let pit = kvm_pit_config {
                        flags: KVM_PIT_SPEAKER_DUMMY,
                        ..Default::default()
                    };
                    vm.fd
                        .create_pit2(pit)
                        .map_err(Error::ioctl("KVM_CREATE_PIT2"))?;
                }
            }
            IrqchipMode::Split { ioapic_pins } => {
                let mut cap = kvm_enable_cap {
                    cap: KVM_CAP_SPLIT_IRQCHIP,
                    ..Default::default()
                };
                cap.args[0] = u64::from(ioapic_pins);
                vm.fd
                    .enable_cap(&cap)
                    .map_err(Error::ioctl("KVM_ENABLE_CAP(KVM_CAP_SPLIT_IRQCHIP)"))?;
            }
        }
        // `init_vm` runs once per VM (from `Kvm::create_vm`); a second call
        // would have failed above (KVM_CREATE_IRQCHIP returns EEXIST).
        let _ = vm.irqchip.set(config.irqchip);
        let _ = vm
            .pit
            .set(config.pit && config.irqchip == IrqchipMode::Kernel);
        Ok(())
    }

    unsafe fn set_user_memory_region(vm: &X86Vm, r: &UserMemoryRegion) -> Result<()> {
        let region = kvm_bindings::kvm_userspace_memory_region {
            slot: r.slot.0,
            flags: r.flags.bits(),
            guest_phys_addr: r.guest_phys_addr,
            memory_size: r.memory_size,
            userspace_addr: r.userspace_addr,
        };
        // The slot's size is recorded for `DirtyLogArch::get_dirty_log`.
        vm.slot_sizes.update(region.slot, region.memory_size, || {
            // SAFETY: the caller guarantees the host range stays mapped while
            // the slot exists (the contract of `Arch::set_user_memory_region`).
            unsafe { vm.fd.set_user_memory_region(region) }
                .map_err(Error::ioctl("KVM_SET_USER_MEMORY_REGION"))
        })
    }

    fn create_vcpu(sys: &X86System, vm: &X86Vm, id: VcpuId) -> Result<X86Vcpu> {
        let host = sys.facts()?;
        let mut fd = vm
            .fd
            .create_vcpu(u64::from(id.0))
            .map_err(Error::ioctl("KVM_CREATE_VCPU"))?;
        let has_lapic = !matches!(vm.irqchip(), IrqchipMode::None);
        Ok(X86Vcpu {
            run_area: RunArea::of(&mut fd),
            fd,
            run_len: sys.run_len,
            has_lapic,
            vm: vm.clone(),
            host,
            cpuid_set: OnceLock::new(),
        })
    }

    fn init_vcpu(
        sys: &X86System,
        _vm: &X86Vm,
        vcpu: &X86Vcpu,
        id: VcpuId,
        config: &VcpuConfig,
    ) -> Result<()> {
        if let Some(policy) = &config.cpuid {
            let cpuid = vcpu_cpuid(sys.supported_cpuid()?, id, policy)?;
            vcpu.fd
                .set_cpuid2(&cpuid)
                .map_err(Error::ioctl("KVM_SET_CPUID2"))?;
            let _ = vcpu.cpuid_set.set(cpuid.as_slice().to_vec());
        }
        if config.boot_msrs {
            write_msrs(&vcpu.fd, &boot_msr_entries())?;
        }
        if config.lapic_lints && vcpu.has_lapic {
            let mut lapic = vcpu.fd.get_lapic().map_err(Error::ioctl("KVM_GET_LAPIC"))?;
            set_lint(&mut lapic, APIC_LVT0, APIC_MODE_EXTINT);
            set_lint(&mut lapic, APIC_LVT1, APIC_MODE_NMI);
            vcpu.fd
                .set_lapic(&lapic)
                .map_err(Error::ioctl("KVM_SET_LAPIC"))?;
        }
        Ok(())
    }

    fn get_regs(vcpu: &X86Vcpu) -> Result<kvm_regs> {
        vcpu.fd.get_regs().map_err(Error::ioctl("KVM_GET_REGS"))
    }

    fn set_regs(vcpu: &X86Vcpu, regs: &kvm_regs) -> Result<()> {
        vcpu.fd.set_regs(regs).map_err(Error::ioctl("KVM_SET_REGS"))
    }

    fn get_sregs(vcpu: &X86Vcpu) -> Result<kvm_sregs> {
        vcpu.fd.get_sregs().map_err(Error::ioctl("KVM_GET_SREGS"))
    }

    fn set_sregs(vcpu: &X86Vcpu, sregs: &kvm_sregs) -> Result<()> {
        vcpu.fd
            .set_sregs(sregs)
            .map_err(Error::ioctl("KVM_SET_SREGS"))
    }

    fn get_fpu(vcpu: &X86Vcpu) -> Result<kvm_fpu> {
        vcpu.fd.get_fpu().map_err(Error::ioctl("KVM_GET_FPU"))
    }

    fn set_fpu(vcpu: &X86Vcpu, fpu: &kvm_fpu) -> Result<()> {
        vcpu.fd.set_fpu(fpu).map_err(Error::ioctl("KVM_SET_FPU"))
    }

    fn program_counter(vcpu: &X86Vcpu) -> Result<u64> {
        Ok(Self::get_regs(vcpu)?.rip)
    }

    fn get_one_reg(vcpu: &X86Vcpu, id: u64, data: &mut [u8]) -> Result<usize> {
        let needed = kvm_ioctls::reg_size(id);
        if data.len() < needed {
            return Err(Error::OneRegBuffer {
                id,
                needed,
                len: data.len(),
            });
        }
        vcpu.fd
            .get_one_reg(id, data)
            .map_err(Error::ioctl("KVM_GET_ONE_REG"))
    }

    fn set_one_reg(vcpu: &X86Vcpu, id: u64, data: &[u8]) -> Result<usize> {
        let needed = kvm_ioctls::reg_size(id);
        if data.len() < needed {
            return Err(Error::OneRegBuffer {
                id,
                needed,
                len: data.len(),
            });
        }
        vcpu.fd
            .set_one_reg(id, data)
            .map_err(Error::ioctl("KVM_SET_ONE_REG"))
    }

    fn set_guest_debug(vcpu: &X86Vcpu, debug: &kvm_guest_debug) -> Result<()> {
        vcpu.fd
            .set_guest_debug(debug)
            .map_err(Error::ioctl("KVM_SET_GUEST_DEBUG"))
    }

    fn save_vcpu_state(vcpu: &X86Vcpu) -> Result<X86VcpuState> {
        crate::vcpu_state::save(vcpu)
    }

    fn restore_vcpu_state(vcpu: &X86Vcpu, s: &X86VcpuState) -> Result<()> {
        crate::vcpu_state::restore(vcpu, s)
    }

    fn setup_boot<M: vm_memory::GuestMemory>(
        vcpu: &X86Vcpu,
        mem: &M,
        boot: &BootSetup,
    ) -> Result<()> {
        let mut sregs = Self::get_sregs(vcpu)?;
        let (regs, fpu) = prepare(mem, boot, &mut sregs)?;
        Self::set_sregs(vcpu, &sregs)?;
        Self::set_regs(vcpu, &regs)?;
        if let Some(fpu) = fpu {
            Self::set_fpu(vcpu, &fpu)?;
        }
        Ok(())
    }

    fn kvm_run(vcpu: &mut X86Vcpu) -> &mut [u8] {
        crate::sys::kvm_run_bytes(&mut vcpu.fd, vcpu.run_len)
    }

    fn run(vcpu: &mut X86Vcpu) -> Result<RunOutcome> {
        match crate::sys::kvm_run(&vcpu.fd) {
            Ok(()) => Ok(RunOutcome::Exited),
            Err(e) if matches!(e.errno(), libc::EINTR | libc::EAGAIN) => {
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

    fn handle_arch_exit(io: &X86Io, exit: X86Exit<'_>) -> ArchExitOutcome {
        match exit {
            X86Exit::Io {
                direction,
                port,
                size,
                data,
            } => {
                let mut handled = true;
                for chunk in data.chunks_mut(usize::from(size)) {
                    handled &= match direction {
                        IoDirection::In => io.pio().read(port, chunk),
                        IoDirection::Out => io.pio().write(port, chunk),
                    };
                }
                if handled {
                    ArchExitOutcome::Handled
                } else {
                    ArchExitOutcome::Unhandled {
                        space: "pio",
                        addr: u64::from(port),
                        write: direction == IoDirection::Out,
                    }
                }
            }
            // No userspace MSRs are emulated: the guest gets #GP, as from
            // an MSR the CPU lacks.
            X86Exit::RdMsr { index, data, error } => {
                data.fill(0);
                *error = 1;
                ArchExitOutcome::Unhandled {
                    space: "msr",
                    addr: u64::from(index),
                    write: false,
                }
            }
            X86Exit::WrMsr { index, error, .. } => {
                *error = 1;
                ArchExitOutcome::Unhandled {
                    space: "msr",
                    addr: u64::from(index),
                    write: true,
                }
            }
            X86Exit::IoapicEoi { vector } => match io.eoi_handler() {
                Some(h) => {
                    h.end_of_interrupt(vector);
                    ArchExitOutcome::Handled
                }
                None => ArchExitOutcome::Unhandled {
                    space: "ioapic-eoi",
                    addr: u64::from(vector),
                    write: true,
                },
            },
            X86Exit::Other { reason } => ArchExitOutcome::Unhandled {
                space: "exit",
                addr: u64::from(reason),
                write: false,
            },
        }
    }
}
