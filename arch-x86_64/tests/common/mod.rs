//! Shared set-up for the x86_64 KVM tests: guest memory at GPA 0 in slot 0
//! of a VM.

#![allow(dead_code)] // each test binary uses a different part

use kvmkit_arch_x86_64::{VmConfig, X86_64};
use kvmkit_core::{Kvm, MemoryFlags, SlotId, UserMemoryRegion, Vm};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};

/// A VM and the memory behind its slot 0. `vm` is declared first, so it is
/// dropped before the memory it maps.
pub struct Guest {
    pub vm: Vm<X86_64>,
    pub mem: GuestMemoryMmap,
}

/// `size` bytes of guest memory at GPA 0 holding each `(gpa, bytes)` of
/// `parts`.
pub fn memory(size: usize, parts: &[(u64, &[u8])]) -> GuestMemoryMmap {
    let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), size)]).unwrap();
    for &(gpa, bytes) in parts {
        mem.write_slice(bytes, GuestAddress(gpa)).unwrap();
    }
    mem
}

/// Puts `mem`, one region at GPA 0, into slot 0 of `vm`.
///
/// # Safety
///
/// `mem` must stay mapped until `vm` is dropped (or the slot deleted): KVM
/// reads and writes guest memory through the host address it is given.
pub unsafe fn add_slot(vm: &Vm<X86_64>, mem: &GuestMemoryMmap) {
    let r = mem.iter().next().unwrap();
    let region = UserMemoryRegion {
        slot: SlotId(0),
        flags: MemoryFlags::NONE,
        guest_phys_addr: 0,
        memory_size: r.len(),
        userspace_addr: r.as_ptr() as u64,
    };
    // SAFETY: `region` is `mem`'s mapping, which the caller keeps mapped
    // while `vm` can use the slot (this function's contract).
    unsafe { vm.set_user_memory_region(&region) }.unwrap();
}

/// A VM made with `cfg` whose slot 0 is `mem`.
pub fn guest(kvm: &Kvm<X86_64>, cfg: &VmConfig, mem: GuestMemoryMmap) -> Guest {
    let vm = kvm.create_vm(cfg).unwrap();
    // SAFETY: `mem` moves into the returned `Guest`, after `vm`, so it is
    // dropped after the VM.
    unsafe { add_slot(&vm, &mem) };
    Guest { vm, mem }
}
