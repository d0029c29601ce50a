//! Saving and restoring an x86_64 vCPU (`Arch::save_vcpu_state`,
//! `Arch::restore_vcpu_state`).
//!
//! The order follows what KVM needs (learned from the kernel's x86.c and
//! from what QEMU, Firecracker and Cloud Hypervisor do):
//!
//! - Saving reads the MP state first (`KVM_GET_MP_STATE` processes a
//!   pending INIT or SIPI, which changes registers) and the vCPU events
//!   last (other reads may still queue an event).
//! - Restoring writes the CPUID first (KVM checks XCR0, XSAVE and some MSRs
//!   against it), then the TSC frequency, sregs (EFER and the APIC base
//!   before MSRs and the LAPIC), regs (`KVM_SET_REGS` drops a pending
//!   exception, which the events bring back), XCRs, XSAVE (or the FPU),
//!   the MSRs with the TSC first, the LAPIC, then `MSR_IA32_TSC_DEADLINE`
//!   (KVM ignores it unless the LAPIC timer is in TSC-deadline mode, and it
//!   is relative to the TSC), the debug registers, the events, and the MP
//!   state last (`KVM_SET_SREGS` may have changed it).

use crate::msrs::restore_order;
use crate::profile::{check_version, host_profile, LEGACY_XSAVE_BYTES};
use crate::state::{Omission, Omitted, StatePiece};
use crate::{Error, ProfileMismatch, Result, X86AbiProfile, X86Vcpu, X86VcpuState, STATE_VERSION};
use kvm_bindings::{
    kvm_cpuid_entry2, kvm_msr_entry, kvm_xsave, kvm_xsave2, CpuId, Msrs, Xsave,
    KVM_MAX_CPUID_ENTRIES, KVM_MAX_MSR_ENTRIES,
};
use kvm_ioctls::VcpuFd;
use kvmkit_core::Capability;

fn fam_error(what: &'static str) -> impl FnOnce(vmm_sys_util::fam::Error) -> Error {
    move |e| Error::FamList {
        what,
        detail: format!("{e:?}"),
    }
}

fn msr_entry(index: u32, data: u64) -> kvm_msr_entry {
    kvm_msr_entry {
        index,
        data,
        ..Default::default()
    }
}

/// What [`read_msrs`] read.
pub(crate) struct MsrRead {
    /// (index, value), in the order asked.
    pub(crate) values: Vec<(u32, u64)>,
    /// The indices the vCPU could not read.
    pub(crate) unreadable: Vec<u32>,
}

/// Reads `indices` with `KVM_GET_MSRS`, skipping each MSR the vCPU cannot
/// read (the ioctl stops at the first it cannot): returns the values read,
/// in order, and the indices skipped.
pub(crate) fn read_msrs(fd: &VcpuFd, indices: &[u32]) -> Result<MsrRead> {
    let mut read = Vec::with_capacity(indices.len());
    let mut skipped = Vec::new();
    let mut rest = indices;
    while !rest.is_empty() {
        let chunk = &rest[..rest.len().min(KVM_MAX_MSR_ENTRIES)];
        let entries: Vec<kvm_msr_entry> = chunk.iter().map(|&i| msr_entry(i, 0)).collect();
        let mut msrs = Msrs::from_entries(&entries).map_err(fam_error("MSR"))?;
        let n = fd
            .get_msrs(&mut msrs)
            .map_err(Error::ioctl("KVM_GET_MSRS"))?;
        read.extend(msrs.as_slice()[..n].iter().map(|e| (e.index, e.data)));
        if n < chunk.len() {
            skipped.push(chunk[n]);
            rest = &rest[n + 1..];
        } else {
            rest = &rest[n..];
        }
    }
    Ok(MsrRead {
        values: read,
        unreadable: skipped,
    })
}

/// Writes `entries` with `KVM_SET_MSRS`, naming the MSR it stops at.
pub(crate) fn write_msrs(fd: &VcpuFd, entries: &[kvm_msr_entry]) -> Result<()> {
    for chunk in entries.chunks(KVM_MAX_MSR_ENTRIES) {
        let msrs = Msrs::from_entries(chunk).map_err(fam_error("MSR"))?;
        let done = fd.set_msrs(&msrs).map_err(Error::ioctl("KVM_SET_MSRS"))?;
        if let Some(e) = chunk.get(done) {
            return Err(Error::SetMsr {
                index: e.index,
                value: e.data,
                done,
                wanted: chunk.len(),
            });
        }
    }
    Ok(())
}

/// Writes saved MSRs back. An MSR the vCPU refuses is skipped when it
/// already holds the saved value: KVM reads some MSRs it will not write in
/// every configuration (`MSR_KVM_ASYNC_PF_INT` needs an in-kernel LAPIC,
/// even to write the 0 it reads back without one).
fn write_saved_msrs(fd: &VcpuFd, entries: &[kvm_msr_entry]) -> Result<()> {
    let mut rest = entries;
    while !rest.is_empty() {
        let chunk = &rest[..rest.len().min(KVM_MAX_MSR_ENTRIES)];
        let msrs = Msrs::from_entries(chunk).map_err(fam_error("MSR"))?;
        let done = fd.set_msrs(&msrs).map_err(Error::ioctl("KVM_SET_MSRS"))?;
        let Some(refused) = chunk.get(done) else {
            rest = &rest[done..];
            continue;
        };
        let now = read_msrs(fd, &[refused.index])?.values;
        if now.first().map(|&(_, v)| v) != Some(refused.data) {
            return Err(Error::SetMsr {
                index: refused.index,
                value: refused.data,
                done,
                wanted: chunk.len(),
            });
        }
        rest = &rest[done + 1..];
    }
    Ok(())
}

/// The CPUID the vCPU was given: `KVM_GET_CPUID2`, or, on a kernel without
/// it, the table `init_vcpu` set.
pub(crate) fn read_cpuid(
    vcpu: &X86Vcpu,
) -> std::result::Result<Vec<kvm_cpuid_entry2>, kvm_ioctls::Error> {
    match vcpu.vcpu_fd().get_cpuid2(KVM_MAX_CPUID_ENTRIES) {
        Ok(c) => Ok(c.as_slice().to_vec()),
        Err(e) => vcpu.cpuid_set.get().cloned().ok_or(e),
    }
}

/// `KVM_CAP_XSAVE2` of the vCPU's VM, or 4096 without it.
fn xsave_bytes(vcpu: &X86Vcpu) -> usize {
    let n = vcpu.vm.check_extension(Capability::XSAVE2);
    usize::try_from(n).unwrap_or(0).max(LEGACY_XSAVE_BYTES)
}

/// The number of 32-bit words past `struct kvm_xsave` in an area of `bytes`.
fn fam_words(bytes: usize) -> usize {
    bytes.saturating_sub(LEGACY_XSAVE_BYTES).div_ceil(4)
}

/// Reads the XSAVE area: `KVM_GET_XSAVE2` when the VM's area is larger than
/// `struct kvm_xsave`, else `KVM_GET_XSAVE`.
fn read_xsave(vcpu: &X86Vcpu) -> Result<Vec<u32>> {
    let bytes = xsave_bytes(vcpu);
    if bytes <= LEGACY_XSAVE_BYTES {
        // KVM_GET_XSAVE fails with EINVAL rather than overrun the struct
        // when the vCPU's area is larger.
        let x = vcpu
            .vcpu_fd()
            .get_xsave()
            .map_err(Error::ioctl("KVM_GET_XSAVE"))?;
        return Ok(x.region.to_vec());
    }
    let mut x = Xsave::new(fam_words(bytes)).map_err(fam_error("XSAVE"))?;
    // SAFETY: `x` holds 4096 + 4 * fam_words(bytes) >= `bytes` bytes, and
    // KVM_GET_XSAVE2 writes the vCPU's XSAVE size, which
    // KVM_CHECK_EXTENSION(KVM_CAP_XSAVE2) on its VM has just reported as
    // `bytes`. That size only grows when the process asks for more XSTATE
    // permissions (arch_prctl), which this crate never does.
    unsafe { vcpu.vcpu_fd().get_xsave2(&mut x) }.map_err(Error::ioctl("KVM_GET_XSAVE2"))?;
    let mut region = x.as_fam_struct_ref().xsave.region.to_vec();
    region.extend_from_slice(x.as_slice());
    region.truncate(bytes.div_ceil(4));
    Ok(region)
}

/// Writes the XSAVE area with a buffer of at least the vCPU's XSAVE size,
/// the saved region zero-padded.
fn write_xsave(vcpu: &X86Vcpu, region: &[u32]) -> Result<()> {
    let bytes = xsave_bytes(vcpu);
    let saved = region.len() * 4;
    if saved > bytes {
        return Err(Error::RestoreRefused(ProfileMismatch::XsaveArea {
            saved: u32::try_from(saved).unwrap_or(u32::MAX),
            host: u32::try_from(bytes).unwrap_or(u32::MAX),
        }));
    }
    if bytes <= LEGACY_XSAVE_BYTES {
        let mut x = kvm_xsave::default();
        x.region[..region.len()].copy_from_slice(region);
        // SAFETY: KVM_SET_XSAVE reads the vCPU's XSAVE size, which
        // KVM_CAP_XSAVE2 reports as at most 4096 (or is absent, and then it
        // is 4096): the size of `x`.
        return unsafe { vcpu.vcpu_fd().set_xsave(&x) }.map_err(Error::ioctl("KVM_SET_XSAVE"));
    }
    let (head, tail) = region.split_at(region.len().min(1024));
    let mut fixed = kvm_xsave::default();
    fixed.region[..head.len()].copy_from_slice(head);
    let mut x = Xsave::from_header(kvm_xsave2 {
        len: 0,
        xsave: fixed,
    })
    .map_err(fam_error("XSAVE"))?;
    for i in 0..fam_words(bytes) {
        x.push(tail.get(i).copied().unwrap_or(0))
            .map_err(fam_error("XSAVE"))?;
    }
    // SAFETY: `x` holds 4096 + 4 * fam_words(bytes) >= `bytes` bytes, the
    // vCPU's XSAVE size that KVM_SET_XSAVE reads (see `read_xsave`).
    unsafe { vcpu.vcpu_fd().set_xsave2(&x) }.map_err(Error::ioctl("KVM_SET_XSAVE"))
}

/// Finishes the last exit's I/O so that the state read or written is the
/// guest's own (see `X86Vcpu::complete_pending_io`).
fn finish_pending_io(vcpu: &X86Vcpu) -> Result<()> {
    if vcpu
        .run_area
        .complete_pending_io(vcpu.vcpu_fd())
        .map_err(Error::ioctl("KVM_RUN"))?
    {
        Ok(())
    } else {
        Err(Error::PendingExit {
            reason: vcpu.run_area.exit_reason(),
        })
    }
}

fn omit(list: &mut Vec<Omitted>, piece: StatePiece, reason: Omission) {
    list.push(Omitted { piece, reason });
}

fn missing(cap: Capability) -> Omission {
    Omission::MissingCapability {
        capability: cap.name().to_string(),
    }
}

/// Reads one optional piece when `cap` is present, recording why not.
fn optional<T>(
    vcpu: &X86Vcpu,
    omitted: &mut Vec<Omitted>,
    piece: StatePiece,
    cap: Capability,
    ioctl: &'static str,
    read: impl FnOnce(&VcpuFd) -> std::result::Result<T, kvm_ioctls::Error>,
) -> Result<Option<T>> {
    if !vcpu.host.has(cap) {
        omit(omitted, piece, missing(cap));
        return Ok(None);
    }
    read(vcpu.vcpu_fd()).map(Some).map_err(Error::ioctl(ioctl))
}

/// `Arch::save_vcpu_state` for x86_64.
pub(crate) fn save(vcpu: &X86Vcpu) -> Result<X86VcpuState> {
    finish_pending_io(vcpu)?;
    let fd = vcpu.vcpu_fd();
    let mut omitted = Vec::new();
    let o = &mut omitted;
    let mp_state = optional(
        vcpu,
        o,
        StatePiece::MpState,
        Capability::MP_STATE,
        "KVM_GET_MP_STATE",
        VcpuFd::get_mp_state,
    )?;
    let regs = fd.get_regs().map_err(Error::ioctl("KVM_GET_REGS"))?;
    let sregs = fd.get_sregs().map_err(Error::ioctl("KVM_GET_SREGS"))?;
    let fpu = fd.get_fpu().map_err(Error::ioctl("KVM_GET_FPU"))?;
    let xsave = if vcpu.host.has(Capability::XSAVE) {
        Some(read_xsave(vcpu)?)
    } else {
        omit(o, StatePiece::Xsave, missing(Capability::XSAVE));
        None
    };
    let xcrs = optional(
        vcpu,
        o,
        StatePiece::Xcrs,
        Capability::XCRS,
        "KVM_GET_XCRS",
        VcpuFd::get_xcrs,
    )?;
    let lapic = if vcpu.has_lapic {
        Some(fd.get_lapic().map_err(Error::ioctl("KVM_GET_LAPIC"))?)
    } else {
        omit(
            o,
            StatePiece::Lapic,
            Omission::NotInKernel {
                detail: "the VM has no in-kernel LAPIC (IrqchipMode::None)".into(),
            },
        );
        None
    };
    let MsrRead {
        values: msrs,
        unreadable,
    } = read_msrs(fd, &vcpu.host.msr_candidates)?;
    for index in unreadable {
        omit(o, StatePiece::Msr(index), Omission::NotReadable);
    }
    let debugregs = optional(
        vcpu,
        o,
        StatePiece::DebugRegs,
        Capability::DEBUGREGS,
        "KVM_GET_DEBUGREGS",
        VcpuFd::get_debug_regs,
    )?;
    let tsc_khz = if vcpu.host.has(Capability::GET_TSC_KHZ) {
        match fd.get_tsc_khz() {
            Ok(k) => Some(k),
            // KVM refuses when the host TSC frequency is unknown.
            Err(e) => {
                omit(
                    o,
                    StatePiece::TscKhz,
                    Omission::Refused {
                        ioctl: "KVM_GET_TSC_KHZ".into(),
                        errno: e.errno(),
                    },
                );
                None
            }
        }
    } else {
        omit(o, StatePiece::TscKhz, missing(Capability::GET_TSC_KHZ));
        None
    };
    let cpuid = match read_cpuid(vcpu) {
        Ok(c) => c,
        Err(e) => {
            omit(
                o,
                StatePiece::Cpuid,
                Omission::Refused {
                    ioctl: "KVM_GET_CPUID2".into(),
                    errno: e.errno(),
                },
            );
            Vec::new()
        }
    };
    let vcpu_events = optional(
        vcpu,
        o,
        StatePiece::VcpuEvents,
        Capability::VCPU_EVENTS,
        "KVM_GET_VCPU_EVENTS",
        VcpuFd::get_vcpu_events,
    )?;
    Ok(X86VcpuState {
        version: STATE_VERSION,
        regs,
        sregs,
        fpu,
        xsave,
        xcrs,
        msrs,
        lapic,
        mp_state,
        vcpu_events,
        debugregs,
        cpuid,
        tsc_khz,
        omitted,
    })
}

/// Everything that can refuse the restore, checked before anything is
/// written.
fn check_fits(vcpu: &X86Vcpu, s: &X86VcpuState) -> Result<()> {
    check_version("vCPU", s.version)?;
    if let Some(x) = &s.xsave {
        if x.len() * 4 < LEGACY_XSAVE_BYTES {
            return Err(Error::XsaveRegion { bytes: x.len() * 4 });
        }
    }
    if s.lapic.is_some() && !vcpu.has_lapic {
        return Err(Error::StateDoesNotFit {
            piece: StatePiece::Lapic,
            detail: "this vCPU's VM has no in-kernel LAPIC (IrqchipMode::None)".into(),
        });
    }
    // The CPUID this vCPU is given (its VcpuConfig's): what a guest here
    // sees. KVM_GET_SUPPORTED_CPUID is not that on every host: on PVM the
    // guest sees host features the supported list hides, and
    // KVM_GET_CPUID2 reports them.
    let cpuid = match read_cpuid(vcpu) {
        Ok(c) if !c.is_empty() => c,
        _ => vcpu.host.supported_cpuid.clone(),
    };
    let host = host_profile(vcpu, &cpuid)?;
    X86AbiProfile::of_state(None, std::slice::from_ref(s))
        .check(&host)
        .map_err(Error::RestoreRefused)
}

/// `Arch::restore_vcpu_state` for x86_64 (the order is explained in the
/// module docs).
pub(crate) fn restore(vcpu: &X86Vcpu, s: &X86VcpuState) -> Result<()> {
    check_fits(vcpu, s)?;
    // A completion left over from this vCPU's last exit would apply to the
    // restored registers on the next KVM_RUN.
    finish_pending_io(vcpu)?;
    let fd = vcpu.vcpu_fd();
    if !s.cpuid.is_empty() {
        let cpuid = CpuId::from_entries(&s.cpuid).map_err(fam_error("CPUID"))?;
        fd.set_cpuid2(&cpuid)
            .map_err(Error::ioctl("KVM_SET_CPUID2"))?;
    }
    if let Some(saved) = s.tsc_khz {
        let now = fd.get_tsc_khz().map_err(Error::ioctl("KVM_GET_TSC_KHZ"))?;
        if now != saved {
            // Within 250 ppm without KVM_CAP_TSC_CONTROL (checked above):
            // calibration noise, left as is.
            if vcpu.host.has(Capability::TSC_CONTROL) {
                fd.set_tsc_khz(saved)
                    .map_err(Error::ioctl("KVM_SET_TSC_KHZ"))?;
            }
        }
    }
    fd.set_sregs(&s.sregs)
        .map_err(Error::ioctl("KVM_SET_SREGS"))?;
    fd.set_regs(&s.regs).map_err(Error::ioctl("KVM_SET_REGS"))?;
    if let Some(x) = &s.xcrs {
        fd.set_xcrs(x).map_err(Error::ioctl("KVM_SET_XCRS"))?;
    }
    match &s.xsave {
        Some(region) => write_xsave(vcpu, region)?,
        None => fd.set_fpu(&s.fpu).map_err(Error::ioctl("KVM_SET_FPU"))?,
    }
    let (early, late) = restore_order(&s.msrs);
    write_saved_msrs(fd, &early)?;
    if let Some(l) = &s.lapic {
        fd.set_lapic(l).map_err(Error::ioctl("KVM_SET_LAPIC"))?;
    }
    write_saved_msrs(fd, &late)?;
    if let Some(d) = &s.debugregs {
        fd.set_debug_regs(d)
            .map_err(Error::ioctl("KVM_SET_DEBUGREGS"))?;
    }
    if let Some(e) = &s.vcpu_events {
        fd.set_vcpu_events(e)
            .map_err(Error::ioctl("KVM_SET_VCPU_EVENTS"))?;
    }
    if let Some(m) = s.mp_state {
        fd.set_mp_state(m)
            .map_err(Error::ioctl("KVM_SET_MP_STATE"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use vmm_sys_util::fam::FamStruct;

    #[test]
    fn xsave_sizes() {
        assert_eq!(fam_words(4096), 0);
        assert_eq!(fam_words(100), 0);
        assert_eq!(fam_words(4097), 1);
        assert_eq!(fam_words(11008), (11008 - 4096) / 4);
        // The FAM header counts 32-bit words, as kvm-bindings documents.
        assert_eq!(
            std::mem::size_of::<<kvm_bindings::kvm_xsave2 as FamStruct>::Entry>(),
            4
        );
    }

    #[test]
    fn kvm_msrs_the_vcpu_cannot_read_or_write_are_named() {
        use kvmkit_core::VcpuId;
        let Some(kvm) = kvmkit_test_support::kvm_or_skip!(crate::X86_64) else {
            return;
        };
        let vm = kvm.create_vm(&Default::default()).unwrap();
        let vcpu = vm.create_vcpu(VcpuId(0), &Default::default()).unwrap();
        let fd = vcpu.arch_fd().vcpu_fd();
        // KVM_GET_MSRS stops at the first MSR it cannot read: the rest are
        // read by the next call.
        let r = read_msrs(fd, &[0x174, 0xdead_beef, 0x10, 0xdead_0000]).unwrap();
        let read: Vec<u32> = r.values.iter().map(|&(i, _)| i).collect();
        assert_eq!(read, [0x174, 0x10]);
        assert_eq!(r.unreadable, [0xdead_beef, 0xdead_0000]);
        // MSR_KVM_ASYNC_PF_INT reads 0 but cannot be written without an
        // in-kernel LAPIC: writing the value it holds is skipped, another
        // value is refused by name.
        const ASYNC_PF_INT: u32 = 0x4b56_4d06;
        let now = read_msrs(fd, &[ASYNC_PF_INT]).unwrap().values;
        assert_eq!(now, [(ASYNC_PF_INT, 0)]);
        write_saved_msrs(fd, &[msr_entry(ASYNC_PF_INT, 0), msr_entry(0x174, 8)]).unwrap();
        assert_eq!(read_msrs(fd, &[0x174]).unwrap().values, [(0x174, 8)]);
        let e = write_saved_msrs(fd, &[msr_entry(0x174, 9), msr_entry(ASYNC_PF_INT, 0x32)])
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "KVM_SET_MSRS refused MSR 0x4b564d06 = 0x32 (wrote 1 of 2)"
        );
    }
}
