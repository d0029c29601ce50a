//! The userspace IOAPIC of the split irqchip: an Intel 82093AA register
//! model that turns line assertions into MSIs for the in-kernel LAPICs.

use kvmkit_irq::{
    check_range, Error, GsiRouting, InterruptController, Msi, Result, RouteEntry, RoutingTable,
};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::os::fd::{AsRawFd, RawFd};
use vm_device::bus::{MmioAddress, MmioAddressOffset};
use vm_device::MutDeviceMmio;
use vmm_sys_util::eventfd::EventFd;

/// The most pins an IOAPIC can have: its redirection table lives in the
/// 8-bit register space from 0x10, two registers per pin.
pub const IOAPIC_MAX_PINS: u32 = 120;

/// The version the VER register reports: 0x20, the IOAPIC with an EOI
/// register (what QEMU emulates; Linux then EOIs level-triggered lines
/// through it when the LAPIC suppresses EOI broadcasts).
pub const IOAPIC_VERSION: u32 = 0x20;

/// Where the MSIs of an IOAPIC go: the LAPICs' MSI window.
pub const MSI_ADDRESS_BASE: u64 = 0xfee0_0000;

/// The IOAPIC's MMIO registers, as offsets from its base.
const IOREGSEL: u64 = 0x00;
const IOWIN: u64 = 0x10;
const IOEOI: u64 = 0x40;

/// The indirect registers.
const REG_ID: u32 = 0x00;
const REG_VER: u32 = 0x01;
const REG_ARB: u32 = 0x02;
const REG_REDTBL: u32 = 0x10;

const RTE_DELIVERY_STATUS: u64 = 1 << 12;
const RTE_REMOTE_IRR: u64 = 1 << 14;
const RTE_TRIGGER_LEVEL: u64 = 1 << 15;
const RTE_MASKED: u64 = 1 << 16;
/// Bits of the low dword the guest may write: vector, delivery mode,
/// destination mode, polarity, trigger mode, mask (not delivery status and
/// remote IRR, which are read-only).
const RTE_LOW_WRITABLE: u64 = 0xfff | 1 << 13 | RTE_TRIGGER_LEVEL | RTE_MASKED;
/// Bits of the high dword the guest may write: the destination (56–63) and
/// the extended destination (48–55).
const RTE_HIGH_WRITABLE: u64 = 0xffff << 48;
/// Bits a redirection entry of this model can hold: what the guest writes,
/// and remote IRR (delivery status is never kept set).
const RTE_STATE_BITS: u64 = RTE_LOW_WRITABLE | RTE_HIGH_WRITABLE | RTE_REMOTE_IRR;

/// One redirection-table entry (two 32-bit IOAPIC registers).
///
/// ```
/// use kvmkit_arch_x86_64::RedirectionEntry;
/// // vector 0x41, fixed, physical destination 3, level-triggered, unmasked
/// let e = RedirectionEntry(0x41 | 1 << 15 | 3 << 56);
/// assert_eq!((e.vector(), e.destination(), e.level_triggered(), e.masked()), (0x41, 3, true, false));
/// let msi = e.msi();
/// assert_eq!(msi.address, 0xfee0_3000);
/// assert_eq!(msi.data, 0x8041);
/// ```
///
/// With serde it is its 64-bit value (a JSON number).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RedirectionEntry(pub u64);

impl RedirectionEntry {
    /// The state after reset: masked, everything else zero.
    pub const RESET: RedirectionEntry = RedirectionEntry(RTE_MASKED);

    /// The interrupt vector (bits 0–7).
    pub fn vector(self) -> u8 {
        (self.0 & 0xff) as u8
    }

    /// The delivery mode (bits 8–10): 0 fixed, 1 lowest priority, 2 SMI,
    /// 4 NMI, 5 INIT, 7 ExtINT.
    pub fn delivery_mode(self) -> u8 {
        ((self.0 >> 8) & 7) as u8
    }

    /// True for a logical destination (bit 11).
    pub fn logical(self) -> bool {
        self.0 & 1 << 11 != 0
    }

    /// True when the guest asked for an active-low line (bit 13). The
    /// line levels this model gets are logical (asserted or not), so the
    /// polarity is stored and reported but does not invert them.
    pub fn active_low(self) -> bool {
        self.0 & 1 << 13 != 0
    }

    /// Remote IRR (bit 14): a level-triggered interrupt was delivered and
    /// its EOI has not come yet.
    pub fn remote_irr(self) -> bool {
        self.0 & RTE_REMOTE_IRR != 0
    }

    /// True for a level-triggered line (bit 15).
    pub fn level_triggered(self) -> bool {
        self.0 & RTE_TRIGGER_LEVEL != 0
    }

    /// True when masked (bit 16).
    pub fn masked(self) -> bool {
        self.0 & RTE_MASKED != 0
    }

    /// The destination APIC id or logical set (bits 56–63).
    pub fn destination(self) -> u8 {
        (self.0 >> 56) as u8
    }

    /// The MSI this entry sends: address `0xfee00000 | destination << 12 |
    /// logical << 2`, data `vector | delivery mode << 8 | level << 15` (the
    /// encoding KVM's LAPICs decode, as QEMU's IOAPIC produces it).
    ///
    /// ```
    /// use kvmkit_arch_x86_64::RedirectionEntry;
    /// // NMI, logical destination 0x0f
    /// let m = RedirectionEntry(4 << 8 | 1 << 11 | 0x0f << 56).msi();
    /// assert_eq!((m.address, m.data), (0xfee0_f004, 0x400));
    /// ```
    pub fn msi(self) -> Msi {
        Msi {
            address: MSI_ADDRESS_BASE
                | u64::from(self.destination()) << 12
                | u64::from(self.logical()) << 2,
            data: u32::from(self.vector())
                | u32::from(self.delivery_mode()) << 8
                | u32::from(self.level_triggered()) << 15,
            devid: None,
        }
    }
}

/// The saved state of an [`Ioapic`]: its registers and line levels, for a
/// snapshot (serde; the container that holds it carries the format version).
///
/// Carried: the ID, IOREGSEL, the redirection table (its length is the pin
/// count), the pending/asserted pins (`irr`) and the line levels (`lines`).
/// In JSON the two pin masks are hex strings (`"0x210"`: pins 4 and 9),
/// since a 128-bit JSON number is not portable.
///
/// Not carried, because they belong to the VMM that restores, not to the
/// guest: the MSI routes of GSIs from `pins` up ([`Ioapic::set_msi_route`]),
/// the resample fds ([`Ioapic::add_resample`]), the kept error, and the sink.
/// The routes of the pins are not carried either: they follow from the
/// table, and [`Ioapic::restore`] installs them again.
///
/// ```
/// use kvmkit_arch_x86_64::{IoapicState, RedirectionEntry};
/// // 24 pins; pin 4 unmasked (vector 0x34, edge) and its line high.
/// let mut table = vec![RedirectionEntry::RESET; 24];
/// table[4] = RedirectionEntry(0x34);
/// let s = IoapicState { id: 0, ioregsel: 0x18, irr: 0, lines: 1 << 4, table };
/// let json = serde_json::to_string(&s).unwrap();
/// assert!(json.contains(r#""lines":"0x10""#));
/// let back: IoapicState = serde_json::from_str(&json).unwrap();
/// assert_eq!(back, s);
/// back.check()?;
/// # Ok::<(), kvmkit_arch_x86_64::IoapicStateError>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IoapicState {
    /// The IOAPIC's ID (bits 24–27 of the ID register), 0 to 15.
    pub id: u32,
    /// IOREGSEL: the register IOWIN reaches, 0 to 0xff.
    pub ioregsel: u32,
    /// Bit *n* set: pin *n* holds a pending edge, or its level-triggered
    /// line is asserted.
    #[serde(with = "pin_mask")]
    pub irr: u128,
    /// Bit *n* set: pin *n*'s line is asserted.
    #[serde(with = "pin_mask")]
    pub lines: u128,
    /// One entry per pin.
    pub table: Vec<RedirectionEntry>,
}

/// Why a saved [`IoapicState`] was refused, or what failed while
/// [`Ioapic::restore`] applied it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IoapicStateError {
    /// The table's length is not a possible pin count.
    #[error("saved IOAPIC state has {pins} pins, an IOAPIC has 1 to {IOAPIC_MAX_PINS}")]
    PinCount {
        /// The table's length.
        pins: usize,
    },
    /// The state is of an IOAPIC with another pin count.
    #[error("saved IOAPIC state has {pins} pins, this IOAPIC has {expected}")]
    PinCountMismatch {
        /// The table's length.
        pins: usize,
        /// The pins of the IOAPIC restored into.
        expected: u32,
    },
    /// The ID does not fit its 4 bits.
    #[error("saved IOAPIC state has ID {id:#x}, the ID has 4 bits")]
    Id {
        /// The saved ID.
        id: u32,
    },
    /// IOREGSEL does not fit its 8 bits.
    #[error("saved IOAPIC state selects register {ioregsel:#x}, IOREGSEL has 8 bits")]
    Ioregsel {
        /// The saved IOREGSEL.
        ioregsel: u32,
    },
    /// A pin mask has bits past the last pin.
    #[error("saved IOAPIC state has {mask} bits {bits:#x} past its {pins} pins")]
    PinMask {
        /// `irr` or `lines`.
        mask: &'static str,
        /// The bits past the last pin.
        bits: u128,
        /// The pin count.
        pins: u32,
    },
    /// A redirection entry this model cannot hold.
    #[error("saved IOAPIC redirection entry {entry:#018x} of pin {pin} {reason}")]
    Entry {
        /// The pin.
        pin: u32,
        /// The entry.
        entry: u64,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A level-triggered pin whose IRR bit is not its line level.
    #[error("saved IOAPIC state has level-triggered pin {pin} with an IRR bit unlike its line")]
    LevelIrr {
        /// The pin.
        pin: u32,
    },
    /// Installing the restored pins' GSI routes (`KVM_SET_GSI_ROUTING`)
    /// failed.
    #[error("cannot install the GSI routes of the restored IOAPIC")]
    InstallRoutes(#[source] Error),
    /// Delivering a restored pending interrupt (`KVM_SIGNAL_MSI`) failed.
    #[error("cannot deliver the pending interrupt of restored IOAPIC pin {pin}")]
    Deliver {
        /// The pin.
        pin: u32,
        /// The sink's error.
        #[source]
        source: Error,
    },
}

impl IoapicState {
    /// The pin count: the table's length.
    ///
    /// ```
    /// use kvmkit_arch_x86_64::{IoapicState, RedirectionEntry};
    /// let table = vec![RedirectionEntry::RESET; 8];
    /// let s = IoapicState { id: 0, ioregsel: 0, irr: 0, lines: 0, table };
    /// assert_eq!(s.pins(), 8);
    /// ```
    pub fn pins(&self) -> usize {
        self.table.len()
    }

    /// Checks that an IOAPIC could have been in this state: 1 to
    /// [`IOAPIC_MAX_PINS`] pins, the ID and IOREGSEL in range, no pin-mask
    /// bit past the last pin, entries holding only bits the guest can write
    /// and remote IRR (the latter only when level-triggered), and for each
    /// level-triggered pin an IRR bit equal to its line level.
    ///
    /// ```
    /// use kvmkit_arch_x86_64::{IoapicState, IoapicStateError, RedirectionEntry};
    /// let table = vec![RedirectionEntry::RESET; 24];
    /// let s = IoapicState { id: 0, ioregsel: 0, irr: 0, lines: 1 << 24, table };
    /// assert!(matches!(s.check(), Err(IoapicStateError::PinMask { mask: "lines", .. })));
    /// ```
    pub fn check(&self) -> std::result::Result<(), IoapicStateError> {
        let pins = match u32::try_from(self.table.len()) {
            Ok(p) if (1..=IOAPIC_MAX_PINS).contains(&p) => p,
            _ => {
                return Err(IoapicStateError::PinCount {
                    pins: self.table.len(),
                })
            }
        };
        if self.id > 0xf {
            return Err(IoapicStateError::Id { id: self.id });
        }
        if self.ioregsel > 0xff {
            return Err(IoapicStateError::Ioregsel {
                ioregsel: self.ioregsel,
            });
        }
        // `pins` is at most 120, so the shift stays inside the u128.
        let outside = !((1u128 << pins) - 1);
        for (mask, v) in [("irr", self.irr), ("lines", self.lines)] {
            if v & outside != 0 {
                return Err(IoapicStateError::PinMask {
                    mask,
                    bits: v & outside,
                    pins,
                });
            }
        }
        for (pin, e) in (0..pins).zip(&self.table) {
            let bad = |reason| IoapicStateError::Entry {
                pin,
                entry: e.0,
                reason,
            };
            if e.0 & !RTE_STATE_BITS != 0 {
                return Err(bad("sets reserved or delivery-status bits"));
            }
            if e.remote_irr() && !e.level_triggered() {
                return Err(bad("is edge-triggered with remote IRR set"));
            }
            if e.level_triggered() && (self.irr ^ self.lines) & bit(pin) != 0 {
                return Err(IoapicStateError::LevelIrr { pin });
            }
        }
        Ok(())
    }
}

/// Serde for a pin mask as a `0x`-prefixed hex string.
mod pin_mask {
    use serde::de::Error as _;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(v: &u128, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&format_args!("{v:#x}"))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u128, D::Error> {
        let s = String::deserialize(d)?;
        let digits = s
            .strip_prefix("0x")
            .filter(|h| !h.is_empty() && h.bytes().all(|b| b.is_ascii_hexdigit()))
            .ok_or_else(|| D::Error::custom(format!("pin mask {s:?} is not a 0x hex number")))?;
        u128::from_str_radix(digits, 16)
            .map_err(|_| D::Error::custom(format!("pin mask {s:?} has more than 128 bits")))
    }
}

/// A resample fd registered with a level-triggered irqfd: signalled when
/// the guest EOIs the vector of its GSI's redirection entry.
struct Resample {
    gsi: u32,
    irqfd: RawFd,
    fd: EventFd,
}

/// The userspace IOAPIC (Intel 82093AA, version 0x20) of the split irqchip.
///
/// - **Registers**, through MMIO at its base (0xfec00000 on a PC, 4 KiB):
///   IOREGSEL at +0x00, IOWIN at +0x10, the EOI register at +0x40;
///   indirect registers ID (0x00), VER (0x01: version 0x20, maximum
///   redirection entry `pins - 1`), ARB (0x02), and the redirection table
///   from 0x10, two 32-bit registers per pin. It implements vm-device's
///   [`MutDeviceMmio`]: wrapped in a `Mutex`, it goes on the MMIO bus.
/// - **Delivery**: a pin's assertion becomes the MSI of its redirection
///   entry ([`RedirectionEntry::msi`]), sent through `sink`'s
///   [`InterruptController::signal_msi`] (`KVM_SIGNAL_MSI` for an
///   [`crate::X86Vm`]). Masked pins hold edge interrupts pending until
///   unmasked. Level-triggered pins set remote IRR on delivery and deliver
///   again after the EOI ([`Ioapic::end_of_interrupt`], from
///   `KVM_EXIT_IOAPIC_EOI` or the EOI register) while the line is still
///   asserted.
/// - **Routing**: it owns the VM's GSI [`RoutingTable`]. GSI *n* is pin *n*;
///   when the guest unmasks or changes a redirection entry the IOAPIC
///   installs an MSI route for that GSI with `sink`'s
///   [`GsiRouting::set_routing`] (a masked entry has no route), so that an
///   irqfd on GSI *n* delivers what the entry says, and KVM knows which
///   vectors are level-triggered and exits on their EOI. Other MSI routes
///   (GSIs from `pins` up) are kept in the same table
///   ([`Ioapic::set_msi_route`]).
///
/// Guest accesses never fail and never panic: an error of `sink` during an
/// MMIO access is kept for [`Ioapic::take_error`].
///
/// ```
/// use kvmkit_arch_x86_64::Ioapic;
/// use kvmkit_irq::{GsiRouting, InterruptController, Msi, Result, RoutingTable};
/// use std::sync::Mutex;
/// use vmm_sys_util::eventfd::EventFd;
///
/// /// Records the MSIs, as the in-kernel LAPICs would receive them.
/// #[derive(Default)]
/// struct Lapics(Mutex<Vec<Msi>>);
/// impl InterruptController for Lapics {
///     fn name(&self) -> &'static str { "LAPICs" }
///     fn irq_count(&self) -> u32 { 0 }
///     fn set_irq(&self, _: u32, _: bool) -> Result<()> { Ok(()) }
///     fn signal_msi(&self, m: Msi) -> Result<()> { self.0.lock().unwrap().push(m); Ok(()) }
///     fn register_irqfd(&self, _: &EventFd, _: u32, _: Option<&EventFd>) -> Result<()> { Ok(()) }
///     fn unregister_irqfd(&self, _: &EventFd, _: u32) -> Result<()> { Ok(()) }
/// }
/// impl GsiRouting for Lapics {
///     fn set_routing(&self, _: &RoutingTable) -> Result<()> { Ok(()) }
/// }
///
/// let mut io = Ioapic::new(24, Lapics::default())?;
/// // The guest programs pin 4: vector 0x34, edge, to APIC 0.
/// io.write(0x00, &[0x18]);
/// io.write(0x10, &0x34u32.to_le_bytes());
/// io.set_irq(4, true)?;
/// io.set_irq(4, false)?;
/// assert_eq!(io.sink().0.lock().unwrap()[0], Msi { address: 0xfee0_0000, data: 0x34, devid: None });
/// # Ok::<(), kvmkit_irq::Error>(())
/// ```
pub struct Ioapic<C> {
    pins: u32,
    id: u32,
    ioregsel: u32,
    /// Pending (edge) or asserted (level) pins, one bit each.
    irr: u128,
    /// The lines' current levels, for edge detection.
    lines: u128,
    table: Vec<RedirectionEntry>,
    routes: RoutingTable,
    resample: Vec<Resample>,
    error: Option<Error>,
    sink: C,
}

impl<C> fmt::Debug for Ioapic<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ioapic")
            .field("pins", &self.pins)
            .field("id", &self.id)
            .field("irr", &format_args!("{:#x}", self.irr))
            .field("routes", &self.routes.len())
            .finish_non_exhaustive()
    }
}

fn bit(pin: u32) -> u128 {
    1u128 << pin
}

impl<C: InterruptController + GsiRouting> Ioapic<C> {
    /// An IOAPIC with `pins` pins (1 to [`IOAPIC_MAX_PINS`]; a PC has 24),
    /// all masked, delivering through `sink`.
    ///
    /// ```
    /// # use kvmkit_arch_x86_64::Ioapic;
    /// # fn f(vm: kvmkit_arch_x86_64::X86Vm) {
    /// assert!(Ioapic::new(121, vm).is_err());
    /// # }
    /// ```
    pub fn new(pins: u32, sink: C) -> Result<Self> {
        if pins == 0 || pins > IOAPIC_MAX_PINS {
            return Err(Error::CreateController {
                controller: "userspace IOAPIC",
                reason: format!("{pins} pins, the IOAPIC has 1 to {IOAPIC_MAX_PINS}"),
            });
        }
        Ok(Ioapic {
            pins,
            id: 0,
            ioregsel: 0,
            irr: 0,
            lines: 0,
            table: vec![RedirectionEntry::RESET; pins as usize],
            routes: RoutingTable::new(),
            resample: Vec::new(),
            error: None,
            sink,
        })
    }

    /// How many pins it has.
    pub fn pins(&self) -> u32 {
        self.pins
    }

    /// What it delivers through.
    pub fn sink(&self) -> &C {
        &self.sink
    }

    /// The redirection entry of `pin`, `None` past the last pin.
    pub fn redirection_entry(&self, pin: u32) -> Option<RedirectionEntry> {
        self.table.get(pin as usize).copied()
    }

    /// The GSI routing table it maintains.
    pub fn routing_table(&self) -> &RoutingTable {
        &self.routes
    }

    /// The first error a guest access ran into since the last call (a
    /// refused `KVM_SIGNAL_MSI` or `KVM_SET_GSI_ROUTING`).
    pub fn take_error(&mut self) -> Option<Error> {
        self.error.take()
    }

    /// Keeps `e` for [`Ioapic::take_error`] unless an earlier error waits.
    pub(crate) fn keep_error(&mut self, e: Error) {
        self.error.get_or_insert(e);
    }

    fn keep(&mut self, r: Result<()>) {
        if let Err(e) = r {
            self.keep_error(e);
        }
    }

    /// Asserts (`true`) or deasserts pin `pin`. An edge-triggered pin
    /// delivers on the rising edge; a level-triggered one while asserted,
    /// once per EOI.
    pub fn set_irq(&mut self, pin: u32, level: bool) -> Result<()> {
        check_range(pin, self.pins)?;
        let b = bit(pin);
        let was = self.lines & b != 0;
        if level {
            self.lines |= b;
        } else {
            self.lines &= !b;
        }
        let e = self.table[pin as usize];
        if e.level_triggered() {
            if level {
                self.irr |= b;
            } else {
                self.irr &= !b;
            }
        } else if level && !was {
            self.irr |= b;
        }
        self.service(pin)
    }

    /// Delivers `pin` if it is pending, unmasked and (when level-triggered)
    /// not waiting for an EOI.
    fn service(&mut self, pin: u32) -> Result<()> {
        let b = bit(pin);
        let e = self.table[pin as usize];
        if self.irr & b == 0 || e.masked() {
            return Ok(());
        }
        if e.level_triggered() {
            if e.remote_irr() {
                return Ok(());
            }
            self.table[pin as usize].0 |= RTE_REMOTE_IRR;
        } else {
            self.irr &= !b;
        }
        self.sink.signal_msi(e.msi())
    }

    /// The guest ended the interrupt with vector `vector` (the
    /// `KVM_EXIT_IOAPIC_EOI` exit, or a write to the EOI register): every
    /// level-triggered pin with that vector drops remote IRR and delivers
    /// again if still asserted; resample fds of those GSIs are signalled.
    /// Returns the pins with that vector.
    pub fn end_of_interrupt(&mut self, vector: u8) -> Result<Vec<u32>> {
        let mut pins = Vec::new();
        let mut result = Ok(());
        for pin in 0..self.pins {
            let e = self.table[pin as usize];
            if e.vector() != vector {
                continue;
            }
            pins.push(pin);
            if e.level_triggered() && e.remote_irr() {
                self.table[pin as usize].0 &= !RTE_REMOTE_IRR;
                let r = self.service(pin);
                if result.is_ok() {
                    result = r;
                }
            }
            for r in self.resample.iter().filter(|r| r.gsi == pin) {
                // An eventfd write fails only when its counter would
                // overflow, i.e. when it is already signalled.
                let _ = r.fd.write(1);
            }
        }
        result.map(|()| pins)
    }

    fn install_routes(&mut self) -> Result<()> {
        self.sink.set_routing(&self.routes)
    }

    /// Makes the table's route of `pin` follow its redirection entry (a
    /// masked entry has none); true if that changed the table.
    fn sync_route(&mut self, pin: u32) -> Result<bool> {
        let e = self.table[pin as usize];
        let want = (!e.masked()).then(|| RouteEntry::msi(pin, e.msi()));
        if self.routes.routes(pin).next().copied() == want {
            return Ok(false);
        }
        match want {
            Some(r) => self.routes.replace(r)?,
            None => {
                self.routes.remove(pin);
            }
        }
        Ok(true)
    }

    /// Makes the GSI route of `pin` follow its redirection entry, and
    /// installs the table if that changed it.
    fn update_route(&mut self, pin: u32) -> Result<()> {
        if self.sync_route(pin)? {
            self.install_routes()?;
        }
        Ok(())
    }

    /// The saved state of the IOAPIC, for a snapshot: see [`IoapicState`].
    ///
    /// ```
    /// # use kvmkit_arch_x86_64::{Ioapic, X86Vm};
    /// # fn f(io: &Ioapic<X86Vm>) {
    /// let s = io.state();
    /// assert_eq!(s.pins(), io.pins() as usize);
    /// # }
    /// ```
    pub fn state(&self) -> IoapicState {
        IoapicState {
            id: self.id,
            ioregsel: self.ioregsel,
            irr: self.irr,
            lines: self.lines,
            table: self.table.clone(),
        }
    }

    /// Puts the IOAPIC in `state` (saved by [`Ioapic::state`], maybe in
    /// another process), keeping its sink, the MSI routes of GSIs from
    /// `pins` up and its resample fds.
    ///
    /// The state is checked first ([`IoapicState::check`], and its pin
    /// count must be this IOAPIC's): a refused state changes nothing.
    /// Then, as when the guest writes an entry, every pin's GSI route is
    /// made to follow its restored entry, and the routing table is
    /// installed (once, even if unchanged: it is what the kernel delivers
    /// irqfds by and learns its EOI-exit vectors from). Last, every pin is
    /// serviced as after a guest write: an asserted level-triggered line
    /// that is unmasked and not waiting for an EOI is delivered, as is a
    /// pending edge on an unmasked pin. A level-triggered pin whose remote
    /// IRR is set is not delivered again now: its vector is in the restored
    /// LAPIC, and the guest's EOI delivers it again if the line is still
    /// asserted, as it would have on the source.
    ///
    /// Call it after the vCPUs' LAPIC state is restored (a delivery before
    /// would be overwritten), and before the devices whose irqfds go through
    /// the pins' routes are restored.
    ///
    /// An error of the sink ([`IoapicStateError::InstallRoutes`],
    /// [`IoapicStateError::Deliver`]) comes after the registers were
    /// restored: the VM should not be resumed then.
    ///
    /// ```
    /// # use kvmkit_arch_x86_64::{Ioapic, X86Vm};
    /// # fn f(saved: &Ioapic<X86Vm>, fresh: &mut Ioapic<X86Vm>) -> Result<(), Box<dyn std::error::Error>> {
    /// let state = saved.state();
    /// fresh.restore(&state)?;
    /// assert_eq!(fresh.state(), state);
    /// # Ok(()) }
    /// ```
    pub fn restore(&mut self, state: &IoapicState) -> std::result::Result<(), IoapicStateError> {
        state.check()?;
        if state.table.len() != self.pins as usize {
            return Err(IoapicStateError::PinCountMismatch {
                pins: state.table.len(),
                expected: self.pins,
            });
        }
        self.id = state.id;
        self.ioregsel = state.ioregsel;
        self.irr = state.irr;
        self.lines = state.lines;
        self.table.copy_from_slice(&state.table);
        for pin in 0..self.pins {
            self.sync_route(pin)
                .map_err(IoapicStateError::InstallRoutes)?;
        }
        self.install_routes()
            .map_err(IoapicStateError::InstallRoutes)?;
        let mut result = Ok(());
        for pin in 0..self.pins {
            if let Err(source) = self.service(pin) {
                if result.is_ok() {
                    result = Err(IoapicStateError::Deliver { pin, source });
                }
            }
        }
        result
    }

    /// Routes `gsi` (from `pins` up: lower GSIs belong to the pins) to
    /// `msi`, or removes its route with `None`, and installs the table.
    pub fn set_msi_route(&mut self, gsi: u32, msi: Option<Msi>) -> Result<()> {
        if gsi < self.pins {
            return Err(Error::ConflictingRoute { gsi, kind: "MSI" });
        }
        match msi {
            Some(m) => self.routes.replace(RouteEntry::msi(gsi, m))?,
            None => {
                self.routes.remove(gsi);
            }
        }
        self.install_routes()
    }

    /// Remembers `resample` for the level-triggered irqfd `irqfd` on `gsi`:
    /// KVM's resample fds need the in-kernel IOAPIC, so with the split
    /// irqchip the IOAPIC signals them on the EOI of `gsi`'s vector.
    pub fn add_resample(&mut self, gsi: u32, irqfd: &EventFd, resample: EventFd) {
        self.resample.push(Resample {
            gsi,
            irqfd: irqfd.as_raw_fd(),
            fd: resample,
        });
    }

    /// Forgets the resample fd of `irqfd` on `gsi`.
    pub fn remove_resample(&mut self, gsi: u32, irqfd: &EventFd) {
        let fd = irqfd.as_raw_fd();
        self.resample.retain(|r| !(r.gsi == gsi && r.irqfd == fd));
    }

    fn read_register(&self) -> u32 {
        match self.ioregsel {
            REG_ID | REG_ARB => self.id << 24,
            REG_VER => IOAPIC_VERSION | (self.pins - 1) << 16,
            sel if sel >= REG_REDTBL => {
                let index = ((sel - REG_REDTBL) / 2) as usize;
                match self.table.get(index) {
                    Some(e) if sel % 2 == 1 => (e.0 >> 32) as u32,
                    Some(e) => (e.0 & 0xffff_ffff) as u32,
                    None => 0xffff_ffff,
                }
            }
            _ => 0,
        }
    }

    fn write_register(&mut self, value: u32) -> Result<()> {
        match self.ioregsel {
            REG_ID => self.id = (value >> 24) & 0xf,
            sel if sel >= REG_REDTBL => {
                let pin = (sel - REG_REDTBL) / 2;
                let Some(old) = self.table.get(pin as usize).copied() else {
                    return Ok(());
                };
                let v = u64::from(value);
                let mut new = if sel % 2 == 1 {
                    (old.0 & !RTE_HIGH_WRITABLE) | (v << 32 & RTE_HIGH_WRITABLE)
                } else {
                    (old.0 & !RTE_LOW_WRITABLE) | (v & RTE_LOW_WRITABLE)
                };
                new &= !RTE_DELIVERY_STATUS;
                let b = bit(pin);
                if new & RTE_TRIGGER_LEVEL == 0 {
                    // An edge-triggered entry has no remote IRR.
                    new &= !RTE_REMOTE_IRR;
                    if old.level_triggered() {
                        self.irr &= !b;
                    }
                } else if self.lines & b != 0 {
                    self.irr |= b;
                } else {
                    self.irr &= !b;
                }
                self.table[pin as usize] = RedirectionEntry(new);
                let routed = self.update_route(pin);
                let served = self.service(pin);
                routed.and(served)?;
            }
            // VER and ARB are read-only.
            _ => {}
        }
        Ok(())
    }

    /// A guest read of `data.len()` bytes at `offset` from the base: IOREGSEL
    /// and IOWIN answer, everything else reads as zero.
    pub fn read(&mut self, offset: u64, data: &mut [u8]) {
        let v = match offset {
            IOREGSEL => self.ioregsel,
            IOWIN => self.read_register(),
            _ => 0,
        };
        let bytes = v.to_le_bytes();
        for (i, d) in data.iter_mut().enumerate() {
            *d = bytes.get(i).copied().unwrap_or(0);
        }
    }

    /// A guest write at `offset` from the base: IOREGSEL, IOWIN and the EOI
    /// register (accesses of 1 to 4 bytes, little endian); anything else is
    /// ignored.
    pub fn write(&mut self, offset: u64, data: &[u8]) {
        if data.is_empty() || data.len() > 4 {
            return;
        }
        let mut b = [0u8; 4];
        b[..data.len()].copy_from_slice(data);
        let v = u32::from_le_bytes(b);
        match offset {
            IOREGSEL => self.ioregsel = v & 0xff,
            IOWIN => {
                let r = self.write_register(v);
                self.keep(r);
            }
            IOEOI => {
                let r = self.end_of_interrupt((v & 0xff) as u8).map(|_| ());
                self.keep(r);
            }
            _ => {}
        }
    }
}

impl<C: InterruptController + GsiRouting> MutDeviceMmio for Ioapic<C> {
    fn mmio_read(&mut self, _base: MmioAddress, offset: MmioAddressOffset, data: &mut [u8]) {
        self.read(offset, data);
    }

    fn mmio_write(&mut self, _base: MmioAddress, offset: MmioAddressOffset, data: &[u8]) {
        self.write(offset, data);
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// Records MSIs and routing tables.
    #[derive(Default, Clone)]
    pub(crate) struct Lapics {
        pub msis: Arc<Mutex<Vec<Msi>>>,
        pub tables: Arc<Mutex<Vec<RoutingTable>>>,
        pub irqfds: Arc<Mutex<Vec<(RawFd, u32, bool)>>>,
        pub fail: Arc<Mutex<bool>>,
        pub fail_routing: Arc<Mutex<bool>>,
    }

    impl Lapics {
        pub fn take(&self) -> Vec<Msi> {
            std::mem::take(&mut *self.msis.lock().unwrap())
        }
        pub fn last_table(&self) -> RoutingTable {
            self.tables
                .lock()
                .unwrap()
                .last()
                .cloned()
                .unwrap_or_default()
        }
    }

    impl InterruptController for Lapics {
        fn name(&self) -> &'static str {
            "test LAPICs"
        }
        fn irq_count(&self) -> u32 {
            0
        }
        fn set_irq(&self, irq: u32, _: bool) -> Result<()> {
            Err(Error::OutOfRange { irq, count: 0 })
        }
        fn signal_msi(&self, m: Msi) -> Result<()> {
            if *self.fail.lock().unwrap() {
                return Err(Error::Ioctl {
                    ioctl: "KVM_SIGNAL_MSI",
                    irq: m.data,
                    source: std::io::Error::from_raw_os_error(libc::EINVAL),
                });
            }
            self.msis.lock().unwrap().push(m);
            Ok(())
        }
        fn register_irqfd(&self, fd: &EventFd, irq: u32, r: Option<&EventFd>) -> Result<()> {
            self.irqfds
                .lock()
                .unwrap()
                .push((fd.as_raw_fd(), irq, r.is_some()));
            Ok(())
        }
        fn unregister_irqfd(&self, fd: &EventFd, irq: u32) -> Result<()> {
            self.irqfds
                .lock()
                .unwrap()
                .retain(|&(f, i, _)| (f, i) != (fd.as_raw_fd(), irq));
            Ok(())
        }
    }

    impl GsiRouting for Lapics {
        fn set_routing(&self, t: &RoutingTable) -> Result<()> {
            if *self.fail_routing.lock().unwrap() {
                return Err(Error::SetRouting {
                    ioctl: "KVM_SET_GSI_ROUTING",
                    entries: t.len(),
                    source: std::io::Error::from_raw_os_error(libc::EINVAL),
                });
            }
            self.tables.lock().unwrap().push(t.clone());
            Ok(())
        }
    }

    fn write_reg(io: &mut Ioapic<Lapics>, reg: u32, v: u32) {
        io.write(IOREGSEL, &reg.to_le_bytes());
        io.write(IOWIN, &v.to_le_bytes());
    }

    fn read_reg(io: &mut Ioapic<Lapics>, reg: u32) -> u32 {
        io.write(IOREGSEL, &reg.to_le_bytes());
        let mut d = [0u8; 4];
        io.read(IOWIN, &mut d);
        u32::from_le_bytes(d)
    }

    fn program(io: &mut Ioapic<Lapics>, pin: u32, low: u32, dest: u8) {
        write_reg(io, 0x11 + 2 * pin, u32::from(dest) << 24);
        write_reg(io, 0x10 + 2 * pin, low);
    }

    fn ioapic() -> (Ioapic<Lapics>, Lapics) {
        let l = Lapics::default();
        (Ioapic::new(24, l.clone()).unwrap(), l)
    }

    #[test]
    fn id_version_arbitration_and_reset_state() {
        let (mut io, _) = ioapic();
        assert_eq!(read_reg(&mut io, REG_VER), 0x0017_0020);
        write_reg(&mut io, REG_ID, 0x0a00_0000 | 0xff);
        assert_eq!(read_reg(&mut io, REG_ID), 0x0a00_0000);
        assert_eq!(read_reg(&mut io, REG_ARB), 0x0a00_0000);
        write_reg(&mut io, REG_VER, 0);
        assert_eq!(read_reg(&mut io, REG_VER), 0x0017_0020, "read-only");
        for pin in 0..24 {
            assert_eq!(read_reg(&mut io, 0x10 + 2 * pin), 1 << 16, "masked");
            assert_eq!(read_reg(&mut io, 0x11 + 2 * pin), 0);
        }
        assert_eq!(read_reg(&mut io, 0x10 + 48), 0xffff_ffff, "past pin 23");
        assert_eq!(read_reg(&mut io, 0x05), 0);
        io.write(IOREGSEL, &0x1234u32.to_le_bytes());
        let mut d = [0u8; 4];
        io.read(IOREGSEL, &mut d);
        assert_eq!(u32::from_le_bytes(d), 0x34);
        let mut d = [0xaau8; 8];
        io.read(0x20, &mut d);
        assert_eq!(d, [0; 8]);
        assert_eq!(Ioapic::new(8, Lapics::default()).unwrap().pins(), 8);
        let e = Ioapic::new(0, Lapics::default()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "cannot create the userspace IOAPIC: 0 pins, the IOAPIC has 1 to 120"
        );
        assert!(format!("{io:?}").starts_with("Ioapic"));
    }

    #[test]
    fn read_only_bits_stay_and_high_dword_is_the_destination() {
        let (mut io, _) = ioapic();
        write_reg(&mut io, 0x10, 0xffff_ffff);
        // delivery status (12) and remote IRR (14) are not writable
        assert_eq!(read_reg(&mut io, 0x10), 0x0001_afff);
        write_reg(&mut io, 0x11, 0xffff_ffff);
        assert_eq!(read_reg(&mut io, 0x11), 0xffff_0000);
        let e = io.redirection_entry(0).unwrap();
        assert_eq!((e.destination(), e.vector()), (0xff, 0xff));
        assert!(e.active_low() && e.logical() && e.masked());
        assert_eq!(io.redirection_entry(24), None);
    }

    #[test]
    fn msi_encoding() {
        let e = RedirectionEntry(0x30 | 1 << 8 | 1 << 11 | 1 << 15 | 0x81 << 56);
        assert_eq!(e.delivery_mode(), 1);
        assert_eq!(
            e.msi(),
            Msi {
                address: 0xfee8_1004,
                data: 0x8130,
                devid: None
            }
        );
        assert_eq!(RedirectionEntry::RESET.msi().address, MSI_ADDRESS_BASE);
    }

    #[test]
    fn edge_lines_deliver_on_rising_edges_and_wait_while_masked() {
        let (mut io, l) = ioapic();
        io.set_irq(3, true).unwrap();
        io.set_irq(3, false).unwrap();
        assert!(l.take().is_empty(), "masked");
        program(&mut io, 3, 0x33, 1);
        assert_eq!(
            l.take(),
            [Msi {
                address: 0xfee0_1000,
                data: 0x33,
                devid: None
            }],
            "the pending edge is delivered on unmask"
        );
        io.set_irq(3, true).unwrap();
        io.set_irq(3, true).unwrap();
        assert_eq!(l.take().len(), 1, "one rising edge, one MSI");
        io.set_irq(3, false).unwrap();
        io.set_irq(3, true).unwrap();
        assert_eq!(l.take().len(), 1);
        io.set_irq(3, false).unwrap();
        write_reg(&mut io, 0x16, 0x33 | 1 << 16);
        io.set_irq(3, true).unwrap();
        assert!(l.take().is_empty());
        assert_eq!(io.end_of_interrupt(0x33).unwrap(), [3]);
        assert!(l.take().is_empty(), "EOI does not re-deliver edges");
        let e = io.set_irq(24, true).unwrap_err();
        assert!(matches!(e, Error::OutOfRange { irq: 24, count: 24 }));
    }

    #[test]
    fn level_lines_use_remote_irr_and_redeliver_on_eoi() {
        let (mut io, l) = ioapic();
        program(&mut io, 5, 0x45 | 1 << 15, 0);
        io.set_irq(5, true).unwrap();
        assert_eq!(l.take()[0].data, 0x8045);
        assert!(io.redirection_entry(5).unwrap().remote_irr());
        assert_eq!(
            read_reg(&mut io, 0x1a) & (1 << 14),
            1 << 14,
            "remote IRR reads back"
        );
        io.set_irq(5, true).unwrap();
        assert!(l.take().is_empty(), "remote IRR holds further deliveries");
        assert_eq!(io.end_of_interrupt(0x44).unwrap(), Vec::<u32>::new());
        io.end_of_interrupt(0x45).unwrap();
        assert_eq!(l.take().len(), 1, "still asserted: delivered again");
        io.set_irq(5, false).unwrap();
        io.end_of_interrupt(0x45).unwrap();
        assert!(l.take().is_empty(), "deasserted: nothing more");
        assert!(!io.redirection_entry(5).unwrap().remote_irr());
        // The EOI register does the same as the EOI exit.
        io.set_irq(5, true).unwrap();
        assert_eq!(l.take().len(), 1);
        io.write(IOEOI, &[0x45, 0, 0, 0]);
        assert_eq!(l.take().len(), 1);
        // Masked: the line stays asserted, delivery waits for the unmask.
        write_reg(&mut io, 0x1a, 0x45 | 1 << 15 | 1 << 16);
        io.end_of_interrupt(0x45).unwrap();
        assert!(l.take().is_empty());
        write_reg(&mut io, 0x1a, 0x45 | 1 << 15);
        assert_eq!(l.take().len(), 1);
        // Switching to edge drops remote IRR.
        write_reg(&mut io, 0x1a, 0x45);
        assert!(!io.redirection_entry(5).unwrap().remote_irr());
    }

    #[test]
    fn level_entry_programmed_while_line_high_delivers() {
        let (mut io, l) = ioapic();
        io.set_irq(7, true).unwrap();
        program(&mut io, 7, 0x47 | 1 << 15, 0);
        assert_eq!(l.take().len(), 1);
    }

    #[test]
    fn routes_follow_the_redirection_table() {
        let (mut io, l) = ioapic();
        program(&mut io, 9, 0x49 | 1 << 15, 2);
        let t = l.last_table();
        assert_eq!(
            t.routes(9).next(),
            Some(&RouteEntry::msi(
                9,
                Msi {
                    address: 0xfee0_2000,
                    data: 0x8049,
                    devid: None
                }
            ))
        );
        let n = l.tables.lock().unwrap().len();
        write_reg(&mut io, 0x22, 0x49 | 1 << 15);
        assert_eq!(
            l.tables.lock().unwrap().len(),
            n,
            "unchanged: not reinstalled"
        );
        write_reg(&mut io, 0x22, 0x49 | 1 << 15 | 1 << 16);
        assert_eq!(l.last_table().routes(9).count(), 0, "masked: no route");
        io.set_msi_route(
            40,
            Some(Msi {
                address: 0xfee0_0000,
                data: 0x60,
                devid: None,
            }),
        )
        .unwrap();
        assert_eq!(l.last_table().len(), 1);
        assert_eq!(io.routing_table().len(), 1);
        io.set_msi_route(40, None).unwrap();
        assert!(l.last_table().is_empty());
        assert!(io.set_msi_route(3, None).is_err(), "GSI 3 is a pin");
    }

    #[test]
    fn resample_fds_are_signalled_on_eoi() {
        let (mut io, _) = ioapic();
        program(&mut io, 10, 0x4a | 1 << 15, 0);
        let irqfd = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let rs = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        io.add_resample(10, &irqfd, rs.try_clone().unwrap());
        io.end_of_interrupt(0x4a).unwrap();
        assert_eq!(rs.read().unwrap(), 1);
        io.remove_resample(10, &irqfd);
        io.end_of_interrupt(0x4a).unwrap();
        assert!(rs.read().is_err(), "removed: not signalled");
    }

    /// An IOAPIC driven into a state with something of everything: pin 4
    /// edge to APIC 1, pin 5 masked with a pending edge, pin 9 level
    /// asserted and waiting for its EOI, pin 12 level asserted but masked,
    /// ID 3, IOREGSEL left on pin 9's high dword.
    fn driven() -> (Ioapic<Lapics>, Lapics) {
        let (mut io, l) = ioapic();
        write_reg(&mut io, REG_ID, 3 << 24);
        program(&mut io, 4, 0x34, 1);
        io.set_irq(5, true).unwrap();
        program(&mut io, 9, 0x49 | 1 << 15, 2);
        io.set_irq(9, true).unwrap();
        program(&mut io, 12, 0x4c | 1 << 15 | 1 << 16, 0);
        io.set_irq(12, true).unwrap();
        io.write(IOREGSEL, &[0x23]);
        assert_eq!(l.take().len(), 1, "pin 9 delivered");
        (io, l)
    }

    fn pin_routes(t: &RoutingTable, pins: u32) -> Vec<RouteEntry> {
        t.iter().filter(|r| r.gsi < pins).copied().collect()
    }

    #[test]
    fn state_round_trips_through_json() {
        let (io, _) = driven();
        let s = io.state();
        assert_eq!((s.id, s.ioregsel, s.pins()), (3, 0x23, 24));
        assert_eq!(s.lines, 1 << 5 | 1 << 9 | 1 << 12);
        assert_eq!(s.irr, 1 << 5 | 1 << 9 | 1 << 12);
        assert!(s.table[9].remote_irr());
        s.check().unwrap();
        let json = serde_json::to_string(&s).unwrap();
        assert!(json.contains(r#""irr":"0x1220""#), "{json}");
        let back: IoapicState = serde_json::from_str(&json).unwrap();
        assert_eq!(back, s);
    }

    #[test]
    fn restored_ioapic_routes_and_delivers_like_the_saved_one() {
        let (mut src, ls) = driven();
        let state = src.state();
        let (mut dst, ld) = ioapic();
        dst.set_msi_route(40, Some(Msi::default())).unwrap();
        dst.restore(&state).unwrap();
        assert_eq!(dst.state(), state);
        // The routes of the pins are installed at once, the VMM's MSI
        // route (GSI 40) is kept.
        let installed = ld.last_table();
        assert_eq!(pin_routes(&installed, 24), pin_routes(&ls.last_table(), 24));
        assert_eq!(pin_routes(&installed, 24).len(), 2, "pins 4 and 9");
        assert_eq!(installed.routes(40).count(), 1);
        assert!(ld.take().is_empty(), "pin 9 waits for its EOI");
        // The same accesses give the same MSIs and register values.
        let mut same = |f: &dyn Fn(&mut Ioapic<Lapics>)| {
            f(&mut src);
            f(&mut dst);
            let (a, b) = (ls.take(), ld.take());
            assert_eq!(a, b);
            a.len()
        };
        assert_eq!(same(&|io| io.set_irq(4, true).unwrap()), 1, "pin 4's edge");
        assert_eq!(same(&|io| drop(io.end_of_interrupt(0x49).unwrap())), 1);
        assert_eq!(same(&|io| write_reg(io, 0x1a, 0x35)), 1, "pin 5's edge");
        assert_eq!(same(&|io| write_reg(io, 0x28, 0x4c | 1 << 15)), 1);
        let mut a = [0u8; 4];
        let mut b = [0u8; 4];
        src.read(IOWIN, &mut a);
        dst.read(IOWIN, &mut b);
        assert_eq!(a, b);
        assert_eq!(read_reg(&mut src, REG_ID), read_reg(&mut dst, REG_ID));
    }

    #[test]
    fn restore_delivers_an_asserted_level_line_not_waiting_for_eoi() {
        let (src, _) = ioapic();
        let mut s = src.state();
        s.table[7] = RedirectionEntry(0x47 | 1 << 15);
        s.lines = 1 << 7;
        s.irr = 1 << 7;
        let (mut dst, l) = ioapic();
        dst.restore(&s).unwrap();
        assert_eq!(l.take()[0].data, 0x8047);
        assert!(dst.redirection_entry(7).unwrap().remote_irr());
    }

    #[test]
    fn malformed_states_are_refused_and_change_nothing() {
        let (io, _) = driven();
        let good = io.state();
        let (mut dst, l) = ioapic();
        let before = dst.state();
        type Spoil = fn(&mut IoapicState);
        let cases: Vec<(Spoil, &str)> = vec![
            (|s| s.table.clear(), "has 0 pins, an IOAPIC has 1 to 120"),
            (
                |s| s.table.resize(121, RedirectionEntry::RESET),
                "has 121 pins, an IOAPIC has 1 to 120",
            ),
            (
                |s| {
                    s.table.truncate(8);
                    (s.irr, s.lines) = (0, 0);
                },
                "has 8 pins, this IOAPIC has 24",
            ),
            (|s| s.id = 0x10, "has ID 0x10, the ID has 4 bits"),
            (|s| s.ioregsel = 0x100, "IOREGSEL has 8 bits"),
            (|s| s.irr |= 1 << 24, "irr bits 0x1000000 past its 24 pins"),
            (|s| s.lines |= 1 << 100, "lines bits"),
            (|s| s.table[3].0 |= RTE_DELIVERY_STATUS, "delivery-status"),
            (|s| s.table[3].0 |= 1 << 20, "reserved"),
            (
                |s| s.table[3].0 |= RTE_REMOTE_IRR,
                "edge-triggered with remote IRR",
            ),
            (|s| s.irr &= !(1 << 9), "level-triggered pin 9"),
        ];
        for (spoil, msg) in cases {
            let mut s = good.clone();
            spoil(&mut s);
            let e = dst.restore(&s).unwrap_err();
            assert!(e.to_string().contains(msg), "{e} / {msg}");
            assert_eq!(dst.state(), before);
        }
        assert!(l.tables.lock().unwrap().is_empty(), "nothing installed");
        // Pin masks are 0x hex strings of at most 128 bits.
        let json = serde_json::to_string(&good).unwrap();
        for bad in ["\"0x\"", "\"1220\"", "\"0x+1\"", "\"0xzz\"", "4640"] {
            let j = json.replace("\"0x1220\"", bad);
            assert!(serde_json::from_str::<IoapicState>(&j).is_err(), "{bad}");
        }
        let j = json.replace("\"0x1220\"", &format!("\"0x1{}\"", "0".repeat(32)));
        let e = serde_json::from_str::<IoapicState>(&j).unwrap_err();
        assert!(e.to_string().contains("more than 128 bits"), "{e}");
        let j = json.replacen('{', r#"{"extra":1,"#, 1);
        assert!(serde_json::from_str::<IoapicState>(&j).is_err());
    }

    #[test]
    fn restore_reports_sink_errors() {
        let (io, _) = driven();
        let (mut dst, l) = ioapic();
        *l.fail_routing.lock().unwrap() = true;
        let e = dst.restore(&io.state()).unwrap_err();
        assert!(matches!(e, IoapicStateError::InstallRoutes(_)), "{e}");
        *l.fail_routing.lock().unwrap() = false;
        let mut s = io.state();
        s.table[9].0 &= !RTE_REMOTE_IRR;
        *l.fail.lock().unwrap() = true;
        let e = dst.restore(&s).unwrap_err();
        assert!(matches!(e, IoapicStateError::Deliver { pin: 9, .. }), "{e}");
        assert!(std::error::Error::source(&e).is_some());
    }

    #[test]
    fn sink_errors_are_kept_not_raised() {
        let (mut io, l) = ioapic();
        *l.fail.lock().unwrap() = true;
        io.set_irq(2, true).unwrap();
        program(&mut io, 2, 0x42, 0);
        let e = io.take_error().expect("the failed delivery is kept");
        assert!(e.to_string().contains("KVM_SIGNAL_MSI"), "{e}");
        assert!(io.take_error().is_none());
        program(&mut io, 4, 0x44 | 1 << 15, 0);
        assert!(io.set_irq(4, true).is_err(), "the host's call sees it");
        // Odd accesses are ignored.
        io.write(IOWIN, &[]);
        io.write(IOWIN, &[0; 8]);
        io.write(0x30, &[1]);
    }
}
