//! Bad command-line input: one clear line on stderr, a non-zero exit, no panic.

mod common;

use common::run;
use kvmkit_test_support::kvm_or_skip;
use std::io::Write;

fn assert_clear_error(args: &[&str], code: i32, needle: &str) {
    let (status, stderr) = run(args);
    assert_eq!(status.code(), Some(code), "{args:?}: {stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(
        lines.len(),
        1,
        "{args:?}: one line expected, got:\n{stderr}"
    );
    assert!(lines[0].starts_with("vmm-reference: "), "{stderr}");
    assert!(
        lines[0].contains(needle),
        "{args:?}: {stderr:?} lacks {needle:?}"
    );
    assert!(
        !stderr.contains("panicked") && !stderr.contains("backtrace"),
        "{stderr}"
    );
}

fn temp_file(name: &str, bytes: &[u8]) -> std::path::PathBuf {
    let p = std::env::temp_dir().join(format!("kvmkit-{}-{name}", std::process::id()));
    std::fs::File::create(&p).unwrap().write_all(bytes).unwrap();
    p
}

#[test]
fn unknown_flags_and_bad_values() {
    assert_clear_error(&["--frobnicate"], 2, "unexpected argument '--frobnicate'");
    assert_clear_error(&["--vcpus", "two"], 2, "invalid value 'two'");
    assert_clear_error(
        &["--serial", "tcp=1"],
        2,
        "not one of stdio, file=PATH, none",
    );
}

#[test]
fn help_documents_every_flag() {
    let out = std::process::Command::new(common::BIN)
        .arg("--help")
        .output()
        .unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--kernel",
        "--initramfs",
        "--cmdline",
        "--memory",
        "--vcpus",
        "--serial",
    ] {
        assert!(help.contains(flag), "--help lacks {flag}");
    }
}

#[test]
fn kvm_bad_sizes() {
    let Some(()) = kvm_or_skip!() else { return };
    assert_clear_error(&["--memory", "0"], 1, "--memory must be at least 1 MiB");
    assert_clear_error(&["--memory", "4"], 1, "too small");
    assert_clear_error(&["--memory", "100000000"], 1, "more than this host's");
    assert_clear_error(&["--vcpus", "0"], 1, "--vcpus must be at least 1");
    assert_clear_error(&["--vcpus", "100000"], 1, "--vcpus 100000 is more than");
}

#[test]
fn kvm_bad_kernels_and_initramfs() {
    let Some(()) = kvm_or_skip!() else { return };
    assert_clear_error(
        &["--kernel", "/nonexistent/vmlinux"],
        1,
        "cannot read kernel /nonexistent/vmlinux",
    );
    let garbage = temp_file("garbage", b"this is not a kernel at all");
    assert_clear_error(
        &["--kernel", garbage.to_str().unwrap()],
        1,
        "is not a bzImage or an x86_64 ELF",
    );
    let empty = temp_file("empty", b"");
    assert_clear_error(
        &["--kernel", empty.to_str().unwrap()],
        1,
        "the file is empty",
    );
    // A truncated ELF: the real test guest cut after its headers.
    let cut = temp_file("cut", &kvmkit_test_guest::TEST_GUEST_ELF[..200]);
    assert_clear_error(
        &["--kernel", cut.to_str().unwrap()],
        1,
        "cannot load kernel",
    );
    // A truncated cpio initramfs.
    let mut cpio = b"070701".to_vec();
    cpio.extend(b"00000001000081a4000000000000000000000001000000000000100000000000000000000000000000000000000000050000000");
    cpio.extend(b"init\0");
    let trunc = temp_file("initrd", &cpio);
    assert_clear_error(&["--initramfs", trunc.to_str().unwrap()], 1, "initramfs");
    assert_clear_error(
        &["--initramfs", "/nonexistent/initrd"],
        1,
        "cannot read initramfs",
    );
    for p in [garbage, empty, cut, trunc] {
        let _ = std::fs::remove_file(p);
    }
}
