#![doc = include_str!("../README.md")]

mod arch;
mod boot;
pub mod caps;
mod config;
mod debug;
mod dirty;
mod error;
mod exit;
mod facts;
mod flic;
mod io;
mod profile;
mod sclp;
mod snapshot;
mod state;
pub mod sys;
pub mod uapi;

pub use arch::{S390System, S390Vcpu, S390Vm, S390x};
pub use boot::{
    is_linux_image, load_kernel_image, write_ipl_lowcore, write_linux_params, BootSetup,
    LinuxParams, COMMAND_LINE_ADDR, INITRD_DEFAULT_ADDR, INITRD_SIZE_ADDR, INITRD_START_ADDR,
    IPL_PSW_MASK, KERNEL_IMAGE_START, LC_IO_INT_PARM, LC_SUBCHANNEL_ID, LEGACY_COMMAND_LINE_SIZE,
    LINUX_MAGIC, LINUX_MAGIC_ADDR, LOWCORE_SIZE, MAX_COMMAND_LINE_SIZE_ADDR, PSW_MASK_SHORT_ADDR,
};
pub use config::{VcpuConfig, VcpuReset, VmConfig};
pub use debug::GuestDebug;
pub use error::{Error, Result};
pub use exit::{
    decode_exit, icpt, Instruction, RunRegs, S390Exit, ServiceCall, SieIntercept, EXIT_REASONS,
    IPA0_DIAG, IPA0_SIGP, IPA_SERVC, KVM_RUN_SIZE, PSW_MASK_PSTATE, PSW_MASK_WAIT,
};
pub use facts::uapi_facts;
pub use flic::{
    adapter_irq, routing_table, service_irq, AdapterRoute, Flic, FLIC_ADAPTERS, FLIC_GSIS,
    IO_INT_WORD_AI,
};
pub use io::S390Io;
pub use profile::{ProfileMismatch, S390AbiProfile, PROFILE_VERSION};
pub use sclp::{
    Sclp, ServiceCallResult, ServiceSignal, EVENT_BUFFER_HEADER_SIZE, SCCB_HEADER_SIZE, SCCB_SIZE,
    SCLP_CMDW_READ_SCP_INFO, SCLP_CMD_CODE_MASK, SCLP_CMD_READ_EVENT_DATA,
    SCLP_CMD_WRITE_EVENT_DATA, SCLP_CMD_WRITE_EVENT_MASK, SCLP_EVENT_ASCII_CONSOLE_DATA,
    SCLP_EVENT_BUFFER_ACCEPTED, SCLP_EVENT_MASK_MSG_ASCII, SCLP_RC_EVENT_BUFFER_SYNTAX_ERROR,
    SCLP_RC_INSUFFICIENT_SCCB_LENGTH, SCLP_RC_INVALID_FUNCTION, SCLP_RC_INVALID_MASK_LENGTH,
    SCLP_RC_INVALID_SCLP_COMMAND, SCLP_RC_NORMAL_COMPLETION, SCLP_RC_NO_EVENT_BUFFERS_STORED,
    SCLP_RC_SCCB_BOUNDARY_VIOLATION, SCLP_VARIABLE_LENGTH_RESPONSE,
};
pub use snapshot::{abi_profile, restore_vm_state, save_vm_state};
pub use state::{
    CpuModel, FloatingIrq, FloatingIrqKind, Omitted, S390VcpuState, S390VmState, StatePiece,
    TodClock, FLIC_IRQ_BYTES, SAVED_ONE_REGS, STATE_VERSION,
};
