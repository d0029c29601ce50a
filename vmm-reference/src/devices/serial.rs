//! The 8250 UART: vm-superio's serial on a port range, its interrupt an eventfd.

use std::io::Write;
use std::sync::Mutex;
use vm_device::bus::{PioAddress, PioAddressOffset};
use vm_device::MutDevicePio;
use vm_superio::{Serial, Trigger};
use vmm_sys_util::eventfd::EventFd;

/// An interrupt line backed by an eventfd (an irqfd for the in-kernel irqchip).
#[derive(Debug)]
pub struct EventFdTrigger(pub EventFd);

impl Trigger for EventFdTrigger {
    type E = std::io::Error;
    fn trigger(&self) -> Result<(), Self::E> {
        self.0.write(1)
    }
}

/// The serial output sink.
pub type SerialOut = Box<dyn Write + Send>;

/// vm-superio's 8250 on 8 ports.
pub struct SerialPort(Serial<EventFdTrigger, vm_superio::serial::NoEvents, SerialOut>);

impl std::fmt::Debug for SerialPort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SerialPort").finish_non_exhaustive()
    }
}

impl SerialPort {
    /// COM1's base port.
    pub const COM1: u16 = 0x3f8;
    /// COM1's ISA IRQ.
    pub const COM1_IRQ: u32 = 4;
    /// Eight registers.
    pub const LEN: u16 = 8;

    /// A UART writing to `out` and raising `irq`.
    pub fn new(irq: EventFdTrigger, out: SerialOut) -> Mutex<Self> {
        Mutex::new(SerialPort(Serial::new(irq, out)))
    }

    /// Queues host input for the guest; returns how many bytes fitted in the FIFO.
    pub fn enqueue(&mut self, input: &[u8]) -> usize {
        let room = self.0.fifo_capacity().min(input.len());
        if room == 0 {
            return 0;
        }
        self.0.enqueue_raw_bytes(&input[..room]).unwrap_or(0)
    }

    /// Flushes buffered output.
    pub fn flush(&mut self) {
        let _ = self.0.writer_mut().flush();
    }
}

impl MutDevicePio for SerialPort {
    fn pio_read(&mut self, _: PioAddress, offset: PioAddressOffset, data: &mut [u8]) {
        let v = u8::try_from(offset).map_or(0xff, |o| self.0.read(o));
        data.fill(0);
        if let Some(b) = data.first_mut() {
            *b = v;
        }
    }

    fn pio_write(&mut self, _: PioAddress, offset: PioAddressOffset, data: &[u8]) {
        if let (Ok(o), Some(&v)) = (u8::try_from(offset), data.first()) {
            // An output error (a closed pipe) must not stop the guest.
            let _ = self.0.write(o, v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex as M};

    #[derive(Clone, Default)]
    struct Buf(Arc<M<Vec<u8>>>);
    impl Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn output_input_and_interrupt() {
        let buf = Buf::default();
        let irq = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let port = SerialPort::new(
            EventFdTrigger(irq.try_clone().unwrap()),
            Box::new(buf.clone()),
        );
        let mut p = port.lock().unwrap();
        let base = PioAddress(SerialPort::COM1);
        p.pio_write(base, 0, b"h");
        p.pio_write(base, 0, b"i");
        p.flush();
        assert_eq!(&*buf.0.lock().unwrap(), b"hi");
        p.pio_write(base, 1, &[0x01]); // IER: receive interrupt
        assert_eq!(p.enqueue(b"ok"), 2);
        assert_eq!(irq.read().unwrap(), 1);
        let mut b = [0u8];
        p.pio_read(base, 5, &mut b);
        assert_eq!(b[0] & 1, 1, "LSR: data ready");
        p.pio_read(base, 0, &mut b);
        assert_eq!(b[0], b'o');
        assert_eq!(p.enqueue(&[]), 0);
        let big = vec![b'x'; 200];
        assert!(p.enqueue(&big) <= 64);
        p.pio_read(base, 99, &mut b);
    }
}
