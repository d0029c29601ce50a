//! The arch-neutral part of this crate's kernel calls, issued for real on
//! this host's `/dev/kvm` (x86_64 here).
//!
//! `KVM_GET_API_VERSION`, `KVM_CHECK_EXTENSION`, `KVM_GET_VCPU_MMAP_SIZE`,
//! `KVM_CREATE_VM`, `KVM_SET_USER_MEMORY_REGION`, `KVM_CREATE_VCPU` and the
//! `kvm_run` mapping have the same numbers and argument layouts on x86_64 and
//! s390x, so they exercise this crate's wrappers (fd ownership, mmap and
//! munmap, error mapping) on any KVM host. The s390x-only ioctls reach a
//! kernel that does not know them and must fail, naming the ioctl. No vCPU
//! is run: an x86 kvm_run is not an s390x one. This is not an s390x test.

use kvmkit_arch_s390x::{caps, Error, Flic, S390x, VcpuConfig, VcpuReset, VmConfig};
use kvmkit_core::{Capability, MemoryFlags, SlotId, UserMemoryRegion, VcpuId};
use kvmkit_test_support::kvm_or_skip;
use vm_memory::{GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};

#[test]
fn kvm_arch_neutral_ioctls_through_this_crate() {
    let Some(kvm) = kvm_or_skip!(S390x) else {
        return;
    };
    assert!(kvm.has(Capability::USER_MEMORY));
    // s390x-only capabilities are absent on another architecture's KVM.
    assert!(!kvm.has(caps::S390_USER_SIGP));
    assert!(!kvm.has(Capability::S390_IRQCHIP));

    // The default VmConfig asks for KVM_CAP_S390_IRQCHIP: a clear error here.
    let e = kvm.create_vm(&VmConfig::default()).unwrap_err();
    assert!(e.to_string().contains("KVM_CAP_S390_IRQCHIP"), "{e}");

    let plain = VmConfig {
        irqchip: false,
        user_sigp: false,
        user_stsi: false,
        ucontrol: false,
    };
    let vm = kvm.create_vm(&plain).expect("KVM_CREATE_VM");
    let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x10000)]).unwrap();
    let region = mem.iter().next().unwrap();
    // SAFETY: `mem` outlives the VM (both end with this test).
    unsafe {
        vm.set_user_memory_region(&UserMemoryRegion {
            slot: SlotId(0),
            flags: MemoryFlags::NONE,
            guest_phys_addr: 0,
            memory_size: region.len(),
            userspace_addr: region.as_ptr() as u64,
        })
    }
    .expect("KVM_SET_USER_MEMORY_REGION");

    // KVM_CREATE_VCPU and the kvm_run mapping work; the s390x reset does not
    // exist on this kernel and fails naming itself.
    let e = vm
        .create_vcpu(VcpuId(0), &VcpuConfig::default())
        .unwrap_err();
    assert_eq!(e.to_string(), "KVM_S390_INITIAL_RESET failed");
    let vcpu = vm
        .create_vcpu(
            VcpuId(1),
            &VcpuConfig {
                reset: VcpuReset::None,
            },
        )
        .expect("KVM_CREATE_VCPU and mmap");
    assert!(matches!(
        vcpu.arch_fd().reset(VcpuReset::Initial),
        Err(Error::Ioctl {
            ioctl: "KVM_S390_INITIAL_RESET",
            ..
        })
    ));
    // The FLIC is an s390x device: this kernel refuses to create it.
    assert!(matches!(
        Flic::new(vm.arch_fd()),
        Err(Error::Ioctl {
            ioctl: "KVM_CREATE_DEVICE(KVM_DEV_TYPE_FLIC)",
            ..
        })
    ));
    drop(vcpu); // munmap of the kvm_run area
}
