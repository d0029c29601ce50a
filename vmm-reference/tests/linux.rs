//! The reference VMM boots Debian's Linux kernel on real KVM, and Linux
//! reports on its console what the VMM gave it: the memory map, the command
//! line and the CPUs (from the ACPI MADT).
//!
//! Three boot paths, one kernel (Debian's current `linux-image-*-amd64`,
//! fetched and cached by `scripts/fetch-linux.sh`):
//!
//! - **bzImage**, 64-bit Linux boot protocol: zero page, entered at the
//!   decompressor's `startup_64`;
//! - **PVH**: the ELF `vmlinux` (extracted from the bzImage) through its
//!   `XEN_ELFNOTE_PHYS32_ENTRY` note and `hvm_start_info`;
//! - **ELF, 64-bit boot protocol**: the same `vmlinux` with its PVH note
//!   hidden, so the VMM enters the ELF entry with a zero page (how
//!   Firecracker boots a vmlinux; what a kernel built without `CONFIG_PVH`
//!   gets). This checks the zero page quickly where the bzImage is slow.
//!
//! On PVM hosts (`/sys/module/kvm_pvm`) guest code runs in KVM's instruction
//! emulator (about 2.4 M instructions/s). Measured there (Debian
//! 6.1.0-56-amd64, 2 vCPUs, 512 MiB): the ELF paths print their first console
//! line (the printk buffer, replayed when `earlyprintk` registers) after about
//! 19 s and `smpboot: Allowing 2 CPUs` after about 28 s, then stop at about
//! 45 s, when SLUB's first `lock cmpxchg16b` (which the emulator cannot run)
//! ends in a KVM emulation failure (exit status 4). The bzImage's
//! decompressor (xz, 65 MB, silent: Debian has no `CONFIG_X86_VERBOSE_BOOTUP`)
//! takes much longer (see [`BZIMAGE_PVM_WAIT`]), so on PVM the bzImage test
//! runs only with `KVMKIT_SLOW_TESTS=1`, and the full boot skips.

mod common;

use kvmkit_arch_x86_64::{e820_map, E820Kind};
use kvmkit_memory::pc_layout;
use kvmkit_test_support::{kvm_is_pvm, kvm_or_skip};
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Guest RAM for every boot here, in MiB.
const MEMORY_MIB: u64 = 512;
/// vCPUs for every boot here.
const VCPUS: u32 = 2;
/// From spawning the VMM to `smpboot: Allowing` on the ELF paths. Measured
/// on PVM: about 28 s for one boot alone, 69 s with both ELF tests running
/// at once next to another emulated guest on the 2 host cores; this is
/// about 3x the loaded figure. Well under a second on hardware KVM.
const ELF_WAIT: Duration = Duration::from_secs(210);
/// From spawning the VMM to `smpboot: Allowing` on the bzImage path on PVM,
/// where the emulator decompresses the kernel (65 MB of xz, then a byte-wise
/// CRC32 of it): measured 57 min (first line after 56.8 min); this is 3x.
const BZIMAGE_PVM_WAIT: Duration = Duration::from_secs(3 * 57 * 60);
/// From SIGTERM to the VMM's exit.
const STOP_WAIT: Duration = Duration::from_secs(30);
/// A full boot to the root-mount panic on hardware KVM (a few seconds).
const FULL_BOOT_WAIT: Duration = Duration::from_secs(120);
/// Set to `1` to run the bzImage test on PVM too.
const SLOW_ENV: &str = "KVMKIT_SLOW_TESTS";

/// The kernel images `scripts/fetch-linux.sh` produced.
#[derive(Debug)]
struct Kernel {
    bzimage: PathBuf,
    vmlinux: PathBuf,
    /// `vmlinux` with its PVH note hidden (written by this test).
    vmlinux_no_pvh: PathBuf,
    /// The kernel release, e.g. `6.1.0-56-amd64`, as the banner shows it.
    release: String,
}

fn fetch() -> Result<Kernel, String> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/fetch-linux.sh");
    let out = Command::new("bash")
        .arg(script)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {script}: {e}"))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        return Err(format!("{script} failed ({}):\n{stderr}", out.status));
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let field = |key: &str| {
        stdout
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .map(str::to_string)
            .ok_or_else(|| format!("{script} printed no {key}:\n{stdout}\n{stderr}"))
    };
    let vmlinux = PathBuf::from(field("vmlinux=")?);
    let vmlinux_no_pvh = vmlinux.with_file_name("vmlinux-no-pvh");
    write_without_pvh_note(&vmlinux, &vmlinux_no_pvh)?;
    Ok(Kernel {
        bzimage: field("bzImage=")?.into(),
        vmlinux,
        vmlinux_no_pvh,
        release: field("version=")?,
    })
}

/// The kernel, fetched once per test binary; a failed fetch fails the test
/// with the script's stderr.
fn kernel() -> &'static Kernel {
    static KERNEL: OnceLock<Result<Kernel, String>> = OnceLock::new();
    match KERNEL.get_or_init(fetch) {
        Ok(k) => k,
        Err(e) => panic!("{e}"),
    }
}

/// `XEN_ELFNOTE_PHYS32_ENTRY`: the PVH entry note's type.
const PVH_NOTE_TYPE: u32 = 18;
/// The type the hidden note gets: no note type Xen or linux-loader knows.
const HIDDEN_NOTE_TYPE: u32 = 0x7fff_0000 | PVH_NOTE_TYPE;

fn le_u16(b: &[u8], at: usize) -> Option<usize> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?).into())
}

fn le_u32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn le_usize(b: &[u8], at: usize) -> Option<usize> {
    usize::try_from(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?)).ok()
}

/// The file offsets of the type fields of the PVH notes in the PT_NOTE
/// segments of a little-endian ELF64 image.
fn pvh_note_type_offsets(elf: &[u8]) -> Option<Vec<usize>> {
    const PT_NOTE: u32 = 4;
    if elf.get(..6)? != b"\x7fELF\x02\x01" {
        return None;
    }
    let (phoff, phentsize, phnum) = (le_usize(elf, 0x20)?, le_u16(elf, 0x36)?, le_u16(elf, 0x38)?);
    let mut found = Vec::new();
    for i in 0..phnum {
        let ph = phoff + i * phentsize;
        if le_u32(elf, ph)? != PT_NOTE {
            continue;
        }
        let mut at = le_usize(elf, ph + 8)?;
        let end = at + le_usize(elf, ph + 32)?;
        while at + 12 <= end {
            let namesz = usize::try_from(le_u32(elf, at)?).ok()?;
            let descsz = usize::try_from(le_u32(elf, at + 4)?).ok()?;
            let name = elf.get(at + 12..at + 12 + namesz)?;
            if name == b"Xen\0" && le_u32(elf, at + 8)? == PVH_NOTE_TYPE {
                found.push(at + 8);
            }
            at += 12 + namesz.div_ceil(4) * 4 + descsz.div_ceil(4) * 4;
        }
    }
    Some(found)
}

/// Writes `vmlinux` to `out` with its PVH note's type changed, so that the
/// VMM finds no PVH entry and uses the 64-bit boot protocol (atomically:
/// through a temporary file, then a rename).
fn write_without_pvh_note(vmlinux: &Path, out: &Path) -> Result<(), String> {
    let mut elf = std::fs::read(vmlinux).map_err(|e| format!("read {}: {e}", vmlinux.display()))?;
    let offsets = pvh_note_type_offsets(&elf)
        .ok_or_else(|| format!("{} is not a well-formed ELF64 LE image", vmlinux.display()))?;
    if offsets.is_empty() {
        return Err(format!("{} has no PVH note", vmlinux.display()));
    }
    for at in offsets {
        elf[at..at + 4].copy_from_slice(&HIDDEN_NOTE_TYPE.to_le_bytes());
    }
    let tmp = out.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, &elf)
        .and_then(|()| std::fs::rename(&tmp, out))
        .map_err(|e| format!("write {}: {e}", out.display()))
}

/// The boot protocol a test uses; Linux builds its e820 table differently.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum BootPath {
    /// The bzImage, 64-bit Linux boot protocol (zero page).
    BzImage,
    /// The ELF vmlinux, 64-bit Linux boot protocol (zero page).
    Elf64,
    /// The ELF vmlinux, PVH (`hvm_start_info`).
    Pvh,
}

impl BootPath {
    fn name(self) -> &'static str {
        match self {
            BootPath::BzImage => "bzImage",
            BootPath::Elf64 => "vmlinux (64-bit boot protocol)",
            BootPath::Pvh => "vmlinux (PVH)",
        }
    }

    fn image(self) -> &'static Path {
        match self {
            BootPath::BzImage => &kernel().bzimage,
            BootPath::Elf64 => &kernel().vmlinux_no_pvh,
            BootPath::Pvh => &kernel().vmlinux,
        }
    }
}

/// What Linux's `e820__update_table` (arch/x86/kernel/e820.c) makes of a
/// table: where entries overlap the highest type number wins, adjacent
/// ranges of one type merge, the result is sorted. Entries are
/// `(start, end exclusive, linux type)`.
fn linux_sanitize(entries: &[(u64, u64, u32)]) -> Vec<(u64, u64, u32)> {
    let mut points: Vec<u64> = entries.iter().flat_map(|&(s, e, _)| [s, e]).collect();
    points.sort_unstable();
    points.dedup();
    let mut out: Vec<(u64, u64, u32)> = Vec::new();
    for w in points.windows(2) {
        let (s, e) = (w[0], w[1]);
        let covering = entries.iter().filter(|&&(es, ee, _)| es <= s && e <= ee);
        let Some(kind) = covering.map(|&(_, _, k)| k).max() else {
            continue;
        };
        match out.last_mut() {
            Some(last) if last.1 == s && last.2 == kind => last.1 = e,
            _ => out.push((s, e, kind)),
        }
    }
    out
}

/// The `BIOS-e820:` lines Linux should print for the map the VMM builds for
/// `MEMORY_MIB` (`e820_map(pc_layout(..))`, as the VMM computes it), in
/// `e820__print_table`'s format: `BIOS-e820: [mem 0x%016Lx-0x%016Lx] <type>`,
/// the end inclusive, types named by `e820_print_type`.
///
/// Linux prints the table the boot loader passed after `e820__update_table`
/// has sanitised it (see [`linux_sanitize`]). The VMM's map is sorted and
/// has no overlaps, so on the zero-page paths nothing changes unless two
/// adjacent entries had the same type. On the PVH path Linux first copies
/// the `hvm_start_info` memory map and appends a reserved entry for the ISA
/// range `[0xa0000, 0x100000)` (`init_pvh_bootparams`,
/// arch/x86/platform/pvh/enlighten.c), which swallows the VMM's reserved
/// EBDA and BIOS entries on either side of it: Linux prints one reserved
/// range `0x9fc00-0xfffff` where the VMM passed two.
fn expected_e820(path: BootPath) -> Vec<String> {
    let ram: Vec<(u64, u64)> = pc_layout(MEMORY_MIB << 20)
        .expect("a 512 MiB PC layout")
        .iter()
        .map(|(gpa, len)| (gpa.0, *len))
        .collect();
    let mut table: Vec<(u64, u64, u32)> = e820_map(&ram)
        .iter()
        .map(|e| (e.addr, e.end(), e.kind.linux_type()))
        .collect();
    if path == BootPath::Pvh {
        table.push((0xa_0000, 0x10_0000, E820Kind::Reserved.linux_type()));
    }
    linux_sanitize(&table)
        .iter()
        .map(|&(start, end, kind)| {
            let name = match kind {
                1 => "usable".to_string(),
                2 => "reserved".to_string(),
                3 => "ACPI data".to_string(),
                4 => "ACPI NVS".to_string(),
                5 => "unusable".to_string(),
                k => format!("type {k}"),
            };
            format!("BIOS-e820: [mem {start:#018x}-{:#018x}] {name}", end - 1)
        })
        .collect()
}

/// The part of a console line after the printk timestamp (`[    0.000000] `).
fn message(line: &str) -> &str {
    line.trim_start()
        .strip_prefix('[')
        .and_then(|rest| rest.split_once("] "))
        .map_or(line, |(_, m)| m)
}

/// `vmm-reference` in a child process, its console read line by line.
///
/// `common::Vmm` waits at most `common::BOOT_WAIT` (120 s) for each line;
/// the bzImage path on PVM needs far longer before its first line, so this
/// takes a deadline per wait, and fails at once when the VMM exits.
struct Console {
    child: Child,
    lines: Receiver<String>,
    stderr: Receiver<String>,
    seen: Vec<String>,
    start: Instant,
    name: &'static str,
}

impl Console {
    fn spawn(name: &'static str, args: &[&str]) -> Console {
        let mut child = Command::new(common::BIN)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn vmm-reference");
        let start = Instant::now();
        let out = child.stdout.take().expect("stdout is piped");
        let err = child.stderr.take().expect("stderr is piped");
        let (tx, lines) = channel();
        std::thread::spawn(move || {
            let mut r = BufReader::new(out);
            let mut buf = Vec::new();
            while let Ok(1..) = r.read_until(b'\n', &mut buf) {
                let line = String::from_utf8_lossy(&buf);
                let line = line.trim_end_matches(['\r', '\n']).to_string();
                if tx.send(line).is_err() {
                    break;
                }
                buf.clear();
            }
        });
        let (etx, stderr) = channel();
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = BufReader::new(err).read_to_string(&mut s);
            let _ = etx.send(s);
        });
        Console {
            child,
            lines,
            stderr,
            seen: Vec::new(),
            start,
            name,
        }
    }

    /// Kills the VMM and fails the test, with what the console showed.
    fn fail(&mut self, why: &str) -> ! {
        let _ = self.child.kill();
        let status = self.child.wait().map(|s| s.to_string());
        let stderr = self.stderr.recv_timeout(STOP_WAIT).unwrap_or_default();
        panic!(
            "{}: {why} ({:.1} s after start; VMM {status:?})\nconsole:\n{}\nstderr:\n{stderr}",
            self.name,
            self.start.elapsed().as_secs_f64(),
            self.seen.join("\n"),
        );
    }

    /// The next console line, waiting until `deadline` at most.
    fn next_line(&mut self, deadline: Instant, waiting_for: &str) -> String {
        let left = deadline.saturating_duration_since(Instant::now());
        match self.lines.recv_timeout(left) {
            Ok(l) => {
                self.seen.push(l.clone());
                l
            }
            Err(RecvTimeoutError::Timeout) => self.fail(&format!("no {waiting_for:?} in time")),
            Err(RecvTimeoutError::Disconnected) => {
                self.fail(&format!("the VMM exited before {waiting_for:?}"))
            }
        }
    }

    /// Waits for a console line containing `pat`, printing it with the time
    /// since the start.
    fn expect(&mut self, pat: &str, deadline: Instant) -> String {
        loop {
            let line = self.next_line(deadline, pat);
            if line.contains(pat) {
                eprintln!(
                    "{}: {:>7.1} s  {line}",
                    self.name,
                    self.start.elapsed().as_secs_f64()
                );
                return line;
            }
        }
    }

    /// Waits for the VMM to exit (its console closes first), bounded.
    fn wait_exit(&mut self, within: Duration) -> (ExitStatus, String) {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => self.seen.push(l),
                Err(RecvTimeoutError::Disconnected) => break,
                Err(RecvTimeoutError::Timeout) => self.fail("the VMM did not exit in time"),
            }
        }
        let status = self.child.wait().expect("wait for vmm-reference");
        let stderr = self.stderr.recv_timeout(STOP_WAIT).unwrap_or_default();
        (status, stderr)
    }

    /// Sends SIGTERM and checks that the VMM quits with status 0.
    fn stop(&mut self) {
        if let Some(status) = self.child.try_wait().expect("try_wait") {
            self.fail(&format!("the VMM exited ({status}) before SIGTERM"));
        }
        let pid = libc::pid_t::try_from(self.child.id()).expect("a pid fits pid_t");
        // SAFETY: kill() has no memory-safety preconditions; `pid` is our
        // child, not reaped yet (try_wait above returned None, and only this
        // struct waits for it), so it cannot name another process.
        let rc = unsafe { libc::kill(pid, libc::SIGTERM) };
        assert_eq!(rc, 0, "kill(SIGTERM): {}", std::io::Error::last_os_error());
        let sent = Instant::now();
        let (status, stderr) = self.wait_exit(STOP_WAIT);
        eprintln!(
            "{}: exit {status} {:.2} s after SIGTERM",
            self.name,
            sent.elapsed().as_secs_f64()
        );
        assert_eq!(
            status.code(),
            Some(0),
            "{}: after SIGTERM; stderr:\n{stderr}",
            self.name
        );
    }
}

impl Drop for Console {
    /// A failed assertion must not leave the VMM running.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Boots `path`'s image, checks the early console lines, then stops the VMM
/// with SIGTERM and checks that it exits cleanly.
fn boot_and_check(path: BootPath, within: Duration) {
    let marker = format!("kvmkit_marker={}", std::process::id());
    let cmdline = format!("console=ttyS0 earlyprintk=serial,ttyS0 {marker} panic=-1");
    let image = path.image().to_str().expect("a UTF-8 kernel path");
    let (vcpus, mib) = (VCPUS.to_string(), MEMORY_MIB.to_string());
    let mut vm = Console::spawn(
        path.name(),
        &[
            "--kernel",
            image,
            "--vcpus",
            &vcpus,
            "--memory",
            &mib,
            "--cmdline",
            &cmdline,
        ],
    );
    let deadline = vm.start + within;

    let banner = vm.expect("Linux version ", deadline);
    let release = &kernel().release;
    assert!(
        message(&banner).starts_with(&format!("Linux version {release} ")),
        "{}: the banner is not {release}'s: {banner}",
        path.name()
    );

    // `Command line:` (setup_arch) echoes boot_command_line, which the VMM
    // passed through the zero page or hvm_start_info.
    let cmd = vm.expect("Command line: ", deadline);
    assert_eq!(
        message(&cmd),
        format!("Command line: {cmdline}"),
        "{}",
        path.name()
    );
    assert!(cmd.contains(&marker));

    // `BIOS-provided physical RAM map:`, one line per entry, then the next
    // message.
    vm.expect("BIOS-provided physical RAM map:", deadline);
    let mut got = Vec::new();
    loop {
        let line = vm.next_line(deadline, "the end of the e820 map");
        match message(&line) {
            m if m.starts_with("BIOS-e820: ") => got.push(m.to_string()),
            _ => break,
        }
    }
    for l in &got {
        eprintln!("{}:          {l}", path.name());
    }
    let want = expected_e820(path);
    if got != want {
        vm.fail(&format!(
            "Linux's e820 map is not the VMM's\nwant:\n{}\ngot:\n{}",
            want.join("\n"),
            got.join("\n")
        ));
    }

    // From the ACPI MADT: VCPUS enabled processors, no disabled ones.
    let smp = vm.expect("smpboot: Allowing ", deadline);
    assert_eq!(
        message(&smp),
        format!("smpboot: Allowing {VCPUS} CPUs, 0 hotplug CPUs"),
        "{}",
        path.name()
    );

    vm.stop();
}

#[test]
fn kvm_linux_pvh_early_boot() {
    let Some(()) = kvm_or_skip!() else { return };
    boot_and_check(BootPath::Pvh, ELF_WAIT);
}

#[test]
fn kvm_linux_elf64_early_boot() {
    let Some(()) = kvm_or_skip!() else { return };
    boot_and_check(BootPath::Elf64, ELF_WAIT);
}

#[test]
fn kvm_linux_bzimage_early_boot() {
    let Some(()) = kvm_or_skip!() else { return };
    let within = if kvm_is_pvm() {
        if std::env::var(SLOW_ENV).as_deref() != Ok("1") {
            println!(
                "skipped kvm_linux_bzimage_early_boot: on PVM the emulator needs about {} min \
                 to decompress the bzImage before Linux prints anything; {SLOW_ENV}=1 runs it",
                BZIMAGE_PVM_WAIT.as_secs() / 60 / 3
            );
            return;
        }
        BZIMAGE_PVM_WAIT
    } else {
        ELF_WAIT
    };
    boot_and_check(BootPath::BzImage, within);
}

/// A full boot to the end of the kernel's own start-up: without an
/// initramfs or root device, Linux panics when it tries to mount root, after
/// SMP bring-up, ACPI and the 8250 driver; with `panic=-1` it then reboots at
/// once, which the VMM ends with status 0. Needs hardware-backed KVM.
#[test]
fn kvm_linux_full_boot_to_root_panic() {
    let Some(()) = kvm_or_skip!() else { return };
    if kvm_is_pvm() {
        println!(
            "skipped kvm_linux_full_boot_to_root_panic: KVM is PVM here (/sys/module/kvm_pvm); \
             its instruction emulator cannot run Linux's `lock cmpxchg16b` (SLUB set-up)"
        );
        return;
    }
    for path in [BootPath::BzImage, BootPath::Pvh, BootPath::Elf64] {
        let image = path.image().to_str().expect("a UTF-8 kernel path");
        let (vcpus, mib) = (VCPUS.to_string(), MEMORY_MIB.to_string());
        let cmdline = "console=ttyS0 panic=-1";
        let mut vm = Console::spawn(
            path.name(),
            &[
                "--kernel",
                image,
                "--vcpus",
                &vcpus,
                "--memory",
                &mib,
                "--cmdline",
                cmdline,
            ],
        );
        let deadline = vm.start + FULL_BOOT_WAIT;
        vm.expect("smp: Brought up 1 node, 2 CPUs", deadline);
        vm.expect("ttyS0 at I/O 0x3f8", deadline);
        vm.expect(
            "Kernel panic - not syncing: VFS: Unable to mount root fs",
            deadline,
        );
        let (status, stderr) = vm.wait_exit(FULL_BOOT_WAIT);
        assert_eq!(status.code(), Some(0), "{}: stderr:\n{stderr}", path.name());
    }
}

/// The helpers that turn the VMM's map into Linux's lines (no KVM needed).
#[test]
fn expected_e820_follows_linux() {
    let zp = expected_e820(BootPath::Elf64);
    assert_eq!(zp, expected_e820(BootPath::BzImage));
    assert_eq!(
        zp[0],
        "BIOS-e820: [mem 0x0000000000000000-0x000000000009fbff] usable"
    );
    let pvh = expected_e820(BootPath::Pvh);
    assert_eq!(
        pvh[1],
        "BIOS-e820: [mem 0x000000000009fc00-0x00000000000fffff] reserved"
    );
    assert_eq!(pvh.len() + 1, zp.len());
    // Overlaps go to the higher type; adjacent ranges of one type merge.
    assert_eq!(
        linux_sanitize(&[(0, 10, 1), (5, 20, 2), (20, 30, 2), (40, 50, 1)]),
        vec![(0, 5, 1), (5, 30, 2), (40, 50, 1)]
    );
    assert_eq!(message("[    0.000000] Command line: x"), "Command line: x");
    assert_eq!(message("Command line: x"), "Command line: x");
}

#[test]
fn pvh_note_is_found_in_a_minimal_elf() {
    // An ELF64 header with one PT_NOTE program header pointing at one note.
    let mut elf = vec![0u8; 0x100];
    elf[..6].copy_from_slice(b"\x7fELF\x02\x01");
    elf[0x20..0x28].copy_from_slice(&0x40u64.to_le_bytes()); // e_phoff
    elf[0x36..0x38].copy_from_slice(&56u16.to_le_bytes()); // e_phentsize
    elf[0x38..0x3a].copy_from_slice(&1u16.to_le_bytes()); // e_phnum
    elf[0x40..0x44].copy_from_slice(&4u32.to_le_bytes()); // p_type PT_NOTE
    elf[0x48..0x50].copy_from_slice(&0x80u64.to_le_bytes()); // p_offset
    elf[0x60..0x68].copy_from_slice(&20u64.to_le_bytes()); // p_filesz
    let note = [
        &4u32.to_le_bytes()[..],
        &4u32.to_le_bytes(),
        &18u32.to_le_bytes(),
        b"Xen\0",
    ];
    elf[0x80..0x90].copy_from_slice(&note.concat());
    assert_eq!(pvh_note_type_offsets(&elf), Some(vec![0x88]));
    elf[0x8c] = b'Y';
    assert_eq!(pvh_note_type_offsets(&elf), Some(vec![]));
    assert_eq!(pvh_note_type_offsets(b"not an elf"), None);
}
