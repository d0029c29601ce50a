//! virtio-blk and virtio-net of the reference VMM, driven by the test guest's
//! interrupt-driven drivers on real KVM, with both irqchips.

mod common;

use common::Vmm;
use kvmkit_test_support::kvm_or_skip;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

struct TempDisk(PathBuf);

impl TempDisk {
    fn new(name: &str, sector0: &[u8]) -> TempDisk {
        let p = std::env::temp_dir().join(format!("kvmkit-{}-{name}.img", std::process::id()));
        let mut d = vec![0u8; 1 << 20];
        d[..sector0.len()].copy_from_slice(sector0);
        std::fs::File::create(&p).unwrap().write_all(&d).unwrap();
        TempDisk(p)
    }

    fn sector(&self, n: usize) -> Vec<u8> {
        std::fs::read(&self.0).unwrap()[512 * n..512 * (n + 1)].to_vec()
    }
}

impl Drop for TempDisk {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn blk_round_trip(irqchip: &str) {
    let disk = TempDisk::new(irqchip, b"written by the host");
    let arg = format!("path={}", disk.0.display());
    let cmdline =
        "console=ttyS0 kvmkit.autorun=virtio,blk:read:0,blk:write:1:from:the:guest,irqs,poweroff";
    let mut vm = Vmm::spawn(&[
        "--irqchip",
        irqchip,
        "--memory",
        "64",
        "--disk",
        &arg,
        "--cmdline",
        cmdline,
    ]);
    vm.expect("virtio: 0xd0000000 irq 16 blk ready");
    let l = vm.expect("blk: sector 0 status 0 data ");
    assert!(l.contains("data written by the host..."), "{l}");
    vm.expect("blk: write sector 1 status 0");
    let irqs = vm.expect("irqs: blk ");
    let n: u32 = irqs["irqs: blk ".len()..]
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(n >= 2, "completions arrive as interrupts: {irqs}");
    let (status, stderr, _) = vm.wait();
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert_eq!(&disk.sector(1)[..14], b"from the guest");
}

#[test]
fn kvm_virtio_blk_with_the_in_kernel_irqchip() {
    let Some(()) = kvm_or_skip!() else { return };
    blk_round_trip("kernel");
}

#[test]
fn kvm_virtio_blk_with_the_split_irqchip() {
    let Some(()) = kvm_or_skip!() else { return };
    blk_round_trip("split");
}

#[test]
fn kvm_virtio_blk_read_only_refuses_writes() {
    let Some(()) = kvm_or_skip!() else { return };
    let disk = TempDisk::new("ro", b"keep me");
    let arg = format!("path={},readonly=on", disk.0.display());
    let cmdline = "console=ttyS0 kvmkit.autorun=blk:write:0:overwrite,blk:read:0,poweroff";
    let mut vm = Vmm::spawn(&["--memory", "64", "--disk", &arg, "--cmdline", cmdline]);
    vm.expect("blk: write sector 0 status 1");
    vm.expect("blk: sector 0 status 0 data keep me");
    let (status, stderr, _) = vm.wait();
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert_eq!(&disk.sector(0)[..7], b"keep me");
}

#[test]
fn kvm_virtio_bad_disk_is_a_clear_error() {
    let Some(()) = kvm_or_skip!() else { return };
    let (status, stderr) = common::run(&["--disk", "path=/nonexistent/disk.img"]);
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("/nonexistent/disk.img"), "{stderr}");
}

/// A network namespace with a tap in it, removed on drop.
struct NetNs(String);

impl NetNs {
    fn new(tag: &str) -> NetNs {
        let name = format!("kvmkit-{tag}{}", std::process::id());
        let ns = NetNs(name);
        ns.ip(&["netns", "add", &ns.0]);
        ns.exec(&[
            "ip", "tuntap", "add", "dev", "kvt0", "mode", "tap", "vnet_hdr",
        ]);
        ns.exec(&["ip", "link", "set", "kvt0", "up"]);
        ns
    }

    fn ip(&self, args: &[&str]) {
        let st = Command::new("ip").args(args).status().expect("run ip");
        assert!(st.success(), "ip {args:?} failed");
    }

    fn exec(&self, cmd: &[&str]) {
        let mut args = vec!["netns", "exec", &self.0];
        args.extend_from_slice(cmd);
        self.ip(&args);
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

/// The host end: waits for the guest's frame on the tap, then answers it.
const PEER: &str = r#"
import socket, sys, time
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x88b5))
s.bind(("kvt0", 0))
s.settimeout(90)
print("ready", flush=True)
while True:
    f = s.recv(2048)
    if f[12:14] == b"\x88\xb5":
        break
print("got", f[6:12].hex(":"), f[14:].rstrip(b"\0").decode(errors="replace"), flush=True)
reply = b"\xff" * 6 + b"\x0a\x0b\x0c\x0d\x0e\x0f" + b"\x88\xb5" + b"hello from the host"
for _ in range(5):
    s.send(reply)
    time.sleep(0.3)
"#;

#[test]
fn kvm_virtio_net_frames_cross_a_tap_both_ways() {
    let Some(()) = kvm_or_skip!() else { return };
    net_round_trip("kernel");
}

#[test]
fn kvm_virtio_net_with_the_split_irqchip() {
    let Some(()) = kvm_or_skip!() else { return };
    net_round_trip("split");
}

fn net_round_trip(irqchip: &str) {
    let ns = NetNs::new(irqchip);
    let mut peer = Command::new("ip")
        .args(["netns", "exec", &ns.0, "python3", "-c", PEER])
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the host peer");
    let mut out = std::io::BufReader::new(peer.stdout.take().expect("peer stdout"));
    let mut line = String::new();
    std::io::BufRead::read_line(&mut out, &mut line).expect("the peer starts");
    assert_eq!(
        line.trim(),
        "ready",
        "the peer's socket is bound before the guest sends"
    );
    // The tap's kernel side may still send a stray frame or two (the link
    // coming up): receive a few and look for the host's.
    let cmdline = "console=ttyS0 kvmkit.autorun=net:mac,net:send:hi:from:the:guest,\
                   net:recv:20000,net:recv:20000,net:recv:20000,net:recv:20000,irqs,poweroff";
    let mut args = vec!["netns", "exec", &ns.0, common::BIN];
    args.extend([
        "--irqchip",
        irqchip,
        "--memory",
        "64",
        "--net",
        "tap=kvt0,mac=52:54:00:12:34:56",
        "--cmdline",
        cmdline,
    ]);
    let mut vm = common::Vmm::spawn_program("ip", &args);
    vm.expect("net: mac 52:54:00:12:34:56");
    vm.expect("net: sent 60 bytes");
    vm.expect("from 0a:0b:0c:0d:0e:0f type 0x88b5 payload hello from the host");
    let irqs = vm.expect("irqs: ");
    assert!(!irqs.contains("net 0 "), "{irqs}");
    let (status, stderr, _) = vm.wait();
    assert_eq!(status.code(), Some(0), "{stderr}");
    let mut got = String::new();
    std::io::Read::read_to_string(&mut out, &mut got).expect("the peer's report");
    assert!(peer.wait().expect("the peer ends").success());
    assert!(
        got.contains("got 52:54:00:12:34:56 hi from the guest"),
        "{got}"
    );
    drop(ns);
}
