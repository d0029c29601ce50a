//! A QMP-compatible control socket: a subset of the QEMU Machine Protocol
//! with QEMU's JSON shapes and error classes, so that QMP clients work
//! unchanged.
//!
//! - [`protocol`](Splitter): framing, request checks, reply and event
//!   encoding;
//! - [`Args`]: argument checks with QEMU's messages;
//! - [`Machine`]: the seam to the VMM (pause, resume, status, power
//!   button, quit, vCPUs, memory, dirty log), implemented by the VMM and
//!   mocked by tests;
//! - [`Dispatcher`]: negotiation, the command table, the built-in commands;
//!   more can be [registered](Dispatcher::register);
//! - [`EventBus`] / [`Outbox`]: events to every negotiated client;
//! - [`DirtyRate`]: `calc-dirty-rate` on a background thread;
//! - [`QmpServer`]: the Unix socket, a reader and a writer thread per
//!   client;
//! - [`execute`]: the one-shot client behind `vmm-reference qmp`.
//!
//! ```
//! use kvmkit_vmm_reference::qmp::{Dispatcher, EventBus, Machine, Session};
//! # use kvmkit_vmm_reference::qmp::*;
//! # use std::sync::Arc;
//! # struct M;
//! # impl Machine for M {
//! #     fn run_state(&self) -> RunState { RunState::Running }
//! #     fn stop(&self) -> Result<(), MachineError> { Ok(()) }
//! #     fn cont(&self) -> Result<(), MachineError> { Ok(()) }
//! #     fn power_button(&self) -> Result<(), MachineError> { Ok(()) }
//! #     fn quit(&self) {}
//! #     fn vcpus(&self) -> Vec<VcpuInfo> { vec![] }
//! #     fn target(&self) -> &'static str { "x86_64" }
//! #     fn guest_memory(&self) -> Arc<vm_memory::GuestMemoryMmap> {
//! #         Arc::new(vm_memory::GuestMemoryMmap::from_ranges(&[(vm_memory::GuestAddress(0), 4096)]).unwrap())
//! #     }
//! #     fn start_dirty_count(&self, _: DirtyRateMode)
//! #         -> Result<Box<dyn DirtyPageCounter>, MachineError> { Err(MachineError("no".into())) }
//! # }
//! let d = Dispatcher::new(Arc::new(M), Arc::new(EventBus::new()));
//! let mut s = Session::new();
//! let r = d.handle_bytes(&mut s, br#"{"execute": "query-status", "id": 1}"#);
//! assert_eq!(r.response["error"]["class"], "CommandNotFound"); // not negotiated
//! d.handle_bytes(&mut s, br#"{"execute": "qmp_capabilities"}"#);
//! let r = d.handle_bytes(&mut s, br#"{"execute": "query-status", "id": 2}"#);
//! assert_eq!(r.response["return"]["status"], "running");
//! assert_eq!(r.response["id"], 2);
//! ```

mod args;
mod client;
mod commands;
mod dirty_rate;
mod error;
mod events;
mod machine;
mod migrate_watch;
mod protocol;
mod server;

pub use args::{Args, QapiEnum};
pub use client::{execute, parse_arguments, CLIENT_TIMEOUT};
pub use commands::{After, Context, Dispatcher, Handler, Outcome, Reply, Session, QEMU_VERSION};
pub use dirty_rate::{
    CalcRequest, DirtyRate, DirtyRateStatus, TimeUnit, DEFAULT_SAMPLE_PAGES, MAX_CALC_TIME_MS,
    MAX_SAMPLE_PAGES, MIN_CALC_TIME_MS, MIN_SAMPLE_PAGES,
};
pub use error::{Error, Result};
pub use events::{shutdown_reason, EventBus, Outbox, OUTBOX_CAPACITY};
pub use machine::{
    DirtyCount, DirtyPageCounter, DirtyRateMode, Machine, MachineError, RunState, VcpuInfo,
};
pub use migrate_watch::{migrate, migrate_with_progress, progress_line, MIGRATE_POLL_INTERVAL};
pub use protocol::{
    check_request, encode, event, failure, parse_json, success, timestamp, ErrorClass, Frame,
    QmpError, Rejected, Request, Splitter, MAX_MESSAGE_BYTES, MAX_NESTING,
};
pub use server::{QmpServer, MAX_CLIENTS, WRITE_TIMEOUT};
