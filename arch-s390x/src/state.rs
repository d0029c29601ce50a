//! The saved state of an s390x VM: each vCPU's ([`S390VcpuState`]) and the
//! VM-wide state the kernel holds ([`S390VmState`]), serialisable with serde.

use crate::uapi::{
    kvm_fpu, kvm_regs, kvm_s390_irq, kvm_sregs, KVM_REG_S390_CLOCK_COMP, KVM_REG_S390_CPU_TIMER,
    KVM_REG_S390_GBEA, KVM_REG_S390_PFCOMPARE, KVM_REG_S390_PFSELECT, KVM_REG_S390_PFTOKEN,
    KVM_REG_S390_PP, KVM_REG_S390_TODPR, KVM_S390_INT_IO_MAX, KVM_S390_INT_SERVICE,
};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::mem::size_of;

/// The format version of [`S390VcpuState`] and [`S390VmState`]; a restore
/// refuses any other.
///
/// ```
/// use kvmkit_arch_s390x::{S390VcpuState, STATE_VERSION};
/// assert_eq!(S390VcpuState::default().version, STATE_VERSION);
/// ```
pub const STATE_VERSION: u32 = 1;

/// The ONE_REG registers saved with a vCPU, by the kernel's names: TOD
/// programmable register, CPU timer, clock comparator, pfault
/// token/compare/select, program parameter, guest breaking-event address.
///
/// Not the TOD epoch difference (`KVM_REG_S390_EPOCHDIFF`): the VM state
/// carries the guest TOD clock, and setting it sets every vCPU's epoch;
/// restoring a saved epoch difference afterwards would undo that (QEMU
/// does not save it either).
pub const SAVED_ONE_REGS: [(&str, u64); 8] = [
    ("KVM_REG_S390_TODPR", KVM_REG_S390_TODPR),
    ("KVM_REG_S390_CPU_TIMER", KVM_REG_S390_CPU_TIMER),
    ("KVM_REG_S390_CLOCK_COMP", KVM_REG_S390_CLOCK_COMP),
    ("KVM_REG_S390_PFTOKEN", KVM_REG_S390_PFTOKEN),
    ("KVM_REG_S390_PFCOMPARE", KVM_REG_S390_PFCOMPARE),
    ("KVM_REG_S390_PFSELECT", KVM_REG_S390_PFSELECT),
    ("KVM_REG_S390_PP", KVM_REG_S390_PP),
    ("KVM_REG_S390_GBEA", KVM_REG_S390_GBEA),
];

/// `kvm_regs` by field.
#[derive(Serialize, Deserialize)]
#[serde(remote = "kvm_regs")]
struct RegsDef {
    gprs: [u64; 16],
}

/// `kvm_sregs` by field.
#[derive(Serialize, Deserialize)]
#[serde(remote = "kvm_sregs")]
struct SregsDef {
    acrs: [u32; 16],
    crs: [u64; 16],
}

/// `kvm_fpu` by field (its `pad` is C's implicit padding: not state).
#[derive(Serialize, Deserialize)]
#[serde(remote = "kvm_fpu")]
struct FpuDef {
    fpc: u32,
    #[serde(skip)]
    pad: u32,
    fprs: [u64; 16],
}

/// Everything `Arch::save_vcpu_state` reads from an s390x vCPU.
///
/// Serialisable with serde; the ONE_REG values are the bytes the kernel
/// wrote (big-endian: s390x has no other byte order).
///
/// ```
/// let s = kvmkit_arch_s390x::S390VcpuState::default();
/// assert_eq!(s.psw_mask, 0);
/// assert!(s.one_regs.is_empty());
/// let json = serde_json::to_string(&s).unwrap();
/// assert_eq!(serde_json::from_str::<kvmkit_arch_s390x::S390VcpuState>(&json).unwrap(), s);
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct S390VcpuState {
    /// The format version, [`STATE_VERSION`] when saved by this build.
    pub version: u32,
    /// General registers.
    #[serde(with = "RegsDef")]
    pub regs: kvm_regs,
    /// Access and control registers.
    #[serde(with = "SregsDef")]
    pub sregs: kvm_sregs,
    /// Floating-point registers and control.
    #[serde(with = "FpuDef")]
    pub fpu: kvm_fpu,
    /// The PSW mask (from `kvm_run.psw_mask`).
    pub psw_mask: u64,
    /// The PSW address (from `kvm_run.psw_addr`).
    pub psw_addr: u64,
    /// The prefix register (from the sync-regs area).
    pub prefix: u64,
    /// The [`SAVED_ONE_REGS`] as (id, value bytes as the kernel gave them).
    pub one_regs: Vec<(u64, Vec<u8>)>,
}

impl Default for S390VcpuState {
    fn default() -> Self {
        S390VcpuState {
            version: STATE_VERSION,
            regs: kvm_regs::default(),
            sregs: kvm_sregs::default(),
            fpu: kvm_fpu::default(),
            psw_mask: 0,
            psw_addr: 0,
            prefix: 0,
            one_regs: Vec::new(),
        }
    }
}

/// The guest TOD clock (`KVM_S390_VM_TOD`): the epoch index (non-zero only
/// with the multiple-epoch facility, 139) and the 64-bit TOD value.
///
/// ```
/// let t = kvmkit_arch_s390x::TodClock { epoch_idx: 0, tod: 0xd9a1_0000_0000_0000 };
/// assert_eq!(t.to_string(), "epoch 0, TOD 0xd9a1000000000000");
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TodClock {
    /// The epoch index (`KVM_S390_VM_TOD_HIGH` on older kernels, 0 there).
    pub epoch_idx: u8,
    /// The TOD clock value (`KVM_S390_VM_TOD_LOW`).
    pub tod: u64,
}

impl fmt::Display for TodClock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "epoch {}, TOD {:#018x}", self.epoch_idx, self.tod)
    }
}

/// The CPU model a VM's guest sees (`KVM_S390_VM_CPU_PROCESSOR` and
/// `KVM_S390_VM_CPU_PROCESSOR_FEAT`).
///
/// Facility and feature numbers use the architecture's MSB-0 bit numbering:
/// number `n` is bit `63 - n % 64` of word `n / 64`.
///
/// ```
/// use kvmkit_arch_s390x::CpuModel;
/// let mut m = CpuModel::default();
/// m.facilities[2] = 1 << (63 - 11); // facility 139 (multiple epoch)
/// assert!(m.has_facility(139) && !m.has_facility(138));
/// assert_eq!(m.facility_numbers(), [139]);
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CpuModel {
    /// The CPU id STIDP stores (version, serial, machine type).
    pub cpuid: u64,
    /// The instruction blocking control (the machine generation the guest
    /// is limited to; 0: none).
    pub ibc: u16,
    /// The facility list STFLE stores, 256 words.
    pub facilities: Vec<u64>,
    /// The CPU features (1024 bits), where the kernel reports them.
    pub features: Option<Vec<u64>>,
}

impl Default for CpuModel {
    fn default() -> Self {
        CpuModel {
            cpuid: 0,
            ibc: 0,
            facilities: vec![0; 256],
            features: None,
        }
    }
}

/// Bit `n` (MSB 0) of `words`.
pub(crate) fn msb0_bit(words: &[u64], n: u32) -> bool {
    let word = usize::try_from(n / 64).unwrap_or(usize::MAX);
    words
        .get(word)
        .is_some_and(|w| w & (1 << (63 - n % 64)) != 0)
}

/// The numbers (MSB 0) of the bits set in `words`.
pub(crate) fn msb0_numbers(words: &[u64]) -> Vec<u32> {
    let mut out = Vec::new();
    for (i, w) in (0u32..).zip(words) {
        for b in 0..64 {
            if w & (1 << (63 - b)) != 0 {
                out.push(i * 64 + b);
            }
        }
    }
    out
}

impl CpuModel {
    /// Whether facility `n` is in the list.
    pub fn has_facility(&self, n: u32) -> bool {
        msb0_bit(&self.facilities, n)
    }

    /// The facilities in the list, by number.
    pub fn facility_numbers(&self) -> Vec<u32> {
        msb0_numbers(&self.facilities)
    }
}

/// The size of one `struct kvm_s390_irq` record of the FLIC.
pub const FLIC_IRQ_BYTES: usize = size_of::<kvm_s390_irq>();

/// One pending floating interruption, as the FLIC's
/// `KVM_DEV_FLIC_GET_ALL_IRQS` lays it out (`struct kvm_s390_irq`): the
/// type and the 64-byte payload union, kept as the kernel wrote it so that
/// `KVM_DEV_FLIC_ENQUEUE` gets it back unchanged.
///
/// ```
/// use kvmkit_arch_s390x::{FloatingIrq, FloatingIrqKind};
/// let s = FloatingIrq { kind: 0xffff_2401, payload: [0; 64].to_vec() };
/// assert_eq!(s.decode(), FloatingIrqKind::Service { ext_params: 0 });
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FloatingIrq {
    /// `kvm_s390_irq.type` (`KVM_S390_INT_*`; an I/O interruption's type is
    /// its subchannel word).
    pub kind: u64,
    /// `kvm_s390_irq.u`, 64 bytes in s390x (big-endian) order.
    pub payload: Vec<u8>,
}

/// What a [`FloatingIrq`] is, decoded for messages and tests.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum FloatingIrqKind {
    /// An I/O interruption (`kvm_s390_io_info`); an adapter interruption
    /// has `KVM_S390_INT_IO_AI_MASK` in its type.
    Io {
        /// The subchannel id word.
        subchannel_id: u16,
        /// The subchannel number.
        subchannel_nr: u16,
        /// The interruption parameter.
        io_int_parm: u32,
        /// The interruption word (ISC, AI bit).
        io_int_word: u32,
    },
    /// The service signal (`KVM_S390_INT_SERVICE`) with its parameter.
    Service {
        /// The SCCB address and event-pending bit.
        ext_params: u32,
    },
    /// Another type (machine check, pfault, virtio): carried, not decoded.
    Other {
        /// The type.
        kind: u64,
    },
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes(b[at..at + 2].try_into().expect("2 bytes"))
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

impl FloatingIrq {
    /// Splits the records `KVM_DEV_FLIC_GET_ALL_IRQS` wrote into `bytes`
    /// (`count` of them, big-endian).
    ///
    /// ```
    /// use kvmkit_arch_s390x::{FloatingIrq, FLIC_IRQ_BYTES};
    /// let mut b = vec![0u8; 2 * FLIC_IRQ_BYTES];
    /// b[..8].copy_from_slice(&0xffff_2401u64.to_be_bytes());
    /// let irqs = FloatingIrq::parse(&b, 1).unwrap();
    /// assert_eq!(irqs.len(), 1);
    /// assert!(FloatingIrq::parse(&b, 3).is_none(), "beyond the buffer");
    /// ```
    pub fn parse(bytes: &[u8], count: usize) -> Option<Vec<FloatingIrq>> {
        let records = bytes.get(..count.checked_mul(FLIC_IRQ_BYTES)?)?;
        Some(
            records
                .chunks_exact(FLIC_IRQ_BYTES)
                .map(|r| FloatingIrq {
                    kind: u64::from_be_bytes(r[..8].try_into().expect("8 bytes")),
                    payload: r[8..].to_vec(),
                })
                .collect(),
        )
    }

    /// The record `KVM_DEV_FLIC_ENQUEUE` takes, or `None` when the payload
    /// is not 64 bytes (a damaged state).
    pub fn record(&self) -> Option<[u8; FLIC_IRQ_BYTES]> {
        let mut r = [0u8; FLIC_IRQ_BYTES];
        r[..8].copy_from_slice(&self.kind.to_be_bytes());
        r.get_mut(8..)?
            .copy_from_slice(self.payload.get(..FLIC_IRQ_BYTES - 8)?);
        (self.payload.len() == FLIC_IRQ_BYTES - 8).then_some(r)
    }

    /// What it is.
    pub fn decode(&self) -> FloatingIrqKind {
        let p = &self.payload;
        if p.len() < 16 {
            return FloatingIrqKind::Other { kind: self.kind };
        }
        match self.kind {
            k if k == u64::from(KVM_S390_INT_SERVICE) => FloatingIrqKind::Service {
                ext_params: be32(p, 0),
            },
            k if k <= u64::from(KVM_S390_INT_IO_MAX) => FloatingIrqKind::Io {
                subchannel_id: be16(p, 0),
                subchannel_nr: be16(p, 2),
                io_int_parm: be32(p, 4),
                io_int_word: be32(p, 8),
            },
            kind => FloatingIrqKind::Other { kind },
        }
    }
}

/// One piece of the VM state, for saying which was left out and why.
///
/// ```
/// assert_eq!(kvmkit_arch_s390x::StatePiece::CpuModel.to_string(), "CPU model");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum StatePiece {
    /// The guest TOD clock (`KVM_S390_VM_TOD`).
    TodClock,
    /// The CPU model (`KVM_S390_VM_CPU_MODEL`).
    CpuModel,
    /// The CPU features (`KVM_S390_VM_CPU_PROCESSOR_FEAT`).
    CpuFeatures,
    /// The FLIC's pending floating interruptions.
    FloatingInterrupts,
}

impl fmt::Display for StatePiece {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            StatePiece::TodClock => "guest TOD clock",
            StatePiece::CpuModel => "CPU model",
            StatePiece::CpuFeatures => "CPU features",
            StatePiece::FloatingInterrupts => "pending floating interruptions",
        })
    }
}

/// A piece of VM state that was not saved, and why (the shared
/// [`kvmkit_core::Omitted`]; the reason is a sentence).
///
/// ```
/// use kvmkit_arch_s390x::{Omitted, StatePiece};
/// let o = Omitted { piece: StatePiece::CpuFeatures, reason: "the kernel has no such attribute".into() };
/// assert_eq!(o.to_string(), "CPU features: the kernel has no such attribute");
/// ```
pub type Omitted = kvmkit_core::Omitted<StatePiece>;

/// The VM-wide state of an s390x VM that the kernel holds: the guest TOD
/// clock, the CPU model the guest sees, and the FLIC's pending floating
/// interruptions (`SnapshotArch::save_vm_state` of [`crate::S390x`]).
///
/// What this does not carry is listed in the crate README ("Snapshot and
/// restore").
///
/// ```
/// use kvmkit_arch_s390x::{S390VmState, STATE_VERSION};
/// let s = S390VmState::default();
/// assert_eq!(s.version, STATE_VERSION);
/// let json = serde_json::to_string(&s).unwrap();
/// assert_eq!(serde_json::from_str::<S390VmState>(&json).unwrap(), s);
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct S390VmState {
    /// The format version, [`STATE_VERSION`] when saved by this build.
    pub version: u32,
    /// The guest TOD clock.
    pub tod: TodClock,
    /// The CPU model the guest saw.
    pub cpu_model: Option<CpuModel>,
    /// The FLIC's pending floating interruptions (I/O, adapter, service
    /// signal, machine check).
    pub floating_irqs: Option<Vec<FloatingIrq>>,
    /// The pieces not saved, and why.
    pub omitted: Vec<Omitted>,
}

impl Default for S390VmState {
    fn default() -> Self {
        S390VmState {
            version: STATE_VERSION,
            tod: TodClock::default(),
            cpu_model: None,
            floating_irqs: None,
            omitted: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vcpu_state_round_trips_through_json() {
        let mut s = S390VcpuState::default();
        s.regs.gprs[15] = 0xf000;
        s.sregs.crs[0] = 0xe0;
        s.sregs.acrs[15] = 7;
        s.fpu.fpc = 0x0800_0000;
        s.fpu.fprs[15] = u64::MAX;
        s.psw_mask = 0x0000_0001_8000_0000;
        s.psw_addr = 0x10000;
        s.prefix = 0x2000;
        s.one_regs = vec![(KVM_REG_S390_CPU_TIMER, vec![0, 0, 0, 0, 0, 1, 0, 0])];
        let json = serde_json::to_string(&s).unwrap();
        assert!(!json.contains("pad"), "C padding is not state: {json}");
        let back: S390VcpuState = serde_json::from_str(&json).unwrap();
        assert_eq!(back, s);
    }

    #[test]
    fn the_epoch_difference_is_not_saved_per_vcpu() {
        assert!(SAVED_ONE_REGS
            .iter()
            .all(|&(_, id)| id != crate::uapi::KVM_REG_S390_EPOCHDIFF));
    }

    /// Two records as `get_all_floating_irqs` copies them out on s390x: an
    /// adapter I/O interruption on ISC 3 and the service signal.
    fn kernel_records() -> Vec<u8> {
        let mut b = vec![0u8; 3 * FLIC_IRQ_BYTES];
        // type: KVM_S390_INT_IO(1, 0, 0, 0) = the AI bit.
        b[..8].copy_from_slice(&0x0400_0000u64.to_be_bytes());
        b[8..10].copy_from_slice(&0x0001u16.to_be_bytes()); // subchannel_id
        b[10..12].copy_from_slice(&0x0002u16.to_be_bytes()); // subchannel_nr
        b[12..16].copy_from_slice(&0x1234_5678u32.to_be_bytes()); // io_int_parm
        b[16..20].copy_from_slice(&0x9800_0000u32.to_be_bytes()); // io_int_word
        let s = FLIC_IRQ_BYTES;
        b[s..s + 8].copy_from_slice(&0xffff_2401u64.to_be_bytes());
        b[s + 8..s + 12].copy_from_slice(&0x0000_3001u32.to_be_bytes()); // ext_params
        b
    }

    #[test]
    fn floating_irqs_decode_from_kernel_records_and_go_back_unchanged() {
        let b = kernel_records();
        let irqs = FloatingIrq::parse(&b, 2).unwrap();
        assert_eq!(
            irqs[0].decode(),
            FloatingIrqKind::Io {
                subchannel_id: 1,
                subchannel_nr: 2,
                io_int_parm: 0x1234_5678,
                io_int_word: 0x9800_0000
            }
        );
        assert_eq!(
            irqs[1].decode(),
            FloatingIrqKind::Service { ext_params: 0x3001 }
        );
        let records: Vec<u8> = irqs.iter().flat_map(|i| i.record().unwrap()).collect();
        assert_eq!(records, b[..2 * FLIC_IRQ_BYTES]);
        let json = serde_json::to_string(&irqs).unwrap();
        assert_eq!(
            serde_json::from_str::<Vec<FloatingIrq>>(&json).unwrap(),
            irqs
        );
        // A damaged payload cannot be enqueued.
        let short = FloatingIrq {
            kind: 1,
            payload: vec![0; 10],
        };
        assert!(short.record().is_none());
        assert_eq!(short.decode(), FloatingIrqKind::Other { kind: 1 });
        let long = FloatingIrq {
            kind: 1,
            payload: vec![0; 65],
        };
        assert!(long.record().is_none());
        // A machine check is carried, not decoded.
        let mchk = FloatingIrq {
            kind: 0xffff_1000,
            payload: vec![0; 64],
        };
        assert_eq!(mchk.decode(), FloatingIrqKind::Other { kind: 0xffff_1000 });
        assert_eq!(FloatingIrq::parse(&b, 0).unwrap(), []);
        assert!(FloatingIrq::parse(&b, usize::MAX).is_none());
    }

    #[test]
    fn omissions_name_their_piece() {
        let names: Vec<String> = [
            StatePiece::TodClock,
            StatePiece::CpuModel,
            StatePiece::CpuFeatures,
            StatePiece::FloatingInterrupts,
        ]
        .iter()
        .map(ToString::to_string)
        .collect();
        assert_eq!(
            names,
            [
                "guest TOD clock",
                "CPU model",
                "CPU features",
                "pending floating interruptions"
            ]
        );
        let o = Omitted {
            piece: StatePiece::CpuFeatures,
            reason: "the kernel has no KVM_S390_VM_CPU_PROCESSOR_FEAT".to_string(),
        };
        assert_eq!(
            o.to_string(),
            "CPU features: the kernel has no KVM_S390_VM_CPU_PROCESSOR_FEAT"
        );
        let back: Omitted = serde_json::from_str(&serde_json::to_string(&o).unwrap()).unwrap();
        assert_eq!(back, o);
    }

    #[test]
    fn msb0_numbering() {
        let mut w = vec![0u64; 4];
        w[0] = 1 << 63; // facility 0
        w[1] = 1; // facility 127
        w[3] = 1 << 62; // facility 193
        assert_eq!(msb0_numbers(&w), [0, 127, 193]);
        assert!(msb0_bit(&w, 127) && !msb0_bit(&w, 126) && !msb0_bit(&w, 5000));
        let m = CpuModel {
            facilities: w,
            ..CpuModel::default()
        };
        assert!(m.has_facility(193));
        assert_eq!(m.facility_numbers(), [0, 127, 193]);
        assert!(CpuModel::default().facility_numbers().is_empty());
        let t = TodClock {
            epoch_idx: 1,
            tod: 5,
        };
        assert_eq!(t.to_string(), "epoch 1, TOD 0x0000000000000005");
    }
}
