//! Assembles the RTAS entry code with the cross assembler (Debian package
//! `binutils-powerpc64le-linux-gnu`, which the cross gcc of the UAPI test
//! pulls in) and compares the bytes with `RTAS_BLOB`. The assembler is a
//! host tool this test requires: without it the test fails, naming the
//! package.

use kvmkit_arch_powerpc::{H_RTAS, RTAS_BLOB};
use std::process::Command;

fn tool(name: &str, args: &[&str]) {
    let out = Command::new(name).args(args).output().unwrap_or_else(|e| {
        panic!("cannot run {name} ({e}): install binutils-powerpc64le-linux-gnu")
    });
    assert!(
        out.status.success(),
        "{name}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn rtas_blob_is_what_the_assembler_makes() {
    let dir = std::env::temp_dir().join(format!("kvmkit-ppc-rtas-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let src = dir.join("rtas.s");
    let obj = dir.join("rtas.o");
    let bin = dir.join("rtas.bin");
    // RTAS is entered big-endian: the blob is big-endian code.
    std::fs::write(
        &src,
        format!("mr 4,3\nlis 3,{H_RTAS}@h\nori 3,3,{H_RTAS}@l\nsc 1\nblr\n"),
    )
    .unwrap();
    let (src, obj, bin) = (
        src.to_str().unwrap(),
        obj.to_str().unwrap(),
        bin.to_str().unwrap(),
    );
    tool(
        "powerpc64le-linux-gnu-as",
        &["-mbig", "-a64", src, "-o", obj],
    );
    tool(
        "powerpc64le-linux-gnu-objcopy",
        &["-O", "binary", "-j", ".text", obj, bin],
    );
    let bytes = std::fs::read(bin).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(bytes, RTAS_BLOB);
}
