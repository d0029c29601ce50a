//! Workspace-level integration tests of kvmkit live in `tests/tests/`: they
//! compose the crates (memory slots, the run loop, the x86_64 arch) the way a
//! VMM does and run real guests on `/dev/kvm`. This library is empty.
