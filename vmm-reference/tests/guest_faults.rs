//! Guest misbehaviour ends the VMM with a distinct exit status and one line
//! naming the vCPU and the guest RIP; the VMM itself never crashes.

mod common;

use common::run;
use kvmkit_test_support::kvm_or_skip;
use std::io::Write;

/// A minimal ELF64 with a PVH note whose entry runs `code` at 1 MiB in
/// 32-bit protected mode with no IDT.
fn pvh_elf(code: &[u8]) -> Vec<u8> {
    const LOAD: u64 = 0x10_0000;
    let mut f = vec![0u8; 0x1000];
    let mut put = |off: usize, b: &[u8]| f[off..off + b.len()].copy_from_slice(b);
    put(0, b"\x7fELF\x02\x01\x01");
    put(16, &2u16.to_le_bytes()); // ET_EXEC
    put(18, &0x3eu16.to_le_bytes()); // EM_X86_64
    put(20, &1u32.to_le_bytes());
    put(24, &LOAD.to_le_bytes()); // e_entry
    put(32, &64u64.to_le_bytes()); // e_phoff
    put(52, &64u16.to_le_bytes()); // e_ehsize
    put(54, &56u16.to_le_bytes()); // e_phentsize
    put(56, &2u16.to_le_bytes()); // e_phnum
    put(58, &64u16.to_le_bytes()); // e_shentsize
                                   // PT_LOAD: the code at file offset 0x1000 to 1 MiB.
    let ph = 64;
    put(ph, &1u32.to_le_bytes());
    put(ph + 4, &5u32.to_le_bytes());
    put(ph + 8, &0x1000u64.to_le_bytes());
    put(ph + 16, &LOAD.to_le_bytes());
    put(ph + 24, &LOAD.to_le_bytes());
    put(ph + 32, &(code.len() as u64).to_le_bytes());
    put(ph + 40, &(code.len() as u64).to_le_bytes());
    put(ph + 48, &0x1000u64.to_le_bytes());
    // PT_NOTE at 0x200: "Xen", XEN_ELFNOTE_PHYS32_ENTRY (18), the entry.
    let ph = 64 + 56;
    put(ph, &4u32.to_le_bytes());
    put(ph + 4, &4u32.to_le_bytes());
    put(ph + 8, &0x200u64.to_le_bytes());
    put(ph + 32, &20u64.to_le_bytes());
    put(ph + 40, &20u64.to_le_bytes());
    put(ph + 48, &4u64.to_le_bytes());
    put(0x200, &4u32.to_le_bytes());
    put(0x204, &4u32.to_le_bytes());
    put(0x208, &18u32.to_le_bytes());
    put(0x20c, b"Xen\0");
    put(0x210, &0x10_0000u32.to_le_bytes());
    f.extend_from_slice(code);
    f
}

fn kernel_file(name: &str, bytes: &[u8]) -> std::path::PathBuf {
    let p = std::env::temp_dir().join(format!("kvmkit-{}-{name}.elf", std::process::id()));
    std::fs::File::create(&p).unwrap().write_all(bytes).unwrap();
    p
}

#[test]
fn kvm_triple_fault_exits_3_naming_vcpu_and_rip() {
    let Some(()) = kvm_or_skip!() else { return };
    // ud2 with no IDT: #UD, #GP, #DF cannot be delivered -> triple fault.
    let k = kernel_file("ud2", &pvh_elf(&[0x0f, 0x0b]));
    let (status, stderr) = run(&[
        "--memory",
        "32",
        "--serial",
        "none",
        "--kernel",
        k.to_str().unwrap(),
    ]);
    let _ = std::fs::remove_file(&k);
    assert_eq!(status.code(), Some(3), "{stderr}");
    assert_eq!(
        stderr.trim(),
        "vmm-reference: guest triple fault on vCPU 0 at RIP 0x100000"
    );
}

#[test]
fn kvm_guest_poking_unclaimed_ports_and_mmio_keeps_running() {
    let Some(()) = kvm_or_skip!() else { return };
    // in al, 0x99 ; mov eax, [0xd0000000] ; mov [0xd0000000], eax ;
    // then power off through the i8042: mov al, 0xfe ; out 0x64, al ; hlt
    let code = [
        0xe4, 0x99, 0xa1, 0x00, 0x00, 0x00, 0xd0, 0xa3, 0x00, 0x00, 0x00, 0xd0, 0xb0, 0xfe, 0xe6,
        0x64, 0xf4,
    ];
    let k = kernel_file("poke", &pvh_elf(&code));
    let (status, stderr) = run(&[
        "--memory",
        "32",
        "--serial",
        "none",
        "--kernel",
        k.to_str().unwrap(),
    ]);
    let _ = std::fs::remove_file(&k);
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert!(stderr.is_empty(), "{stderr}");
}
