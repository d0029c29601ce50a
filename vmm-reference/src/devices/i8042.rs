//! The i8042 keyboard controller: vm-superio's, whose reset command ends the VM.

use super::{DeviceStateError, EventSink, PlatformEvent};
use serde::{Deserialize, Serialize};
use std::sync::{Arc, Mutex};
use vm_device::bus::{PioAddress, PioAddressOffset};
use vm_device::MutDevicePio;
use vm_superio::{I8042Device, Trigger};

/// Sends [`PlatformEvent::Reset`] when triggered.
#[derive(Debug, Clone)]
pub struct ResetTrigger(Arc<EventSink>);

impl Trigger for ResetTrigger {
    type E = std::convert::Infallible;
    fn trigger(&self) -> Result<(), Self::E> {
        self.0.send(PlatformEvent::Reset);
        Ok(())
    }
}

/// The saved state of an [`I8042Port`]: empty (`{}` in JSON).
///
/// vm-superio's `I8042Device` keeps no register: every read returns 0 and
/// the only write that does anything is the reset command, which has no
/// lasting effect on the device. Its one field is the reset trigger, which
/// belongs to the live VMM. The struct exists so that every device has a
/// state and a restore, and so that a later i8042 with state (a keyboard
/// buffer, the command byte) can fill it without changing the API.
///
/// ```
/// use kvmkit_vmm_reference::devices::I8042PortState;
/// assert_eq!(serde_json::to_string(&I8042PortState {}).unwrap(), "{}");
/// assert!(serde_json::from_str::<I8042PortState>(r#"{"cmd":1}"#).is_err());
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct I8042PortState {}

/// vm-superio's i8042 on ports 0x60..0x64 (the guest's reset pulse: 0xfe to 0x64).
#[derive(Debug)]
pub struct I8042Port(I8042Device<ResetTrigger>);

impl I8042Port {
    /// The port range base and length.
    pub const BASE: u16 = 0x60;
    /// Ports 0x60 to 0x64.
    pub const LEN: u16 = 5;

    /// A controller whose reset command goes to `sink`.
    pub fn new(sink: Arc<EventSink>) -> Mutex<Self> {
        Mutex::new(I8042Port(I8042Device::new(ResetTrigger(sink))))
    }
}

impl I8042Port {
    /// The saved state of the controller: nothing ([`I8042PortState`]).
    ///
    /// ```
    /// use kvmkit_vmm_reference::devices::{EventSink, I8042Port, I8042PortState};
    /// use std::sync::{mpsc::channel, Arc};
    /// let port = I8042Port::new(Arc::new(EventSink::new(channel().0)));
    /// assert_eq!(port.lock().unwrap().state(), I8042PortState {});
    /// ```
    pub fn state(&self) -> I8042PortState {
        I8042PortState {}
    }

    /// Puts the controller in `state`: there is nothing to restore, and it
    /// keeps its reset trigger. It cannot fail today; the `Result` is for a
    /// later state that can be refused.
    ///
    /// ```
    /// use kvmkit_vmm_reference::devices::{EventSink, I8042Port, I8042PortState};
    /// use std::sync::{mpsc::channel, Arc};
    /// let port = I8042Port::new(Arc::new(EventSink::new(channel().0)));
    /// port.lock().unwrap().restore(&I8042PortState {})?;
    /// # Ok::<(), kvmkit_vmm_reference::devices::DeviceStateError>(())
    /// ```
    pub fn restore(&mut self, state: &I8042PortState) -> Result<(), DeviceStateError> {
        let I8042PortState {} = state;
        Ok(())
    }
}

impl MutDevicePio for I8042Port {
    fn pio_read(&mut self, _: PioAddress, offset: PioAddressOffset, data: &mut [u8]) {
        let v = u8::try_from(offset).map_or(0xff, |o| self.0.read(o));
        data.fill(0);
        if let Some(b) = data.first_mut() {
            *b = v;
        }
    }

    fn pio_write(&mut self, _: PioAddress, offset: PioAddressOffset, data: &[u8]) {
        if let (Ok(o), Some(&v)) = (u8::try_from(offset), data.first()) {
            let _ = self.0.write(o, v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc::channel;

    #[test]
    fn reset_command_sends_reset() {
        let (tx, rx) = channel();
        let port = I8042Port::new(Arc::new(EventSink::new(tx)));
        let mut p = port.lock().unwrap();
        p.pio_write(PioAddress(0x60), 4, &[0x20]);
        assert!(rx.try_recv().is_err());
        p.pio_write(PioAddress(0x60), 4, &[0xfe]);
        assert_eq!(rx.try_recv().unwrap(), PlatformEvent::Reset);
        let mut b = [0xaa; 1];
        p.pio_read(PioAddress(0x60), 4, &mut b);
        assert_eq!(b, [0]);
    }

    #[test]
    fn restored_controller_still_resets() {
        let (tx, rx) = channel();
        let port = I8042Port::new(Arc::new(EventSink::new(tx)));
        let mut p = port.lock().unwrap();
        let s = p.state();
        let back: I8042PortState =
            serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
        p.restore(&back).unwrap();
        let mut b = [0xaa; 1];
        p.pio_read(PioAddress(0x60), 0, &mut b);
        assert_eq!(b, [0]);
        p.pio_write(PioAddress(0x60), 4, &[0xfe]);
        assert_eq!(rx.try_recv().unwrap(), PlatformEvent::Reset);
    }
}
