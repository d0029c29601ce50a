//! Prints every UAPI fact kvmkit-arch-s390x relies on as one JSON object,
//! keyed by the kernel's names (`KVM_RUN`, `kvm_regs.size`,
//! `kvm_run.s390_sieic.ipa.offset`…), unsigned decimal values.

fn main() {
    println!(
        "{}",
        kvmkit_uapi_check::facts_json(&kvmkit_arch_s390x::uapi_facts())
    );
}
