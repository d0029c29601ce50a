//! Runs `vmm-reference` as a child process and watches its serial console.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_vmm-reference");

/// How long a guest may take to do what a test waits for; generous because
/// guest code runs in KVM's instruction emulator on PVM hosts.
pub const BOOT_WAIT: Duration = Duration::from_secs(120);

pub struct Vmm {
    pub child: Child,
    pub stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    pub seen: Vec<String>,
    stderr: Receiver<String>,
    /// Stderr lines already read by [`Vmm::expect_stderr`].
    pub err_seen: Vec<String>,
}

/// A VMM left running by a failing test is killed, not orphaned.
impl Drop for Vmm {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Vmm {
    pub fn spawn(args: &[&str]) -> Vmm {
        Vmm::spawn_program(BIN, args)
    }

    /// Runs `program` (e.g. `ip netns exec NS vmm-reference`) with `args`.
    pub fn spawn_program(program: &str, args: &[&str]) -> Vmm {
        let mut child = Command::new(program)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn vmm-reference");
        let stdin = child.stdin.take();
        let out = child.stdout.take().expect("stdout");
        let err = child.stderr.take().expect("stderr");
        let (tx, lines) = channel();
        std::thread::spawn(move || {
            // Split on '\n' and on the prompt (which ends without a newline).
            let mut r = BufReader::new(out);
            let mut cur = Vec::new();
            let mut b = [0u8; 1];
            while let Ok(1) = r.read(&mut b) {
                if b[0] == b'\n' {
                    let line = String::from_utf8_lossy(&cur)
                        .trim_end_matches('\r')
                        .to_string();
                    let _ = tx.send(line);
                    cur.clear();
                } else {
                    cur.push(b[0]);
                    if cur.ends_with(b"kvmkit> ") {
                        let _ = tx.send(String::from_utf8_lossy(&cur).to_string());
                        cur.clear();
                    }
                }
            }
            if !cur.is_empty() {
                let _ = tx.send(String::from_utf8_lossy(&cur).to_string());
            }
        });
        let (etx, stderr) = channel();
        std::thread::spawn(move || {
            for l in BufReader::new(err).lines().map_while(Result::ok) {
                let _ = etx.send(l);
            }
        });
        Vmm {
            child,
            stdin,
            lines,
            seen: Vec::new(),
            stderr,
            err_seen: Vec::new(),
        }
    }

    /// Waits for a console line containing `pat`; panics with the output so far.
    pub fn expect(&mut self, pat: &str) -> String {
        let deadline = Instant::now() + BOOT_WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => {
                    self.seen.push(l.clone());
                    if l.contains(pat) {
                        return l;
                    }
                }
                Err(_) => {
                    let _ = self.child.kill();
                    panic!(
                        "no line containing {pat:?} within {BOOT_WAIT:?}; console:\n{}\nstderr:\n{}",
                        self.seen.join("\n"),
                        self.stderr.try_iter().collect::<Vec<_>>().join("\n")
                    );
                }
            }
        }
    }

    /// Collects the console lines that arrive within `d` (a quiet window:
    /// waits the whole time).
    pub fn lines_for(&mut self, d: Duration) -> Vec<String> {
        let deadline = Instant::now() + d;
        let mut got = Vec::new();
        while let Ok(l) = self
            .lines
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        {
            self.seen.push(l.clone());
            got.push(l);
        }
        got
    }

    /// Waits for a stderr line containing `pat`; panics with the output so far.
    pub fn expect_stderr(&mut self, pat: &str) -> String {
        let deadline = Instant::now() + BOOT_WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.stderr.recv_timeout(left) {
                Ok(l) => {
                    self.err_seen.push(l.clone());
                    if l.contains(pat) {
                        return l;
                    }
                }
                Err(_) => {
                    let _ = self.child.kill();
                    panic!(
                        "no stderr line containing {pat:?}; stderr:\n{}\nconsole:\n{}",
                        self.err_seen.join("\n"),
                        self.seen.join("\n")
                    );
                }
            }
        }
    }

    pub fn send(&mut self, text: &str) {
        let s = self.stdin.as_mut().expect("stdin");
        s.write_all(text.as_bytes())
            .expect("write to the VMM's stdin");
        s.flush().expect("flush");
    }

    /// Waits for the process to end (bounded), returns its status and stderr.
    pub fn wait(mut self) -> (ExitStatus, String, Vec<String>) {
        let deadline = Instant::now() + BOOT_WAIT;
        loop {
            if let Some(st) = self.child.try_wait().expect("try_wait") {
                // The reader threads end at EOF: everything is read then.
                while let Ok(l) = self.lines.recv_timeout(BOOT_WAIT) {
                    self.seen.push(l);
                }
                let mut err = std::mem::take(&mut self.err_seen);
                while let Ok(l) = self.stderr.recv_timeout(BOOT_WAIT) {
                    err.push(l);
                }
                return (st, err.join("\n"), std::mem::take(&mut self.seen));
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("the VMM did not exit; console:\n{}", self.seen.join("\n"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Runs the VMM to completion with `args`, no input; returns (status, stderr).
pub fn run(args: &[&str]) -> (ExitStatus, String) {
    let out = Command::new(BIN)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run vmm-reference");
    (out.status, String::from_utf8_lossy(&out.stderr).to_string())
}
