//! The reference VMM boots the project test guest on real KVM.

mod common;

use common::Vmm;
use kvmkit_arch_x86_64::{e820_map, E820Kind};
use kvmkit_memory::pc_layout;
use kvmkit_test_support::kvm_or_skip;

fn autorun(cmds: &str) -> String {
    format!("console=ttyS0 kvmkit.autorun={cmds}")
}

#[test]
fn kvm_boots_to_banner_and_powers_off() {
    let Some(()) = kvm_or_skip!() else { return };
    let cmdline = autorun("poweroff");
    let mut vm = Vmm::spawn(&["--memory", "64", "--cmdline", &cmdline]);
    vm.expect(kvmkit_test_guest::BANNER);
    let (status, stderr, _) = vm.wait();
    assert_eq!(status.code(), Some(0), "stderr: {stderr}");
}

#[test]
fn kvm_every_ap_reports_in() {
    let Some(()) = kvm_or_skip!() else { return };
    let cmdline = autorun("cpus,poweroff");
    let mut vm = Vmm::spawn(&["--vcpus", "4", "--memory", "64", "--cmdline", &cmdline]);
    vm.expect("smp: 4 cpus online");
    // APs report in whatever order they come up.
    let mut online: Vec<&str> = vm
        .seen
        .iter()
        .filter_map(|l| {
            l.strip_suffix(')')
                .and_then(|l| l.split(": online (apic id ").nth(1))
        })
        .collect();
    online.sort_unstable();
    assert_eq!(online, ["0", "1", "2", "3"], "{:#?}", vm.seen);
    let (status, stderr, _) = vm.wait();
    assert_eq!(status.code(), Some(0), "stderr: {stderr}");
}

#[test]
fn kvm_memory_map_and_cmdline_arrive() {
    let Some(()) = kvm_or_skip!() else { return };
    let cmdline = format!("{} marker=xyzzy", autorun("poweroff"));
    let mut vm = Vmm::spawn(&["--memory", "96", "--cmdline", &cmdline]);
    vm.expect(kvmkit_test_guest::BANNER);
    let got = vm.expect("cmdline:");
    assert!(got.contains("marker=xyzzy"), "{got}");
    let (status, stderr, seen) = vm.wait();
    assert_eq!(status.code(), Some(0), "stderr: {stderr}");
    // The guest's e820 lines are exactly the map the VMM built.
    let ram: Vec<(u64, u64)> = pc_layout(96 << 20)
        .unwrap()
        .iter()
        .map(|(a, l)| (a.0, *l))
        .collect();
    let want: Vec<String> = e820_map(&ram)
        .iter()
        .map(|e| {
            let kind = match e.kind {
                E820Kind::Ram => "usable",
                E820Kind::Reserved => "reserved",
                E820Kind::Acpi => "ACPI data",
                E820Kind::Nvs => "ACPI NVS",
                E820Kind::Unusable => "unusable",
            };
            format!(
                "e820: [mem {:#018x}-{:#018x}] {kind}",
                e.addr,
                e.addr + e.size - 1
            )
        })
        .collect();
    let printed: Vec<&String> = seen.iter().filter(|l| l.starts_with("e820: ")).collect();
    assert_eq!(printed.len(), want.len(), "{seen:#?}");
    for (p, w) in printed.iter().zip(&want) {
        assert_eq!(p.as_str(), w.as_str());
    }
    let total = seen
        .iter()
        .find(|l| l.starts_with("mem: total usable"))
        .unwrap();
    let usable_kib: u64 = e820_map(&ram)
        .iter()
        .filter(|e| e.kind == E820Kind::Ram)
        .map(|e| e.size / 1024)
        .sum();
    // 96 MiB less the 1 KiB EBDA carved from low RAM.
    assert_eq!(usable_kib, 96 * 1024 - 1);
    assert!(
        total.contains(&format!("{usable_kib} KiB")),
        "{total} vs {usable_kib} KiB"
    );
}

#[test]
fn kvm_serial_input_reaches_the_shell() {
    let Some(()) = kvm_or_skip!() else { return };
    let mut vm = Vmm::spawn(&["--memory", "64"]);
    vm.expect(kvmkit_test_guest::PROMPT);
    vm.send("echo hello-from-host\r");
    let l = vm.expect("hello-from-host");
    assert!(
        !l.starts_with("kvmkit> echo"),
        "the reply, not the echo: {l}"
    );
    vm.expect(kvmkit_test_guest::PROMPT);
    vm.send("poweroff\r");
    let (status, stderr, _) = vm.wait();
    assert_eq!(status.code(), Some(0), "stderr: {stderr}");
}

#[test]
fn kvm_i8042_reset_ends_the_vmm() {
    let Some(()) = kvm_or_skip!() else { return };
    let cmdline = autorun("reboot");
    let mut vm = Vmm::spawn(&["--memory", "64", "--cmdline", &cmdline]);
    vm.expect(kvmkit_test_guest::BANNER);
    let (status, stderr, _) = vm.wait();
    assert_eq!(status.code(), Some(0), "stderr: {stderr}");
}
