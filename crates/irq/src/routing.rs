//! GSI routing tables: where each global system interrupt goes.

use crate::{Error, Msi, Result};

/// Where a route delivers its GSI.
///
/// The variants are the kinds of route KVM knows (`KVM_IRQ_ROUTING_*`);
/// arch crates translate them into their kernel's encoding. More kinds (the
/// s390x adapter route, Hyper-V SynIC, Xen event channels) can come as new
/// variants.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RouteTarget {
    /// A pin of an interrupt controller emulated in the kernel
    /// (`KVM_IRQ_ROUTING_IRQCHIP`). `chip` is the arch's chip number (x86:
    /// 0 master PIC, 1 slave PIC, 2 IOAPIC).
    Irqchip {
        /// The chip.
        chip: u32,
        /// The pin on the chip.
        pin: u32,
    },
    /// A message-signalled interrupt (`KVM_IRQ_ROUTING_MSI`): raising the
    /// GSI (for example by writing an irqfd) sends this MSI.
    Msi(Msi),
}

/// One route: raising `gsi` delivers to `target`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RouteEntry {
    /// The global system interrupt number.
    pub gsi: u32,
    /// Where it goes.
    pub target: RouteTarget,
}

impl RouteEntry {
    /// A route from `gsi` to pin `pin` of chip `chip`.
    ///
    /// ```
    /// use kvmkit_irq::{RouteEntry, RouteTarget};
    /// let e = RouteEntry::irqchip(9, 2, 9);
    /// assert_eq!(e.target, RouteTarget::Irqchip { chip: 2, pin: 9 });
    /// ```
    pub fn irqchip(gsi: u32, chip: u32, pin: u32) -> Self {
        RouteEntry {
            gsi,
            target: RouteTarget::Irqchip { chip, pin },
        }
    }

    /// A route from `gsi` to an MSI.
    ///
    /// ```
    /// use kvmkit_irq::{Msi, RouteEntry, RouteTarget};
    /// let msi = Msi { address: 0xfee0_0000, data: 0x30, devid: None };
    /// assert_eq!(RouteEntry::msi(24, msi).target, RouteTarget::Msi(msi));
    /// ```
    pub fn msi(gsi: u32, msi: Msi) -> Self {
        RouteEntry {
            gsi,
            target: RouteTarget::Msi(msi),
        }
    }

    /// True when this entry and `other` may not both be in a table, by
    /// KVM's rules: a GSI goes to each irqchip at most once, and a GSI with
    /// a non-irqchip route has no other route.
    fn conflicts_with(&self, other: &RouteEntry) -> bool {
        if self.gsi != other.gsi {
            return false;
        }
        match (self.target, other.target) {
            (RouteTarget::Irqchip { chip: a, .. }, RouteTarget::Irqchip { chip: b, .. }) => a == b,
            _ => true,
        }
    }
}

/// A GSI routing table, validated as KVM validates `KVM_SET_GSI_ROUTING`:
/// every GSI below [`RoutingTable::limit`], each GSI routed to a given
/// irqchip at most once, and a GSI with an MSI route has no other route.
///
/// Entries are kept sorted by GSI (stable for entries of the same GSI), so
/// iteration order is deterministic. A controller installs the whole table
/// at once with [`crate::GsiRouting::set_routing`].
///
/// ```
/// use kvmkit_irq::{Msi, RouteEntry, RoutingTable};
///
/// let mut t = RoutingTable::new();
/// t.add(RouteEntry::irqchip(4, 0, 4))?; // master PIC pin 4
/// t.add(RouteEntry::irqchip(4, 2, 4))?; // and IOAPIC pin 4
/// assert!(t.add(RouteEntry::irqchip(4, 2, 5)).is_err()); // IOAPIC twice
/// let msi = Msi { address: 0xfee0_0000, data: 0x41, devid: None };
/// t.add(RouteEntry::msi(24, msi))?;
/// assert_eq!(t.len(), 3);
/// assert_eq!(t.routes(4).count(), 2);
/// t.replace(RouteEntry::msi(4, msi))?; // GSI 4 now only sends the MSI
/// assert_eq!(t.routes(4).count(), 1);
/// assert_eq!(t.remove(4), 1);
/// assert_eq!(t.iter().map(|e| e.gsi).collect::<Vec<_>>(), [24]);
/// # Ok::<(), kvmkit_irq::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoutingTable {
    limit: u32,
    entries: Vec<RouteEntry>,
}

impl Default for RoutingTable {
    fn default() -> Self {
        RoutingTable::new()
    }
}

impl RoutingTable {
    /// KVM's limit: GSIs are below `KVM_MAX_IRQ_ROUTES` (4096).
    pub const DEFAULT_LIMIT: u32 = 4096;

    /// An empty table for GSIs below [`RoutingTable::DEFAULT_LIMIT`].
    ///
    /// ```
    /// assert!(kvmkit_irq::RoutingTable::new().is_empty());
    /// ```
    pub fn new() -> Self {
        RoutingTable::with_limit(RoutingTable::DEFAULT_LIMIT)
    }

    /// An empty table for GSIs below `limit`.
    ///
    /// ```
    /// use kvmkit_irq::{RouteEntry, RoutingTable};
    /// let mut t = RoutingTable::with_limit(24);
    /// assert_eq!(t.limit(), 24);
    /// assert_eq!(t.add(RouteEntry::irqchip(24, 2, 0)).unwrap_err().to_string(),
    ///            "cannot route GSI 24: GSIs must be below 24");
    /// ```
    pub fn with_limit(limit: u32) -> Self {
        RoutingTable {
            limit,
            entries: Vec::new(),
        }
    }

    /// GSIs must be below this.
    ///
    /// ```
    /// assert_eq!(kvmkit_irq::RoutingTable::new().limit(), 4096);
    /// ```
    pub fn limit(&self) -> u32 {
        self.limit
    }

    /// How many entries the table has.
    ///
    /// ```
    /// assert_eq!(kvmkit_irq::RoutingTable::new().len(), 0);
    /// ```
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when the table has no entries.
    ///
    /// ```
    /// assert!(kvmkit_irq::RoutingTable::default().is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn check_gsi(&self, gsi: u32) -> Result<()> {
        if gsi < self.limit {
            Ok(())
        } else {
            Err(Error::RouteGsiOutOfRange {
                gsi,
                limit: self.limit,
            })
        }
    }

    fn insert(&mut self, entry: RouteEntry) {
        let at = self.entries.partition_point(|e| e.gsi <= entry.gsi);
        self.entries.insert(at, entry);
    }

    /// Adds a route; refuses a GSI at or above the limit and a route that
    /// conflicts with one already there (the same irqchip twice for a GSI,
    /// or an MSI route next to any other route of its GSI).
    ///
    /// ```
    /// use kvmkit_irq::{Msi, RouteEntry, RoutingTable};
    /// let mut t = RoutingTable::new();
    /// t.add(RouteEntry::irqchip(0, 2, 2)).unwrap();
    /// let e = t.add(RouteEntry::msi(0, Msi::default())).unwrap_err();
    /// assert_eq!(e.to_string(), "cannot add an MSI route for GSI 0: it already has a route");
    /// ```
    pub fn add(&mut self, entry: RouteEntry) -> Result<()> {
        self.check_gsi(entry.gsi)?;
        if let Some(old) = self.entries.iter().find(|e| e.conflicts_with(&entry)) {
            return Err(match (entry.target, old.target) {
                (RouteTarget::Irqchip { chip, .. }, RouteTarget::Irqchip { .. }) => {
                    Error::DuplicateRoute {
                        gsi: entry.gsi,
                        chip,
                    }
                }
                (RouteTarget::Irqchip { .. }, _) => Error::ConflictingRoute {
                    gsi: entry.gsi,
                    kind: "irqchip",
                },
                (RouteTarget::Msi(_), _) => Error::ConflictingRoute {
                    gsi: entry.gsi,
                    kind: "MSI",
                },
            });
        }
        self.insert(entry);
        Ok(())
    }

    /// Adds a route after removing those of its GSI it conflicts with: an
    /// irqchip route replaces the GSI's route to the same chip (and an MSI
    /// route of the GSI); an MSI route replaces every route of its GSI.
    ///
    /// ```
    /// use kvmkit_irq::{RouteEntry, RouteTarget, RoutingTable};
    /// let mut t = RoutingTable::new();
    /// t.add(RouteEntry::irqchip(9, 0, 1))?;
    /// t.add(RouteEntry::irqchip(9, 2, 9))?;
    /// t.replace(RouteEntry::irqchip(9, 2, 10))?;
    /// let pins: Vec<_> = t.routes(9).map(|e| e.target).collect();
    /// assert_eq!(pins, [RouteTarget::Irqchip { chip: 0, pin: 1 },
    ///                   RouteTarget::Irqchip { chip: 2, pin: 10 }]);
    /// # Ok::<(), kvmkit_irq::Error>(())
    /// ```
    pub fn replace(&mut self, entry: RouteEntry) -> Result<()> {
        self.check_gsi(entry.gsi)?;
        self.entries.retain(|e| !e.conflicts_with(&entry));
        self.insert(entry);
        Ok(())
    }

    /// Removes every route of `gsi`; returns how many there were.
    ///
    /// ```
    /// use kvmkit_irq::{RouteEntry, RoutingTable};
    /// let mut t = RoutingTable::new();
    /// t.add(RouteEntry::irqchip(3, 2, 3)).unwrap();
    /// assert_eq!(t.remove(3), 1);
    /// assert_eq!(t.remove(3), 0);
    /// ```
    pub fn remove(&mut self, gsi: u32) -> usize {
        let before = self.entries.len();
        self.entries.retain(|e| e.gsi != gsi);
        before - self.entries.len()
    }

    /// The routes of `gsi`.
    ///
    /// ```
    /// use kvmkit_irq::{RouteEntry, RoutingTable};
    /// let mut t = RoutingTable::new();
    /// t.add(RouteEntry::irqchip(3, 2, 3)).unwrap();
    /// assert_eq!(t.routes(3).next(), Some(&RouteEntry::irqchip(3, 2, 3)));
    /// assert_eq!(t.routes(4).next(), None);
    /// ```
    pub fn routes(&self, gsi: u32) -> impl Iterator<Item = &RouteEntry> + '_ {
        let start = self.entries.partition_point(|e| e.gsi < gsi);
        self.entries[start..]
            .iter()
            .take_while(move |e| e.gsi == gsi)
    }

    /// Every entry, by GSI.
    ///
    /// ```
    /// use kvmkit_irq::{RouteEntry, RoutingTable};
    /// let mut t = RoutingTable::new();
    /// t.add(RouteEntry::irqchip(5, 2, 5)).unwrap();
    /// t.add(RouteEntry::irqchip(1, 2, 1)).unwrap();
    /// let gsis: Vec<u32> = t.iter().map(|e| e.gsi).collect();
    /// assert_eq!(gsis, [1, 5]);
    /// ```
    pub fn iter(&self) -> std::slice::Iter<'_, RouteEntry> {
        self.entries.iter()
    }
}

impl<'a> IntoIterator for &'a RoutingTable {
    type Item = &'a RouteEntry;
    type IntoIter = std::slice::Iter<'a, RouteEntry>;

    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

/// An interrupt controller whose GSI routing the VMM programs (crosvm-style
/// extension of [`crate::InterruptController`]: controllers without GSI
/// routing simply do not implement it).
///
/// ```
/// use kvmkit_irq::{GsiRouting, RoutingTable, Result};
///
/// /// Remembers the last table, as a test double would.
/// struct Recorder(std::sync::Mutex<RoutingTable>);
/// impl GsiRouting for Recorder {
///     fn set_routing(&self, table: &RoutingTable) -> Result<()> {
///         *self.0.lock().unwrap() = table.clone();
///         Ok(())
///     }
/// }
/// let r = Recorder(Default::default());
/// r.set_routing(&RoutingTable::new())?;
/// # Ok::<(), kvmkit_irq::Error>(())
/// ```
pub trait GsiRouting: Send + Sync {
    /// Replaces the controller's whole routing table (`KVM_SET_GSI_ROUTING`).
    fn set_routing(&self, table: &RoutingTable) -> Result<()>;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msi(data: u32) -> Msi {
        Msi {
            address: 0xfee0_0000,
            data,
            devid: None,
        }
    }

    #[test]
    fn irqchip_routes_per_chip() {
        let mut t = RoutingTable::new();
        t.add(RouteEntry::irqchip(1, 0, 1)).unwrap();
        t.add(RouteEntry::irqchip(1, 2, 1)).unwrap();
        let e = t.add(RouteEntry::irqchip(1, 0, 3)).unwrap_err();
        assert!(
            matches!(e, Error::DuplicateRoute { gsi: 1, chip: 0 }),
            "{e}"
        );
        assert_eq!(e.to_string(), "cannot route GSI 1 to irqchip 0 twice");
        let e = t.add(RouteEntry::msi(1, msi(0x30))).unwrap_err();
        assert!(matches!(
            e,
            Error::ConflictingRoute {
                gsi: 1,
                kind: "MSI"
            }
        ));
        assert_eq!(t.len(), 2);
    }

    #[test]
    fn msi_routes_are_alone() {
        let mut t = RoutingTable::new();
        t.add(RouteEntry::msi(30, msi(0x30))).unwrap();
        let e = t.add(RouteEntry::irqchip(30, 2, 3)).unwrap_err();
        assert_eq!(
            e.to_string(),
            "cannot add an irqchip route for GSI 30: it already has a route"
        );
        assert!(t.add(RouteEntry::msi(30, msi(0x31))).is_err());
        t.replace(RouteEntry::msi(30, msi(0x31))).unwrap();
        assert_eq!(
            t.routes(30).map(|e| e.target).collect::<Vec<_>>(),
            [RouteTarget::Msi(msi(0x31))]
        );
        t.replace(RouteEntry::irqchip(30, 2, 7)).unwrap();
        assert_eq!(t.routes(30).count(), 1);
        t.replace(RouteEntry::irqchip(30, 0, 7)).unwrap();
        assert_eq!(t.routes(30).count(), 2);
    }

    #[test]
    fn limits_are_checked_by_add_and_replace() {
        let mut t = RoutingTable::with_limit(8);
        assert!(t.add(RouteEntry::irqchip(7, 2, 7)).is_ok());
        let e = t.replace(RouteEntry::msi(8, msi(1))).unwrap_err();
        assert!(matches!(e, Error::RouteGsiOutOfRange { gsi: 8, limit: 8 }));
        assert!(RoutingTable::new()
            .add(RouteEntry::irqchip(4096, 2, 0))
            .is_err());
    }

    #[test]
    fn sorted_iteration_and_removal() {
        let mut t = RoutingTable::new();
        for gsi in [9, 3, 5, 3] {
            let chip = if t.routes(gsi).count() == 0 { 2 } else { 0 };
            t.add(RouteEntry::irqchip(gsi, chip, gsi)).unwrap();
        }
        let order: Vec<(u32, RouteTarget)> = (&t).into_iter().map(|e| (e.gsi, e.target)).collect();
        assert_eq!(
            order,
            [
                (3, RouteTarget::Irqchip { chip: 2, pin: 3 }),
                (3, RouteTarget::Irqchip { chip: 0, pin: 3 }),
                (5, RouteTarget::Irqchip { chip: 2, pin: 5 }),
                (9, RouteTarget::Irqchip { chip: 2, pin: 9 }),
            ]
        );
        assert_eq!(t.routes(3).count(), 2);
        assert_eq!(t.routes(4).count(), 0);
        assert_eq!(t.remove(3), 2);
        assert_eq!(t.len(), 2);
        assert_eq!(t, {
            let mut u = RoutingTable::default();
            u.add(RouteEntry::irqchip(9, 2, 9)).unwrap();
            u.add(RouteEntry::irqchip(5, 2, 5)).unwrap();
            u
        });
    }
}
