//! The QMP socket of a `Vmm` run in this process (on a thread), driven by
//! the library's one-shot client: the VMM's side of the seam (pause and
//! resume through the machine loop, vCPU threads, the power button, the
//! dirty log) runs where coverage is measured.

use kvmkit_test_support::kvm_or_skip;
use kvmkit_vmm_reference::qmp::{execute, Error};
use kvmkit_vmm_reference::{DirtyLogChoice, SerialConfig, Vmm, VmmConfig, VmmExit};
use serde_json::{json, Map, Value};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(120);

fn scratch(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("kvmkit-qmp-inproc-{name}-{}", std::process::id()))
}

/// Waits until the console file has a line containing `text`.
fn console_line(console: &Path, text: &str) -> String {
    let deadline = Instant::now() + WAIT;
    loop {
        let out = std::fs::read_to_string(console).unwrap_or_default();
        if let Some(l) = out.lines().find(|l| l.contains(text)) {
            return l.to_string();
        }
        assert!(Instant::now() < deadline, "no {text:?} in:\n{out}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn args(v: Value) -> Option<Map<String, Value>> {
    v.as_object().cloned()
}

fn measured(sock: &Path) -> Value {
    let deadline = Instant::now() + WAIT;
    loop {
        let q = execute(
            sock,
            "query-dirty-rate",
            args(json!({"calc-time-unit": "millisecond"})),
        )
        .unwrap();
        if q["status"] == "measured" {
            return q;
        }
        assert!(Instant::now() < deadline, "never measured: {q}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn kvm_qmp_drives_a_vmm_in_this_process() {
    let Some(()) = kvm_or_skip!() else { return };
    let sock = scratch("sock");
    let console = scratch("console");
    let _ = std::fs::remove_file(&console);
    let config = VmmConfig {
        memory_mib: 64,
        vcpus: 2,
        cmdline: "console=ttyS0 kvmkit.autorun=ticks:5".into(),
        serial: SerialConfig::File(console.clone()),
        api_socket: Some(sock.clone()),
        dirty_log: DirtyLogChoice::Bitmap,
        ..VmmConfig::default()
    };
    let vmm = Vmm::new(&config).expect("the VM builds");
    let tracker = vmm.dirty_tracker().expect("a dirty log");
    assert!(!tracker.backend().is_ring());
    assert!(vmm.memory().total_bytes() >= 64 << 20);
    assert!(format!("{vmm:?}").contains("ram_bytes"));
    let run = std::thread::spawn(move || vmm.run());
    console_line(&console, "tick: 1");

    let st = execute(&sock, "query-status", None).unwrap();
    assert_eq!(st["status"], "running");
    // The vCPU threads are this process's threads.
    let cpus = execute(&sock, "query-cpus-fast", None).unwrap();
    for (i, c) in cpus.as_array().unwrap().iter().enumerate() {
        let tid = c["thread-id"].as_i64().unwrap();
        let comm = std::fs::read_to_string(format!("/proc/self/task/{tid}/comm")).unwrap();
        assert_eq!(comm.trim(), format!("vcpu {i}"));
    }

    assert_eq!(execute(&sock, "stop", None).unwrap(), json!({}));
    assert_eq!(
        execute(&sock, "query-status", None).unwrap()["status"],
        "paused"
    );
    assert_eq!(execute(&sock, "stop", None).unwrap(), json!({}));
    assert_eq!(execute(&sock, "cont", None).unwrap(), json!({}));
    assert_eq!(
        execute(&sock, "query-status", None).unwrap()["running"],
        true
    );

    // KVM's dirty bitmaps, on for the measurement, off after.
    let r = execute(
        &sock,
        "calc-dirty-rate",
        args(json!({"calc-time": 200, "calc-time-unit": "millisecond", "mode": "dirty-bitmap"})),
    );
    assert_eq!(r.unwrap(), json!({}));
    let q = measured(&sock);
    assert_eq!(
        (q["mode"].clone(), q["sample-pages"].clone()),
        (json!("dirty-bitmap"), json!(0))
    );
    assert!(q["dirty-rate"].as_i64().unwrap() >= 0, "{q}");
    let err = execute(
        &sock,
        "calc-dirty-rate",
        args(json!({"calc-time": 1, "mode": "dirty-ring"})),
    )
    .unwrap_err();
    match err {
        Error::Command { class, desc } => {
            assert_eq!(class, "GenericError");
            assert_eq!(
                desc,
                "mode dirty-ring is not enabled, use other method instead."
            );
        }
        e => panic!("{e}"),
    }
    // Page sampling reads the same memory.
    let r = execute(
        &sock,
        "calc-dirty-rate",
        args(json!({"calc-time": 100, "calc-time-unit": "millisecond"})),
    );
    assert_eq!(r.unwrap(), json!({}));
    assert_eq!(measured(&sock)["mode"], "page-sampling");

    // The power button: the guest powers off, run() returns.
    assert_eq!(execute(&sock, "system_powerdown", None).unwrap(), json!({}));
    console_line(&console, "acpi: power button");
    let exit = run.join().expect("run() returns").expect("no set-up error");
    assert_eq!(exit, VmmExit::PowerOff);
    assert!(!sock.exists(), "the socket is removed");
    let _ = std::fs::remove_file(&console);
}

#[test]
fn kvm_quit_and_the_dirty_ring_in_this_process() {
    let Some(()) = kvm_or_skip!() else { return };
    let sock = scratch("ring-sock");
    let config = VmmConfig {
        memory_mib: 64,
        cmdline: "console=ttyS0 kvmkit.autorun=dirty:256".into(),
        serial: SerialConfig::None,
        api_socket: Some(sock.clone()),
        dirty_log: DirtyLogChoice::Ring,
        ..VmmConfig::default()
    };
    let vmm = match Vmm::new(&config) {
        Ok(v) => v,
        Err(e) => {
            // A kernel without the ring refuses it at set-up, as it should.
            let msg = e.to_string();
            assert!(msg.contains("RING"), "{msg}");
            println!("skipped the ring part: {msg}");
            return;
        }
    };
    assert!(vmm.dirty_tracker().unwrap().backend().is_ring());
    let run = std::thread::spawn(move || vmm.run());
    let deadline = Instant::now() + WAIT;
    while !sock.exists() {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(10));
    }
    let r = execute(
        &sock,
        "calc-dirty-rate",
        args(json!({"calc-time": 200, "calc-time-unit": "millisecond", "mode": "dirty-ring"})),
    );
    assert_eq!(r.unwrap(), json!({}));
    let q = measured(&sock);
    assert_eq!(q["mode"], "dirty-ring");
    assert!(q["dirty-rate"].as_i64().unwrap() >= 0, "{q}");
    let err = execute(
        &sock,
        "calc-dirty-rate",
        args(json!({"calc-time": 1, "mode": "dirty-bitmap"})),
    )
    .unwrap_err();
    assert!(
        err.to_string().contains("mode dirty-bitmap is not enabled"),
        "{err}"
    );
    assert_eq!(execute(&sock, "stop", None).unwrap(), json!({}));
    assert_eq!(execute(&sock, "quit", None).unwrap(), json!({}));
    let exit = run.join().expect("run() returns").expect("no set-up error");
    assert_eq!(exit, VmmExit::Quit);
}
