//! `SnapshotArch` for PowerPC: the VM-wide state (XICS sources, the KVM-HV
//! hash page table) and the ABI profile.
//!
//! Every function here issues the real ioctls a PowerPC host needs; none has
//! run on one (see the crate README). On other hosts the tests reach them
//! through non-KVM file descriptors and check the errors name the ioctl.

use crate::hpt::HptReader;
use crate::ioctls::KVM_PPC_ALLOCATE_HTAB;
use crate::profile::{host_profile, STATE_CAPS};
use crate::sys::{self, AttrValue};
use crate::uapi::{CAP_PPC_HTAB_FD, KVM_DEV_XICS_GRP_SOURCES, KVM_GET_HTAB_WRITE};
use crate::{
    arch::read_one_regs, Error, HashPageTable, IrqchipKind, Omitted, Ppc64, PpcAbiProfile,
    PpcIrqChip, PpcSystem, PpcVcpuState, PpcVm, PpcVmState, ProfileMismatch, Result, StatePiece,
    VcpuConfig, VmConfig, XicsSource, STATE_VERSION,
};
use kvmkit_core::{Arch, CapabilityValue, SnapshotArch, VcpuId};
use std::fs::File;
use std::io::{ErrorKind, Read, Write};

/// The buffer of one read of the hash page table stream.
const HTAB_READ_BYTES: usize = 64 << 10;

/// `KVM_DEV_XICS_GRP_SOURCES` as the attribute group (a u32).
fn xics_sources_group() -> u32 {
    u32::try_from(KVM_DEV_XICS_GRP_SOURCES).expect("1")
}

/// True when KVM-HV runs `vm` (`KVM_CAP_PPC_HTAB_FD` on the VM fd).
fn is_kvm_hv(vm: &PpcVm) -> bool {
    Ppc64::vm_check_extension(vm, CAP_PPC_HTAB_FD) > 0
}

fn read_xics_sources(chip: &PpcIrqChip) -> Result<Vec<XicsSource>> {
    use kvmkit_irq::InterruptController;
    (0..chip.irq_count())
        .map(|i| {
            let irq = chip.irq_base() + i;
            let state =
                sys::get_device_attr_u64(chip.device_fd(), xics_sources_group(), u64::from(irq))
                    .map_err(Error::ioctl(
                        "KVM_GET_DEVICE_ATTR(KVM_DEV_XICS_GRP_SOURCES)",
                    ))?;
            Ok(XicsSource { irq, state })
        })
        .collect()
}

/// Reads the whole hash page table through `KVM_PPC_GET_HTAB_FD`: the first
/// pass and the changes after it, until a read returns nothing.
fn read_hpt(vm: &PpcVm) -> Result<Option<HashPageTable>> {
    let fd = sys::get_htab_fd(vm.as_fd(), 0).map_err(Error::ioctl("KVM_PPC_GET_HTAB_FD"))?;
    let mut stream = File::from(fd);
    let mut buf = vec![0u8; HTAB_READ_BYTES];
    let mut reader = HptReader::default();
    loop {
        let n = match stream.read(&mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(source) => return Err(Error::HptStream { op: "read", source }),
        };
        if n == 0 {
            break;
        }
        reader.feed(&buf[..n]).map_err(Error::HashPageTable)?;
    }
    reader.finish().map_err(Error::HashPageTable)
}

/// Allocates a table of the saved order (`KVM_PPC_ALLOCATE_HTAB`, which
/// clears one of that order) and writes the saved entries into it.
fn write_hpt(vm: &PpcVm, hpt: &HashPageTable) -> Result<()> {
    let mut order = hpt.order;
    sys::ioctl_plain(vm.as_fd(), KVM_PPC_ALLOCATE_HTAB, &mut order)
        .map_err(Error::ioctl("KVM_PPC_ALLOCATE_HTAB"))?;
    let fd = sys::get_htab_fd(vm.as_fd(), KVM_GET_HTAB_WRITE)
        .map_err(Error::ioctl("KVM_PPC_GET_HTAB_FD(KVM_GET_HTAB_WRITE)"))?;
    // The kernel takes whole records per write; `write_all` goes on from
    // where a short write stopped.
    File::from(fd)
        .write_all(&hpt.write_records())
        .map_err(|source| Error::HptStream {
            op: "write",
            source,
        })
}

/// Reads the VM-wide state: with the in-kernel XICS every source's state
/// (`KVM_GET_DEVICE_ATTR` of `KVM_DEV_XICS_GRP_SOURCES`), with KVM-HV the
/// guest hash page table (`KVM_PPC_GET_HTAB_FD`). The vCPUs must be out of
/// `KVM_RUN`.
///
/// Refuses (`Error::StateNotCarried`) a VM with the in-kernel XIVE, whose
/// state (source configuration, event queues, presenters) this crate does
/// not save: a snapshot without it would not restore.
///
/// ```no_run
/// use kvmkit_arch_powerpc::{save_vm_state, Ppc64};
/// let kvm = kvmkit_core::Kvm::<Ppc64>::new().unwrap();
/// let vm = kvm.create_vm(&Default::default()).unwrap();
/// let s = save_vm_state(vm.arch_fd()).unwrap();
/// assert_eq!(s.xics_sources.unwrap().len(), 256);
/// ```
pub fn save_vm_state(vm: &PpcVm) -> Result<PpcVmState> {
    let kvm_hv = is_kvm_hv(vm);
    let mut omitted = Vec::new();
    let xics_sources = match vm.irqchip() {
        None => {
            omitted.push(Omitted {
                piece: StatePiece::XicsSources,
                reason: "the VM has no in-kernel interrupt controller (IrqchipKind::None)".into(),
            });
            None
        }
        Some(chip) if chip.kind() == IrqchipKind::Xive => {
            return Err(Error::StateNotCarried {
                what: "the in-kernel XIVE (source configuration, event queues, presenters)",
            })
        }
        Some(chip) => Some(read_xics_sources(&chip)?),
    };
    let hpt = if kvm_hv {
        let hpt = read_hpt(vm)?;
        if hpt.is_none() {
            omitted.push(Omitted {
                piece: StatePiece::HashPageTable,
                reason: "KVM-HV returned an empty table: a radix guest, or no table yet".into(),
            });
        }
        hpt
    } else {
        omitted.push(Omitted {
            piece: StatePiece::HashPageTable,
            reason: "KVM-PR keeps it in guest memory (where SDR1 points)".into(),
        });
        None
    };
    Ok(PpcVmState {
        version: STATE_VERSION,
        big_endian: cfg!(target_endian = "big"),
        kvm_hv,
        xics_sources,
        hpt,
        omitted,
    })
}

fn does_not_fit(piece: StatePiece, detail: String) -> Error {
    Error::StateDoesNotFit { piece, detail }
}

/// Writes back VM-wide state saved by [`save_vm_state`]: the hash page
/// table (allocated at the saved order, then written through
/// `KVM_PPC_GET_HTAB_FD` with `KVM_GET_HTAB_WRITE`), then each XICS source
/// (`KVM_SET_DEVICE_ATTR`; a pending source is delivered to its server, so
/// the vCPUs must exist, as the `SnapshotArch` order says).
///
/// Refuses, before writing anything, a state of another format version, a
/// malformed table, a table on a VM KVM-HV does not run, and XICS sources
/// the VM's in-kernel XICS does not have.
///
/// ```no_run
/// use kvmkit_arch_powerpc::{restore_vm_state, save_vm_state, Ppc64};
/// let kvm = kvmkit_core::Kvm::<Ppc64>::new().unwrap();
/// let saved = save_vm_state(kvm.create_vm(&Default::default()).unwrap().arch_fd()).unwrap();
/// let vm = kvm.create_vm(&Default::default()).unwrap();
/// restore_vm_state(vm.arch_fd(), &saved).unwrap();
/// ```
pub fn restore_vm_state(vm: &PpcVm, state: &PpcVmState) -> Result<()> {
    if state.version != STATE_VERSION {
        return Err(Error::StateVersion {
            what: "VM",
            found: state.version,
            supported: STATE_VERSION,
        });
    }
    let chip = match &state.xics_sources {
        None => None,
        Some(sources) => {
            let chip = vm
                .irqchip()
                .filter(|c| c.kind() == IrqchipKind::Xics)
                .ok_or_else(|| {
                    does_not_fit(
                        StatePiece::XicsSources,
                        "this VM has no in-kernel XICS".into(),
                    )
                })?;
            let (base, end) = xics_range(&chip);
            if let Some(s) = sources.iter().find(|s| s.irq < base || s.irq >= end) {
                return Err(does_not_fit(
                    StatePiece::XicsSources,
                    format!(
                        "source {:#x} is outside this VM's sources {base:#x}..{end:#x}",
                        s.irq
                    ),
                ));
            }
            Some((chip, sources))
        }
    };
    if let Some(hpt) = &state.hpt {
        hpt.validate().map_err(Error::HashPageTable)?;
        if !is_kvm_hv(vm) {
            return Err(does_not_fit(
                StatePiece::HashPageTable,
                "KVM-HV does not run this VM (KVM_CAP_PPC_HTAB_FD is 0)".into(),
            ));
        }
        write_hpt(vm, hpt)?;
    }
    if let Some((chip, sources)) = chip {
        for s in sources {
            sys::set_device_attr(
                chip.device_fd(),
                xics_sources_group(),
                u64::from(s.irq),
                AttrValue::U64(s.state),
            )
            .map_err(Error::ioctl(
                "KVM_SET_DEVICE_ATTR(KVM_DEV_XICS_GRP_SOURCES)",
            ))?;
        }
    }
    Ok(())
}

/// The global numbers `base..end` of the chip's sources.
fn xics_range(chip: &PpcIrqChip) -> (u32, u32) {
    use kvmkit_irq::InterruptController;
    let base = chip.irq_base();
    (base, base.saturating_add(chip.irq_count()))
}

/// The ABI profile of this host for VMs made with `vm` and vCPUs made with
/// `vcpu`: a scratch VM and vCPU (never run) tell whether KVM-HV or KVM-PR
/// runs them, the capabilities on the VM fd, the PVR a vCPU gets and the
/// ONE_REG registers it has.
///
/// ```no_run
/// use kvmkit_arch_powerpc::{abi_profile, Ppc64};
/// let kvm = kvmkit_core::Kvm::<Ppc64>::new().unwrap();
/// let p = abi_profile(kvm.arch_system(), &Default::default(), &Default::default()).unwrap();
/// assert_eq!(p.header.arch, "powerpc");
/// ```
pub fn abi_profile(sys: &PpcSystem, vm: &VmConfig, vcpu: &VcpuConfig) -> Result<PpcAbiProfile> {
    let scratch = Ppc64::create_vm(sys, vm)?;
    Ppc64::init_vm(&scratch, vm)?;
    let v = Ppc64::create_vcpu(sys, &scratch, VcpuId(0))?;
    Ppc64::init_vcpu(sys, &scratch, &v, VcpuId(0), vcpu)?;
    let capabilities = STATE_CAPS
        .iter()
        .map(|&c| CapabilityValue::new(c, Ppc64::vm_check_extension(&scratch, c)))
        .filter(|c| c.value > 0)
        .collect();
    let pvr = Ppc64::get_sregs(&v)?.pvr;
    let one_regs = read_one_regs(&v)?.into_iter().map(|(id, _)| id).collect();
    Ok(host_profile(
        is_kvm_hv(&scratch),
        pvr,
        capabilities,
        one_regs,
    ))
}

/// The VM state is [`PpcVmState`] (XICS sources, KVM-HV hash page table),
/// the profile [`PpcAbiProfile`]. Never run on a PowerPC host.
///
/// ```
/// use kvmkit_arch_powerpc::{Ppc64, PpcVcpuState, PpcVmState};
/// use kvmkit_core::SnapshotArch;
/// let saved = Ppc64::state_profile(&PpcVmState::default(), &[PpcVcpuState::default()]);
/// assert!(Ppc64::check_profile(&saved, &saved).is_ok());
/// ```
impl SnapshotArch for Ppc64 {
    type VmState = PpcVmState;
    type AbiProfile = PpcAbiProfile;
    type ProfileMismatch = ProfileMismatch;

    fn save_vm_state(vm: &PpcVm) -> Result<PpcVmState> {
        save_vm_state(vm)
    }

    fn restore_vm_state(vm: &PpcVm, state: &PpcVmState) -> Result<()> {
        restore_vm_state(vm, state)
    }

    fn host_profile(sys: &PpcSystem, vm: &VmConfig, vcpu: &VcpuConfig) -> Result<PpcAbiProfile> {
        abi_profile(sys, vm, vcpu)
    }

    fn state_profile(vm: &PpcVmState, vcpus: &[PpcVcpuState]) -> PpcAbiProfile {
        PpcAbiProfile::of_state(vm, vcpus)
    }

    fn check_profile(
        saved: &PpcAbiProfile,
        host: &PpcAbiProfile,
    ) -> std::result::Result<(), ProfileMismatch> {
        saved.check(host)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arch::tests::fake_vm;
    use crate::{xics_source_reset_state, Hpte, VmType};

    fn msg<T: std::fmt::Debug>(r: Result<T>) -> String {
        r.unwrap_err().to_string()
    }

    #[test]
    fn saving_asks_the_kernel_what_it_holds() {
        // A VM over /dev/null: no capability, no irqchip, so KVM-PR-like.
        let vm = fake_vm(VmType::Pr);
        let s = save_vm_state(&vm).unwrap();
        assert!(!s.kvm_hv && s.xics_sources.is_none() && s.hpt.is_none());
        assert_eq!(s.big_endian, cfg!(target_endian = "big"));
        let reasons: Vec<String> = s.omitted.iter().map(ToString::to_string).collect();
        assert_eq!(
            reasons,
            [
                "in-kernel XICS sources: the VM has no in-kernel interrupt controller (IrqchipKind::None)",
                "guest hash page table: KVM-PR keeps it in guest memory (where SDR1 points)"
            ]
        );
        assert!(read_hpt(&vm)
            .unwrap_err()
            .to_string()
            .starts_with("KVM_PPC_GET_HTAB_FD failed"));
    }

    #[test]
    fn restoring_refuses_what_does_not_fit_before_writing() {
        let vm = fake_vm(VmType::Pr);
        let old = PpcVmState {
            version: 9,
            ..PpcVmState::default()
        };
        assert_eq!(
            msg(restore_vm_state(&vm, &old)),
            "cannot restore VM state of format version 9: this build reads version 1"
        );
        let xics = PpcVmState {
            xics_sources: Some(vec![XicsSource {
                irq: 0x1000,
                state: 0,
            }]),
            ..PpcVmState::default()
        };
        assert_eq!(
            msg(restore_vm_state(&vm, &xics)),
            "restore refused, nothing was written: the state holds the in-kernel XICS sources but this VM has no in-kernel XICS"
        );
        let hpt = PpcVmState {
            hpt: Some(HashPageTable {
                order: 18,
                entries: vec![Hpte {
                    index: 1,
                    v: 1,
                    r: 2,
                }],
            }),
            ..PpcVmState::default()
        };
        assert_eq!(
            msg(restore_vm_state(&vm, &hpt)),
            "restore refused, nothing was written: the state holds the guest hash page table but KVM-HV does not run this VM (KVM_CAP_PPC_HTAB_FD is 0)"
        );
        let bad = PpcVmState {
            hpt: Some(HashPageTable {
                order: 60,
                entries: vec![],
            }),
            ..PpcVmState::default()
        };
        assert_eq!(
            msg(restore_vm_state(&vm, &bad)),
            "invalid guest hash page table"
        );
        // Nothing in the state: nothing to write.
        restore_vm_state(&vm, &PpcVmState::default()).unwrap();
        // The writes themselves name their ioctls.
        let e = write_hpt(&vm, hpt.hpt.as_ref().unwrap()).unwrap_err();
        assert_eq!(e.to_string(), "KVM_PPC_ALLOCATE_HTAB failed");
    }

    fn xics_vm(kind: IrqchipKind) -> PpcVm {
        // Sources 0x1000..0x1004 (irq::tests::fake), every ioctl ENOTTY.
        crate::arch::tests::fake_vm_with_chip(VmType::Pr, crate::irq::tests::fake(kind))
    }

    fn ioctl_of(e: &Error) -> (&'static str, Option<i32>) {
        match e {
            Error::Ioctl { ioctl, source } => (ioctl, source.raw_os_error()),
            other => panic!("not an ioctl error: {other:?}"),
        }
    }

    #[test]
    fn saving_refuses_the_xive_and_reads_each_xics_source() {
        // The XIVE's state is not carried: refused, not silently left out.
        let e = save_vm_state(&xics_vm(IrqchipKind::Xive)).unwrap_err();
        assert!(matches!(e, Error::StateNotCarried { .. }), "{e:?}");
        assert_eq!(
            e.to_string(),
            "cannot save the VM state: the in-kernel XIVE (source configuration, event queues, presenters) is not carried by this crate"
        );
        // The XICS: each source is a device attribute of the XICS fd.
        let e = save_vm_state(&xics_vm(IrqchipKind::Xics)).unwrap_err();
        assert_eq!(
            ioctl_of(&e),
            (
                "KVM_GET_DEVICE_ATTR(KVM_DEV_XICS_GRP_SOURCES)",
                Some(libc::ENOTTY)
            )
        );
        let chip = crate::irq::tests::fake(IrqchipKind::Xics);
        assert_eq!(xics_range(&chip), (0x1000, 0x1004));
        assert_eq!(xics_sources_group(), 1);
    }

    #[test]
    fn restoring_xics_sources_checks_the_vms_xics_first() {
        let sources = |irqs: &[u32]| PpcVmState {
            xics_sources: Some(
                irqs.iter()
                    .map(|&irq| XicsSource {
                        irq,
                        state: xics_source_reset_state(false),
                    })
                    .collect(),
            ),
            ..PpcVmState::default()
        };
        let xics = xics_vm(IrqchipKind::Xics);
        // A source beyond the VM's range, and one below it.
        assert_eq!(
            msg(restore_vm_state(&xics, &sources(&[0x1000, 0x1004]))),
            "restore refused, nothing was written: the state holds the in-kernel XICS sources but source 0x1004 is outside this VM's sources 0x1000..0x1004"
        );
        assert_eq!(
            msg(restore_vm_state(&xics, &sources(&[0xfff]))),
            "restore refused, nothing was written: the state holds the in-kernel XICS sources but source 0xfff is outside this VM's sources 0x1000..0x1004"
        );
        // A XIVE is no place for XICS sources.
        assert_eq!(
            msg(restore_vm_state(
                &xics_vm(IrqchipKind::Xive),
                &sources(&[0x1000])
            )),
            "restore refused, nothing was written: the state holds the in-kernel XICS sources but this VM has no in-kernel XICS"
        );
        // Sources that fit, with a table this (KVM-PR) VM cannot take: the
        // table is refused before any source is written.
        let both = PpcVmState {
            hpt: Some(HashPageTable {
                order: 18,
                entries: vec![],
            }),
            ..sources(&[0x1000, 0x1003])
        };
        assert!(matches!(
            restore_vm_state(&xics, &both).unwrap_err(),
            Error::StateDoesNotFit {
                piece: StatePiece::HashPageTable,
                ..
            }
        ));
        // Sources that fit are written, each through the XICS fd.
        let e = restore_vm_state(&xics, &sources(&[0x1000, 0x1003])).unwrap_err();
        assert_eq!(
            ioctl_of(&e),
            (
                "KVM_SET_DEVICE_ATTR(KVM_DEV_XICS_GRP_SOURCES)",
                Some(libc::ENOTTY)
            )
        );
        // An empty list needs no write at all.
        restore_vm_state(&xics, &sources(&[])).unwrap();
    }

    #[test]
    fn the_xics_sources_are_saved_and_restored_one_by_one() {
        use crate::ioctls::{KVM_GET_DEVICE_ATTR, KVM_SET_DEVICE_ATTR};
        use crate::sys::tests::with_ioctls_accepted;
        // A kernel that accepts every attribute call (and writes no value
        // back, so each state reads as 0).
        let vm = xics_vm(IrqchipKind::Xics);
        let accepted = [KVM_GET_DEVICE_ATTR, KVM_SET_DEVICE_ATTR];
        let s = with_ioctls_accepted(&accepted, || save_vm_state(&vm)).unwrap();
        let irqs: Vec<u32> = s
            .xics_sources
            .as_ref()
            .unwrap()
            .iter()
            .map(|x| x.irq)
            .collect();
        assert_eq!(
            irqs,
            [0x1000, 0x1001, 0x1002, 0x1003],
            "every source, by global number"
        );
        assert!(s
            .xics_sources
            .as_ref()
            .unwrap()
            .iter()
            .all(|x| x.state == 0));
        // KVM-PR (no KVM_CAP_PPC_HTAB_FD): the table is not the kernel's.
        assert!(!s.kvm_hv && s.hpt.is_none());
        assert_eq!(s.omitted.len(), 1);
        assert_eq!(s.omitted[0].piece, StatePiece::HashPageTable);
        // The saved sources go back into the same VM.
        with_ioctls_accepted(&accepted, || restore_vm_state(&vm, &s)).unwrap();
    }

    #[test]
    fn the_host_profile_comes_from_a_scratch_vm() {
        let sys = crate::arch::tests::fake_system();
        let e = abi_profile(&sys, &VmConfig::default(), &VcpuConfig::default()).unwrap_err();
        assert_eq!(e.to_string(), "KVM_CREATE_VM failed");
        let e = Ppc64::host_profile(&sys, &VmConfig::default(), &VcpuConfig::default());
        assert!(e.is_err());
    }

    #[test]
    fn the_contract_maps_onto_the_functions() {
        let vm = fake_vm(VmType::Default);
        let s = <Ppc64 as SnapshotArch>::save_vm_state(&vm).unwrap();
        <Ppc64 as SnapshotArch>::restore_vm_state(&vm, &s).unwrap();
        let saved = Ppc64::state_profile(&s, &[PpcVcpuState::default()]);
        let mut host = saved.clone();
        host.header.capabilities.clear();
        let e = Ppc64::check_profile(&saved, &host).unwrap_err();
        assert_eq!(
            e.to_string(),
            "KVM_CAP_ONE_REG (70): the state needs 1, this host has 0"
        );
    }
}
