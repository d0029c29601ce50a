//! `vmm-reference qmp PATH migrate ARGS`: start a migration, then watch it
//! to its end with a progress display.
//!
//! The client runs `migrate`, then asks `query-migrate` every
//! [`MIGRATE_POLL_INTERVAL`] on the same connection, which also carries the
//! `MIGRATION` events. It reports success only when the VMM itself said
//! `completed` (in a `query-migrate` reply or a `MIGRATION` event), never by
//! inference:
//!
//! - `completed` → success;
//! - `failed` or `cancelled` → failure, with the VMM's `error-desc`;
//! - the connection closes first → failure, unless a `MIGRATION` event read
//!   before the close said `completed`.
//!
//! The last rule is what makes a completed migration's usual end safe to
//! judge: the source VMM exits by itself once the destination has the guest,
//! and it emits the `completed` event before it ends the VM, and its QMP
//! server sends every queued event before it closes a connection (see
//! `events.rs`). A source that dies during the migration closes the
//! connection without that event: reported as a failure, as it should be.

use super::client::Conn;
use super::error::{Error, Result};
use serde_json::{Map, Value};
use std::io::Write;
use std::path::Path;
use std::time::Duration;

/// How often the client asks `query-migrate`.
pub const MIGRATE_POLL_INTERVAL: Duration = Duration::from_millis(100);

fn terminal(status: &str) -> bool {
    matches!(status, "completed" | "failed" | "cancelled")
}

/// The status of the first `MIGRATION` event in `events` that ends a
/// migration; the events up to it are consumed.
fn ending_event(events: &mut Vec<Value>) -> Option<String> {
    let i = events.iter().position(|e| {
        e["event"] == "MIGRATION" && e["data"]["status"].as_str().is_some_and(terminal)
    })?;
    let e = events.drain(..=i).next_back()?;
    e["data"]["status"].as_str().map(str::to_string)
}

/// Turns a final status into the result; `info` is the VMM's last
/// `MigrationInfo`.
fn finish(status: &str, info: Value) -> Result<Value> {
    if status == "completed" {
        return Ok(info);
    }
    Err(Error::Migration {
        status: status.to_string(),
        desc: info["error-desc"]
            .as_str()
            .unwrap_or("no reason given")
            .to_string(),
    })
}

/// Runs `migrate` with `arguments` on the QMP server at `path`, then asks
/// `query-migrate` every `interval`, passing each reply (QEMU's
/// `MigrationInfo`) to `progress`, until the migration ends (see the module
/// documentation for how the end is judged).
///
/// Returns the last `MigrationInfo` when the migration completed (the
/// completed one if the VMM still answered, else the last one seen);
/// [`Error::Migration`] when it failed or was cancelled;
/// [`Error::MigrationLost`] when the VMM closed the connection without
/// saying it completed; [`Error::Command`] when `migrate` itself was
/// refused.
///
/// ```no_run
/// use kvmkit_vmm_reference::qmp::{migrate, MIGRATE_POLL_INTERVAL};
/// let args = serde_json::json!({"uri": "tcp:10.0.0.2:4444"});
/// let info = migrate(
///     std::path::Path::new("/tmp/vm.sock"),
///     args.as_object().cloned(),
///     MIGRATE_POLL_INTERVAL,
///     &mut |i| eprintln!("{}", i["ram"]["transferred"]),
/// )?;
/// println!("{} rounds", info["ram"]["dirty-sync-count"]);
/// # Ok::<(), kvmkit_vmm_reference::qmp::Error>(())
/// ```
pub fn migrate(
    path: &Path,
    arguments: Option<Map<String, Value>>,
    interval: Duration,
    progress: &mut dyn FnMut(&Value),
) -> Result<Value> {
    let mut conn = Conn::open(path)?;
    conn.call("migrate", arguments)?;
    let mut last = Value::Null;
    loop {
        let reply = conn.call("query-migrate", None);
        match reply {
            Ok(info) => {
                progress(&info);
                last = info;
                let status = last["status"].as_str().unwrap_or("").to_string();
                if terminal(&status) {
                    return finish(&status, last);
                }
            }
            Err(e @ Error::Command { .. }) => return Err(e),
            Err(_) => {
                // Closed (the VMM exited): what it said before closing is
                // still to be read.
                conn.drain();
                return match ending_event(&mut conn.events) {
                    Some(status) => finish(&status, last),
                    None => Err(Error::MigrationLost {
                        last: last["status"].as_str().unwrap_or("unknown").to_string(),
                    }),
                };
            }
        }
        if let Some(status) = ending_event(&mut conn.events) {
            // The figures of the end, if the VMM still answers.
            if let Ok(info) = conn.call("query-migrate", None) {
                if info["status"] == status.as_str() {
                    progress(&info);
                    last = info;
                }
            }
            return finish(&status, last);
        }
        std::thread::sleep(interval);
    }
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / f64::from(1u32 << 20)
}

/// One progress line for `info` (a `MigrationInfo`): with `bar`, a bar of
/// the RAM the first round has covered, for a terminal line redrawn with
/// `\r`; without, a plain line for logs.
///
/// ```
/// use kvmkit_vmm_reference::qmp::progress_line;
/// let info = serde_json::json!({"status": "active", "ram": {
///     "transferred": 3145728, "total": 67108864, "remaining": 1048576,
///     "normal": 256, "duplicate": 7936, "page-size": 4096,
///     "dirty-sync-count": 1, "dirty-pages-rate": 1200, "mbps": 800.5}});
/// assert_eq!(
///     progress_line(&info, false),
///     "migrate: active, round 1, 3.0 MiB sent, 50% of 64.0 MiB RAM covered, \
///      1.0 MiB left in this round, 1200 dirty pages/s, 800.5 Mbit/s"
/// );
/// assert!(progress_line(&info, true).starts_with("migrate [##########----------]  50% active"));
/// assert_eq!(progress_line(&serde_json::json!({"status": "setup"}), true), "migrate: setup");
/// ```
pub fn progress_line(info: &Value, bar: bool) -> String {
    let ram = &info["ram"];
    let n = |k: &str| ram[k].as_u64().unwrap_or(0);
    let status = info["status"].as_str().unwrap_or("unknown");
    let total = n("total");
    if total == 0 {
        // Connecting: no figures yet.
        return format!("migrate: {status}");
    }
    let page = ram["page-size"].as_u64().unwrap_or(4096);
    let covered = (n("normal") + n("duplicate")).saturating_mul(page);
    let pct = (covered.min(total) * 100).checked_div(total).unwrap_or(0);
    let mbps = ram["mbps"].as_f64().unwrap_or(0.0);
    let mut tail = format!(
        "{:.1} MiB left in this round, {} dirty pages/s, {mbps:.1} Mbit/s",
        mib(n("remaining")),
        n("dirty-pages-rate"),
    );
    if let Some(d) = info["downtime"].as_u64() {
        tail.push_str(&format!(", downtime {d} ms"));
    }
    if let Some(e) = info["error-desc"].as_str() {
        tail.push_str(&format!(", error: {e}"));
    }
    if bar {
        const WIDTH: u64 = 20;
        let filled = usize::try_from(pct * WIDTH / 100).unwrap_or(0);
        let empty = usize::try_from(WIDTH).unwrap_or(0).saturating_sub(filled);
        format!(
            "migrate [{}{}] {pct:>3}% {status}, round {}, {:.1} MiB sent, {tail}",
            "#".repeat(filled),
            "-".repeat(empty),
            n("dirty-sync-count"),
            mib(n("transferred")),
        )
    } else {
        format!(
            "migrate: {status}, round {}, {:.1} MiB sent, {pct}% of {:.1} MiB RAM covered, {tail}",
            n("dirty-sync-count"),
            mib(n("transferred")),
            mib(total),
        )
    }
}

/// [`migrate`] with its display on `out`: on a terminal (`tty`), one line
/// redrawn in place (`\r`, erase to the end of the line) at every poll;
/// otherwise a plain line whenever the status or the round changes. A
/// completed migration ends with a summary line; an error is the caller's
/// to report.
///
/// ```no_run
/// use kvmkit_vmm_reference::qmp::{migrate_with_progress, MIGRATE_POLL_INTERVAL};
/// use std::io::IsTerminal;
/// let args = serde_json::json!({"uri": "unix:/tmp/mig.sock"});
/// let tty = std::io::stderr().is_terminal();
/// migrate_with_progress(
///     std::path::Path::new("/tmp/vm.sock"),
///     args.as_object().cloned(),
///     MIGRATE_POLL_INTERVAL,
///     &mut std::io::stderr(),
///     tty,
/// )?;
/// # Ok::<(), kvmkit_vmm_reference::qmp::Error>(())
/// ```
pub fn migrate_with_progress(
    path: &Path,
    arguments: Option<Map<String, Value>>,
    interval: Duration,
    out: &mut dyn Write,
    tty: bool,
) -> Result<Value> {
    // The display is best effort: a closed stderr does not stop the
    // migration.
    let mut shown: Option<(String, u64)> = None;
    let res = migrate(path, arguments, interval, &mut |info| {
        if tty {
            let _ = write!(out, "\r{}\x1b[K", progress_line(info, true));
            let _ = out.flush();
            return;
        }
        let key = (
            info["status"].as_str().unwrap_or("").to_string(),
            info["ram"]["dirty-sync-count"].as_u64().unwrap_or(0),
        );
        if shown.as_ref() != Some(&key) {
            let _ = writeln!(out, "{}", progress_line(info, false));
            shown = Some(key);
        }
    });
    if tty {
        let _ = writeln!(out);
    }
    if let Ok(info) = &res {
        let ram = &info["ram"];
        let mut line = format!(
            "migrate: completed, {:.1} MiB sent in {} rounds",
            mib(ram["transferred"].as_u64().unwrap_or(0)),
            ram["dirty-sync-count"].as_u64().unwrap_or(0)
        );
        if let Some(d) = info["downtime"].as_u64() {
            line.push_str(&format!(", downtime {d} ms"));
        }
        if info["status"] != "completed" {
            line.push_str(" (figures of the last poll; the source VMM has exited)");
        }
        let _ = writeln!(out, "{line}");
    }
    // An error is the caller's to report, as for any command.
    res
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader};
    use std::os::unix::net::UnixListener;

    const GREET: &str = "{\"QMP\": {\"version\": {}, \"capabilities\": []}}\r\n";
    const OK: &str = "{\"return\": {}, \"id\": \"vmm-reference-qmp\"}\r\n";

    /// A fake VMM: greets, then answers each request with the next of
    /// `replies` (events may precede a reply in the same string); once
    /// they run out it closes the connection.
    fn fake(tag: &str, replies: Vec<String>) -> std::path::PathBuf {
        let path = std::env::temp_dir().join(format!(
            "kvmkit-migrate-watch-{tag}-{}.sock",
            std::process::id()
        ));
        let _ = std::fs::remove_file(&path);
        let l = UnixListener::bind(&path).unwrap();
        std::thread::spawn(move || {
            let (s, _) = l.accept().unwrap();
            let mut w = s.try_clone().unwrap();
            let mut r = BufReader::new(s);
            w.write_all(GREET.as_bytes()).unwrap();
            for reply in replies {
                let mut line = String::new();
                if r.read_line(&mut line).unwrap_or(0) == 0 {
                    return;
                }
                w.write_all(reply.as_bytes()).unwrap();
            }
        });
        path
    }

    fn info(status: &str, rounds: u64, extra: &str) -> String {
        format!(
            "{{\"return\": {{\"status\": \"{status}\"{extra}, \"ram\": {{\"transferred\": 1048576, \
             \"total\": 4194304, \"remaining\": 0, \"normal\": 256, \"duplicate\": 768, \
             \"page-size\": 4096, \"dirty-sync-count\": {rounds}, \"dirty-pages-rate\": 0, \
             \"mbps\": 8.0}}}}, \"id\": \"vmm-reference-qmp\"}}\r\n"
        )
    }

    fn event(status: &str) -> String {
        format!("{{\"event\": \"MIGRATION\", \"data\": {{\"status\": \"{status}\"}}}}\r\n")
    }

    fn run(tag: &str, replies: Vec<String>, tty: bool) -> (Result<Value>, String) {
        let p = fake(tag, replies);
        let mut out = Vec::new();
        let r = migrate_with_progress(&p, None, Duration::ZERO, &mut out, tty);
        (r, String::from_utf8(out).unwrap())
    }

    #[test]
    fn completed_in_a_reply() {
        let (r, out) = run(
            "done",
            vec![
                OK.into(),
                OK.into(),
                info("setup", 0, ""),
                info("active", 0, ""),
                info("active", 0, ""),
                info("active", 1, ""),
                event("completed") + &info("completed", 2, ", \"downtime\": 7"),
            ],
            false,
        );
        assert_eq!(r.unwrap()["status"], "completed");
        let lines: Vec<&str> = out.lines().collect();
        // One line per status or round change, then the summary.
        assert_eq!(lines.len(), 5, "{out}");
        assert!(
            lines[0]
                .starts_with("migrate: setup, round 0, 1.0 MiB sent, 100% of 4.0 MiB RAM covered"),
            "{out}"
        );
        assert!(lines[1].starts_with("migrate: active, round 0"), "{out}");
        assert!(lines[2].starts_with("migrate: active, round 1"), "{out}");
        assert!(lines[3].ends_with("downtime 7 ms"), "{out}");
        assert_eq!(
            lines[4],
            "migrate: completed, 1.0 MiB sent in 2 rounds, downtime 7 ms"
        );
    }

    #[test]
    fn completed_event_then_the_source_exits() {
        // The source said completed, then closed before the next reply.
        let (r, out) = run(
            "event",
            vec![
                OK.into(),
                OK.into(),
                info("device", 3, ""),
                event("completed"),
            ],
            true,
        );
        assert_eq!(r.unwrap()["status"], "device", "the last figures seen");
        assert!(
            out.starts_with("\rmigrate [####################] 100% device, round 3"),
            "{out:?}"
        );
        assert!(out.contains("\x1b[K\n"), "{out:?}");
        assert!(
            out.ends_with("migrate: completed, 1.0 MiB sent in 3 rounds (figures of the last poll; the source VMM has exited)\n"),
            "{out:?}"
        );
    }

    #[test]
    fn closed_without_completed_is_a_failure() {
        let (r, out) = run(
            "lost",
            vec![OK.into(), OK.into(), info("active", 1, "")],
            false,
        );
        let e = r.unwrap_err();
        assert!(
            matches!(&e, Error::MigrationLost { last } if last == "active"),
            "{e}"
        );
        assert_eq!(
            e.to_string(),
            "the VMM closed the QMP connection before the migration completed (last status: active)"
        );
        assert!(!out.contains("completed,"), "{out}");
        // A MIGRATION event that is not an end does not count either.
        let (r, _) = run(
            "lost2",
            vec![OK.into(), OK.into(), info("active", 1, ""), event("active")],
            false,
        );
        assert!(matches!(r, Err(Error::MigrationLost { .. })));
    }

    #[test]
    fn failed_and_cancelled_carry_the_reason() {
        let (r, _) = run(
            "failed",
            vec![
                OK.into(),
                OK.into(),
                info(
                    "failed",
                    0,
                    ", \"error-desc\": \"cannot connect to the destination: refused\"",
                ),
            ],
            false,
        );
        assert_eq!(
            r.unwrap_err().to_string(),
            "migration failed: cannot connect to the destination: refused"
        );
        // The end seen in an event first: the reason comes from one more
        // query-migrate.
        let (r, out) = run(
            "cancelled",
            vec![
                OK.into(),
                OK.into(),
                event("cancelled") + &info("active", 0, ""),
                info(
                    "cancelled",
                    0,
                    ", \"error-desc\": \"the migration was cancelled\"",
                ),
            ],
            false,
        );
        assert_eq!(
            r.unwrap_err().to_string(),
            "migration cancelled: the migration was cancelled"
        );
        assert!(out.contains("migrate: cancelled, round 0"), "{out}");
        // A failure without a reason.
        assert_eq!(
            finish("failed", Value::Null).unwrap_err().to_string(),
            "migration failed: no reason given"
        );
    }

    #[test]
    fn a_refused_migrate_is_the_command_error() {
        let (r, out) = run(
            "refused",
            vec![
                OK.into(),
                "{\"error\": {\"class\": \"GenericError\", \"desc\": \"There's a migration process in progress\"}, \"id\": \"vmm-reference-qmp\"}\r\n".into(),
            ],
            false,
        );
        assert_eq!(
            r.unwrap_err().to_string(),
            "GenericError: There's a migration process in progress"
        );
        assert!(out.is_empty(), "{out}");
    }
}
