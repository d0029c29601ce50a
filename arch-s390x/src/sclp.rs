//! A subset of the SCLP (service-call logical processor): the event facility
//! with a write-only VT220 console, the console a Linux guest gets with
//! `console=ttysclp0` and that its early boot code prints to.
//!
//! The guest issues `SERVC` with an SCLP command word and the address of an
//! SCCB (service-call control block: an 8-byte header, then data; every field
//! big-endian). KVM does not handle `SERVC` and exits with an instruction
//! interception; [`Sclp::service_call`] reads the SCCB from guest memory
//! into a private copy (so the guest cannot change it while it is parsed),
//! executes the command, writes the SCCB back, sets condition code 0 and
//! raises the service-signal external interruption that tells the guest the
//! SCCB is done.
//!
//! | command | what this SCLP does |
//! |---|---|
//! | `WRITE EVENT MASK` (0x00780005) | records the guest's receive mask; answers that the SCLP sends and receives VT220 data (`0x1a`) only |
//! | `WRITE EVENT DATA` (0x00760005) | VT220 event buffers (`0x1a`): their bytes go to the console output and are marked accepted; any other event type ends the command with *invalid function* |
//! | `READ EVENT DATA` (0x00770005) | there is never input: *no event buffers stored* |
//! | anything else (`READ SCP INFO`…) | *invalid SCLP command* (0x01f0), reported as unhandled |
//!
//! Not implemented: line-mode (EBCDIC message, type 2) output, console
//! input, `READ SCP INFO` (memory and CPU information, which a full Linux
//! boot needs), the quiesce (power-off) signal. A guest error that the
//! architecture answers with a program exception (a bad SCCB address or
//! length, `SERVC` in problem state) gets condition code 3 (*not
//! operational*) instead and is reported: the arch hook that runs this has
//! no vCPU handle to inject a program interruption with.

use crate::exit::{SieIntercept, PSW_MASK_PSTATE};
use kvmkit_core::ArchExitOutcome;
use std::fmt;
use std::io::Write;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use vm_memory::{Bytes, GuestAddress, GuestMemory, GuestMemoryError};

/// `SCLP_CMD_WRITE_EVENT_MASK`.
pub const SCLP_CMD_WRITE_EVENT_MASK: u32 = 0x0078_0005;
/// `SCLP_CMD_WRITE_EVENT_DATA`.
pub const SCLP_CMD_WRITE_EVENT_DATA: u32 = 0x0076_0005;
/// `SCLP_CMD_READ_EVENT_DATA`.
pub const SCLP_CMD_READ_EVENT_DATA: u32 = 0x0077_0005;
/// `SCLP_CMDW_READ_SCP_INFO` (not implemented here).
pub const SCLP_CMDW_READ_SCP_INFO: u32 = 0x0002_0001;
/// The bits of a command word that select the command.
pub const SCLP_CMD_CODE_MASK: u32 = 0xffff_00ff;

/// Response code: normal completion.
pub const SCLP_RC_NORMAL_COMPLETION: u16 = 0x0020;
/// Response code: the SCCB crosses a page boundary.
pub const SCLP_RC_SCCB_BOUNDARY_VIOLATION: u16 = 0x0100;
/// Response code: invalid SCLP command.
pub const SCLP_RC_INVALID_SCLP_COMMAND: u16 = 0x01f0;
/// Response code: the SCCB is too short for the command.
pub const SCLP_RC_INSUFFICIENT_SCCB_LENGTH: u16 = 0x0300;
/// Response code: invalid function code or event type.
pub const SCLP_RC_INVALID_FUNCTION: u16 = 0x40f0;
/// Response code: no event buffers stored (nothing to read).
pub const SCLP_RC_NO_EVENT_BUFFERS_STORED: u16 = 0x60f0;
/// Response code: an event buffer's length is wrong.
pub const SCLP_RC_EVENT_BUFFER_SYNTAX_ERROR: u16 = 0x73f0;
/// Response code: invalid event-mask length.
pub const SCLP_RC_INVALID_MASK_LENGTH: u16 = 0x74f0;

/// Event type: VT220 (ASCII console) data.
pub const SCLP_EVENT_ASCII_CONSOLE_DATA: u8 = 0x1a;
/// Event-mask bit of VT220 data (type 0x1a: bit 25 from the left).
pub const SCLP_EVENT_MASK_MSG_ASCII: u32 = 0x0000_0040;
/// Event-buffer flag: the SCLP accepted the buffer.
pub const SCLP_EVENT_BUFFER_ACCEPTED: u8 = 0x80;
/// SCCB header flag (control mask byte 2): variable-length response.
pub const SCLP_VARIABLE_LENGTH_RESPONSE: u8 = 0x80;
/// The largest SCCB: one page.
pub const SCCB_SIZE: usize = 4096;
/// The SCCB header: length, function code, control mask, response code.
pub const SCCB_HEADER_SIZE: usize = 8;
/// An event-buffer header: length, type, flags, reserved.
pub const EVENT_BUFFER_HEADER_SIZE: usize = 6;
/// The longest event mask `WRITE EVENT MASK` accepts.
const SCLP_EVENT_MASK_LEN_MAX: usize = 1021;

/// What raises the service-signal external interruption
/// (`KVM_S390_INT_SERVICE`) that completes a service call; the
/// [`crate::Flic`] implements it.
///
/// ```
/// use std::sync::Mutex;
/// struct Recorder(Mutex<Vec<u32>>);
/// impl kvmkit_arch_s390x::ServiceSignal for Recorder {
///     fn raise_service_signal(&self, param: u32) -> std::io::Result<()> {
///         self.0.lock().unwrap().push(param);
///         Ok(())
///     }
/// }
/// ```
pub trait ServiceSignal: Send + Sync {
    /// Raises the service signal with this external-interruption parameter
    /// (the SCCB address, bit 31 set when events are pending).
    fn raise_service_signal(&self, param: u32) -> std::io::Result<()>;
}

/// Guest memory as the SCLP uses it: object-safe, any `GuestMemory`.
trait GuestRam: Send + Sync {
    fn read(&self, gpa: u64, buf: &mut [u8]) -> Result<(), GuestMemoryError>;
    fn write(&self, gpa: u64, buf: &[u8]) -> Result<(), GuestMemoryError>;
}

impl<M: GuestMemory + Send + Sync> GuestRam for M {
    fn read(&self, gpa: u64, buf: &mut [u8]) -> Result<(), GuestMemoryError> {
        self.read_slice(buf, GuestAddress(gpa))
    }
    fn write(&self, gpa: u64, buf: &[u8]) -> Result<(), GuestMemoryError> {
        self.write_slice(buf, GuestAddress(gpa))
    }
}

fn be16(b: &[u8], off: usize) -> u16 {
    u16::from_be_bytes([b[off], b[off + 1]])
}

fn set_be16(b: &mut [u8], off: usize, v: u16) {
    b[off..off + 2].copy_from_slice(&v.to_be_bytes());
}

/// The SCLP: event facility with a write-only VT220 console.
///
/// ```
/// use std::sync::Arc;
/// use kvmkit_arch_s390x::{Sclp, SCLP_CMD_WRITE_EVENT_DATA, SCLP_RC_NORMAL_COMPLETION};
/// use vm_memory::{GuestAddress, GuestMemoryMmap};
///
/// let mem = Arc::new(GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x10000)]).unwrap());
/// let sclp = Sclp::new(mem, Box::new(Vec::new()));
/// // An SCCB with one VT220 event buffer holding "hi".
/// let mut sccb = vec![0, 16, 0, 0, 0, 0, 0, 0, 0, 8, 0x1a, 0, 0, 0, b'h', b'i'];
/// assert_eq!(sclp.execute(SCLP_CMD_WRITE_EVENT_DATA, &mut sccb), SCLP_RC_NORMAL_COMPLETION);
/// assert_eq!(&sccb[6..8], &[0x00, 0x20]); // the response code, big-endian
/// assert_eq!(sccb[11], 0x80); // the buffer was accepted
/// ```
pub struct Sclp {
    mem: Arc<dyn GuestRam>,
    out: Mutex<Box<dyn Write + Send>>,
    signal: Option<Arc<dyn ServiceSignal>>,
    guest_receive_mask: AtomicU32,
}

impl fmt::Debug for Sclp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sclp")
            .field(
                "guest_receive_mask",
                &self.guest_receive_mask.load(Ordering::Relaxed),
            )
            .field("service_signal", &self.signal.is_some())
            .finish_non_exhaustive()
    }
}

/// What [`Sclp::service_call`] did with a `SERVC`.
///
/// ```
/// use kvmkit_arch_s390x::{ServiceCallResult, SCLP_RC_NORMAL_COMPLETION};
/// let r = ServiceCallResult::Done { response: SCLP_RC_NORMAL_COMPLETION };
/// assert_ne!(r, ServiceCallResult::Refused { reason: "SERVC in problem state" });
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServiceCallResult {
    /// Executed: the response code in the SCCB, condition code 0.
    Done {
        /// The SCCB's response code.
        response: u16,
    },
    /// Refused with condition code 3: the SCCB address or length is invalid
    /// or the guest was in problem state (architecturally a program
    /// exception).
    Refused {
        /// Why.
        reason: &'static str,
    },
}

impl Sclp {
    /// An SCLP over guest memory `mem` (any `vm_memory::GuestMemory`, with
    /// or without a dirty bitmap) writing console output to `out`.
    pub fn new<M: GuestMemory + Send + Sync + 'static>(
        mem: Arc<M>,
        out: Box<dyn Write + Send>,
    ) -> Self {
        Sclp {
            mem,
            out: Mutex::new(out),
            signal: None,
            guest_receive_mask: AtomicU32::new(0),
        }
    }

    /// Raises service signals through `signal` (a real VMM passes its
    /// [`crate::Flic`]); without one, completed calls signal nothing and a
    /// guest waiting for the interruption waits forever.
    #[must_use]
    pub fn with_service_signal(mut self, signal: Arc<dyn ServiceSignal>) -> Self {
        self.signal = Some(signal);
        self
    }

    /// The event mask the guest can receive (from its last `WRITE EVENT MASK`).
    pub fn guest_receive_mask(&self) -> u32 {
        self.guest_receive_mask.load(Ordering::Relaxed)
    }

    /// Handles an intercepted `SERVC`: the arch exit hook for it.
    ///
    /// Executed commands the SCLP knows are [`ArchExitOutcome::Handled`];
    /// unknown commands (answered *invalid SCLP command*) and refused calls
    /// are reported as unhandled accesses in space `"sclp"` (at the command
    /// word, or the SCCB address); a failure to raise the service signal
    /// stops the vCPU.
    pub fn handle(&self, icpt: &mut SieIntercept<'_>) -> ArchExitOutcome {
        let Some(call) = icpt.service_call() else {
            return ArchExitOutcome::Unhandled {
                space: "instruction",
                addr: u64::from(icpt.ipa),
                write: false,
            };
        };
        let known = matches!(
            call.command & SCLP_CMD_CODE_MASK,
            SCLP_CMD_WRITE_EVENT_MASK | SCLP_CMD_WRITE_EVENT_DATA | SCLP_CMD_READ_EVENT_DATA
        );
        match self.service_call(icpt) {
            Ok(ServiceCallResult::Done { .. }) if known => ArchExitOutcome::Handled,
            Ok(ServiceCallResult::Done { .. }) => ArchExitOutcome::Unhandled {
                space: "sclp",
                addr: u64::from(call.command),
                write: true,
            },
            Ok(ServiceCallResult::Refused { .. }) => ArchExitOutcome::Unhandled {
                space: "sclp",
                addr: call.sccb,
                write: true,
            },
            Err(e) => ArchExitOutcome::Stop {
                reason: format!("cannot raise the SCLP service signal: {e}"),
            },
        }
    }

    /// Executes an intercepted `SERVC` against guest memory and sets the
    /// condition code; raises the service signal when the SCCB was
    /// processed. Errors are those of the service signal.
    pub fn service_call(&self, icpt: &mut SieIntercept<'_>) -> std::io::Result<ServiceCallResult> {
        let Some(call) = icpt.service_call() else {
            return Ok(ServiceCallResult::Refused {
                reason: "not a SERVC interception",
            });
        };
        let result = self.run_sccb(call.command, call.sccb, icpt);
        match result {
            ServiceCallResult::Done { .. } => {
                icpt.regs.set_condition_code(0);
                if let Some(s) = &self.signal {
                    // The address is below 2 GiB (checked): it fits.
                    let param = u32::try_from(call.sccb & !3).unwrap_or(0);
                    s.raise_service_signal(param)?;
                }
            }
            ServiceCallResult::Refused { .. } => icpt.regs.set_condition_code(3),
        }
        Ok(result)
    }

    fn run_sccb(&self, command: u32, sccb: u64, icpt: &SieIntercept<'_>) -> ServiceCallResult {
        let refuse = |reason| ServiceCallResult::Refused { reason };
        if icpt.regs.psw_mask() & PSW_MASK_PSTATE != 0 {
            return refuse("SERVC in problem state");
        }
        let page = sccb & !0x1fff;
        if page == 0 || page == icpt.regs.prefix() || sccb & !0x7fff_fff8 != 0 {
            return refuse("SCCB address in the lowcore, unaligned or above 2 GiB");
        }
        let mut hdr = [0u8; SCCB_HEADER_SIZE];
        if self.mem.read(sccb, &mut hdr).is_err() {
            return refuse("SCCB header not in guest memory");
        }
        let len = usize::from(be16(&hdr, 0));
        if !(SCCB_HEADER_SIZE..=SCCB_SIZE).contains(&len) {
            return refuse("SCCB length outside 8..=4096");
        }
        // In page offset + length: the SCCB may not cross a page boundary.
        if (sccb & 0xfff) + len as u64 > SCCB_SIZE as u64 {
            set_be16(&mut hdr, 6, SCLP_RC_SCCB_BOUNDARY_VIOLATION);
            return match self.mem.write(sccb, &hdr) {
                Ok(()) => ServiceCallResult::Done {
                    response: SCLP_RC_SCCB_BOUNDARY_VIOLATION,
                },
                Err(_) => refuse("SCCB not writable"),
            };
        }
        let mut buf = vec![0u8; len];
        if self.mem.read(sccb, &mut buf).is_err() {
            return refuse("SCCB not in guest memory");
        }
        let response = self.execute(command, &mut buf);
        let out_len = usize::from(be16(&buf, 0)).clamp(SCCB_HEADER_SIZE, len);
        if self.mem.write(sccb, &buf[..out_len]).is_err() {
            return refuse("SCCB not writable");
        }
        ServiceCallResult::Done { response }
    }

    /// Executes SCLP `command` on an SCCB (`sccb.len()` bytes, the header's
    /// length or less): writes the response code (and any reply) into it and
    /// returns the response code. Pure apart from the console output.
    pub fn execute(&self, command: u32, sccb: &mut [u8]) -> u16 {
        if sccb.len() < SCCB_HEADER_SIZE {
            return SCLP_RC_INSUFFICIENT_SCCB_LENGTH;
        }
        let rc = match command & SCLP_CMD_CODE_MASK {
            SCLP_CMD_WRITE_EVENT_MASK => self.write_event_mask(sccb),
            SCLP_CMD_WRITE_EVENT_DATA => self.write_event_data(sccb),
            SCLP_CMD_READ_EVENT_DATA => read_event_data(sccb),
            _ => SCLP_RC_INVALID_SCLP_COMMAND,
        };
        set_be16(sccb, 6, rc);
        rc
    }

    fn write_event_mask(&self, sccb: &mut [u8]) -> u16 {
        // h(8), reserved(2), mask_length(2), then four masks of that length:
        // guest receive, guest send, SCLP receive, SCLP send.
        if sccb.len() < 12 {
            return SCLP_RC_INSUFFICIENT_SCCB_LENGTH;
        }
        let n = usize::from(be16(sccb, 10));
        if n == 0 || n > SCLP_EVENT_MASK_LEN_MAX {
            return SCLP_RC_INVALID_MASK_LENGTH;
        }
        if sccb.len() < 12 + 4 * n {
            return SCLP_RC_INSUFFICIENT_SCCB_LENGTH;
        }
        let mut guest = [0u8; 4];
        let k = n.min(4);
        guest[..k].copy_from_slice(&sccb[12..12 + k]);
        self.guest_receive_mask
            .store(u32::from_be_bytes(guest), Ordering::Relaxed);
        let ours = SCLP_EVENT_MASK_MSG_ASCII.to_be_bytes();
        for mask in [12 + 2 * n, 12 + 3 * n] {
            let dst = &mut sccb[mask..mask + n];
            dst.fill(0);
            dst[..k].copy_from_slice(&ours[..k]);
        }
        SCLP_RC_NORMAL_COMPLETION
    }

    fn write_event_data(&self, sccb: &mut [u8]) -> u16 {
        if sccb[2] != 0 {
            return SCLP_RC_INVALID_FUNCTION;
        }
        // Check every buffer's length before acting on any.
        let mut buffers = Vec::new();
        let mut off = SCCB_HEADER_SIZE;
        while off < sccb.len() {
            if sccb.len() - off < 2 {
                return SCLP_RC_EVENT_BUFFER_SYNTAX_ERROR;
            }
            let elen = usize::from(be16(sccb, off));
            if elen < EVENT_BUFFER_HEADER_SIZE || elen > sccb.len() - off {
                return SCLP_RC_EVENT_BUFFER_SYNTAX_ERROR;
            }
            buffers.push((off, elen));
            off += elen;
        }
        let mut rc = SCLP_RC_NORMAL_COMPLETION;
        for (off, elen) in buffers {
            if rc != SCLP_RC_NORMAL_COMPLETION {
                sccb[off + 3] &= !SCLP_EVENT_BUFFER_ACCEPTED;
                continue;
            }
            if sccb[off + 2] == SCLP_EVENT_ASCII_CONSOLE_DATA {
                let data = &sccb[off + EVENT_BUFFER_HEADER_SIZE..off + elen];
                let mut out = self.out.lock().unwrap_or_else(|e| e.into_inner());
                // Console output is best effort: a full pipe loses text,
                // never the guest's progress.
                let _ = out.write_all(data).and_then(|()| out.flush());
                sccb[off + 3] |= SCLP_EVENT_BUFFER_ACCEPTED;
            } else {
                rc = SCLP_RC_INVALID_FUNCTION;
            }
        }
        rc
    }
}

fn read_event_data(sccb: &mut [u8]) -> u16 {
    if sccb.len() != SCCB_SIZE {
        return SCLP_RC_INSUFFICIENT_SCCB_LENGTH;
    }
    if sccb[2] > 1 {
        return SCLP_RC_INVALID_FUNCTION;
    }
    if sccb[5] & SCLP_VARIABLE_LENGTH_RESPONSE != 0 {
        sccb[5] &= !SCLP_VARIABLE_LENGTH_RESPONSE;
        set_be16(sccb, 0, 8);
    }
    SCLP_RC_NO_EVENT_BUFFERS_STORED
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exit::{icpt, RunRegs, KVM_RUN_SIZE};
    use vm_memory::{GuestMemoryMmap, Permissions};

    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);
    impl Write for Sink {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[derive(Default)]
    struct Signals(Mutex<Vec<u32>>, bool);
    impl ServiceSignal for Signals {
        fn raise_service_signal(&self, param: u32) -> std::io::Result<()> {
            if self.1 {
                return Err(std::io::Error::other("no FLIC"));
            }
            self.0.lock().unwrap().push(param);
            Ok(())
        }
    }

    fn setup() -> (Arc<GuestMemoryMmap<()>>, Sink, Arc<Signals>, Sclp) {
        let mem =
            Arc::new(GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x10000)]).unwrap());
        let sink = Sink::default();
        let sig = Arc::new(Signals::default());
        let sclp = Sclp::new(mem.clone(), Box::new(sink.clone())).with_service_signal(sig.clone());
        (mem, sink, sig, sclp)
    }

    fn vt220(text: &[u8]) -> Vec<u8> {
        let elen = u16::try_from(EVENT_BUFFER_HEADER_SIZE + text.len()).unwrap();
        let mut s = Vec::new();
        s.extend((8 + elen).to_be_bytes());
        s.extend([0, 0, 0, 0, 0, 0]);
        s.extend(elen.to_be_bytes());
        s.extend([SCLP_EVENT_ASCII_CONSOLE_DATA, 0, 0, 0]);
        s.extend(text);
        s
    }

    /// A kvm_run area holding `servc %r2,%r3` with R2 = command, R3 = SCCB.
    fn servc(command: u32, sccb: u64) -> Vec<u8> {
        let mut run = vec![0u8; KVM_RUN_SIZE];
        let mut regs = RunRegs::new(&mut run).unwrap();
        regs.set_gpr(2, u64::from(command));
        regs.set_gpr(3, sccb);
        regs.set_condition_code(2);
        run
    }

    fn intercept(run: &mut [u8]) -> SieIntercept<'_> {
        SieIntercept {
            icptcode: icpt::INSTRUCTION,
            ipa: 0xb220,
            ipb: 0x0023_0000,
            regs: RunRegs::new(run).unwrap(),
        }
    }

    #[test]
    fn write_event_data_prints_and_signals() {
        let (mem, sink, sig, sclp) = setup();
        mem.write_slice(&vt220(b"hello\n"), GuestAddress(0x3000))
            .unwrap();
        let mut run = servc(SCLP_CMD_WRITE_EVENT_DATA, 0x3000);
        let mut i = intercept(&mut run);
        assert_eq!(sclp.handle(&mut i), ArchExitOutcome::Handled);
        assert_eq!(i.regs.condition_code(), 0);
        assert_eq!(&*sink.0.lock().unwrap(), b"hello\n");
        assert_eq!(*sig.0.lock().unwrap(), vec![0x3000]);
        let mut hdr = [0u8; 12];
        mem.read_slice(&mut hdr, GuestAddress(0x3000)).unwrap();
        assert_eq!(be16(&hdr, 6), SCLP_RC_NORMAL_COMPLETION);
        assert_eq!(hdr[11], SCLP_EVENT_BUFFER_ACCEPTED);
    }

    #[test]
    fn write_event_mask_answers_vt220() {
        let (_, _, _, sclp) = setup();
        // Mask length 4: guest receive 0x40 (VT220) | 0x40000000, guest send 0x40.
        let mut s = vec![0u8; 12 + 16];
        set_be16(&mut s, 0, 28);
        set_be16(&mut s, 10, 4);
        s[12..16].copy_from_slice(&0x4000_0040u32.to_be_bytes());
        s[16..20].copy_from_slice(&0x40u32.to_be_bytes());
        assert_eq!(
            sclp.execute(SCLP_CMD_WRITE_EVENT_MASK, &mut s),
            SCLP_RC_NORMAL_COMPLETION
        );
        assert_eq!(sclp.guest_receive_mask(), 0x4000_0040);
        assert_eq!(&s[20..24], &0x40u32.to_be_bytes());
        assert_eq!(&s[24..28], &0x40u32.to_be_bytes());
        // Mask length 8: zero-extended.
        let mut s = vec![0u8; 12 + 32];
        set_be16(&mut s, 10, 8);
        assert_eq!(
            sclp.execute(SCLP_CMD_WRITE_EVENT_MASK, &mut s),
            SCLP_RC_NORMAL_COMPLETION
        );
        assert_eq!(&s[28..36], &[0, 0, 0, 0x40, 0, 0, 0, 0]);
        // Mask length 2: truncated (the VT220 bit is not representable).
        let mut s = vec![0u8; 12 + 8];
        set_be16(&mut s, 10, 2);
        sclp.execute(SCLP_CMD_WRITE_EVENT_MASK, &mut s);
        assert_eq!(&s[16..20], &[0, 0, 0, 0]);
        // Bad lengths.
        let mut s = vec![0u8; 12];
        assert_eq!(
            sclp.execute(SCLP_CMD_WRITE_EVENT_MASK, &mut s),
            SCLP_RC_INVALID_MASK_LENGTH
        );
        set_be16(&mut s, 10, 4);
        assert_eq!(
            sclp.execute(SCLP_CMD_WRITE_EVENT_MASK, &mut s),
            SCLP_RC_INSUFFICIENT_SCCB_LENGTH
        );
        let mut s = vec![0u8; 10];
        assert_eq!(
            sclp.execute(SCLP_CMD_WRITE_EVENT_MASK, &mut s),
            SCLP_RC_INSUFFICIENT_SCCB_LENGTH
        );
    }

    #[test]
    fn write_event_data_errors() {
        let (_, sink, _, sclp) = setup();
        // A non-VT220 buffer first: the VT220 one after it is not accepted.
        let mut s = vt220(b"x");
        s[10] = 2; // line-mode message
        let tail = vt220(b"y");
        s.extend_from_slice(&tail[SCCB_HEADER_SIZE..]);
        let n = u16::try_from(s.len()).unwrap();
        set_be16(&mut s, 0, n);
        s[SCCB_HEADER_SIZE + 7 + 3] = SCLP_EVENT_BUFFER_ACCEPTED;
        assert_eq!(
            sclp.execute(SCLP_CMD_WRITE_EVENT_DATA, &mut s),
            SCLP_RC_INVALID_FUNCTION
        );
        assert_eq!(s[SCCB_HEADER_SIZE + 7 + 3], 0);
        assert!(sink.0.lock().unwrap().is_empty());
        // Function code other than normal write.
        let mut s = vt220(b"x");
        s[2] = 1;
        assert_eq!(
            sclp.execute(SCLP_CMD_WRITE_EVENT_DATA, &mut s),
            SCLP_RC_INVALID_FUNCTION
        );
        // Event buffer length too small, too large, or a dangling byte.
        for elen in [5u16, 100] {
            let mut s = vt220(b"x");
            set_be16(&mut s, 8, elen);
            assert_eq!(
                sclp.execute(SCLP_CMD_WRITE_EVENT_DATA, &mut s),
                SCLP_RC_EVENT_BUFFER_SYNTAX_ERROR
            );
        }
        let mut s = vt220(b"x");
        s.push(0);
        assert_eq!(
            sclp.execute(SCLP_CMD_WRITE_EVENT_DATA, &mut s),
            SCLP_RC_EVENT_BUFFER_SYNTAX_ERROR
        );
        assert_eq!(sclp.execute(SCLP_CMD_WRITE_EVENT_DATA, &mut [0; 4]), 0x0300);
    }

    #[test]
    fn read_event_data_has_nothing() {
        let (_, _, _, sclp) = setup();
        let mut s = vec![0u8; SCCB_SIZE];
        set_be16(&mut s, 0, 4096);
        s[5] = SCLP_VARIABLE_LENGTH_RESPONSE;
        assert_eq!(
            sclp.execute(SCLP_CMD_READ_EVENT_DATA, &mut s),
            SCLP_RC_NO_EVENT_BUFFERS_STORED
        );
        assert_eq!(be16(&s, 0), 8);
        assert_eq!(s[5], 0);
        s[2] = 7;
        assert_eq!(
            sclp.execute(SCLP_CMD_READ_EVENT_DATA, &mut s),
            SCLP_RC_INVALID_FUNCTION
        );
        let mut s = vec![0u8; 16];
        assert_eq!(
            sclp.execute(SCLP_CMD_READ_EVENT_DATA, &mut s),
            SCLP_RC_INSUFFICIENT_SCCB_LENGTH
        );
    }

    #[test]
    fn unknown_commands_complete_but_are_reported() {
        let (mem, _, sig, sclp) = setup();
        let mut s = vec![0u8; 16];
        set_be16(&mut s, 0, 16);
        mem.write_slice(&s, GuestAddress(0x4000)).unwrap();
        let mut run = servc(SCLP_CMDW_READ_SCP_INFO, 0x4000);
        let mut i = intercept(&mut run);
        assert_eq!(
            sclp.handle(&mut i),
            ArchExitOutcome::Unhandled {
                space: "sclp",
                addr: u64::from(SCLP_CMDW_READ_SCP_INFO),
                write: true
            }
        );
        assert_eq!(i.regs.condition_code(), 0);
        let mut hdr = [0u8; 8];
        mem.read_slice(&mut hdr, GuestAddress(0x4000)).unwrap();
        assert_eq!(be16(&hdr, 6), SCLP_RC_INVALID_SCLP_COMMAND);
        assert_eq!(sig.0.lock().unwrap().len(), 1);
    }

    #[test]
    fn bad_calls_get_condition_code_3() {
        let (mem, _, sig, sclp) = setup();
        for sccb in [0x1000u64, 0x3004, 0x8000_0000, 0x2_0000] {
            let mut run = servc(SCLP_CMD_WRITE_EVENT_DATA, sccb);
            let mut i = intercept(&mut run);
            assert!(matches!(
                sclp.handle(&mut i),
                ArchExitOutcome::Unhandled { space: "sclp", .. }
            ));
            assert_eq!(i.regs.condition_code(), 3);
        }
        // SCCB in the prefix page.
        let mut run = servc(SCLP_CMD_WRITE_EVENT_DATA, 0x6000);
        let p = crate::exit::off::SYNC_PREFIX;
        run[p..p + 8].copy_from_slice(&0x6000u64.to_be_bytes());
        let mut i = intercept(&mut run);
        assert!(matches!(
            sclp.service_call(&mut i).unwrap(),
            ServiceCallResult::Refused { .. }
        ));
        // Problem state.
        let mut run = servc(SCLP_CMD_WRITE_EVENT_DATA, 0x3000);
        run[32..40].copy_from_slice(&PSW_MASK_PSTATE.to_be_bytes());
        let mut i = intercept(&mut run);
        assert!(matches!(
            sclp.service_call(&mut i).unwrap(),
            ServiceCallResult::Refused {
                reason: "SERVC in problem state"
            }
        ));
        // Length 0 and length over a page.
        for len in [0u16, 4097] {
            mem.write_slice(&len.to_be_bytes(), GuestAddress(0x3000))
                .unwrap();
            let mut run = servc(SCLP_CMD_WRITE_EVENT_DATA, 0x3000);
            let mut i = intercept(&mut run);
            assert!(matches!(
                sclp.service_call(&mut i).unwrap(),
                ServiceCallResult::Refused { .. }
            ));
        }
        assert!(sig.0.lock().unwrap().is_empty());
        // Not a SERVC at all.
        let mut run = servc(0, 0);
        let mut i = intercept(&mut run);
        i.ipa = 0xb2ff;
        assert!(matches!(
            sclp.service_call(&mut i).unwrap(),
            ServiceCallResult::Refused { .. }
        ));
        assert_eq!(
            sclp.handle(&mut i),
            ArchExitOutcome::Unhandled {
                space: "instruction",
                addr: 0xb2ff,
                write: false
            }
        );
    }

    #[test]
    fn page_crossing_sccb_gets_boundary_violation() {
        let (mem, _, sig, sclp) = setup();
        let mut s = vt220(b"x");
        set_be16(&mut s, 0, 0x100);
        mem.write_slice(&s, GuestAddress(0x3f80)).unwrap();
        let mut run = servc(SCLP_CMD_WRITE_EVENT_DATA, 0x3f80);
        let mut i = intercept(&mut run);
        assert_eq!(
            sclp.service_call(&mut i).unwrap(),
            ServiceCallResult::Done {
                response: SCLP_RC_SCCB_BOUNDARY_VIOLATION
            }
        );
        assert_eq!(i.regs.condition_code(), 0);
        assert_eq!(*sig.0.lock().unwrap(), vec![0x3f80]);
    }

    #[test]
    fn an_sccb_running_past_guest_memory_is_refused() {
        // Guest memory ends inside a page: the header is readable, the
        // SCCB's length (within the page) runs past the end.
        let mem =
            Arc::new(GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x8800)]).unwrap());
        let sig = Arc::new(Signals::default());
        let sink = Sink::default();
        let sclp = Sclp::new(mem.clone(), Box::new(sink.clone())).with_service_signal(sig.clone());
        let mut s = vt220(b"lost");
        set_be16(&mut s, 0, 0x200);
        mem.write_slice(&s, GuestAddress(0x8700)).unwrap();
        let mut run = servc(SCLP_CMD_WRITE_EVENT_DATA, 0x8700);
        let mut i = intercept(&mut run);
        assert_eq!(
            sclp.service_call(&mut i).unwrap(),
            ServiceCallResult::Refused {
                reason: "SCCB not in guest memory"
            }
        );
        assert_eq!(i.regs.condition_code(), 3);
        // Nothing executed: no output, no signal, the header unchanged.
        assert!(sink.0.lock().unwrap().is_empty());
        assert!(sig.0.lock().unwrap().is_empty());
        let mut hdr = [0u8; 8];
        mem.read_slice(&mut hdr, GuestAddress(0x8700)).unwrap();
        assert_eq!(hdr, s[..8]);
    }

    /// Guest memory the SCLP can read but not write (a page the host
    /// protected): every write access is refused, reads go through.
    struct ReadOnly(GuestMemoryMmap<()>);

    impl GuestMemory for ReadOnly {
        type PhysicalMemory = GuestMemoryMmap<()>;
        type Bitmap = ();

        fn check_range(&self, addr: GuestAddress, count: usize, access: Permissions) -> bool {
            !access.has_write() && GuestMemory::check_range(&self.0, addr, count, access)
        }

        fn get_slices<'a>(
            &'a self,
            addr: GuestAddress,
            count: usize,
            access: Permissions,
        ) -> Result<
            impl vm_memory::guest_memory::GuestMemorySliceIterator<'a, vm_memory::bitmap::BS<'a, ()>>,
            GuestMemoryError,
        > {
            if access.has_write() {
                return Err(GuestMemoryError::InvalidGuestAddress(addr));
            }
            GuestMemory::get_slices(&self.0, addr, count, access)
        }
    }

    #[test]
    fn an_sccb_that_cannot_be_written_back_is_refused() {
        let ram = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x10000)]).unwrap();
        ram.write_slice(&vt220(b"hi\n"), GuestAddress(0x3000))
            .unwrap();
        // A page-crossing SCCB, whose boundary-violation answer must be
        // written into its header.
        let mut crossing = vt220(b"x");
        set_be16(&mut crossing, 0, 0x100);
        ram.write_slice(&crossing, GuestAddress(0x4f80)).unwrap();
        let sig = Arc::new(Signals::default());
        let sink = Sink::default();
        let sclp = Sclp::new(Arc::new(ReadOnly(ram)), Box::new(sink.clone()))
            .with_service_signal(sig.clone());
        for sccb in [0x3000, 0x4f80] {
            let mut run = servc(SCLP_CMD_WRITE_EVENT_DATA, sccb);
            let mut i = intercept(&mut run);
            assert_eq!(
                sclp.service_call(&mut i).unwrap(),
                ServiceCallResult::Refused {
                    reason: "SCCB not writable"
                },
                "SCCB at {sccb:#x}"
            );
            assert_eq!(i.regs.condition_code(), 3);
        }
        // The console data was executed (the write back failed after),
        // but the guest is told nothing completed: no service signal.
        assert_eq!(sink.0.lock().unwrap().as_slice(), b"hi\n");
        assert!(sig.0.lock().unwrap().is_empty());
    }

    #[test]
    fn a_failing_service_signal_stops_the_vcpu() {
        let mem =
            Arc::new(GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x10000)]).unwrap());
        mem.write_slice(&vt220(b"x"), GuestAddress(0x3000)).unwrap();
        let sclp = Sclp::new(mem, Box::new(Sink::default()))
            .with_service_signal(Arc::new(Signals(Mutex::default(), true)));
        let mut run = servc(SCLP_CMD_WRITE_EVENT_DATA, 0x3000);
        let mut i = intercept(&mut run);
        assert!(matches!(
            sclp.handle(&mut i),
            ArchExitOutcome::Stop { reason } if reason.contains("no FLIC")
        ));
        assert!(format!("{sclp:?}").contains("service_signal: true"));
    }
}
