//! ACPI PM1a event and control registers: the guest's ACPI power-off path
//! and the fixed-feature power button.

use super::{DeviceStateError, EventSink, PlatformEvent};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use vm_device::bus::{PioAddress, PioAddressOffset};
use vm_device::MutDevicePio;

/// A level-triggered interrupt line (the ACPI SCI): the device sets its
/// level, the VMM decides how it reaches the guest (`KVM_IRQ_LINE`, a
/// userspace IOAPIC pin).
pub trait LevelIrq: Send {
    /// Drives the line high (`true`) or low.
    fn set_level(&self, level: bool);
}

/// A line that goes nowhere, for a PM block without an SCI.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoIrq;

impl LevelIrq for NoIrq {
    fn set_level(&self, _: bool) {}
}

/// The saved state of an [`AcpiPm`]: the three PM1a registers.
///
/// The SCI's level is not carried: it follows from them (`SCI_EN` in the
/// control register and a status bit whose enable bit is set), and
/// [`AcpiPm::restore`] drives the line to it. The line itself and the
/// event sink belong to the live VMM.
///
/// ```
/// use kvmkit_vmm_reference::devices::{AcpiPm, AcpiPmState};
/// // A power-button press the guest enabled and has not handled yet.
/// let s = AcpiPmState { status: AcpiPm::PWRBTN, enable: AcpiPm::PWRBTN, control: 1 };
/// s.check()?;
/// assert!(s.sci_level());
/// let json = serde_json::to_string(&s).unwrap();
/// assert_eq!(json, r#"{"status":256,"enable":256,"control":1}"#);
/// # Ok::<(), kvmkit_vmm_reference::devices::DeviceStateError>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AcpiPmState {
    /// `PM1a_STS`: only the fixed events this block implements
    /// (`PWRBTN_STS`, bit 8) can be set.
    pub status: u16,
    /// `PM1a_EN`, as the guest wrote it.
    pub enable: u16,
    /// `PM1a_CNT`: `SCI_EN` (bit 0) always set, `SLP_EN` (bit 13) never
    /// kept (writing it is the sleep command, not a state).
    pub control: u16,
}

impl AcpiPmState {
    /// Checks that the PM block could be in this state: no status bit but
    /// the fixed events it implements, `SCI_EN` set and `SLP_EN` clear.
    ///
    /// ```
    /// use kvmkit_vmm_reference::devices::{AcpiPmState, DeviceStateError};
    /// let s = AcpiPmState { status: 0, enable: 0, control: 1 << 13 | 1 };
    /// assert!(matches!(s.check(), Err(DeviceStateError::AcpiPmRegister { register: "PM1a_CNT", .. })));
    /// ```
    pub fn check(&self) -> Result<(), DeviceStateError> {
        let bad = |register, value, reason| DeviceStateError::AcpiPmRegister {
            register,
            value,
            reason,
        };
        if self.status & !FIXED_EVENTS != 0 {
            return Err(bad(
                "PM1a_STS",
                self.status,
                "only PWRBTN_STS (0x0100) can be set",
            ));
        }
        if self.control & SCI_EN == 0 {
            return Err(bad(
                "PM1a_CNT",
                self.control,
                "SCI_EN is always set (ACPI mode)",
            ));
        }
        if self.control & SLP_EN != 0 {
            return Err(bad(
                "PM1a_CNT",
                self.control,
                "SLP_EN is a command, never kept",
            ));
        }
        Ok(())
    }

    /// The SCI level these registers mean: `SCI_EN` and an enabled status
    /// bit.
    ///
    /// ```
    /// use kvmkit_vmm_reference::devices::AcpiPmState;
    /// assert!(!AcpiPmState { status: 0x100, enable: 0, control: 1 }.sci_level());
    /// ```
    pub fn sci_level(&self) -> bool {
        self.control & SCI_EN != 0 && self.status & self.enable & FIXED_EVENTS != 0
    }
}

/// PM1a_EVT_BLK (4 bytes: status, enable) followed by PM1a_CNT_BLK (2 bytes),
/// as the FADT describes them. Writing SLP_EN with the S5 sleep type powers off.
///
/// The power button is ACPI's fixed-feature button:
/// [`AcpiPm::press_power_button`] sets `PWRBTN_STS` (bit 8 of the status
/// register); while `PWRBTN_EN` (bit 8 of the enable register) and `SCI_EN`
/// are set, a set status bit holds the SCI high until the guest clears it
/// (status bits are write-one-to-clear).
///
/// ```
/// use kvmkit_vmm_reference::devices::{AcpiPm, EventSink, LevelIrq};
/// use std::sync::atomic::{AtomicBool, Ordering};
/// use std::sync::{mpsc::channel, Arc};
/// use vm_device::{bus::PioAddress, MutDevicePio};
///
/// struct Line(Arc<AtomicBool>);
/// impl LevelIrq for Line {
///     fn set_level(&self, l: bool) { self.0.store(l, Ordering::SeqCst) }
/// }
/// let sci = Arc::new(AtomicBool::new(false));
/// let (tx, _rx) = channel();
/// let mut pm = AcpiPm::with_sci(Arc::new(EventSink::new(tx)), Line(sci.clone()));
/// let base = PioAddress(AcpiPm::EVT_PORT);
/// pm.pio_write(base, 2, &AcpiPm::PWRBTN.to_le_bytes()); // PWRBTN_EN
/// pm.press_power_button();
/// assert!(sci.load(Ordering::SeqCst));
/// pm.pio_write(base, 0, &AcpiPm::PWRBTN.to_le_bytes()); // clear PWRBTN_STS
/// assert!(!sci.load(Ordering::SeqCst));
/// ```
#[derive(Debug)]
pub struct AcpiPm<L: LevelIrq = NoIrq> {
    sink: Arc<EventSink>,
    sci: L,
    sci_level: bool,
    status: u16,
    enable: u16,
    control: u16,
}

const SLP_EN: u16 = 1 << 13;
const SLP_TYP_SHIFT: u16 = 10;
const SCI_EN: u16 = 1;
const PWRBTN: u16 = 1 << 8;
const S5_TYPE: u8 = 5;
/// The fixed events this block implements (only the power button).
const FIXED_EVENTS: u16 = PWRBTN;

impl AcpiPm<NoIrq> {
    /// PM1a_EVT_BLK port.
    pub const EVT_PORT: u16 = 0x600;
    /// PM1a_CNT_BLK port.
    pub const CNT_PORT: u16 = 0x604;
    /// The ports used, from `EVT_PORT`.
    pub const LEN: u16 = 6;
    /// The SLP_TYP value of S5 in this VMM's `\_S5_` package.
    pub const S5_TYPE: u8 = S5_TYPE;
    /// `PWRBTN_STS` / `PWRBTN_EN`: bit 8 of the PM1 status and enable registers.
    pub const PWRBTN: u16 = PWRBTN;

    /// Registers reporting to `sink`, without an SCI; ACPI mode is on from
    /// the start (SMI_CMD = 0).
    pub fn new(sink: Arc<EventSink>) -> Self {
        AcpiPm::with_sci(sink, NoIrq)
    }
}

impl<L: LevelIrq> AcpiPm<L> {
    /// Registers reporting to `sink` and raising `sci`; ACPI mode is on from
    /// the start (SMI_CMD = 0).
    pub fn with_sci(sink: Arc<EventSink>, sci: L) -> Self {
        AcpiPm {
            sink,
            sci,
            sci_level: false,
            status: 0,
            enable: 0,
            control: SCI_EN,
        }
    }

    /// The power button was pressed (QMP `system_powerdown`): sets
    /// `PWRBTN_STS`, which raises the SCI if the guest enabled the event.
    /// A guest that never enabled it sees nothing happen.
    pub fn press_power_button(&mut self) {
        self.status |= PWRBTN;
        self.update_sci();
    }

    /// The PM1 status register (`PM1a_STS`).
    pub fn status(&self) -> u16 {
        self.status
    }

    /// The saved state of the PM block, for a snapshot: see
    /// [`AcpiPmState`].
    ///
    /// ```
    /// use kvmkit_vmm_reference::devices::{AcpiPm, EventSink};
    /// use std::sync::{mpsc::channel, Arc};
    /// let pm = AcpiPm::new(Arc::new(EventSink::new(channel().0)));
    /// assert_eq!(pm.state().control, 1, "SCI_EN");
    /// ```
    pub fn state(&self) -> AcpiPmState {
        AcpiPmState {
            status: self.status,
            enable: self.enable,
            control: self.control,
        }
    }

    /// Puts the PM block in `state` (saved by [`AcpiPm::state`], maybe in
    /// another process), keeping its SCI line and event sink. The state is
    /// checked first ([`AcpiPmState::check`]); a refused state changes
    /// nothing.
    ///
    /// The SCI is driven to the restored level: raised again if the state
    /// holds an enabled event (the guest has a power-button press to
    /// handle; the line is level-triggered, so its level must be asserted
    /// anew for the interrupt controller of the new process), lowered if
    /// this block had raised it. Restoring never powers off.
    ///
    /// ```
    /// use kvmkit_vmm_reference::devices::{AcpiPm, AcpiPmState, EventSink, LevelIrq};
    /// use std::sync::atomic::{AtomicBool, Ordering};
    /// use std::sync::{mpsc::channel, Arc};
    ///
    /// struct Line(Arc<AtomicBool>);
    /// impl LevelIrq for Line {
    ///     fn set_level(&self, l: bool) { self.0.store(l, Ordering::SeqCst) }
    /// }
    /// let sci = Arc::new(AtomicBool::new(false));
    /// let mut pm = AcpiPm::with_sci(Arc::new(EventSink::new(channel().0)), Line(sci.clone()));
    /// pm.restore(&AcpiPmState { status: AcpiPm::PWRBTN, enable: AcpiPm::PWRBTN, control: 1 })?;
    /// assert!(sci.load(Ordering::SeqCst));
    /// # Ok::<(), kvmkit_vmm_reference::devices::DeviceStateError>(())
    /// ```
    pub fn restore(&mut self, state: &AcpiPmState) -> Result<(), DeviceStateError> {
        state.check()?;
        self.status = state.status;
        self.enable = state.enable;
        self.control = state.control;
        let level = state.sci_level();
        if level || self.sci_level {
            self.sci_level = level;
            self.sci.set_level(level);
        }
        Ok(())
    }

    fn update_sci(&mut self) {
        let level = self.state().sci_level();
        if level != self.sci_level {
            self.sci_level = level;
            self.sci.set_level(level);
        }
    }

    fn reg(&mut self, offset: u16) -> Option<&mut u16> {
        match offset {
            0 => Some(&mut self.status),
            2 => Some(&mut self.enable),
            4 => Some(&mut self.control),
            _ => None,
        }
    }
}

impl<L: LevelIrq> MutDevicePio for AcpiPm<L> {
    fn pio_read(&mut self, _: PioAddress, offset: PioAddressOffset, data: &mut [u8]) {
        let v = self.reg(offset & !1).map_or(0, |r| *r);
        let bytes = v.to_le_bytes();
        let start = usize::from(offset & 1 == 1);
        for (i, b) in data.iter_mut().enumerate() {
            *b = bytes.get(start + i).copied().unwrap_or(0);
        }
    }

    fn pio_write(&mut self, _: PioAddress, offset: PioAddressOffset, data: &[u8]) {
        let mut v = [0u8; 2];
        let n = data.len().min(2);
        v[..n].copy_from_slice(&data[..n]);
        let value = u16::from_le_bytes(v);
        match offset {
            // Status bits are write-one-to-clear.
            0 => self.status &= !value,
            2 => self.enable = value,
            4 => {
                self.control = (value & !SLP_EN) | SCI_EN;
                let typ = (value >> SLP_TYP_SHIFT) & 7;
                if value & SLP_EN != 0 && typ == u16::from(S5_TYPE) {
                    self.sink.send(PlatformEvent::PowerOff);
                }
            }
            _ => {}
        }
        self.update_sci();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc::channel;
    use std::sync::Mutex;

    #[test]
    fn s5_powers_off_other_states_do_not() {
        let (tx, rx) = channel();
        let mut pm = AcpiPm::new(Arc::new(EventSink::new(tx)));
        let base = PioAddress(AcpiPm::EVT_PORT);
        let mut b = [0u8; 2];
        pm.pio_read(base, 4, &mut b);
        assert_eq!(u16::from_le_bytes(b) & SCI_EN, SCI_EN, "ACPI mode on");
        pm.pio_write(base, 4, &((1u16 << 10) | SLP_EN).to_le_bytes()); // S1
        assert!(rx.try_recv().is_err());
        pm.pio_write(base, 2, &0x0100u16.to_le_bytes());
        pm.pio_read(base, 2, &mut b);
        assert_eq!(u16::from_le_bytes(b), 0x0100);
        pm.pio_write(base, 4, &((5u16 << 10) | SLP_EN).to_le_bytes());
        assert_eq!(rx.try_recv().unwrap(), PlatformEvent::PowerOff);
        pm.pio_read(base, 5, &mut b[..1]);
        pm.pio_write(base, 9, &[1]);
    }

    /// Records every level change.
    #[derive(Clone, Default)]
    struct Recorder(Arc<Mutex<Vec<bool>>>);
    impl LevelIrq for Recorder {
        fn set_level(&self, l: bool) {
            self.0.lock().unwrap().push(l);
        }
    }

    #[test]
    fn power_button_raises_the_sci_only_when_enabled() {
        let (tx, _rx) = channel();
        let rec = Recorder::default();
        let mut pm = AcpiPm::with_sci(Arc::new(EventSink::new(tx)), rec.clone());
        let base = PioAddress(AcpiPm::EVT_PORT);
        let pwrbtn = AcpiPm::PWRBTN;
        // Not enabled: the status bit is set, the line stays low.
        pm.press_power_button();
        assert_eq!(pm.status(), pwrbtn);
        assert!(rec.0.lock().unwrap().is_empty());
        let mut b = [0u8; 2];
        pm.pio_read(base, 0, &mut b);
        assert_eq!(u16::from_le_bytes(b), pwrbtn, "the guest sees PWRBTN_STS");
        // Enabling with the status pending raises the SCI at once.
        pm.pio_write(base, 2, &pwrbtn.to_le_bytes());
        assert_eq!(*rec.0.lock().unwrap(), [true]);
        // A second press while pending changes nothing on the line.
        pm.press_power_button();
        assert_eq!(*rec.0.lock().unwrap(), [true]);
        // Writing a zero leaves the status; writing the bit clears it.
        pm.pio_write(base, 0, &0u16.to_le_bytes());
        assert_eq!(pm.status(), pwrbtn);
        pm.pio_write(base, 0, &pwrbtn.to_le_bytes());
        assert_eq!(pm.status(), 0);
        assert_eq!(*rec.0.lock().unwrap(), [true, false]);
        // Enabled from the start: a press raises, disabling lowers.
        pm.press_power_button();
        assert_eq!(*rec.0.lock().unwrap(), [true, false, true]);
        pm.pio_write(base, 2, &0u16.to_le_bytes());
        assert_eq!(*rec.0.lock().unwrap(), [true, false, true, false]);
        // A byte write to the enable register's high byte is not a word.
        pm.pio_write(base, 2, &[0x00]);
        pm.pio_read(base, 3, &mut b[..1]);
        assert_eq!(b[0], 0);
    }

    #[test]
    fn sci_en_cannot_be_cleared() {
        let (tx, _rx) = channel();
        let rec = Recorder::default();
        let mut pm = AcpiPm::with_sci(Arc::new(EventSink::new(tx)), rec.clone());
        let base = PioAddress(AcpiPm::EVT_PORT);
        pm.pio_write(base, 4, &0u16.to_le_bytes());
        let mut b = [0u8; 2];
        pm.pio_read(base, 4, &mut b);
        assert_eq!(u16::from_le_bytes(b) & SCI_EN, SCI_EN);
        pm.pio_write(base, 2, &AcpiPm::PWRBTN.to_le_bytes());
        pm.press_power_button();
        assert_eq!(*rec.0.lock().unwrap(), [true]);
    }

    #[test]
    fn state_round_trips_and_restore_drives_the_sci() {
        let (tx, rx) = channel();
        let sink = Arc::new(EventSink::new(tx));
        let base = PioAddress(AcpiPm::EVT_PORT);
        let mut a = AcpiPm::new(sink.clone());
        a.pio_write(base, 2, &PWRBTN.to_le_bytes());
        a.pio_write(base, 4, &(3u16 << SLP_TYP_SHIFT).to_le_bytes());
        a.press_power_button();
        let s = a.state();
        assert_eq!(
            s,
            AcpiPmState {
                status: PWRBTN,
                enable: PWRBTN,
                control: 3 << 10 | 1
            }
        );
        let back: AcpiPmState = serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
        assert_eq!(back, s);
        // Restored: the SCI goes up at once, and the guest's accesses see
        // the same registers and lower it the same way.
        let rec = Recorder::default();
        let mut b = AcpiPm::with_sci(sink.clone(), rec.clone());
        b.restore(&back).unwrap();
        assert_eq!(*rec.0.lock().unwrap(), [true]);
        let mut x = [0u8; 6];
        let mut y = [0u8; 6];
        a.pio_read(base, 0, &mut x[..2]);
        b.pio_read(base, 0, &mut y[..2]);
        a.pio_read(base, 2, &mut x[2..4]);
        b.pio_read(base, 2, &mut y[2..4]);
        a.pio_read(base, 4, &mut x[4..]);
        b.pio_read(base, 4, &mut y[4..]);
        assert_eq!(x, y);
        b.pio_write(base, 0, &PWRBTN.to_le_bytes());
        assert_eq!(*rec.0.lock().unwrap(), [true, false]);
        // Restoring a quiet state lowers a raised line; a quiet state into
        // a quiet block does not touch it; nothing powers off.
        b.press_power_button();
        b.restore(&AcpiPmState {
            status: 0,
            enable: PWRBTN,
            control: 1,
        })
        .unwrap();
        assert_eq!(*rec.0.lock().unwrap(), [true, false, true, false]);
        b.restore(&AcpiPmState {
            status: PWRBTN,
            enable: 0,
            control: 1,
        })
        .unwrap();
        assert_eq!(rec.0.lock().unwrap().len(), 4);
        assert!(rx.try_recv().is_err());
    }

    #[test]
    fn malformed_states_are_refused_and_change_nothing() {
        let (tx, _rx) = channel();
        let rec = Recorder::default();
        let mut pm = AcpiPm::with_sci(Arc::new(EventSink::new(tx)), rec.clone());
        pm.pio_write(PioAddress(AcpiPm::EVT_PORT), 2, &PWRBTN.to_le_bytes());
        let before = pm.state();
        for (s, msg) in [
            (
                AcpiPmState {
                    status: 1,
                    enable: 1,
                    control: 1,
                },
                "PM1a_STS 0x0001",
            ),
            (
                AcpiPmState {
                    status: 0,
                    enable: 0,
                    control: 0,
                },
                "SCI_EN",
            ),
            (
                AcpiPmState {
                    status: 0,
                    enable: 0,
                    control: SLP_EN | 5 << 10 | 1,
                },
                "SLP_EN",
            ),
        ] {
            let e = pm.restore(&s).unwrap_err();
            assert!(e.to_string().contains(msg), "{e} / {msg}");
            assert_eq!(pm.state(), before);
        }
        assert!(rec.0.lock().unwrap().is_empty());
        assert!(serde_json::from_str::<AcpiPmState>(r#"{"status":0,"enable":0}"#).is_err());
        assert!(
            serde_json::from_str::<AcpiPmState>(r#"{"status":0,"enable":0,"control":65536}"#)
                .is_err()
        );
    }
}
