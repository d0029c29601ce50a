//! Migration and snapshot benchmark (issue #6): the kvmkit test guest with
//! 1 GiB of RAM, idle at its prompt and running its dirtying workload
//! (`kvmkit.autorun=dirty:N`), migrated
//!
//! - by vmm-reference over loopback TCP and over a Unix socket,
//! - by QEMU (`-M microvm`, same ELF) over loopback TCP, in the same run,
//!
//! and, for vmm-reference, saved to a snapshot and restored.
//!
//! Per migration it records
//!
//! - total time: the `migrate` command sent (bench clock, Unix time) to the
//!   guest resumed on the destination (the destination VMM's timestamp:
//!   vmm-reference's `resuming at` on stderr, QEMU's `RESUME` event);
//! - downtime from the VMMs' timestamps: vmm-reference's destination prints
//!   the source's pause time and its own resume time (same host clock);
//!   for QEMU the source's `STOP` event to the destination's `RESUME` event;
//! - each VMM's own figures from `query-migrate` (`downtime`,
//!   `total-time`): QEMU's are its official ones; vmm-reference's source
//!   exits as soon as the migration completes, so its final answer is only
//!   caught when a poll lands between completion and exit (`n/a` otherwise);
//! - bytes sent (vmm-reference: the stream bytes the destination read; QEMU:
//!   `ram.transferred`).
//!
//! Every migration is checked on the destination before it counts: the idle
//! guest answers a typed `echo`; the dirtying guest is stopped with a key
//! press and must report a counter beyond the last one the source printed
//! and `dirty: verify ok` (memory and CPU state arrived together).
//!
//! Snapshots: `snapshot-save` (its `paused-ms` and the command's wall time),
//! then `--restore` in a new process: its `restored the snapshot ... (X ms
//! since start of restore)` message, the time from spawning the process to
//! that message and to the guest's first serial output (an answer to input
//! typed at once), then the same checks.
//!
//! QEMU runs with its defaults (`downtime-limit` 300 ms) except
//! `max-bandwidth`, raised from QEMU 7.2's 32 MiB/s throttle so that both
//! VMMs send as fast as the host allows.
//!
//! `cargo bench -p kvmkit-vmm-reference --bench migration` runs
//! `KVMKIT_MIGRATION_BENCH_ROUNDS` rounds (default 5; medians reported), the
//! order of the VMMs rotating each round; `KVMKIT_MIGRATION_BENCH_DIRTY`
//! sets the workload's pages (default 4096). It needs `qemu-system-x86_64`
//! (Debian: `apt-get install -y qemu-system-x86`; without it the QEMU runs
//! are skipped). Without `--bench` (as `cargo test --all-targets` runs it)
//! it is a smoke test: one idle 128 MiB migration over a Unix socket and one
//! snapshot, which must work.

use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const QEMU: &str = "qemu-system-x86_64";
const ROUNDS_ENV: &str = "KVMKIT_MIGRATION_BENCH_ROUNDS";
const DIRTY_ENV: &str = "KVMKIT_MIGRATION_BENCH_DIRTY";
const DEFAULT_ROUNDS: usize = 5;
const DEFAULT_DIRTY_PAGES: u64 = 4096;
/// Guest RAM of the benchmark, MiB.
const MEMORY_MIB: u64 = 1024;
/// Guest RAM of the smoke test, MiB.
const SMOKE_MIB: u64 = 128;
/// The longest any one step may take (guest code is emulated on PVM hosts).
const STEP_LIMIT: Duration = Duration::from_secs(120);
/// QEMU's `max-bandwidth` for the runs: 10 GB/s, more than loopback gives.
const QEMU_MAX_BANDWIDTH: u64 = 10_000_000_000;

#[derive(Debug)]
struct Failure(String);

type Res<T> = Result<T, Failure>;

fn fail<T>(msg: impl Into<String>) -> Res<T> {
    Err(Failure(msg.into()))
}

fn unix_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

// ---------------------------------------------------------------------------
// Child processes and their output.

/// Bytes a child wrote so far, with when each piece arrived.
#[derive(Default)]
struct Captured {
    bytes: Vec<u8>,
    /// (end offset, arrival) of each read.
    arrivals: Vec<(usize, Instant)>,
    eof: bool,
}

#[derive(Default)]
struct Stream {
    data: Mutex<Captured>,
    cv: Condvar,
}

impl Stream {
    fn pump(self: Arc<Self>, mut r: impl Read + Send + 'static) {
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            loop {
                let n = r.read(&mut buf).unwrap_or(0);
                let now = Instant::now();
                let mut d = self.data.lock().unwrap_or_else(|e| e.into_inner());
                if n == 0 {
                    d.eof = true;
                    self.cv.notify_all();
                    return;
                }
                d.bytes.extend_from_slice(&buf[..n]);
                let end = d.bytes.len();
                d.arrivals.push((end, now));
                self.cv.notify_all();
            }
        });
    }

    /// Waits until `needle` appears at or after byte `from`; returns the
    /// offset just after it and when its last byte arrived.
    fn wait_for(&self, needle: &str, from: usize, deadline: Instant) -> Option<(usize, Instant)> {
        let needle = needle.as_bytes();
        let mut d = self.data.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            let from = from.min(d.bytes.len());
            if let Some(p) = d.bytes[from..]
                .windows(needle.len())
                .position(|w| w == needle)
            {
                let end = from + p + needle.len();
                let at = d
                    .arrivals
                    .iter()
                    .find(|(e, _)| *e >= end)
                    .map_or_else(Instant::now, |(_, t)| *t);
                return Some((end, at));
            }
            let now = Instant::now();
            if d.eof || now >= deadline {
                return None;
            }
            d = self
                .cv
                .wait_timeout(d, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// When the first byte at or after `from` arrives.
    fn first_after(&self, from: usize, deadline: Instant) -> Option<Instant> {
        let mut d = self.data.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if let Some((_, t)) = d.arrivals.iter().find(|(e, _)| *e > from) {
                return Some(*t);
            }
            let now = Instant::now();
            if d.eof || now >= deadline {
                return None;
            }
            d = self
                .cv
                .wait_timeout(d, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.data.lock().unwrap_or_else(|e| e.into_inner()).bytes)
            .into_owned()
    }
}

/// A child process whose stdout and stderr are captured; killed on drop if
/// it is still running.
struct Proc {
    name: String,
    child: Child,
    stdin: Option<ChildStdin>,
    out: Arc<Stream>,
    err: Arc<Stream>,
    spawned: Instant,
}

impl Proc {
    fn spawn(name: &str, cmd: &mut Command) -> Res<Proc> {
        let spawned = Instant::now();
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| Failure(format!("{name}: cannot spawn {cmd:?}: {e}")))?;
        let out = Arc::new(Stream::default());
        let err = Arc::new(Stream::default());
        out.clone()
            .pump(child.stdout.take().expect("stdout is piped"));
        err.clone()
            .pump(child.stderr.take().expect("stderr is piped"));
        Ok(Proc {
            name: name.to_string(),
            stdin: child.stdin.take(),
            child,
            out,
            err,
            spawned,
        })
    }

    fn tail(&self) -> String {
        let out = self.out.text();
        let err = self.err.text();
        let cut = |s: &str| {
            let start = s.len().saturating_sub(1500);
            let start = (start..s.len())
                .find(|&i| s.is_char_boundary(i))
                .unwrap_or(s.len());
            s[start..].to_string()
        };
        format!(
            "--- {} console (tail):\n{}\n--- stderr (tail):\n{}",
            self.name,
            cut(&out),
            cut(&err)
        )
    }

    fn wait_out(&self, needle: &str, from: usize, limit: Duration) -> Res<(usize, Instant)> {
        self.out
            .wait_for(needle, from, Instant::now() + limit)
            .ok_or_else(|| {
                Failure(format!(
                    "{}: no {needle:?} on the console within {limit:?}\n{}",
                    self.name,
                    self.tail()
                ))
            })
    }

    fn wait_err(&self, needle: &str, limit: Duration) -> Res<(usize, Instant)> {
        self.err
            .wait_for(needle, 0, Instant::now() + limit)
            .ok_or_else(|| {
                Failure(format!(
                    "{}: no {needle:?} on stderr within {limit:?}\n{}",
                    self.name,
                    self.tail()
                ))
            })
    }

    /// The stderr line containing `needle` (waiting for its end).
    fn err_line(&self, needle: &str, limit: Duration) -> Res<String> {
        let (end, _) = self.wait_err(needle, limit)?;
        self.err
            .wait_for("\n", end, Instant::now() + limit)
            .ok_or_else(|| Failure(format!("{}: unterminated stderr line", self.name)))?;
        let text = self.err.text();
        let start = text[..end].rfind('\n').map_or(0, |i| i + 1);
        let stop = text[end..].find('\n').map_or(text.len(), |i| end + i);
        Ok(text[start..stop].to_string())
    }

    fn type_in(&mut self, s: &str) -> Res<()> {
        let name = self.name.clone();
        let stdin = self
            .stdin
            .as_mut()
            .ok_or_else(|| Failure(format!("{name}: stdin closed")))?;
        stdin
            .write_all(s.as_bytes())
            .and_then(|()| stdin.flush())
            .map_err(|e| Failure(format!("{name}: cannot type {s:?}: {e}")))
    }

    /// Waits for the exit; fails (and kills it) after `limit`.
    fn wait_exit(&mut self, limit: Duration) -> Res<std::process::ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            match self.child.try_wait() {
                Ok(Some(s)) => return Ok(s),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(5));
                }
                _ => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    return fail(format!(
                        "{}: still running after {limit:?}, killed\n{}",
                        self.name,
                        self.tail()
                    ));
                }
            }
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------
// QMP, raw JSON over a Unix socket, for both VMMs.

struct Qmp {
    r: BufReader<UnixStream>,
    w: UnixStream,
    /// Events read while waiting for replies.
    events: Vec<Value>,
}

impl Qmp {
    fn connect(path: &Path, limit: Duration) -> Res<Qmp> {
        let deadline = Instant::now() + limit;
        let w = loop {
            match UnixStream::connect(path) {
                Ok(s) => break s,
                Err(e) if Instant::now() >= deadline => {
                    return fail(format!("cannot connect to QMP {}: {e}", path.display()))
                }
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        };
        let r = BufReader::new(
            w.try_clone()
                .map_err(|e| Failure(format!("QMP socket: {e}")))?,
        );
        let mut q = Qmp {
            r,
            w,
            events: Vec::new(),
        };
        let greeting = q.read(STEP_LIMIT)?;
        if greeting.get("QMP").is_none() {
            return fail(format!("unexpected QMP greeting {greeting}"));
        }
        q.call("qmp_capabilities", None)?;
        Ok(q)
    }

    fn read(&mut self, limit: Duration) -> Res<Value> {
        self.r
            .get_ref()
            .set_read_timeout(Some(limit))
            .map_err(|e| Failure(format!("QMP socket: {e}")))?;
        let mut line = String::new();
        match self.r.read_line(&mut line) {
            Ok(0) => fail("QMP connection closed"),
            Ok(_) => {
                serde_json::from_str(&line).map_err(|e| Failure(format!("QMP sent {line:?}: {e}")))
            }
            Err(e) => fail(format!("QMP read: {e}")),
        }
    }

    /// Runs `cmd`; its `return` value, or the error's description.
    fn call(&mut self, cmd: &str, args: Option<Value>) -> Res<Value> {
        let mut req = json!({ "execute": cmd });
        if let Some(a) = args {
            req["arguments"] = a;
        }
        let mut bytes = req.to_string();
        bytes.push('\n');
        self.w
            .write_all(bytes.as_bytes())
            .map_err(|e| Failure(format!("QMP {cmd}: {e}")))?;
        loop {
            let v = self.read(STEP_LIMIT)?;
            if v.get("event").is_some() {
                self.events.push(v);
            } else if let Some(r) = v.get("return") {
                return Ok(r.clone());
            } else {
                return fail(format!("QMP {cmd}: {v}"));
            }
        }
    }

    /// The first event `name`, waiting for it until `limit`.
    fn event(&mut self, name: &str, limit: Duration) -> Res<Value> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(i) = self.events.iter().position(|e| e["event"] == name) {
                return Ok(self.events.remove(i));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return fail(format!("no QMP event {name} within {limit:?}"));
            }
            let v = self.read(left)?;
            if v.get("event").is_some() {
                self.events.push(v);
            }
        }
    }
}

/// An event's timestamp, Unix ns.
fn event_ns(e: &Value) -> Option<u64> {
    let s = e["timestamp"]["seconds"].as_u64()?;
    let us = e["timestamp"]["microseconds"].as_u64()?;
    Some(s * 1_000_000_000 + us * 1000)
}

// ---------------------------------------------------------------------------
// The guest and the VMMs.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Load {
    Idle,
    Dirty(u64),
}

impl Load {
    fn name(self) -> String {
        match self {
            Load::Idle => "idle".to_string(),
            Load::Dirty(n) => format!("dirty:{n}"),
        }
    }

    fn cmdline(self) -> String {
        match self {
            Load::Idle => "console=ttyS0".to_string(),
            Load::Dirty(n) => format!("console=ttyS0 kvmkit.autorun=dirty:{n}"),
        }
    }

    /// Waits until the guest is at its prompt or its workload runs; for the
    /// workload, returns the last counter it printed.
    fn ready(self, p: &Proc) -> Res<u64> {
        match self {
            Load::Idle => p
                .wait_out(kvmkit_test_guest::PROMPT, 0, STEP_LIMIT)
                .map(|_| 0),
            Load::Dirty(_) => {
                // Two counter lines: the workload has run for a while.
                let (end, _) = p.wait_out("dirty: counter ", 0, STEP_LIMIT)?;
                p.wait_out("dirty: counter ", end, STEP_LIMIT)?;
                Ok(last_counter(&p.out.text(), "dirty: counter ").unwrap_or(0))
            }
        }
    }

    /// Checks, on `p`'s console from byte `from`, that the guest runs: the
    /// idle guest answers `echo TAG`; the workload, stopped by a key,
    /// reports a counter beyond `counter` and verifies its pages.
    fn check(self, p: &mut Proc, from: usize, tag: &str, counter: u64) -> Res<()> {
        match self {
            Load::Idle => {
                p.type_in(&format!("echo {tag}\n"))?;
                p.wait_out(&format!("\n{tag}"), from, STEP_LIMIT)?;
            }
            Load::Dirty(_) => {
                p.type_in("\n")?;
                let (end, _) = p.wait_out("dirty: verify ", from, STEP_LIMIT)?;
                let (_, _) = p.wait_out("\n", end, STEP_LIMIT)?;
                let text = p.out.text();
                let tail = &text[from.min(text.len())..];
                if !tail.contains("dirty: verify ok") {
                    return fail(format!(
                        "{}: the workload's check failed\n{}",
                        p.name,
                        p.tail()
                    ));
                }
                let n = last_counter(tail, "dirty: stopped, counter ").ok_or_else(|| {
                    Failure(format!("{}: no final counter\n{}", p.name, p.tail()))
                })?;
                if n <= counter {
                    return fail(format!(
                        "{}: counter {n} did not advance past {counter}\n{}",
                        p.name,
                        p.tail()
                    ));
                }
            }
        }
        Ok(())
    }
}

/// The number after the last `prefix` in `text`.
fn last_counter(text: &str, prefix: &str) -> Option<u64> {
    let at = text.rfind(prefix)? + prefix.len();
    let digits: String = text[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

/// A port that was free a moment ago.
fn free_port() -> Res<u16> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| Failure(format!("no free port: {e}")))
}

fn ours(mib: u64) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_vmm-reference"));
    c.args(["--memory", &mib.to_string(), "--vcpus", "1"])
        .args(["--serial", "stdio"]);
    c
}

fn qemu(elf: &Path, load: Load, qmp: &Path) -> Command {
    let mut c = Command::new(QEMU);
    c.args([
        "-M",
        "microvm",
        "-enable-kvm",
        "-m",
        &MEMORY_MIB.to_string(),
    ])
    .args(["-nodefaults", "-no-user-config", "-display", "none"])
    .args(["-no-reboot", "-serial", "stdio", "-kernel"])
    .arg(elf)
    .args(["-append", &load.cmdline(), "-qmp"])
    .arg(format!("unix:{},server=on,wait=off", qmp.display()));
    c
}

fn have_qemu() -> bool {
    Command::new(QEMU)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

// ---------------------------------------------------------------------------
// Measurements.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Who {
    OursTcp,
    OursUnix,
    Qemu,
}

impl Who {
    fn name(self) -> &'static str {
        match self {
            Who::OursTcp => "vmm-reference tcp",
            Who::OursUnix => "vmm-reference unix",
            Who::Qemu => "qemu microvm tcp",
        }
    }
}

/// One working migration.
#[derive(Clone, Copy, Debug)]
struct Migration {
    /// `migrate` sent to guest resumed on the destination, ms.
    total_ms: f64,
    /// Source paused to destination resumed, from the VMMs' timestamps, ms.
    downtime_ms: f64,
    /// The VMM's own `query-migrate` figures, ms, when caught.
    reported_downtime_ms: Option<f64>,
    reported_total_ms: Option<f64>,
    bytes: u64,
    rounds: u64,
}

/// Parses vmm-reference's `migration received: N pages, B bytes, R rounds;
/// downtime X ms (source paused at P ns, resuming at Q ns)`: (B, R, X, Q).
fn parse_received(line: &str) -> Option<(u64, u64, f64, u64)> {
    let num = |after: &str| -> Option<&str> {
        let at = line.find(after)? + after.len();
        let rest = line[at..].trim_start();
        let end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        Some(&rest[..end])
    };
    let bytes = num("pages, ")?.parse().ok()?;
    let rounds = num("bytes, ")?.parse().ok()?;
    let downtime = num("; downtime ")?.parse().ok()?;
    let resumed = num("resuming at ")?.parse().ok()?;
    Some((bytes, rounds, downtime, resumed))
}

struct Bench {
    dir: PathBuf,
    elf: PathBuf,
    mib: u64,
}

impl Bench {
    /// vmm-reference → vmm-reference over `unix` or loopback TCP.
    fn migrate_ours(&self, load: Load, unix: bool, tag: &str) -> Res<Migration> {
        let uri = if unix {
            let p = self.dir.join(format!("{tag}.mig"));
            format!("unix:{}", p.display())
        } else {
            format!("tcp:127.0.0.1:{}", free_port()?)
        };
        let mut dst = Proc::spawn("destination", ours(self.mib).args(["--incoming", &uri]))?;
        // The destination says when it listens; wait for that before the
        // source connects.
        dst.wait_err("waiting for the incoming migration", STEP_LIMIT)?;
        let sock = self.dir.join(format!("{tag}.qmp"));
        let src = Proc::spawn(
            "source",
            ours(self.mib)
                .args(["--cmdline", &load.cmdline(), "--api-socket"])
                .arg(&sock),
        )?;
        let counter = load.ready(&src)?;
        let mut q = Qmp::connect(&sock, STEP_LIMIT)?;
        let t0 = unix_ns();
        q.call("migrate", Some(json!({ "uri": uri })))?;
        // Poll until the source says it is done or goes away (it exits once
        // the destination runs the guest).
        let mut last = Value::Null;
        let deadline = Instant::now() + STEP_LIMIT;
        while Instant::now() < deadline {
            match q.call("query-migrate", None) {
                Ok(v) => {
                    let status = v["status"].as_str().unwrap_or("").to_string();
                    last = v;
                    if matches!(status.as_str(), "completed" | "failed" | "cancelled") {
                        break;
                    }
                }
                Err(_) => break,
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        if matches!(last["status"].as_str(), Some("failed" | "cancelled")) {
            return fail(format!(
                "migration {}: {last}\n{}",
                last["status"],
                src.tail()
            ));
        }
        let line = dst.err_line("migration received:", STEP_LIMIT)?;
        let (bytes, rounds, downtime_ms, resumed_ns) =
            parse_received(&line).ok_or_else(|| Failure(format!("cannot parse {line:?}")))?;
        let completed = last["status"] == "completed";
        let from = 0;
        load.check(&mut dst, from, tag, counter)?;
        dst.type_in("poweroff\n")?;
        dst.wait_exit(STEP_LIMIT)?;
        let mut src = src;
        let st = src.wait_exit(STEP_LIMIT)?;
        if !st.success() {
            return fail(format!("source exited with {st}\n{}", src.tail()));
        }
        Ok(Migration {
            total_ms: resumed_ns.saturating_sub(t0) as f64 / 1e6,
            downtime_ms,
            reported_downtime_ms: completed.then(|| last["downtime"].as_f64()).flatten(),
            reported_total_ms: completed.then(|| last["total-time"].as_f64()).flatten(),
            bytes,
            rounds,
        })
    }

    /// QEMU → QEMU over loopback TCP.
    fn migrate_qemu(&self, load: Load, tag: &str) -> Res<Migration> {
        let port = free_port()?;
        let dsock = self.dir.join(format!("{tag}.qdst"));
        let mut dst = Proc::spawn(
            "qemu destination",
            qemu(&self.elf, load, &dsock).args(["-incoming", &format!("tcp:127.0.0.1:{port}")]),
        )?;
        // QMP answers once the incoming socket listens.
        let mut dq = Qmp::connect(&dsock, STEP_LIMIT)?;
        let st = dq.call("query-status", None)?;
        if st["status"] != "inmigrate" {
            return fail(format!("qemu destination status {st}"));
        }
        let ssock = self.dir.join(format!("{tag}.qsrc"));
        let mut src = Proc::spawn("qemu source", &mut qemu(&self.elf, load, &ssock))?;
        let counter = load.ready(&src)?;
        let mut q = Qmp::connect(&ssock, STEP_LIMIT)?;
        q.call(
            "migrate-set-parameters",
            Some(json!({ "max-bandwidth": QEMU_MAX_BANDWIDTH })),
        )?;
        let t0 = unix_ns();
        q.call(
            "migrate",
            Some(json!({ "uri": format!("tcp:127.0.0.1:{port}") })),
        )?;
        let deadline = Instant::now() + STEP_LIMIT;
        let last = loop {
            let v = q.call("query-migrate", None)?;
            match v["status"].as_str() {
                Some("completed") => break v,
                Some("failed" | "cancelled") => {
                    return fail(format!("qemu migration: {v}\n{}", src.tail()))
                }
                _ if Instant::now() > deadline => {
                    return fail(format!("qemu migration not done: {v}"))
                }
                _ => std::thread::sleep(Duration::from_millis(1)),
            }
        };
        let stop = q.event("STOP", STEP_LIMIT)?;
        let resume = dq.event("RESUME", STEP_LIMIT)?;
        let (stop_ns, resume_ns) = event_ns(&stop)
            .zip(event_ns(&resume))
            .ok_or_else(|| Failure(format!("events without timestamps: {stop} {resume}")))?;
        load.check(&mut dst, 0, tag, counter)?;
        let _ = q.call("quit", None);
        let _ = dq.call("quit", None);
        src.wait_exit(STEP_LIMIT)?;
        dst.wait_exit(STEP_LIMIT)?;
        Ok(Migration {
            total_ms: resume_ns.saturating_sub(t0) as f64 / 1e6,
            downtime_ms: resume_ns.saturating_sub(stop_ns) as f64 / 1e6,
            reported_downtime_ms: last["downtime"].as_f64(),
            reported_total_ms: last["total-time"].as_f64(),
            bytes: last["ram"]["transferred"].as_u64().unwrap_or(0),
            rounds: last["ram"]["dirty-sync-count"].as_u64().unwrap_or(0),
        })
    }

    /// `snapshot-save`, then `--restore` in a new process.
    fn snapshot(&self, load: Load, tag: &str) -> Res<Snapshot> {
        let sock = self.dir.join(format!("{tag}.qmp"));
        let snap = self.dir.join(format!("{tag}.snap"));
        let mut src = Proc::spawn(
            "snapshot source",
            ours(self.mib)
                .args(["--cmdline", &load.cmdline(), "--api-socket"])
                .arg(&sock),
        )?;
        let counter = load.ready(&src)?;
        let mut q = Qmp::connect(&sock, STEP_LIMIT)?;
        let t = Instant::now();
        let r = q.call("snapshot-save", Some(json!({ "path": snap })))?;
        let save_wall = t.elapsed();
        let paused_ms = r["paused-ms"]
            .as_f64()
            .ok_or_else(|| Failure(format!("snapshot-save answered {r}")))?;
        let data_pages = r["data-pages"].as_u64().unwrap_or(0);
        let _ = q.call("quit", None);
        src.wait_exit(STEP_LIMIT)?;

        let mut rp = Proc::spawn("restored", ours(self.mib).arg("--restore").arg(&snap))?;
        // Typed at once: the answer is the guest's first output.
        match load {
            Load::Idle => rp.type_in(&format!("echo {tag}\n"))?,
            Load::Dirty(_) => rp.type_in("\n")?,
        }
        let line = rp.err_line("restored the snapshot", STEP_LIMIT)?;
        let (_, msg_at) = rp.wait_err("restored the snapshot", STEP_LIMIT)?;
        let reported_ms: f64 = line
            .rsplit_once('(')
            .and_then(|(_, r)| r.split_whitespace().next())
            .and_then(|x| x.parse().ok())
            .ok_or_else(|| Failure(format!("cannot parse {line:?}")))?;
        let first = rp
            .out
            .first_after(0, Instant::now() + STEP_LIMIT)
            .ok_or_else(|| Failure(format!("no output after restore\n{}", rp.tail())))?;
        // The typed input is already queued: check without typing again.
        match load {
            Load::Idle => {
                rp.wait_out(&format!("\n{tag}"), 0, STEP_LIMIT)?;
            }
            Load::Dirty(_) => {
                let (end, _) = rp.wait_out("dirty: verify ", 0, STEP_LIMIT)?;
                rp.wait_out("\n", end, STEP_LIMIT)?;
                let text = rp.out.text();
                let n = last_counter(&text, "dirty: stopped, counter ").unwrap_or(0);
                if !text.contains("dirty: verify ok") || n <= counter {
                    return fail(format!(
                        "restored workload: counter {n} (saved after {counter}) or verify failed\n{}",
                        rp.tail()
                    ));
                }
            }
        }
        rp.type_in("poweroff\n")?;
        rp.wait_exit(STEP_LIMIT)?;
        let disk = dir_blocks(&snap);
        let _ = std::fs::remove_dir_all(&snap);
        Ok(Snapshot {
            paused_ms,
            save_wall_ms: save_wall.as_secs_f64() * 1e3,
            restore_reported_ms: reported_ms,
            spawn_to_message_ms: (msg_at - rp.spawned).as_secs_f64() * 1e3,
            spawn_to_output_ms: (first - rp.spawned).as_secs_f64() * 1e3,
            data_pages,
            disk_bytes: disk,
        })
    }
}

/// Bytes a snapshot directory takes on disk.
fn dir_blocks(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.blocks() * 512)
                .sum()
        })
        .unwrap_or(0)
}

#[derive(Clone, Copy, Debug)]
struct Snapshot {
    paused_ms: f64,
    save_wall_ms: f64,
    restore_reported_ms: f64,
    spawn_to_message_ms: f64,
    spawn_to_output_ms: f64,
    data_pages: u64,
    disk_bytes: u64,
}

// ---------------------------------------------------------------------------
// Report.

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn range(v: &[f64]) -> (f64, f64) {
    v.iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &x| {
            (lo.min(x), hi.max(x))
        })
}

/// Medians of a set of migrations.
#[derive(Clone, Copy, Debug)]
struct MigMedians {
    n: usize,
    total: f64,
    total_range: (f64, f64),
    downtime: f64,
    downtime_range: (f64, f64),
    reported_downtime: f64,
    reported_caught: usize,
    reported_total: f64,
    reported_total_caught: usize,
    bytes: f64,
    rounds: f64,
}

fn mig_medians(s: &[Migration]) -> MigMedians {
    let dt: Vec<f64> = s.iter().map(|m| m.downtime_ms).collect();
    let rep: Vec<f64> = s.iter().filter_map(|m| m.reported_downtime_ms).collect();
    let rep_total: Vec<f64> = s.iter().filter_map(|m| m.reported_total_ms).collect();
    let total: Vec<f64> = s.iter().map(|m| m.total_ms).collect();
    MigMedians {
        n: s.len(),
        total: median(total.clone()),
        total_range: range(&total),
        downtime: median(dt.clone()),
        downtime_range: range(&dt),
        reported_caught: rep.len(),
        reported_downtime: median(rep),
        reported_total_caught: rep_total.len(),
        reported_total: median(rep_total),
        bytes: median(s.iter().map(|m| m.bytes as f64).collect()),
        rounds: median(s.iter().map(|m| m.rounds as f64).collect()),
    }
}

fn opt(x: f64, prec: usize) -> String {
    if x.is_nan() {
        "n/a".to_string()
    } else {
        format!("{x:.prec$}")
    }
}

fn print_migrations(loads: &[Load], results: &[(Load, Who, Vec<Migration>)]) {
    println!(
        "{:<10} {:<18} {:>2} {:>22} {:>20} {:>10} {:>10} {:>8} {:>6}",
        "guest",
        "VMM",
        "n",
        "total ms (range)",
        "downtime ms (range)",
        "own dt ms",
        "own tt ms",
        "MiB sent",
        "rounds"
    );
    for &load in loads {
        for (l, who, s) in results {
            if *l != load || s.is_empty() {
                continue;
            }
            let m = mig_medians(s);
            let (own_dt, own_tt) = if *who == Who::Qemu {
                (opt(m.reported_downtime, 0), opt(m.reported_total, 0))
            } else {
                let caught = |x: f64, k: usize| format!("{} ({k}/{})", opt(x, 0), m.n);
                (
                    caught(m.reported_downtime, m.reported_caught),
                    caught(m.reported_total, m.reported_total_caught),
                )
            };
            println!(
                "{:<10} {:<18} {:>2} {:>7.1} ({:>6.1}-{:>6.1}) {:>6.2} ({:>5.1}-{:>5.1}) {:>10} {:>10} {:>8.2} {:>6}",
                load.name(),
                who.name(),
                m.n,
                m.total,
                m.total_range.0,
                m.total_range.1,
                m.downtime,
                m.downtime_range.0,
                m.downtime_range.1,
                own_dt,
                own_tt,
                m.bytes / (1 << 20) as f64,
                opt(m.rounds, 0)
            );
        }
        let find = |w: Who| {
            results
                .iter()
                .find(|(l, who, s)| *l == load && *who == w && !s.is_empty())
                .map(|(_, _, s)| mig_medians(s))
        };
        if let Some(q) = find(Who::Qemu) {
            for w in [Who::OursTcp, Who::OursUnix] {
                if let Some(o) = find(w) {
                    println!(
                        "{:<10} ratio {} / qemu: total {:.3}, downtime {:.3} (vs qemu's own downtime {}), bytes {:.3}",
                        load.name(),
                        w.name(),
                        o.total / q.total,
                        o.downtime / q.downtime,
                        if q.reported_downtime > 0.0 {
                            format!("{:.3}", o.downtime / q.reported_downtime)
                        } else {
                            "n/a (qemu reports 0 ms)".to_string()
                        },
                        o.bytes / q.bytes
                    );
                }
            }
        }
    }
}

fn print_snapshots(results: &[(Load, Vec<Snapshot>)]) {
    println!(
        "{:<10} {:>2} {:>10} {:>10} {:>12} {:>13} {:>13} {:>10} {:>9}",
        "guest",
        "n",
        "paused ms",
        "save ms",
        "restore ms",
        "spawn→msg ms",
        "spawn→out ms",
        "data MiB",
        "disk MiB"
    );
    for (load, s) in results {
        if s.is_empty() {
            continue;
        }
        let med = |f: fn(&Snapshot) -> f64| median(s.iter().map(f).collect());
        println!(
            "{:<10} {:>2} {:>10.1} {:>10.1} {:>12.2} {:>13.1} {:>13.1} {:>10.1} {:>9.1}",
            load.name(),
            s.len(),
            med(|x| x.paused_ms),
            med(|x| x.save_wall_ms),
            med(|x| x.restore_reported_ms),
            med(|x| x.spawn_to_message_ms),
            med(|x| x.spawn_to_output_ms),
            med(|x| (x.data_pages * 4096) as f64) / (1 << 20) as f64,
            med(|x| x.disk_bytes as f64) / (1 << 20) as f64,
        );
    }
}

/// The goals against the medians.
fn print_goals(
    loads: &[Load],
    migrations: &[(Load, Who, Vec<Migration>)],
    snapshots: &[(Load, Vec<Snapshot>)],
) {
    let verdict = |ok: bool| if ok { "met" } else { "NOT met" };
    let find = |load: Load, w: Who| {
        migrations
            .iter()
            .find(|(l, who, s)| *l == load && *who == w && !s.is_empty())
            .map(|(_, _, s)| mig_medians(s))
    };
    for w in [Who::OursTcp, Who::OursUnix] {
        if let Some(m) = find(Load::Idle, w) {
            println!(
                "goal: idle downtime <= 10 ms, {}: {:.2} ms, {}",
                w.name(),
                m.downtime,
                verdict(m.downtime <= 10.0)
            );
        }
    }
    for &load in loads {
        let Some(q) = find(load, Who::Qemu) else {
            continue;
        };
        for w in [Who::OursTcp, Who::OursUnix] {
            if let Some(m) = find(load, w) {
                println!(
                    "goal: below qemu, {} {}: downtime {:.2} vs {:.2} ms (qemu's own {}) {}, total {:.1} vs {:.1} ms {}",
                    load.name(),
                    w.name(),
                    m.downtime,
                    q.downtime,
                    opt(q.reported_downtime, 0),
                    verdict(m.downtime < q.downtime && m.downtime < q.reported_downtime.max(0.0)),
                    m.total,
                    q.total,
                    verdict(m.total < q.total)
                );
            }
        }
    }
    for (load, s) in snapshots {
        if s.is_empty() {
            continue;
        }
        let restore = median(s.iter().map(|x| x.restore_reported_ms).collect());
        println!(
            "goal: restore to running <= 5 ms, {}: {:.2} ms (VMM message), {}",
            load.name(),
            restore,
            verdict(restore <= 5.0)
        );
    }
}

fn env_number(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) => v
            .trim()
            .parse::<u64>()
            .ok()
            .filter(|&n| n > 0)
            .unwrap_or_else(|| panic!("{name}={v:?}: want a positive integer")),
        Err(_) => default,
    }
}

fn main() {
    let bench = std::env::args().any(|a| a == "--bench");
    let require = std::env::var(kvmkit_test_support::REQUIRE_ENV).ok();
    match kvmkit_test_support::gate(
        kvmkit_test_support::KVM_PATH,
        require.as_deref(),
        "migration bench",
    ) {
        kvmkit_test_support::Gate::Run => {}
        kvmkit_test_support::Gate::Skip(msg) => {
            println!("{msg}");
            return;
        }
        kvmkit_test_support::Gate::Fail(msg) => panic!("{msg}"),
    }
    let dir = std::env::temp_dir().join(format!("kvmkit-migration-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)
        .unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
    let elf = dir.join("test-guest.elf");

    if !bench {
        let b = Bench {
            dir: dir.clone(),
            elf,
            mib: SMOKE_MIB,
        };
        let m = b.migrate_ours(Load::Idle, true, "smoke");
        let s = b.snapshot(Load::Idle, "smoke-snap");
        let _ = std::fs::remove_dir_all(&dir);
        let m = m.unwrap_or_else(|Failure(e)| panic!("migration smoke: {e}"));
        let s = s.unwrap_or_else(|Failure(e)| panic!("snapshot smoke: {e}"));
        println!(
            "migration smoke: {SMOKE_MIB} MiB idle over a Unix socket: total {:.1} ms, downtime {:.2} ms, {} bytes; snapshot paused {:.1} ms, restore {:.2} ms",
            m.total_ms, m.downtime_ms, m.bytes, s.paused_ms, s.restore_reported_ms
        );
        return;
    }

    let rounds = usize::try_from(env_number(ROUNDS_ENV, DEFAULT_ROUNDS as u64)).unwrap_or(1);
    let dirty = env_number(DIRTY_ENV, DEFAULT_DIRTY_PAGES);
    let with_qemu = have_qemu();
    if with_qemu {
        kvmkit_test_guest::write_elf(&elf)
            .unwrap_or_else(|e| panic!("cannot write the test guest to {}: {e}", elf.display()));
    } else {
        println!(
            "{QEMU} not found (Debian: apt-get install -y qemu-system-x86): QEMU runs skipped"
        );
    }
    let b = Bench {
        dir: dir.clone(),
        elf,
        mib: MEMORY_MIB,
    };
    let loads = [Load::Idle, Load::Dirty(dirty)];
    let mut whos = vec![Who::OursTcp, Who::OursUnix];
    if with_qemu {
        whos.push(Who::Qemu);
    }
    let mut migrations: Vec<(Load, Who, Vec<Migration>)> = loads
        .iter()
        .flat_map(|&l| whos.iter().map(move |&w| (l, w, Vec::new())))
        .collect();
    let mut snapshots: Vec<(Load, Vec<Snapshot>)> =
        loads.iter().map(|&l| (l, Vec::new())).collect();
    let mut failures = Vec::new();
    let started = Instant::now();
    for round in 0..rounds {
        for &load in &loads {
            // Rotate which VMM goes first.
            let mut order = whos.clone();
            order.rotate_left(round % whos.len());
            for who in order {
                let tag = format!("r{round}-{}-{who:?}", load.name().replace(':', ""));
                let r = match who {
                    Who::OursTcp => b.migrate_ours(load, false, &tag),
                    Who::OursUnix => b.migrate_ours(load, true, &tag),
                    Who::Qemu => b.migrate_qemu(load, &tag),
                };
                match r {
                    Ok(m) => {
                        eprintln!(
                            "round {round} {} {}: total {:.1} ms, downtime {:.2} ms, {} bytes, {} rounds",
                            load.name(),
                            who.name(),
                            m.total_ms,
                            m.downtime_ms,
                            m.bytes,
                            m.rounds
                        );
                        if let Some(e) = migrations
                            .iter_mut()
                            .find(|(l, w, _)| *l == load && *w == who)
                        {
                            e.2.push(m);
                        }
                    }
                    Err(Failure(e)) => {
                        eprintln!("round {round} {} {}: FAILED {e}", load.name(), who.name());
                        failures.push(e);
                    }
                }
            }
            let tag = format!("r{round}-{}-snap", load.name().replace(':', ""));
            match b.snapshot(load, &tag) {
                Ok(s) => {
                    eprintln!(
                        "round {round} {} snapshot: paused {:.1} ms, restore {:.2} ms, first output {:.1} ms",
                        load.name(),
                        s.paused_ms,
                        s.restore_reported_ms,
                        s.spawn_to_output_ms
                    );
                    if let Some(e) = snapshots.iter_mut().find(|(l, _)| *l == load) {
                        e.1.push(s);
                    }
                }
                Err(Failure(e)) => {
                    eprintln!("round {round} {} snapshot: FAILED {e}", load.name());
                    failures.push(e);
                }
            }
        }
    }
    let _ = std::fs::remove_dir_all(&dir);

    println!(
        "migration bench: test guest, {MEMORY_MIB} MiB, 1 vCPU, idle and dirty:{dirty}; {rounds} rounds ({:.0} s), medians",
        started.elapsed().as_secs_f64()
    );
    println!(
        "total: migrate sent -> guest resumed on the destination; downtime: source paused -> destination resumed (VMM timestamps: \
         vmm-reference's destination message, QEMU's STOP/RESUME events); own dt/tt: the VMM's query-migrate downtime/total-time \
         (vmm-reference: caught in k of n runs)"
    );
    print_migrations(&loads, &migrations);
    println!("snapshots (vmm-reference): paused-ms and wall time of snapshot-save; restore: the VMM's message; spawn→msg/out: process start to that message / to the guest's first serial output");
    print_snapshots(&snapshots);
    print_goals(&loads, &migrations, &snapshots);
    assert!(
        failures.is_empty(),
        "{} failed runs (above)",
        failures.len()
    );
}
