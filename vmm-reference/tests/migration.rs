//! Snapshots and live migration of the reference VMM, end to end: every VMM
//! is its own process running the test guest, driven over QMP; migrations go
//! over TCP on loopback, over Unix sockets, between two network namespaces,
//! and through relays in this process that record, hold or cut the stream.
//!
//! The guest's `dirty N` workload is what proves that memory and CPU state
//! arrived together: it increments a counter and writes it into N pages,
//! and on a key it checks every page against the counter (`dirty: verify
//! ok`). Across a snapshot or a migration the counter must go on from where
//! it was (never restart, never go back), and the pages must still match.

mod common;

use common::{Vmm, BIN, BOOT_WAIT};
use kvmkit_migration::{FrameReader, FrameWriter, Tag};
use kvmkit_test_guest::{BANNER, DIRTY_COUNTER_ADDR, PROMPT};
use kvmkit_test_support::kvm_or_skip;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Guest RAM of the small guests, in MiB.
const MIB: u64 = 64;

/// A directory for one test's sockets and snapshots, removed at the end
/// (also when the test fails).
struct Scratch(PathBuf);

impl Scratch {
    fn new(test: &str) -> Scratch {
        let p = std::env::temp_dir().join(format!("kvmkit-mig-{test}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("create the scratch directory");
        Scratch(p)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    fn str(&self, name: &str) -> String {
        self.path(name)
            .to_str()
            .expect("UTF-8 temp dir")
            .to_string()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A raw QMP connection that keeps the events it reads.
struct Qmp {
    r: BufReader<UnixStream>,
    w: UnixStream,
    events: Vec<Value>,
}

impl Qmp {
    /// Connects (retrying until the VMM has bound its socket) and negotiates.
    fn open(path: &Path) -> Qmp {
        let deadline = Instant::now() + BOOT_WAIT;
        let w = loop {
            match UnixStream::connect(path) {
                Ok(s) => break s,
                Err(e) => {
                    assert!(Instant::now() < deadline, "connect {}: {e}", path.display());
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
        };
        w.set_read_timeout(Some(BOOT_WAIT)).expect("timeout");
        let mut q = Qmp {
            r: BufReader::new(w.try_clone().expect("clone")),
            w,
            events: Vec::new(),
        };
        let greeting = q.read().expect("a greeting");
        assert!(greeting["QMP"].is_object(), "{greeting}");
        assert_eq!(q.call("qmp_capabilities", None), json!({"return": {}}));
        q
    }

    /// The next message, or None when the VMM closed the connection.
    fn read(&mut self) -> Option<Value> {
        let mut line = String::new();
        match self.r.read_line(&mut line) {
            Ok(0) | Err(_) => None,
            Ok(_) => Some(serde_json::from_str(&line).expect("JSON from the VMM")),
        }
    }

    /// Runs a command; returns the whole reply (events met are kept).
    fn call(&mut self, cmd: &str, args: Option<Value>) -> Value {
        let mut req = json!({ "execute": cmd });
        if let Some(a) = args {
            req["arguments"] = a;
        }
        let mut b = req.to_string().into_bytes();
        b.extend_from_slice(b"\r\n");
        self.w.write_all(&b).expect("write to the QMP socket");
        loop {
            let m = self
                .read()
                .unwrap_or_else(|| panic!("{cmd}: the VMM closed QMP"));
            if m.get("event").is_some() {
                self.events.push(m);
            } else {
                return m;
            }
        }
    }

    /// Runs a command that must succeed; returns its `return`.
    fn ok(&mut self, cmd: &str, args: Option<Value>) -> Value {
        let r = self.call(cmd, args.clone());
        assert!(r.get("return").is_some(), "{cmd} {args:?}: {r}");
        r["return"].clone()
    }

    /// Runs a command that must fail with a GenericError; returns its desc.
    fn generic_error(&mut self, cmd: &str, args: Option<Value>) -> String {
        let r = self.call(cmd, args.clone());
        assert_eq!(r["error"]["class"], "GenericError", "{cmd} {args:?}: {r}");
        r["error"]["desc"]
            .as_str()
            .expect("a description")
            .to_string()
    }

    fn status(&mut self) -> String {
        self.ok("query-status", None)["status"]
            .as_str()
            .expect("a status")
            .to_string()
    }

    /// The statuses of the MIGRATION events until one ends the migration
    /// (completed, failed, cancelled); events of other kinds are kept.
    fn migration_events(&mut self) -> Vec<String> {
        let mut seen = Vec::new();
        let mut kept = Vec::new();
        let mut pending = std::mem::take(&mut self.events).into_iter();
        loop {
            let e = match pending.next() {
                Some(e) => e,
                None => self
                    .read()
                    .unwrap_or_else(|| panic!("closed after MIGRATION {seen:?}")),
            };
            if e["event"] != "MIGRATION" {
                kept.push(e);
                continue;
            }
            let s = e["data"]["status"].as_str().expect("a status").to_string();
            let end = matches!(s.as_str(), "completed" | "failed" | "cancelled");
            seen.push(s);
            if end {
                kept.extend(pending);
                self.events = kept;
                return seen;
            }
        }
    }

    /// Polls `query-migrate` until `done` holds; returns that reply.
    fn wait_migrate(&mut self, what: &str, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + BOOT_WAIT;
        loop {
            let info = self.ok("query-migrate", None);
            if done(&info) {
                return info;
            }
            assert!(Instant::now() < deadline, "never {what}: {info}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// True once the VMM closed the connection (events before are kept).
    fn closed(&mut self) -> bool {
        while let Some(m) = self.read() {
            self.events.push(m);
        }
        true
    }
}

/// A source VMM: the test guest with `autorun` (e.g. `dirty:256`) and a
/// QMP socket; returns it once the guest printed `ready`.
fn source(dir: &Scratch, name: &str, extra: &[&str], autorun: &str, ready: &str) -> (Vmm, PathBuf) {
    let qmp = dir.path(&format!("{name}.qmp"));
    let cmdline = format!("console=ttyS0 kvmkit.autorun={autorun}");
    let mem = MIB.to_string();
    let mut args = vec![
        "--memory",
        &mem,
        "--cmdline",
        &cmdline,
        "--api-socket",
        qmp.to_str().expect("UTF-8"),
    ];
    args.extend_from_slice(extra);
    let mut vm = Vmm::spawn(&args);
    vm.expect(ready);
    (vm, qmp)
}

/// A destination VMM waiting with `--incoming uri`, run by `program`
/// (`["ip", "netns", "exec", NS]` or nothing); returns it and the URI it
/// listens on (with the port the system chose for `tcp:HOST:0`).
fn destination(wrapper: &[&str], uri: &str, extra: &[&str]) -> (Vmm, String) {
    let mem = MIB.to_string();
    let mut args: Vec<&str> = wrapper.iter().skip(1).copied().collect();
    if !wrapper.is_empty() {
        args.push(BIN);
    }
    if !extra.contains(&"--memory") {
        args.extend_from_slice(&["--memory", &mem]);
    }
    args.extend_from_slice(&["--incoming", uri]);
    args.extend_from_slice(extra);
    let mut vm = match wrapper.first() {
        Some(program) => Vmm::spawn_program(program, &args),
        None => Vmm::spawn(&args),
    };
    let line = vm.expect_stderr("waiting for the incoming migration on ");
    let at = line
        .split_once(" on ")
        .map(|(_, u)| u.trim().to_string())
        .expect("a URI");
    (vm, at)
}

/// What the destination says once it has the guest.
#[derive(Debug)]
struct Received {
    pages: u64,
    bytes: u64,
    rounds: u64,
}

fn received(vm: &mut Vmm) -> Received {
    let line = vm.expect_stderr("vmm-reference: migration received: ");
    let nums: Vec<u64> = line
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|w| w.parse().ok())
        .collect();
    assert!(
        line.contains(" pages, ") && line.contains("; downtime "),
        "{line}"
    );
    Received {
        pages: nums[0],
        bytes: nums[1],
        rounds: nums[2],
    }
}

/// The counter of a `dirty: counter N` line.
fn counter(line: &str) -> Option<u64> {
    line.trim().strip_prefix("dirty: counter ")?.parse().ok()
}

/// The largest counter the guest printed so far.
fn last_counter(vm: &Vmm) -> u64 {
    vm.seen.iter().filter_map(|l| counter(l)).max().unwrap_or(0)
}

/// Waits until the guest prints a `dirty: counter N` line with N above
/// `above` (it prints powers of two).
fn wait_counter_above(vm: &mut Vmm, above: u64) -> u64 {
    loop {
        if let Some(c) = counter(&vm.expect("dirty: counter ")) {
            if c > above {
                return c;
            }
        }
    }
}

/// Stops the `dirty` workload with a key; checks that every page matched
/// the counter; returns the counter.
fn stop_dirty(vm: &mut Vmm, pages: u64) -> u64 {
    vm.send("x");
    let line = vm.expect("dirty: stopped, counter ");
    let c = line
        .trim()
        .strip_prefix("dirty: stopped, counter ")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{line}"));
    let verify = vm.expect("dirty: verify");
    assert_eq!(verify.trim(), format!("dirty: verify ok, {pages} pages"));
    c
}

/// Powers the guest off from its shell; the VMM must exit 0.
fn poweroff(mut vm: Vmm) -> Vec<String> {
    vm.send("\rpoweroff\r");
    let (status, stderr, seen) = vm.wait();
    assert_eq!(status.code(), Some(0), "{stderr}");
    seen
}

/// Reads the u64 at `gpa` from a snapshot's memory file.
fn snapshot_u64(dir: &Path, gpa: u64) -> u64 {
    let snap = kvmkit_migration::load_snapshot(dir).expect("a snapshot");
    let r = snap
        .layout
        .iter()
        .find(|r| r.gpa <= gpa && gpa < r.gpa + r.len)
        .expect("RAM at the address");
    let f = std::fs::File::open(&snap.memory).expect("the memory file");
    let mut b = [0u8; 8];
    std::os::unix::fs::FileExt::read_exact_at(&f, &mut b, r.file_offset + gpa - r.gpa)
        .expect("read the memory file");
    u64::from_le_bytes(b)
}

/// The frames of a stream or state file.
fn frames(bytes: &[u8]) -> Vec<kvmkit_migration::Frame> {
    let mut r = FrameReader::new(bytes).expect("a stream");
    let mut out = Vec::new();
    while r.bytes_read() < bytes.len() as u64 {
        out.push(r.next_frame().expect("a frame"));
    }
    out
}

/// The u64 at `gpa` in the last PAGES frame of `stream` that covers it.
fn last_sent_u64(stream: &[u8], gpa: u64) -> u64 {
    let mut found = None;
    for f in frames(stream) {
        if f.tag != Tag::Pages {
            continue;
        }
        let at = u64::from_le_bytes(f.payload[..8].try_into().expect("8 bytes"));
        let data = &f.payload[8..];
        if (at..at + data.len() as u64).contains(&gpa) {
            let o = usize::try_from(gpa - at).expect("small");
            found = Some(u64::from_le_bytes(data[o..o + 8].try_into().expect("8")));
        }
    }
    found.expect("the page was sent")
}

/// A relay between a migration source and destination over Unix sockets,
/// in this process: it records what the source sends, and can hold the
/// stream after some bytes until told to go on, or cut it.
struct Relay {
    thread: JoinHandle<Vec<u8>>,
}

#[derive(Default)]
struct RelayPlan {
    /// Forward this many bytes, then wait for the receiver before going on.
    hold: Option<(usize, Receiver<()>)>,
    /// Forward this many bytes, then close both connections.
    cut: Option<usize>,
}

impl Relay {
    fn start(listen: &Path, target: PathBuf, plan: RelayPlan) -> Relay {
        let l = UnixListener::bind(listen).expect("bind the relay");
        let thread = std::thread::spawn(move || {
            let (src, _) = l.accept().expect("the source connects");
            let dst = UnixStream::connect(&target).expect("connect to the destination");
            // The destination's answer goes back as it comes.
            let (mut back_from, mut back_to) = (dst.try_clone().unwrap(), src.try_clone().unwrap());
            let back = std::thread::spawn(move || {
                let _ = std::io::copy(&mut back_from, &mut back_to);
                let _ = back_to.shutdown(std::net::Shutdown::Write);
            });
            let mut recorded = Vec::new();
            let mut buf = vec![0u8; 64 << 10];
            let mut hold = plan.hold;
            let (mut src_r, mut dst_w) = (&src, &dst);
            loop {
                let mut want = buf.len();
                if let Some((at, _)) = &hold {
                    want = want.min(at - recorded.len());
                }
                if let Some(at) = plan.cut {
                    want = want.min(at - recorded.len());
                }
                if want == 0 {
                    if let Some((_, go)) = hold.take() {
                        // A test that failed meanwhile dropped its sender.
                        if go.recv().is_err() {
                            break;
                        }
                        continue;
                    }
                    // Cut: both sides see the connection end.
                    let _ = src.shutdown(std::net::Shutdown::Both);
                    let _ = dst.shutdown(std::net::Shutdown::Both);
                    break;
                }
                let n = match src_r.read(&mut buf[..want]) {
                    Ok(0) | Err(_) => {
                        let _ = dst.shutdown(std::net::Shutdown::Write);
                        break;
                    }
                    Ok(n) => n,
                };
                if dst_w.write_all(&buf[..n]).is_err() {
                    break;
                }
                recorded.extend_from_slice(&buf[..n]);
            }
            let _ = back.join();
            recorded
        });
        Relay { thread }
    }

    /// Waits for the relay to end; returns what the source sent.
    fn recorded(self) -> Vec<u8> {
        self.thread.join().expect("the relay")
    }
}

#[test]
fn kvm_snapshot_restores_in_a_new_process_and_the_count_continues() {
    let Some(()) = kvm_or_skip!() else { return };
    let dir = Scratch::new("snapdirty");
    let snap = dir.path("snap");
    let (src, qmp) = source(&dir, "src", &[], "dirty:256", "dirty: counter 65536");
    let mut q = Qmp::open(&qmp);
    let r = q.ok("snapshot-save", Some(json!({ "path": snap })));
    // 256 workload pages and the guest's own: data; the rest of 64 MiB zero.
    let data = r["data-pages"].as_u64().expect("data-pages");
    let zero = r["zero-pages"].as_u64().expect("zero-pages");
    assert!(data >= 256, "{r}");
    assert_eq!(data + zero, MIB << 8, "every page of RAM: {r}");
    assert!(r["paused-ms"].as_f64().is_some(), "{r}");
    // Paused for the save, then running again.
    let kinds: Vec<&str> = q
        .events
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["STOP", "RESUME"], "{:?}", q.events);
    assert_eq!(q.status(), "running");
    // The memory file is sparse: zero pages are holes.
    let meta = std::fs::metadata(snap.join("memory")).expect("memory file");
    assert_eq!(meta.len(), MIB << 20);
    use std::os::unix::fs::MetadataExt;
    assert!(
        meta.blocks() * 512 < meta.len() / 4,
        "{} blocks",
        meta.blocks()
    );
    // The counter at the moment of the save, from the saved memory.
    let saved = snapshot_u64(&snap, DIRTY_COUNTER_ADDR);
    assert!(saved >= 65536, "{saved}");
    // The source goes on, then quits.
    q.ok("quit", None);
    let (status, stderr, _) = src.wait();
    assert_eq!(status.code(), Some(0), "{stderr}");

    // A new process restores it: no boot, the workload continues.
    let mem = MIB.to_string();
    let rqmp = dir.str("restored.qmp");
    let mut restored = Vmm::spawn(&[
        "--memory",
        &mem,
        "--restore",
        snap.to_str().unwrap(),
        "--api-socket",
        &rqmp,
    ]);
    let line = restored.expect_stderr("vmm-reference: restored the snapshot in ");
    assert!(line.contains(" ms since start of restore)"), "{line}");
    let mut rq = Qmp::open(Path::new(&rqmp));
    assert_eq!(rq.status(), "running");
    wait_counter_above(&mut restored, saved);
    let stopped = stop_dirty(&mut restored, 256);
    assert!(
        stopped > saved,
        "the count went on: {stopped} after {saved}"
    );
    // It never went back: every count the restored guest printed is newer.
    let after: Vec<u64> = restored.seen.iter().filter_map(|l| counter(l)).collect();
    assert!(after.iter().all(|&c| c > saved), "{after:?} after {saved}");
    assert!(
        !restored.seen.iter().any(|l| l.contains(BANNER)),
        "no boot: {:?}",
        restored.seen
    );
    restored.send("count\r");
    assert_eq!(
        restored.expect("count: ").trim(),
        format!("count: {stopped}")
    );
    poweroff(restored);
}

#[test]
fn kvm_snapshot_of_an_idle_guest_restores_to_its_prompt() {
    let Some(()) = kvm_or_skip!() else { return };
    let dir = Scratch::new("snapidle");
    let snap = dir.path("snap");
    let (mut src, qmp) = source(&dir, "src", &["--vcpus", "2"], "cpus", "cpus: 2 online");
    src.expect(PROMPT);
    src.send("poke 0x2000000 0x1234abcd\r");
    src.expect("0x0000000002000000: 0x000000001234abcd");
    src.expect(PROMPT);
    let mut q = Qmp::open(&qmp);
    q.ok("snapshot-save", Some(json!({ "path": snap })));
    q.ok("quit", None);
    let (status, stderr, _) = src.wait();
    assert_eq!(status.code(), Some(0), "{stderr}");

    let mem = MIB.to_string();
    let mut restored = Vmm::spawn(&[
        "--memory",
        &mem,
        "--vcpus",
        "2",
        "--restore",
        snap.to_str().unwrap(),
    ]);
    restored.expect_stderr("restored the snapshot in ");
    // The shell answers where it was; its memory and command line are the
    // saved guest's (the restoring VMM was given the default command line).
    restored.send("peek 0x2000000\r");
    restored.expect("0x0000000002000000: 0x000000001234abcd");
    restored.send("cmdline\r");
    assert_eq!(
        restored.expect("cmdline: ").trim(),
        "cmdline: console=ttyS0 kvmkit.autorun=cpus"
    );
    restored.send("cpus\r");
    restored.expect("cpus: 2 online");
    let seen = poweroff(restored);
    assert!(!seen.iter().any(|l| l.contains(BANNER)), "{seen:?}");
}

#[test]
fn kvm_live_migration_over_tcp_on_loopback() {
    let Some(()) = kvm_or_skip!() else { return };
    let dir = Scratch::new("tcp");
    // Port 0: the destination says which port it got.
    let dqmp = dir.path("dst.qmp");
    let (mut dst, at) = destination(
        &[],
        "tcp:127.0.0.1:0",
        &["--api-socket", dqmp.to_str().unwrap()],
    );
    assert!(
        at.starts_with("tcp:127.0.0.1:") && !at.ends_with(":0"),
        "{at}"
    );
    let mut dq = Qmp::open(&dqmp);
    assert_eq!(dq.status(), "inmigrate");
    let (src, qmp) = source(&dir, "src", &[], "dirty:256", "dirty: counter 65536");
    let mut q = Qmp::open(&qmp);
    assert_eq!(q.ok("query-migrate", None), json!({}), "no migration yet");
    assert_eq!(q.ok("migrate", Some(json!({ "uri": at }))), json!({}));
    assert_eq!(q.migration_events(), ["setup", "active", "completed"]);
    // The source ends by itself; its last count is from before the pause.
    assert!(q.closed());
    let (status, stderr, src_seen) = src.wait();
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert!(!stderr.contains("migration failed"), "{stderr}");
    let before = src_seen.iter().filter_map(|l| counter(l)).max().unwrap();

    let got = received(&mut dst);
    assert!(got.pages >= MIB << 8, "every page at least once: {got:?}");
    assert!(got.rounds >= 1 && got.bytes > 0, "{got:?}");
    assert_eq!(dq.status(), "running");
    // The guest goes on: the count continues, every page checks out.
    let after = stop_dirty(&mut dst, 256);
    assert!(after > before, "{after} after {before}");
    assert!(!dst.seen.iter().any(|l| l.contains(BANNER)));
    poweroff(dst);
}

#[test]
fn kvm_live_migration_over_unix_sockets_with_the_progress_client() {
    let Some(()) = kvm_or_skip!() else { return };
    let dir = Scratch::new("unix");
    let (mut dst, at) = destination(&[], &format!("unix:{}", dir.str("dst.sock")), &[]);
    assert_eq!(at, format!("unix:{}", dir.str("dst.sock")));
    // 1024 workload pages: the first round carries 4 MiB of data, more
    // than the relay's 256 KiB, the socket buffers and the source's 1 MiB
    // write buffer hold, so it cannot end while the relay holds.
    let (src, qmp) = source(&dir, "src", &[], "dirty:1024", "dirty: counter 65536");
    // The relay holds the stream after 256 KiB until the test has seen the
    // migration under way, and records it.
    let (go, hold) = channel();
    let relay = Relay::start(
        &dir.path("relay.sock"),
        dir.path("dst.sock"),
        RelayPlan {
            hold: Some((256 << 10, hold)),
            cut: None,
        },
    );
    let mut q = Qmp::open(&qmp);
    // The one-shot client starts the migration and watches it.
    let mut client = Command::new(BIN)
        .arg("qmp")
        .arg(&qmp)
        .arg("migrate")
        .arg(json!({ "uri": format!("unix:{}", dir.str("relay.sock")) }).to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run the client");
    let (ltx, client_lines) = channel();
    let err = client.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut all = Vec::new();
        for l in BufReader::new(err).lines().map_while(Result::ok) {
            let _ = ltx.send(l.clone());
            all.push(l);
        }
        all
    });
    // While the relay holds: figures of a migration under way.
    let info = q.wait_migrate("active with bytes sent", |i| {
        i["status"] == "active" && i["ram"]["transferred"].as_u64() > Some(0)
    });
    let ram = &info["ram"];
    assert_eq!(ram["total"], MIB << 20, "{info}");
    assert_eq!(ram["page-size"], 4096, "{info}");
    assert_eq!(ram["dirty-sync-count"], 0, "the first round: {info}");
    let remaining = ram["remaining"].as_u64().unwrap();
    assert!(remaining > 0 && remaining <= MIB << 20, "{info}");
    let pages = ram["normal"].as_u64().unwrap() + ram["duplicate"].as_u64().unwrap();
    assert!(pages < MIB << 8, "not all of RAM yet: {info}");
    assert!(info["setup-time"].as_u64().is_some(), "{info}");
    assert!(info.get("error-desc").is_none(), "{info}");
    assert_eq!(q.status(), "running", "pre-copy: the guest runs");
    // ... and the client shows them too.
    let deadline = Instant::now() + BOOT_WAIT;
    let mut shown = Vec::new();
    loop {
        let l = client_lines
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .unwrap_or_else(|e| panic!("no active line from the client ({e}): {shown:?}"));
        shown.push(l.clone());
        if l.starts_with("migrate: active, round 0, ") {
            assert!(
                l.contains(" MiB sent, ") && l.contains("% of 64.0 MiB RAM covered"),
                "{l}"
            );
            break;
        }
    }
    go.send(()).expect("the relay waits");

    let status = client.wait().expect("the client ends");
    let mut out = String::new();
    client
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    let lines = reader.join().unwrap();
    assert_eq!(status.code(), Some(0), "{lines:?}");
    assert_eq!(out.trim(), "{}");
    let last = lines.last().expect("a summary");
    assert!(last.starts_with("migrate: completed, "), "{lines:?}");
    assert_eq!(q.migration_events(), ["setup", "active", "completed"]);
    let (status, stderr, src_seen) = src.wait();
    assert_eq!(status.code(), Some(0), "{stderr}");

    // Every byte the source sent reached the destination, which read them
    // all; the counter at the pause is in the last copy of its page.
    let stream = relay.recorded();
    let got = received(&mut dst);
    assert_eq!(got.bytes, stream.len() as u64, "{got:?}");
    let paused_at = last_sent_u64(&stream, DIRTY_COUNTER_ADDR);
    assert!(src_seen
        .iter()
        .filter_map(|l| counter(l))
        .all(|c| c <= paused_at));
    wait_counter_above(&mut dst, paused_at);
    let after = stop_dirty(&mut dst, 1024);
    assert!(after > paused_at, "{after} after {paused_at}");
    let printed: Vec<u64> = dst.seen.iter().filter_map(|l| counter(l)).collect();
    assert!(printed.iter().all(|&c| c > paused_at), "{printed:?}");
    poweroff(dst);
}

/// Two network namespaces joined by a veth pair, deleted on drop.
struct Netns {
    names: [String; 2],
}

impl Netns {
    /// Runs `ip ARGS`; panics with its stderr if it fails.
    fn ip(args: &[&str]) {
        let out = Command::new("ip").args(args).output().expect("run ip");
        assert!(
            out.status.success(),
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn new(tag: &str) -> Netns {
        let pid = std::process::id();
        let ns = Netns {
            names: [
                format!("kvmkit-{tag}-{pid}-a"),
                format!("kvmkit-{tag}-{pid}-b"),
            ],
        };
        let [a, b] = &ns.names;
        // Interface names have at most 15 characters.
        let (va, vb) = (format!("kmv{pid}a"), format!("kmv{pid}b"));
        Netns::ip(&["netns", "add", a]);
        Netns::ip(&["netns", "add", b]);
        Netns::ip(&[
            "link", "add", &va, "netns", a, "type", "veth", "peer", "name", &vb, "netns", b,
        ]);
        Netns::ip(&["-n", a, "addr", "add", "10.213.0.1/24", "dev", &va]);
        Netns::ip(&["-n", b, "addr", "add", "10.213.0.2/24", "dev", &vb]);
        for (n, v) in [(a, &va), (b, &vb)] {
            Netns::ip(&["-n", n, "link", "set", v, "up"]);
            Netns::ip(&["-n", n, "link", "set", "lo", "up"]);
        }
        ns
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Deleting a namespace deletes its end of the veth pair, and so both.
        for n in &self.names {
            let _ = Command::new("ip").args(["netns", "delete", n]).output();
        }
    }
}

#[test]
fn kvm_migration_between_two_network_namespaces() {
    let Some(()) = kvm_or_skip!() else { return };
    if Command::new("ip").arg("-V").output().is_err() {
        println!("skipped kvm_migration_between_two_network_namespaces: no `ip` (iproute2)");
        eprintln!("skipped kvm_migration_between_two_network_namespaces: no `ip` (iproute2)");
        return;
    }
    let dir = Scratch::new("netns");
    let ns = Netns::new("mig");
    let [a, b] = ns.names.clone();
    // The destination "host" listens on its own address only.
    let dqmp = dir.path("dst.qmp");
    let (mut dst, at) = destination(
        &["ip", "netns", "exec", &b],
        "tcp:10.213.0.2:0",
        &["--api-socket", dqmp.to_str().unwrap()],
    );
    assert!(at.starts_with("tcp:10.213.0.2:"), "{at}");
    // The source "host" runs the guest and reaches it over the veth pair.
    let qmp = dir.path("src.qmp");
    let mem = MIB.to_string();
    let mut src = Vmm::spawn_program(
        "ip",
        &[
            "netns",
            "exec",
            &a,
            BIN,
            "--memory",
            &mem,
            "--cmdline",
            "console=ttyS0 kvmkit.autorun=dirty:256",
            "--api-socket",
            qmp.to_str().unwrap(),
        ],
    );
    src.expect("dirty: counter 65536");
    let mut q = Qmp::open(&qmp);
    q.ok("migrate", Some(json!({ "uri": at })));
    assert_eq!(q.migration_events(), ["setup", "active", "completed"]);
    let (status, stderr, src_seen) = src.wait();
    assert_eq!(status.code(), Some(0), "{stderr}");
    let before = src_seen.iter().filter_map(|l| counter(l)).max().unwrap();
    let got = received(&mut dst);
    assert!(got.pages >= MIB << 8, "{got:?}");
    assert_eq!(Qmp::open(&dqmp).status(), "running");
    let after = stop_dirty(&mut dst, 256);
    assert!(after > before, "{after} after {before}");
    poweroff(dst);
    drop(ns);
}

#[test]
fn kvm_killed_destination_leaves_the_source_running() {
    let Some(()) = kvm_or_skip!() else { return };
    let dir = Scratch::new("killdst");
    let (dst, at) = destination(&[], "tcp:127.0.0.1:0", &[]);
    // Stopped, it never reads: the connection fills up and the source
    // blocks in its first round (8192 workload pages, 32 MiB of data,
    // far more than loopback buffers hold).
    let pid = dst.child.id().to_string();
    let kill = |sig: &str| {
        let st = Command::new("kill")
            .args([sig, &pid])
            .status()
            .expect("kill");
        assert!(st.success(), "kill {sig}");
    };
    kill("-STOP");
    let (mut src, qmp) = source(&dir, "src", &[], "dirty:8192", "dirty: counter 65536");
    let mut q = Qmp::open(&qmp);
    q.ok("migrate", Some(json!({ "uri": at })));
    let info = q.wait_migrate("under way", |i| {
        i["status"] == "active" && i["ram"]["transferred"].as_u64() > Some(1 << 20)
    });
    assert_eq!(info["ram"]["dirty-sync-count"], 0, "{info}");
    kill("-KILL");
    let (status, _, _) = dst.wait();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(9)
    );

    assert_eq!(q.migration_events(), ["setup", "active", "failed"]);
    let info = q.ok("query-migrate", None);
    assert_eq!(info["status"], "failed", "{info}");
    let why = info["error-desc"].as_str().expect("error-desc");
    assert!(
        why.starts_with("writing the migration stream failed after "),
        "{why}"
    );
    assert!(
        info["ram"]["transferred"].as_u64() > Some(1 << 20),
        "{info}"
    );
    assert_eq!(q.status(), "running");
    // The guest never stopped, and goes on.
    let before = last_counter(&src);
    let deadline = Instant::now() + BOOT_WAIT;
    while last_counter(&src) <= before {
        assert!(Instant::now() < deadline);
        src.lines_for(Duration::from_millis(100));
    }
    stop_dirty(&mut src, 8192);
    poweroff(src);
}

#[test]
fn kvm_cut_stream_leaves_the_source_running_and_it_migrates_again() {
    let Some(()) = kvm_or_skip!() else { return };
    let dir = Scratch::new("cut");
    let (dst, _) = destination(&[], &format!("unix:{}", dir.str("dst.sock")), &[]);
    let (src, qmp) = source(&dir, "src", &[], "dirty:256", "dirty: counter 65536");
    let relay = Relay::start(
        &dir.path("relay.sock"),
        dir.path("dst.sock"),
        RelayPlan {
            hold: None,
            cut: Some(100 << 10),
        },
    );
    let mut q = Qmp::open(&qmp);
    q.ok(
        "migrate",
        Some(json!({ "uri": format!("unix:{}", dir.str("relay.sock")) })),
    );
    assert_eq!(q.migration_events(), ["setup", "active", "failed"]);
    assert_eq!(relay.recorded().len(), 100 << 10);
    let info = q.ok("query-migrate", None);
    assert_eq!(info["status"], "failed", "{info}");
    assert!(
        info["error-desc"].as_str().is_some_and(|d| !d.is_empty()),
        "{info}"
    );
    assert_eq!(q.status(), "running");
    // The destination saw a stream that stops short: refused, nothing runs.
    let (status, stderr, seen) = dst.wait();
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("incoming migration refused: the migration stream is truncated"),
        "{stderr}"
    );
    assert!(seen.is_empty(), "{seen:?}");

    // The source lost nothing: it migrates to a new destination.
    let (mut dst, at) = destination(&[], &format!("unix:{}", dir.str("dst2.sock")), &[]);
    q.ok("migrate", Some(json!({ "uri": at })));
    assert_eq!(q.migration_events(), ["setup", "active", "completed"]);
    let (status, stderr, src_seen) = src.wait();
    assert_eq!(status.code(), Some(0), "{stderr}");
    let before = src_seen.iter().filter_map(|l| counter(l)).max().unwrap();
    received(&mut dst);
    assert!(stop_dirty(&mut dst, 256) > before);
    poweroff(dst);
}

/// Sends `bytes` to a destination waiting on `sock` as a source would, and
/// returns its answer (the ACK frame's payload: why it refused).
fn replay(sock: &Path, bytes: &[u8]) -> String {
    let mut s = UnixStream::connect(sock).expect("connect to the destination");
    // The destination may stop reading at the damage: a failed write is
    // not an error here, its answer is what counts.
    let _ = s.write_all(bytes);
    let _ = s.shutdown(std::net::Shutdown::Write);
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer);
    let mut r = FrameReader::new(&answer[..]).expect("the destination answers");
    let ack = r.expect(Tag::Ack, "the ACK").expect("an ACK");
    String::from_utf8(ack.payload).expect("UTF-8")
}

/// Starts a destination on a new socket in `dir`, replays `bytes` into it;
/// returns (exit code, stderr lines after the "waiting" one, console lines,
/// its answer).
fn replay_into_new_destination(
    dir: &Scratch,
    name: &str,
    bytes: &[u8],
) -> (Option<i32>, Vec<String>, Vec<String>, String) {
    let sock = dir.path(name);
    let (dst, _) = destination(&[], &format!("unix:{}", sock.display()), &[]);
    let answer = replay(&sock, bytes);
    let (status, stderr, seen) = dst.wait();
    let lines: Vec<String> = stderr
        .lines()
        .filter(|l| !l.contains("waiting for the incoming migration"))
        .map(str::to_string)
        .collect();
    (status.code(), lines, seen, answer)
}

#[test]
fn kvm_damaged_streams_are_refused_by_the_destination() {
    let Some(()) = kvm_or_skip!() else { return };
    let dir = Scratch::new("damaged");
    // Record a real migration of an idle guest.
    let (mut dst, _) = destination(&[], &format!("unix:{}", dir.str("dst.sock")), &[]);
    let (src, qmp) = source(&dir, "src", &[], "echo:ready", PROMPT);
    let relay = Relay::start(
        &dir.path("relay.sock"),
        dir.path("dst.sock"),
        RelayPlan::default(),
    );
    let mut q = Qmp::open(&qmp);
    q.ok(
        "migrate",
        Some(json!({ "uri": format!("unix:{}", dir.str("relay.sock")) })),
    );
    assert_eq!(q.migration_events(), ["setup", "active", "completed"]);
    let (status, stderr, _) = src.wait();
    assert_eq!(status.code(), Some(0), "{stderr}");
    let stream = relay.recorded();
    received(&mut dst);
    dst.send("echo migrated\r");
    dst.expect("migrated");
    poweroff(dst);

    // The recording is a whole stream: replayed intact, it is accepted and
    // the guest runs, so what follows is refused for its damage alone.
    let (mut dst, at) = destination(&[], &format!("unix:{}", dir.str("intact.sock")), &[]);
    assert_eq!(
        replay(&dir.path("intact.sock"), &stream),
        "",
        "an empty ACK: {at}"
    );
    assert_eq!(received(&mut dst).bytes, stream.len() as u64);
    dst.send("echo replayed\r");
    dst.expect("replayed");
    poweroff(dst);

    let pages = frames(&stream)
        .into_iter()
        .find(|f| f.tag == Tag::Pages)
        .expect("a PAGES frame");
    // A flipped bit in the page data.
    let mut bad = stream.clone();
    let at = usize::try_from(pages.offset).unwrap() + 12 + 8 + 100;
    bad[at] ^= 0x10;
    let (code, err, seen, answer) = replay_into_new_destination(&dir, "flip.sock", &bad);
    assert_eq!(code, Some(1), "{err:?}");
    assert_eq!(err.len(), 1, "one line: {err:?}");
    let want = format!("PAGES frame at byte {} is corrupted: CRC32 ", pages.offset);
    assert!(
        err[0].starts_with("vmm-reference: incoming migration refused: "),
        "{err:?}"
    );
    assert!(err[0].contains(&want), "{err:?}");
    assert!(answer.contains(&want), "the source is told: {answer}");
    assert!(seen.is_empty(), "nothing ran: {seen:?}");

    // Cut in the middle of that frame.
    let cut = usize::try_from(pages.offset).unwrap() + 12 + 4096;
    let (code, err, seen, answer) = replay_into_new_destination(&dir, "cut.sock", &stream[..cut]);
    assert_eq!(code, Some(1), "{err:?}");
    assert_eq!(
        err,
        [format!(
            "vmm-reference: incoming migration refused: the migration stream is truncated: it ends at byte {cut}, inside a PAGES frame"
        )]
    );
    assert!(answer.contains("truncated"), "{answer}");
    assert!(seen.is_empty(), "{seen:?}");

    // Not a stream at all.
    let (code, err, seen, _) =
        replay_into_new_destination(&dir, "junk.sock", b"GET / HTTP/1.1\r\nHost: kvmkit\r\n\r\n");
    assert_eq!(code, Some(1), "{err:?}");
    assert_eq!(err.len(), 1, "{err:?}");
    assert!(
        err[0].starts_with(
            "vmm-reference: incoming migration refused: not a kvmkit migration stream (magic "
        ),
        "{err:?}"
    );
    assert!(seen.is_empty(), "{seen:?}");
}

/// Runs the VMM to its end with no input: (exit code, stderr lines, stdout).
fn run_to_end(args: &[&str]) -> (Option<i32>, Vec<String>, String) {
    let out = Command::new(BIN)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run vmm-reference");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
            .lines()
            .map(str::to_string)
            .collect(),
        String::from_utf8_lossy(&out.stdout).to_string(),
    )
}

/// Copies the snapshot in `from` to `to` with its state file's frames
/// passed through `edit` (decoded with FrameReader, re-encoded with
/// FrameWriter).
fn edited_snapshot(from: &Path, to: &Path, edit: impl Fn(Tag, &mut Value)) {
    std::fs::create_dir_all(to).unwrap();
    std::fs::hard_link(from.join("memory"), to.join("memory")).unwrap();
    let bytes = std::fs::read(from.join("state")).unwrap();
    let mut w = FrameWriter::new(Vec::new()).unwrap();
    for f in frames(&bytes) {
        if f.payload.is_empty() {
            w.frame(f.tag, &[]).unwrap();
            continue;
        }
        let mut v: Value = serde_json::from_slice(&f.payload).unwrap();
        edit(f.tag, &mut v);
        w.frame(f.tag, &serde_json::to_vec(&v).unwrap()).unwrap();
    }
    std::fs::write(to.join("state"), w.into_inner()).unwrap();
}

#[test]
fn kvm_abi_and_shape_mismatches_are_refused() {
    let Some(()) = kvm_or_skip!() else { return };
    let dir = Scratch::new("abi");
    let snap = dir.path("snap");
    let (src, qmp) = source(&dir, "src", &[], "echo:ready", PROMPT);
    let mut q = Qmp::open(&qmp);
    q.ok("snapshot-save", Some(json!({ "path": snap })));
    q.ok("quit", None);
    assert_eq!(src.wait().0.code(), Some(0));
    let mem = MIB.to_string();
    let restore = |dir: &Path, extra: &[&str]| {
        let mut args = vec!["--restore", dir.to_str().unwrap()];
        args.extend_from_slice(extra);
        run_to_end(&args)
    };
    // Each refusal: exit 1, one line naming the mismatch, the guest never ran.
    let refused = |(code, err, out): (Option<i32>, Vec<String>, String), want: &[&str]| {
        assert_eq!(code, Some(1), "{err:?}");
        assert_eq!(err.len(), 1, "one line: {err:?}");
        for w in want {
            assert!(err[0].contains(w), "{w:?} in {err:?}");
        }
        assert!(out.is_empty(), "nothing ran: {out}");
    };

    // The PROFILE frame claims another architecture.
    let other = dir.path("arch");
    edited_snapshot(&snap, &other, |tag, v| {
        if tag == Tag::Profile {
            v["arch"] = json!("s390x");
        }
    });
    refused(
        restore(&other, &["--memory", &mem]),
        &[
            "vmm-reference: this host cannot run the saved VM: ",
            "the state is for s390x, this host is x86_64",
        ],
    );
    // ... or more of a capability than this host has.
    let state = std::fs::read(snap.join("state")).unwrap();
    let profile: Value = serde_json::from_slice(&frames(&state)[0].payload).unwrap();
    let cap = profile["capabilities"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["value"].as_i64() > Some(0))
        .expect("a capability")
        .clone();
    let (name, number, has) = (
        cap["name"].as_str().unwrap().to_string(),
        cap["number"].as_u64().unwrap(),
        cap["value"].as_i64().unwrap(),
    );
    let needs = has + 1_000_000;
    let more = dir.path("cap");
    edited_snapshot(&snap, &more, |tag, v| {
        if tag == Tag::Profile {
            for c in v["capabilities"].as_array_mut().unwrap() {
                if c["number"] == number {
                    c["value"] = json!(needs);
                }
            }
        }
    });
    refused(
        restore(&more, &["--memory", &mem]),
        &[&format!(
            "{name} ({number}): the state needs {needs}, this host has {has}"
        )],
    );
    // A state file damaged on disk: a flipped bit, or cut short.
    let frame = &frames(&state)[2];
    assert_eq!(frame.tag, Tag::State);
    let at = usize::try_from(frame.offset).unwrap() + 12 + 10;
    let flipped = dir.path("flipped");
    std::fs::create_dir_all(&flipped).unwrap();
    std::fs::hard_link(snap.join("memory"), flipped.join("memory")).unwrap();
    let mut bad = state.clone();
    bad[at] ^= 0x04;
    std::fs::write(flipped.join("state"), &bad).unwrap();
    refused(
        restore(&flipped, &["--memory", &mem]),
        &[&format!(
            "vmm-reference: cannot read the snapshot in {}: STATE frame at byte {} is corrupted",
            flipped.display(),
            frame.offset
        )],
    );
    std::fs::write(flipped.join("state"), &state[..at]).unwrap();
    refused(
        restore(&flipped, &["--memory", &mem]),
        &[&format!(
            "the migration stream is truncated: it ends at byte {at}, inside a STATE frame"
        )],
    );
    // The unedited snapshot restores (the edits alone were refused).
    let mut ok = Vmm::spawn(&["--memory", &mem, "--restore", snap.to_str().unwrap()]);
    ok.expect_stderr("restored the snapshot");
    ok.send("echo restored\r");
    ok.expect("restored");
    poweroff(ok);

    // Another machine shape: the message says which flags to use.
    refused(
        restore(&snap, &["--memory", "128"]),
        &["start it with the saved VM's --memory"],
    );
    refused(
        restore(&snap, &["--memory", &mem, "--vcpus", "2"]),
        &[
            "1 vCPU(s)",
            "2 vCPU(s)",
            "(start it with the same --memory, --vcpus and --irqchip)",
        ],
    );
    refused(
        restore(&snap, &["--memory", &mem, "--irqchip", "split"]),
        &["irqchip kernel", "irqchip split", "--irqchip"],
    );

    // A migration to a destination with other RAM: refused before any page
    // is written; the source keeps running.
    let (src, qmp) = source(&dir, "src2", &[], "echo:ready", PROMPT);
    let mut q = Qmp::open(&qmp);
    for (name, extra, want) in [
        (
            "mem.sock",
            ["--memory", "128"],
            "memory layout mismatch: the stream has ",
        ),
        ("cpus.sock", ["--vcpus", "2"], "2 vCPU(s)"),
    ] {
        let (dst, at) = destination(&[], &format!("unix:{}", dir.str(name)), &extra);
        q.ok("migrate", Some(json!({ "uri": at })));
        assert_eq!(q.migration_events(), ["setup", "active", "failed"]);
        let info = q.ok("query-migrate", None);
        let why = info["error-desc"].as_str().expect("error-desc");
        assert!(
            why.starts_with("the destination refused the migration: "),
            "{why}"
        );
        assert!(why.contains(want), "{want:?} in {why}");
        assert_eq!(q.status(), "running");
        let (status, stderr, seen) = dst.wait();
        assert_eq!(status.code(), Some(1), "{stderr}");
        assert!(stderr.contains(want), "{stderr}");
        assert!(seen.is_empty(), "{seen:?}");
    }
    let mut src = src;
    src.send("echo still here\r");
    src.expect("still here");
    poweroff(src);
}

#[test]
fn kvm_bad_migration_and_snapshot_commands_change_nothing() {
    let Some(()) = kvm_or_skip!() else { return };
    let dir = Scratch::new("badcmd");
    let (mut src, qmp) = source(&dir, "src", &[], "echo:ready", PROMPT);
    let mut q = Qmp::open(&qmp);
    let cases = [
        ("migrate", json!({}), "Parameter 'uri' is missing"),
        (
            "migrate",
            json!({"uri": 5}),
            "Invalid parameter type for 'uri', expected: string",
        ),
        (
            "migrate",
            json!({"uri": "exec:cat"}),
            "'exec:cat' is not a supported migration URI (tcp:HOST:PORT or unix:PATH)",
        ),
        (
            "migrate",
            json!({"uri": "tcp:no-port"}),
            "'tcp:no-port': expected tcp:HOST:PORT",
        ),
        (
            "migrate",
            json!({"uri": "unix:"}),
            "'unix:' is not a supported migration URI",
        ),
        ("snapshot-save", json!({}), "Parameter 'path' is missing"),
    ];
    for (cmd, args, want) in cases {
        let desc = q.generic_error(cmd, Some(args.clone()));
        assert!(desc.starts_with(want), "{cmd} {args}: {desc}");
    }
    // Where nothing can be written: under a regular file.
    let file = dir.path("file");
    std::fs::write(&file, b"not a directory").unwrap();
    let under = file.join("snap");
    let desc = q.generic_error("snapshot-save", Some(json!({ "path": under })));
    assert!(
        desc.starts_with(&format!(
            "cannot save the snapshot: creating the snapshot file {} failed",
            under.display()
        )),
        "{desc}"
    );
    assert_eq!(std::fs::read(&file).unwrap(), b"not a directory");
    // Where nothing listens: accepted, then failed.
    let nowhere = dir.path("nobody.sock");
    q.ok(
        "migrate",
        Some(json!({ "uri": format!("unix:{}", nowhere.display()) })),
    );
    assert_eq!(q.migration_events(), ["setup", "failed"]);
    let info = q.ok("query-migrate", None);
    assert_eq!(info["status"], "failed");
    assert!(
        info["error-desc"]
            .as_str()
            .unwrap()
            .starts_with("cannot connect to the destination: "),
        "{info}"
    );
    // The client says so too, and exits 1.
    let out = Command::new(BIN)
        .arg("qmp")
        .arg(&qmp)
        .arg("migrate")
        .arg(json!({ "uri": format!("unix:{}", nowhere.display()) }).to_string())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.lines()
            .last()
            .unwrap()
            .starts_with("vmm-reference: migration failed: cannot connect to the destination: "),
        "{err}"
    );
    q.migration_events();

    // A destination that accepts nothing and reads nothing: the migration
    // stays under way.
    let silent = dir.path("silent.sock");
    let _listener = UnixListener::bind(&silent).unwrap();
    let uri = json!({ "uri": format!("unix:{}", silent.display()) });
    q.ok("migrate", Some(uri.clone()));
    // The idle guest's stream may fit in the socket buffer: then the
    // source has paused and waits for an answer (`device`).
    let under_way = |i: &Value| {
        (i["status"] == "active" || i["status"] == "device")
            && i["ram"]["transferred"].as_u64() > Some(0)
    };
    q.wait_migrate("under way", under_way);
    assert_eq!(
        q.generic_error("migrate", Some(uri.clone())),
        "There's a migration process in progress"
    );
    assert_eq!(
        q.generic_error("snapshot-save", Some(json!({ "path": dir.path("snap") }))),
        "a migration is in progress"
    );
    // migrate_cancel ends it at once, though its write is blocked.
    assert_eq!(q.ok("migrate_cancel", None), json!({}));
    assert_eq!(q.migration_events(), ["setup", "active", "cancelled"]);
    let info = q.ok("query-migrate", None);
    assert_eq!(info["status"], "cancelled", "{info}");
    assert_eq!(q.status(), "running");
    assert!(!dir.path("snap").exists());
    src.send("echo still here\r");
    src.expect("still here");

    // quit during a migration: the migration is cancelled, the VMM ends.
    let silent2 = dir.path("silent2.sock");
    let _listener2 = UnixListener::bind(&silent2).unwrap();
    q.ok(
        "migrate",
        Some(json!({ "uri": format!("unix:{}", silent2.display()) })),
    );
    q.wait_migrate("under way", under_way);
    q.ok("quit", None);
    assert_eq!(q.migration_events(), ["setup", "active", "cancelled"]);
    assert!(q.closed());
    assert!(
        q.events.iter().any(|e| e["event"] == "SHUTDOWN"),
        "{:?}",
        q.events
    );
    let (status, stderr, _) = src.wait();
    assert_eq!(status.code(), Some(0), "{stderr}");
}

#[test]
fn kvm_a_waiting_destination_obeys_sigterm() {
    let Some(()) = kvm_or_skip!() else { return };
    let dir = Scratch::new("sigterm");
    for uri in [
        "tcp:127.0.0.1:0".to_string(),
        format!("unix:{}", dir.str("dst.sock")),
    ] {
        let (dst, at) = destination(&[], &uri, &[]);
        let st = Command::new("kill")
            .args(["-TERM", &dst.child.id().to_string()])
            .status()
            .unwrap();
        assert!(st.success());
        let (status, stderr, seen) = dst.wait();
        assert_eq!(status.code(), Some(1), "{stderr}");
        assert!(
            stderr.ends_with(&format!(
                "vmm-reference: cannot accept the incoming migration on {uri}: quit (signal) while waiting for the source"
            )),
            "{at}: {stderr}"
        );
        assert!(seen.is_empty());
    }
    assert!(!dir.path("dst.sock").exists(), "the socket is removed");
}
