#![doc = include_str!("../README.md")]

mod arch;
mod capability;
mod dirty;
mod error;
mod exit;
mod kick;
mod profile;
mod scripted;
mod snapshot;
mod sys;
mod types;
mod vcpu;
mod vm;

pub use arch::{Arch, ArchExitOutcome, RunOutcome};
pub use capability::{Capability, CapabilityValue};
pub use dirty::{
    check_clear_bitmap, le_bitmap_to_native, DirtyBitmapError, DirtyGfn, DirtyLogArch, SlotSizes,
    DIRTY_GFN_F_DIRTY, DIRTY_GFN_F_RESET, DIRTY_LOG_PAGE_OFFSET, MANUAL_PROTECT_ENABLE,
    MANUAL_PROTECT_INITIALLY_SET,
};
pub use error::{BoxError, DecodeError, Error, Result};
pub use exit::{SystemEventKind, VcpuExit};
pub use kick::{kick_signal, Kicker};
pub use profile::{HeaderMismatch, ProfileHeader};
pub use scripted::ScriptedVcpu;
pub use snapshot::{Omitted, SnapshotArch};
pub use types::{MemoryFlags, SlotId, UserMemoryRegion, VcpuId};
pub use vcpu::{RunVcpu, Vcpu};
pub use vm::{Kvm, Vm};

/// Offset of `immediate_exit` (a `__u8`) in `struct kvm_run`.
///
/// The header of `struct kvm_run` is the same on every architecture
/// (`request_interrupt_window`, then `immediate_exit`), so the portable layer
/// may rely on this offset; each arch crate pins it against its own UAPI.
pub const KVM_RUN_IMMEDIATE_EXIT_OFFSET: usize = 1;

/// Offset of `exit_reason` (a `__u32`) in `struct kvm_run`, on every architecture.
pub const KVM_RUN_EXIT_REASON_OFFSET: usize = 8;
