#![doc = include_str!("../README.md")]

mod arch;
mod boot;
mod config;
mod debug;
mod dirty;
mod elf;
mod error;
mod exit;
mod facts;
mod fdt;
mod hcall;
mod hpt;
mod ioctls;
mod irq;
mod profile;
mod regs;
mod snapshot;
mod state;
mod sys;
pub mod uapi;

pub use arch::{Ppc64, PpcSystem, PpcVcpu, PpcVm};
pub use boot::{
    pseries_msr, write_rtas_blob, BootSetup, Endian, MSR_LE, MSR_ME, MSR_SF, RTAS_BLOB,
};
pub use config::{IrqchipKind, VcpuConfig, VmConfig, VmType, IRQ_BASE};
pub use debug::{GuestDebugBuilder, HwBreakpoint};
pub use elf::{load_elf, ElfError, ElfKernel};
pub use error::{Error, Result};
pub use exit::{
    debug_status, decode_exit, HcallOutput, NmiDisposition, PpcExit, RunWords,
    KVM_RUN_EXIT_UNION_OFFSET, KVM_RUN_MIN_LEN,
};
pub use facts::uapi_facts;
pub use fdt::{build_pseries_fdt, FdtConfig, RtasConfig, HYPERTAS_FUNCTIONS, XICS_PHANDLE};
pub use hcall::{
    HcallHandler, PaprIo, H_FUNCTION, H_GET_TERM_CHAR, H_HARDWARE, H_PARAMETER, H_PUT_TERM_CHAR,
    H_RTAS, H_SUCCESS, VTY_REG,
};
pub use hpt::{HashPageTable, HptError, Hpte, HPTE_BYTES, HPT_ORDER_MAX, HPT_ORDER_MIN};
pub use ioctls::*;
pub use irq::{irq_line_level, xics_source_reset_state, PpcIrqChip, XICS_FIRST_IRQ, XICS_NR_IRQS};
pub use profile::{one_reg_name, PpcAbiProfile, ProfileMismatch, PROFILE_VERSION};
pub use regs::{fpr, reg_size, snapshot_one_regs, vr, vsr};
pub use snapshot::{abi_profile, restore_vm_state, save_vm_state};
pub use state::{Omitted, PpcVcpuState, PpcVmState, StatePiece, XicsSource, STATE_VERSION};
