//! The saved state of an x86_64 VM and its vCPUs, serialisable with serde.
//!
//! The kvm-bindings structs are serialised by kvm-bindings' own `serde`
//! feature, as their raw bytes. Its deserialiser zero-pads a shorter byte
//! string and truncates a longer one (its way of reading structs from other
//! kernel versions), so a damaged state is not always a decoding error: the
//! [`STATE_VERSION`] check and the ABI profile check
//! ([`crate::X86AbiProfile::check`]) are what guard a restore.

use kvm_bindings::{
    kvm_clock_data, kvm_cpuid_entry2, kvm_debugregs, kvm_fpu, kvm_irqchip, kvm_lapic_state,
    kvm_mp_state, kvm_pit_state2, kvm_regs, kvm_sregs, kvm_vcpu_events, kvm_xcrs,
};
use serde::{Deserialize, Serialize};
use std::fmt;

/// The format version of [`X86VcpuState`] and [`X86VmState`]; a restore
/// refuses any other.
///
/// ```
/// assert_eq!(kvmkit_arch_x86_64::X86VmState::default().version, kvmkit_arch_x86_64::STATE_VERSION);
/// ```
pub const STATE_VERSION: u32 = 1;

/// One piece of the saved state, for saying which were left out and why.
///
/// ```
/// use kvmkit_arch_x86_64::StatePiece;
/// assert_eq!(StatePiece::Msr(0x6e0).to_string(), "MSR 0x6e0");
/// assert_eq!(StatePiece::Xsave.to_string(), "XSAVE area");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum StatePiece {
    /// The XSAVE area (`KVM_GET_XSAVE`/`KVM_GET_XSAVE2`).
    Xsave,
    /// The extended control registers (`KVM_GET_XCRS`).
    Xcrs,
    /// The in-kernel LAPIC (`KVM_GET_LAPIC`).
    Lapic,
    /// The MP state (`KVM_GET_MP_STATE`).
    MpState,
    /// Pending exceptions, interrupts, NMIs, SMIs (`KVM_GET_VCPU_EVENTS`).
    VcpuEvents,
    /// The debug registers (`KVM_GET_DEBUGREGS`).
    DebugRegs,
    /// The vCPU's CPUID table (`KVM_GET_CPUID2`).
    Cpuid,
    /// The guest TSC frequency (`KVM_GET_TSC_KHZ`).
    TscKhz,
    /// One MSR of the candidate list (`KVM_GET_MSRS`).
    Msr(u32),
    /// The in-kernel PIC and IOAPIC (`KVM_GET_IRQCHIP`).
    Irqchip,
    /// The in-kernel PIT (`KVM_GET_PIT2`).
    Pit,
    /// The VM clock (`KVM_GET_CLOCK`).
    Clock,
}

impl fmt::Display for StatePiece {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StatePiece::Xsave => f.write_str("XSAVE area"),
            StatePiece::Xcrs => f.write_str("XCRs"),
            StatePiece::Lapic => f.write_str("LAPIC"),
            StatePiece::MpState => f.write_str("MP state"),
            StatePiece::VcpuEvents => f.write_str("vCPU events"),
            StatePiece::DebugRegs => f.write_str("debug registers"),
            StatePiece::Cpuid => f.write_str("CPUID"),
            StatePiece::TscKhz => f.write_str("TSC frequency"),
            StatePiece::Msr(i) => write!(f, "MSR {i:#x}"),
            StatePiece::Irqchip => f.write_str("in-kernel PIC and IOAPIC"),
            StatePiece::Pit => f.write_str("in-kernel PIT"),
            StatePiece::Clock => f.write_str("VM clock"),
        }
    }
}

/// Why a piece of state was not saved.
///
/// ```
/// use kvmkit_arch_x86_64::Omission;
/// let o = Omission::MissingCapability { capability: "KVM_CAP_XSAVE".into() };
/// assert_eq!(o.to_string(), "the kernel lacks KVM_CAP_XSAVE");
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Omission {
    /// `KVM_CHECK_EXTENSION` returned 0 for the capability that reads it.
    MissingCapability {
        /// The capability, e.g. `KVM_CAP_XCRS`.
        capability: String,
    },
    /// The VM has no in-kernel device holding it.
    NotInKernel {
        /// What the VM has instead, e.g. `IrqchipMode::None`.
        detail: String,
    },
    /// The kernel refused the ioctl that reads it.
    Refused {
        /// The ioctl, e.g. `KVM_GET_TSC_KHZ`.
        ioctl: String,
        /// The errno.
        errno: i32,
    },
    /// `KVM_GET_MSRS` stopped at this MSR: the vCPU cannot read it.
    NotReadable,
}

impl fmt::Display for Omission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Omission::MissingCapability { capability } => {
                write!(f, "the kernel lacks {capability}")
            }
            Omission::NotInKernel { detail } => write!(f, "not in the kernel: {detail}"),
            Omission::Refused { ioctl, errno } => write!(f, "{ioctl} failed with errno {errno}"),
            Omission::NotReadable => f.write_str("KVM_GET_MSRS cannot read it on this vCPU"),
        }
    }
}

/// A piece of state that was not saved, and why (the shared
/// [`kvmkit_core::Omitted`], with an [`Omission`] as the reason).
///
/// ```
/// use kvmkit_arch_x86_64::{Omission, Omitted, StatePiece};
/// let o = Omitted { piece: StatePiece::Lapic, reason: Omission::NotInKernel { detail: "IrqchipMode::None".into() } };
/// assert_eq!(o.to_string(), "LAPIC: not in the kernel: IrqchipMode::None");
/// ```
pub type Omitted = kvmkit_core::Omitted<StatePiece, Omission>;

/// kvm-bindings 0.14 has no serde for `kvm_fpu`: its fields, by name.
#[derive(Serialize, Deserialize)]
#[serde(remote = "kvm_fpu")]
struct FpuDef {
    fpr: [[u8; 16]; 8],
    fcw: u16,
    fsw: u16,
    ftwx: u8,
    pad1: u8,
    last_opcode: u16,
    last_ip: u64,
    last_dp: u64,
    xmm: [[u8; 16]; 16],
    mxcsr: u32,
    pad2: u32,
}

/// Everything `Arch::save_vcpu_state` reads from an x86_64 vCPU.
///
/// Each optional piece is `None` when the kernel or the VM lacks it, with the
/// reason in [`X86VcpuState::omitted`]. `Arch::restore_vcpu_state` writes the
/// pieces back in the order KVM needs (see the crate README, "Snapshot and
/// restore").
///
/// ```
/// use kvmkit_arch_x86_64::{X86VcpuState, STATE_VERSION};
/// let s = X86VcpuState::default();
/// assert_eq!(s.version, STATE_VERSION);
/// let json = serde_json::to_string(&s).unwrap();
/// let back: X86VcpuState = serde_json::from_str(&json).unwrap();
/// assert_eq!(back, s);
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct X86VcpuState {
    /// The format version, [`STATE_VERSION`] when saved by this build.
    pub version: u32,
    /// General-purpose registers.
    pub regs: kvm_regs,
    /// Segment, control and descriptor-table registers, EFER and the APIC base.
    pub sregs: kvm_sregs,
    /// x87 / SSE state (`KVM_GET_FPU`); a restore writes it only when there
    /// is no [`X86VcpuState::xsave`], which holds the same and more.
    #[serde(with = "FpuDef")]
    pub fpu: kvm_fpu,
    /// The raw XSAVE region as `KVM_GET_XSAVE2` (or `KVM_GET_XSAVE`) wrote
    /// it, in 32-bit words: 4096 bytes, or the `KVM_CAP_XSAVE2` size.
    pub xsave: Option<Vec<u32>>,
    /// The extended control registers (XCR0).
    pub xcrs: Option<kvm_xcrs>,
    /// MSRs that read back, as (index, value), TSC first.
    pub msrs: Vec<(u32, u64)>,
    /// The in-kernel LAPIC, when the VM has one.
    pub lapic: Option<kvm_lapic_state>,
    /// Runnable, halted, waiting for SIPI…
    pub mp_state: Option<kvm_mp_state>,
    /// Pending exceptions, interrupts, NMIs.
    pub vcpu_events: Option<kvm_vcpu_events>,
    /// Debug registers.
    pub debugregs: Option<kvm_debugregs>,
    /// The CPUID the vCPU was given (empty when it was given none).
    pub cpuid: Vec<kvm_cpuid_entry2>,
    /// The guest TSC frequency in kHz.
    pub tsc_khz: Option<u32>,
    /// The pieces not saved, and why.
    pub omitted: Vec<Omitted>,
}

impl Default for X86VcpuState {
    fn default() -> Self {
        X86VcpuState {
            version: STATE_VERSION,
            regs: kvm_regs::default(),
            sregs: kvm_sregs::default(),
            fpu: kvm_fpu::default(),
            xsave: None,
            xcrs: None,
            msrs: Vec::new(),
            lapic: None,
            mp_state: None,
            vcpu_events: None,
            debugregs: None,
            cpuid: Vec::new(),
            tsc_khz: None,
            omitted: Vec::new(),
        }
    }
}

impl X86VcpuState {
    /// The saved value of MSR `index`.
    ///
    /// ```
    /// let mut s = kvmkit_arch_x86_64::X86VcpuState::default();
    /// s.msrs.push((0x10, 42));
    /// assert_eq!(s.msr(0x10), Some(42));
    /// assert_eq!(s.msr(0x11), None);
    /// ```
    pub fn msr(&self, index: u32) -> Option<u64> {
        self.msrs.iter().find(|(i, _)| *i == index).map(|(_, v)| *v)
    }

    /// Why `piece` was not saved, if it was not.
    ///
    /// ```
    /// use kvmkit_arch_x86_64::{StatePiece, X86VcpuState};
    /// assert!(X86VcpuState::default().omission(StatePiece::Xsave).is_none());
    /// ```
    pub fn omission(&self, piece: StatePiece) -> Option<&Omission> {
        omission(&self.omitted, piece)
    }
}

fn omission(list: &[Omitted], piece: StatePiece) -> Option<&Omission> {
    list.iter().find(|o| o.piece == piece).map(|o| &o.reason)
}

/// The in-kernel PIC pair and IOAPIC (`KVM_GET_IRQCHIP` for chips 0, 1, 2),
/// each as kvm-bindings' `kvm_irqchip` (a union; serialised as its bytes).
///
/// ```
/// use kvmkit_arch_x86_64::{save_vm_state, IrqchipMode, VmConfig, X86_64};
/// # let Some(kvm) = kvmkit_test_support::kvm_or_skip!(X86_64) else { return };
/// let vm = kvm.create_vm(&VmConfig { irqchip: IrqchipMode::Kernel, ..Default::default() }).unwrap();
/// let chips = save_vm_state(vm.arch_fd()).unwrap().irqchip.unwrap();
/// assert_eq!((chips.pic_master.chip_id, chips.pic_slave.chip_id, chips.ioapic.chip_id), (0, 1, 2));
/// ```
#[derive(Clone, Copy, Serialize, Deserialize)]
pub struct IrqchipState {
    /// `KVM_IRQCHIP_PIC_MASTER`.
    pub pic_master: kvm_irqchip,
    /// `KVM_IRQCHIP_PIC_SLAVE`.
    pub pic_slave: kvm_irqchip,
    /// `KVM_IRQCHIP_IOAPIC`.
    pub ioapic: kvm_irqchip,
}

impl fmt::Debug for IrqchipState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // kvm_irqchip is a union: show which chip each holds.
        f.debug_struct("IrqchipState")
            .field("pic_master.chip_id", &self.pic_master.chip_id)
            .field("pic_slave.chip_id", &self.pic_slave.chip_id)
            .field("ioapic.chip_id", &self.ioapic.chip_id)
            .finish()
    }
}

/// The VM-wide state of an x86_64 VM: the in-kernel irqchip, the PIT and
/// the clock ([`crate::save_vm_state`], [`crate::restore_vm_state`]).
///
/// Guest memory and userspace devices (including the split irqchip's
/// IOAPIC) are saved by their owners.
///
/// ```
/// use kvmkit_arch_x86_64::X86VmState;
/// let s = X86VmState::default();
/// let json = serde_json::to_string(&s).unwrap();
/// let back: X86VmState = serde_json::from_str(&json).unwrap();
/// assert_eq!(serde_json::to_string(&back).unwrap(), json);
/// ```
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct X86VmState {
    /// The format version, [`STATE_VERSION`] when saved by this build.
    pub version: u32,
    /// The PICs and IOAPIC, with `IrqchipMode::Kernel`.
    pub irqchip: Option<IrqchipState>,
    /// The PIT, when the VM has one.
    pub pit: Option<kvm_pit_state2>,
    /// The kvmclock base (`KVM_GET_CLOCK`), with its flags and, where the
    /// kernel gives them, the host's real time and TSC at the same instant.
    pub clock: Option<kvm_clock_data>,
    /// The pieces not saved, and why.
    pub omitted: Vec<Omitted>,
}

impl Default for X86VmState {
    fn default() -> Self {
        X86VmState {
            version: STATE_VERSION,
            irqchip: None,
            pit: None,
            clock: None,
            omitted: Vec::new(),
        }
    }
}

impl X86VmState {
    /// Why `piece` was not saved, if it was not.
    ///
    /// ```
    /// use kvmkit_arch_x86_64::{StatePiece, X86VmState};
    /// assert!(X86VmState::default().omission(StatePiece::Clock).is_none());
    /// ```
    pub fn omission(&self, piece: StatePiece) -> Option<&Omission> {
        omission(&self.omitted, piece)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_vcpu() -> X86VcpuState {
        let mut s = X86VcpuState::default();
        s.regs.rip = 0x1234;
        s.regs.rbx = u64::MAX;
        s.sregs.cr0 = 0x8000_0011;
        s.sregs.cs.selector = 0x10;
        s.fpu.fcw = 0x37f;
        s.fpu.xmm[15][15] = 0xaa;
        s.fpu.mxcsr = 0x1f80;
        s.xsave = Some((0..1024).collect());
        let mut xcrs = kvm_xcrs {
            nr_xcrs: 1,
            ..Default::default()
        };
        xcrs.xcrs[0].value = 7;
        s.xcrs = Some(xcrs);
        s.msrs = vec![(0x10, 0xdead_beef_0000), (0x6e0, 5)];
        let mut lapic = kvm_lapic_state::default();
        lapic.regs[0x380] = 0x12;
        s.lapic = Some(lapic);
        s.mp_state = Some(kvm_mp_state { mp_state: 3 });
        let mut ev = kvm_vcpu_events::default();
        ev.interrupt.injected = 1;
        ev.interrupt.nr = 0x41;
        s.vcpu_events = Some(ev);
        s.debugregs = Some(kvm_debugregs {
            dr7: 0x400,
            ..Default::default()
        });
        s.cpuid = vec![kvm_cpuid_entry2 {
            function: 1,
            ecx: 1 << 31,
            ..Default::default()
        }];
        s.tsc_khz = Some(2_596_130);
        s.omitted = vec![Omitted {
            piece: StatePiece::Msr(0x48),
            reason: Omission::NotReadable,
        }];
        s
    }

    #[test]
    fn vcpu_state_round_trips_through_json() {
        let s = sample_vcpu();
        let json = serde_json::to_string(&s).unwrap();
        let back: X86VcpuState = serde_json::from_str(&json).unwrap();
        assert_eq!(back, s);
        assert_eq!(back.fpu.xmm[15][15], 0xaa);
        assert_eq!(back.msr(0x10), Some(0xdead_beef_0000));
        assert_eq!(
            back.omission(StatePiece::Msr(0x48)),
            Some(&Omission::NotReadable)
        );
        // The FPU is written field by field (kvm-bindings has no serde for it).
        assert!(json.contains("\"mxcsr\":8064"), "{json}");
    }

    #[test]
    fn vm_state_round_trips_through_json() {
        let mut chip = kvm_irqchip {
            chip_id: 2,
            ..Default::default()
        };
        let mut dummy = [0; 512];
        dummy[17] = 0x5a;
        chip.chip = kvm_bindings::kvm_irqchip__bindgen_ty_1 { dummy };
        let mut pit = kvm_pit_state2::default();
        pit.channels[0].count = 0x1234;
        pit.channels[0].mode = 2;
        let s = X86VmState {
            irqchip: Some(IrqchipState {
                pic_master: kvm_irqchip::default(),
                pic_slave: kvm_irqchip {
                    chip_id: 1,
                    ..Default::default()
                },
                ioapic: chip,
            }),
            pit: Some(pit),
            clock: Some(kvm_clock_data {
                clock: 123_456_789,
                flags: 6,
                realtime: 1_700_000_000_000_000_000,
                ..Default::default()
            }),
            omitted: vec![],
            ..Default::default()
        };
        let json = serde_json::to_string(&s).unwrap();
        let back: X86VmState = serde_json::from_str(&json).unwrap();
        assert_eq!(serde_json::to_string(&back).unwrap(), json);
        let chip = back.irqchip.unwrap();
        assert_eq!(chip.ioapic.chip_id, 2);
        assert_eq!(chip.pic_slave.chip_id, 1);
        // SAFETY: `dummy` spans the whole union, whose bytes were all
        // initialised (written as `dummy`, then deserialised as bytes).
        let byte = unsafe { chip.ioapic.chip.dummy[17] };
        assert_eq!(byte, 0x5a);
        assert_eq!(back.pit.unwrap(), pit);
        assert_eq!(back.clock.unwrap().realtime, 1_700_000_000_000_000_000);
        assert!(format!("{chip:?}").contains("ioapic.chip_id: 2"));
    }

    #[test]
    fn names_of_pieces_and_reasons() {
        let all = [
            (StatePiece::Xcrs, "XCRs"),
            (StatePiece::Lapic, "LAPIC"),
            (StatePiece::MpState, "MP state"),
            (StatePiece::VcpuEvents, "vCPU events"),
            (StatePiece::DebugRegs, "debug registers"),
            (StatePiece::Cpuid, "CPUID"),
            (StatePiece::TscKhz, "TSC frequency"),
            (StatePiece::Irqchip, "in-kernel PIC and IOAPIC"),
            (StatePiece::Pit, "in-kernel PIT"),
            (StatePiece::Clock, "VM clock"),
        ];
        for (p, name) in all {
            assert_eq!(p.to_string(), name);
        }
        let r = Omission::Refused {
            ioctl: "KVM_GET_TSC_KHZ".into(),
            errno: 5,
        };
        assert_eq!(r.to_string(), "KVM_GET_TSC_KHZ failed with errno 5");
        assert_eq!(
            Omission::NotReadable.to_string(),
            "KVM_GET_MSRS cannot read it on this vCPU"
        );
    }
}
