//! Builds the freestanding guest ELF from `guest/` with the system C
//! compiler (gcc by default; override with `KVMKIT_TEST_GUEST_CC`) and
//! leaves it at `$OUT_DIR/kvmkit-test-guest.elf`.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Translation units, in link order (`boot.S` first: it holds the entry).
const SOURCES: &[&str] = &[
    "boot.S",
    "main.c",
    "lib.c",
    "idt.c",
    "bootinfo.c",
    "acpi.c",
    "smp.c",
    "irq.c",
    "virtio.c",
    "shell.c",
];

/// Files that are not compiled on their own but affect the output.
const OTHER_INPUTS: &[&str] = &["guest.h", "layout.h", "link.ld"];

/// Flags for every translation unit.  The guest may run inside KVM's
/// instruction emulator: no FPU/SSE/AVX, no CET (`endbr64`), no red zone
/// (exceptions use the current stack), absolute addressing at 1 MiB.
const CFLAGS: &[&str] = &[
    "-std=gnu11",
    "-O2",
    "-m64",
    "-march=x86-64",
    "-mtune=generic",
    "-ffreestanding",
    "-fno-builtin",
    "-nostdlib",
    "-fno-pic",
    "-fno-pie",
    "-mcmodel=small",
    "-mno-red-zone",
    "-mgeneral-regs-only",
    "-mno-sse",
    "-mno-sse2",
    "-mno-mmx",
    "-mno-3dnow",
    "-mno-80387",
    "-fno-stack-protector",
    "-fcf-protection=none",
    "-fno-asynchronous-unwind-tables",
    "-fno-unwind-tables",
    "-fno-tree-loop-distribute-patterns",
    "-fno-common",
    // Accesses to fixed low addresses (e.g. the BDA at 0x40e) are intended.
    "--param=min-pagesize=0",
    "-Wall",
    "-Wextra",
    "-Werror",
];

fn run(cmd: &mut Command) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("kvmkit-test-guest: cannot run {cmd:?}: {e}"));
    if !out.status.success() {
        panic!(
            "kvmkit-test-guest: {cmd:?} failed ({})\n--- stdout\n{}\n--- stderr\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

fn compiler() -> String {
    if let Ok(cc) = env::var("KVMKIT_TEST_GUEST_CC") {
        return cc;
    }
    let have_gcc = Command::new("gcc")
        .arg("--version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if have_gcc { "gcc" } else { "cc" }.to_string()
}

fn main() {
    let manifest = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR"));
    let src = manifest.join("guest");
    let version = env::var("CARGO_PKG_VERSION").expect("CARGO_PKG_VERSION");

    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=KVMKIT_TEST_GUEST_CC");
    for f in SOURCES.iter().chain(OTHER_INPUTS) {
        println!("cargo:rerun-if-changed={}", src.join(f).display());
    }

    let cc = compiler();
    let obj_dir = out.join("guest-obj");
    std::fs::create_dir_all(&obj_dir).expect("create object directory");

    let version_define = format!("-DKVMKIT_TG_VERSION=\"{version}\"");
    let mut objects = Vec::new();
    for f in SOURCES {
        let obj = obj_dir.join(Path::new(f).with_extension("o"));
        run(Command::new(&cc)
            .args(CFLAGS)
            .arg(&version_define)
            .arg("-I")
            .arg(&src)
            .arg("-c")
            .arg(src.join(f))
            .arg("-o")
            .arg(&obj));
        objects.push(obj);
    }

    let elf = out.join("kvmkit-test-guest.elf");
    run(Command::new(&cc)
        .args([
            "-m64",
            "-nostdlib",
            "-static",
            "-no-pie",
            "-Wl,--build-id=none",
            "-Wl,-z,max-page-size=4096",
            "-Wl,-z,noexecstack",
            "-Wl,--orphan-handling=error",
        ])
        .arg(format!("-Wl,-T,{}", src.join("link.ld").display()))
        .arg("-o")
        .arg(&elf)
        .args(&objects));
}
