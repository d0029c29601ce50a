//! Decoding ppc64's `kvm_run` exit union.
//!
//! Offsets come from the `#[repr(C)]` definitions of [`crate::uapi`] (checked
//! against the ppc64le header); the area is read byte by byte, never cast
//! to a struct, so any buffer (of any alignment) is decoded safely. Values
//! are in the host's byte order, as the kernel writes them.

use crate::uapi::*;
use crate::Ppc64;
use kvmkit_core::{DecodeError, SystemEventKind, VcpuExit, KVM_RUN_EXIT_REASON_OFFSET};
use std::fmt;
use std::mem::{offset_of, size_of};

/// Start of the exit union in ppc64's `kvm_run` (32: no s390 PSW before it).
pub const KVM_RUN_EXIT_UNION_OFFSET: usize = offset_of!(kvm_run, u);
/// The bytes a `kvm_run` area must have for any exit to decode.
pub const KVM_RUN_MIN_LEN: usize = KVM_RUN_EXIT_UNION_OFFSET + size_of::<kvm_run_exit>();

const U: usize = KVM_RUN_EXIT_UNION_OFFSET;
const FLAGS: usize = offset_of!(kvm_run, flags);
const HCALL_NR: usize = offset_of!(kvm_run, u.papr_hcall.nr);
const HCALL_RET: usize = offset_of!(kvm_run, u.papr_hcall.ret);
const HCALL_ARGS: usize = offset_of!(kvm_run, u.papr_hcall.args);
const HCALL_END: usize = U + size_of::<kvm_run_papr_hcall>();
const MMIO_ADDR: usize = offset_of!(kvm_run, u.mmio.phys_addr);
const MMIO_DATA: usize = offset_of!(kvm_run, u.mmio.data);
const MMIO_LEN: usize = offset_of!(kvm_run, u.mmio.len);
const MMIO_IS_WRITE: usize = offset_of!(kvm_run, u.mmio.is_write);
const OSI_GPRS: usize = offset_of!(kvm_run, u.osi.gprs);
const DCR_DCRN: usize = offset_of!(kvm_run, u.dcr.dcrn);
const DCR_DATA: usize = offset_of!(kvm_run, u.dcr.data);
const DCR_IS_WRITE: usize = offset_of!(kvm_run, u.dcr.is_write);
const EPR_EPR: usize = offset_of!(kvm_run, u.epr.epr);
const DEBUG_ADDRESS: usize = offset_of!(kvm_run, u.debug.arch.address);
const DEBUG_STATUS: usize = offset_of!(kvm_run, u.debug.arch.status);
const HW_REASON: usize = offset_of!(kvm_run, u.hw.hardware_exit_reason);
const FAIL_REASON: usize = offset_of!(kvm_run, u.fail_entry.hardware_entry_failure_reason);
const FAIL_CPU: usize = offset_of!(kvm_run, u.fail_entry.cpu);
const INTERNAL_SUBERROR: usize = offset_of!(kvm_run, u.internal.suberror);
const INTERNAL_NDATA: usize = offset_of!(kvm_run, u.internal.ndata);
const INTERNAL_DATA: usize = offset_of!(kvm_run, u.internal.data);
const EVENT_TYPE: usize = offset_of!(kvm_run, u.system_event.type_);
const EVENT_DATA: usize = offset_of!(kvm_run, u.system_event.data);

/// 64-bit words in the `kvm_run` area, lent out with an exit: read them,
/// and (for the words userspace answers with) write them.
///
/// ```
/// use kvmkit_arch_powerpc::{decode_exit, PpcExit, KVM_RUN_MIN_LEN};
/// use kvmkit_core::VcpuExit;
/// let mut run = vec![0u8; KVM_RUN_MIN_LEN];
/// run[8..12].copy_from_slice(&18u32.to_ne_bytes()); // KVM_EXIT_OSI
/// if let VcpuExit::Arch(PpcExit::Osi { mut gprs }) = decode_exit(&mut run).unwrap() {
///     assert_eq!((gprs.len(), gprs.get(3)), (32, Some(0)));
///     assert!(gprs.set(3, 1));
/// }
/// ```
pub struct RunWords<'a> {
    bytes: &'a mut [u8],
}

impl<'a> RunWords<'a> {
    fn new(bytes: &'a mut [u8]) -> Self {
        RunWords { bytes }
    }

    /// How many words there are.
    pub fn len(&self) -> usize {
        self.bytes.len() / 8
    }

    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Word `i`, or `None` past the end.
    pub fn get(&self, i: usize) -> Option<u64> {
        let b = self.bytes.get(i * 8..i * 8 + 8)?;
        Some(u64_of(b))
    }

    /// Sets word `i`; false (and nothing written) past the end.
    pub fn set(&mut self, i: usize, v: u64) -> bool {
        match self.bytes.get_mut(i * 8..i * 8 + 8) {
            Some(b) => {
                b.copy_from_slice(&v.to_ne_bytes());
                true
            }
            None => false,
        }
    }
}

impl fmt::Debug for RunWords<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries((0..self.len()).filter_map(|i| self.get(i)))
            .finish()
    }
}

/// Where a PAPR hypercall's results go: `kvm_run.papr_hcall.ret` (the
/// guest's r3) and `args[0..9]` (r4..r12 on return).
///
/// ```
/// # use kvmkit_arch_powerpc::{decode_exit, PpcExit, KVM_RUN_MIN_LEN};
/// # use kvmkit_core::VcpuExit;
/// let mut run = vec![0u8; KVM_RUN_MIN_LEN];
/// run[8..12].copy_from_slice(&19u32.to_ne_bytes()); // KVM_EXIT_PAPR_HCALL
/// if let VcpuExit::Arch(PpcExit::PaprHcall { mut out, .. }) = decode_exit(&mut run).unwrap() {
///     out.set_ret(-2);
///     assert!(out.set_arg(0, 5));
///     assert_eq!(out.ret(), -2);
/// }
/// assert_eq!(run[40..48], (-2i64).to_ne_bytes()); // papr_hcall.ret
/// ```
#[derive(Debug)]
pub struct HcallOutput<'a> {
    words: RunWords<'a>,
}

impl HcallOutput<'_> {
    /// The return code the guest will see in r3 (`H_SUCCESS` = 0, errors
    /// negative).
    pub fn ret(&self) -> i64 {
        self.words.get(0).map_or(0, |w| w as i64)
    }

    /// Sets the return code (r3).
    pub fn set_ret(&mut self, ret: i64) {
        self.words.set(0, ret as u64);
    }

    /// Output argument `i` (0–8, returned in r4 + i).
    pub fn arg(&self, i: usize) -> Option<u64> {
        if i < 9 {
            self.words.get(i + 1)
        } else {
            None
        }
    }

    /// Sets output argument `i` (0–8); false when `i` is out of range.
    pub fn set_arg(&mut self, i: usize, v: u64) -> bool {
        i < 9 && self.words.set(i + 1, v)
    }
}

/// Machine-check disposition of a `KVM_EXIT_NMI` (`kvm_run.flags`,
/// `KVM_RUN_PPC_NMI_DISP_*`).
///
/// ```
/// use kvmkit_arch_powerpc::{decode_exit, NmiDisposition, PpcExit, KVM_RUN_MIN_LEN};
/// use kvmkit_core::VcpuExit;
/// let mut run = vec![0u8; KVM_RUN_MIN_LEN];
/// run[8..12].copy_from_slice(&16u32.to_ne_bytes()); // KVM_EXIT_NMI
/// run[14..16].copy_from_slice(&3u16.to_ne_bytes()); // flags: not recovered
/// assert!(matches!(
///     decode_exit(&mut run).unwrap(),
///     VcpuExit::Arch(PpcExit::MachineCheck { disposition: NmiDisposition::NotRecovered })
/// ));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NmiDisposition {
    /// The error was fully recovered.
    FullyRecovered,
    /// Limited recovery.
    LimitedRecovery,
    /// Not recovered.
    NotRecovered,
    /// No disposition given (0).
    Unknown,
}

/// Exits only PowerPC has; `Ppc64::handle_arch_exit` answers hypercalls
/// through [`crate::PaprIo`], reports OSI, DCR and EPR accesses as unhandled
/// (reads get all ones) and stops the vCPU on machine checks, watchdog
/// expiry and unknown hardware exits.
///
/// ```
/// use kvmkit_arch_powerpc::{decode_exit, PpcExit, KVM_RUN_MIN_LEN};
/// use kvmkit_core::VcpuExit;
/// let mut run = vec![0u8; KVM_RUN_MIN_LEN];
/// run[8..12].copy_from_slice(&21u32.to_ne_bytes()); // KVM_EXIT_WATCHDOG
/// assert!(matches!(decode_exit(&mut run).unwrap(), VcpuExit::Arch(PpcExit::Watchdog)));
/// ```
#[derive(Debug)]
#[non_exhaustive]
pub enum PpcExit<'a> {
    /// A PAPR hypercall KVM left to userspace (`KVM_EXIT_PAPR_HCALL`).
    PaprHcall {
        /// The hypercall number (r3), e.g. `H_PUT_TERM_CHAR` = 0x58.
        nr: u64,
        /// Its arguments (r4..r12).
        args: [u64; 9],
        /// Where the results go.
        out: HcallOutput<'a>,
    },
    /// An OS interface call of KVM-PR (`KVM_EXIT_OSI`): the guest's 32 GPRs,
    /// written back to the guest on the next entry.
    Osi {
        /// `kvm_run.osi.gprs`.
        gprs: RunWords<'a>,
    },
    /// A BookE device control register access (`KVM_EXIT_DCR`).
    Dcr {
        /// The DCR number.
        dcrn: u32,
        /// `kvm_run.dcr.data`, 4 bytes: the value written, or to fill on reads.
        data: &'a mut [u8],
        /// Whether the guest was writing.
        is_write: bool,
    },
    /// The guest read the BookE External Proxy Register (`KVM_EXIT_EPR`):
    /// fill in the 4-byte interrupt vector.
    Epr {
        /// `kvm_run.epr.epr`, 4 bytes.
        epr: &'a mut [u8],
    },
    /// A machine check KVM passed up (`KVM_EXIT_NMI`, with
    /// `KVM_CAP_PPC_FWNMI`).
    MachineCheck {
        /// What the host could recover.
        disposition: NmiDisposition,
    },
    /// The BookE watchdog expired (`KVM_EXIT_WATCHDOG`).
    Watchdog,
    /// KVM met a hardware exit it cannot handle (`KVM_EXIT_UNKNOWN`): on
    /// Book3S the interrupt vector ("trap") it came through.
    HardwareUnknown {
        /// `kvm_run.hw.hardware_exit_reason`.
        hardware_exit_reason: u64,
    },
}

fn need(run: &[u8], reason: u32, needed: usize) -> Result<(), DecodeError> {
    if run.len() < needed {
        Err(DecodeError::Truncated {
            reason,
            len: run.len(),
            needed,
        })
    } else {
        Ok(())
    }
}

fn u64_of(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_ne_bytes(a)
}

fn u64_at(run: &[u8], off: usize) -> u64 {
    u64_of(&run[off..off + 8])
}

fn u32_at(run: &[u8], off: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&run[off..off + 4]);
    u32::from_ne_bytes(a)
}

fn u16_at(run: &[u8], off: usize) -> u16 {
    u16::from_ne_bytes([run[off], run[off + 1]])
}

/// Decodes the exit in a ppc64 `kvm_run` area (at least
/// [`KVM_RUN_MIN_LEN`] bytes, laid out as the kernel lays it out).
///
/// Malformed values (which a correct kernel never writes) are errors, never
/// out-of-bounds accesses. The debug exit's `status`
/// (`KVMPPC_DEBUG_BREAKPOINT`, `_WATCH_*`) is read with [`debug_status`].
///
/// ```
/// use kvmkit_arch_powerpc::{decode_exit, KVM_RUN_MIN_LEN};
/// use kvmkit_core::VcpuExit;
/// let mut run = vec![0u8; KVM_RUN_MIN_LEN];
/// run[8..12].copy_from_slice(&6u32.to_ne_bytes()); // KVM_EXIT_MMIO
/// run[32..40].copy_from_slice(&0x2000_0000u64.to_ne_bytes()); // phys_addr
/// run[48..52].copy_from_slice(&4u32.to_ne_bytes()); // len
/// match decode_exit(&mut run).unwrap() {
///     VcpuExit::MmioRead { addr: 0x2000_0000, data } => data.copy_from_slice(b"ppc!"),
///     e => panic!("{e:?}"),
/// }
/// assert_eq!(&run[40..44], b"ppc!");
/// ```
pub fn decode_exit(run: &mut [u8]) -> Result<VcpuExit<'_, Ppc64>, DecodeError> {
    need(run, 0, KVM_RUN_MIN_LEN)?;
    let reason = u32_at(run, KVM_RUN_EXIT_REASON_OFFSET);
    Ok(match reason {
        KVM_EXIT_PAPR_HCALL => {
            let nr = u64_at(run, HCALL_NR);
            let mut args = [0u64; 9];
            for (i, a) in args.iter_mut().enumerate() {
                *a = u64_at(run, HCALL_ARGS + 8 * i);
            }
            VcpuExit::Arch(PpcExit::PaprHcall {
                nr,
                args,
                out: HcallOutput {
                    words: RunWords::new(&mut run[HCALL_RET..HCALL_END]),
                },
            })
        }
        KVM_EXIT_MMIO => {
            let addr = u64_at(run, MMIO_ADDR);
            let len = u32_at(run, MMIO_LEN);
            if !(1..=8).contains(&len) {
                return Err(bad(reason, "mmio.len", u64::from(len)));
            }
            let is_write = run[MMIO_IS_WRITE] != 0;
            let data = &mut run[MMIO_DATA..MMIO_DATA + len as usize];
            if is_write {
                VcpuExit::MmioWrite { addr, data }
            } else {
                VcpuExit::MmioRead { addr, data }
            }
        }
        KVM_EXIT_OSI => VcpuExit::Arch(PpcExit::Osi {
            gprs: RunWords::new(&mut run[OSI_GPRS..OSI_GPRS + 32 * 8]),
        }),
        KVM_EXIT_DCR => {
            let dcrn = u32_at(run, DCR_DCRN);
            let is_write = run[DCR_IS_WRITE] != 0;
            VcpuExit::Arch(PpcExit::Dcr {
                dcrn,
                data: &mut run[DCR_DATA..DCR_DATA + 4],
                is_write,
            })
        }
        KVM_EXIT_EPR => VcpuExit::Arch(PpcExit::Epr {
            epr: &mut run[EPR_EPR..EPR_EPR + 4],
        }),
        KVM_EXIT_NMI => {
            let flags = u64::from(u16_at(run, FLAGS));
            VcpuExit::Arch(PpcExit::MachineCheck {
                disposition: match flags & KVM_RUN_PPC_NMI_DISP_MASK {
                    KVM_RUN_PPC_NMI_DISP_FULLY_RECOV => NmiDisposition::FullyRecovered,
                    KVM_RUN_PPC_NMI_DISP_LIMITED_RECOV => NmiDisposition::LimitedRecovery,
                    KVM_RUN_PPC_NMI_DISP_NOT_RECOV => NmiDisposition::NotRecovered,
                    _ => NmiDisposition::Unknown,
                },
            })
        }
        KVM_EXIT_WATCHDOG => VcpuExit::Arch(PpcExit::Watchdog),
        KVM_EXIT_UNKNOWN => VcpuExit::Arch(PpcExit::HardwareUnknown {
            hardware_exit_reason: u64_at(run, HW_REASON),
        }),
        KVM_EXIT_DEBUG => VcpuExit::Debug {
            pc: u64_at(run, DEBUG_ADDRESS),
        },
        KVM_EXIT_HLT => VcpuExit::Hlt,
        KVM_EXIT_SHUTDOWN => VcpuExit::Shutdown,
        KVM_EXIT_INTR => VcpuExit::Interrupted,
        KVM_EXIT_IRQ_WINDOW_OPEN => VcpuExit::IrqWindowOpen,
        // Never written by PowerPC's KVM today (no dirty ring), but the
        // number is generic and the exit carries no data.
        KVM_EXIT_DIRTY_RING_FULL => VcpuExit::DirtyRingFull,
        KVM_EXIT_FAIL_ENTRY => VcpuExit::FailEntry {
            reason: u64_at(run, FAIL_REASON),
            cpu: u32_at(run, FAIL_CPU),
        },
        KVM_EXIT_INTERNAL_ERROR => {
            let ndata = u32_at(run, INTERNAL_NDATA);
            let mut data = [0u64; 4];
            for (i, d) in data.iter_mut().enumerate().take(ndata.min(4) as usize) {
                *d = u64_at(run, INTERNAL_DATA + 8 * i);
            }
            VcpuExit::InternalError {
                suberror: u32_at(run, INTERNAL_SUBERROR),
                ndata,
                data,
            }
        }
        KVM_EXIT_SYSTEM_EVENT => VcpuExit::SystemEvent {
            kind: SystemEventKind::from_raw(u32_at(run, EVENT_TYPE)),
            flags: u64_at(run, EVENT_DATA),
        },
        other => VcpuExit::Unknown { reason: other },
    })
}

/// The `status` of a `KVM_EXIT_DEBUG` in a ppc64 `kvm_run` area
/// (`KVMPPC_DEBUG_BREAKPOINT`, `KVMPPC_DEBUG_WATCH_WRITE`,
/// `KVMPPC_DEBUG_WATCH_READ`); `None` for other exits or short areas. For
/// watchpoints the `pc` of [`kvmkit_core::VcpuExit::Debug`] is the data
/// address, as the kernel reports it.
///
/// ```
/// use kvmkit_arch_powerpc::{debug_status, KVM_RUN_MIN_LEN};
/// let mut run = vec![0u8; KVM_RUN_MIN_LEN];
/// run[8..12].copy_from_slice(&4u32.to_ne_bytes()); // KVM_EXIT_DEBUG
/// run[40..44].copy_from_slice(&2u32.to_ne_bytes()); // KVMPPC_DEBUG_BREAKPOINT
/// assert_eq!(debug_status(&run), Some(2));
/// ```
pub fn debug_status(run: &[u8]) -> Option<u32> {
    if run.len() < KVM_RUN_MIN_LEN || u32_at(run, KVM_RUN_EXIT_REASON_OFFSET) != KVM_EXIT_DEBUG {
        return None;
    }
    Some(u32_at(run, DEBUG_STATUS))
}

fn bad(reason: u32, field: &'static str, value: u64) -> DecodeError {
    DecodeError::BadField {
        reason,
        field,
        value,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LEN: usize = 4096;

    fn area(reason: u32) -> Vec<u8> {
        let mut v = vec![0u8; LEN];
        v[8..12].copy_from_slice(&reason.to_ne_bytes());
        v
    }

    fn put64(run: &mut [u8], off: usize, v: u64) {
        run[off..off + 8].copy_from_slice(&v.to_ne_bytes());
    }

    fn put32(run: &mut [u8], off: usize, v: u32) {
        run[off..off + 4].copy_from_slice(&v.to_ne_bytes());
    }

    #[test]
    fn offsets_are_the_kernels() {
        // The values tests/uapi.rs reads from the ppc64le header.
        assert_eq!(U, 32);
        assert_eq!(KVM_RUN_MIN_LEN, 288);
        assert_eq!(
            (HCALL_NR, HCALL_RET, HCALL_ARGS, HCALL_END),
            (32, 40, 48, 120)
        );
        assert_eq!(
            (MMIO_ADDR, MMIO_DATA, MMIO_LEN, MMIO_IS_WRITE),
            (32, 40, 48, 52)
        );
        assert_eq!((DCR_DCRN, DCR_DATA, DCR_IS_WRITE), (32, 36, 40));
        assert_eq!((DEBUG_ADDRESS, DEBUG_STATUS), (32, 40));
        assert_eq!((EVENT_TYPE, EVENT_DATA), (32, 40));
        assert_eq!(FLAGS, 14);
    }

    #[test]
    fn decodes_a_papr_hcall_and_takes_results() {
        let mut run = area(KVM_EXIT_PAPR_HCALL);
        put64(&mut run, 32, 0x58);
        put64(&mut run, 40, 0xdead);
        for i in 0..9 {
            put64(&mut run, 48 + 8 * i, 100 + i as u64);
        }
        match decode_exit(&mut run).unwrap() {
            VcpuExit::Arch(PpcExit::PaprHcall { nr, args, mut out }) => {
                assert_eq!(nr, 0x58);
                assert_eq!(args[0], 100);
                assert_eq!(args[8], 108);
                assert_eq!(out.ret(), 0xdead);
                assert_eq!(out.arg(8), Some(108));
                assert_eq!(out.arg(9), None);
                out.set_ret(0);
                assert!(out.set_arg(0, 7));
                assert!(out.set_arg(8, 9));
                assert!(!out.set_arg(9, 1));
                assert!(format!("{out:?}").contains("HcallOutput"));
            }
            e => panic!("unexpected {e:?}"),
        }
        assert_eq!(u64_at(&run, 40), 0);
        assert_eq!(u64_at(&run, 48), 7);
        assert_eq!(u64_at(&run, 112), 9);
        assert_eq!(u64_at(&run, 120), 0, "nothing past args[8]");
    }

    #[test]
    fn decodes_mmio_both_ways_and_refuses_bad_lengths() {
        let mut run = area(KVM_EXIT_MMIO);
        put64(&mut run, 32, 0x3000_1000);
        put32(&mut run, 48, 2);
        match decode_exit(&mut run).unwrap() {
            VcpuExit::MmioRead {
                addr: 0x3000_1000,
                data,
            } => data.copy_from_slice(&[0xbe, 0xef]),
            e => panic!("unexpected {e:?}"),
        }
        assert_eq!(run[40..42], [0xbe, 0xef]);
        run[52] = 1;
        assert!(matches!(
            decode_exit(&mut run).unwrap(),
            VcpuExit::MmioWrite {
                data: [0xbe, 0xef],
                ..
            }
        ));
        for bad_len in [0u32, 9, u32::MAX] {
            put32(&mut run, 48, bad_len);
            assert!(matches!(
                decode_exit(&mut run),
                Err(DecodeError::BadField {
                    field: "mmio.len",
                    ..
                })
            ));
        }
    }

    #[test]
    fn decodes_the_booke_and_pr_exits() {
        let mut run = area(KVM_EXIT_OSI);
        put64(&mut run, 32 + 3 * 8, 0x77);
        match decode_exit(&mut run).unwrap() {
            VcpuExit::Arch(PpcExit::Osi { mut gprs }) => {
                assert_eq!(gprs.len(), 32);
                assert!(!gprs.is_empty());
                assert_eq!(gprs.get(3), Some(0x77));
                assert_eq!(gprs.get(32), None);
                assert!(gprs.set(4, 5));
                assert!(!gprs.set(32, 5));
                assert!(format!("{gprs:?}").starts_with("[0, 0, 0, 119, 5"));
            }
            e => panic!("unexpected {e:?}"),
        }
        assert_eq!(u64_at(&run, 32 + 4 * 8), 5);

        let mut run = area(KVM_EXIT_DCR);
        put32(&mut run, 32, 0x80);
        match decode_exit(&mut run).unwrap() {
            VcpuExit::Arch(PpcExit::Dcr {
                dcrn: 0x80,
                data,
                is_write: false,
            }) => data.copy_from_slice(&[1, 2, 3, 4]),
            e => panic!("unexpected {e:?}"),
        }
        assert_eq!(run[36..40], [1, 2, 3, 4]);

        let mut run = area(KVM_EXIT_EPR);
        match decode_exit(&mut run).unwrap() {
            VcpuExit::Arch(PpcExit::Epr { epr }) => epr.copy_from_slice(&9u32.to_ne_bytes()),
            e => panic!("unexpected {e:?}"),
        }
        assert_eq!(u32_at(&run, 32), 9);

        for (flags, want) in [
            (0u16, NmiDisposition::Unknown),
            (1, NmiDisposition::FullyRecovered),
            (2, NmiDisposition::LimitedRecovery),
            (7, NmiDisposition::NotRecovered),
        ] {
            let mut run = area(KVM_EXIT_NMI);
            run[14..16].copy_from_slice(&flags.to_ne_bytes());
            match decode_exit(&mut run).unwrap() {
                VcpuExit::Arch(PpcExit::MachineCheck { disposition }) => {
                    assert_eq!(disposition, want)
                }
                e => panic!("unexpected {e:?}"),
            }
        }
        let mut run = area(KVM_EXIT_WATCHDOG);
        assert!(matches!(
            decode_exit(&mut run).unwrap(),
            VcpuExit::Arch(PpcExit::Watchdog)
        ));
        let mut run = area(KVM_EXIT_UNKNOWN);
        put64(&mut run, 32, 0xe40);
        assert!(matches!(
            decode_exit(&mut run).unwrap(),
            VcpuExit::Arch(PpcExit::HardwareUnknown {
                hardware_exit_reason: 0xe40
            })
        ));
    }

    #[test]
    fn decodes_the_portable_exits() {
        for (reason, check) in [
            (KVM_EXIT_HLT, "Hlt"),
            (KVM_EXIT_SHUTDOWN, "Shutdown"),
            (KVM_EXIT_INTR, "Interrupted"),
            (KVM_EXIT_IRQ_WINDOW_OPEN, "IrqWindowOpen"),
            (KVM_EXIT_DIRTY_RING_FULL, "DirtyRingFull"),
        ] {
            let mut run = area(reason);
            assert_eq!(format!("{:?}", decode_exit(&mut run).unwrap()), check);
        }
        let mut run = area(KVM_EXIT_DEBUG);
        put64(&mut run, 32, 0xc000_0000_0000_1000);
        put32(
            &mut run,
            40,
            u32::try_from(KVMPPC_DEBUG_WATCH_WRITE).unwrap(),
        );
        assert!(matches!(
            decode_exit(&mut run).unwrap(),
            VcpuExit::Debug {
                pc: 0xc000_0000_0000_1000
            }
        ));
        assert_eq!(debug_status(&run), Some(4));
        assert_eq!(debug_status(&area(KVM_EXIT_HLT)), None);
        assert_eq!(debug_status(&[0u8; 16]), None);

        let mut run = area(KVM_EXIT_FAIL_ENTRY);
        put64(&mut run, 32, 0x21);
        put32(&mut run, 40, 3);
        assert!(matches!(
            decode_exit(&mut run).unwrap(),
            VcpuExit::FailEntry {
                reason: 0x21,
                cpu: 3
            }
        ));

        let mut run = area(KVM_EXIT_INTERNAL_ERROR);
        put32(&mut run, 32, 1);
        put32(&mut run, 36, 9);
        put64(&mut run, 40, 0xaa);
        put64(&mut run, 64, 0xdd);
        match decode_exit(&mut run).unwrap() {
            VcpuExit::InternalError {
                suberror: 1,
                ndata: 9,
                data,
            } => assert_eq!(data, [0xaa, 0, 0, 0xdd]),
            e => panic!("unexpected {e:?}"),
        }

        let mut run = area(KVM_EXIT_SYSTEM_EVENT);
        put32(&mut run, 32, 2);
        put64(&mut run, 40, 5);
        assert!(matches!(
            decode_exit(&mut run).unwrap(),
            VcpuExit::SystemEvent {
                kind: SystemEventKind::Reset,
                flags: 5
            }
        ));

        let mut run = area(999);
        assert!(matches!(
            decode_exit(&mut run).unwrap(),
            VcpuExit::Unknown { reason: 999 }
        ));
    }

    #[test]
    fn decodes_dirty_ring_full_from_a_kernel_area() {
        // exit_reason 31 at offset 8 in host (ppc64le: little-endian)
        // order, the rest of the area as KVM left it from an earlier exit.
        let mut run = vec![0xa5u8; KVM_RUN_MIN_LEN];
        run[8..12].copy_from_slice(&31u32.to_ne_bytes());
        assert_eq!(KVM_EXIT_DIRTY_RING_FULL, 31);
        assert!(matches!(
            decode_exit(&mut run).unwrap(),
            VcpuExit::DirtyRingFull
        ));
    }

    #[test]
    fn short_areas_are_errors() {
        let mut short = vec![0u8; KVM_RUN_MIN_LEN - 1];
        assert_eq!(
            decode_exit(&mut short).unwrap_err(),
            DecodeError::Truncated {
                reason: 0,
                len: 287,
                needed: 288
            }
        );
        // Exactly the minimum decodes every exit, the largest member included.
        let mut run = vec![0u8; KVM_RUN_MIN_LEN];
        run[8..12].copy_from_slice(&KVM_EXIT_OSI.to_ne_bytes());
        assert!(decode_exit(&mut run).is_ok());
    }

    #[test]
    fn unaligned_buffers_decode() {
        let mut backing = vec![0u8; LEN + 1];
        let run = &mut backing[1..];
        run[8..12].copy_from_slice(&KVM_EXIT_PAPR_HCALL.to_ne_bytes());
        put64(run, 32, 0x54);
        assert!(matches!(
            decode_exit(run).unwrap(),
            VcpuExit::Arch(PpcExit::PaprHcall { nr: 0x54, .. })
        ));
    }
}
