#![doc = include_str!("../README.md")]

mod controller;
mod error;
mod routing;

pub use controller::{check_range, InterruptController, Msi};
pub use error::{Error, Result};
pub use routing::{GsiRouting, RouteEntry, RouteTarget, RoutingTable};
