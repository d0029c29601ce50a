//! Every UAPI fact this crate relies on, derived from its Rust definitions,
//! keyed by the kernel's names: what `tests/uapi.rs` compares with the
//! s390x headers and `examples/uapi_facts.rs` prints.

use crate::uapi::*;
use kvmkit_core::{
    DirtyGfn, MemoryFlags, DIRTY_GFN_F_DIRTY, DIRTY_GFN_F_RESET, MANUAL_PROTECT_ENABLE,
    MANUAL_PROTECT_INITIALLY_SET,
};
use std::collections::BTreeMap;
use std::mem::{align_of, offset_of, size_of};

/// The size of the field a projection names; the closure is never called.
fn field_size<T, F>(_project: fn(*const T) -> *const F) -> usize {
    size_of::<F>()
}

macro_rules! fsize {
    ($ty:ty, $($f:ident).+) => {
        field_size::<$ty, _>(|p| {
            // SAFETY: never called: the closure exists only so the compiler
            // names the field's type; no pointer is dereferenced.
            unsafe { std::ptr::addr_of!((*p).$($f).+) }
        })
    };
}

struct Facts(BTreeMap<String, u64>);

impl Facts {
    fn put(&mut self, key: String, v: usize) {
        self.0.insert(key, v as u64);
    }

    fn layout<T>(&mut self, ty: &str) {
        self.put(format!("{ty}.size"), size_of::<T>());
        self.put(format!("{ty}.align"), align_of::<T>());
    }

    fn field(&mut self, ty: &str, name: &str, offset: usize, size: usize) {
        self.put(format!("{ty}.{name}.offset"), offset);
        self.put(format!("{ty}.{name}.size"), size);
    }

    fn constant(&mut self, name: &str, v: u64) {
        self.0.insert(name.to_string(), v);
    }
}

/// `STRUCT { "c.name": rust.path, ... }`: the layout and every listed field.
macro_rules! facts {
    ($f:expr, $ty:ident { $($c:literal: $($p:ident).+),* $(,)? }) => {{
        $f.layout::<$ty>(stringify!($ty));
        $( $f.field(stringify!($ty), $c, offset_of!($ty, $($p).+), fsize!($ty, $($p).+)); )*
    }};
}

/// Constants by their own names.
macro_rules! consts {
    ($f:expr, $($name:ident),* $(,)?) => {
        $( $f.constant(stringify!($name), u64::from($name)); )*
    };
}

/// Every UAPI fact this crate relies on: each ioctl number, `KVM_EXIT_*`,
/// `KVM_CAP_*` and other macro value it uses (by the macro's name), and for
/// each `#[repr(C)]` struct `STRUCT.size`, `STRUCT.align`,
/// `STRUCT.FIELD.offset` and `STRUCT.FIELD.size` (members of `kvm_run`'s
/// exit union as `kvm_run.MEMBER.FIELD`, offsets from the start of
/// `kvm_run`). Values come from the Rust definitions (`offset_of!`,
/// `size_of`), so comparing them with the headers checks the definitions.
///
/// ```
/// let f = kvmkit_arch_s390x::uapi_facts();
/// assert_eq!(f["kvm_run.s390_sieic.ipa.offset"], 50);
/// assert_eq!(f["KVM_EXIT_S390_SIEIC"], 13);
/// assert_eq!(f["KVM_S390_SET_INITIAL_PSW"], 0x4010_ae96);
/// ```
pub fn uapi_facts() -> BTreeMap<String, u64> {
    let mut f = Facts(BTreeMap::new());
    facts!(f, kvm_regs { "gprs": gprs });
    facts!(f, kvm_sregs { "acrs": acrs, "crs": crs });
    facts!(f, kvm_fpu { "fpc": fpc, "fprs": fprs });
    facts!(f, kvm_one_reg { "id": id, "addr": addr });
    facts!(f, kvm_s390_psw { "mask": mask, "addr": addr });
    facts!(f, kvm_userspace_memory_region {
        "slot": slot,
        "flags": flags,
        "guest_phys_addr": guest_phys_addr,
        "memory_size": memory_size,
        "userspace_addr": userspace_addr,
    });
    facts!(f, kvm_debug_exit_arch { "addr": addr, "type": type_, "pad": pad });
    facts!(f, kvm_hw_breakpoint {
        "addr": addr,
        "phys_addr": phys_addr,
        "len": len,
        "type": type_,
        "pad": pad,
    });
    facts!(f, kvm_guest_debug_arch { "nr_hw_bp": nr_hw_bp, "pad": pad, "hw_bp": hw_bp });
    facts!(f, kvm_guest_debug { "control": control, "pad": pad, "arch": arch });
    facts!(f, kvm_enable_cap { "cap": cap, "flags": flags, "args": args, "pad": pad });
    facts!(f, kvm_create_device { "type": type_, "fd": fd, "flags": flags });
    facts!(f, kvm_device_attr { "flags": flags, "group": group, "attr": attr, "addr": addr });
    facts!(f, kvm_sync_regs {
        "prefix": prefix,
        "gprs": gprs,
        "acrs": acrs,
        "crs": crs,
        "todpr": todpr,
        "cputm": cputm,
        "ckc": ckc,
        "pp": pp,
        "gbea": gbea,
        "pft": pft,
        "pfs": pfs,
        "pfc": pfc,
        "vrs": vrs.vrs,
        "fprs": vrs.fprs,
        "reserved": reserved,
        "fpc": fpc,
        "padding1": padding1,
        "riccb": riccb,
        "diag318": diag318,
        "padding2": padding2,
        "sdnx": sdnx.sdnx,
        "reserved1": sdnx.fields.reserved1,
        "gscb": sdnx.fields.gscb,
        "etoken": sdnx.fields.etoken,
        "etoken_extension": sdnx.fields.etoken_extension,
    });
    facts!(f, kvm_run {
        "request_interrupt_window": request_interrupt_window,
        "immediate_exit": immediate_exit,
        "padding1": padding1,
        "exit_reason": exit_reason,
        "ready_for_interrupt_injection": ready_for_interrupt_injection,
        "if_flag": if_flag,
        "flags": flags,
        "cr8": cr8,
        "apic_base": apic_base,
        "psw_mask": psw_mask,
        "psw_addr": psw_addr,
        "hw": exit.hw,
        "hw.hardware_exit_reason": exit.hw.hardware_exit_reason,
        "fail_entry": exit.fail_entry,
        "fail_entry.hardware_entry_failure_reason": exit.fail_entry.hardware_entry_failure_reason,
        "fail_entry.cpu": exit.fail_entry.cpu,
        "debug": exit.debug,
        "debug.arch": exit.debug.arch,
        "debug.arch.addr": exit.debug.arch.addr,
        "debug.arch.type": exit.debug.arch.type_,
        "debug.arch.pad": exit.debug.arch.pad,
        "mmio": exit.mmio,
        "mmio.phys_addr": exit.mmio.phys_addr,
        "mmio.data": exit.mmio.data,
        "mmio.len": exit.mmio.len,
        "mmio.is_write": exit.mmio.is_write,
        "s390_sieic": exit.s390_sieic,
        "s390_sieic.icptcode": exit.s390_sieic.icptcode,
        "s390_sieic.ipa": exit.s390_sieic.ipa,
        "s390_sieic.ipb": exit.s390_sieic.ipb,
        "s390_reset_flags": exit.s390_reset_flags,
        "s390_ucontrol": exit.s390_ucontrol,
        "s390_ucontrol.trans_exc_code": exit.s390_ucontrol.trans_exc_code,
        "s390_ucontrol.pgm_code": exit.s390_ucontrol.pgm_code,
        "internal": exit.internal,
        "internal.suberror": exit.internal.suberror,
        "internal.ndata": exit.internal.ndata,
        "internal.data": exit.internal.data,
        "s390_tsch": exit.s390_tsch,
        "s390_tsch.subchannel_id": exit.s390_tsch.subchannel_id,
        "s390_tsch.subchannel_nr": exit.s390_tsch.subchannel_nr,
        "s390_tsch.io_int_parm": exit.s390_tsch.io_int_parm,
        "s390_tsch.io_int_word": exit.s390_tsch.io_int_word,
        "s390_tsch.ipb": exit.s390_tsch.ipb,
        "s390_tsch.dequeued": exit.s390_tsch.dequeued,
        "system_event": exit.system_event,
        "system_event.type": exit.system_event.type_,
        "system_event.ndata": exit.system_event.ndata,
        "system_event.flags": exit.system_event.u.flags,
        "system_event.data": exit.system_event.u.data,
        "s390_stsi": exit.s390_stsi,
        "s390_stsi.addr": exit.s390_stsi.addr,
        "s390_stsi.ar": exit.s390_stsi.ar,
        "s390_stsi.reserved": exit.s390_stsi.reserved,
        "s390_stsi.fc": exit.s390_stsi.fc,
        "s390_stsi.sel1": exit.s390_stsi.sel1,
        "s390_stsi.sel2": exit.s390_stsi.sel2,
        "padding": exit.padding,
        "kvm_valid_regs": kvm_valid_regs,
        "kvm_dirty_regs": kvm_dirty_regs,
        "s": s,
        "s.regs": s.regs,
        "s.padding": s.padding,
    });
    facts!(f, kvm_s390_io_info {
        "subchannel_id": subchannel_id,
        "subchannel_nr": subchannel_nr,
        "io_int_parm": io_int_parm,
        "io_int_word": io_int_word,
    });
    facts!(f, kvm_s390_ext_info { "ext_params": ext_params, "pad": pad, "ext_params2": ext_params2 });
    facts!(f, kvm_s390_pgm_info {
        "trans_exc_code": trans_exc_code,
        "mon_code": mon_code,
        "per_address": per_address,
        "data_exc_code": data_exc_code,
        "code": code,
        "mon_class_nr": mon_class_nr,
        "per_code": per_code,
        "per_atmid": per_atmid,
        "exc_access_id": exc_access_id,
        "per_access_id": per_access_id,
        "op_access_id": op_access_id,
        "flags": flags,
        "pad": pad,
    });
    facts!(f, kvm_s390_irq {
        "type": type_,
        "u": u,
        "u.io": u.io,
        "u.ext": u.ext,
        "u.pgm": u.pgm,
        "u.reserved": u.reserved,
    });
    facts!(f, kvm_s390_io_adapter {
        "id": id,
        "isc": isc,
        "maskable": maskable,
        "swap": swap,
        "flags": flags,
    });
    facts!(f, kvm_irqfd {
        "fd": fd,
        "gsi": gsi,
        "flags": flags,
        "resamplefd": resamplefd,
        "pad": pad,
    });
    facts!(f, kvm_irq_routing_s390_adapter {
        "ind_addr": ind_addr,
        "summary_addr": summary_addr,
        "ind_offset": ind_offset,
        "summary_offset": summary_offset,
        "adapter_id": adapter_id,
    });
    facts!(f, kvm_irq_routing_entry {
        "gsi": gsi,
        "type": type_,
        "flags": flags,
        "pad": pad,
        "u": u,
        "u.adapter": u.adapter,
        "u.pad": u.pad,
    });
    facts!(f, kvm_irq_routing { "nr": nr, "flags": flags });
    // A flexible array member has an offset but no size in C.
    f.put(
        "kvm_irq_routing.entries.offset".into(),
        offset_of!(kvm_irq_routing, entries),
    );
    facts!(f, kvm_dirty_log {
        "slot": slot,
        "padding1": padding1,
        "dirty_bitmap": dirty_bitmap,
    });
    facts!(f, kvm_clear_dirty_log {
        "slot": slot,
        "num_pages": num_pages,
        "first_page": first_page,
        "dirty_bitmap": dirty_bitmap,
    });
    dirty_log_facts(&mut f);
    facts!(f, kvm_s390_vm_tod_clock { "epoch_idx": epoch_idx, "tod": tod });
    facts!(f, kvm_s390_vm_cpu_processor {
        "cpuid": cpuid,
        "ibc": ibc,
        "pad": pad,
        "fac_list": fac_list,
    });
    facts!(f, kvm_s390_vm_cpu_feat { "feat": feat });

    for (name, nr) in crate::sys::ioctl_numbers() {
        f.constant(name, nr);
    }
    for (name, v) in crate::EXIT_REASONS {
        f.constant(name, u64::from(*v));
    }
    for cap in crate::caps::all() {
        f.constant(cap.name(), u64::from(cap.number()));
    }
    for (name, id) in crate::SAVED_ONE_REGS {
        f.constant(name, id);
    }
    consts!(
        f,
        KVM_API_VERSION,
        KVM_VM_S390_UCONTROL,
        SYNC_REGS_SIZE_BYTES,
        KVM_S390_RESET_POR,
        KVM_S390_RESET_CLEAR,
        KVM_S390_RESET_SUBSYSTEM,
        KVM_S390_RESET_CPU_INIT,
        KVM_S390_RESET_IPL,
        KVM_SYSTEM_EVENT_SHUTDOWN,
        KVM_SYSTEM_EVENT_RESET,
        KVM_SYSTEM_EVENT_CRASH,
        KVM_SYNC_PREFIX,
        KVM_SYNC_GPRS,
        KVM_SYNC_ACRS,
        KVM_SYNC_CRS,
        KVM_SYNC_ARCH0,
        KVM_SYNC_PFAULT,
        KVM_SYNC_VRS,
        KVM_SYNC_RICCB,
        KVM_SYNC_FPRS,
        KVM_SYNC_GSCB,
        KVM_SYNC_BPBC,
        KVM_SYNC_ETOKEN,
        KVM_SYNC_DIAG318,
        KVM_REG_S390,
        KVM_REG_SIZE_SHIFT,
        KVM_REG_SIZE_MASK,
        KVM_REG_SIZE_U32,
        KVM_REG_SIZE_U64,
        KVM_GUESTDBG_ENABLE,
        KVM_GUESTDBG_SINGLESTEP,
        KVM_GUESTDBG_USE_HW_BP,
        KVM_HW_BP,
        KVM_HW_WP_WRITE,
        KVM_SINGLESTEP,
        KVM_S390_PROGRAM_INT,
        KVM_S390_INT_SERVICE,
        KVM_S390_INT_IO_MIN,
        KVM_S390_INT_IO_MAX,
        KVM_S390_INT_IO_AI_MASK,
        KVM_DEV_TYPE_FLIC,
        KVM_DEV_FLIC_GET_ALL_IRQS,
        KVM_DEV_FLIC_ENQUEUE,
        KVM_DEV_FLIC_CLEAR_IRQS,
        KVM_DEV_FLIC_ADAPTER_REGISTER,
        KVM_S390_FLIC_MAX_BUFFER,
        KVM_IRQFD_FLAG_DEASSIGN,
        KVM_IRQ_ROUTING_S390_ADAPTER,
        KVM_DIRTY_LOG_PAGE_OFFSET,
        KVM_REG_S390_EPOCHDIFF,
        KVM_S390_VM_TOD,
        KVM_S390_VM_CPU_MODEL,
        KVM_S390_VM_TOD_LOW,
        KVM_S390_VM_TOD_HIGH,
        KVM_S390_VM_TOD_EXT,
        KVM_S390_VM_CPU_PROCESSOR,
        KVM_S390_VM_CPU_PROCESSOR_FEAT,
        KVM_S390_VM_CPU_FEAT_NR_BITS,
    );
    f.0
}

/// The dirty-log facts that are not this crate's own definitions: the
/// other member of the bitmap unions, `struct kvm_dirty_gfn` and the
/// dirty-log constants of `kvmkit_core`, which the portable dirty-log code
/// uses on every architecture, and the memory-slot flag that turns logging
/// on.
fn dirty_log_facts(f: &mut Facts) {
    // `__u64 padding2` shares its 8 bytes with the bitmap pointer.
    let at = offset_of!(kvm_dirty_log, dirty_bitmap);
    f.field("kvm_dirty_log", "padding2", at, 8);
    let at = offset_of!(kvm_clear_dirty_log, dirty_bitmap);
    f.field("kvm_clear_dirty_log", "padding2", at, 8);
    f.layout::<DirtyGfn>("kvm_dirty_gfn");
    let gfn = "kvm_dirty_gfn";
    f.field(
        gfn,
        "flags",
        offset_of!(DirtyGfn, flags),
        fsize!(DirtyGfn, flags),
    );
    f.field(
        gfn,
        "slot",
        offset_of!(DirtyGfn, slot),
        fsize!(DirtyGfn, slot),
    );
    f.field(
        gfn,
        "offset",
        offset_of!(DirtyGfn, offset),
        fsize!(DirtyGfn, offset),
    );
    let core = [
        ("KVM_DIRTY_GFN_F_DIRTY", u64::from(DIRTY_GFN_F_DIRTY)),
        ("KVM_DIRTY_GFN_F_RESET", u64::from(DIRTY_GFN_F_RESET)),
        ("KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE", MANUAL_PROTECT_ENABLE),
        ("KVM_DIRTY_LOG_INITIALLY_SET", MANUAL_PROTECT_INITIALLY_SET),
        (
            "KVM_MEM_LOG_DIRTY_PAGES",
            u64::from(MemoryFlags::LOG_DIRTY_PAGES.bits()),
        ),
    ];
    for (name, v) in core {
        f.constant(name, v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn facts_cover_structs_fields_and_constants() {
        let f = uapi_facts();
        assert_eq!(f["kvm_run.size"], 2368);
        assert_eq!(f["kvm_run.psw_addr.offset"], 40);
        assert_eq!(f["kvm_run.s.regs.offset"], 320);
        assert_eq!(f["kvm_sync_regs.gscb.offset"], 1744);
        assert_eq!(f["kvm_sync_regs.vrs.size"], 512);
        assert_eq!(f["kvm_run.system_event.flags.offset"], 56);
        assert_eq!(f["kvm_s390_irq.u.size"], 64);
        assert_eq!(f["kvm_irq_routing.entries.offset"], 8);
        assert!(!f.contains_key("kvm_irq_routing.entries.size"));
        assert_eq!(f["KVM_CAP_S390_USER_SIGP"], 106);
        assert_eq!(f["KVM_REG_S390_TODPR"], 0x5020_0000_0000_0001);
        assert_eq!(f["KVM_DEV_TYPE_FLIC"], 6);
        assert!(f.len() > 300, "{}", f.len());
        // The dirty log: generic numbers and layouts, no ring.
        assert_eq!(f["KVM_GET_DIRTY_LOG"], 0x4010_ae42);
        assert_eq!(f["KVM_CLEAR_DIRTY_LOG"], 0xc018_aec0);
        assert_eq!(f["KVM_RESET_DIRTY_RINGS"], 0xaec7);
        assert_eq!(f["kvm_dirty_log.padding2.offset"], 8);
        assert_eq!(f["kvm_clear_dirty_log.size"], 24);
        assert_eq!(f["kvm_dirty_gfn.size"], 16);
        assert_eq!(f["KVM_EXIT_DIRTY_RING_FULL"], 31);
        assert_eq!(f["KVM_DIRTY_LOG_PAGE_OFFSET"], 0);
        assert_eq!(f["KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2"], 168);
        // Snapshots: VM attributes, their structs, the FLIC's records.
        assert_eq!(f["KVM_GET_DEVICE_ATTR"], 0x4018_aee2);
        assert_eq!(f["kvm_s390_vm_tod_clock.tod.offset"], 8);
        assert_eq!(f["kvm_s390_vm_cpu_processor.fac_list.offset"], 16);
        assert_eq!(f["kvm_s390_vm_cpu_processor.size"], 2064);
        assert_eq!(f["kvm_s390_vm_cpu_feat.size"], 128);
        assert_eq!(f["KVM_S390_VM_TOD_EXT"], 2);
        assert_eq!(f["KVM_DEV_FLIC_GET_ALL_IRQS"], 1);
        assert_eq!(f["KVM_REG_S390_EPOCHDIFF"], 0x5030_0000_0000_0002);
    }
}
