//! ACPI PM1a event and control registers: the guest's ACPI power-off path.

use super::{EventSink, PlatformEvent};
use std::sync::Arc;
use vm_device::bus::{PioAddress, PioAddressOffset};
use vm_device::MutDevicePio;

/// PM1a_EVT_BLK (4 bytes: status, enable) followed by PM1a_CNT_BLK (2 bytes),
/// as the FADT describes them. Writing SLP_EN with the S5 sleep type powers off.
#[derive(Debug)]
pub struct AcpiPm {
    sink: Arc<EventSink>,
    status: u16,
    enable: u16,
    control: u16,
}

const SLP_EN: u16 = 1 << 13;
const SLP_TYP_SHIFT: u16 = 10;
const SCI_EN: u16 = 1;

impl AcpiPm {
    /// PM1a_EVT_BLK port.
    pub const EVT_PORT: u16 = 0x600;
    /// PM1a_CNT_BLK port.
    pub const CNT_PORT: u16 = 0x604;
    /// The ports used, from `EVT_PORT`.
    pub const LEN: u16 = 6;
    /// The SLP_TYP value of S5 in this VMM's `\_S5_` package.
    pub const S5_TYPE: u8 = 5;

    /// Registers reporting to `sink`; ACPI mode is on from the start (SMI_CMD = 0).
    pub fn new(sink: Arc<EventSink>) -> Self {
        AcpiPm {
            sink,
            status: 0,
            enable: 0,
            control: SCI_EN,
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

impl MutDevicePio for AcpiPm {
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
                if value & SLP_EN != 0 && typ == u16::from(Self::S5_TYPE) {
                    self.sink.send(PlatformEvent::PowerOff);
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc::channel;

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
}
