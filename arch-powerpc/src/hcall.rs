//! PAPR hypercalls left to userspace: the `vty` console and handlers the VMM
//! registers. This is [`crate::Ppc64`]'s `ArchIo`.
//!
//! Hypercall numbers and return codes are PAPR's (as in Linux's
//! `asm/hvcall.h`, which is not UAPI, so they are not header-checked).

use crate::HcallOutput;
use kvmkit_core::ArchExitOutcome;
use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::io::Write;
use std::sync::{Mutex, MutexGuard};

/// `H_SUCCESS`
pub const H_SUCCESS: i64 = 0;
/// `H_HARDWARE`: the hypervisor failed (here: the console output failed).
pub const H_HARDWARE: i64 = -1;
/// `H_FUNCTION`: no such hypercall.
pub const H_FUNCTION: i64 = -2;
/// `H_PARAMETER`: a bad argument (unknown terminal, length over 16).
pub const H_PARAMETER: i64 = -4;
/// `H_GET_TERM_CHAR`: read up to 16 bytes from a virtual terminal.
pub const H_GET_TERM_CHAR: u64 = 0x54;
/// `H_PUT_TERM_CHAR`: write up to 16 bytes to a virtual terminal.
pub const H_PUT_TERM_CHAR: u64 = 0x58;
/// `H_RTAS`: a call into RTAS (argument buffer in guest memory); KVM passes
/// up those it does not handle itself.
pub const H_RTAS: u64 = 0xf000;
/// The unit address of the console `vty@30000000`, as QEMU's spapr uses it.
pub const VTY_REG: u64 = 0x3000_0000;

/// Bytes one `H_PUT_TERM_CHAR`/`H_GET_TERM_CHAR` carries at most.
const TERM_CHARS_MAX: usize = 16;

/// A handler for one PAPR hypercall, registered with
/// [`PaprIo::with_handler`]. Closures of the same signature are handlers.
///
/// ```
/// use kvmkit_arch_powerpc::{HcallOutput, PaprIo, H_RTAS, H_SUCCESS};
/// use kvmkit_core::ArchExitOutcome;
/// // An RTAS that can only power off (a real one reads the argument
/// // buffer at args[0] from guest memory it captured).
/// let io = PaprIo::default().with_handler(H_RTAS, |_nr: u64, _args: &[u64; 9], out: &mut HcallOutput<'_>| {
///     out.set_ret(H_SUCCESS);
///     ArchExitOutcome::SystemEvent { kind: kvmkit_core::SystemEventKind::Shutdown }
/// });
/// assert!(format!("{io:?}").contains("61440"));
/// ```
pub trait HcallHandler: Send + Sync {
    /// Handles hypercall `nr` with arguments `args` (r4..r12), writing the
    /// return code and outputs to `out`.
    fn hcall(&self, nr: u64, args: &[u64; 9], out: &mut HcallOutput<'_>) -> ArchExitOutcome;
}

impl<F> HcallHandler for F
where
    F: Fn(u64, &[u64; 9], &mut HcallOutput<'_>) -> ArchExitOutcome + Send + Sync,
{
    fn hcall(&self, nr: u64, args: &[u64; 9], out: &mut HcallOutput<'_>) -> ArchExitOutcome {
        self(nr, args, out)
    }
}

/// The PAPR hypercalls this VM answers in userspace: the `hvterm1` console
/// (`H_PUT_TERM_CHAR`, `H_GET_TERM_CHAR` on terminal `vty_reg`) and any
/// registered handlers. Other hypercalls get `H_FUNCTION` and are reported
/// as unhandled accesses in space `"hcall"`.
///
/// ```
/// use kvmkit_arch_powerpc::{PaprIo, H_PUT_TERM_CHAR, VTY_REG};
/// use std::sync::{Arc, Mutex};
///
/// #[derive(Clone, Default)]
/// struct Shared(Arc<Mutex<Vec<u8>>>);
/// impl std::io::Write for Shared {
///     fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
///         self.0.lock().unwrap().extend_from_slice(b);
///         Ok(b.len())
///     }
///     fn flush(&mut self) -> std::io::Result<()> { Ok(()) }
/// }
/// let out = Shared::default();
/// let io = PaprIo::new(Box::new(out.clone()));
/// assert_eq!(io.vty_reg(), VTY_REG);
/// io.push_input(b"y");
/// assert_eq!(io.pending_input(), 1);
/// ```
pub struct PaprIo {
    vty_reg: u64,
    output: Mutex<Box<dyn Write + Send>>,
    input: Mutex<VecDeque<u8>>,
    handlers: BTreeMap<u64, Box<dyn HcallHandler>>,
}

impl fmt::Debug for PaprIo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PaprIo")
            .field("vty_reg", &format_args!("{:#x}", self.vty_reg))
            .field("handlers", &self.handlers.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl Default for PaprIo {
    /// A console on the VMM's standard output.
    fn default() -> Self {
        PaprIo::new(Box::new(std::io::stdout()))
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl PaprIo {
    /// A console at `vty@30000000` writing to `output`, with an empty input
    /// queue and no other handlers.
    pub fn new(output: Box<dyn Write + Send>) -> Self {
        PaprIo {
            vty_reg: VTY_REG,
            output: Mutex::new(output),
            input: Mutex::new(VecDeque::new()),
            handlers: BTreeMap::new(),
        }
    }

    /// The console answers to terminal number `reg` instead (the `reg` of
    /// its `vty@…` device-tree node).
    #[must_use]
    pub fn with_vty_reg(mut self, reg: u64) -> Self {
        self.vty_reg = reg;
        self
    }

    /// Hypercall `nr` goes to `handler` (also for the console's numbers,
    /// which it then takes over).
    #[must_use]
    pub fn with_handler(mut self, nr: u64, handler: impl HcallHandler + 'static) -> Self {
        self.handlers.insert(nr, Box::new(handler));
        self
    }

    /// The console's terminal number.
    pub fn vty_reg(&self) -> u64 {
        self.vty_reg
    }

    /// Queues bytes for the guest to read with `H_GET_TERM_CHAR`.
    pub fn push_input(&self, bytes: &[u8]) {
        lock(&self.input).extend(bytes);
    }

    /// Bytes queued and not yet read by the guest.
    pub fn pending_input(&self) -> usize {
        lock(&self.input).len()
    }

    /// Answers hypercall `nr`: the result code goes to `out` (and so to the
    /// guest's r3), outputs to `out`'s arguments.
    pub fn handle(&self, nr: u64, args: &[u64; 9], out: &mut HcallOutput<'_>) -> ArchExitOutcome {
        if let Some(h) = self.handlers.get(&nr) {
            return h.hcall(nr, args, out);
        }
        match nr {
            H_PUT_TERM_CHAR => {
                out.set_ret(self.put_term_char(args));
                ArchExitOutcome::Handled
            }
            H_GET_TERM_CHAR => {
                let ret = self.get_term_char(args, out);
                out.set_ret(ret);
                ArchExitOutcome::Handled
            }
            _ => {
                out.set_ret(H_FUNCTION);
                ArchExitOutcome::Unhandled {
                    space: "hcall",
                    addr: nr,
                    write: false,
                }
            }
        }
    }

    /// `H_PUT_TERM_CHAR(termno, len, chars 0-7, chars 8-15)`: the bytes are
    /// packed big-endian (first byte most significant) in r6 and r7.
    fn put_term_char(&self, args: &[u64; 9]) -> i64 {
        let (termno, len) = (args[0], args[1]);
        if termno != self.vty_reg {
            return H_PARAMETER;
        }
        let Some(len) = usize::try_from(len).ok().filter(|&l| l <= TERM_CHARS_MAX) else {
            return H_PARAMETER;
        };
        let mut buf = [0u8; TERM_CHARS_MAX];
        buf[..8].copy_from_slice(&args[2].to_be_bytes());
        buf[8..].copy_from_slice(&args[3].to_be_bytes());
        let mut out = lock(&self.output);
        match out.write_all(&buf[..len]).and_then(|()| out.flush()) {
            Ok(()) => H_SUCCESS,
            Err(_) => H_HARDWARE,
        }
    }

    /// `H_GET_TERM_CHAR(termno)` → r4 = count, r5/r6 = the bytes packed
    /// big-endian.
    fn get_term_char(&self, args: &[u64; 9], out: &mut HcallOutput<'_>) -> i64 {
        if args[0] != self.vty_reg {
            return H_PARAMETER;
        }
        let mut buf = [0u8; TERM_CHARS_MAX];
        let mut n = 0;
        {
            let mut q = lock(&self.input);
            while n < TERM_CHARS_MAX {
                let Some(b) = q.pop_front() else { break };
                buf[n] = b;
                n += 1;
            }
        }
        let mut hi = [0u8; 8];
        let mut lo = [0u8; 8];
        hi.copy_from_slice(&buf[..8]);
        lo.copy_from_slice(&buf[8..]);
        out.set_arg(0, n as u64);
        out.set_arg(1, u64::from_be_bytes(hi));
        out.set_arg(2, u64::from_be_bytes(lo));
        H_SUCCESS
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{decode_exit, PpcExit, KVM_RUN_MIN_LEN};
    use kvmkit_core::VcpuExit;
    use std::sync::Arc;

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

    struct Broken;
    impl Write for Broken {
        fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
            Err(std::io::Error::other("gone"))
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// Runs `nr(args)` through a kvm_run area; returns the outcome, r3 and r4..r6.
    fn call(io: &PaprIo, nr: u64, args: [u64; 4]) -> (ArchExitOutcome, i64, [u64; 3]) {
        let mut run = vec![0u8; KVM_RUN_MIN_LEN];
        run[8..12].copy_from_slice(&19u32.to_ne_bytes());
        run[32..40].copy_from_slice(&nr.to_ne_bytes());
        for (i, a) in args.iter().enumerate() {
            run[48 + 8 * i..56 + 8 * i].copy_from_slice(&a.to_ne_bytes());
        }
        let VcpuExit::Arch(PpcExit::PaprHcall { nr, args, mut out }) =
            decode_exit(&mut run).unwrap()
        else {
            panic!("not an hcall")
        };
        let o = io.handle(nr, &args, &mut out);
        let r = [
            out.arg(0).unwrap(),
            out.arg(1).unwrap(),
            out.arg(2).unwrap(),
        ];
        (o, out.ret(), r)
    }

    #[test]
    fn put_term_char_writes_packed_bytes() {
        let sink = Sink::default();
        let io = PaprIo::new(Box::new(sink.clone()));
        let hello = u64::from_be_bytes(*b"hello, w");
        let rest = u64::from_be_bytes(*b"orld!\n\0\0");
        let (o, ret, _) = call(&io, H_PUT_TERM_CHAR, [VTY_REG, 14, hello, rest]);
        assert_eq!((o, ret), (ArchExitOutcome::Handled, H_SUCCESS));
        assert_eq!(sink.0.lock().unwrap().as_slice(), b"hello, world!\n");
        let (_, ret, _) = call(&io, H_PUT_TERM_CHAR, [VTY_REG, 17, hello, rest]);
        assert_eq!(ret, H_PARAMETER);
        let (_, ret, _) = call(&io, H_PUT_TERM_CHAR, [VTY_REG + 1, 1, hello, 0]);
        assert_eq!(ret, H_PARAMETER);
        let broken = PaprIo::new(Box::new(Broken));
        let (o, ret, _) = call(&broken, H_PUT_TERM_CHAR, [VTY_REG, 1, hello, 0]);
        assert_eq!((o, ret), (ArchExitOutcome::Handled, H_HARDWARE));
    }

    #[test]
    fn get_term_char_reads_the_queue() {
        assert_eq!(PaprIo::new(Box::new(std::io::sink())).vty_reg(), VTY_REG);
        let io = PaprIo::new(Box::new(std::io::sink())).with_vty_reg(0x7100_0000);
        assert_eq!(io.vty_reg(), 0x7100_0000);
        let (_, ret, r) = call(&io, H_GET_TERM_CHAR, [0x7100_0000, 0, 0, 0]);
        assert_eq!((ret, r), (H_SUCCESS, [0, 0, 0]));
        io.push_input(b"0123456789abcdefXY");
        let (_, ret, r) = call(&io, H_GET_TERM_CHAR, [0x7100_0000, 0, 0, 0]);
        assert_eq!(ret, H_SUCCESS);
        assert_eq!(r[0], 16);
        assert_eq!(r[1].to_be_bytes(), *b"01234567");
        assert_eq!(r[2].to_be_bytes(), *b"89abcdef");
        assert_eq!(io.pending_input(), 2);
        let (_, _, r) = call(&io, H_GET_TERM_CHAR, [0x7100_0000, 0, 0, 0]);
        assert_eq!(r[0], 2);
        assert_eq!(r[1].to_be_bytes(), *b"XY\0\0\0\0\0\0");
        let (_, ret, _) = call(&io, H_GET_TERM_CHAR, [VTY_REG, 0, 0, 0]);
        assert_eq!(ret, H_PARAMETER);
    }

    #[test]
    fn unknown_hcalls_and_handlers() {
        let io = PaprIo::new(Box::new(std::io::sink())).with_handler(
            H_RTAS,
            |_nr: u64, args: &[u64; 9], out: &mut HcallOutput<'_>| {
                out.set_ret(H_SUCCESS);
                out.set_arg(0, args[0] + 1);
                ArchExitOutcome::Stop {
                    reason: "power-off".into(),
                }
            },
        );
        let (o, ret, _) = call(&io, 0x1234, [0; 4]);
        assert_eq!(
            o,
            ArchExitOutcome::Unhandled {
                space: "hcall",
                addr: 0x1234,
                write: false
            }
        );
        assert_eq!(ret, H_FUNCTION);
        let (o, ret, r) = call(&io, H_RTAS, [41, 0, 0, 0]);
        assert!(matches!(o, ArchExitOutcome::Stop { .. }));
        assert_eq!((ret, r[0]), (H_SUCCESS, 42));
        assert!(format!("{io:?}").contains("61440"));
        let _ = PaprIo::default();
    }
}
