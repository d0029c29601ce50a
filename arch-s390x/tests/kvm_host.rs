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
//!
//! The dirty-log ioctls (`KVM_ENABLE_CAP`, `KVM_GET_DIRTY_LOG`,
//! `KVM_CLEAR_DIRTY_LOG`, `KVM_RESET_DIRTY_RINGS`) are generic too, so their
//! wrappers run here for real, on a kernel that (unlike s390x's) has manual
//! protect and a dirty ring.

use kvmkit_arch_s390x::{caps, Error, Flic, S390x, VcpuConfig, VcpuReset, VmConfig};
use kvmkit_core::{
    Capability, DirtyBitmapError, MemoryFlags, SlotId, UserMemoryRegion, VcpuId,
    MANUAL_PROTECT_ENABLE, MANUAL_PROTECT_INITIALLY_SET,
};
use kvmkit_test_support::kvm_or_skip;
use std::os::fd::AsRawFd;
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

fn plain() -> VmConfig {
    VmConfig {
        irqchip: false,
        user_sigp: false,
        user_stsi: false,
        ucontrol: false,
    }
}

/// The arch error inside a `kvmkit_core::Error`.
fn arch_error(e: &kvmkit_core::Error) -> &Error {
    match e {
        kvmkit_core::Error::Arch(b) => b.downcast_ref::<Error>().expect("an s390x error"),
        other => panic!("not an arch error: {other}"),
    }
}

#[test]
fn kvm_dirty_log_ioctls_through_this_crate() {
    let Some(kvm) = kvm_or_skip!(S390x) else {
        return;
    };
    let vm = kvm.create_vm(&plain()).expect("KVM_CREATE_VM");
    let manual = MANUAL_PROTECT_ENABLE | MANUAL_PROTECT_INITIALLY_SET;
    assert_eq!(
        vm.check_extension(Capability::MANUAL_DIRTY_LOG_PROTECT2),
        i32::try_from(manual).unwrap(),
        "this host's KVM has manual protect with initially-set"
    );
    vm.enable_cap(Capability::MANUAL_DIRTY_LOG_PROTECT2, [manual, 0, 0, 0])
        .expect("KVM_ENABLE_CAP(KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2)");

    // 100 pages with logging on: initially-set marks them all dirty.
    let len = 100 * 4096;
    let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), len)]).unwrap();
    let region = mem.iter().next().unwrap();
    // SAFETY: `mem` outlives the VM (both end with this test).
    unsafe {
        vm.set_user_memory_region(&UserMemoryRegion {
            slot: SlotId(0),
            flags: MemoryFlags::LOG_DIRTY_PAGES,
            guest_phys_addr: 0,
            memory_size: region.len(),
            userspace_addr: region.as_ptr() as u64,
        })
    }
    .expect("KVM_SET_USER_MEMORY_REGION");
    let all = [u64::MAX, (1 << 36) - 1];
    let mut bitmap = [0u64; 2];
    vm.get_dirty_log(SlotId(0), &mut bitmap)
        .expect("KVM_GET_DIRTY_LOG");
    assert_eq!(bitmap, all);

    // Short bitmaps and unknown slots never reach the kernel.
    let e = vm.get_dirty_log(SlotId(0), &mut bitmap[..1]).unwrap_err();
    assert!(matches!(
        arch_error(&e),
        Error::DirtyBitmap(DirtyBitmapError::TooShort {
            needed: 2,
            len: 1,
            ..
        })
    ));
    let e = vm.get_dirty_log(SlotId(1), &mut bitmap).unwrap_err();
    assert!(matches!(
        arch_error(&e),
        Error::DirtyBitmap(DirtyBitmapError::UnknownSlot { slot: 1 })
    ));
    let e = vm
        .clear_dirty_log(SlotId(0), 0, 100, &[u64::MAX])
        .unwrap_err();
    assert!(matches!(
        arch_error(&e),
        Error::DirtyBitmap(DirtyBitmapError::TooShort {
            needed: 2,
            len: 1,
            ..
        })
    ));

    // Clearing pages 0..64 but 5, then the 36 pages to the end of the slot.
    vm.clear_dirty_log(SlotId(0), 0, 64, &[!(1 << 5)])
        .expect("KVM_CLEAR_DIRTY_LOG");
    vm.get_dirty_log(SlotId(0), &mut bitmap).unwrap();
    assert_eq!(bitmap, [1 << 5, all[1]]);
    vm.clear_dirty_log(SlotId(0), 64, 36, &[u64::MAX]).unwrap();
    vm.get_dirty_log(SlotId(0), &mut bitmap).unwrap();
    assert_eq!(bitmap, [1 << 5, 0]);

    // Deleting the slot forgets its size: GET is refused before the kernel.
    // SAFETY: a deletion maps nothing.
    unsafe {
        vm.set_user_memory_region(&UserMemoryRegion {
            slot: SlotId(0),
            flags: MemoryFlags::NONE,
            guest_phys_addr: 0,
            memory_size: 0,
            userspace_addr: 0,
        })
    }
    .expect("deleting the slot");
    let e = vm.get_dirty_log(SlotId(0), &mut bitmap).unwrap_err();
    assert!(matches!(
        arch_error(&e),
        Error::DirtyBitmap(DirtyBitmapError::UnknownSlot { slot: 0 })
    ));
}

#[test]
fn kvm_dirty_ring_ioctls_through_this_crate() {
    let Some(kvm) = kvm_or_skip!(S390x) else {
        return;
    };
    let vm = kvm.create_vm(&plain()).expect("KVM_CREATE_VM");
    // No ring yet: the kernel refuses the reset.
    let e = vm.reset_dirty_rings().unwrap_err();
    assert!(
        matches!(arch_error(&e), Error::Ioctl { ioctl: "KVM_RESET_DIRTY_RINGS", source }
            if source.raw_os_error() == Some(libc::EINVAL)),
        "{e:?}"
    );
    let e = vm
        .enable_cap(Capability::DIRTY_LOG_RING, [3, 0, 0, 0])
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "KVM_ENABLE_CAP(KVM_CAP_DIRTY_LOG_RING) failed"
    );
    if vm.check_extension(Capability::DIRTY_LOG_RING) > 0 {
        // A 64 KiB ring (4096 entries), before any vCPU exists.
        vm.enable_cap(Capability::DIRTY_LOG_RING, [0x1_0000, 0, 0, 0])
            .expect("KVM_ENABLE_CAP(KVM_CAP_DIRTY_LOG_RING)");
        assert_eq!(vm.reset_dirty_rings().expect("KVM_RESET_DIRTY_RINGS"), 0);
    } else {
        println!("this host's KVM has no dirty ring: only the refusals were checked");
    }
    let vcpu = vm
        .create_vcpu(
            VcpuId(0),
            &VcpuConfig {
                reset: VcpuReset::None,
            },
        )
        .expect("KVM_CREATE_VCPU");
    assert_eq!(vcpu.raw_fd(), vcpu.arch_fd().as_raw_fd());
}

/// The snapshot calls are VM attributes of s390x's KVM (`KVM_GET_DEVICE_ATTR`
/// and `KVM_SET_DEVICE_ATTR` on the VM fd, the generic numbers): this
/// kernel answers `ENOTTY`, and each call fails naming its attribute,
/// through the portable contract (`Vm::save_state`, `Vm::restore_state`,
/// `Kvm::abi_profile`).
#[test]
fn kvm_snapshot_calls_reach_the_kernel_and_name_their_attribute() {
    let Some(kvm) = kvm_or_skip!(S390x) else {
        return;
    };
    let vm = kvm.create_vm(&plain()).expect("KVM_CREATE_VM");
    let enotty = |e: &Error| {
        std::error::Error::source(e)
            .and_then(|s| s.downcast_ref::<std::io::Error>())
            .and_then(std::io::Error::raw_os_error)
    };
    let e = vm.save_state().unwrap_err();
    let inner = arch_error(&e);
    assert_eq!(
        inner.to_string(),
        "KVM_GET_DEVICE_ATTR(KVM_S390_VM_TOD_EXT) failed"
    );
    assert_eq!(enotty(inner), Some(libc::ENOTTY));
    // A default state holds only a TOD clock; this kernel has no
    // KVM_S390_VM_TOD_EXT (KVM_HAS_DEVICE_ATTR says so), so the _LOW write.
    let e = vm.restore_state(&Default::default()).unwrap_err();
    assert_eq!(
        arch_error(&e).to_string(),
        "KVM_SET_DEVICE_ATTR(KVM_S390_VM_TOD_LOW) failed"
    );
    // The host profile: the scratch VM is made, then the CPU model read.
    let e = kvm
        .abi_profile(&plain(), &VcpuConfig::default())
        .unwrap_err();
    assert_eq!(
        arch_error(&e).to_string(),
        "KVM_GET_DEVICE_ATTR(KVM_S390_VM_CPU_PROCESSOR) failed"
    );
}
