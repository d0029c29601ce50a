#![doc = include_str!("../README.md")]

use std::fs::OpenOptions;
use std::path::Path;

/// The device the gate opens.
pub const KVM_PATH: &str = "/dev/kvm";

/// The environment variable that turns a missing `/dev/kvm` into a failure.
pub const REQUIRE_ENV: &str = "KVMKIT_REQUIRE_KVM";

/// What the gate decided.
#[derive(Debug, PartialEq, Eq)]
pub enum Gate {
    /// `/dev/kvm` opened: run the test.
    Run,
    /// `/dev/kvm` did not open and it is not required: skip, with this message.
    Skip(String),
    /// `/dev/kvm` did not open but [`REQUIRE_ENV`] is `1`: fail, with this message.
    Fail(String),
}

/// Decides whether a KVM test runs, from whether `path` opens read-write and
/// the value of [`REQUIRE_ENV`].
///
/// ```
/// use kvmkit_test_support::{gate, Gate};
/// let g = gate("/nonexistent/kvm", Some("0"), "my_test");
/// assert!(matches!(g, Gate::Skip(m) if m.starts_with("skipped my_test")));
/// ```
pub fn gate(path: &str, require: Option<&str>, test: &str) -> Gate {
    match OpenOptions::new()
        .read(true)
        .write(true)
        .open(Path::new(path))
    {
        Ok(_) => Gate::Run,
        Err(e) => {
            let errno = e.raw_os_error().unwrap_or(0);
            if require.map(str::trim) == Some("1") {
                Gate::Fail(format!(
                    "{test}: {path} unavailable ({e}, errno {errno}) but {REQUIRE_ENV}=1"
                ))
            } else {
                Gate::Skip(format!("skipped {test}: {path} unavailable ({e})"))
            }
        }
    }
}

/// The current test's name: libtest names each test's thread after the test.
pub fn current_test_name() -> String {
    std::thread::current()
        .name()
        .unwrap_or("unnamed test")
        .to_string()
}

/// Runs the gate for the current test: true to run, false (with a printed
/// message) to skip; panics naming the path and errno when KVM is required.
pub fn kvm_available() -> bool {
    let require = std::env::var(REQUIRE_ENV).ok();
    match gate(KVM_PATH, require.as_deref(), &current_test_name()) {
        Gate::Run => true,
        Gate::Skip(msg) => {
            eprintln!("{msg}");
            println!("{msg}");
            false
        }
        Gate::Fail(msg) => panic!("{msg}"),
    }
}

/// True when this host's KVM is PVM (the `kvm_pvm` module: software nested
/// virtualisation, guest code runs in KVM's instruction emulator). Tests that
/// need hardware-backed KVM skip there, printing why.
pub fn kvm_is_pvm() -> bool {
    Path::new("/sys/module/kvm_pvm").exists()
}

/// The KVM gate of every kvmkit KVM test.
///
/// `kvm_or_skip!()` yields `Some(())` when `/dev/kvm` opens; otherwise it
/// prints `skipped <test>: /dev/kvm unavailable` and yields `None`, or panics
/// when `KVMKIT_REQUIRE_KVM=1`. `kvm_or_skip!(Arch)` yields
/// `Some(kvmkit_core::Kvm<Arch>)` (the calling crate depends on `kvmkit-core`).
///
/// ```
/// # use kvmkit_test_support::kvm_or_skip;
/// fn kvm_example() {
///     let Some(()) = kvm_or_skip!() else { return };
///     // ... use /dev/kvm ...
/// }
/// # if std::env::var("KVMKIT_REQUIRE_KVM").as_deref() != Ok("1") { kvm_example(); }
/// ```
#[macro_export]
macro_rules! kvm_or_skip {
    () => {
        if $crate::kvm_available() {
            Some(())
        } else {
            None
        }
    };
    ($arch:ty) => {
        if $crate::kvm_available() {
            Some(::kvmkit_core::Kvm::<$arch>::new().expect("/dev/kvm opened but KVM setup failed"))
        } else {
            None
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gate_decides() {
        assert_eq!(gate("/dev/null", None, "t"), Gate::Run);
        let skip = gate("/nonexistent/kvm", None, "t1");
        assert!(
            matches!(&skip, Gate::Skip(m) if m.contains("skipped t1: /nonexistent/kvm unavailable"))
        );
        let fail = gate("/nonexistent/kvm", Some("1"), "t2");
        assert!(
            matches!(&fail, Gate::Fail(m) if m.contains("errno 2") && m.contains("KVMKIT_REQUIRE_KVM=1"))
        );
        assert!(matches!(
            gate("/nonexistent/kvm", Some("0"), "t3"),
            Gate::Skip(_)
        ));
    }

    #[test]
    fn test_name_is_thread_name() {
        assert!(current_test_name().contains("test_name_is_thread_name"));
    }
}
