//! The errors of interrupt controllers and routing tables.

/// Errors of interrupt controllers.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The controller has no such interrupt.
    #[error("interrupt {irq} is out of range: this controller has {count}")]
    OutOfRange {
        /// The interrupt number.
        irq: u32,
        /// How many it has.
        count: u32,
    },
    /// The operation does not exist on this architecture or controller.
    #[error("{operation} is not supported by the {controller} interrupt controller")]
    Unsupported {
        /// What was asked, e.g. `MSI`.
        operation: &'static str,
        /// The controller, e.g. `XICS`.
        controller: &'static str,
    },
    /// A route's GSI is at or above the table's limit.
    #[error("cannot route GSI {gsi}: GSIs must be below {limit}")]
    RouteGsiOutOfRange {
        /// The GSI.
        gsi: u32,
        /// The table's limit.
        limit: u32,
    },
    /// A GSI was routed to the same irqchip twice.
    #[error("cannot route GSI {gsi} to irqchip {chip} twice")]
    DuplicateRoute {
        /// The GSI.
        gsi: u32,
        /// The irqchip.
        chip: u32,
    },
    /// A route would share its GSI with an MSI route (KVM allows several
    /// routes for a GSI only to distinct irqchips).
    #[error("cannot add an {kind} route for GSI {gsi}: it already has a route")]
    ConflictingRoute {
        /// The GSI.
        gsi: u32,
        /// The kind of the refused route: `irqchip` or `MSI`.
        kind: &'static str,
    },
    /// A controller could not be created with the parameters given.
    #[error("cannot create the {controller}: {reason}")]
    CreateController {
        /// The controller, e.g. `userspace IOAPIC`.
        controller: &'static str,
        /// What was wrong.
        reason: String,
    },
    /// Installing a routing table failed.
    #[error("{ioctl} failed for a table of {entries} routes")]
    SetRouting {
        /// The ioctl, e.g. `KVM_SET_GSI_ROUTING`.
        ioctl: &'static str,
        /// How many routes the table had.
        entries: usize,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The kernel refused.
    #[error("{ioctl} failed for interrupt {irq}")]
    Ioctl {
        /// The ioctl.
        ioctl: &'static str,
        /// The interrupt number.
        irq: u32,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// The result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
