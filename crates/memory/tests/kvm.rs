//! The slot table on real `/dev/kvm`, with tiny hand-assembled real-mode guests.
//!
//! Every guest starts at `0x1000` with all segment bases 0 and runs a handful
//! of instructions (this project's KVM runs guest code in its instruction
//! emulator). `out 0x80, al` is the guest's way to report a value.

use kvmkit_arch_x86_64::{BootSetup, IoDirection, VcpuConfig, X86Exit, X86_64};
use kvmkit_core::{Kvm, MemoryFlags, MemoryFlags as F, SlotId, UserMemoryRegion, Vcpu};
use kvmkit_core::{VcpuExit, VcpuId, Vm};
use kvmkit_memory::{pc_layout, Error, RegionConfig, SlotTable};
use std::sync::Arc;
use vm_memory::{
    Bytes, FileOffset, GuestAddress, GuestAddressSpace, GuestMemoryBackend, GuestMemoryMmap,
    GuestMemoryRegion,
};
use vmm_sys_util::tempfile::TempFile;

const CODE: u64 = 0x1000;

/// An exit, owned, for comparisons.
#[derive(Debug, PartialEq)]
enum Seen {
    Out(u16, Vec<u8>),
    MmioRead(u64, usize),
    MmioWrite(u64, Vec<u8>),
    Hlt,
}

fn new_vm(kvm: &Kvm<X86_64>) -> Arc<Vm<X86_64>> {
    Arc::new(kvm.create_vm(&Default::default()).unwrap())
}

/// A vCPU in real mode at `0:CODE`, stack at `0x8000`.
fn vcpu_at_code<M: vm_memory::GuestMemory>(vm: &Vm<X86_64>, mem: &M) -> Vcpu<X86_64> {
    let vcpu = vm.create_vcpu(VcpuId(0), &VcpuConfig::default()).unwrap();
    let boot = BootSetup::RealMode {
        cs_base: 0,
        ip: u16::try_from(CODE).unwrap(),
        sp: 0x8000,
    };
    vcpu.setup_boot(mem, &boot).unwrap();
    vcpu
}

/// Runs to the next exit; MMIO reads are answered with `fill` bytes.
fn step(vcpu: &mut Vcpu<X86_64>, fill: u8) -> Seen {
    loop {
        return match vcpu.run().unwrap() {
            VcpuExit::Interrupted => continue,
            VcpuExit::Arch(X86Exit::Io {
                direction: IoDirection::Out,
                port,
                data,
                ..
            }) => Seen::Out(port, data.to_vec()),
            VcpuExit::MmioRead { addr, data } => {
                data.fill(fill);
                Seen::MmioRead(addr, data.len())
            }
            VcpuExit::MmioWrite { addr, data } => Seen::MmioWrite(addr, data.to_vec()),
            VcpuExit::Hlt => Seen::Hlt,
            e => panic!("unexpected exit {e:?}"),
        };
    }
}

fn write_code<M: Bytes<GuestAddress>>(mem: &M, code: &[u8])
where
    M::E: std::fmt::Debug,
{
    mem.write_slice(code, GuestAddress(CODE)).unwrap();
}

#[test]
fn kvm_two_regions_across_the_legacy_hole() {
    let Some(kvm) = kvmkit_test_support::kvm_or_skip!(X86_64) else {
        return;
    };
    let vm = new_vm(&kvm);
    let mut table = SlotTable::for_vm(vm.clone()).unwrap();
    // 1 MiB of RAM: [0, 640 KiB) and [1 MiB, 1 MiB + 384 KiB).
    let ids = table
        .add_ram(&pc_layout(1 << 20).unwrap(), MemoryFlags::NONE)
        .unwrap();
    assert_eq!(ids, [SlotId(0), SlotId(1)]);
    assert_eq!(
        table.slot(SlotId(1)).unwrap().gpa(),
        GuestAddress(0x10_0000)
    );
    let mem = table.guest_memory();
    mem.write_obj(0x5au8, GuestAddress(0x10_0020)).unwrap();
    write_code(
        &*mem,
        &[
            0xb8, 0xff, 0xff, // mov ax, 0xffff
            0x8e, 0xd8, //       mov ds, ax        ; ds base 0xffff0
            0xa0, 0x30, 0x00, // mov al, [0x30]    ; 0x100020: RAM above 1 MiB
            0xe6, 0x80, //       out 0x80, al
            0xa0, 0x00, 0x00, // mov al, [0x00]    ; 0xffff0: in the hole
            0xe6, 0x80, //       out 0x80, al
            0xa2, 0x31, 0x00, // mov [0x31], al    ; 0x100021: RAM above 1 MiB
            0xa2, 0x08, 0x00, // mov [0x08], al    ; 0xffff8: in the hole
            0xf4, //             hlt
        ],
    );
    let mut vcpu = vcpu_at_code(&vm, &*mem);
    assert_eq!(step(&mut vcpu, 0), Seen::Out(0x80, vec![0x5a]));
    assert_eq!(step(&mut vcpu, 0x77), Seen::MmioRead(0xf_fff0, 1));
    assert_eq!(step(&mut vcpu, 0), Seen::Out(0x80, vec![0x77]));
    assert_eq!(step(&mut vcpu, 0), Seen::MmioWrite(0xf_fff8, vec![0x77]));
    assert_eq!(step(&mut vcpu, 0), Seen::Hlt);
    assert_eq!(mem.read_obj::<u8>(GuestAddress(0x10_0021)).unwrap(), 0x77);
}

#[test]
fn kvm_read_only_region_traps_guest_writes() {
    let Some(kvm) = kvmkit_test_support::kvm_or_skip!(X86_64) else {
        return;
    };
    let vm = new_vm(&kvm);
    let mut table = SlotTable::for_vm(vm.clone()).unwrap();
    table
        .add(RegionConfig::anonymous(GuestAddress(0), 0x1_0000))
        .unwrap();
    let rom = table
        .add(RegionConfig::anonymous(GuestAddress(0x1_0000), 0x1000).read_only(true))
        .unwrap();
    assert_eq!(table.slot(rom).unwrap().flags(), F::READONLY);
    let mem = table.guest_memory();
    // The host may write a read-only slot (e.g. to load a ROM).
    mem.write_obj(0x42u8, GuestAddress(0x1_0000)).unwrap();
    write_code(
        &*mem,
        &[
            0xb8, 0x00, 0x10, //             mov ax, 0x1000
            0x8e, 0xd8, //                   mov ds, ax          ; ds base 0x10000
            0xa0, 0x00, 0x00, //             mov al, [0]
            0xe6, 0x80, //                   out 0x80, al
            0xc6, 0x06, 0x00, 0x00, 0x99, // mov byte [0], 0x99
            0xf4, //                         hlt
        ],
    );
    let mut vcpu = vcpu_at_code(&vm, &*mem);
    assert_eq!(step(&mut vcpu, 0), Seen::Out(0x80, vec![0x42]));
    assert_eq!(step(&mut vcpu, 0), Seen::MmioWrite(0x1_0000, vec![0x99]));
    assert_eq!(step(&mut vcpu, 0), Seen::Hlt);
    assert_eq!(mem.read_obj::<u8>(GuestAddress(0x1_0000)).unwrap(), 0x42);
}

#[test]
fn kvm_host_and_guest_see_each_others_writes() {
    let Some(kvm) = kvmkit_test_support::kvm_or_skip!(X86_64) else {
        return;
    };
    let vm = new_vm(&kvm);
    let mut table = SlotTable::for_vm(vm.clone()).unwrap();
    // A device's handle, taken before the RAM exists.
    let device = table.memory();
    table
        .add(RegionConfig::anonymous(GuestAddress(0), 0x1_0000))
        .unwrap();
    let mem = device.memory();
    mem.write_obj(0x1234u16, GuestAddress(0x2000)).unwrap();
    write_code(
        &*mem,
        &[
            0xa1, 0x00, 0x20, // mov ax, [0x2000]
            0x05, 0x01, 0x00, // add ax, 1
            0xa3, 0x02, 0x20, // mov [0x2002], ax
            0xe6, 0x80, //       out 0x80, al
            0xa0, 0x04, 0x20, // mov al, [0x2004]
            0xe6, 0x81, //       out 0x81, al
            0xf4, //             hlt
        ],
    );
    let mut vcpu = vcpu_at_code(&vm, &*mem);
    assert_eq!(step(&mut vcpu, 0), Seen::Out(0x80, vec![0x35]));
    // The guest's write, seen by the host while the vCPU is stopped at `out`.
    assert_eq!(mem.read_obj::<u16>(GuestAddress(0x2002)).unwrap(), 0x1235);
    // A host write the guest reads next.
    mem.write_obj(0xabu8, GuestAddress(0x2004)).unwrap();
    assert_eq!(step(&mut vcpu, 0), Seen::Out(0x81, vec![0xab]));
    assert_eq!(step(&mut vcpu, 0), Seen::Hlt);
}

#[test]
fn kvm_overlapping_and_misaligned_regions_are_refused() {
    let Some(kvm) = kvmkit_test_support::kvm_or_skip!(X86_64) else {
        return;
    };
    let vm = new_vm(&kvm);
    let mut table = SlotTable::for_vm(vm).unwrap();
    table
        .add(RegionConfig::anonymous(GuestAddress(0x10_0000), 0x10_0000))
        .unwrap();
    let refuse = |t: &mut SlotTable<X86_64>, gpa, len| {
        t.add(RegionConfig::anonymous(GuestAddress(gpa), len))
            .unwrap_err()
            .to_string()
    };
    assert_eq!(
        refuse(&mut table, 0x1f_f000, 0x2000),
        "region [0x1ff000, 0x201000) overlaps slot 0 at [0x100000, 0x200000)"
    );
    assert_eq!(
        refuse(&mut table, 0x20_0800, 0x1000),
        "region at 0x200800 is not aligned to the 0x1000-byte page size"
    );
    assert_eq!(
        refuse(&mut table, 0x20_0000, 0x1234),
        "region at 0x200000 has size 0x1234, not a multiple of the 0x1000-byte page size"
    );
    assert_eq!(
        refuse(&mut table, 0x20_0000, 0),
        "region at 0x200000 has size 0"
    );
    // Nothing was registered or allocated by the refused regions.
    assert_eq!(table.len(), 1);
    let next = table
        .add(RegionConfig::anonymous(GuestAddress(0x20_0000), 0x1000))
        .unwrap();
    assert_eq!(next, SlotId(1));
    assert!(table.slot(next).unwrap().is_registered());
}

#[test]
fn kvm_errors_name_the_slot_and_address() {
    let Some(kvm) = kvmkit_test_support::kvm_or_skip!(X86_64) else {
        return;
    };
    // Beyond any host's physical address width: KVM refuses the slot.
    let far = 1u64 << 60;
    let vm = new_vm(&kvm);
    let mut table = SlotTable::for_vm(vm).unwrap();
    let e = table
        .add(RegionConfig::anonymous(GuestAddress(far), 0x1000))
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "KVM_SET_USER_MEMORY_REGION failed to add slot 0 at 0x1000000000000000"
    );
    assert!(matches!(e, Error::SetUserMemoryRegion { .. }));
    assert!(table.is_empty());

    // Registering a table KVM refuses part of registers nothing.
    let mut table = SlotTable::<X86_64>::new(8);
    table
        .add(RegionConfig::anonymous(GuestAddress(0), 0x1000))
        .unwrap();
    table
        .add(RegionConfig::anonymous(GuestAddress(far), 0x1000))
        .unwrap();
    let vm = new_vm(&kvm);
    let e = table.register(vm.clone()).unwrap_err();
    assert!(e
        .to_string()
        .contains("to add slot 1 at 0x1000000000000000"));
    assert!(!table.is_registered());
    assert!(table.iter().all(|s| !s.is_registered()));
    // Slot 0 was deleted again: registering it anew works.
    table.remove(SlotId(1)).unwrap();
    table.register(vm).unwrap();
    assert!(table.slot(SlotId(0)).unwrap().is_registered());
}

#[test]
fn kvm_removed_slot_becomes_mmio_and_its_id_is_reused() {
    let Some(kvm) = kvmkit_test_support::kvm_or_skip!(X86_64) else {
        return;
    };
    let vm = new_vm(&kvm);
    let mut table = SlotTable::for_vm(vm.clone()).unwrap();
    let region = |gpa, len| RegionConfig::anonymous(GuestAddress(gpa), len);
    table.add(region(0, 0x1_0000)).unwrap();
    let data = table.add(region(0x1_0000, 0x1000)).unwrap();
    table.add(region(0x2_0000, 0x1000)).unwrap();
    assert_eq!(data, SlotId(1));
    table
        .guest_memory()
        .write_obj(0x11u8, GuestAddress(0x1_0000))
        .unwrap();
    let removed = table.remove(data).unwrap();
    assert!(!removed.is_registered());
    // Slot 1 is free again: the next region gets it, and KVM accepts it.
    let again = table.add(region(0x3_0000, 0x1000)).unwrap();
    assert_eq!(again, SlotId(1));
    let mem = table.guest_memory();
    mem.write_obj(0x66u8, GuestAddress(0x3_0000)).unwrap();
    write_code(
        &*mem,
        &[
            0xb8, 0x00, 0x10, // mov ax, 0x1000
            0x8e, 0xd8, //       mov ds, ax      ; ds base 0x10000 (removed)
            0xa0, 0x00, 0x00, // mov al, [0]
            0xe6, 0x80, //       out 0x80, al
            0xb8, 0x00, 0x30, // mov ax, 0x3000
            0x8e, 0xd8, //       mov ds, ax      ; ds base 0x30000 (slot 1 again)
            0xa0, 0x00, 0x00, // mov al, [0]
            0xe6, 0x80, //       out 0x80, al
            0xf4, //             hlt
        ],
    );
    let mut vcpu = vcpu_at_code(&vm, &*mem);
    assert_eq!(step(&mut vcpu, 0xee), Seen::MmioRead(0x1_0000, 1));
    assert_eq!(step(&mut vcpu, 0), Seen::Out(0x80, vec![0xee]));
    assert_eq!(step(&mut vcpu, 0), Seen::Out(0x80, vec![0x66]));
    assert_eq!(step(&mut vcpu, 0), Seen::Hlt);
    // The removed slot's memory is still the host's to read.
    assert_eq!(
        removed
            .region()
            .read_obj::<u8>(vm_memory::MemoryRegionAddress(0))
            .unwrap(),
        0x11
    );
}

#[test]
fn kvm_dirty_logging_toggles_on_a_registered_slot() {
    let Some(kvm) = kvmkit_test_support::kvm_or_skip!(X86_64) else {
        return;
    };
    let vm = new_vm(&kvm);
    let mut table = SlotTable::for_vm(vm.clone()).unwrap();
    table
        .add(RegionConfig::anonymous(GuestAddress(0), 0x1_0000))
        .unwrap();
    let data = table
        .add(RegionConfig::anonymous(GuestAddress(0x1_0000), 0x4000))
        .unwrap();
    let dirty_log = || vm.arch_fd().vm_fd().get_dirty_log(data.0, 0x4000);
    assert!(dirty_log().is_err(), "no log before it is turned on");
    table.set_dirty_logging(data, true).unwrap();
    assert!(table.slot(data).unwrap().logs_dirty_pages());
    assert_eq!(dirty_log().unwrap(), [0]);
    let mem = table.guest_memory();
    write_code(
        &*mem,
        &[
            0xb8, 0x00, 0x10, //             mov ax, 0x1000
            0x8e, 0xd8, //                   mov ds, ax          ; ds base 0x10000
            0xc6, 0x06, 0x00, 0x20, 0x01, // mov byte [0x2000], 1 ; page 2 of the slot
            0xf4, //                         hlt
        ],
    );
    let mut vcpu = vcpu_at_code(&vm, &*mem);
    assert_eq!(step(&mut vcpu, 0), Seen::Hlt);
    assert_eq!(dirty_log().unwrap(), [0b100]);
    assert_eq!(mem.read_obj::<u8>(GuestAddress(0x1_2000)).unwrap(), 1);
    table.set_dirty_logging(data, false).unwrap();
    assert!(!table.slot(data).unwrap().logs_dirty_pages());
    assert!(dirty_log().is_err(), "no log after it is turned off");
}

#[test]
fn kvm_dropping_the_table_deletes_its_slots() {
    let Some(kvm) = kvmkit_test_support::kvm_or_skip!(X86_64) else {
        return;
    };
    // The code lives outside the table, in slot 100 (the table's ids stay below 100).
    let code = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x1_0000)]).unwrap();
    let code_region = code.iter().next().unwrap();
    let vm = new_vm(&kvm);
    // SAFETY: `code` maps these 0x10000 bytes and is declared before `vm`,
    // the table and `vcpu`, so it is dropped after all of them (also when a
    // panic unwinds); the kernel VM, and with it slot 100, goes with the
    // last of the VM and vCPU fds.
    unsafe {
        vm.set_user_memory_region(&UserMemoryRegion {
            slot: SlotId(100),
            flags: MemoryFlags::NONE,
            guest_phys_addr: 0,
            memory_size: code_region.len(),
            userspace_addr: code_region.as_ptr() as u64,
        })
    }
    .unwrap();
    let mut table = SlotTable::new(100);
    table
        .add(RegionConfig::anonymous(GuestAddress(0x1_0000), 0x1000))
        .unwrap();
    table.register(vm.clone()).unwrap();
    table
        .guest_memory()
        .write_obj(0x3cu8, GuestAddress(0x1_0000))
        .unwrap();
    write_code(
        &code,
        &[
            0xb8, 0x00, 0x10, // mov ax, 0x1000
            0x8e, 0xd8, //       mov ds, ax     ; ds base 0x10000: the table's slot
            0xa0, 0x00, 0x00, // mov al, [0]
            0xe6, 0x80, //       out 0x80, al
            0xa0, 0x00, 0x00, // mov al, [0]
            0xe6, 0x80, //       out 0x80, al
            0xf4, //             hlt
        ],
    );
    let mut vcpu = vcpu_at_code(&vm, &code);
    assert_eq!(step(&mut vcpu, 0), Seen::Out(0x80, vec![0x3c]));
    drop(table);
    // The slot is gone from KVM, not left pointing at unmapped memory.
    assert_eq!(step(&mut vcpu, 0xab), Seen::MmioRead(0x1_0000, 1));
    assert_eq!(step(&mut vcpu, 0), Seen::Out(0x80, vec![0xab]));
    assert_eq!(step(&mut vcpu, 0), Seen::Hlt);
}

#[test]
fn kvm_unregister_and_register_again() {
    let Some(kvm) = kvmkit_test_support::kvm_or_skip!(X86_64) else {
        return;
    };
    let mut table = SlotTable::<X86_64>::new(8);
    table
        .add_ram(&pc_layout(0x20_0000).unwrap(), MemoryFlags::NONE)
        .unwrap();
    let first = new_vm(&kvm);
    table.register(first.clone()).unwrap();
    assert!(matches!(
        table.register(first.clone()),
        Err(Error::AlreadyRegistered)
    ));
    let back = table.unregister().unwrap().unwrap();
    assert!(Arc::ptr_eq(&back, &first));
    assert!(table.iter().all(|s| !s.is_registered()));
    // The same mappings go to a second VM, where a guest uses them.
    let second = new_vm(&kvm);
    table.register(second.clone()).unwrap();
    let mem = table.guest_memory();
    mem.write_obj(0x21u8, GuestAddress(0x3000)).unwrap();
    write_code(
        &*mem,
        &[
            0xa0, 0x00, 0x30, // mov al, [0x3000]
            0xe6, 0x80, //       out 0x80, al
            0xf4, //             hlt
        ],
    );
    let mut vcpu = vcpu_at_code(&second, &*mem);
    assert_eq!(step(&mut vcpu, 0), Seen::Out(0x80, vec![0x21]));
    assert_eq!(step(&mut vcpu, 0), Seen::Hlt);
}

#[test]
fn kvm_file_backed_slot_is_guest_memory() {
    let Some(kvm) = kvmkit_test_support::kvm_or_skip!(X86_64) else {
        return;
    };
    let tmp = TempFile::new().unwrap();
    let file = tmp.as_file();
    file.set_len(0x2000).unwrap();
    std::os::unix::fs::FileExt::write_all_at(file, &[0x5e], 0x1000).unwrap();
    let vm = new_vm(&kvm);
    let mut table = SlotTable::for_vm(vm.clone()).unwrap();
    table
        .add(RegionConfig::anonymous(GuestAddress(0), 0x1_0000))
        .unwrap();
    // The file's second page at guest 0x20000.
    let fo = FileOffset::new(file.try_clone().unwrap(), 0x1000);
    table
        .add(RegionConfig::file(GuestAddress(0x2_0000), 0x1000, fo))
        .unwrap();
    let mem = table.guest_memory();
    write_code(
        &*mem,
        &[
            0xb8, 0x00, 0x20, // mov ax, 0x2000
            0x8e, 0xd8, //       mov ds, ax     ; ds base 0x20000: the file's page
            0xa0, 0x00, 0x00, // mov al, [0]
            0xe6, 0x80, //       out 0x80, al
            0xfe, 0xc0, //       inc al
            0xa2, 0x01, 0x00, // mov [1], al
            0xf4, //             hlt
        ],
    );
    let mut vcpu = vcpu_at_code(&vm, &*mem);
    assert_eq!(step(&mut vcpu, 0), Seen::Out(0x80, vec![0x5e]));
    assert_eq!(step(&mut vcpu, 0), Seen::Hlt);
    let mut back = [0u8; 2];
    std::os::unix::fs::FileExt::read_exact_at(file, &mut back, 0x1000).unwrap();
    assert_eq!(back, [0x5e, 0x5f]);
}

#[test]
fn kvm_resized_slot_keeps_its_contents() {
    let Some(kvm) = kvmkit_test_support::kvm_or_skip!(X86_64) else {
        return;
    };
    let vm = new_vm(&kvm);
    let mut table = SlotTable::for_vm(vm.clone()).unwrap();
    table
        .add(RegionConfig::anonymous(GuestAddress(0), 0x1_0000))
        .unwrap();
    let data = table
        .add(RegionConfig::anonymous(GuestAddress(0x1_0000), 0x1000))
        .unwrap();
    table
        .guest_memory()
        .write_obj(0x4du8, GuestAddress(0x1_0000))
        .unwrap();
    table.resize(data, 0x3000).unwrap();
    assert!(table.slot(data).unwrap().is_registered());
    let mem = table.guest_memory();
    write_code(
        &*mem,
        &[
            0xb8, 0x00, 0x10, // mov ax, 0x1000
            0x8e, 0xd8, //       mov ds, ax        ; ds base 0x10000
            0xa0, 0x00, 0x00, // mov al, [0]       ; copied from the old mapping
            0xa2, 0x00, 0x20, // mov [0x2000], al  ; 0x12000: in the grown part
            0xe6, 0x80, //       out 0x80, al
            0xf4, //             hlt
        ],
    );
    let mut vcpu = vcpu_at_code(&vm, &*mem);
    assert_eq!(step(&mut vcpu, 0), Seen::Out(0x80, vec![0x4d]));
    assert_eq!(step(&mut vcpu, 0), Seen::Hlt);
    assert_eq!(mem.read_obj::<u8>(GuestAddress(0x1_2000)).unwrap(), 0x4d);
}

#[test]
fn kvm_private_file_slot_is_copy_on_write() {
    let Some(kvm) = kvmkit_test_support::kvm_or_skip!(X86_64) else {
        return;
    };
    let tmp = TempFile::new().unwrap();
    let file = tmp.as_file();
    file.set_len(0x3000).unwrap();
    std::os::unix::fs::FileExt::write_all_at(file, &[0x5e], 0x1000).unwrap();
    let vm = new_vm(&kvm);
    let mut table = SlotTable::for_vm(vm.clone()).unwrap();
    table
        .add(RegionConfig::anonymous(GuestAddress(0), 0x1_0000))
        .unwrap();
    // The file's second page at guest 0x20000, privately.
    let fo = FileOffset::new(file.try_clone().unwrap(), 0x1000);
    let id = table
        .add(RegionConfig::file_private(
            GuestAddress(0x2_0000),
            0x1000,
            fo,
        ))
        .unwrap();
    assert!(table.slot(id).unwrap().is_private_file());
    let mem = table.guest_memory();
    write_code(
        &*mem,
        &[
            0xb8, 0x00, 0x20, // mov ax, 0x2000
            0x8e, 0xd8, //       mov ds, ax     ; ds base 0x20000: the file's page
            0xa0, 0x00, 0x00, // mov al, [0]
            0xe6, 0x80, //       out 0x80, al
            0xfe, 0xc0, //       inc al
            0xa2, 0x01, 0x00, // mov [1], al
            0xf4, //             hlt
        ],
    );
    let mut vcpu = vcpu_at_code(&vm, &*mem);
    assert_eq!(step(&mut vcpu, 0), Seen::Out(0x80, vec![0x5e]));
    assert_eq!(step(&mut vcpu, 0), Seen::Hlt);
    // The guest saw its write; the file did not get it.
    assert_eq!(mem.read_obj::<u8>(GuestAddress(0x2_0001)).unwrap(), 0x5f);
    let mut back = [0u8; 2];
    std::os::unix::fs::FileExt::read_exact_at(file, &mut back, 0x1000).unwrap();
    assert_eq!(back, [0x5e, 0x00]);
    // Growing keeps the private contents (they exist only in this process)
    // and stays private.
    table.resize(id, 0x2000).unwrap();
    let slot = table.slot(id).unwrap();
    assert!(slot.is_private_file() && slot.is_registered());
    let mem = table.guest_memory();
    assert_eq!(mem.read_obj::<u8>(GuestAddress(0x2_0001)).unwrap(), 0x5f);
    std::os::unix::fs::FileExt::read_exact_at(file, &mut back, 0x1000).unwrap();
    assert_eq!(back, [0x5e, 0x00]);
}
