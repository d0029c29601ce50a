#![doc = include_str!("../README.md")]

mod arch;
mod boot;
mod config;
mod cpuid;
mod debug;
mod error;
mod exit;
mod msrs;
mod pio;
mod state;
mod sys;

pub use arch::{X86System, X86Vcpu, X86Vm, X86_64};
pub use boot::{BootSetup, GdtLayout, BOOT_GDT_ADDR, BOOT_PAGE_TABLES_ADDR, BOOT_PAGE_TABLES_SIZE};
pub use config::{IrqchipMode, VcpuConfig, VmConfig};
pub use cpuid::{filter_cpuid, CpuidPolicy};
pub use debug::GuestDebugBuilder;
pub use error::{Error, Result};
pub use exit::{decode_exit, IoDirection, X86Exit, EXIT_REASONS};
pub use msrs::{boot_msr_entries, msr_one_reg_id};
pub use pio::PortIoBus;
pub use state::X86VcpuState;
pub use sys::{ioctl_numbers, KVM_GET_ONE_REG, KVM_RUN, KVM_SET_ONE_REG};

/// kvm-bindings, re-exported for the register types of this crate's `Arch`.
pub use kvm_bindings;
