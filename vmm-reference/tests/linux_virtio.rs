//! Debian's Linux kernel drives the reference VMM's virtio-blk and virtio-net
//! devices: it finds them in the ACPI DSDT (`LNRO0005`, as Debian's kernel
//! has no `CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES`), mounts an ext4 image the
//! host made and writes to it, and pings the host over a tap.
//!
//! The kernel is `scripts/fetch-linux.sh`'s bzImage; the initramfs is
//! `scripts/build-initramfs.sh`'s: Debian's busybox-static, the kernel's
//! virtio and ext4 modules from the same package, and an `/init` that runs
//! the test `kvmkit.test=` names on the command line, prints `KVMKIT-…`
//! marker lines on the console and powers off (ACPI S5, VMM exit 0).
//!
//! The host side needs e2fsprogs (`mkfs.ext4 -d`, `debugfs`) and, for the
//! network test, iproute2 and CAP_NET_ADMIN (a network namespace of its own
//! holds the tap and the 192.0.2.0/24 documentation addresses).
//!
//! Needs hardware-backed KVM: on PVM hosts (`/sys/module/kvm_pvm`) guest code
//! runs in KVM's instruction emulator, which has no SSE, and Linux stops at
//! its FPU set-up (see tests/linux.rs), so every test here prints a skip line
//! there and builds nothing. The initramfs and the init script were checked
//! under QEMU/TCG (`-M microvm,acpi=on`, the same ACPI discovery path).

mod common;

use kvmkit_test_support::{kvm_is_pvm, kvm_or_skip};
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError};
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Guest RAM, in MiB.
const MEMORY_MIB: &str = "512";
/// vCPUs.
const VCPUS: &str = "2";
/// From spawning the VMM to its exit. Linux boots in a couple of seconds on
/// hardware KVM (QEMU/TCG, which emulates every instruction, runs these
/// guests to power-off in 5 to 8 s); this is generous for a loaded host.
const RUN_WAIT: Duration = Duration::from_secs(120);
/// For the stderr reader after the VMM exited.
const STDERR_WAIT: Duration = Duration::from_secs(10);
/// The VMM's first virtio-mmio device.
const FIRST_MMIO: &str = "d0000000-";
/// The tap in the network test's namespace.
const TAP: &str = "kvl0";
/// The guest's MAC address in the network test.
const GUEST_MAC: &str = "52:54:00:4b:56:4c";

/// Prints the skip line on PVM; true when the test may run.
fn hardware_kvm(test: &str) -> bool {
    if kvm_is_pvm() {
        println!(
            "skipped {test}: KVM is PVM here (/sys/module/kvm_pvm); its instruction emulator \
             has no SSE, so Linux stops at its FPU set-up before any driver loads"
        );
        return false;
    }
    true
}

/// The bzImage and the initramfs built for it.
#[derive(Debug)]
struct Images {
    bzimage: PathBuf,
    initramfs: PathBuf,
    /// The kernel release, e.g. `6.1.0-56-amd64`.
    release: String,
}

fn run_script(name: &str, args: &[&str]) -> Result<String, String> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../scripts")
        .join(name);
    let out = Command::new("bash")
        .arg(&script)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {}: {e}", script.display()))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        return Err(format!(
            "{} failed ({}):\n{stderr}",
            script.display(),
            out.status
        ));
    }
    if !stderr.is_empty() {
        eprint!("{name}: {stderr}");
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn build() -> Result<Images, String> {
    let fetched = run_script("fetch-linux.sh", &[])?;
    let field = |key: &str| {
        fetched
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .map(str::to_string)
            .ok_or_else(|| format!("fetch-linux.sh printed no {key}:\n{fetched}"))
    };
    let bzimage = PathBuf::from(field("bzImage=")?);
    let release = field("version=")?;
    let dir = bzimage
        .parent()
        .ok_or("the bzImage path has no parent")?
        .join("initramfs");
    let dir = dir.to_str().ok_or("a non-UTF-8 initramfs directory")?;
    let built = run_script("build-initramfs.sh", &[dir])?;
    let initramfs = PathBuf::from(
        built
            .lines()
            .last()
            .ok_or_else(|| "build-initramfs.sh printed no path".to_string())?,
    );
    if !initramfs.is_file() {
        return Err(format!(
            "build-initramfs.sh printed {}, which is not a file",
            initramfs.display()
        ));
    }
    Ok(Images {
        bzimage,
        initramfs,
        release,
    })
}

/// Built once per test binary; a failed build fails the test with the
/// scripts' stderr.
fn images() -> &'static Images {
    static IMAGES: OnceLock<Result<Images, String>> = OnceLock::new();
    match IMAGES.get_or_init(build) {
        Ok(i) => i,
        Err(e) => panic!("{e}"),
    }
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("a UTF-8 path")
}

/// A unique string for this run.
fn unique(tag: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!("kvmkit-{tag}-{}-{nanos:09}", std::process::id())
}

/// A tool from e2fsprogs, which Debian installs in /usr/sbin (not on every
/// user's PATH).
fn sbin_tool(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/sbin".into()])
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("{name} not found (Debian package e2fsprogs)"))
}

/// The VMM running Linux, its console read line by line; killed on drop.
struct Guest {
    child: Child,
    lines: Receiver<String>,
    stderr: Receiver<String>,
    seen: Vec<String>,
    start: Instant,
    deadline: Instant,
    name: &'static str,
}

impl Guest {
    /// Runs `program` (the VMM, or `ip netns exec NS <VMM>`) with `args`.
    fn spawn(name: &'static str, program: &str, args: &[&str]) -> Guest {
        let mut child = Command::new(program)
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
        Guest {
            child,
            lines,
            stderr,
            seen: Vec::new(),
            start,
            deadline: start + RUN_WAIT,
            name,
        }
    }

    /// Kills the VMM and fails the test, with what the console showed.
    fn fail(&mut self, why: &str) -> ! {
        let _ = self.child.kill();
        let status = self.child.wait().map(|s| s.to_string());
        let stderr = self.stderr.recv_timeout(STDERR_WAIT).unwrap_or_default();
        panic!(
            "{}: {why} ({:.1} s after start; VMM {status:?})\nconsole:\n{}\nstderr:\n{stderr}",
            self.name,
            self.start.elapsed().as_secs_f64(),
            self.seen.join("\n"),
        );
    }

    /// Waits for a console line containing `pat` and returns it; fails at
    /// once on the init script's `KVMKIT-ERROR` or a kernel panic.
    fn expect(&mut self, pat: &str) -> String {
        loop {
            let left = self.deadline.saturating_duration_since(Instant::now());
            let line = match self.lines.recv_timeout(left) {
                Ok(l) => l,
                Err(RecvTimeoutError::Timeout) => self.fail(&format!("no {pat:?} in time")),
                Err(RecvTimeoutError::Disconnected) => {
                    self.fail(&format!("the VMM exited before {pat:?}"))
                }
            };
            self.seen.push(line.clone());
            if line.contains(pat) {
                eprintln!(
                    "{}: {:>6.2} s  {line}",
                    self.name,
                    self.start.elapsed().as_secs_f64()
                );
                return line;
            }
            if line.contains("KVMKIT-ERROR") || line.contains("Kernel panic") {
                self.fail(&format!("{line:?} while waiting for {pat:?}"));
            }
        }
    }

    /// Waits (until the deadline) for the VMM to exit; its status and stderr.
    fn wait_exit(&mut self) -> (ExitStatus, String) {
        loop {
            let left = self.deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => self.seen.push(l),
                Err(RecvTimeoutError::Disconnected) => break,
                Err(RecvTimeoutError::Timeout) => self.fail("the VMM did not exit in time"),
            }
        }
        let status = self.child.wait().expect("wait for vmm-reference");
        let stderr = self.stderr.recv_timeout(STDERR_WAIT).unwrap_or_default();
        (status, stderr)
    }

    /// The common start: Linux's init ran, loaded the modules, and the
    /// first virtio device is the VMM's at 0xd0000000, found through the
    /// DSDT's `LNRO0005`.
    fn expect_virtio_from_acpi(&mut self, device_id: &str) {
        let release = &images().release;
        self.expect(&format!("KVMKIT-INIT: Linux {release}"));
        self.expect("KVMKIT-MODULES: ");
        let dev = self.expect("KVMKIT-VIRTIO: virtio0 ");
        if !dev.contains(&format!(
            "device {device_id} on /devices/platform/LNRO0005:"
        )) {
            self.fail(&format!(
                "virtio0 is not a {device_id} device found in the DSDT: {dev}"
            ));
        }
        let mem = self.expect("KVMKIT-IOMEM: ");
        if !(mem.contains(FIRST_MMIO) && mem.contains("LNRO0005")) {
            self.fail(&format!("the first device is not at 0x{FIRST_MMIO}: {mem}"));
        }
    }

    /// Waits for the exit and checks that it is the guest's power-off.
    fn expect_poweroff(&mut self) {
        self.expect("KVMKIT-POWEROFF");
        let (status, stderr) = self.wait_exit();
        eprintln!(
            "{}: {:>6.2} s  VMM exit {status}",
            self.name,
            self.start.elapsed().as_secs_f64()
        );
        if status.code() != Some(0) {
            self.fail(&format!(
                "VMM exit {status} after power-off; stderr:\n{stderr}"
            ));
        }
    }
}

impl Drop for Guest {
    /// A failed assertion must not leave the VMM running.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A directory for a test's files, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let p = std::env::temp_dir().join(unique(tag));
        std::fs::create_dir_all(&p).expect("create a temporary directory");
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A 16 MiB ext4 image whose `/hello.txt` holds `marker` (made without
/// root or loop devices: `mkfs.ext4 -d`).
fn ext4_image(dir: &TempDir, marker: &str) -> PathBuf {
    let root = dir.0.join("root");
    std::fs::create_dir_all(&root).expect("create the image's root");
    std::fs::write(root.join("hello.txt"), format!("{marker}\n")).expect("write hello.txt");
    let img = dir.0.join("disk.img");
    let out = Command::new(sbin_tool("mkfs.ext4"))
        .arg("-q")
        .arg("-d")
        .arg(&root)
        .arg(&img)
        .arg("16M")
        .output()
        .expect("run mkfs.ext4");
    assert!(
        out.status.success(),
        "mkfs.ext4 -d failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    img
}

/// `debugfs -R 'cat PATH' IMG`: a file of the image, read by e2fsprogs.
fn debugfs_cat(img: &Path, path: &str) -> String {
    let out = Command::new(sbin_tool("debugfs"))
        .arg("-R")
        .arg(format!("cat {path}"))
        .arg(img)
        .output()
        .expect("run debugfs");
    assert!(
        out.status.success(),
        "debugfs failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn boot_with_disk(name: &'static str, disk: &str, test: &str) -> Guest {
    let img = images();
    let cmdline = format!("console=ttyS0 panic=-1 kvmkit.test={test}");
    Guest::spawn(
        name,
        common::BIN,
        &[
            "--kernel",
            path_str(&img.bzimage),
            "--initramfs",
            path_str(&img.initramfs),
            "--memory",
            MEMORY_MIB,
            "--vcpus",
            VCPUS,
            "--disk",
            disk,
            "--cmdline",
            &cmdline,
        ],
    )
}

/// Linux mounts an ext4 image on the virtio-blk disk, reads the host's file
/// and writes one back, which e2fsprogs then finds in the image.
#[test]
fn kvm_linux_virtio_blk_mounts_ext4() {
    const NAME: &str = "kvm_linux_virtio_blk_mounts_ext4";
    let Some(()) = kvm_or_skip!() else { return };
    if !hardware_kvm(NAME) {
        return;
    }
    let dir = TempDir::new("lvblk");
    let marker = unique("disk-marker");
    let img = ext4_image(&dir, &marker);
    let mut vm = boot_with_disk(NAME, &format!("path={}", path_str(&img)), "disk");
    vm.expect_virtio_from_acpi("0x0002");
    vm.expect(&format!("KVMKIT-DISK: {marker}"));
    vm.expect("KVMKIT-DISK-DONE");
    vm.expect_poweroff();
    drop(vm);
    let back = debugfs_cat(&img, "/from-guest.txt");
    assert_eq!(
        back.trim_end(),
        format!("from the guest: {marker}"),
        "the guest's file in the image"
    );
}

/// With `readonly=on` the disk is read-only to Linux (VIRTIO_BLK_F_RO): it
/// mounts and reads, a write fails, and the image is unchanged.
#[test]
fn kvm_linux_virtio_blk_read_only() {
    const NAME: &str = "kvm_linux_virtio_blk_read_only";
    let Some(()) = kvm_or_skip!() else { return };
    if !hardware_kvm(NAME) {
        return;
    }
    let dir = TempDir::new("lvblkro");
    let marker = unique("ro-marker");
    let img = ext4_image(&dir, &marker);
    let before = std::fs::read(&img).expect("read the image");
    let disk = format!("path={},readonly=on", path_str(&img));
    let mut vm = boot_with_disk(NAME, &disk, "disk-ro");
    vm.expect_virtio_from_acpi("0x0002");
    vm.expect(&format!("KVMKIT-DISK: {marker}"));
    let ro = vm.expect("KVMKIT-DISK-RO: ");
    assert!(ro.ends_with("KVMKIT-DISK-RO: 1"), "{ro}");
    vm.expect("KVMKIT-DISK-WRITE-REFUSED");
    vm.expect("KVMKIT-DISK-DONE");
    vm.expect_poweroff();
    drop(vm);
    assert!(
        std::fs::read(&img).expect("read the image") == before,
        "a read-only disk changed"
    );
}

/// A network namespace with a tap holding 192.0.2.1/24, removed on drop.
struct NetNs(String);

impl NetNs {
    fn new() -> NetNs {
        let name = format!("kvmkit-ln{}", std::process::id());
        let st = Command::new("ip")
            .args(["netns", "add", &name])
            .status()
            .expect("run ip");
        assert!(
            st.success(),
            "ip netns add {name} failed (needs CAP_NET_ADMIN)"
        );
        let ns = NetNs(name);
        // No IPv6 in the namespace: no router solicitations or DAD on the tap.
        ns.exec(&[
            "sh",
            "-c",
            "echo 1 >/proc/sys/net/ipv6/conf/all/disable_ipv6 && \
             echo 1 >/proc/sys/net/ipv6/conf/default/disable_ipv6",
        ]);
        ns.exec(&["ip", "tuntap", "add", "dev", TAP, "mode", "tap", "vnet_hdr"]);
        ns.exec(&["ip", "addr", "add", "192.0.2.1/24", "dev", TAP]);
        ns.exec(&["ip", "link", "set", TAP, "up"]);
        ns
    }

    fn exec(&self, cmd: &[&str]) {
        let st = Command::new("ip")
            .args(["netns", "exec", &self.0])
            .args(cmd)
            .status()
            .expect("run ip netns exec");
        assert!(st.success(), "ip netns exec {} {cmd:?} failed", self.0);
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

/// Linux brings up eth0 on the virtio-net device and pings the host's end
/// of the tap.
#[test]
fn kvm_linux_virtio_net_ping_over_tap() {
    const NAME: &str = "kvm_linux_virtio_net_ping_over_tap";
    let Some(()) = kvm_or_skip!() else { return };
    if !hardware_kvm(NAME) {
        return;
    }
    let img = images();
    let ns = NetNs::new();
    let net = format!("tap={TAP},mac={GUEST_MAC}");
    let cmdline = "console=ttyS0 panic=-1 kvmkit.test=net";
    // Declared after `ns`, so dropped (killed) before the namespace goes.
    let mut vm = Guest::spawn(
        NAME,
        "ip",
        &[
            "netns",
            "exec",
            &ns.0,
            common::BIN,
            "--kernel",
            path_str(&img.bzimage),
            "--initramfs",
            path_str(&img.initramfs),
            "--memory",
            MEMORY_MIB,
            "--vcpus",
            VCPUS,
            "--net",
            &net,
            "--cmdline",
            cmdline,
        ],
    );
    vm.expect_virtio_from_acpi("0x0001");
    vm.expect(&format!("KVMKIT-NET-MAC: {GUEST_MAC}"));
    let result = vm.expect("KVMKIT-PING-");
    if !result.ends_with("KVMKIT-PING-OK") {
        vm.fail("the guest's ping got no reply");
    }
    vm.expect_poweroff();
    drop(vm);
    drop(ns);
}
