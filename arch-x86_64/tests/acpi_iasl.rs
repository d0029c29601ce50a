//! Disassembles the ACPI tables with ACPICA's `iasl -d` (Debian package
//! `acpica-tools`) and checks what it reads back. `iasl` is a host tool
//! the tests require: without it they fail, naming the package.

use kvmkit_arch_x86_64::{
    write_acpi_tables, AcpiConfig, MmioDevice, PmRegisters, ResetRegister, SerialPort, BIOS_SIZE,
    BIOS_START,
};
use std::path::{Path, PathBuf};
use std::process::Command;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

fn config() -> AcpiConfig {
    AcpiConfig {
        nr_vcpus: 4,
        serial_ports: vec![
            SerialPort {
                base: 0x3f8,
                irq: 4,
            },
            SerialPort {
                base: 0x2f8,
                irq: 3,
            },
        ],
        mmio_devices: vec![
            MmioDevice {
                hid: "LNRO0005",
                uid: 0,
                base: 0xd000_0000,
                len: 0x1000,
                irq: 5,
            },
            MmioDevice {
                hid: "LNRO0005",
                uid: 1,
                base: 0xd000_1000,
                len: 0x1000,
                irq: 6,
            },
        ],
        pm: PmRegisters {
            pm1a_evt: 0x600,
            pm1a_cnt: 0x604,
            sleep_s5_typ: 5,
        },
        reset: ResetRegister {
            port: 0xcf9,
            value: 6,
        },
    }
}

fn read(mem: &GuestMemoryMmap, gpa: u64, len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    mem.read_slice(&mut v, GuestAddress(gpa))
        .expect("table in the BIOS region");
    v
}

fn u64_at(b: &[u8], off: usize) -> u64 {
    u64::from_le_bytes(b[off..off + 8].try_into().unwrap())
}

/// The SDT at `gpa`, whole, by its header's length.
fn sdt(mem: &GuestMemoryMmap, gpa: u64) -> Vec<u8> {
    let header = read(mem, gpa, 36);
    let len = u32::from_le_bytes(header[4..8].try_into().unwrap());
    read(mem, gpa, usize::try_from(len).unwrap())
}

/// The FADT, MADT and DSDT, found from the RSDP in guest memory.
fn tables() -> Vec<(&'static str, Vec<u8>)> {
    let mem = GuestMemoryMmap::<()>::from_ranges(&[(
        GuestAddress(BIOS_START),
        usize::try_from(BIOS_SIZE).unwrap(),
    )])
    .unwrap();
    let rsdp = write_acpi_tables(&mem, &config()).unwrap();
    let xsdt = sdt(&mem, u64_at(&read(&mem, rsdp, 36), 24));
    let fadt = sdt(&mem, u64_at(&xsdt, 36));
    let madt = sdt(&mem, u64_at(&xsdt, 44));
    let dsdt = sdt(&mem, u64_at(&fadt, 140));
    vec![("facp", fadt), ("apic", madt), ("dsdt", dsdt)]
}

/// A fresh scratch directory for this test.
fn scratch(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("kvmkit-iasl-{}-{test}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs `iasl` with `args` in `dir`; fails the test if it is missing or
/// reports an error. Returns its console output.
fn iasl(dir: &Path, args: &[&str]) -> String {
    let out = match Command::new("iasl").args(args).current_dir(dir).output() {
        Ok(out) => out,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
            "iasl not found: install acpica-tools (apt-get install -y acpica-tools) to run the ACPI tests"
        ),
        Err(e) => panic!("cannot run iasl: {e}"),
    };
    let console = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "iasl {args:?} failed:\n{console}");
    console
}

/// Disassembles `bytes` as `name.dat` and returns the `.dsl` text; iasl
/// must neither warn nor fail.
fn disassemble(dir: &Path, name: &str, bytes: &[u8]) -> String {
    let dat = format!("{name}.dat");
    std::fs::write(dir.join(&dat), bytes).unwrap();
    let console = iasl(dir, &["-d", &dat]);
    assert!(!console.contains("Warning"), "{console}");
    std::fs::read_to_string(dir.join(format!("{name}.dsl"))).expect("iasl wrote the .dsl")
}

/// `text` without `//` and `/* */` comments, whitespace runs collapsed to
/// one space: what is checked does not depend on iasl's layout.
fn normalize(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(i) = rest.find("/*") {
        out.push_str(&rest[..i]);
        rest = rest[i..].find("*/").map_or("", |j| &rest[i + j + 2..]);
    }
    out.push_str(rest);
    let lines: Vec<&str> = out
        .lines()
        .map(|l| l.find("//").map_or(l, |i| &l[..i]))
        .collect();
    lines
        .join(" ")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// The body of `Device (name)` in normalised ASL, up to the next device.
fn device<'a>(asl: &'a str, name: &str) -> &'a str {
    let head = format!("Device ({name})");
    let start = asl
        .find(&head)
        .unwrap_or_else(|| panic!("no {head} in:\n{asl}"));
    let body = &asl[start + head.len()..];
    body.find("Device (").map_or(body, |end| &body[..end])
}

fn assert_has(text: &str, what: &str) {
    assert!(text.contains(what), "no {what:?} in:\n{text}");
}

#[test]
fn dsdt_disassembles_to_the_devices() {
    let dir = scratch("dsdt");
    let (_, dsdt) = tables().remove(2);
    let dsl = disassemble(&dir, "dsdt", &dsdt);
    println!("{dsl}");
    let asl = normalize(&dsl);
    assert_has(
        &asl,
        "DefinitionBlock (\"\", \"DSDT\", 2, \"KVMKIT\", \"KVMKITVM\", 0x00000001)",
    );
    assert_has(&asl, "Scope (\\_SB) { Device (COM1)");
    for (name, uid, port, irq) in [("COM1", "One", "0x03F8", 4), ("COM2", "0x02", "0x02F8", 3)] {
        let dev = device(&asl, name);
        assert_has(dev, "Name (_HID, EisaId (\"PNP0501\") )");
        assert_has(dev, &format!("Name (_UID, {uid})"));
        assert_has(dev, &format!("IO (Decode16, {port}, {port}, 0x01, 0x08, )"));
        assert_has(dev, &format!("IRQNoFlags () {{{irq}}}"));
    }
    for (name, uid, base, irq) in [
        ("VR00", "Zero", "0xD0000000", 5),
        ("VR01", "One", "0xD0001000", 6),
    ] {
        let dev = device(&asl, name);
        assert_has(dev, "Name (_HID, \"LNRO0005\")");
        assert_has(dev, &format!("Name (_UID, {uid})"));
        assert_has(
            dev,
            &format!("Memory32Fixed (ReadWrite, {base}, 0x00001000, )"),
        );
        assert_has(
            dev,
            &format!(
                "Interrupt (ResourceConsumer, Edge, ActiveHigh, Exclusive, ,, ) {{ 0x{irq:08X}, }}"
            ),
        );
    }
    assert_has(&asl, "Name (\\_S5, Package (0x02) { 0x05, Zero })");

    // The disassembly compiles back cleanly.
    let console = iasl(&dir, &["dsdt.dsl"]);
    assert!(console.contains("0 Errors, 0 Warnings"), "{console}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn fadt_and_madt_disassemble_to_their_fields() {
    let dir = scratch("fadt-madt");
    let mut tables = tables().into_iter();
    let (name, fadt) = tables.next().unwrap();
    let dsl = disassemble(&dir, name, &fadt);
    println!("{dsl}");
    let fadt = normalize(&dsl);
    for field in [
        "Signature : \"FACP\"",
        "Revision : 06",
        "FADT Minor Revision : 05",
        "SCI Interrupt : 0009",
        "SMI Command Port : 00000000",
        "PM1A Event Block Address : 00000600",
        "PM1A Control Block Address : 00000604",
        "PM1 Event Block Length : 04",
        "PM1 Control Block Length : 02",
        "PM Timer Block Length : 00",
        "Legacy Devices Supported (V2) : 1",
        "8042 Present on ports 60/64 (V2) : 1",
        "WBINVD instruction is operational (V1) : 1",
        "Control Method Power Button (V1) : 0",
        "Control Method Sleep Button (V1) : 1",
        "Reset Register Supported (V2) : 1",
        "Hardware Reduced (V5) : 0",
        "Space ID : 01 [SystemIO] [075h 0117 1] Bit Width : 08",
        "Address : 0000000000000CF9",
        "Value to cause reset : 06",
    ] {
        assert_has(&fadt, field);
    }

    let (name, madt) = tables.next().unwrap();
    let dsl = disassemble(&dir, name, &madt);
    println!("{dsl}");
    let madt = normalize(&dsl);
    assert_has(&madt, "Local Apic Address : FEE00000");
    assert_has(&madt, "PC-AT Compatibility : 1");
    assert_eq!(madt.matches("[Processor Local APIC]").count(), 4);
    assert_has(
        &madt,
        "[I/O APIC] [04Dh 0077 1] Length : 0C [04Eh 0078 1] I/O Apic ID : 04",
    );
    assert_has(&madt, "Address : FEC00000");
    assert_has(&madt, "Source : 00 [05Ch 0092 4] Interrupt : 00000002");
    assert_has(&madt, "Source : 09 [066h 0102 4] Interrupt : 00000009");
    assert_has(&madt, "[Local APIC NMI]");
    assert_has(&madt, "Interrupt Input LINT : 01");
    let _ = std::fs::remove_dir_all(&dir);
}
