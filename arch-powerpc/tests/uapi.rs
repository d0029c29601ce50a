//! Every fact of `uapi_facts` checked against the real ppc64le headers
//! (Debian's `linux-libc-dev-ppc64el-cross`), read by compiling a probe
//! with `powerpc64le-linux-gnu-gcc`, asm-offsets style. Without the cross
//! compiler the test fails and names the packages to install.

use kvmkit_uapi_check::{probes_for, read_facts, PPC64LE};

#[test]
fn every_fact_matches_the_ppc64le_headers() {
    let ours = kvmkit_arch_powerpc::uapi_facts();
    let theirs = read_facts(&PPC64LE, &[], &probes_for(ours.keys().map(String::as_str)))
        .unwrap_or_else(|e| panic!("{e}"));
    let wrong: Vec<String> = ours
        .iter()
        .filter(|(k, v)| theirs.get(*k) != Some(v))
        .map(|(k, v)| format!("{k}: ours {v}, header {:?}", theirs.get(k)))
        .collect();
    assert!(
        wrong.is_empty(),
        "facts differing from the headers:\n{}",
        wrong.join("\n")
    );
    // Sizes, alignments, offsets and field sizes of every struct, every
    // ioctl, exit, capability, ONE_REG id and constant.
    assert!(ours.len() > 600, "{} facts", ours.len());
    println!("{} facts match the ppc64le headers", ours.len());
}

#[test]
fn kvm_run_is_0x2000ae80_on_powerpc() {
    let f = kvmkit_arch_powerpc::uapi_facts();
    assert_eq!(f["KVM_RUN"], 536_915_584);
    assert_eq!(f["KVM_RUN"], u64::from(kvmkit_arch_powerpc::KVM_RUN));
}

#[test]
fn the_json_the_example_prints_round_trips() {
    let facts = kvmkit_arch_powerpc::uapi_facts();
    let json = kvmkit_uapi_check::facts_json(&facts);
    assert!(json.contains("\"KVM_RUN\": 536915584"));
    assert!(json.contains("\"kvm_run.papr_hcall.nr.offset\": 32"));
    assert_eq!(kvmkit_uapi_check::parse_facts_json(&json).unwrap(), facts);
}
