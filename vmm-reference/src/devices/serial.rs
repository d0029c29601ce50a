//! The 8250 UART: vm-superio's serial on a port range, its interrupt an eventfd.

use super::state::hex_bytes;
use super::DeviceStateError;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::sync::{Arc, Mutex};
use vm_device::bus::{PioAddress, PioAddressOffset};
use vm_device::MutDevicePio;
use vm_superio::serial::NoEvents;
use vm_superio::{Serial, SerialState, Trigger};
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

/// The line as the UART holds it: shared, so that a restored UART signals
/// the very eventfd of the live one (vm-superio lends its trigger by
/// reference only).
#[derive(Debug, Clone)]
struct SharedTrigger(Arc<EventFdTrigger>);

impl Trigger for SharedTrigger {
    type E = std::io::Error;
    fn trigger(&self) -> Result<(), Self::E> {
        self.0.trigger()
    }
}

/// The serial output sink.
pub type SerialOut = Box<dyn Write + Send>;

/// vm-superio's receive FIFO size (private there): 64 bytes, a 16550A's.
const FIFO_SIZE: usize = 64;
const IER_VALID: u8 = 0x0f;
const IIR_NONE: u8 = 0x01;
const IIR_THR_EMPTY: u8 = 0x02;
const IIR_RDA: u8 = 0x04;
const LSR_DATA_READY: u8 = 0x01;
const LSR_THR_EMPTY: u8 = 0x20;
const LSR_IDLE: u8 = 0x40;

/// The saved state of a [`SerialPort`]: vm-superio's `SerialState` (which
/// has no serde), field for field, with the receive FIFO as a hex string
/// in JSON.
///
/// Carried: the divisor latch, IER, IIR (the interrupts pending and not yet
/// identified by the guest), LCR, LSR, MCR, MSR, the scratch register and
/// the bytes in the receive FIFO that the guest has not read. Not carried:
/// the interrupt line and the output, which belong to the live port; output
/// already written is gone (flush the port before saving), and input still
/// on its way from the host (not yet enqueued) stays with the old process.
///
/// ```
/// use kvmkit_vmm_reference::devices::SerialPortState;
/// let s = SerialPortState { in_buffer: b"ls".to_vec(), line_status: 0x61, ..Default::default() };
/// s.check()?;
/// let json = serde_json::to_string(&s).unwrap();
/// assert!(json.contains(r#""in_buffer":"6c73""#));
/// assert_eq!(serde_json::from_str::<SerialPortState>(&json).unwrap(), s);
/// # Ok::<(), kvmkit_vmm_reference::devices::DeviceStateError>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SerialPortState {
    /// Divisor latch, low byte (DLL).
    pub baud_divisor_low: u8,
    /// Divisor latch, high byte (DLM).
    pub baud_divisor_high: u8,
    /// Interrupt enable register (IER): bits 0–3.
    pub interrupt_enable: u8,
    /// Interrupt identification register (IIR) without its FIFO bits: 0x01
    /// (none pending), or THR empty (0x02) and/or received data (0x04).
    pub interrupt_identification: u8,
    /// Line control register (LCR).
    pub line_control: u8,
    /// Line status register (LSR): THR empty and idle (0x60), plus data
    /// ready (0x01) exactly when the FIFO holds bytes.
    pub line_status: u8,
    /// Modem control register (MCR).
    pub modem_control: u8,
    /// Modem status register (MSR).
    pub modem_status: u8,
    /// Scratch register (SCR).
    pub scratch: u8,
    /// The receive FIFO, oldest byte first: at most 64 bytes.
    #[serde(with = "hex_bytes")]
    pub in_buffer: Vec<u8>,
}

impl Default for SerialPortState {
    /// The state of a UART after reset.
    fn default() -> Self {
        SerialState::default().into()
    }
}

impl From<SerialState> for SerialPortState {
    fn from(s: SerialState) -> Self {
        SerialPortState {
            baud_divisor_low: s.baud_divisor_low,
            baud_divisor_high: s.baud_divisor_high,
            interrupt_enable: s.interrupt_enable,
            interrupt_identification: s.interrupt_identification,
            line_control: s.line_control,
            line_status: s.line_status,
            modem_control: s.modem_control,
            modem_status: s.modem_status,
            scratch: s.scratch,
            in_buffer: s.in_buffer,
        }
    }
}

impl TryFrom<&SerialPortState> for SerialState {
    type Error = DeviceStateError;

    /// vm-superio's state, if [`SerialPortState::check`] accepts `s`.
    fn try_from(s: &SerialPortState) -> Result<Self, DeviceStateError> {
        s.check()?;
        Ok(SerialState {
            baud_divisor_low: s.baud_divisor_low,
            baud_divisor_high: s.baud_divisor_high,
            interrupt_enable: s.interrupt_enable,
            interrupt_identification: s.interrupt_identification,
            line_control: s.line_control,
            line_status: s.line_status,
            modem_control: s.modem_control,
            modem_status: s.modem_status,
            scratch: s.scratch,
            in_buffer: s.in_buffer.clone(),
        })
    }
}

impl SerialPortState {
    /// Checks that vm-superio's UART could be in this state: at most 64
    /// bytes in the FIFO, no reserved IER bit, an IIR the UART produces
    /// (0x01, 0x02, 0x04 or 0x06), and an LSR of 0x60 with data ready
    /// exactly when the FIFO holds bytes. The other registers take any
    /// value (the guest writes them freely, or they only read back).
    ///
    /// ```
    /// use kvmkit_vmm_reference::devices::{DeviceStateError, SerialPortState};
    /// let s = SerialPortState { in_buffer: vec![0; 65], ..Default::default() };
    /// assert!(matches!(s.check(), Err(DeviceStateError::SerialFifo { len: 65, max: 64 })));
    /// ```
    pub fn check(&self) -> Result<(), DeviceStateError> {
        let len = self.in_buffer.len();
        if len > FIFO_SIZE {
            return Err(DeviceStateError::SerialFifo {
                len,
                max: FIFO_SIZE,
            });
        }
        let bad = |register, value, reason| DeviceStateError::SerialRegister {
            register,
            value,
            reason,
        };
        if self.interrupt_enable & !IER_VALID != 0 {
            return Err(bad("IER", self.interrupt_enable, "bits 4-7 are reserved"));
        }
        let iir = self.interrupt_identification;
        if iir != IIR_NONE && (iir == 0 || iir & !(IIR_THR_EMPTY | IIR_RDA) != 0) {
            return Err(bad(
                "IIR",
                iir,
                "the UART identifies none, THR empty or received data",
            ));
        }
        let lsr = LSR_THR_EMPTY | LSR_IDLE | if len > 0 { LSR_DATA_READY } else { 0 };
        if self.line_status != lsr {
            return Err(bad(
                "LSR",
                self.line_status,
                "the UART shows 0x60, with 0x01 (data ready) while the FIFO holds bytes",
            ));
        }
        Ok(())
    }
}

/// vm-superio's 8250 on 8 ports.
pub struct SerialPort(Serial<SharedTrigger, NoEvents, SerialOut>);

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
        Mutex::new(SerialPort(Serial::new(SharedTrigger(Arc::new(irq)), out)))
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

    /// The saved state of the UART, for a snapshot: see [`SerialPortState`].
    ///
    /// ```
    /// use kvmkit_vmm_reference::devices::{EventFdTrigger, SerialPort};
    /// use vmm_sys_util::eventfd::EventFd;
    /// let irq = EventFdTrigger(EventFd::new(libc::EFD_NONBLOCK).unwrap());
    /// let port = SerialPort::new(irq, Box::new(std::io::sink()));
    /// let mut p = port.lock().unwrap();
    /// p.enqueue(b"ls\n");
    /// assert_eq!(p.state().in_buffer, b"ls\n");
    /// ```
    pub fn state(&self) -> SerialPortState {
        self.0.state().into()
    }

    /// Puts the UART in `state` (saved by [`SerialPort::state`], maybe in
    /// another process), keeping this port's interrupt line and output.
    /// The state is checked first ([`SerialPortState::check`]); on any
    /// error the port is unchanged.
    ///
    /// **The interrupt.** If the restored IIR shows an interrupt that IER
    /// enables (received data, or THR empty), the line is signalled again,
    /// as vm-superio's `Serial::from_state` does. The guest may then see
    /// that interrupt twice, if the source had already sent its edge and the
    /// restored irqchip or LAPIC still holds it: harmless, as Linux's 8250
    /// driver reads IIR, finds nothing pending and returns `IRQ_NONE` (an
    /// IRQ line is disabled only after 99,900 of 100,000 such). Not
    /// signalling could lose it: COM1's IRQ 4 is edge-triggered, and
    /// vm-superio signals new input only when IIR does not already show
    /// received data, so a guest that never got that edge would never read
    /// its input again (the test guest's shell would stop). A FIFO with
    /// bytes but no pending IIR bit is not signalled: the guest has
    /// identified the interrupt and is draining the FIFO by LSR.
    ///
    /// Signalling writes the port's eventfd; with an irqfd registered, KVM
    /// delivers through the GSI's route, so restore the IOAPIC first with
    /// the split irqchip. An eventfd written before its irqfd is registered
    /// is delivered at registration.
    ///
    /// ```
    /// use kvmkit_vmm_reference::devices::{EventFdTrigger, SerialPort};
    /// use vm_device::{bus::PioAddress, MutDevicePio};
    /// use vmm_sys_util::eventfd::EventFd;
    /// let new = || {
    ///     let irq = EventFd::new(libc::EFD_NONBLOCK).unwrap();
    ///     let port = SerialPort::new(EventFdTrigger(irq.try_clone().unwrap()), Box::new(std::io::sink()));
    ///     (port, irq)
    /// };
    /// let (a, _) = new();
    /// let mut a = a.lock().unwrap();
    /// a.pio_write(PioAddress(0x3f8), 1, &[0x01]); // IER: received data
    /// a.enqueue(b"x");
    /// let (b, irq) = new();
    /// let mut b = b.lock().unwrap();
    /// b.restore(&a.state())?;
    /// assert_eq!(irq.read().unwrap(), 1, "the pending interrupt is signalled");
    /// let mut d = [0u8];
    /// b.pio_read(PioAddress(0x3f8), 0, &mut d);
    /// assert_eq!(d, *b"x");
    /// # Ok::<(), kvmkit_vmm_reference::devices::DeviceStateError>(())
    /// ```
    pub fn restore(&mut self, state: &SerialPortState) -> Result<(), DeviceStateError> {
        let st = SerialState::try_from(state)?;
        let irq = self.0.interrupt_evt().clone();
        // The output moves over once the restored UART exists, so that an
        // error leaves the live one whole.
        let out: SerialOut = Box::new(std::io::sink());
        let mut restored =
            Serial::from_state(&st, irq, NoEvents, out).map_err(DeviceStateError::SerialRestore)?;
        std::mem::swap(restored.writer_mut(), self.0.writer_mut());
        self.0 = restored;
        Ok(())
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

    fn new_port(buf: &Buf) -> (Mutex<SerialPort>, EventFd) {
        let irq = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let port = SerialPort::new(
            EventFdTrigger(irq.try_clone().unwrap()),
            Box::new(buf.clone()),
        );
        (port, irq)
    }

    const BASE: PioAddress = PioAddress(SerialPort::COM1);

    /// A port the guest programmed (115200 8N1 through the divisor latch,
    /// scratch, MCR, receive interrupt on) and the host fed three bytes.
    fn driven(p: &mut SerialPort) {
        p.pio_write(BASE, 3, &[0x80]); // LCR: DLAB
        p.pio_write(BASE, 0, &[0x01]); // DLL
        p.pio_write(BASE, 1, &[0x00]); // DLM
        p.pio_write(BASE, 3, &[0x03]); // LCR: 8N1
        p.pio_write(BASE, 7, &[0x5a]); // SCR
        p.pio_write(BASE, 4, &[0x0b]); // MCR: DTR, RTS, OUT2
        p.pio_write(BASE, 1, &[0x01]); // IER: received data
        assert_eq!(p.enqueue(b"abc"), 3);
    }

    fn read(p: &mut SerialPort, offset: u16) -> u8 {
        let mut b = [0u8];
        p.pio_read(BASE, offset, &mut b);
        b[0]
    }

    #[test]
    fn fifo_size_is_vm_superios() {
        let (port, _) = new_port(&Buf::default());
        assert_eq!(port.lock().unwrap().0.fifo_capacity(), FIFO_SIZE);
    }

    #[test]
    fn state_round_trips_through_json() {
        let (port, _) = new_port(&Buf::default());
        let mut p = port.lock().unwrap();
        driven(&mut p);
        let s = p.state();
        assert_eq!(
            (s.baud_divisor_low, s.interrupt_enable, s.scratch),
            (1, 1, 0x5a)
        );
        assert_eq!(s.interrupt_identification, IIR_RDA);
        assert_eq!(s.in_buffer, b"abc");
        s.check().unwrap();
        let json = serde_json::to_string(&s).unwrap();
        let back: SerialPortState = serde_json::from_str(&json).unwrap();
        assert_eq!(back, s);
        let vs = SerialState::try_from(&back).unwrap();
        assert_eq!(SerialPortState::from(vs), s);
        let j = json.replacen('{', r#"{"fcr":1,"#, 1);
        assert!(serde_json::from_str::<SerialPortState>(&j).is_err());
    }

    #[test]
    fn restored_port_behaves_like_the_saved_one() {
        let (old_buf, new_buf) = (Buf::default(), Buf::default());
        let (a, a_irq) = new_port(&old_buf);
        let (b, b_irq) = new_port(&new_buf);
        let (mut a, mut b) = (a.lock().unwrap(), b.lock().unwrap());
        driven(&mut a);
        assert_eq!(a_irq.read().unwrap(), 1);
        b.restore(&a.state()).unwrap();
        assert_eq!(b_irq.read().unwrap(), 1, "IIR shows received data");
        assert_eq!(b.state(), a.state());
        // Every register reads the same, in the same order (IIR reads
        // clear, RBR reads pop), then the FIFO is drained alike.
        for offset in [1, 2, 2, 3, 4, 5, 6, 7, 0, 5, 0, 0, 5, 0, 2] {
            assert_eq!(read(&mut a, offset), read(&mut b, offset), "{offset}");
        }
        // New input raises the interrupt on both.
        assert_eq!((a.enqueue(b"z"), b.enqueue(b"z")), (1, 1));
        assert_eq!((a_irq.read().unwrap(), b_irq.read().unwrap()), (1, 1));
        // The restored port writes to its own output.
        b.pio_write(BASE, 0, b"k");
        b.flush();
        assert_eq!(&*new_buf.0.lock().unwrap(), b"k");
        assert!(old_buf.0.lock().unwrap().is_empty());
        // The divisor latch came along.
        b.pio_write(BASE, 3, &[0x83]);
        assert_eq!(read(&mut b, 0), 0x01);
    }

    #[test]
    fn restore_signals_only_pending_enabled_interrupts() {
        let (port, irq) = new_port(&Buf::default());
        let mut p = port.lock().unwrap();
        let with = |ier, iir, data: &[u8]| SerialPortState {
            interrupt_enable: ier,
            interrupt_identification: iir,
            line_status: if data.is_empty() { 0x60 } else { 0x61 },
            in_buffer: data.to_vec(),
            ..Default::default()
        };
        let signalled = |p: &mut SerialPort, s: &SerialPortState| {
            p.restore(s).unwrap();
            irq.read().unwrap_or(0)
        };
        assert_eq!(signalled(&mut p, &with(0x01, IIR_RDA, b"x")), 1);
        assert_eq!(signalled(&mut p, &with(0x02, IIR_THR_EMPTY, b"")), 1);
        assert_eq!(signalled(&mut p, &with(0x00, IIR_RDA, b"x")), 0, "disabled");
        assert_eq!(
            signalled(&mut p, &with(0x01, IIR_NONE, b"x")),
            0,
            "already identified: the guest is draining the FIFO"
        );
        assert_eq!(signalled(&mut p, &SerialPortState::default()), 0);
    }

    #[test]
    fn malformed_states_are_refused_and_change_nothing() {
        let buf = Buf::default();
        let (port, _) = new_port(&buf);
        let mut p = port.lock().unwrap();
        driven(&mut p);
        let good = p.state();
        type Spoil = fn(&mut SerialPortState);
        let cases: [(Spoil, &str); 7] = [
            (
                |s| s.in_buffer = vec![0; 65],
                "65 bytes in its receive FIFO, the UART holds at most 64",
            ),
            (|s| s.interrupt_enable = 0x10, "IER 0x10"),
            (|s| s.interrupt_identification = 0, "IIR 0x00"),
            (|s| s.interrupt_identification = 0x03, "IIR 0x03"),
            (|s| s.interrupt_identification = 0xc4, "IIR 0xc4"),
            (|s| s.in_buffer.clear(), "LSR 0x61"),
            (|s| s.line_status = 0x01, "LSR 0x01"),
        ];
        for (spoil, msg) in cases {
            let mut s = good.clone();
            spoil(&mut s);
            let e = p.restore(&s).unwrap_err();
            assert!(e.to_string().contains(msg), "{e} / {msg}");
            assert_eq!(p.state(), good);
        }
        // A failed signal (the eventfd's counter is full) leaves the port whole.
        let (fresh, irq) = new_port(&buf);
        let mut fresh = fresh.lock().unwrap();
        irq.write(u64::MAX - 1).unwrap();
        let e = fresh.restore(&good).unwrap_err();
        assert!(matches!(e, DeviceStateError::SerialRestore(_)), "{e}");
        assert!(std::error::Error::source(&e).is_some());
        assert_eq!(fresh.state(), SerialPortState::default());
        fresh.pio_write(BASE, 0, b"!");
        assert_eq!(buf.0.lock().unwrap().last(), Some(&b'!'));
    }
}
