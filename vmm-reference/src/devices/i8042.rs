//! The i8042 keyboard controller: vm-superio's, whose reset command ends the VM.

use super::{EventSink, PlatformEvent};
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
}
