//! `struct kvm_sregs` of `asm/kvm.h`: the PVR, then a union of the Book3S
//! (`s`: SDR1, SLB, BATs) and BookE (`e`) special registers.
//!
//! Every struct here is free of implicit padding (explicit `_pad*` fields
//! where C has holes), and the unions' fields are private: a union is only
//! ever built whole by `ZERO` and changed through its accessors, so each of
//! its bytes is always initialised and reading any view is sound.

use std::fmt;
use std::mem::{align_of, size_of};

/// One SLB entry of `kvm_sregs.u.s.ppc64.slb` (an anonymous struct in C).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct kvm_sregs_slb {
    pub slbe: u64,
    pub slbv: u64,
}

/// `kvm_sregs.u.s.ppc64`: the 64 SLB entries.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct kvm_sregs_ppc64 {
    pub slb: [kvm_sregs_slb; 64],
}

/// `kvm_sregs.u.s.ppc32`: segment registers and BATs of 32-bit Book3S.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct kvm_sregs_ppc32 {
    pub sr: [u32; 16],
    pub ibat: [u64; 8],
    pub dbat: [u64; 8],
}

/// `kvm_sregs.u.s`: the Book3S (server) special registers.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct kvm_sregs_s {
    pub sdr1: u64,
    pub ppc64: kvm_sregs_ppc64,
    pub ppc32: kvm_sregs_ppc32,
}

impl kvm_sregs_s {
    /// All zero.
    pub const ZERO: Self = kvm_sregs_s {
        sdr1: 0,
        ppc64: kvm_sregs_ppc64 {
            slb: [kvm_sregs_slb { slbe: 0, slbv: 0 }; 64],
        },
        ppc32: kvm_sregs_ppc32 {
            sr: [0; 16],
            ibat: [0; 8],
            dbat: [0; 8],
        },
    };
}

impl Default for kvm_sregs_s {
    fn default() -> Self {
        Self::ZERO
    }
}

/// `kvm_sregs.u.e.impl.fsl`: Freescale implementation registers.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct kvm_sregs_fsl {
    pub features: u32,
    pub svr: u32,
    pub mcar: u64,
    pub hid0: u32,
    pub pid1: u32,
    pub pid2: u32,
    /// Tail padding of the C struct (not a kernel field).
    pub _pad: u32,
}

/// `kvm_sregs.u.e.impl`: implementation-specific registers, 256 bytes.
#[repr(C)]
#[derive(Clone, Copy)]
pub union kvm_sregs_e_impl {
    pub(crate) fsl: kvm_sregs_fsl,
    pub(crate) pad: [u8; 256],
}

impl kvm_sregs_e_impl {
    /// All zero.
    pub const ZERO: Self = kvm_sregs_e_impl { pad: [0; 256] };

    /// The Freescale view.
    pub fn fsl(&self) -> &kvm_sregs_fsl {
        // SAFETY: the union is always fully initialised (see the module
        // docs) and `kvm_sregs_fsl` is integers only, valid for any bytes.
        unsafe { &self.fsl }
    }

    /// The Freescale view, writable.
    pub fn fsl_mut(&mut self) -> &mut kvm_sregs_fsl {
        // SAFETY: as in `fsl`; `kvm_sregs_fsl` has no padding, so writes
        // through it leave every byte initialised.
        unsafe { &mut self.fsl }
    }
}

impl fmt::Debug for kvm_sregs_e_impl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("kvm_sregs_e_impl")
            .field("fsl", self.fsl())
            .finish_non_exhaustive()
    }
}

/// `kvm_sregs.u.e`: the BookE special registers.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct kvm_sregs_e {
    pub impl_: kvm_sregs_e_impl,
    pub features: u32,
    pub impl_id: u32,
    pub update_special: u32,
    pub pir: u32,
    pub sprg8: u64,
    pub sprg9: u64,
    pub csrr0: u64,
    pub dsrr0: u64,
    pub mcsrr0: u64,
    pub csrr1: u32,
    pub dsrr1: u32,
    pub mcsrr1: u32,
    pub esr: u32,
    pub dear: u64,
    pub ivpr: u64,
    pub mcivpr: u64,
    pub mcsr: u64,
    pub tsr: u32,
    pub tcr: u32,
    pub decar: u32,
    pub dec: u32,
    pub tb: u64,
    pub dbsr: u32,
    pub dbcr: [u32; 3],
    pub iac: [u32; 4],
    pub dac: [u32; 2],
    pub dvc: [u32; 2],
    pub num_iac: u8,
    pub num_dac: u8,
    pub num_dvc: u8,
    pub pad: u8,
    pub epr: u32,
    pub vrsave: u32,
    pub epcr: u32,
    pub mas0: u32,
    pub mas1: u32,
    pub mas2: u64,
    pub mas7_3: u64,
    pub mas4: u32,
    pub mas6: u32,
    pub ivor_low: [u32; 16],
    pub ivor_high: [u32; 18],
    pub mmucfg: u32,
    pub eptcfg: u32,
    pub tlbcfg: [u32; 4],
    pub tlbps: [u32; 4],
    pub eplc: u32,
    pub epsc: u32,
}

impl kvm_sregs_e {
    /// All zero.
    pub const ZERO: Self = kvm_sregs_e {
        impl_: kvm_sregs_e_impl::ZERO,
        features: 0,
        impl_id: 0,
        update_special: 0,
        pir: 0,
        sprg8: 0,
        sprg9: 0,
        csrr0: 0,
        dsrr0: 0,
        mcsrr0: 0,
        csrr1: 0,
        dsrr1: 0,
        mcsrr1: 0,
        esr: 0,
        dear: 0,
        ivpr: 0,
        mcivpr: 0,
        mcsr: 0,
        tsr: 0,
        tcr: 0,
        decar: 0,
        dec: 0,
        tb: 0,
        dbsr: 0,
        dbcr: [0; 3],
        iac: [0; 4],
        dac: [0; 2],
        dvc: [0; 2],
        num_iac: 0,
        num_dac: 0,
        num_dvc: 0,
        pad: 0,
        epr: 0,
        vrsave: 0,
        epcr: 0,
        mas0: 0,
        mas1: 0,
        mas2: 0,
        mas7_3: 0,
        mas4: 0,
        mas6: 0,
        ivor_low: [0; 16],
        ivor_high: [0; 18],
        mmucfg: 0,
        eptcfg: 0,
        tlbcfg: [0; 4],
        tlbps: [0; 4],
        eplc: 0,
        epsc: 0,
    };
}

impl Default for kvm_sregs_e {
    fn default() -> Self {
        Self::ZERO
    }
}

/// `kvm_sregs.u`: Book3S or BookE registers, padded to at least 1020 bytes.
#[repr(C)]
#[derive(Clone, Copy)]
pub union kvm_sregs_u {
    pub(crate) s: kvm_sregs_s,
    pub(crate) e: kvm_sregs_e,
    pub(crate) pad: [u8; 1020],
}

impl kvm_sregs_u {
    /// All zero: built from the largest member, so every byte is set.
    pub const ZERO: Self = kvm_sregs_u {
        s: kvm_sregs_s::ZERO,
    };
}

const _: () = assert!(size_of::<kvm_sregs_s>() == size_of::<kvm_sregs_u>());
const _: () = assert!(size_of::<kvm_sregs_e>() == 664 && size_of::<kvm_sregs_u>() == 1224);

/// `struct kvm_sregs` (`KVM_GET_SREGS` / `KVM_SET_SREGS`).
///
/// Build it with `Default` (all zero) or take it from `KVM_GET_SREGS`; the
/// union is reached through [`kvm_sregs::book3s`] and [`kvm_sregs::booke`].
///
/// ```
/// let mut s = kvmkit_arch_powerpc::uapi::kvm_sregs::default();
/// s.pvr = 0x004e_1202; // POWER9 DD2.2
/// s.book3s_mut().ppc64.slb[0].slbe = 1 << 27;
/// assert_eq!(s.book3s().ppc64.slb[0].slbe, 1 << 27);
/// assert_eq!(s.booke().impl_.fsl().features, 0);
/// ```
#[repr(C)]
#[derive(Clone, Copy)]
pub struct kvm_sregs {
    pub pvr: u32,
    pub(crate) _pad: [u8; 4],
    pub(crate) u: kvm_sregs_u,
}
const _: () = assert!(size_of::<kvm_sregs>() == 1232 && align_of::<kvm_sregs>() == 8);

impl kvm_sregs {
    /// All zero.
    pub const ZERO: Self = kvm_sregs {
        pvr: 0,
        _pad: [0; 4],
        u: kvm_sregs_u::ZERO,
    };

    /// The Book3S (server) view of the union: `u.s`.
    pub fn book3s(&self) -> &kvm_sregs_s {
        // SAFETY: `u` is always fully initialised (module docs) and
        // `kvm_sregs_s` is integers only, valid for any bytes.
        unsafe { &self.u.s }
    }

    /// The Book3S view, writable.
    pub fn book3s_mut(&mut self) -> &mut kvm_sregs_s {
        // SAFETY: as in `book3s`; `kvm_sregs_s` has no padding, so writes
        // through it leave every byte initialised.
        unsafe { &mut self.u.s }
    }

    /// The BookE view of the union: `u.e`.
    pub fn booke(&self) -> &kvm_sregs_e {
        // SAFETY: as in `book3s`; `kvm_sregs_e` is integers and a fully
        // initialised union of integers.
        unsafe { &self.u.e }
    }

    /// The BookE view, writable.
    pub fn booke_mut(&mut self) -> &mut kvm_sregs_e {
        // SAFETY: as in `booke`; `kvm_sregs_e` has no padding.
        unsafe { &mut self.u.e }
    }
}

impl Default for kvm_sregs {
    fn default() -> Self {
        Self::ZERO
    }
}

impl fmt::Debug for kvm_sregs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("kvm_sregs")
            .field("pvr", &format_args!("{:#x}", self.pvr))
            .field("u.s.sdr1", &format_args!("{:#x}", self.book3s().sdr1))
            .field("u.e.features", &self.booke().features)
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for kvm_sregs_u {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("kvm_sregs_u { .. }")
    }
}
