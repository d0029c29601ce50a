//! Every UAPI fact this crate relies on, for comparison with the headers.

use crate::uapi::*;
use crate::{fpr, ioctl_numbers, vr, vsr};
use kvmkit_core::{DirtyGfn, MemoryFlags};
use std::collections::BTreeMap;
use std::mem::{align_of, offset_of, size_of, size_of_val};

fn put(m: &mut BTreeMap<String, u64>, name: String, value: usize) {
    m.insert(name, value as u64);
}

/// `NAME.offset` and `NAME.size` of a field.
fn field(m: &mut BTreeMap<String, u64>, name: String, offset: usize, size: usize) {
    put(m, format!("{name}.offset"), offset);
    put(m, format!("{name}.size"), size);
}

/// `STRUCT.size` and `STRUCT.align` of a C struct.
fn layout<T>(m: &mut BTreeMap<String, u64>, name: &str) {
    put(m, format!("{name}.size"), size_of::<T>());
    put(m, format!("{name}.align"), align_of::<T>());
}

/// Fields of Rust type `$ty` (a C struct, or an anonymous struct inside
/// one) reported as `PREFIX.CNAME`, at `$base` plus their offset in `$ty`.
macro_rules! fields {
    ($m:ident, $prefix:expr, $base:expr, $ty:ty { $($c:literal => $($f:ident).+),* $(,)? }) => {{
        let v = <$ty>::ZERO_FOR_FACTS;
        $(
            field(
                $m,
                format!("{}.{}", $prefix, $c),
                $base + offset_of!($ty, $($f).+),
                size_of_val(&v.$($f).+),
            );
        )*
    }};
}

/// A zero value to measure fields on.
trait ZeroForFacts {
    const ZERO_FOR_FACTS: Self;
}

macro_rules! zero_for_facts {
    ($($ty:ty = $v:expr;)*) => {
        $(impl ZeroForFacts for $ty { const ZERO_FOR_FACTS: Self = $v; })*
    };
}

zero_for_facts! {
    kvm_regs = kvm_regs { pc: 0, cr: 0, ctr: 0, lr: 0, xer: 0, msr: 0, srr0: 0, srr1: 0, pid: 0,
        sprg0: 0, sprg1: 0, sprg2: 0, sprg3: 0, sprg4: 0, sprg5: 0, sprg6: 0, sprg7: 0, gpr: [0; 32] };
    kvm_sregs = kvm_sregs::ZERO;
    kvm_sregs_s = kvm_sregs_s::ZERO;
    kvm_sregs_slb = kvm_sregs_slb { slbe: 0, slbv: 0 };
    kvm_sregs_e = kvm_sregs_e::ZERO;
    kvm_sregs_fsl = kvm_sregs_fsl { features: 0, svr: 0, mcar: 0, hid0: 0, pid1: 0, pid2: 0, _pad: 0 };
    kvm_fpu = kvm_fpu { fpr: [0; 32] };
    kvm_debug_exit_arch = kvm_debug_exit_arch { address: 0, status: 0, reserved: 0 };
    kvm_guest_debug_bp = kvm_guest_debug_bp { addr: 0, type_: 0, reserved: 0 };
    kvm_guest_debug_arch = kvm_guest_debug_arch { bp: [kvm_guest_debug_bp::ZERO_FOR_FACTS; 16] };
    kvm_guest_debug = kvm_guest_debug { control: 0, pad: 0, arch: kvm_guest_debug_arch::ZERO_FOR_FACTS };
    kvm_run = kvm_run::ZERO;
    kvm_run_hw = kvm_run_hw { hardware_exit_reason: 0 };
    kvm_run_fail_entry = kvm_run_fail_entry { hardware_entry_failure_reason: 0, cpu: 0, _pad: 0 };
    kvm_run_mmio = kvm_run_mmio { phys_addr: 0, data: [0; 8], len: 0, is_write: 0, _pad: [0; 3] };
    kvm_run_dcr = kvm_run_dcr { dcrn: 0, data: 0, is_write: 0, _pad: [0; 3] };
    kvm_run_internal = kvm_run_internal { suberror: 0, ndata: 0, data: [0; 16] };
    kvm_run_osi = kvm_run_osi { gprs: [0; 32] };
    kvm_run_papr_hcall = kvm_run_papr_hcall { nr: 0, ret: 0, args: [0; 9] };
    kvm_run_epr = kvm_run_epr { epr: 0 };
    kvm_run_system_event = kvm_run_system_event { type_: 0, ndata: 0, data: [0; 16] };
    kvm_one_reg = kvm_one_reg { id: 0, addr: 0 };
    kvm_enable_cap = kvm_enable_cap::new(0, [0; 4]);
    kvm_create_device = kvm_create_device { type_: 0, fd: 0, flags: 0 };
    kvm_device_attr = kvm_device_attr { flags: 0, group: 0, attr: 0, addr: 0 };
    kvm_irq_level = kvm_irq_level { irq: 0, level: 0 };
    kvm_irqfd = kvm_irqfd { fd: 0, gsi: 0, flags: 0, resamplefd: 0, pad: [0; 16] };
    kvm_userspace_memory_region = kvm_userspace_memory_region {
        slot: 0, flags: 0, guest_phys_addr: 0, memory_size: 0, userspace_addr: 0 };
    kvm_rtas_token_args = kvm_rtas_token_args { name: [0; 120], token: 0 };
    kvm_dirty_log = kvm_dirty_log { slot: 0, padding1: 0, dirty_bitmap: 0 };
    kvm_clear_dirty_log = kvm_clear_dirty_log { slot: 0, num_pages: 0, first_page: 0, dirty_bitmap: 0 };
    DirtyGfn = DirtyGfn { flags: 0, slot: 0, offset: 0 };
    kvm_get_htab_fd = kvm_get_htab_fd { flags: 0, start_index: 0, reserved: [0; 2] };
    kvm_get_htab_header = kvm_get_htab_header { index: 0, n_valid: 0, n_invalid: 0 };
}

/// Every UAPI fact this crate relies on, keyed by the kernel's name, as the
/// `uapi_facts` example prints them and `tests/uapi.rs` checks them against
/// the ppc64le headers: each ioctl number (PowerPC encoding), `KVM_EXIT_*`,
/// `KVM_CAP_*`, ONE_REG id and other constant (unsigned), and for every
/// struct of [`crate::uapi`] `STRUCT.size`, `STRUCT.align`,
/// `STRUCT.FIELD.offset` and `STRUCT.FIELD.size` (exit-union members of
/// `kvm_run` as `kvm_run.MEMBER.FIELD`, from the start of `kvm_run`).
///
/// ```
/// let f = kvmkit_arch_powerpc::uapi_facts();
/// assert_eq!(f["KVM_RUN"], 0x2000_ae80);
/// assert_eq!(f["kvm_run.papr_hcall.nr.offset"], 32);
/// assert_eq!(f["kvm_sregs.size"], 1232);
/// ```
pub fn uapi_facts() -> BTreeMap<String, u64> {
    let mut map = BTreeMap::new();
    let m = &mut map;
    for (name, n) in ioctl_numbers() {
        m.insert(name.to_string(), u64::from(n));
    }
    for (name, n) in EXIT_REASONS {
        m.insert((*name).to_string(), u64::from(*n));
    }
    for c in CAPABILITIES {
        m.insert(c.name().to_string(), u64::from(c.number()));
    }
    for (name, n) in ONE_REG_IDS.iter().chain(OTHER_CONSTANTS) {
        m.insert((*name).to_string(), *n);
    }
    for n in 0..32 {
        for (family, id) in [("FPR", fpr(n)), ("VR", vr(n)), ("VSR", vsr(n))] {
            m.insert(format!("KVM_REG_PPC_{family}({n})"), id.expect("n < 32"));
        }
    }

    layout::<kvm_regs>(m, "kvm_regs");
    fields!(m, "kvm_regs", 0, kvm_regs {
        "pc" => pc, "cr" => cr, "ctr" => ctr, "lr" => lr, "xer" => xer, "msr" => msr,
        "srr0" => srr0, "srr1" => srr1, "pid" => pid,
        "sprg0" => sprg0, "sprg1" => sprg1, "sprg2" => sprg2, "sprg3" => sprg3,
        "sprg4" => sprg4, "sprg5" => sprg5, "sprg6" => sprg6, "sprg7" => sprg7,
        "gpr" => gpr,
    });

    layout::<kvm_sregs>(m, "kvm_sregs");
    fields!(m, "kvm_sregs", 0, kvm_sregs { "pvr" => pvr });
    field(
        m,
        "kvm_sregs.u".into(),
        offset_of!(kvm_sregs, u),
        size_of::<kvm_sregs_u>(),
    );
    let s = offset_of!(kvm_sregs, u.s);
    field(m, "kvm_sregs.u.s".into(), s, size_of::<kvm_sregs_s>());
    field(
        m,
        "kvm_sregs.u.e".into(),
        offset_of!(kvm_sregs, u.e),
        size_of::<kvm_sregs_e>(),
    );
    field(
        m,
        "kvm_sregs.u.pad".into(),
        offset_of!(kvm_sregs, u.pad),
        1020,
    );
    fields!(m, "kvm_sregs.u.s", s, kvm_sregs_s {
        "sdr1" => sdr1, "ppc64" => ppc64, "ppc64.slb" => ppc64.slb,
        "ppc32" => ppc32, "ppc32.sr" => ppc32.sr, "ppc32.ibat" => ppc32.ibat,
        "ppc32.dbat" => ppc32.dbat,
    });
    let slb = offset_of!(kvm_sregs, u.s.ppc64.slb);
    for i in [0usize, 63] {
        let at = slb + i * size_of::<kvm_sregs_slb>();
        fields!(m, format!("kvm_sregs.u.s.ppc64.slb[{i}]"), at, kvm_sregs_slb {
            "slbe" => slbe, "slbv" => slbv,
        });
    }
    let e = offset_of!(kvm_sregs, u.e);
    field(
        m,
        "kvm_sregs.u.e.impl".into(),
        offset_of!(kvm_sregs, u.e.impl_),
        256,
    );
    field(
        m,
        "kvm_sregs.u.e.impl.pad".into(),
        offset_of!(kvm_sregs, u.e.impl_.pad),
        256,
    );
    fields!(m, "kvm_sregs.u.e.impl.fsl", offset_of!(kvm_sregs, u.e.impl_.fsl), kvm_sregs_fsl {
        "features" => features, "svr" => svr, "mcar" => mcar, "hid0" => hid0,
        "pid1" => pid1, "pid2" => pid2,
    });
    fields!(m, "kvm_sregs.u.e", e, kvm_sregs_e {
        "features" => features, "impl_id" => impl_id, "update_special" => update_special,
        "pir" => pir, "sprg8" => sprg8, "sprg9" => sprg9, "csrr0" => csrr0, "dsrr0" => dsrr0,
        "mcsrr0" => mcsrr0, "csrr1" => csrr1, "dsrr1" => dsrr1, "mcsrr1" => mcsrr1,
        "esr" => esr, "dear" => dear, "ivpr" => ivpr, "mcivpr" => mcivpr, "mcsr" => mcsr,
        "tsr" => tsr, "tcr" => tcr, "decar" => decar, "dec" => dec, "tb" => tb,
        "dbsr" => dbsr, "dbcr" => dbcr, "iac" => iac, "dac" => dac, "dvc" => dvc,
        "num_iac" => num_iac, "num_dac" => num_dac, "num_dvc" => num_dvc, "pad" => pad,
        "epr" => epr, "vrsave" => vrsave, "epcr" => epcr, "mas0" => mas0, "mas1" => mas1,
        "mas2" => mas2, "mas7_3" => mas7_3, "mas4" => mas4, "mas6" => mas6,
        "ivor_low" => ivor_low, "ivor_high" => ivor_high, "mmucfg" => mmucfg,
        "eptcfg" => eptcfg, "tlbcfg" => tlbcfg, "tlbps" => tlbps, "eplc" => eplc,
        "epsc" => epsc,
    });

    layout::<kvm_fpu>(m, "kvm_fpu");
    fields!(m, "kvm_fpu", 0, kvm_fpu { "fpr" => fpr });

    layout::<kvm_debug_exit_arch>(m, "kvm_debug_exit_arch");
    fields!(m, "kvm_debug_exit_arch", 0, kvm_debug_exit_arch {
        "address" => address, "status" => status, "reserved" => reserved,
    });
    layout::<kvm_guest_debug_arch>(m, "kvm_guest_debug_arch");
    fields!(m, "kvm_guest_debug_arch", 0, kvm_guest_debug_arch { "bp" => bp });
    for i in [0usize, 15] {
        let at = offset_of!(kvm_guest_debug_arch, bp) + i * size_of::<kvm_guest_debug_bp>();
        fields!(m, format!("kvm_guest_debug_arch.bp[{i}]"), at, kvm_guest_debug_bp {
            "addr" => addr, "type" => type_, "reserved" => reserved,
        });
    }
    layout::<kvm_guest_debug>(m, "kvm_guest_debug");
    fields!(m, "kvm_guest_debug", 0, kvm_guest_debug {
        "control" => control, "pad" => pad, "arch" => arch,
    });

    layout::<kvm_run>(m, "kvm_run");
    fields!(m, "kvm_run", 0, kvm_run {
        "request_interrupt_window" => request_interrupt_window,
        "immediate_exit" => immediate_exit, "padding1" => padding1,
        "exit_reason" => exit_reason,
        "ready_for_interrupt_injection" => ready_for_interrupt_injection,
        "if_flag" => if_flag, "flags" => flags, "cr8" => cr8, "apic_base" => apic_base,
        "kvm_valid_regs" => kvm_valid_regs, "kvm_dirty_regs" => kvm_dirty_regs, "s" => s,
    });
    field(
        m,
        "kvm_run.padding".into(),
        offset_of!(kvm_run, u.padding),
        256,
    );
    macro_rules! member {
        ($name:literal, $f:ident, $ty:ty { $($c:literal => $($p:ident).+),* $(,)? }) => {{
            let at = offset_of!(kvm_run, u.$f);
            field(m, concat!("kvm_run.", $name).into(), at, size_of::<$ty>());
            fields!(m, concat!("kvm_run.", $name), at, $ty { $($c => $($p).+),* });
        }};
    }
    member!("hw", hw, kvm_run_hw { "hardware_exit_reason" => hardware_exit_reason });
    member!("fail_entry", fail_entry, kvm_run_fail_entry {
        "hardware_entry_failure_reason" => hardware_entry_failure_reason, "cpu" => cpu,
    });
    member!("debug", debug, kvm_run_debug {
        "arch" => arch, "arch.address" => arch.address, "arch.status" => arch.status,
        "arch.reserved" => arch.reserved,
    });
    member!("mmio", mmio, kvm_run_mmio {
        "phys_addr" => phys_addr, "data" => data, "len" => len, "is_write" => is_write,
    });
    member!("dcr", dcr, kvm_run_dcr { "dcrn" => dcrn, "data" => data, "is_write" => is_write });
    member!("internal", internal, kvm_run_internal {
        "suberror" => suberror, "ndata" => ndata, "data" => data,
    });
    member!("osi", osi, kvm_run_osi { "gprs" => gprs });
    member!("papr_hcall", papr_hcall, kvm_run_papr_hcall {
        "nr" => nr, "ret" => ret, "args" => args,
    });
    member!("epr", epr, kvm_run_epr { "epr" => epr });
    member!("system_event", system_event, kvm_run_system_event {
        "type" => type_, "ndata" => ndata, "data" => data,
    });
    // `flags` is the first word of the anonymous union with `data`.
    field(
        m,
        "kvm_run.system_event.flags".into(),
        offset_of!(kvm_run, u.system_event.data),
        8,
    );

    macro_rules! plain {
        ($($ty:ident { $($c:literal => $f:ident),* $(,)? })*) => {$(
            layout::<$ty>(m, stringify!($ty));
            fields!(m, stringify!($ty), 0, $ty { $($c => $f),* });
        )*};
    }
    plain! {
        kvm_one_reg { "id" => id, "addr" => addr }
        kvm_enable_cap { "cap" => cap, "flags" => flags, "args" => args, "pad" => pad }
        kvm_create_device { "type" => type_, "fd" => fd, "flags" => flags }
        kvm_device_attr { "flags" => flags, "group" => group, "attr" => attr, "addr" => addr }
        kvm_irq_level { "irq" => irq, "level" => level }
        kvm_irqfd {
            "fd" => fd, "gsi" => gsi, "flags" => flags, "resamplefd" => resamplefd, "pad" => pad,
        }
        kvm_userspace_memory_region {
            "slot" => slot, "flags" => flags, "guest_phys_addr" => guest_phys_addr,
            "memory_size" => memory_size, "userspace_addr" => userspace_addr,
        }
        kvm_rtas_token_args { "name" => name, "token" => token }
        kvm_dirty_log { "slot" => slot, "padding1" => padding1, "dirty_bitmap" => dirty_bitmap }
        kvm_clear_dirty_log {
            "slot" => slot, "num_pages" => num_pages, "first_page" => first_page,
            "dirty_bitmap" => dirty_bitmap,
        }
        kvm_get_htab_fd {
            "flags" => flags, "start_index" => start_index, "reserved" => reserved,
        }
        kvm_get_htab_header { "index" => index, "n_valid" => n_valid, "n_invalid" => n_invalid }
    }
    dirty_log_facts(m);
    map
}

/// The dirty-log facts that are not this crate's own definitions: the
/// other member of the bitmap unions, `struct kvm_dirty_gfn` and the
/// dirty-log constants of `kvmkit_core`, which the portable dirty-log code
/// uses on every architecture, and the memory-slot flag that turns logging
/// on.
fn dirty_log_facts(m: &mut BTreeMap<String, u64>) {
    // `__u64 padding2` shares its 8 bytes with the bitmap pointer.
    for (ty, at) in [
        ("kvm_dirty_log", offset_of!(kvm_dirty_log, dirty_bitmap)),
        (
            "kvm_clear_dirty_log",
            offset_of!(kvm_clear_dirty_log, dirty_bitmap),
        ),
    ] {
        field(m, format!("{ty}.padding2"), at, 8);
    }
    layout::<DirtyGfn>(m, "kvm_dirty_gfn");
    fields!(m, "kvm_dirty_gfn", 0, DirtyGfn {
        "flags" => flags, "slot" => slot, "offset" => offset,
    });
    for (name, value) in [
        (
            "KVM_DIRTY_GFN_F_DIRTY",
            u64::from(kvmkit_core::DIRTY_GFN_F_DIRTY),
        ),
        (
            "KVM_DIRTY_GFN_F_RESET",
            u64::from(kvmkit_core::DIRTY_GFN_F_RESET),
        ),
        (
            "KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE",
            kvmkit_core::MANUAL_PROTECT_ENABLE,
        ),
        (
            "KVM_DIRTY_LOG_INITIALLY_SET",
            kvmkit_core::MANUAL_PROTECT_INITIALLY_SET,
        ),
        (
            "KVM_MEM_LOG_DIRTY_PAGES",
            u64::from(MemoryFlags::LOG_DIRTY_PAGES.bits()),
        ),
    ] {
        m.insert(name.to_string(), value);
    }
}

impl ZeroForFacts for kvm_run_debug {
    const ZERO_FOR_FACTS: Self = kvm_run_debug {
        arch: kvm_debug_exit_arch::ZERO_FOR_FACTS,
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn facts_cover_the_crate() {
        let f = uapi_facts();
        assert_eq!(f["KVM_GET_ONE_REG"], 0x8010_aeab);
        assert_eq!(f["KVM_REG_PPC_VSR(31)"], KVM_REG_PPC_VSR31);
        assert_eq!(f["kvm_sregs.u.e.impl.fsl.pid2.offset"], 8 + 24);
        assert_eq!(
            f["kvm_sregs.u.s.ppc64.slb[63].slbv.offset"],
            8 + 8 + 63 * 16 + 8
        );
        assert_eq!(f["kvm_run.system_event.flags.offset"], 40);
        assert_eq!(f["kvm_run.s.offset"], 304);
        assert_eq!(f["KVM_CAP_PPC_PAPR"], 68);
        assert!(f.keys().all(|k| !k.contains("_pad")));
        assert!(f.len() > 400, "{}", f.len());
        // The dirty log: PowerPC numbers, generic layouts, no ring.
        assert_eq!(f["KVM_GET_DIRTY_LOG"], 0x8010_ae42);
        assert_eq!(f["KVM_CLEAR_DIRTY_LOG"], 0xc018_aec0);
        assert_eq!(f["KVM_RESET_DIRTY_RINGS"], 0x2000_aec7);
        assert_eq!(f["kvm_dirty_log.size"], 16);
        assert_eq!(f["kvm_dirty_log.padding2.offset"], 8);
        assert_eq!(f["kvm_clear_dirty_log.dirty_bitmap.offset"], 16);
        assert_eq!(f["kvm_dirty_gfn.offset.offset"], 8);
        assert_eq!(f["KVM_EXIT_DIRTY_RING_FULL"], 31);
        assert_eq!(f["KVM_DIRTY_LOG_PAGE_OFFSET"], 0);
        assert_eq!(f["KVM_CAP_DIRTY_LOG_RING"], 192);
        // Snapshots: the hash page table stream and the XICS source bits.
        assert_eq!(f["KVM_PPC_GET_HTAB_FD"], 0x8020_aeaa);
        assert_eq!(f["kvm_get_htab_header.n_invalid.offset"], 6);
        assert_eq!(f["kvm_get_htab_fd.size"], 32);
        assert_eq!(f["KVM_XICS_QUEUED"], 1 << 44);
        assert_eq!(f["KVM_CAP_PPC_HTAB_FD"], 84);
        assert_eq!(f["KVM_REG_PPC_ICP_STATE"], KVM_REG_PPC_ICP_STATE);
    }
}
