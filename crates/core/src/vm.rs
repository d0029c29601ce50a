//! The generic `/dev/kvm` and VM handles.

use crate::{Arch, Capability, Error, Result, UserMemoryRegion, Vcpu, VcpuId};
use std::collections::BTreeSet;
use std::fmt;
use std::sync::{Arc, Mutex};

/// An open `/dev/kvm`, generic over the architecture.
///
/// ```no_run
/// # fn demo<A: kvmkit_core::Arch>() -> kvmkit_core::Result<()> {
/// use kvmkit_core::{Capability, Kvm};
/// let kvm = Kvm::<A>::new()?;
/// kvm.require(Capability::USER_MEMORY)?;
/// let vm = kvm.create_vm(&Default::default())?;
/// # Ok(()) }
/// ```
pub struct Kvm<A: Arch> {
    sys: Arc<A::System>,
}

impl<A: Arch> Clone for Kvm<A> {
    fn clone(&self) -> Self {
        Kvm {
            sys: self.sys.clone(),
        }
    }
}

impl<A: Arch> fmt::Debug for Kvm<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Kvm")
            .field("arch", &A::NAME)
            .field("sys", &self.sys)
            .finish()
    }
}

impl<A: Arch> Kvm<A> {
    /// Opens `/dev/kvm` and checks the API version.
    pub fn new() -> Result<Self> {
        let sys = A::open_system().map_err(Error::arch)?;
        Ok(Kvm { sys: Arc::new(sys) })
    }

    /// The arch backend's system handle, for arch-only calls.
    pub fn arch_system(&self) -> &A::System {
        &self.sys
    }

    /// Wraps `KVM_CHECK_EXTENSION`; 0 means absent, other values are cap-specific.
    pub fn check_extension(&self, cap: Capability) -> i32 {
        A::check_extension(&self.sys, cap)
    }

    /// True when the kernel offers `cap`.
    pub fn has(&self, cap: Capability) -> bool {
        self.check_extension(cap) > 0
    }

    /// Fails with [`Error::MissingCapability`] naming `cap` when it is absent;
    /// otherwise returns its `KVM_CHECK_EXTENSION` value.
    pub fn require(&self, cap: Capability) -> Result<i32> {
        require(cap, self.check_extension(cap))
    }

    /// The exclusive upper bound of vCPU ids, as the API document says to find it:
    /// `KVM_CAP_MAX_VCPU_ID`, else `KVM_CAP_MAX_VCPUS`, else `KVM_CAP_NR_VCPUS`, else 4.
    pub fn max_vcpu_id(&self) -> u32 {
        bound([
            self.check_extension(Capability::MAX_VCPU_ID),
            self.check_extension(Capability::MAX_VCPUS),
            self.check_extension(Capability::NR_VCPUS),
        ])
    }

    /// The maximum number of vCPUs in one VM (`KVM_CAP_MAX_VCPUS`, else
    /// `KVM_CAP_NR_VCPUS`, else 4).
    pub fn max_vcpus(&self) -> u32 {
        bound([
            self.check_extension(Capability::MAX_VCPUS),
            self.check_extension(Capability::NR_VCPUS),
            0,
        ])
    }

    /// Wraps `KVM_CREATE_VM` and the arch's VM-wide set-up.
    pub fn create_vm(&self, config: &A::VmConfig) -> Result<Vm<A>> {
        let fd = A::create_vm(&self.sys, config).map_err(Error::arch)?;
        A::init_vm(&fd, config).map_err(Error::arch)?;
        Ok(Vm {
            kvm: self.clone(),
            fd,
            vcpus: Mutex::new(BTreeSet::new()),
        })
    }
}

fn require(cap: Capability, value: i32) -> Result<i32> {
    if value > 0 {
        Ok(value)
    } else {
        Err(Error::MissingCapability {
            name: cap.name(),
            number: cap.number(),
        })
    }
}

fn bound(candidates: [i32; 3]) -> u32 {
    candidates
        .into_iter()
        .find(|&v| v > 0)
        .and_then(|v| u32::try_from(v).ok())
        .unwrap_or(4)
}

/// A VM, generic over the architecture.
pub struct Vm<A: Arch> {
    kvm: Kvm<A>,
    fd: A::VmFd,
    vcpus: Mutex<BTreeSet<u32>>,
}

impl<A: Arch> fmt::Debug for Vm<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Vm")
            .field("arch", &A::NAME)
            .field("fd", &self.fd)
            .finish()
    }
}

impl<A: Arch> Vm<A> {
    /// The `/dev/kvm` handle this VM came from.
    pub fn kvm(&self) -> &Kvm<A> {
        &self.kvm
    }

    /// The arch backend's VM fd, for arch-only calls (e.g. x86 irqchip).
    pub fn arch_fd(&self) -> &A::VmFd {
        &self.fd
    }

    /// Wraps `KVM_CHECK_EXTENSION` on the VM fd where the kernel supports
    /// that (`KVM_CAP_CHECK_EXTENSION_VM`), else on `/dev/kvm`.
    pub fn check_extension(&self, cap: Capability) -> i32 {
        if self.kvm.has(Capability::CHECK_EXTENSION_VM) {
            A::vm_check_extension(&self.fd, cap)
        } else {
            self.kvm.check_extension(cap)
        }
    }

    /// True when this VM offers `cap`.
    pub fn has(&self, cap: Capability) -> bool {
        self.check_extension(cap) > 0
    }

    /// Fails with [`Error::MissingCapability`] when this VM lacks `cap`.
    pub fn require(&self, cap: Capability) -> Result<i32> {
        require(cap, self.check_extension(cap))
    }

    /// Wraps `KVM_SET_USER_MEMORY_REGION`.
    ///
    /// # Safety
    ///
    /// The host range `region.userspace_addr .. + memory_size` must stay mapped
    /// for as long as the slot exists: the guest reads and writes it.
    pub unsafe fn set_user_memory_region(&self, region: &UserMemoryRegion) -> Result<()> {
        // SAFETY: the caller upholds the mapping's lifetime (see above).
        unsafe { A::set_user_memory_region(&self.fd, region) }.map_err(Error::arch)
    }

    /// Wraps `KVM_CREATE_VCPU` and initialises the vCPU for this architecture.
    ///
    /// Fails with a clear error when `id` is at or beyond the kernel's limit or
    /// was already created.
    pub fn create_vcpu(&self, id: VcpuId, config: &A::VcpuConfig) -> Result<Vcpu<A>> {
        let max = self.kvm.max_vcpu_id();
        if id.0 >= max {
            return Err(Error::VcpuIdOutOfRange { id: id.0, max });
        }
        {
            let mut ids = self.vcpus.lock().unwrap_or_else(|e| e.into_inner());
            if !ids.insert(id.0) {
                return Err(Error::VcpuExists { id: id.0 });
            }
        }
        let created = A::create_vcpu(&self.kvm.sys, &self.fd, id)
            .map_err(Error::arch)
            .and_then(|fd| {
                A::init_vcpu(&self.kvm.sys, &self.fd, &fd, id, config).map_err(Error::arch)?;
                Vcpu::new(id, fd)
            });
        if created.is_err() {
            let mut ids = self.vcpus.lock().unwrap_or_else(|e| e.into_inner());
            ids.remove(&id.0);
        }
        created
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn require_and_bound() {
        assert_eq!(require(Capability::IRQFD, 1).unwrap(), 1);
        let e = require(Capability::IRQFD, 0).unwrap_err();
        assert!(matches!(e, Error::MissingCapability { number: 32, .. }));
        assert_eq!(bound([0, 0, 0]), 4);
        assert_eq!(bound([0, 288, 16]), 288);
        assert_eq!(bound([1024, 288, 16]), 1024);
        assert_eq!(bound([-1, 0, 8]), 8);
    }
}
