//! Every fact of `uapi_facts` checked against the real x86_64 headers
//! (`/usr/include/linux/kvm.h`, Debian's linux-libc-dev), read by compiling a
//! probe with gcc, asm-offsets style.

use kvmkit_uapi_check::{probes_for, read_facts, X86_64};

#[test]
fn every_fact_matches_the_headers() {
    let ours = kvmkit_arch_x86_64::uapi_facts();
    let theirs = read_facts(&X86_64, &[], &probes_for(ours.keys().map(String::as_str)))
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
    assert!(ours.len() > 150, "{} facts", ours.len());
}

#[test]
fn the_json_the_example_prints_round_trips() {
    let facts = kvmkit_arch_x86_64::uapi_facts();
    let json = kvmkit_uapi_check::facts_json(&facts);
    assert!(json.contains("\"KVM_RUN\": 44672"));
    assert_eq!(kvmkit_uapi_check::parse_facts_json(&json).unwrap(), facts);
}
