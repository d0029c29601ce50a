//! Prints every UAPI fact kvmkit-arch-powerpc relies on as one JSON object:
//! ioctl numbers (PowerPC encoding), `KVM_EXIT_*`, `KVM_CAP_*`, ONE_REG ids
//! and other constants, struct sizes, alignments, field offsets and sizes
//! (`kvm_run` exit-union members from the start of `kvm_run`).

use std::io::Write;

fn main() {
    let json = kvmkit_uapi_check::facts_json(&kvmkit_arch_powerpc::uapi_facts());
    // A closed pipe (`| head`) is not an error worth a panic.
    let _ = writeln!(std::io::stdout(), "{json}");
}
