//! `SnapshotArch` for s390x: the VM-wide state (the guest TOD clock, the
//! CPU model, the FLIC's pending floating interruptions) and the ABI
//! profile.
//!
//! Every function here issues the real ioctls an s390x host needs; none has
//! run on one (see the crate README). On this project's x86 host the tests
//! reach them through a VM of the x86 KVM, which does not know s390x's VM
//! attributes, and through non-KVM file descriptors.

use crate::profile::{host_profile, model_mismatches, STATE_CAPS};
use crate::uapi::{
    kvm_s390_vm_tod_clock, KVM_S390_FLIC_MAX_BUFFER, KVM_S390_VM_TOD, KVM_S390_VM_TOD_EXT,
};
use crate::{
    sys, CpuModel, Error, FloatingIrq, Omitted, ProfileMismatch, Result, S390AbiProfile,
    S390System, S390VcpuState, S390Vm, S390VmState, S390x, StatePiece, TodClock, VcpuConfig,
    VmConfig, FLIC_IRQ_BYTES, STATE_VERSION,
};
use kvmkit_core::{Arch, CapabilityValue, SnapshotArch};
use std::fs::File;
use std::io;

/// The first buffer for `KVM_DEV_FLIC_GET_ALL_IRQS`: 100 records.
const FLIC_FIRST_BUFFER: usize = 100 * FLIC_IRQ_BYTES;

/// `KVM_S390_FLIC_MAX_BUFFER` in bytes.
fn flic_max_buffer() -> usize {
    usize::try_from(KVM_S390_FLIC_MAX_BUFFER).expect("32 MiB")
}

/// The kernel has no such attribute (an older KVM): `ENXIO`, or `EINVAL`
/// for an unknown attribute of a known group.
fn lacks_attr(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENXIO | libc::EINVAL))
}

/// `KVM_S390_VM_TOD_EXT`, or `_HIGH` and `_LOW` on kernels without it.
fn read_tod(vm: &File) -> Result<TodClock> {
    match sys::get_tod_ext(vm) {
        Ok(t) => Ok(TodClock {
            epoch_idx: t.epoch_idx,
            tod: t.tod,
        }),
        Err(e) if lacks_attr(&e) => {
            let high = sys::get_tod_high(vm)
                .map_err(Error::ioctl("KVM_GET_DEVICE_ATTR(KVM_S390_VM_TOD_HIGH)"))?;
            let low = sys::get_tod_low(vm)
                .map_err(Error::ioctl("KVM_GET_DEVICE_ATTR(KVM_S390_VM_TOD_LOW)"))?;
            Ok(TodClock {
                epoch_idx: high,
                tod: low,
            })
        }
        Err(source) => Err(Error::Ioctl {
            ioctl: "KVM_GET_DEVICE_ATTR(KVM_S390_VM_TOD_EXT)",
            source,
        }),
    }
}

/// The CPU model the VM's guest sees, `None` on a kernel without
/// `KVM_S390_VM_CPU_MODEL`; omissions are recorded in `omitted`.
fn read_cpu_model(vm: &File, omitted: &mut Vec<Omitted>) -> Result<Option<CpuModel>> {
    let p = match sys::get_cpu_processor(vm) {
        Ok(p) => p,
        Err(e) if lacks_attr(&e) => {
            omitted.push(Omitted {
                piece: StatePiece::CpuModel,
                reason: "the kernel has no KVM_S390_VM_CPU_PROCESSOR".into(),
            });
            return Ok(None);
        }
        Err(source) => {
            return Err(Error::Ioctl {
                ioctl: "KVM_GET_DEVICE_ATTR(KVM_S390_VM_CPU_PROCESSOR)",
                source,
            })
        }
    };
    let features = match sys::get_cpu_processor_feat(vm) {
        Ok(f) => Some(f.feat.to_vec()),
        Err(e) if lacks_attr(&e) => {
            omitted.push(Omitted {
                piece: StatePiece::CpuFeatures,
                reason: "the kernel has no KVM_S390_VM_CPU_PROCESSOR_FEAT".into(),
            });
            None
        }
        Err(source) => {
            return Err(Error::Ioctl {
                ioctl: "KVM_GET_DEVICE_ATTR(KVM_S390_VM_CPU_PROCESSOR_FEAT)",
                source,
            })
        }
    };
    Ok(Some(CpuModel {
        cpuid: p.cpuid,
        ibc: p.ibc,
        facilities: p.fac_list.to_vec(),
        features,
    }))
}

/// `KVM_DEV_FLIC_GET_ALL_IRQS` with a buffer doubled (up to
/// `KVM_S390_FLIC_MAX_BUFFER`) while the kernel answers `ENOMEM`.
fn read_floating_irqs(flic: &File) -> Result<Vec<FloatingIrq>> {
    let mut len = FLIC_FIRST_BUFFER;
    loop {
        let mut buf = vec![0u8; len];
        match sys::flic_get_all_irqs(flic, &mut buf) {
            Ok(n) => {
                return FloatingIrq::parse(&buf, n).ok_or(Error::Ioctl {
                    ioctl: "KVM_GET_DEVICE_ATTR(KVM_DEV_FLIC_GET_ALL_IRQS)",
                    source: io::Error::from_raw_os_error(libc::EOVERFLOW),
                })
            }
            Err(e) if e.raw_os_error() == Some(libc::ENOMEM) && len < flic_max_buffer() => {
                len = (len * 2).min(flic_max_buffer());
            }
            Err(e) if e.raw_os_error() == Some(libc::ENOMEM) => {
                return Err(Error::FlicTooManyIrqs { bytes: len })
            }
            Err(source) => {
                return Err(Error::Ioctl {
                    ioctl: "KVM_GET_DEVICE_ATTR(KVM_DEV_FLIC_GET_ALL_IRQS)",
                    source,
                })
            }
        }
    }
}

/// Reads the VM-wide state: the guest TOD clock (`KVM_GET_DEVICE_ATTR` of
/// `KVM_S390_VM_TOD` on the VM fd), the CPU model the guest sees
/// (`KVM_S390_VM_CPU_PROCESSOR` and `_FEAT`) and, when the VM has a FLIC
/// ([`crate::Flic::new`]), its pending floating interruptions
/// (`KVM_DEV_FLIC_GET_ALL_IRQS`). The vCPUs must be out of `KVM_RUN`.
///
/// Without a FLIC no floating interruption can be pending (this crate
/// injects them only through it), which `omitted` records.
///
/// ```no_run
/// use kvmkit_arch_s390x::{save_vm_state, Flic, S390x};
/// let kvm = kvmkit_core::Kvm::<S390x>::new().unwrap();
/// let vm = kvm.create_vm(&Default::default()).unwrap();
/// let _flic = Flic::new(vm.arch_fd()).unwrap();
/// let s = save_vm_state(vm.arch_fd()).unwrap();
/// assert!(s.floating_irqs.unwrap().is_empty());
/// ```
pub fn save_vm_state(vm: &S390Vm) -> Result<S390VmState> {
    let tod = read_tod(vm.file())?;
    let mut omitted = Vec::new();
    let cpu_model = read_cpu_model(vm.file(), &mut omitted)?;
    let floating_irqs = match vm.flic() {
        Some(flic) => Some(read_floating_irqs(flic)?),
        None => {
            omitted.push(Omitted {
                piece: StatePiece::FloatingInterrupts,
                reason: "the VM has no FLIC (Flic::new): none can be pending".into(),
            });
            None
        }
    };
    Ok(S390VmState {
        version: STATE_VERSION,
        tod,
        cpu_model,
        floating_irqs,
        omitted,
    })
}

fn does_not_fit(piece: StatePiece, detail: String) -> Error {
    Error::StateDoesNotFit { piece, detail }
}

/// Writes back VM-wide state saved by [`save_vm_state`]: the guest TOD
/// clock (`KVM_S390_VM_TOD_EXT`, or `_LOW` on kernels without it; this sets
/// every vCPU's epoch, so the guest's clock continues from the saved value),
/// then the floating interruptions (`KVM_DEV_FLIC_ENQUEUE`).
///
/// Refuses, before writing anything, a state of another format version, a
/// CPU model the VM's does not cover (this crate does not set CPU models: a
/// VM gets KVM's default for the host, which must offer every facility and
/// feature the guest saw), a TOD epoch index the kernel cannot set,
/// interruptions for a VM without a FLIC, and damaged interruption records.
///
/// ```no_run
/// use kvmkit_arch_s390x::{restore_vm_state, save_vm_state, Flic, S390x};
/// let kvm = kvmkit_core::Kvm::<S390x>::new().unwrap();
/// let old = kvm.create_vm(&Default::default()).unwrap();
/// let _f = Flic::new(old.arch_fd()).unwrap();
/// let saved = save_vm_state(old.arch_fd()).unwrap();
/// let vm = kvm.create_vm(&Default::default()).unwrap();
/// let _flic = Flic::new(vm.arch_fd()).unwrap(); // before the restore
/// restore_vm_state(vm.arch_fd(), &saved).unwrap();
/// ```
pub fn restore_vm_state(vm: &S390Vm, state: &S390VmState) -> Result<()> {
    if state.version != STATE_VERSION {
        return Err(Error::StateVersion {
            what: "VM",
            found: state.version,
            supported: STATE_VERSION,
        });
    }
    if let Some(saved) = &state.cpu_model {
        let current = read_cpu_model(vm.file(), &mut Vec::new())?.ok_or_else(|| {
            does_not_fit(
                StatePiece::CpuModel,
                "this kernel reports no CPU model".into(),
            )
        })?;
        if let Some(m) = model_mismatches(saved, &current).first() {
            return Err(does_not_fit(
                StatePiece::CpuModel,
                format!("this VM's does not cover it: {m}"),
            ));
        }
    }
    let ext = sys::has_device_attr(vm.file(), KVM_S390_VM_TOD, KVM_S390_VM_TOD_EXT);
    if state.tod.epoch_idx != 0 && !ext {
        return Err(does_not_fit(
            StatePiece::TodClock,
            format!(
                "its epoch index is {} and this kernel has no KVM_S390_VM_TOD_EXT",
                state.tod.epoch_idx
            ),
        ));
    }
    let mut records = Vec::new();
    if let Some(irqs) = &state.floating_irqs {
        for (i, irq) in irqs.iter().enumerate() {
            let r = irq.record().ok_or_else(|| {
                does_not_fit(
                    StatePiece::FloatingInterrupts,
                    format!(
                        "record {i} has a payload of {} bytes, not 64",
                        irq.payload.len()
                    ),
                )
            })?;
            records.extend(r);
        }
    }
    let flic = match (records.is_empty(), vm.flic()) {
        (true, _) => None,
        (false, Some(f)) => Some(f),
        (false, None) => {
            return Err(does_not_fit(
                StatePiece::FloatingInterrupts,
                "this VM has no FLIC: create it (Flic::new) before restoring".into(),
            ))
        }
    };
    if ext {
        let t = kvm_s390_vm_tod_clock {
            epoch_idx: state.tod.epoch_idx,
            pad: [0; 7],
            tod: state.tod.tod,
        };
        sys::set_tod_ext(vm.file(), &t)
            .map_err(Error::ioctl("KVM_SET_DEVICE_ATTR(KVM_S390_VM_TOD_EXT)"))?;
    } else {
        sys::set_tod_low(vm.file(), state.tod.tod)
            .map_err(Error::ioctl("KVM_SET_DEVICE_ATTR(KVM_S390_VM_TOD_LOW)"))?;
    }
    if let Some(flic) = flic {
        let chunk = flic_max_buffer() / FLIC_IRQ_BYTES * FLIC_IRQ_BYTES;
        for part in records.chunks(chunk) {
            sys::flic_enqueue_records(flic, part)
                .map_err(Error::ioctl("KVM_SET_DEVICE_ATTR(KVM_DEV_FLIC_ENQUEUE)"))?;
        }
    }
    Ok(())
}

/// The ABI profile of this host for VMs made with `vm`: a scratch VM
/// (never run) gives the capabilities on its fd, whether the TOD epoch
/// index can be set, and the CPU model a new VM gets. (No vCPU is needed:
/// every register a vCPU snapshot holds exists on every s390x KVM.)
///
/// ```no_run
/// use kvmkit_arch_s390x::{abi_profile, S390x};
/// let kvm = kvmkit_core::Kvm::<S390x>::new().unwrap();
/// let p = abi_profile(kvm.arch_system(), &Default::default()).unwrap();
/// assert_eq!(p.header.arch, "s390x");
/// ```
pub fn abi_profile(sys: &S390System, vm: &VmConfig) -> Result<S390AbiProfile> {
    let scratch = S390x::create_vm(sys, vm)?;
    S390x::init_vm(&scratch, vm)?;
    let capabilities = STATE_CAPS
        .iter()
        .map(|&c| CapabilityValue::new(c, S390x::vm_check_extension(&scratch, c)))
        .filter(|c| c.value > 0)
        .collect();
    let tod_ext = sys::has_device_attr(scratch.file(), KVM_S390_VM_TOD, KVM_S390_VM_TOD_EXT);
    let cpu_model = read_cpu_model(scratch.file(), &mut Vec::new())?;
    Ok(host_profile(capabilities, tod_ext, cpu_model))
}

/// The VM state is [`S390VmState`] (TOD clock, CPU model, floating
/// interruptions), the profile [`S390AbiProfile`]. Never run on an s390x
/// host.
///
/// ```
/// use kvmkit_arch_s390x::{S390VcpuState, S390VmState, S390x};
/// use kvmkit_core::SnapshotArch;
/// let saved = S390x::state_profile(&S390VmState::default(), &[S390VcpuState::default()]);
/// assert!(S390x::check_profile(&saved, &saved).is_ok());
/// ```
impl SnapshotArch for S390x {
    type VmState = S390VmState;
    type AbiProfile = S390AbiProfile;
    type ProfileMismatch = ProfileMismatch;

    fn save_vm_state(vm: &S390Vm) -> Result<S390VmState> {
        save_vm_state(vm)
    }

    fn restore_vm_state(vm: &S390Vm, state: &S390VmState) -> Result<()> {
        restore_vm_state(vm, state)
    }

    /// See [`abi_profile`]; `vcpu` changes nothing on s390x.
    fn host_profile(sys: &S390System, vm: &VmConfig, _vcpu: &VcpuConfig) -> Result<S390AbiProfile> {
        abi_profile(sys, vm)
    }

    fn state_profile(vm: &S390VmState, vcpus: &[S390VcpuState]) -> S390AbiProfile {
        S390AbiProfile::of_state(vm, vcpus)
    }

    fn check_profile(
        saved: &S390AbiProfile,
        host: &S390AbiProfile,
    ) -> std::result::Result<(), ProfileMismatch> {
        saved.check(host)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn null_vm() -> S390Vm {
        S390Vm::from_file(File::open("/dev/null").unwrap())
    }

    fn msg<T: std::fmt::Debug>(r: Result<T>) -> String {
        r.unwrap_err().to_string()
    }

    #[test]
    fn saving_names_the_attribute_that_failed() {
        assert_eq!(
            msg(save_vm_state(&null_vm())),
            "KVM_GET_DEVICE_ATTR(KVM_S390_VM_TOD_EXT) failed"
        );
        let f = File::open("/dev/null").unwrap();
        assert_eq!(
            msg(read_floating_irqs(&f)),
            "KVM_GET_DEVICE_ATTR(KVM_DEV_FLIC_GET_ALL_IRQS) failed"
        );
        assert_eq!(
            msg(read_cpu_model(&f, &mut Vec::new())),
            "KVM_GET_DEVICE_ATTR(KVM_S390_VM_CPU_PROCESSOR) failed"
        );
    }

    #[test]
    fn restoring_refuses_what_does_not_fit_before_writing() {
        let vm = null_vm();
        let old = S390VmState {
            version: 0,
            ..S390VmState::default()
        };
        assert_eq!(
            msg(restore_vm_state(&vm, &old)),
            "cannot restore VM state of format version 0: this build reads version 1"
        );
        let epoch = S390VmState {
            tod: TodClock {
                epoch_idx: 2,
                tod: 0,
            },
            ..S390VmState::default()
        };
        assert_eq!(
            msg(restore_vm_state(&vm, &epoch)),
            "restore refused, nothing was written: the state holds the guest TOD clock but its epoch index is 2 and this kernel has no KVM_S390_VM_TOD_EXT"
        );
        let irq = FloatingIrq {
            kind: 0xffff_2401,
            payload: vec![0; 64],
        };
        let irqs = S390VmState {
            floating_irqs: Some(vec![irq.clone()]),
            ..S390VmState::default()
        };
        assert_eq!(
            msg(restore_vm_state(&vm, &irqs)),
            "restore refused, nothing was written: the state holds the pending floating interruptions but this VM has no FLIC: create it (Flic::new) before restoring"
        );
        let damaged = S390VmState {
            floating_irqs: Some(vec![
                irq,
                FloatingIrq {
                    kind: 1,
                    payload: vec![0; 3],
                },
            ]),
            ..S390VmState::default()
        };
        assert!(msg(restore_vm_state(&vm, &damaged))
            .ends_with("record 1 has a payload of 3 bytes, not 64"));
        let model = S390VmState {
            cpu_model: Some(CpuModel::default()),
            ..S390VmState::default()
        };
        assert_eq!(
            msg(restore_vm_state(&vm, &model)),
            "KVM_GET_DEVICE_ATTR(KVM_S390_VM_CPU_PROCESSOR) failed"
        );
        // Nothing but the TOD: it is written, and the write names its ioctl.
        assert_eq!(
            msg(restore_vm_state(&vm, &S390VmState::default())),
            "KVM_SET_DEVICE_ATTR(KVM_S390_VM_TOD_LOW) failed"
        );
    }

    /// A VM of a kernel without s390x's VM attributes: /dev/urandom
    /// answers every ioctl it does not know with EINVAL, which is what KVM
    /// answers for an attribute of a known group it does not have.
    fn attrless_vm() -> S390Vm {
        S390Vm::from_file(File::open("/dev/urandom").unwrap())
    }

    fn errno<T: std::fmt::Debug>(r: Result<T>) -> (String, Option<i32>) {
        match r.unwrap_err() {
            Error::Ioctl { ioctl, source } => (ioctl.to_string(), source.raw_os_error()),
            other => panic!("not an ioctl error: {other:?}"),
        }
    }

    #[test]
    fn missing_attributes_are_told_from_failures() {
        assert!(lacks_attr(&io::Error::from_raw_os_error(libc::ENXIO)));
        assert!(lacks_attr(&io::Error::from_raw_os_error(libc::EINVAL)));
        // ENOTTY is no VM at all (or not s390x's KVM): an error.
        assert!(!lacks_attr(&io::Error::from_raw_os_error(libc::ENOTTY)));
        assert!(!lacks_attr(&io::Error::other("no errno")));
    }

    #[test]
    fn a_kernel_without_tod_ext_is_read_through_tod_high_and_low() {
        // TOD_EXT is missing, so the save falls back to TOD_HIGH (then
        // TOD_LOW), which this kernel lacks as well: the error names it.
        assert_eq!(
            errno(save_vm_state(&attrless_vm())),
            (
                "KVM_GET_DEVICE_ATTR(KVM_S390_VM_TOD_HIGH)".to_string(),
                Some(libc::EINVAL)
            )
        );
        // Where the attribute exists but fails otherwise, no fallback.
        assert_eq!(
            errno(read_tod(&File::open("/dev/null").unwrap())),
            (
                "KVM_GET_DEVICE_ATTR(KVM_S390_VM_TOD_EXT)".to_string(),
                Some(libc::ENOTTY)
            )
        );
    }

    #[test]
    fn a_kernel_without_a_cpu_model_saves_none_and_says_why() {
        let vm = attrless_vm();
        let mut omitted = Vec::new();
        assert_eq!(read_cpu_model(vm.file(), &mut omitted).unwrap(), None);
        assert_eq!(
            omitted,
            [Omitted {
                piece: StatePiece::CpuModel,
                reason: "the kernel has no KVM_S390_VM_CPU_PROCESSOR".into(),
            }]
        );
        assert_eq!(
            omitted[0].to_string(),
            "CPU model: the kernel has no KVM_S390_VM_CPU_PROCESSOR"
        );
        // A state that holds a model cannot be checked there: refused
        // before the TOD clock is written.
        let model = S390VmState {
            cpu_model: Some(CpuModel {
                cpuid: 0xff00_0000_8561_8000,
                ibc: 0x0123,
                facilities: vec![0xfb, 0xfa],
                features: None,
            }),
            ..S390VmState::default()
        };
        let e = restore_vm_state(&vm, &model).unwrap_err();
        assert!(
            matches!(
                e,
                Error::StateDoesNotFit {
                    piece: StatePiece::CpuModel,
                    ..
                }
            ),
            "{e:?}"
        );
        assert_eq!(
            e.to_string(),
            "restore refused, nothing was written: the state holds the CPU model but this kernel reports no CPU model"
        );
        // Without a model the TOD is written: TOD_LOW, since the kernel has
        // no TOD_EXT (KVM_HAS_DEVICE_ATTR fails).
        assert_eq!(
            errno(restore_vm_state(&vm, &S390VmState::default())),
            (
                "KVM_SET_DEVICE_ATTR(KVM_S390_VM_TOD_LOW)".to_string(),
                Some(libc::EINVAL)
            )
        );
    }

    #[test]
    fn a_kernel_with_every_attribute_saves_every_piece() {
        use crate::sys::tests::with_ioctls_accepted;
        use crate::sys::{KVM_GET_DEVICE_ATTR, KVM_HAS_DEVICE_ATTR, KVM_SET_DEVICE_ATTR};
        // A kernel that has every VM attribute and a FLIC with nothing
        // pending; it writes no value back, so each reads as zeros.
        let vm = null_vm();
        vm.set_flic(File::open("/dev/null").unwrap());
        let accepted = [
            KVM_GET_DEVICE_ATTR,
            KVM_HAS_DEVICE_ATTR,
            KVM_SET_DEVICE_ATTR,
        ];
        let s = with_ioctls_accepted(&accepted, || save_vm_state(&vm)).unwrap();
        assert_eq!(s.version, STATE_VERSION);
        assert!(s.omitted.is_empty(), "{:?}", s.omitted);
        assert_eq!(
            s.tod,
            TodClock {
                epoch_idx: 0,
                tod: 0
            }
        );
        let model = s.cpu_model.clone().expect("the CPU model is saved");
        assert_eq!(model.facilities.len(), 256);
        assert_eq!(model.features.as_ref().map(Vec::len), Some(16));
        assert_eq!(s.floating_irqs, Some(vec![]));
        // It restores into a VM whose model covers it; an epoch index and
        // pending interruptions go through TOD_EXT and the FLIC.
        let busy = S390VmState {
            tod: TodClock {
                epoch_idx: 1,
                tod: 0x1234,
            },
            floating_irqs: Some(vec![FloatingIrq {
                kind: 0xffff_2401,
                payload: vec![0; 64],
            }]),
            ..s.clone()
        };
        with_ioctls_accepted(&accepted, || restore_vm_state(&vm, &busy)).unwrap();
        // A model with facility 139, which this VM's (all zeros) lacks: refused
        // before anything is written.
        let mut newer = model;
        newer.facilities[2] = 1 << (63 - 11);
        let e = with_ioctls_accepted(&accepted, || {
            restore_vm_state(
                &vm,
                &S390VmState {
                    cpu_model: Some(newer),
                    ..s
                },
            )
        })
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "restore refused, nothing was written: the state holds the CPU model but this VM's does not cover it: facilities 139: the guest saw them, a VM on this host does not get them"
        );
    }

    #[test]
    fn the_vm_keeps_its_flic_for_the_snapshot() {
        let vm = null_vm();
        assert!(vm.flic().is_none());
        vm.set_flic(File::open("/dev/null").unwrap());
        assert!(vm.flic().is_some());
        // With a FLIC the interruptions have a place; the first write (the
        // TOD clock) reaches the kernel and names itself.
        let irqs = S390VmState {
            floating_irqs: Some(vec![FloatingIrq {
                kind: 0xffff_2401,
                payload: vec![0; 64],
            }]),
            ..S390VmState::default()
        };
        assert_eq!(
            msg(restore_vm_state(&vm, &irqs)),
            "KVM_SET_DEVICE_ATTR(KVM_S390_VM_TOD_LOW) failed"
        );
    }

    #[test]
    fn the_contract_maps_onto_the_functions() {
        let vm = null_vm();
        assert!(<S390x as SnapshotArch>::save_vm_state(&vm).is_err());
        assert!(<S390x as SnapshotArch>::restore_vm_state(&vm, &S390VmState::default()).is_err());
        let saved = S390x::state_profile(&S390VmState::default(), &[S390VcpuState::default()]);
        let mut host = saved.clone();
        host.header.capabilities.clear();
        assert_eq!(
            S390x::check_profile(&saved, &host).unwrap_err().to_string(),
            "KVM_CAP_SYNC_REGS (74): the state needs 1, this host has 0"
        );
    }
}
