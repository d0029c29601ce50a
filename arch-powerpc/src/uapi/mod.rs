//! The 64-bit PowerPC KVM UAPI: `#[repr(C)]` mirrors of the structs of
//! `asm/kvm.h` and `linux/kvm.h` (ppc64 build) this crate passes to the
//! kernel or decodes, and the constants it uses.
//!
//! Field names are the kernel's (`type` is spelled `type_`, `impl` `impl_`);
//! fields are documented by the header. Every size, alignment, field offset
//! and field size here, and every constant, is compared with the real
//! ppc64le headers by `tests/uapi.rs` through [`crate::uapi_facts`]. Sizes are
//! also pinned at compile time below each struct.
//!
//! Unions are only readable through safe accessors that rely on every value
//! of the enclosing struct being fully initialised (all constructors zero the
//! whole union first), so no safe code can read uninitialised bytes.

#![allow(non_camel_case_types, missing_docs)]

mod consts;
mod misc;
mod regs;
mod run;
mod sregs;

pub use consts::*;
pub use misc::{
    kvm_clear_dirty_log, kvm_create_device, kvm_device_attr, kvm_dirty_log, kvm_enable_cap,
    kvm_get_htab_fd, kvm_get_htab_header, kvm_irq_level, kvm_irqfd, kvm_one_reg,
    kvm_rtas_token_args, kvm_userspace_memory_region,
};
pub use regs::{
    kvm_debug_exit_arch, kvm_fpu, kvm_guest_debug, kvm_guest_debug_arch, kvm_guest_debug_bp,
    kvm_regs,
};
pub use run::{
    kvm_run, kvm_run_dcr, kvm_run_debug, kvm_run_epr, kvm_run_exit, kvm_run_fail_entry, kvm_run_hw,
    kvm_run_internal, kvm_run_mmio, kvm_run_osi, kvm_run_papr_hcall, kvm_run_system_event,
};
pub use sregs::{
    kvm_sregs, kvm_sregs_e, kvm_sregs_e_impl, kvm_sregs_fsl, kvm_sregs_ppc32, kvm_sregs_ppc64,
    kvm_sregs_s, kvm_sregs_slb, kvm_sregs_u,
};
