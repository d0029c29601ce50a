//! Boot benchmark: the kvmkit test guest under `vmm-reference` and under QEMU
//! (`-M microvm`), both powering off at once
//! (`kvmkit.autorun=poweroff`). For each VMM it reports the medians over the
//! rounds of
//!
//! - the time from spawning the process to the test guest's banner on the
//!   serial console,
//! - the time from spawning the process to its exit,
//! - the peak resident set size (`ru_maxrss` from `wait4`),
//!
//! and the ratios vmm-reference / QEMU. Rounds alternate between the two
//! VMMs so that drift in the host's load affects both alike.
//!
//! `cargo bench -p kvmkit-vmm-reference --bench boot` runs
//! `KVMKIT_BOOT_BENCH_ROUNDS` rounds (default 10) and needs
//! `qemu-system-x86_64` (Debian package `qemu-system-x86`; without it the QEMU
//! rounds are skipped with a message). Without `--bench` (as
//! `cargo test --all-targets` runs it) it is a smoke test: one round of
//! vmm-reference only, which must show the banner and exit with status 0.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc::{channel, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The guest's command line: print the banner, then power off at once.
const CMDLINE: &str = "console=ttyS0 kvmkit.autorun=poweroff";
/// Guest RAM, MiB, for both VMMs.
const MEMORY_MIB: &str = "512";
/// A run that takes longer than this is killed and reported as failed.
const RUN_LIMIT: Duration = Duration::from_secs(120);
/// The environment variable that sets the number of rounds.
const ROUNDS_ENV: &str = "KVMKIT_BOOT_BENCH_ROUNDS";
const DEFAULT_ROUNDS: usize = 10;
const QEMU: &str = "qemu-system-x86_64";

/// One measured run.
#[derive(Debug, Clone, Copy)]
struct Sample {
    banner: Duration,
    exit: Duration,
    maxrss_kib: u64,
}

#[derive(Debug)]
struct Failure(String);

/// Spawns `cmd`, and measures it until it exits (killing it after
/// [`RUN_LIMIT`]); fails if the banner did not appear or the exit status is
/// not 0.
fn measure(name: &str, cmd: &mut Command) -> Result<Sample, Failure> {
    let start = Instant::now();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| Failure(format!("{name}: cannot spawn {cmd:?}: {e}")))?;
    let pid = libc::pid_t::try_from(child.id()).expect("a pid fits pid_t");
    let mut stdout = child.stdout.take().expect("stdout is piped");
    let mut stderr = child.stderr.take().expect("stderr is piped");

    // The console: note when the banner's last byte arrives.
    let reader = std::thread::spawn(move || {
        let mut seen = Vec::new();
        let mut banner = None;
        let mut buf = [0u8; 4096];
        while let Ok(n @ 1..) = stdout.read(&mut buf) {
            seen.extend_from_slice(&buf[..n]);
            if banner.is_none()
                && seen
                    .windows(kvmkit_test_guest::BANNER.len())
                    .any(|w| w == kvmkit_test_guest::BANNER.as_bytes())
            {
                banner = Some(start.elapsed());
            }
        }
        (banner, seen)
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });

    // A watchdog kills the child after RUN_LIMIT, unless it has exited: the
    // flag is set (under the lock) before the zombie is reaped, so the pid
    // cannot have been reused when the watchdog kills.
    let exited = Arc::new(Mutex::new(false));
    let (done, watch) = channel::<()>();
    let watchdog = {
        let exited = exited.clone();
        std::thread::spawn(move || {
            if let Err(RecvTimeoutError::Timeout) = watch.recv_timeout(RUN_LIMIT) {
                let gone = exited.lock().expect("no panics while locked");
                if !*gone {
                    // SAFETY: kill() has no memory-safety preconditions; the
                    // child is not reaped (the flag is false), so `pid` is it.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                }
                return true;
            }
            false
        })
    };

    // Wait for the exit without reaping (WNOWAIT), to timestamp it.
    // SAFETY: siginfo_t is plain old data; all zeroes is a valid value.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    let id = libc::id_t::try_from(pid).expect("a pid is positive");
    // SAFETY: `info` is a valid, writable siginfo_t that outlives the call.
    let rc = unsafe { libc::waitid(libc::P_PID, id, &mut info, libc::WEXITED | libc::WNOWAIT) };
    let exit = start.elapsed();
    assert_eq!(rc, 0, "waitid: {}", std::io::Error::last_os_error());
    *exited.lock().expect("no panics while locked") = true;
    let _ = done.send(());
    let killed = watchdog.join().expect("the watchdog does not panic");

    // Reap it, with its resource usage.
    let mut status = 0;
    // SAFETY: rusage is plain old data; all zeroes is a valid value.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `status` and `usage` are valid and writable for the call; `pid`
    // is our exited, unreaped child.
    let rc = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(rc, pid, "wait4: {}", std::io::Error::last_os_error());
    // `child` is reaped now: drop it without waiting (Child's drop does not).
    drop(child);

    let (banner, console) = reader.join().expect("the console reader does not panic");
    let err = err_reader.join().expect("the stderr reader does not panic");
    let tail = || {
        let c = String::from_utf8_lossy(&console);
        format!("console:\n{c}\nstderr:\n{err}")
    };
    if killed {
        return Err(Failure(format!(
            "{name}: killed after {RUN_LIMIT:?}\n{}",
            tail()
        )));
    }
    let ok = libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0;
    if !ok {
        return Err(Failure(format!(
            "{name}: wait status {status:#x}\n{}",
            tail()
        )));
    }
    let banner = banner.ok_or_else(|| Failure(format!("{name}: no banner\n{}", tail())))?;
    Ok(Sample {
        banner,
        exit,
        maxrss_kib: u64::try_from(usage.ru_maxrss).unwrap_or(0),
    })
}

fn vmm_reference() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_vmm-reference"));
    c.args(["--memory", MEMORY_MIB, "--vcpus", "1", "--cmdline", CMDLINE]);
    c
}

fn qemu(elf: &Path) -> Command {
    let mut c = Command::new(QEMU);
    c.args(["-M", "microvm", "-enable-kvm", "-m", MEMORY_MIB])
        .args(["-nographic", "-no-reboot", "-kernel"])
        .arg(elf)
        .args(["-append", CMDLINE]);
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

fn median<T: Copy + Ord>(mut v: Vec<T>) -> T {
    v.sort_unstable();
    v[v.len() / 2]
}

/// Medians of a VMM's samples: (banner, exit, peak RSS).
fn medians(s: &[Sample]) -> (Duration, Duration, u64) {
    (
        median(s.iter().map(|x| x.banner).collect()),
        median(s.iter().map(|x| x.exit).collect()),
        median(s.iter().map(|x| x.maxrss_kib).collect()),
    )
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn print_row(name: &str, s: &[Sample]) {
    let (b, e, r) = medians(s);
    let min_b = s.iter().map(|x| x.banner).min().unwrap_or_default();
    let max_b = s.iter().map(|x| x.banner).max().unwrap_or_default();
    let min_e = s.iter().map(|x| x.exit).min().unwrap_or_default();
    let max_e = s.iter().map(|x| x.exit).max().unwrap_or_default();
    println!(
        "{name:<15} {:>3} {:>9.1} ({:>6.1}-{:>6.1}) {:>9.1} ({:>6.1}-{:>6.1}) {:>10.1}",
        s.len(),
        ms(b),
        ms(min_b),
        ms(max_b),
        ms(e),
        ms(min_e),
        ms(max_e),
        r as f64 / 1024.0,
    );
}

fn temp_elf() -> PathBuf {
    std::env::temp_dir().join(format!("kvmkit-boot-bench-{}.elf", std::process::id()))
}

fn main() {
    let bench = std::env::args().any(|a| a == "--bench");
    let require = std::env::var(kvmkit_test_support::REQUIRE_ENV).ok();
    match kvmkit_test_support::gate(
        kvmkit_test_support::KVM_PATH,
        require.as_deref(),
        "boot bench",
    ) {
        kvmkit_test_support::Gate::Run => {}
        kvmkit_test_support::Gate::Skip(msg) => {
            println!("{msg}");
            return;
        }
        kvmkit_test_support::Gate::Fail(msg) => panic!("{msg}"),
    }

    if !bench {
        // Smoke test: one round of vmm-reference.
        match measure("vmm-reference", &mut vmm_reference()) {
            Ok(s) => println!(
                "boot smoke: vmm-reference banner {:.1} ms, exit {:.1} ms, peak RSS {:.1} MiB",
                ms(s.banner),
                ms(s.exit),
                s.maxrss_kib as f64 / 1024.0
            ),
            Err(Failure(m)) => panic!("boot smoke: {m}"),
        }
        return;
    }

    let rounds = match std::env::var(ROUNDS_ENV) {
        Ok(v) => v
            .trim()
            .parse::<usize>()
            .ok()
            .filter(|&n| n > 0)
            .unwrap_or_else(|| panic!("{ROUNDS_ENV}={v:?}: want a positive integer")),
        Err(_) => DEFAULT_ROUNDS,
    };
    let elf = temp_elf();
    let with_qemu = have_qemu();
    if with_qemu {
        kvmkit_test_guest::write_elf(&elf)
            .unwrap_or_else(|e| panic!("cannot write the test guest to {}: {e}", elf.display()));
    } else {
        println!(
            "{QEMU} not found (Debian: apt-get install -y qemu-system-x86): QEMU rounds skipped"
        );
    }

    let mut ours = Vec::new();
    let mut theirs = Vec::new();
    let mut failures = Vec::new();
    for round in 0..rounds {
        // Alternate which VMM goes first, too.
        let order: &[bool] = if round % 2 == 0 {
            &[true, false]
        } else {
            &[false, true]
        };
        for &mine in order {
            let r = if mine {
                measure("vmm-reference", &mut vmm_reference()).map(|s| ours.push(s))
            } else if with_qemu {
                measure("qemu", &mut qemu(&elf)).map(|s| theirs.push(s))
            } else {
                Ok(())
            };
            if let Err(Failure(m)) = r {
                eprintln!("round {round}: {m}");
                failures.push(m);
            }
        }
    }
    let _ = std::fs::remove_file(&elf);

    println!(
        "boot bench: test guest, {MEMORY_MIB} MiB, 1 vCPU, `{CMDLINE}`; {rounds} rounds, alternating"
    );
    println!(
        "{:<15} {:>3} {:>26} {:>26} {:>10}",
        "VMM", "n", "banner ms: median (range)", "exit ms: median (range)", "RSS MiB"
    );
    if !ours.is_empty() {
        print_row("vmm-reference", &ours);
    }
    if !theirs.is_empty() {
        print_row("qemu microvm", &theirs);
    }
    if !ours.is_empty() && !theirs.is_empty() {
        let (ob, oe, or) = medians(&ours);
        let (tb, te, tr) = medians(&theirs);
        println!(
            "ratio vmm-reference/qemu: banner {:.3}, exit {:.3}, peak RSS {:.3}",
            ob.as_secs_f64() / tb.as_secs_f64(),
            oe.as_secs_f64() / te.as_secs_f64(),
            or as f64 / tr as f64
        );
    }
    assert!(
        failures.is_empty(),
        "{} failed runs (above)",
        failures.len()
    );
}
