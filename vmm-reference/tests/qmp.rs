//! The QMP control socket, end to end: the VMM runs the test guest with
//! `--api-socket`, the tests speak raw JSON over the socket and run the
//! `vmm-reference qmp` client subcommand.

mod common;

use common::{Vmm, BIN, BOOT_WAIT};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use kvmkit_test_support::kvm_or_skip;

/// A socket path for one test.
fn socket(test: &str) -> PathBuf {
    std::env::temp_dir().join(format!("kvmkit-qmp-{test}-{}.sock", std::process::id()))
}

/// Starts the VMM with the test guest running `autorun` and a QMP socket.
fn start(test: &str, extra: &[&str], autorun: &str) -> (Vmm, PathBuf) {
    let path = socket(test);
    let cmdline = format!("console=ttyS0 kvmkit.autorun={autorun}");
    let mut args = vec![
        "--memory",
        "64",
        "--cmdline",
        &cmdline,
        "--api-socket",
        path.to_str().expect("UTF-8 temp dir"),
    ];
    args.extend_from_slice(extra);
    let mut vm = Vmm::spawn(&args);
    vm.expect(kvmkit_test_guest::BANNER);
    (vm, path)
}

/// A raw QMP connection.
struct Qmp {
    r: BufReader<UnixStream>,
    w: UnixStream,
    /// Events read while waiting for replies, oldest first.
    events: Vec<Value>,
}

impl Qmp {
    /// Connects (the socket exists once the VMM set up) and reads the
    /// greeting.
    fn connect(path: &Path) -> (Qmp, Value) {
        let deadline = Instant::now() + BOOT_WAIT;
        let w = loop {
            match UnixStream::connect(path) {
                Ok(s) => break s,
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(e) => panic!("cannot connect to {}: {e}", path.display()),
            }
        };
        w.set_read_timeout(Some(BOOT_WAIT)).expect("timeout");
        let mut q = Qmp {
            r: BufReader::new(w.try_clone().expect("clone")),
            w,
            events: Vec::new(),
        };
        let greeting = q.read();
        (q, greeting)
    }

    /// Connects and negotiates.
    fn open(path: &Path) -> Qmp {
        let (mut q, g) = Qmp::connect(path);
        assert!(g["QMP"].is_object(), "{g}");
        assert_eq!(
            q.call(r#"{"execute":"qmp_capabilities"}"#),
            json!({"return": {}})
        );
        q
    }

    fn read(&mut self) -> Value {
        let mut line = String::new();
        let n = self.r.read_line(&mut line).expect("read a QMP message");
        assert!(n > 0, "the connection closed");
        assert!(line.ends_with("\r\n"), "{line:?}");
        serde_json::from_str(&line).expect("valid JSON from the server")
    }

    fn send(&mut self, raw: &[u8]) {
        self.w.write_all(raw).expect("write to the QMP socket");
    }

    /// Sends `raw` and returns the reply; events met are kept.
    fn call(&mut self, raw: &str) -> Value {
        self.send(raw.as_bytes());
        self.reply()
    }

    fn reply(&mut self) -> Value {
        loop {
            let m = self.read();
            if m.get("event").is_some() {
                self.events.push(m);
            } else {
                return m;
            }
        }
    }

    /// Waits for event `name` (possibly already received).
    fn event(&mut self, name: &str) -> Value {
        if let Some(i) = self.events.iter().position(|e| e["event"] == name) {
            return self.events.remove(i);
        }
        loop {
            let m = self.read();
            if m["event"] == name {
                return m;
            }
            assert!(m.get("event").is_some(), "a reply nobody asked for: {m}");
            self.events.push(m);
        }
    }

    /// True when the server closed the connection.
    fn closed(&mut self) -> bool {
        let mut line = String::new();
        matches!(self.r.read_line(&mut line), Ok(0) | Err(_))
    }

    fn status(&mut self) -> Value {
        self.call(r#"{"execute":"query-status"}"#)["return"].clone()
    }
}

fn check_timestamp(e: &Value) {
    let t = &e["timestamp"];
    assert!(
        t["seconds"].as_u64().is_some_and(|s| s > 1_600_000_000),
        "{e}"
    );
    assert!(
        t["microseconds"].as_u64().is_some_and(|u| u < 1_000_000),
        "{e}"
    );
}

/// The number in a `tick: K` line.
fn tick(line: &str) -> u64 {
    line.trim()
        .strip_prefix("tick: ")
        .and_then(|k| k.parse().ok())
        .unwrap_or_else(|| panic!("not a tick line: {line:?}"))
}

#[test]
fn kvm_stop_and_cont_pause_and_resume_the_guest() {
    let Some(()) = kvm_or_skip!() else { return };
    // The guest prints `tick: K` every 5 timer ticks (about 50 ms).
    let (mut vm, path) = start("stopcont", &["--vcpus", "2"], "ticks:5");
    let mut q = Qmp::open(&path);
    assert_eq!(
        q.status(),
        json!({"running": true, "singlestep": false, "status": "running"})
    );
    vm.expect("tick: 2");

    let r = q.call(r#"{"execute":"stop","id":"s1"}"#);
    assert_eq!(r, json!({"return": {}, "id": "s1"}));
    // QEMU sends STOP during the command, before its reply.
    let stop = q.events.remove(0);
    assert_eq!(stop["event"], "STOP");
    check_timestamp(&stop);
    assert_eq!(
        q.status(),
        json!({"running": false, "singlestep": false, "status": "paused"})
    );
    // What was printed before the pause drains; then the console is silent.
    let before = vm.lines_for(Duration::from_millis(500));
    let last = before
        .iter()
        .rev()
        .find(|l| l.starts_with("tick: "))
        .map_or_else(
            || {
                tick(
                    vm.seen
                        .iter()
                        .rev()
                        .find(|l| l.starts_with("tick: "))
                        .unwrap(),
                )
            },
            |l| tick(l),
        );
    let during = vm.lines_for(Duration::from_millis(1500));
    assert!(
        during.is_empty(),
        "the guest printed while paused: {during:?}"
    );
    // Stop again: no event, still paused.
    assert_eq!(q.call(r#"{"execute":"stop"}"#), json!({"return": {}}));
    assert_eq!(q.status()["status"], "paused");

    let r = q.call(r#"{"execute":"cont","id":2}"#);
    assert_eq!(r, json!({"return": {}, "id": 2}));
    let resume = q.events.remove(0);
    assert_eq!(resume["event"], "RESUME");
    check_timestamp(&resume);
    assert!(q.events.is_empty(), "{:?}", q.events);
    // The ticks go on from where they stopped.
    let next = vm.expect("tick: ");
    assert_eq!(tick(&next), last + 1, "{next}");
    vm.expect(&format!("tick: {}", last + 2));
    assert_eq!(q.status()["status"], "running");
    // cont while running: nothing happens, no event.
    assert_eq!(q.call(r#"{"execute":"cont"}"#), json!({"return": {}}));

    // Every vCPU, with the host thread that really runs it.
    let cpus = q.call(r#"{"execute":"query-cpus-fast"}"#)["return"].clone();
    let cpus = cpus.as_array().expect("a list");
    assert_eq!(cpus.len(), 2);
    let pid = vm.child.id();
    for (i, c) in cpus.iter().enumerate() {
        assert_eq!(c["cpu-index"], i);
        assert_eq!(c["target"], "x86_64");
        assert_eq!(c["qom-path"], format!("/machine/unattached/device[{i}]"));
        assert_eq!(
            c["props"],
            json!({"socket-id": 0, "core-id": i, "thread-id": 0})
        );
        let tid = c["thread-id"].as_i64().expect("a thread id");
        let comm = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/comm"))
            .expect("the thread exists in the VMM");
        assert_eq!(comm.trim(), format!("vcpu {i}"));
    }
    assert_eq!(
        q.call(r#"{"execute":"query-kvm"}"#),
        json!({"return": {"enabled": true, "present": true}})
    );

    // The ACPI power button: the guest powers off by itself.
    assert_eq!(
        q.call(r#"{"execute":"system_powerdown","id":"p"}"#),
        json!({"return": {}, "id": "p"})
    );
    let pd = q.event("POWERDOWN");
    check_timestamp(&pd);
    assert!(pd.get("data").is_none());
    vm.expect("acpi: power button");
    let sd = q.event("SHUTDOWN");
    assert_eq!(
        sd["data"],
        json!({"guest": true, "reason": "guest-shutdown"})
    );
    assert!(q.closed(), "the VMM closes the connection as it exits");
    let (status, stderr, _) = vm.wait();
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert!(!path.exists(), "the socket is removed");
}

#[test]
fn kvm_invalid_input_changes_nothing() {
    let Some(()) = kvm_or_skip!() else { return };
    let (mut vm, path) = start("invalid", &[], "ticks:5");
    vm.expect("tick: 1");

    // Before negotiation: every command but qmp_capabilities is refused.
    let (mut q, greeting) = Qmp::connect(&path);
    assert_eq!(greeting["QMP"]["capabilities"], json!([]));
    assert_eq!(greeting["QMP"]["version"]["qemu"]["major"], 8);
    assert!(greeting["QMP"]["version"]["package"]
        .as_str()
        .unwrap()
        .starts_with("kvmkit vmm-reference "));
    assert_eq!(
        q.call(r#"{"execute":"stop","id":1}"#),
        json!({"error": {"class": "CommandNotFound",
                         "desc": "Expecting capabilities negotiation with 'qmp_capabilities'"},
               "id": 1})
    );
    assert_eq!(
        q.call(r#"{"execute":"qmp_capabilities","arguments":{"enable":["oob"]}}"#)["error"]["desc"],
        "Capability oob not available"
    );
    assert_eq!(
        q.call(r#"{"execute":"qmp_capabilities"}"#),
        json!({"return": {}})
    );
    assert_eq!(
        q.call(r#"{"execute":"qmp_capabilities"}"#)["error"],
        json!({"class": "CommandNotFound",
               "desc": "Capabilities negotiation is already complete, command ignored"})
    );

    let cases: &[(&str, &str, &str)] = &[
        ("{\"execute\": }", "GenericError", "JSON parse error, "),
        ("[\"stop\"]", "GenericError", "QMP input must be a JSON object"),
        ("\"stop\"", "GenericError", "QMP input must be a JSON object"),
        ("{\"arguments\": {}}", "GenericError", "QMP input lacks member 'execute'"),
        ("{\"execute\": 1}", "GenericError", "QMP input member 'execute' must be a string"),
        ("{\"execute\": \"stop\", \"arguments\": 1}", "GenericError", "QMP input member 'arguments' must be an object"),
        ("{\"execute\": \"stop\", \"x\": 1}", "GenericError", "QMP input member 'x' is unexpected"),
        ("{\"execute\": \"stop-all\"}", "CommandNotFound", "The command stop-all has not been found"),
        ("{\"execute\": \"stop\", \"arguments\": {\"now\": 1}}", "GenericError", "Parameter 'now' is unexpected"),
        ("{\"execute\": \"calc-dirty-rate\"}", "GenericError", "Parameter 'calc-time' is missing"),
        ("{\"execute\": \"calc-dirty-rate\", \"arguments\": {\"calc-time\": true}}", "GenericError", "Invalid parameter type for 'calc-time', expected: integer"),
        ("{\"execute\": \"calc-dirty-rate\", \"arguments\": {\"calc-time\": 0}}", "GenericError", "Calculation time is out of range [50ms, 60000ms]."),
        ("{\"execute\": \"calc-dirty-rate\", \"arguments\": {\"calc-time\": 1, \"mode\": \"x\"}}", "GenericError", "Parameter 'mode' does not accept value 'x'"),
        ("{\"execute\": \"calc-dirty-rate\", \"arguments\": {\"calc-time\": 1, \"sample-pages\": 1}}", "GenericError", "sample-pages is out of range[128, 16384]."),
        ("{\"execute\": \"query-dirty-rate\", \"arguments\": {\"calc-time-unit\": \"day\"}}", "GenericError", "Parameter 'calc-time-unit' does not accept value 'day'"),
    ];
    for (raw, class, desc) in cases {
        let r = q.call(raw);
        assert_eq!(r["error"]["class"], *class, "{raw} -> {r}");
        let got = r["error"]["desc"].as_str().unwrap();
        assert!(got.starts_with(desc), "{raw} -> {got}");
    }
    // The id is echoed whatever its type, also on errors.
    let id = json!({"a": [1, null, "x"], "b": 1.5});
    let r = q.call(&json!({"execute": "nope", "id": id}).to_string());
    assert_eq!(r["id"], id);
    // A control character resets the parser mid-message.
    let r = q.call("{\"execute\": \"sto\x01");
    assert_eq!(r["error"]["desc"], "JSON parse error, stray '\\x01'");
    // A client that disconnects mid-message is dropped quietly.
    let (mut gone, _) = Qmp::connect(&path);
    gone.send(b"{\"execute\": \"qmp_capabilities\"}{\"execute\": \"st");
    drop(gone);

    // None of it changed anything: still running, the guest still ticks.
    assert_eq!(q.status()["status"], "running");
    assert!(q.events.is_empty(), "no events: {:?}", q.events);
    let now = tick(&vm.expect("tick: "));
    vm.expect(&format!("tick: {}", now + 1));

    // quit: the reply, then SHUTDOWN; the VMM exits 0.
    assert_eq!(
        q.call(r#"{"execute":"quit","id":"bye"}"#),
        json!({"return": {}, "id": "bye"})
    );
    let sd = q.event("SHUTDOWN");
    assert_eq!(
        sd["data"],
        json!({"guest": false, "reason": "host-qmp-quit"})
    );
    assert!(q.closed());
    let (status, stderr, _) = vm.wait();
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert!(!path.exists());
}

#[test]
fn kvm_events_reach_every_negotiated_client() {
    let Some(()) = kvm_or_skip!() else { return };
    let (vm, path) = start("clients", &[], "ticks");
    let mut a = Qmp::open(&path);
    let mut b = Qmp::open(&path);
    // A third client that never negotiates gets no events.
    let (mut c, _) = Qmp::connect(&path);
    assert_eq!(a.call(r#"{"execute":"stop"}"#), json!({"return": {}}));
    assert_eq!(a.events.remove(0)["event"], "STOP");
    assert_eq!(b.event("STOP")["event"], "STOP");
    assert_eq!(b.status()["status"], "paused");
    assert_eq!(b.call(r#"{"execute":"cont"}"#), json!({"return": {}}));
    assert_eq!(a.event("RESUME")["event"], "RESUME");
    assert_eq!(b.events.remove(0)["event"], "RESUME");
    assert_eq!(
        c.call(r#"{"execute":"query-status"}"#)["error"]["class"],
        "CommandNotFound",
        "c only got its replies"
    );
    assert_eq!(b.call(r#"{"execute":"quit"}"#), json!({"return": {}}));
    for q in [&mut a, &mut b] {
        let sd = q.event("SHUTDOWN");
        assert_eq!(sd["data"]["reason"], "host-qmp-quit");
    }
    assert!(c.closed(), "no SHUTDOWN for c, only the end");
    let (status, stderr, _) = vm.wait();
    assert_eq!(status.code(), Some(0), "{stderr}");
}

/// Runs `vmm-reference qmp PATH ARGS...`.
fn client(path: &Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(BIN)
        .arg("qmp")
        .arg(path)
        .args(args)
        .output()
        .expect("run vmm-reference qmp");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

fn client_ok(path: &Path, args: &[&str]) -> Value {
    let (code, out, err) = client(path, args);
    assert_eq!(code, 0, "{args:?}: {err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?}: {e}: {out}"))
}

#[test]
fn kvm_client_subcommand_and_dirty_rate() {
    let Some(()) = kvm_or_skip!() else { return };
    // The guest dirties 8192 pages (32 MiB) of its 256 MiB, forever.
    let path = socket("client");
    let mut vm = Vmm::spawn(&[
        "--memory",
        "256",
        "--cmdline",
        "console=ttyS0",
        "--api-socket",
        path.to_str().unwrap(),
    ]);
    vm.expect(kvmkit_test_guest::PROMPT);
    // Wait for the socket: the client does not retry.
    drop(Qmp::open(&path));

    let st = client_ok(&path, &["query-status"]);
    assert_eq!(st["status"], "running");
    let (code, out, err) = client(&path, &["query-status"]);
    assert_eq!(code, 0);
    assert!(
        out.contains("\n  \"running\": true"),
        "pretty-printed: {out} {err}"
    );
    let (code, out, err) = client(&path, &["no-such-command"]);
    assert_eq!((code, out.as_str()), (1, ""));
    assert_eq!(
        err.trim(),
        "vmm-reference: CommandNotFound: The command no-such-command has not been found"
    );
    let (code, _, err) = client(&path, &["calc-dirty-rate", "[1]"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("not a JSON object"), "{err}");
    let (code, _, err) = client(&path, &["calc-dirty-rate", r#"{"calc-time": -1}"#]);
    assert_eq!(code, 1);
    assert!(
        err.contains("GenericError: Calculation time is out of range"),
        "{err}"
    );
    let (code, _, err) = client(Path::new("/nonexistent/vm.sock"), &["stop"]);
    assert_eq!(code, 1);
    assert!(err.contains("cannot connect"), "{err}");

    let sampling = r#"{"calc-time": 1, "sample-pages": 4096}"#;
    let idle = measure(&path, sampling).0;
    vm.send("dirty 8192\r");
    vm.expect("dirty: 8192 pages at 0x1000000");
    let busy = measure(&path, sampling).0;
    assert!(
        busy > idle,
        "the dirtying guest dirties faster: busy {busy} MB/s, idle {idle} MB/s"
    );
    // KVM's dirty bitmaps count exactly what the guest wrote: its 8192
    // pages (32 MiB; the loop goes round them many times a second) and a
    // few more (the counter, the stack): 32 whole MB over the window.
    let (rate, ms) = measure(
        &path,
        r#"{"calc-time": 2000, "calc-time-unit": "millisecond", "mode": "dirty-bitmap"}"#,
    );
    assert_eq!(rate, 32 * 1000 / ms, "{rate} MB/s over {ms} ms");
    // The dirty ring is not on (--dirty-log bitmap): QEMU's answer.
    let (code, _, err) = client(
        &path,
        &[
            "calc-dirty-rate",
            r#"{"calc-time": 1, "mode": "dirty-ring"}"#,
        ],
    );
    assert_eq!(code, 1);
    assert!(
        err.contains("GenericError: mode dirty-ring is not enabled, use other method instead."),
        "{err}"
    );
    vm.send("x");
    vm.expect("dirty: stopped");
    vm.expect("dirty: verify ok");

    // stop and cont through the client.
    assert_eq!(client_ok(&path, &["stop"]), json!({}));
    assert_eq!(client_ok(&path, &["query-status"])["status"], "paused");
    assert_eq!(client_ok(&path, &["cont"]), json!({}));
    assert_eq!(client_ok(&path, &["query-status"])["status"], "running");
    let names = client_ok(&path, &["query-commands"]);
    assert!(names
        .as_array()
        .unwrap()
        .contains(&json!({"name": "calc-dirty-rate"})));
    let v = client_ok(&path, &["query-version"]);
    assert_eq!(v["qemu"], json!({"major": 8, "minor": 2, "micro": 0}));
    assert_eq!(client_ok(&path, &["quit"]), json!({}));
    let (status, stderr, _) = vm.wait();
    assert_eq!(status.code(), Some(0), "{stderr}");
}

/// One measurement through the client with `args`; returns the rate in
/// MB/s and the measurement's length in ms.
fn measure(path: &Path, args: &str) -> (i64, i64) {
    assert_eq!(client_ok(path, &["calc-dirty-rate", args]), json!({}));
    let asked: Value = serde_json::from_str(args).unwrap();
    let deadline = Instant::now() + BOOT_WAIT;
    loop {
        let q = client_ok(
            path,
            &["query-dirty-rate", r#"{"calc-time-unit": "millisecond"}"#],
        );
        if q["status"] == "measured" {
            let mode = asked["mode"].as_str().unwrap_or("page-sampling");
            assert_eq!(q["mode"], mode, "{q}");
            let pages = if mode == "page-sampling" {
                asked
                    .get("sample-pages")
                    .map_or(512, |p| p.as_i64().unwrap())
            } else {
                0
            };
            assert_eq!(q["sample-pages"], pages, "{q}");
            let ms = q["calc-time"].as_i64().unwrap();
            let want = match asked["calc-time-unit"].as_str() {
                Some("millisecond") => asked["calc-time"].as_i64().unwrap(),
                _ => asked["calc-time"].as_i64().unwrap() * 1000,
            };
            assert!(ms >= want, "at least the time asked: {q}");
            let rate = q["dirty-rate"].as_i64().expect("a rate");
            assert!(rate >= 0, "{q}");
            return (rate, ms);
        }
        assert_eq!(q["status"], "measuring", "{q}");
        assert!(Instant::now() < deadline, "never measured: {q}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn kvm_dirty_ring_mode() {
    let Some(()) = kvm_or_skip!() else { return };
    let path = socket("ring");
    let mut vm = Vmm::spawn(&[
        "--memory",
        "256",
        "--dirty-log",
        "ring",
        "--cmdline",
        "console=ttyS0 kvmkit.autorun=dirty:8192",
        "--api-socket",
        path.to_str().unwrap(),
    ]);
    vm.expect("dirty: 8192 pages at 0x1000000");
    drop(Qmp::open(&path));
    let (rate, ms) = measure(
        &path,
        r#"{"calc-time": 2000, "calc-time-unit": "millisecond", "mode": "dirty-ring"}"#,
    );
    // At least the guest's 32 MiB; at most all of RAM (a host kernel that
    // overfills a ring makes the tracker report every page, see
    // kvmkit-dirty-log's README).
    assert!(
        (32 * 1000 / ms..=256 * 1000 / ms).contains(&rate),
        "{rate} MB/s over {ms} ms"
    );
    let (code, _, err) = client(
        &path,
        &[
            "calc-dirty-rate",
            r#"{"calc-time": 1, "mode": "dirty-bitmap"}"#,
        ],
    );
    assert_eq!(code, 1);
    assert!(err.contains("mode dirty-bitmap is not enabled"), "{err}");
    let (code, _, err) = client(
        &path,
        &[
            "calc-dirty-rate",
            r#"{"calc-time": 1, "mode": "dirty-ring", "sample-pages": 512}"#,
        ],
    );
    assert_eq!(code, 1);
    assert!(
        err.contains("sample-pages is used only in page-sampling mode"),
        "{err}"
    );
    // The guest still runs, its pages still check out.
    vm.send("x");
    vm.expect("dirty: verify ok");
    assert_eq!(client_ok(&path, &["quit"]), json!({}));
    let (status, stderr, _) = vm.wait();
    assert_eq!(status.code(), Some(0), "{stderr}");
}

#[test]
fn kvm_api_socket_errors_are_set_up_errors() {
    let Some(()) = kvm_or_skip!() else { return };
    let file = std::env::temp_dir().join(format!("kvmkit-qmp-file-{}", std::process::id()));
    std::fs::write(&file, b"not a socket").unwrap();
    let (status, stderr) = common::run(&["--api-socket", file.to_str().unwrap()]);
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("exists and is not a socket"), "{stderr}");
    assert_eq!(std::fs::read(&file).unwrap(), b"not a socket", "untouched");
    std::fs::remove_file(&file).unwrap();
    let (status, stderr) = common::run(&["--api-socket", "/nonexistent/dir/vm.sock"]);
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("cannot bind the API socket"), "{stderr}");
}

#[test]
fn kvm_shutdown_reasons_follow_the_cause() {
    let Some(()) = kvm_or_skip!() else { return };
    // The guest resets (i8042): the VMM ends, as QEMU with -no-reboot.
    let (mut vm, path) = start("reset", &[], "echo:ready");
    vm.expect(kvmkit_test_guest::PROMPT);
    let mut q = Qmp::open(&path);
    vm.send("reboot\r");
    let sd = q.event("SHUTDOWN");
    assert_eq!(sd["data"], json!({"guest": true, "reason": "guest-reset"}));
    let (status, stderr, _) = vm.wait();
    assert_eq!(status.code(), Some(0), "{stderr}");

    // SIGTERM: host-signal.
    let (mut vm, path) = start("signal", &[], "echo:ready");
    vm.expect(kvmkit_test_guest::PROMPT);
    let mut q = Qmp::open(&path);
    let killed = Command::new("sh")
        .arg("-c")
        .arg(format!("kill -TERM {}", vm.child.id()))
        .status()
        .expect("run sh");
    assert!(killed.success());
    let sd = q.event("SHUTDOWN");
    assert_eq!(sd["data"], json!({"guest": false, "reason": "host-signal"}));
    let (status, stderr, _) = vm.wait();
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert!(!path.exists());
}
