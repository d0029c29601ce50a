//! Decoding x86_64's `kvm_run` exit union.
//!
//! Offsets are those of `struct kvm_run` in `linux/kvm.h` for x86_64; the unit
//! tests pin them against kvm-bindings' generated struct.

use crate::X86_64;
use kvmkit_core::{DecodeError, SystemEventKind, VcpuExit, KVM_RUN_EXIT_REASON_OFFSET};

/// Start of the exit union in x86_64's `kvm_run`.
pub(crate) const UNION: usize = 32;

/// Where the decoder reads each field, from the start of `kvm_run`, by the
/// name the `uapi_facts` example and the header check use
/// (`kvm_run.MEMBER.FIELD`, size in bytes).
pub(crate) const FIELDS: &[(&str, usize, usize)] = &[
    ("immediate_exit", 1, 1),
    ("exit_reason", 8, 4),
    ("io.direction", IO_DIRECTION, 1),
    ("io.size", IO_SIZE, 1),
    ("io.port", IO_PORT, 2),
    ("io.count", IO_COUNT, 4),
    ("io.data_offset", IO_DATA_OFFSET, 8),
    ("mmio.phys_addr", MMIO_PHYS_ADDR, 8),
    ("mmio.data", MMIO_DATA, 8),
    ("mmio.len", MMIO_LEN, 4),
    ("mmio.is_write", MMIO_IS_WRITE, 1),
    ("debug.arch.pc", DEBUG_PC, 8),
    ("fail_entry.hardware_entry_failure_reason", FAIL_REASON, 8),
    ("fail_entry.cpu", FAIL_CPU, 4),
    ("internal.suberror", INTERNAL_SUBERROR, 4),
    ("internal.ndata", INTERNAL_NDATA, 4),
    ("internal.data", INTERNAL_DATA, 128),
    ("system_event.type", SYSTEM_EVENT_TYPE, 4),
    ("system_event.data", SYSTEM_EVENT_DATA, 128),
    ("msr.error", MSR_ERROR, 1),
    ("msr.reason", MSR_REASON, 4),
    ("msr.index", MSR_INDEX, 4),
    ("msr.data", MSR_DATA, 8),
    ("eoi.vector", EOI_VECTOR, 1),
];

const IO_DIRECTION: usize = UNION;
const IO_SIZE: usize = UNION + 1;
const IO_PORT: usize = UNION + 2;
const IO_COUNT: usize = UNION + 4;
const IO_DATA_OFFSET: usize = UNION + 8;
const MMIO_PHYS_ADDR: usize = UNION;
const MMIO_DATA: usize = UNION + 8;
const MMIO_LEN: usize = UNION + 16;
const MMIO_IS_WRITE: usize = UNION + 20;
const DEBUG_PC: usize = UNION + 8;
const FAIL_REASON: usize = UNION;
const FAIL_CPU: usize = UNION + 8;
const INTERNAL_SUBERROR: usize = UNION;
const INTERNAL_NDATA: usize = UNION + 4;
const INTERNAL_DATA: usize = UNION + 8;
const SYSTEM_EVENT_TYPE: usize = UNION;
const SYSTEM_EVENT_DATA: usize = UNION + 8;
const MSR_ERROR: usize = UNION;
const MSR_REASON: usize = UNION + 8;
const MSR_INDEX: usize = UNION + 12;
const MSR_DATA: usize = UNION + 16;
const EOI_VECTOR: usize = UNION;
/// Size of the exit union.
const UNION_SIZE: usize = 256;

pub(crate) const KVM_EXIT_UNKNOWN: u32 = 0;
pub(crate) const KVM_EXIT_EXCEPTION: u32 = 1;
pub(crate) const KVM_EXIT_IO: u32 = 2;
pub(crate) const KVM_EXIT_HYPERCALL: u32 = 3;
pub(crate) const KVM_EXIT_DEBUG: u32 = 4;
pub(crate) const KVM_EXIT_HLT: u32 = 5;
pub(crate) const KVM_EXIT_MMIO: u32 = 6;
pub(crate) const KVM_EXIT_IRQ_WINDOW_OPEN: u32 = 7;
pub(crate) const KVM_EXIT_SHUTDOWN: u32 = 8;
pub(crate) const KVM_EXIT_FAIL_ENTRY: u32 = 9;
pub(crate) const KVM_EXIT_INTR: u32 = 10;
pub(crate) const KVM_EXIT_TPR_ACCESS: u32 = 12;
pub(crate) const KVM_EXIT_NMI: u32 = 16;
pub(crate) const KVM_EXIT_INTERNAL_ERROR: u32 = 17;
pub(crate) const KVM_EXIT_SYSTEM_EVENT: u32 = 24;
pub(crate) const KVM_EXIT_IOAPIC_EOI: u32 = 26;
pub(crate) const KVM_EXIT_X86_RDMSR: u32 = 29;
pub(crate) const KVM_EXIT_X86_WRMSR: u32 = 30;
pub(crate) const KVM_EXIT_DIRTY_RING_FULL: u32 = 31;
pub(crate) const KVM_EXIT_X86_BUS_LOCK: u32 = 33;
pub(crate) const KVM_EXIT_NOTIFY: u32 = 37;

/// Every `KVM_EXIT_*` value this decoder knows, by the kernel's name.
pub const EXIT_REASONS: &[(&str, u32)] = &[
    ("KVM_EXIT_UNKNOWN", KVM_EXIT_UNKNOWN),
    ("KVM_EXIT_EXCEPTION", KVM_EXIT_EXCEPTION),
    ("KVM_EXIT_IO", KVM_EXIT_IO),
    ("KVM_EXIT_HYPERCALL", KVM_EXIT_HYPERCALL),
    ("KVM_EXIT_DEBUG", KVM_EXIT_DEBUG),
    ("KVM_EXIT_HLT", KVM_EXIT_HLT),
    ("KVM_EXIT_MMIO", KVM_EXIT_MMIO),
    ("KVM_EXIT_IRQ_WINDOW_OPEN", KVM_EXIT_IRQ_WINDOW_OPEN),
    ("KVM_EXIT_SHUTDOWN", KVM_EXIT_SHUTDOWN),
    ("KVM_EXIT_FAIL_ENTRY", KVM_EXIT_FAIL_ENTRY),
    ("KVM_EXIT_INTR", KVM_EXIT_INTR),
    ("KVM_EXIT_TPR_ACCESS", KVM_EXIT_TPR_ACCESS),
    ("KVM_EXIT_NMI", KVM_EXIT_NMI),
    ("KVM_EXIT_INTERNAL_ERROR", KVM_EXIT_INTERNAL_ERROR),
    ("KVM_EXIT_SYSTEM_EVENT", KVM_EXIT_SYSTEM_EVENT),
    ("KVM_EXIT_IOAPIC_EOI", KVM_EXIT_IOAPIC_EOI),
    ("KVM_EXIT_X86_RDMSR", KVM_EXIT_X86_RDMSR),
    ("KVM_EXIT_X86_WRMSR", KVM_EXIT_X86_WRMSR),
    ("KVM_EXIT_DIRTY_RING_FULL", KVM_EXIT_DIRTY_RING_FULL),
    ("KVM_EXIT_X86_BUS_LOCK", KVM_EXIT_X86_BUS_LOCK),
    ("KVM_EXIT_NOTIFY", KVM_EXIT_NOTIFY),
];

/// Direction of a port I/O exit (`KVM_EXIT_IO_IN` = 0, `KVM_EXIT_IO_OUT` = 1).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum IoDirection {
    /// `in`: the device fills the data.
    In,
    /// `out`: the guest wrote the data.
    Out,
}

/// Exits only x86 has.
#[derive(Debug)]
#[non_exhaustive]
pub enum X86Exit<'a> {
    /// Port I/O (`KVM_EXIT_IO`): `data` holds `count` accesses of `size`
    /// bytes each (`count` > 1 for `rep ins/outs`).
    Io {
        /// In or out.
        direction: IoDirection,
        /// The port.
        port: u16,
        /// Bytes per access: 1, 2 or 4.
        size: u8,
        /// The data, `size * count` bytes, in the `kvm_run` area.
        data: &'a mut [u8],
    },
    /// A guest `rdmsr` KVM forwarded (`KVM_EXIT_X86_RDMSR`): set `data`, or
    /// set `error` to 1 to inject #GP.
    RdMsr {
        /// The MSR index.
        index: u32,
        /// The value returned to the guest (8 bytes, native endian).
        data: &'a mut [u8],
        /// Non-zero injects #GP.
        error: &'a mut u8,
    },
    /// A guest `wrmsr` KVM forwarded (`KVM_EXIT_X86_WRMSR`); set `error` to 1
    /// to inject #GP.
    WrMsr {
        /// The MSR index.
        index: u32,
        /// The value written.
        value: u64,
        /// Non-zero injects #GP.
        error: &'a mut u8,
    },
    /// The guest EOIed a level-triggered interrupt of the userspace IOAPIC
    /// (`KVM_EXIT_IOAPIC_EOI`, split irqchip only).
    IoapicEoi {
        /// The vector (`kvm_run.eoi.vector`).
        vector: u8,
    },
    /// Another x86-only exit (TPR access, NMI, exception, …).
    Other {
        /// The raw `exit_reason`.
        reason: u32,
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

fn u16_at(run: &[u8], off: usize) -> u16 {
    u16::from_ne_bytes([run[off], run[off + 1]])
}

fn u32_at(run: &[u8], off: usize) -> u32 {
    let mut b = [0u8; 4];
    b.copy_from_slice(&run[off..off + 4]);
    u32::from_ne_bytes(b)
}

fn u64_at(run: &[u8], off: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&run[off..off + 8]);
    u64::from_ne_bytes(b)
}

/// Decodes the exit in an x86_64 `kvm_run` area (the whole mapping: port I/O
/// data lives past the struct, at `io.data_offset`).
///
/// Malformed lengths (which a correct kernel never writes) are errors, never
/// out-of-bounds accesses.
pub fn decode_exit(run: &mut [u8]) -> Result<VcpuExit<'_, X86_64>, DecodeError> {
    need(run, 0, UNION + UNION_SIZE)?;
    let reason = u32_at(run, KVM_RUN_EXIT_REASON_OFFSET);
    Ok(match reason {
        KVM_EXIT_IO => {
            let direction = match run[IO_DIRECTION] {
                0 => IoDirection::In,
                1 => IoDirection::Out,
                d => return Err(bad(reason, "io.direction", u64::from(d))),
            };
            let size = run[IO_SIZE];
            if !matches!(size, 1 | 2 | 4) {
                return Err(bad(reason, "io.size", u64::from(size)));
            }
            let port = u16_at(run, IO_PORT);
            let count = u32_at(run, IO_COUNT);
            let offset = u64_at(run, IO_DATA_OFFSET);
            let len = usize::from(size)
                .checked_mul(count as usize)
                .filter(|&l| l > 0)
                .ok_or(bad(reason, "io.count", u64::from(count)))?;
            let start = usize::try_from(offset)
                .ok()
                .filter(|&s| s >= UNION + UNION_SIZE)
                .ok_or(bad(reason, "io.data_offset", offset))?;
            let end = start
                .checked_add(len)
                .ok_or(bad(reason, "io.data_offset", offset))?;
            need(run, reason, end)?;
            VcpuExit::Arch(X86Exit::Io {
                direction,
                port,
                size,
                data: &mut run[start..end],
            })
        }
        KVM_EXIT_MMIO => {
            let addr = u64_at(run, MMIO_PHYS_ADDR);
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
        KVM_EXIT_HLT => VcpuExit::Hlt,
        KVM_EXIT_SHUTDOWN => VcpuExit::Shutdown,
        KVM_EXIT_INTR => VcpuExit::Interrupted,
        KVM_EXIT_IRQ_WINDOW_OPEN => VcpuExit::IrqWindowOpen,
        KVM_EXIT_DIRTY_RING_FULL => VcpuExit::DirtyRingFull,
        KVM_EXIT_DEBUG => VcpuExit::Debug {
            pc: u64_at(run, DEBUG_PC),
        },
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
            kind: SystemEventKind::from_raw(u32_at(run, SYSTEM_EVENT_TYPE)),
            flags: u64_at(run, SYSTEM_EVENT_DATA),
        },
        KVM_EXIT_X86_RDMSR => {
            let index = u32_at(run, MSR_INDEX);
            let (head, tail) = run.split_at_mut(MSR_DATA);
            VcpuExit::Arch(X86Exit::RdMsr {
                index,
                data: &mut tail[..8],
                error: &mut head[MSR_ERROR],
            })
        }
        KVM_EXIT_X86_WRMSR => {
            let index = u32_at(run, MSR_INDEX);
            let value = u64_at(run, MSR_DATA);
            VcpuExit::Arch(X86Exit::WrMsr {
                index,
                value,
                error: &mut run[MSR_ERROR],
            })
        }
        KVM_EXIT_IOAPIC_EOI => VcpuExit::Arch(X86Exit::IoapicEoi {
            vector: run[EOI_VECTOR],
        }),
        KVM_EXIT_EXCEPTION
        | KVM_EXIT_HYPERCALL
        | KVM_EXIT_TPR_ACCESS
        | KVM_EXIT_NMI
        | KVM_EXIT_X86_BUS_LOCK
        | KVM_EXIT_NOTIFY => VcpuExit::Arch(X86Exit::Other { reason }),
        other => VcpuExit::Unknown { reason: other },
    })
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
    use kvm_bindings::kvm_run;
    use std::mem::{offset_of, size_of};

    const LEN: usize = 4096 + 64;

    fn area(reason: u32) -> Vec<u8> {
        let mut v = vec![0u8; LEN];
        v[8..12].copy_from_slice(&reason.to_ne_bytes());
        v
    }

    #[test]
    fn offsets_match_kvm_bindings() {
        assert_eq!(offset_of!(kvm_run, exit_reason), KVM_RUN_EXIT_REASON_OFFSET);
        assert_eq!(
            offset_of!(kvm_run, immediate_exit),
            kvmkit_core::KVM_RUN_IMMEDIATE_EXIT_OFFSET
        );
        assert_eq!(offset_of!(kvm_run, __bindgen_anon_1), UNION);
        assert!(size_of::<kvm_run>() >= UNION + UNION_SIZE);
        use kvm_bindings::{
            kvm_run__bindgen_ty_1__bindgen_ty_4 as io, kvm_run__bindgen_ty_1__bindgen_ty_6 as mmio,
        };
        assert_eq!(offset_of!(io, direction), 0);
        assert_eq!(offset_of!(io, size), 1);
        assert_eq!(offset_of!(io, port), 2);
        assert_eq!(offset_of!(io, count), 4);
        assert_eq!(offset_of!(io, data_offset), 8);
        assert_eq!(offset_of!(mmio, phys_addr), 0);
        assert_eq!(offset_of!(mmio, data), 8);
        assert_eq!(offset_of!(mmio, len), 16);
        assert_eq!(offset_of!(mmio, is_write), 20);
    }

    #[test]
    fn decodes_port_io_out_and_in() {
        let mut run = area(KVM_EXIT_IO);
        run[UNION] = 1;
        run[UNION + 1] = 1;
        run[UNION + 2..UNION + 4].copy_from_slice(&0x3f8u16.to_ne_bytes());
        run[UNION + 4..UNION + 8].copy_from_slice(&1u32.to_ne_bytes());
        run[UNION + 8..UNION + 16].copy_from_slice(&4096u64.to_ne_bytes());
        run[4096] = b'A';
        match decode_exit(&mut run).unwrap() {
            VcpuExit::Arch(X86Exit::Io {
                direction: IoDirection::Out,
                port: 0x3f8,
                size: 1,
                data,
            }) => {
                assert_eq!(data, b"A")
            }
            e => panic!("unexpected {e:?}"),
        }
        run[UNION] = 0;
        run[UNION + 1] = 2;
        run[UNION + 4..UNION + 8].copy_from_slice(&3u32.to_ne_bytes());
        match decode_exit(&mut run).unwrap() {
            VcpuExit::Arch(X86Exit::Io {
                direction: IoDirection::In,
                size: 2,
                data,
                ..
            }) => {
                assert_eq!(data.len(), 6);
                data.fill(0xab);
            }
            e => panic!("unexpected {e:?}"),
        }
        assert_eq!(run[4096..4102], [0xab; 6]);
    }

    #[test]
    fn refuses_malformed_port_io() {
        let mut run = area(KVM_EXIT_IO);
        run[UNION + 1] = 3;
        assert!(matches!(
            decode_exit(&mut run),
            Err(DecodeError::BadField {
                field: "io.size",
                ..
            })
        ));
        run[UNION + 1] = 4;
        run[UNION + 4..UNION + 8].copy_from_slice(&1u32.to_ne_bytes());
        run[UNION + 8..UNION + 16].copy_from_slice(&(LEN as u64 - 2).to_ne_bytes());
        assert!(matches!(
            decode_exit(&mut run),
            Err(DecodeError::Truncated { .. })
        ));
        run[UNION + 8..UNION + 16].copy_from_slice(&u64::MAX.to_ne_bytes());
        assert!(decode_exit(&mut run).is_err());
        run[UNION + 8..UNION + 16].copy_from_slice(&8u64.to_ne_bytes());
        assert!(matches!(
            decode_exit(&mut run),
            Err(DecodeError::BadField {
                field: "io.data_offset",
                ..
            })
        ));
        run[UNION] = 7;
        assert!(matches!(
            decode_exit(&mut run),
            Err(DecodeError::BadField {
                field: "io.direction",
                ..
            })
        ));
        let mut short = vec![0u8; 100];
        assert!(matches!(
            decode_exit(&mut short),
            Err(DecodeError::Truncated { .. })
        ));
    }

    #[test]
    fn decodes_mmio() {
        let mut run = area(KVM_EXIT_MMIO);
        run[UNION..UNION + 8].copy_from_slice(&0xd000_0000u64.to_ne_bytes());
        run[UNION + 16..UNION + 20].copy_from_slice(&4u32.to_ne_bytes());
        match decode_exit(&mut run).unwrap() {
            VcpuExit::MmioRead {
                addr: 0xd000_0000,
                data,
            } => data.copy_from_slice(&[1, 2, 3, 4]),
            e => panic!("unexpected {e:?}"),
        }
        assert_eq!(run[UNION + 8..UNION + 12], [1, 2, 3, 4]);
        run[UNION + 20] = 1;
        assert!(matches!(
            decode_exit(&mut run).unwrap(),
            VcpuExit::MmioWrite {
                data: [1, 2, 3, 4],
                ..
            }
        ));
        run[UNION + 16..UNION + 20].copy_from_slice(&9u32.to_ne_bytes());
        assert!(matches!(
            decode_exit(&mut run),
            Err(DecodeError::BadField {
                field: "mmio.len",
                ..
            })
        ));
    }

    #[test]
    fn decodes_the_rest() {
        let mut run = area(KVM_EXIT_HLT);
        assert!(matches!(decode_exit(&mut run).unwrap(), VcpuExit::Hlt));
        let mut run = area(KVM_EXIT_SHUTDOWN);
        assert!(matches!(decode_exit(&mut run).unwrap(), VcpuExit::Shutdown));
        let mut run = area(KVM_EXIT_INTR);
        assert!(matches!(
            decode_exit(&mut run).unwrap(),
            VcpuExit::Interrupted
        ));
        let mut run = area(KVM_EXIT_IRQ_WINDOW_OPEN);
        assert!(matches!(
            decode_exit(&mut run).unwrap(),
            VcpuExit::IrqWindowOpen
        ));
        let mut run = area(KVM_EXIT_DIRTY_RING_FULL);
        assert!(matches!(
            decode_exit(&mut run).unwrap(),
            VcpuExit::DirtyRingFull
        ));
        let mut run = area(KVM_EXIT_DEBUG);
        run[UNION + 8..UNION + 16].copy_from_slice(&0x1234u64.to_ne_bytes());
        assert!(matches!(
            decode_exit(&mut run).unwrap(),
            VcpuExit::Debug { pc: 0x1234 }
        ));
        let mut run = area(KVM_EXIT_FAIL_ENTRY);
        run[UNION..UNION + 8].copy_from_slice(&0x21u64.to_ne_bytes());
        run[UNION + 8..UNION + 12].copy_from_slice(&1u32.to_ne_bytes());
        assert!(matches!(
            decode_exit(&mut run).unwrap(),
            VcpuExit::FailEntry {
                reason: 0x21,
                cpu: 1
            }
        ));
        let mut run = area(KVM_EXIT_INTERNAL_ERROR);
        run[UNION..UNION + 4].copy_from_slice(&1u32.to_ne_bytes());
        run[UNION + 4..UNION + 8].copy_from_slice(&9u32.to_ne_bytes());
        run[UNION + 8..UNION + 16].copy_from_slice(&7u64.to_ne_bytes());
        match decode_exit(&mut run).unwrap() {
            VcpuExit::InternalError {
                suberror: 1,
                ndata: 9,
                data,
            } => assert_eq!(data[0], 7),
            e => panic!("unexpected {e:?}"),
        }
        let mut run = area(KVM_EXIT_SYSTEM_EVENT);
        run[UNION..UNION + 4].copy_from_slice(&2u32.to_ne_bytes());
        assert!(matches!(
            decode_exit(&mut run).unwrap(),
            VcpuExit::SystemEvent {
                kind: SystemEventKind::Reset,
                flags: 0
            }
        ));
        let mut run = area(KVM_EXIT_X86_RDMSR);
        run[MSR_INDEX..MSR_INDEX + 4].copy_from_slice(&0x10u32.to_ne_bytes());
        match decode_exit(&mut run).unwrap() {
            VcpuExit::Arch(X86Exit::RdMsr {
                index: 0x10,
                data,
                error,
            }) => {
                data.copy_from_slice(&7u64.to_ne_bytes());
                *error = 1;
            }
            e => panic!("unexpected {e:?}"),
        }
        assert_eq!((run[MSR_ERROR], run[MSR_DATA]), (1, 7));
        let mut run = area(KVM_EXIT_X86_WRMSR);
        run[MSR_DATA..MSR_DATA + 8].copy_from_slice(&5u64.to_ne_bytes());
        assert!(matches!(
            decode_exit(&mut run).unwrap(),
            VcpuExit::Arch(X86Exit::WrMsr { value: 5, .. })
        ));
        let mut run = area(KVM_EXIT_NMI);
        assert!(matches!(
            decode_exit(&mut run).unwrap(),
            VcpuExit::Arch(X86Exit::Other { reason: 16 })
        ));
        let mut run = area(KVM_EXIT_IOAPIC_EOI);
        run[UNION] = 0x41;
        assert!(matches!(
            decode_exit(&mut run).unwrap(),
            VcpuExit::Arch(X86Exit::IoapicEoi { vector: 0x41 })
        ));
        let mut run = area(999);
        assert!(matches!(
            decode_exit(&mut run).unwrap(),
            VcpuExit::Unknown { reason: 999 }
        ));
    }
}
