#![doc = include_str!("../README.md")]

mod cli;
mod config;
mod core;
pub mod devices;
mod error;
pub mod kernel;
mod machine;
mod migration;
pub mod qmp;
mod state;
pub mod terminal;
mod vmm;

pub use crate::core::{
    run_machine, run_machine_with, ControlRequest, MachineControl, MachineEvent, MachineObserver,
    MachineStatus, RunStatus, ShutdownCause, VmmExit, PAUSE_TIMEOUT,
};
pub use cli::{parse_args, parse_command_line, Cli, Invocation, QmpCommand};
pub use config::{
    DirtyLogChoice, DiskConfig, IrqchipChoice, KernelSource, NetConfig, SerialConfig, VmmConfig,
    DEFAULT_CMDLINE, DEFAULT_MEMORY_MIB,
};
pub use error::{Error, Result};
pub use migration::{Incoming, MigrationUri};
pub use vmm::{Vmm, MAX_VCPUS, MIN_MEMORY_MIB, PC_NAME};

/// The architecture this VMM runs on: the one place that names the host.
#[cfg(target_arch = "x86_64")]
pub type HostArch = kvmkit_arch_x86_64::X86_64;

#[cfg(not(target_arch = "x86_64"))]
compile_error!("kvmkit's reference VMM composes x86_64 only for now; powerpc and s390x follow");
