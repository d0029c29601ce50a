//! The devices s390x-only exits are dispatched to (`Arch::ArchIo`).

use crate::exit::{icpt, S390Exit, SieIntercept};
use crate::Sclp;
use kvmkit_core::{ArchExitOutcome, SystemEventKind};

/// The s390x device space: what answers SIE interceptions. Today the SCLP
/// (service calls, its console); more (virtio-ccw's `DIAGNOSE 0x500`, the
/// channel subsystem's `TSCH`) would join here.
///
/// How each s390x exit is handled:
///
/// | exit | outcome |
/// |---|---|
/// | `SERVC` interception | the [`Sclp`] (unhandled without one) |
/// | disabled wait (`icptcode` 0x1c) | stop: the guest halted |
/// | stop request (0x28) | stop: the vCPU stopped itself |
/// | validity (0x20), program interruption loop (0x08, 0x0c) | stop, with the code |
/// | other instructions (`DIAGNOSE`, `SIGP`…) | unhandled in space `"diag"`, `"sigp"` or `"instruction"`: the PSW is already past the instruction, so the guest goes on |
/// | `Reset` | stop: the guest asked for a reset / re-IPL |
/// | `Ucontrol` | stop: user-controlled VMs are not supported |
/// | `Tsch` | unhandled (space `"tsch"`): no channel subsystem |
/// | `Stsi` | handled: KVM already stored the SYSIB |
/// | `Other` | unhandled (space `"exit"`) |
///
/// ```
/// use kvmkit_arch_s390x::{S390Exit, S390Io};
/// use kvmkit_core::{ArchExitOutcome, SystemEventKind};
/// let io = S390Io::new();
/// let out = io.handle(S390Exit::Reset { flags: 16 });
/// assert!(matches!(out, ArchExitOutcome::SystemEvent { kind: SystemEventKind::Reset }));
/// ```
#[derive(Debug, Default)]
pub struct S390Io {
    sclp: Option<Sclp>,
}

impl S390Io {
    /// No devices: service calls are reported as unhandled.
    pub fn new() -> Self {
        S390Io::default()
    }

    /// With an SCLP answering service calls.
    pub fn with_sclp(sclp: Sclp) -> Self {
        S390Io { sclp: Some(sclp) }
    }

    /// The SCLP, if any.
    pub fn sclp(&self) -> Option<&Sclp> {
        self.sclp.as_ref()
    }

    /// Handles one s390x-only exit (the body of `Arch::handle_arch_exit`).
    pub fn handle(&self, exit: S390Exit<'_>) -> ArchExitOutcome {
        match exit {
            S390Exit::SieIntercept(mut i) => self.intercept(&mut i),
            // A reset / re-IPL request (KVM_S390_RESET_* flags).
            S390Exit::Reset { .. } => ArchExitOutcome::SystemEvent {
                kind: SystemEventKind::Reset,
            },
            S390Exit::Ucontrol {
                trans_exc_code,
                pgm_code,
            } => ArchExitOutcome::Stop {
                reason: format!(
                    "ucontrol fault (program code {pgm_code:#x}, translation exception code \
                     {trans_exc_code:#x}): user-controlled VMs are not supported"
                ),
            },
            S390Exit::Tsch { subchannel_nr, .. } => ArchExitOutcome::Unhandled {
                space: "tsch",
                addr: u64::from(subchannel_nr),
                write: false,
            },
            S390Exit::Stsi { .. } => ArchExitOutcome::Handled,
            S390Exit::Other { reason } => ArchExitOutcome::Unhandled {
                space: "exit",
                addr: u64::from(reason),
                write: false,
            },
        }
    }

    fn intercept(&self, i: &mut SieIntercept<'_>) -> ArchExitOutcome {
        let at = i.regs.psw_addr();
        match i.icptcode {
            icpt::INSTRUCTION => {
                if let Some(call) = i.service_call() {
                    return match &self.sclp {
                        Some(sclp) => sclp.handle(i),
                        None => ArchExitOutcome::Unhandled {
                            space: "sclp",
                            addr: call.sccb,
                            write: true,
                        },
                    };
                }
                if let Some(code) = i.diagnose_code() {
                    return ArchExitOutcome::Unhandled {
                        space: "diag",
                        addr: u64::from(code),
                        write: false,
                    };
                }
                if let Some(order) = i.sigp_order() {
                    return ArchExitOutcome::Unhandled {
                        space: "sigp",
                        addr: u64::from(order),
                        write: false,
                    };
                }
                ArchExitOutcome::Unhandled {
                    space: "instruction",
                    addr: u64::from(i.ipa) << 32 | u64::from(i.ipb),
                    write: false,
                }
            }
            icpt::WAIT => ArchExitOutcome::Stop {
                reason: format!("disabled wait: PSW {:#018x} {at:#x}", i.regs.psw_mask()),
            },
            icpt::STOP => ArchExitOutcome::Stop {
                reason: format!("the vCPU stopped (stop request) at {at:#x}"),
            },
            icpt::VALIDITY | icpt::PROGRAM | icpt::INSTRUCTION_PROGRAM => ArchExitOutcome::Stop {
                reason: format!(
                    "SIE interception {:#04x} at {at:#x} (validity or program-interruption loop)",
                    i.icptcode
                ),
            },
            code => ArchExitOutcome::Unhandled {
                space: "intercept",
                addr: u64::from(code),
                write: false,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exit::{RunRegs, KVM_RUN_SIZE};

    fn with<R>(icptcode: u8, ipa: u16, ipb: u32, f: impl FnOnce(SieIntercept<'_>) -> R) -> R {
        let mut run = vec![0u8; KVM_RUN_SIZE];
        let mut regs = RunRegs::new(&mut run).unwrap();
        regs.set_gpr(3, 0x3000);
        f(SieIntercept {
            icptcode,
            ipa,
            ipb,
            regs,
        })
    }

    fn outcome(icptcode: u8, ipa: u16, ipb: u32) -> ArchExitOutcome {
        with(icptcode, ipa, ipb, |i| {
            S390Io::new().handle(S390Exit::SieIntercept(i))
        })
    }

    #[test]
    fn intercepts() {
        assert_eq!(
            outcome(icpt::INSTRUCTION, 0xb220, 0x0023_0000),
            ArchExitOutcome::Unhandled {
                space: "sclp",
                addr: 0x3000,
                write: true
            }
        );
        assert_eq!(
            outcome(icpt::INSTRUCTION, 0x8300, 0x0500_0000),
            ArchExitOutcome::Unhandled {
                space: "diag",
                addr: 0x500,
                write: false
            }
        );
        assert_eq!(
            outcome(icpt::INSTRUCTION, 0xae13, 0x0005_0000),
            ArchExitOutcome::Unhandled {
                space: "sigp",
                addr: 5,
                write: false
            }
        );
        assert_eq!(
            outcome(icpt::INSTRUCTION, 0xb2ff, 1),
            ArchExitOutcome::Unhandled {
                space: "instruction",
                addr: 0xb2ff_0000_0001,
                write: false
            }
        );
        for code in [icpt::WAIT, icpt::STOP, icpt::VALIDITY, icpt::PROGRAM] {
            assert!(matches!(outcome(code, 0, 0), ArchExitOutcome::Stop { .. }));
        }
        assert!(matches!(
            outcome(icpt::WAIT, 0, 0),
            ArchExitOutcome::Stop { reason } if reason.starts_with("disabled wait")
        ));
        assert_eq!(
            outcome(icpt::IO_INSTRUCTION, 0, 0),
            ArchExitOutcome::Unhandled {
                space: "intercept",
                addr: 0x40,
                write: false
            }
        );
    }

    #[test]
    fn other_exits() {
        let io = S390Io::new();
        assert!(io.sclp().is_none());
        assert!(matches!(
            io.handle(S390Exit::Ucontrol {
                trans_exc_code: 1,
                pgm_code: 0x10
            }),
            ArchExitOutcome::Stop { .. }
        ));
        assert_eq!(
            io.handle(S390Exit::Tsch {
                subchannel_id: 1,
                subchannel_nr: 7,
                io_int_parm: 0,
                io_int_word: 0,
                ipb: 0,
                dequeued: false
            }),
            ArchExitOutcome::Unhandled {
                space: "tsch",
                addr: 7,
                write: false
            }
        );
        assert_eq!(
            io.handle(S390Exit::Stsi {
                addr: 0,
                ar: 0,
                fc: 3,
                sel1: 2,
                sel2: 2
            }),
            ArchExitOutcome::Handled
        );
        assert_eq!(
            io.handle(S390Exit::Other { reason: 0 }),
            ArchExitOutcome::Unhandled {
                space: "exit",
                addr: 0,
                write: false
            }
        );
    }
}
