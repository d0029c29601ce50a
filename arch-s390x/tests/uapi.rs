//! Every UAPI fact this crate relies on ([`kvmkit_arch_s390x::uapi_facts`]:
//! struct sizes, alignments, field offsets and sizes, ioctl numbers,
//! `KVM_EXIT_*`, `KVM_CAP_*` and other macro values) compared with the real
//! s390x headers, compiled by the s390x cross compiler (asm-offsets style:
//! nothing runs). Without `s390x-linux-gnu-gcc` this fails with the Debian
//! packages to install.

use kvmkit_uapi_check::{read_facts, Probe, S390X};

/// The C expression for a fact, from its name.
fn probe(key: &str) -> Probe {
    let parts: Vec<&str> = key.split('.').collect();
    match parts.as_slice() {
        [_] => Probe::constant(key),
        [ty, "size"] => Probe::new(key, format!("sizeof(struct {ty})")),
        [ty, "align"] => Probe::new(key, format!("_Alignof(struct {ty})")),
        [ty, path @ .., "offset"] => Probe::new(
            key,
            format!("__builtin_offsetof(struct {ty}, {})", path.join(".")),
        ),
        [ty, path @ .., "size"] => Probe::new(
            key,
            format!("sizeof(((struct {ty} *)0)->{})", path.join(".")),
        ),
        _ => panic!("fact {key} has no C form"),
    }
}

#[test]
fn every_fact_matches_the_s390x_headers() {
    let ours = kvmkit_arch_s390x::uapi_facts();
    let probes: Vec<Probe> = ours.keys().map(|k| probe(k)).collect();
    let theirs = read_facts(&S390X, &[], &probes).unwrap_or_else(|e| panic!("{e}"));
    let mismatches: Vec<String> = ours
        .iter()
        .filter(|(k, v)| theirs.get(*k) != Some(v))
        .map(|(k, v)| format!("{k}: ours {v}, header {:?}", theirs.get(k)))
        .collect();
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
    // Print the count for the record (visible with --nocapture).
    println!("{} UAPI facts match the s390x headers", ours.len());
}

#[test]
fn the_decoder_offsets_are_the_checked_ones() {
    // decode_exit reads exit_reason at 8 and the union at 48: both are facts
    // compared above; spot-check that they are what the decoder assumes.
    let f = kvmkit_arch_s390x::uapi_facts();
    assert_eq!(f["kvm_run.exit_reason.offset"], 8);
    assert_eq!(
        f["kvm_run.immediate_exit.offset"],
        kvmkit_core::KVM_RUN_IMMEDIATE_EXIT_OFFSET as u64
    );
    assert_eq!(f["kvm_run.s390_sieic.offset"], 48);
    assert_eq!(f["kvm_run.size"], kvmkit_arch_s390x::KVM_RUN_SIZE as u64);
}
