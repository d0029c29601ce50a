//! Decompiles the pseries device tree with the Device Tree Compiler
//! (`dtc -I dtb -O dts`, Debian package `device-tree-compiler`) and checks
//! the nodes and properties it reads back. `dtc` is a host tool this test
//! requires: without it the test fails, naming the package.

use kvmkit_arch_powerpc::{build_pseries_fdt, FdtConfig, RtasConfig, XICS_PHANDLE};
use std::process::Command;

fn dts(dtb: &[u8], name: &str) -> String {
    let path = std::env::temp_dir().join(format!("kvmkit-ppc-{name}-{}.dtb", std::process::id()));
    std::fs::write(&path, dtb).unwrap();
    let out = Command::new("dtc")
        .args(["-I", "dtb", "-O", "dts"])
        .arg(&path)
        .output()
        .unwrap_or_else(|e| panic!("cannot run dtc ({e}): install device-tree-compiler"));
    std::fs::remove_file(&path).unwrap();
    // Success, and not even a warning (dtc checks interrupt providers,
    // unit addresses against `reg`, cell counts…).
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "dtc: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The body of node `name` (its first line to its closing `};`), by indentation.
fn node<'a>(dts: &'a str, name: &str) -> &'a str {
    let start = dts
        .find(&format!("{name} {{"))
        .unwrap_or_else(|| panic!("node {name} missing from:\n{dts}"));
    let rest = &dts[start..];
    let line_start = dts[..start].rfind('\n').map_or(0, |i| i + 1);
    let indent = &dts[line_start..start];
    let end = rest
        .find(&format!("\n{indent}}};"))
        .unwrap_or_else(|| panic!("node {name} not closed"));
    &rest[..end]
}

fn has(node: &str, prop: &str) {
    assert!(
        node.lines().any(|l| l.trim() == prop),
        "missing `{prop}` in:\n{node}"
    );
}

#[test]
fn dtc_reads_back_the_pseries_tree() {
    let dtb = build_pseries_fdt(&FdtConfig {
        mem_size: 1 << 30,
        vcpus: 2,
        pvr: Some(0x004e_1202),
        bootargs: "console=hvc0 root=/dev/ram0".into(),
        initrd: Some((0x0400_0000, 0x0480_0000)),
        xics_servers: 2,
        rtas: Some(RtasConfig {
            base: 0x0ff0_0000,
            tokens: vec![
                ("ibm,set-xive".into(), 0x2000),
                ("power-off".into(), 0x2001),
            ],
        }),
        ..FdtConfig::default()
    })
    .unwrap();
    let s = dts(&dtb, "full");
    assert!(s.starts_with("/dts-v1/;"), "{s}");

    let root = node(&s, "/");
    has(root, "compatible = \"qemu,pseries\";");
    has(root, "device_type = \"chrp\";");
    has(root, "#address-cells = <0x02>;");
    has(root, "#size-cells = <0x02>;");

    let chosen = node(&s, "chosen");
    has(chosen, "bootargs = \"console=hvc0 root=/dev/ram0\";");
    has(chosen, "linux,initrd-start = <0x00 0x4000000>;");
    has(chosen, "linux,initrd-end = <0x00 0x4800000>;");
    has(chosen, "stdout-path = \"/vdevice/vty@30000000\";");

    let memory = node(&s, "memory@0");
    has(memory, "device_type = \"memory\";");
    has(memory, "reg = <0x00 0x00 0x00 0x40000000>;");

    let cpus = node(&s, "cpus");
    has(cpus, "#address-cells = <0x01>;");
    has(cpus, "#size-cells = <0x00>;");
    for id in 0..2 {
        let cpu = node(&s, &format!("PowerPC,POWER9@{id}"));
        has(cpu, "device_type = \"cpu\";");
        has(cpu, &format!("reg = <0x{id:02x}>;"));
        has(cpu, &format!("ibm,ppc-interrupt-server#s = <0x{id:02x}>;"));
        has(cpu, "cpu-version = <0x4e1202>;");
        has(cpu, "timebase-frequency = <0x1e848000>;");
        has(cpu, "clock-frequency = <0x3b9aca00>;");
        has(cpu, "ibm,pft-size = <0x00 0x18>;");
        has(cpu, "64-bit;");
    }

    let xics = node(&s, "interrupt-controller");
    has(xics, "compatible = \"IBM,ppc-xicp\";");
    has(
        xics,
        "device_type = \"PowerPC-External-Interrupt-Presentation\";",
    );
    has(xics, "interrupt-controller;");
    has(xics, "ibm,interrupt-server-ranges = <0x00 0x02>;");
    has(xics, "#interrupt-cells = <0x02>;");
    has(xics, "#address-cells = <0x00>;");
    has(xics, &format!("phandle = <{XICS_PHANDLE:#x}>;"));

    let vdevice = node(&s, "vdevice");
    has(vdevice, "compatible = \"IBM,vdevice\";");
    has(vdevice, "device_type = \"vdevice\";");
    let vty = node(&s, "vty@30000000");
    has(vty, "compatible = \"hvterm1\";");
    has(vty, "device_type = \"serial\";");
    has(vty, "reg = <0x30000000>;");

    let rtas = node(&s, "rtas");
    assert!(
        rtas.contains("ibm,hypertas-functions = \"hcall-pft\\0hcall-term\\0"),
        "{rtas}"
    );
    has(rtas, "linux,rtas-base = <0xff00000>;");
    has(rtas, "linux,rtas-entry = <0xff00000>;");
    has(rtas, "rtas-size = <0x14>;");
    has(rtas, "ibm,set-xive = <0x2000>;");
    has(rtas, "power-off = <0x2001>;");
}

#[test]
fn dtc_reads_back_the_minimal_tree() {
    let s = dts(
        &build_pseries_fdt(&FdtConfig {
            xics_servers: 0,
            ..FdtConfig::default()
        })
        .unwrap(),
        "minimal",
    );
    assert!(!s.contains("IBM,ppc-xicp"));
    assert!(!s.contains("linux,initrd-start"));
    assert!(!s.contains("cpu-version"));
    has(node(&s, "memory@0"), "reg = <0x00 0x00 0x00 0x10000000>;");
    // An empty string: its NUL only.
    has(node(&s, "chosen"), "bootargs = [00];");
    node(&s, "PowerPC,POWER9@0");
    assert!(!s.contains("PowerPC,POWER9@1"));
    assert!(!node(&s, "rtas").contains("linux,rtas-base"));
}
