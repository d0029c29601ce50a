//! Prints every UAPI fact kvmkit-arch-x86_64 relies on as one JSON object:
//! ioctl numbers, `KVM_EXIT_*`, `KVM_CAP_*`, struct sizes, alignments and
//! field offsets (`kvm_run` exit-union members from the start of `kvm_run`).

use std::io::Write;

fn main() {
    let json = kvmkit_uapi_check::facts_json(&kvmkit_arch_x86_64::uapi_facts());
    // A closed pipe (`| head`) is not an error worth a panic.
    let _ = writeln!(std::io::stdout(), "{json}");
}
