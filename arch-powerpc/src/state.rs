//! A PowerPC VM's saved state: each vCPU's ([`PpcVcpuState`]) and the
//! VM-wide state the kernel holds ([`PpcVmState`]), serialisable with serde.

use crate::uapi::{
    kvm_fpu, kvm_regs, kvm_sregs, KVM_XICS_DESTINATION_MASK, KVM_XICS_LEVEL_SENSITIVE,
    KVM_XICS_MASKED, KVM_XICS_PENDING, KVM_XICS_PRESENTED, KVM_XICS_PRIORITY_MASK,
    KVM_XICS_PRIORITY_SHIFT, KVM_XICS_QUEUED,
};
use crate::HashPageTable;
use serde::{Deserialize, Serialize};
use std::fmt;

/// The format version of [`PpcVcpuState`] and [`PpcVmState`]; a restore
/// refuses any other.
///
/// ```
/// use kvmkit_arch_powerpc::{PpcVcpuState, STATE_VERSION};
/// assert_eq!(PpcVcpuState::default().version, STATE_VERSION);
/// ```
pub const STATE_VERSION: u32 = 1;

/// `kvm_regs` by field (serde supports the 32 GPRs as an array).
#[derive(Serialize, Deserialize)]
#[serde(remote = "kvm_regs")]
struct RegsDef {
    pc: u64,
    cr: u64,
    ctr: u64,
    lr: u64,
    xer: u64,
    msr: u64,
    srr0: u64,
    srr1: u64,
    pid: u64,
    sprg0: u64,
    sprg1: u64,
    sprg2: u64,
    sprg3: u64,
    sprg4: u64,
    sprg5: u64,
    sprg6: u64,
    sprg7: u64,
    gpr: [u64; 32],
}

/// `kvm_fpu` by field.
#[derive(Serialize, Deserialize)]
#[serde(remote = "kvm_fpu")]
struct FpuDef {
    fpr: [u64; 32],
}

/// `kvm_sregs` as serde sees it: the PVR and the union's Book3S view.
///
/// The Book3S view (`u.s`: SDR1, the 64 SLB entries, the 32-bit segment
/// registers and BATs) is the largest member of the union and has no
/// padding, so it covers every byte of the union: a BookE CPU's registers
/// (`u.e`) travel bit for bit through it too. The 64 SLB entries, more
/// than serde's arrays take, are a list.
mod sregs_serde {
    use crate::uapi::{kvm_sregs, kvm_sregs_slb};
    use serde::de::Error as _;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    #[derive(Serialize, Deserialize)]
    struct Sregs {
        pvr: u32,
        sdr1: u64,
        /// `(slbe, slbv)` of the 64 entries.
        slb: Vec<(u64, u64)>,
        sr: [u32; 16],
        ibat: [u64; 8],
        dbat: [u64; 8],
    }

    pub(super) fn serialize<S: Serializer>(s: &kvm_sregs, ser: S) -> Result<S::Ok, S::Error> {
        let b = s.book3s();
        Sregs {
            pvr: s.pvr,
            sdr1: b.sdr1,
            slb: b.ppc64.slb.iter().map(|e| (e.slbe, e.slbv)).collect(),
            sr: b.ppc32.sr,
            ibat: b.ppc32.ibat,
            dbat: b.ppc32.dbat,
        }
        .serialize(ser)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(de: D) -> Result<kvm_sregs, D::Error> {
        let r = Sregs::deserialize(de)?;
        let mut s = kvm_sregs {
            pvr: r.pvr,
            ..kvm_sregs::default()
        };
        let b = s.book3s_mut();
        if r.slb.len() != b.ppc64.slb.len() {
            return Err(D::Error::invalid_length(
                r.slb.len(),
                &"the 64 SLB entries of kvm_sregs",
            ));
        }
        b.sdr1 = r.sdr1;
        for (e, (slbe, slbv)) in b.ppc64.slb.iter_mut().zip(r.slb) {
            *e = kvm_sregs_slb { slbe, slbv };
        }
        b.ppc32.sr = r.sr;
        b.ppc32.ibat = r.ibat;
        b.ppc32.dbat = r.dbat;
        Ok(s)
    }
}

/// Everything [`crate::Ppc64`] saves of a vCPU: `KVM_GET_REGS`,
/// `KVM_GET_SREGS`, the FPRs and the ONE_REG registers of
/// [`crate::snapshot_one_regs`] the kernel has, as `(id, bytes)`.
///
/// Serialisable with serde. The ONE_REG values are the bytes the kernel
/// wrote, in the saving host's byte order: a state goes back on a host of
/// the same byte order (the ABI profile, [`crate::PpcAbiProfile`], checks
/// it).
///
/// ```
/// let s = kvmkit_arch_powerpc::PpcVcpuState::default();
/// assert!(s.one_regs.is_empty() && s.regs.pc == 0);
/// let json = serde_json::to_string(&s).unwrap();
/// let back: kvmkit_arch_powerpc::PpcVcpuState = serde_json::from_str(&json).unwrap();
/// assert_eq!(back.sregs.pvr, s.sregs.pvr);
/// ```
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PpcVcpuState {
    /// The format version, [`STATE_VERSION`] when saved by this build.
    pub version: u32,
    /// General registers, NIP, MSR.
    #[serde(with = "RegsDef")]
    pub regs: kvm_regs,
    /// PVR and the Book3S/BookE special registers.
    #[serde(with = "sregs_serde")]
    pub sregs: kvm_sregs,
    /// Floating-point registers (through ONE_REG).
    #[serde(with = "FpuDef")]
    pub fpu: kvm_fpu,
    /// Other registers by ONE_REG id, in restore order, each its register's
    /// size.
    pub one_regs: Vec<(u64, Vec<u8>)>,
}

impl Default for PpcVcpuState {
    fn default() -> Self {
        PpcVcpuState {
            version: STATE_VERSION,
            regs: kvm_regs::default(),
            sregs: kvm_sregs::default(),
            fpu: kvm_fpu::default(),
            one_regs: Vec::new(),
        }
    }
}

impl PpcVcpuState {
    /// The saved value of ONE_REG register `id`, as the kernel wrote it.
    ///
    /// ```
    /// use kvmkit_arch_powerpc::{uapi::KVM_REG_PPC_TB_OFFSET, PpcVcpuState};
    /// let mut s = PpcVcpuState::default();
    /// s.one_regs.push((KVM_REG_PPC_TB_OFFSET, 5u64.to_ne_bytes().to_vec()));
    /// assert_eq!(s.one_reg(KVM_REG_PPC_TB_OFFSET), Some(&5u64.to_ne_bytes()[..]));
    /// ```
    pub fn one_reg(&self, id: u64) -> Option<&[u8]> {
        self.one_regs
            .iter()
            .find(|(i, _)| *i == id)
            .map(|(_, v)| v.as_slice())
    }
}

/// One XICS interrupt source as `KVM_DEV_XICS_GRP_SOURCES` reads and writes
/// it: the source's global number and its 64-bit state word (server,
/// priority, and the masked, level-sensitive, pending, presented and queued
/// bits).
///
/// ```
/// use kvmkit_arch_powerpc::XicsSource;
/// // Server 2, priority 5, level-sensitive, asserted: as the kernel writes it.
/// let s = XicsSource { irq: 0x1003, state: 2 | 5 << 32 | 1 << 40 | 1 << 42 };
/// assert_eq!((s.server(), s.priority()), (2, 5));
/// assert!(s.level_sensitive() && s.pending() && !s.masked());
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct XicsSource {
    /// The global source number.
    pub irq: u32,
    /// The state word, as the kernel laid it out.
    pub state: u64,
}

impl XicsSource {
    /// The interrupt server (vCPU) it is routed to.
    pub fn server(&self) -> u32 {
        u32::try_from(self.state & KVM_XICS_DESTINATION_MASK).expect("masked to 32 bits")
    }

    /// Its priority (0xff: masked); for a masked source the priority it
    /// had before it was masked.
    pub fn priority(&self) -> u8 {
        u8::try_from((self.state >> KVM_XICS_PRIORITY_SHIFT) & KVM_XICS_PRIORITY_MASK)
            .expect("masked to 8 bits")
    }

    /// `KVM_XICS_MASKED`.
    pub fn masked(&self) -> bool {
        self.state & KVM_XICS_MASKED != 0
    }

    /// `KVM_XICS_LEVEL_SENSITIVE`: an LSI, not an MSI.
    pub fn level_sensitive(&self) -> bool {
        self.state & KVM_XICS_LEVEL_SENSITIVE != 0
    }

    /// `KVM_XICS_PENDING`: asserted (an LSI) or waiting to be resent (an MSI).
    pub fn pending(&self) -> bool {
        self.state & KVM_XICS_PENDING != 0
    }

    /// `KVM_XICS_PRESENTED`: presented to a server, not yet accepted.
    pub fn presented(&self) -> bool {
        self.state & KVM_XICS_PRESENTED != 0
    }

    /// `KVM_XICS_QUEUED`: fired again while presented.
    pub fn queued(&self) -> bool {
        self.state & KVM_XICS_QUEUED != 0
    }
}

/// One piece of the VM state, for saying which was left out and why.
///
/// ```
/// assert_eq!(kvmkit_arch_powerpc::StatePiece::HashPageTable.to_string(), "guest hash page table");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum StatePiece {
    /// The in-kernel XICS sources (`KVM_DEV_XICS_GRP_SOURCES`).
    XicsSources,
    /// The KVM-HV guest hash page table (`KVM_PPC_GET_HTAB_FD`).
    HashPageTable,
}

impl fmt::Display for StatePiece {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            StatePiece::XicsSources => "in-kernel XICS sources",
            StatePiece::HashPageTable => "guest hash page table",
        })
    }
}

/// A piece of VM state that was not saved because the VM does not have it
/// in the kernel, and why (the shared [`kvmkit_core::Omitted`]; the reason
/// is a sentence).
///
/// ```
/// use kvmkit_arch_powerpc::{Omitted, StatePiece};
/// let o = Omitted { piece: StatePiece::XicsSources, reason: "IrqchipKind::None".into() };
/// assert_eq!(o.to_string(), "in-kernel XICS sources: IrqchipKind::None");
/// ```
pub type Omitted = kvmkit_core::Omitted<StatePiece>;

/// The VM-wide state of a PowerPC (pseries) VM that the kernel holds: the
/// in-kernel XICS sources and, with KVM-HV, the guest hash page table
/// ([`crate::Ppc64`]'s `SnapshotArch::save_vm_state`).
///
/// Per-vCPU pieces (the XICS presenter, `KVM_REG_PPC_ICP_STATE`, and the
/// timebase offset) are in each [`PpcVcpuState`]. What this does not carry
/// is listed in the crate README ("Snapshot and restore").
///
/// ```
/// use kvmkit_arch_powerpc::{PpcVmState, STATE_VERSION};
/// let s = PpcVmState::default();
/// assert_eq!(s.version, STATE_VERSION);
/// let json = serde_json::to_string(&s).unwrap();
/// let back: PpcVmState = serde_json::from_str(&json).unwrap();
/// assert_eq!(back, s);
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PpcVmState {
    /// The format version, [`STATE_VERSION`] when saved by this build.
    pub version: u32,
    /// The saving host's byte order, which the register bytes of the
    /// vCPU states follow.
    pub big_endian: bool,
    /// Whether KVM-HV (rather than KVM-PR) ran the VM.
    pub kvm_hv: bool,
    /// Every XICS source of the VM's in-kernel XICS, by global number.
    pub xics_sources: Option<Vec<XicsSource>>,
    /// The KVM-HV guest hash page table.
    pub hpt: Option<HashPageTable>,
    /// The pieces the VM has none of, and why.
    pub omitted: Vec<Omitted>,
}

impl Default for PpcVmState {
    fn default() -> Self {
        PpcVmState {
            version: STATE_VERSION,
            big_endian: cfg!(target_endian = "big"),
            kvm_hv: false,
            xics_sources: None,
            hpt: None,
            omitted: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Hpte;

    #[test]
    fn vcpu_state_round_trips_through_json_bit_for_bit() {
        let mut s = PpcVcpuState::default();
        s.regs.pc = 0xc000_0000_0000_1234;
        s.regs.gpr[31] = u64::MAX;
        s.regs.msr = 0x8000_0000_0000_1033;
        s.fpu.fpr[31] = 0x4009_21fb_5444_2d18;
        s.sregs.pvr = 0x004e_1202;
        {
            let b = s.sregs.book3s_mut();
            b.sdr1 = 0x1234;
            b.ppc64.slb[0].slbe = 1 << 27;
            b.ppc64.slb[63].slbv = 0xdead_beef;
            b.ppc32.sr[15] = 7;
            b.ppc32.dbat[7] = 9;
        }
        s.one_regs = vec![
            (crate::uapi::KVM_REG_PPC_DSISR, vec![1, 2, 3, 4]),
            (crate::uapi::KVM_REG_PPC_VSR0, vec![0xaa; 16]),
        ];
        let json = serde_json::to_string(&s).unwrap();
        let back: PpcVcpuState = serde_json::from_str(&json).unwrap();
        assert_eq!(back.regs, s.regs);
        assert_eq!(back.fpu, s.fpu);
        assert_eq!(back.one_regs, s.one_regs);
        assert_eq!(back.sregs.pvr, 0x004e_1202);
        assert_eq!(back.sregs.book3s(), s.sregs.book3s());
        assert_eq!(back.version, STATE_VERSION);
        // Each register's bytes are found again by id, as saved.
        assert_eq!(
            back.one_reg(crate::uapi::KVM_REG_PPC_VSR0),
            Some(&[0xaa; 16][..])
        );
        assert_eq!(
            back.one_reg(crate::uapi::KVM_REG_PPC_DSISR),
            Some(&[1, 2, 3, 4][..])
        );
        // A register the kernel did not have is absent, not zeros.
        assert_eq!(back.one_reg(crate::uapi::KVM_REG_PPC_TB_OFFSET), None);
    }

    #[test]
    fn booke_registers_travel_through_the_book3s_view() {
        let mut s = PpcVcpuState::default();
        {
            let e = s.sregs.booke_mut();
            e.features = 0x55;
            e.ivor_high[17] = 0x1234_5678;
            e.epsc = 3;
            e.impl_.fsl_mut().svr = 0x8011_0010;
        }
        let json = serde_json::to_string(&s).unwrap();
        let back: PpcVcpuState = serde_json::from_str(&json).unwrap();
        let (a, b) = (s.sregs.booke(), back.sregs.booke());
        assert_eq!(
            (b.features, b.ivor_high[17], b.epsc),
            (a.features, a.ivor_high[17], a.epsc)
        );
        assert_eq!(b.impl_.fsl(), a.impl_.fsl());
    }

    #[test]
    fn a_state_with_a_short_slb_is_refused() {
        let s = PpcVcpuState::default();
        let mut v: serde_json::Value = serde_json::to_value(&s).unwrap();
        v["sregs"]["slb"].as_array_mut().unwrap().pop();
        let e = serde_json::from_value::<PpcVcpuState>(v).unwrap_err();
        assert!(e.to_string().contains("64 SLB entries"), "{e}");
    }

    #[test]
    fn xics_source_words_decode_as_the_kernel_lays_them_out() {
        // xics_get_source: server in the low word, priority at 32, flags
        // above. A masked MSI on server 7 that had priority 4, waiting to
        // be resent, and a queued one.
        let s = XicsSource {
            irq: 0x1000,
            state: 7 | 4 << 32 | KVM_XICS_MASKED | KVM_XICS_PENDING,
        };
        assert_eq!((s.server(), s.priority()), (7, 4));
        assert!(s.masked() && s.pending() && !s.level_sensitive());
        assert!(!s.presented() && !s.queued());
        let q = XicsSource {
            irq: 0x1001,
            state: 0xffff_ffff | 0xff << 32 | KVM_XICS_PRESENTED | KVM_XICS_QUEUED,
        };
        assert_eq!((q.server(), q.priority()), (u32::MAX, 0xff));
        assert!(q.presented() && q.queued());
    }

    #[test]
    fn vm_state_round_trips() {
        let s = PpcVmState {
            kvm_hv: true,
            xics_sources: Some(vec![XicsSource {
                irq: 0x1000,
                state: 1 << 41,
            }]),
            hpt: Some(HashPageTable {
                order: 18,
                entries: vec![Hpte {
                    index: 3,
                    v: 0x4000_0000_0000_0001,
                    r: 0x1_0000_0196,
                }],
            }),
            omitted: vec![Omitted {
                piece: StatePiece::XicsSources,
                reason: "x".into(),
            }],
            ..PpcVmState::default()
        };
        let back: PpcVmState = serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
        assert_eq!(back, s);
        assert_eq!(s.omitted[0].to_string(), "in-kernel XICS sources: x");
    }
}
