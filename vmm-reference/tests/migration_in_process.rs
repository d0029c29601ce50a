//! Snapshots and live migration between `Vmm`s run in this process (on
//! threads), driven over QMP by the library's one-shot client: the VMM's
//! side (state saving through the machine loop, the dirty log, the
//! destination's restore) runs where coverage is measured. The end-to-end
//! checks with separate processes, namespaces and damaged streams are in
//! `migration.rs`.

use kvmkit_test_support::kvm_or_skip;
use kvmkit_vmm_reference::qmp::execute;
use kvmkit_vmm_reference::{
    DiskConfig, Incoming, IrqchipChoice, SerialConfig, Vmm, VmmConfig, VmmExit,
};
use serde_json::{json, Map, Value};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(120);

fn scratch(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("kvmkit-mig-inproc-{name}-{}", std::process::id()))
}

fn args(v: Value) -> Option<Map<String, Value>> {
    v.as_object().cloned()
}

fn config(console: &Path, sock: &Path, cmdline: &str) -> VmmConfig {
    let _ = std::fs::remove_file(console);
    VmmConfig {
        memory_mib: 64,
        vcpus: 1,
        cmdline: cmdline.into(),
        serial: SerialConfig::File(console.to_path_buf()),
        api_socket: Some(sock.to_path_buf()),
        ..VmmConfig::default()
    }
}

/// The largest `dirty: counter N` the console shows.
fn last_counter(console: &Path) -> u64 {
    std::fs::read_to_string(console)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.strip_prefix("dirty: counter ")?.trim().parse().ok())
        .max()
        .unwrap_or(0)
}

/// Waits for a `dirty: counter N` line with N above `above`.
fn counter_above(console: &Path, above: u64) -> u64 {
    let deadline = Instant::now() + WAIT;
    loop {
        let c = last_counter(console);
        if c > above {
            return c;
        }
        assert!(Instant::now() < deadline, "counter stuck at {c}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn kvm_snapshot_restores_in_a_new_vmm_and_the_workload_continues() {
    let Some(()) = kvm_or_skip!() else { return };
    let (sock, console, dir) = (scratch("s-sock"), scratch("s-con"), scratch("s-dir"));
    let _ = std::fs::remove_dir_all(&dir);
    let vmm = Vmm::new(&config(
        &console,
        &sock,
        "console=ttyS0 kvmkit.autorun=dirty:64",
    ))
    .unwrap();
    let run = std::thread::spawn(move || vmm.run());
    let before = counter_above(&console, 0);

    // Bad requests first: errors, and the VM keeps running.
    let e = execute(&sock, "snapshot-save", None).unwrap_err();
    assert!(e.to_string().contains("Parameter 'path' is missing"), "{e}");
    let e = execute(
        &sock,
        "snapshot-save",
        args(json!({"path": "/proc/kvmkit-no-such-dir/snap"})),
    )
    .unwrap_err();
    assert!(e.to_string().contains("snapshot"), "{e}");
    assert_eq!(
        execute(&sock, "query-status", None).unwrap()["status"],
        "running"
    );

    let r = execute(
        &sock,
        "snapshot-save",
        args(json!({"path": dir.to_str().unwrap()})),
    )
    .unwrap();
    assert!(r["data-pages"].as_u64().unwrap() > 64, "{r}");
    assert!(r["zero-pages"].as_u64().unwrap() > 0, "{r}");
    // It was running, so it runs on after the snapshot.
    assert_eq!(
        execute(&sock, "query-status", None).unwrap()["status"],
        "running"
    );
    execute(&sock, "quit", None).unwrap();
    assert_eq!(run.join().unwrap().unwrap(), VmmExit::Quit);
    let saved = last_counter(&console);
    assert!(saved >= before);

    // A new VMM restores it: the counter goes on from where it was, well
    // past what the first VM printed.
    let (sock2, console2) = (scratch("r-sock"), scratch("r-con"));
    let mut cfg = config(&console2, &sock2, "console=ttyS0");
    cfg.restore = Some(dir.clone());
    let vmm = Vmm::new(&cfg).unwrap();
    let run = std::thread::spawn(move || vmm.run());
    let after = counter_above(&console2, saved);
    assert!(after > saved);
    execute(&sock2, "quit", None).unwrap();
    assert_eq!(run.join().unwrap().unwrap(), VmmExit::Quit);

    // Or a VMM waiting with `--incoming defer` loads it over QMP.
    let mut cfg = config(&console2, &sock2, "console=ttyS0");
    cfg.incoming = Some(Incoming::Defer);
    let vmm = Vmm::new(&cfg).unwrap();
    let run = std::thread::spawn(move || vmm.run());
    let deadline = Instant::now() + WAIT;
    while execute(&sock2, "query-status", None).is_err() {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(10));
    }
    let e = execute(
        &sock2,
        "snapshot-load",
        args(json!({"path": dir.to_str().unwrap(), "tag": "x"})),
    )
    .unwrap_err();
    assert!(
        e.to_string().contains("Parameter 'tag' is unexpected"),
        "{e}"
    );
    execute(
        &sock2,
        "snapshot-load",
        args(json!({"path": dir.to_str().unwrap()})),
    )
    .unwrap();
    let after = counter_above(&console2, saved);
    assert!(after > saved);
    execute(&sock2, "quit", None).unwrap();
    assert_eq!(run.join().unwrap().unwrap(), VmmExit::Quit);

    // The same snapshot with another memory size is refused before running.
    let mut cfg = config(&console2, &sock2, "console=ttyS0");
    cfg.restore = Some(dir.clone());
    cfg.memory_mib = 128;
    let e = Vmm::new(&cfg).unwrap_err().to_string();
    assert!(e.contains("--memory"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn kvm_live_migration_between_two_vmms_in_this_process() {
    let Some(()) = kvm_or_skip!() else { return };
    let (ssock, scon) = (scratch("src-sock"), scratch("src-con"));
    let (dsock, dcon) = (scratch("dst-sock"), scratch("dst-con"));
    let mig = scratch("mig");
    let _ = std::fs::remove_file(&mig);

    let src = Vmm::new(&config(
        &scon,
        &ssock,
        "console=ttyS0 kvmkit.autorun=dirty:128",
    ))
    .unwrap();
    let src_run = std::thread::spawn(move || src.run());
    counter_above(&scon, 0);

    let mut dcfg = config(&dcon, &dsock, "console=ttyS0");
    dcfg.incoming = Some(Incoming::Defer);
    let dst = Vmm::new(&dcfg).unwrap();
    let dst_run = std::thread::spawn(move || dst.run());
    // The destination waits, and says so.
    let deadline = Instant::now() + WAIT;
    let st = loop {
        if let Ok(st) = execute(&dsock, "query-status", None) {
            break st;
        }
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(10));
    };
    assert_eq!(st["status"], "inmigrate");
    let e = execute(&dsock, "cont", None).unwrap_err();
    assert!(e.to_string().contains("incoming migration"), "{e}");
    let uri = format!("unix:{}", mig.display());
    execute(&dsock, "migrate-incoming", args(json!({ "uri": uri }))).unwrap();
    let e = execute(&dsock, "migrate-incoming", args(json!({ "uri": uri }))).unwrap_err();
    assert!(e.to_string().contains("already been started"), "{e}");

    // Bad requests on the source change nothing.
    let e = execute(&ssock, "migrate", args(json!({"uri": "exec:cat"}))).unwrap_err();
    assert!(
        e.to_string().contains("not a supported migration URI"),
        "{e}"
    );
    let e = execute(&ssock, "migrate-incoming", args(json!({"uri": uri}))).unwrap_err();
    assert!(e.to_string().contains("-incoming"), "{e}");
    assert_eq!(execute(&ssock, "query-migrate", None).unwrap(), json!({}));

    let deadline = Instant::now() + WAIT;
    while !mig.exists() {
        assert!(Instant::now() < deadline, "the destination never listened");
        std::thread::sleep(Duration::from_millis(5));
    }
    execute(&ssock, "migrate", args(json!({ "uri": uri }))).unwrap();
    // The source ends by itself once the destination has the guest.
    assert_eq!(src_run.join().unwrap().unwrap(), VmmExit::Migrated);
    let at_source = last_counter(&scon);
    let after = counter_above(&dcon, at_source.max(1));
    assert!(after > at_source);
    assert_eq!(
        execute(&dsock, "query-status", None).unwrap()["status"],
        "running"
    );
    execute(&dsock, "quit", None).unwrap();
    assert_eq!(dst_run.join().unwrap().unwrap(), VmmExit::Quit);
}

#[test]
fn kvm_failed_migration_leaves_the_source_running() {
    let Some(()) = kvm_or_skip!() else { return };
    let (sock, con) = (scratch("f-sock"), scratch("f-con"));
    let vmm = Vmm::new(&config(
        &con,
        &sock,
        "console=ttyS0 kvmkit.autorun=dirty:64",
    ))
    .unwrap();
    let run = std::thread::spawn(move || vmm.run());
    let before = counter_above(&con, 0);
    // Nobody listens there.
    let uri = format!("unix:{}", scratch("nobody").display());
    execute(&sock, "migrate", args(json!({ "uri": uri }))).unwrap();
    let deadline = Instant::now() + WAIT;
    let info = loop {
        let i = execute(&sock, "query-migrate", None).unwrap();
        if i["status"] == "failed" {
            break i;
        }
        assert!(Instant::now() < deadline, "{i}");
        std::thread::sleep(Duration::from_millis(10));
    };
    assert!(
        info["error-desc"].as_str().unwrap().contains("connect"),
        "{info}"
    );
    migrate_cancel_is_harmless(&sock);
    assert_eq!(
        execute(&sock, "query-status", None).unwrap()["status"],
        "running"
    );
    counter_above(&con, before);
    execute(&sock, "quit", None).unwrap();
    assert_eq!(run.join().unwrap().unwrap(), VmmExit::Quit);
}

fn migrate_cancel_is_harmless(sock: &Path) {
    execute(sock, "migrate_cancel", None).unwrap();
    assert_eq!(
        execute(sock, "query-migrate", None).unwrap()["status"],
        "failed"
    );
}

#[test]
fn kvm_split_irqchip_snapshot_restores_its_ioapic() {
    let Some(()) = kvm_or_skip!() else { return };
    let (sock, con, dir) = (scratch("sp-sock"), scratch("sp-con"), scratch("sp-dir"));
    let _ = std::fs::remove_dir_all(&dir);
    let mut cfg = config(&con, &sock, "console=ttyS0 kvmkit.autorun=dirty:32");
    cfg.irqchip = IrqchipChoice::Split;
    let vmm = Vmm::new(&cfg).unwrap();
    let run = std::thread::spawn(move || vmm.run());
    counter_above(&con, 0);
    execute(&sock, "stop", None).unwrap();
    execute(
        &sock,
        "snapshot-save",
        args(json!({"path": dir.to_str().unwrap()})),
    )
    .unwrap();
    // Paused before, paused after.
    assert_eq!(
        execute(&sock, "query-status", None).unwrap()["status"],
        "paused"
    );
    execute(&sock, "quit", None).unwrap();
    run.join().unwrap().unwrap();
    let saved = last_counter(&con);

    // Another vCPU count or irqchip is refused, naming the flags to use.
    let mut bad = config(&con, &sock, "console=ttyS0");
    bad.restore = Some(dir.clone());
    bad.vcpus = 2;
    let e = Vmm::new(&bad).unwrap_err().to_string();
    assert!(e.contains("--vcpus"), "{e}");
    bad.vcpus = 1;
    let e = Vmm::new(&bad).unwrap_err().to_string();
    assert!(e.contains("irqchip split"), "{e}");

    cfg.restore = Some(dir.clone());
    cfg.cmdline = "console=ttyS0".into();
    let vmm = Vmm::new(&config_like(&cfg, &con)).unwrap();
    let run = std::thread::spawn(move || vmm.run());
    // The workload goes on through the restored IOAPIC's timer interrupts.
    counter_above(&con, saved);
    execute(&sock, "quit", None).unwrap();
    assert_eq!(run.join().unwrap().unwrap(), VmmExit::Quit);
    let _ = std::fs::remove_dir_all(&dir);
}

/// `cfg` with a fresh console file.
fn config_like(cfg: &VmmConfig, console: &Path) -> VmmConfig {
    let _ = std::fs::remove_file(console);
    cfg.clone()
}

#[test]
fn kvm_virtio_devices_refuse_snapshots_and_migration() {
    let Some(()) = kvm_or_skip!() else { return };
    let (sock, con) = (scratch("v-sock"), scratch("v-con"));
    let disk = scratch("v-disk");
    std::fs::write(&disk, vec![0u8; 1 << 20]).unwrap();
    let mut cfg = config(&con, &sock, "console=ttyS0");
    cfg.disks = vec![DiskConfig {
        path: disk.clone(),
        readonly: false,
    }];
    let vmm = Vmm::new(&cfg).unwrap();
    let run = std::thread::spawn(move || vmm.run());
    let deadline = Instant::now() + WAIT;
    while execute(&sock, "query-status", None).is_err() {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(10));
    }
    let dir = scratch("v-dir");
    let e = execute(
        &sock,
        "snapshot-save",
        args(json!({"path": dir.to_str().unwrap()})),
    )
    .unwrap_err();
    assert!(e.to_string().contains("virtio"), "{e}");
    let e = execute(&sock, "migrate", args(json!({"uri": "tcp:127.0.0.1:1"}))).unwrap_err();
    assert!(e.to_string().contains("virtio"), "{e}");
    assert_eq!(
        execute(&sock, "query-status", None).unwrap()["status"],
        "running"
    );
    execute(&sock, "quit", None).unwrap();
    run.join().unwrap().unwrap();
    let _ = std::fs::remove_file(&disk);
}

#[test]
fn kvm_migration_over_tcp_to_a_stalled_destination_is_watched_and_cancelled() {
    let Some(()) = kvm_or_skip!() else { return };
    let (ssock, scon) = (scratch("t-src-sock"), scratch("t-src-con"));

    // An idle guest: this test is about the transport and the controls;
    // the workload's continuity is checked over a Unix socket above.
    let mut scfg = config(&scon, &ssock, "console=ttyS0");
    scfg.memory_mib = 1024;
    let src = Vmm::new(&scfg).unwrap();
    let src_run = std::thread::spawn(move || src.run());
    let deadline = Instant::now() + WAIT;
    while execute(&ssock, "query-status", None).is_err() {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(10));
    }

    // First a migration to a destination that never reads: it blocks until
    // cancelled, and the source runs on.
    let stuck = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let stuck_uri = format!("tcp:{}", stuck.local_addr().unwrap());
    let holder = std::thread::spawn(move || stuck.accept().map(|(c, _)| c));
    execute(&ssock, "migrate", args(json!({ "uri": stuck_uri }))).unwrap();
    let held = holder.join().unwrap().unwrap();
    let deadline = Instant::now() + WAIT;
    while execute(&ssock, "query-migrate", None).unwrap()["status"] != "active" {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(5));
    }
    // While it is stuck: one migration at a time, no snapshot meanwhile, and
    // its figures can be watched.
    let e = execute(&ssock, "migrate", args(json!({ "uri": stuck_uri }))).unwrap_err();
    assert!(e.to_string().contains("in progress"), "{e}");
    let e = execute(&ssock, "snapshot-save", args(json!({"path": "/tmp/x"}))).unwrap_err();
    assert!(e.to_string().contains("in progress"), "{e}");
    let info = execute(&ssock, "query-migrate", None).unwrap();
    assert_eq!(info["status"], "active", "{info}");
    assert_eq!(info["ram"]["total"], 1024u64 << 20);
    execute(&ssock, "migrate_cancel", None).unwrap();
    let info = loop {
        let i = execute(&ssock, "query-migrate", None).unwrap();
        if i["status"] == "cancelled" {
            break i;
        }
        assert!(Instant::now() < deadline, "{i}");
        std::thread::sleep(Duration::from_millis(5));
    };
    assert!(info["ram"]["transferred"].as_u64().unwrap() > 0, "{info}");
    drop(held);
    assert_eq!(
        execute(&ssock, "query-status", None).unwrap()["status"],
        "running"
    );

    // The source runs on; it ends as asked.
    execute(&ssock, "quit", None).unwrap();
    assert_eq!(src_run.join().unwrap().unwrap(), VmmExit::Quit);
}
