//! A tap interface with a vnet header: virtio-net's host side.

use crate::net::{NetBackend, VNET_HDR_LEN};
use crate::sys::{self, IfReq, IFF_NO_PI, IFF_TAP, IFF_VNET_HDR, IFNAMSIZ};
use crate::{Error, Result};
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;

/// A tap device opened on `/dev/net/tun` with `IFF_TAP | IFF_NO_PI |
/// IFF_VNET_HDR`, a 12-byte vnet header (`TUNSETVNETHDRSZ`, the virtio 1.x
/// `virtio_net_hdr_v1`), no offloads, non-blocking: every read returns one
/// frame prefixed by its header, every write sends one.
///
/// ```no_run
/// use kvmkit_virtio::Tap;
/// // Needs CAP_NET_ADMIN (or a tap created for this user).
/// let tap = Tap::open("vmtap%d").unwrap();
/// println!("attached to {}", tap.name());
/// ```
#[derive(Debug)]
pub struct Tap {
    file: File,
    name: String,
}

impl Tap {
    /// Creates (or attaches to) the tap `name`; a `%d` in it lets the
    /// kernel pick a number, and [`Tap::name`] tells which.
    pub fn open(name: &str) -> Result<Self> {
        if name.len() >= IFNAMSIZ || name.bytes().any(|b| b == 0) {
            return Err(Error::TapName {
                name: name.to_string(),
            });
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open("/dev/net/tun")
            .map_err(|source| Error::OpenTun {
                name: name.to_string(),
                source,
            })?;
        let mut req = IfReq::default();
        req.name[..name.len()].copy_from_slice(name.as_bytes());
        req.flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR;
        let ioctl = |ioctl, source| Error::TapIoctl {
            ioctl,
            name: name.to_string(),
            source,
        };
        sys::tun_set_iff(&file, &mut req).map_err(|e| ioctl("TUNSETIFF", e))?;
        let len = req.name.iter().position(|&b| b == 0).unwrap_or(IFNAMSIZ);
        let name = String::from_utf8_lossy(&req.name[..len]).into_owned();
        let hdr = libc::c_int::try_from(VNET_HDR_LEN).unwrap_or(12);
        sys::tun_set_vnet_hdr_sz(&file, hdr).map_err(|e| ioctl("TUNSETVNETHDRSZ", e))?;
        sys::tun_set_offload(&file, 0).map_err(|e| ioctl("TUNSETOFFLOAD", e))?;
        Ok(Tap { file, name })
    }

    /// The interface's name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl AsRawFd for Tap {
    fn as_raw_fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }
}

impl NetBackend for Tap {
    fn recv(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.file.read(buf)
    }

    fn send(&mut self, frame: &[u8]) -> io::Result<usize> {
        self.file.write(frame)
    }
}

#[cfg(test)]
// Test constants (virtio status values, descriptor flags) fit their casts.
#[allow(clippy::cast_possible_truncation)]
mod tests {
    use super::*;
    use crate::device::{Activation, VirtioDevice};
    use crate::testutil::{activation, mem, Driver, Mem, R, W};
    use crate::Net;
    use std::path::Path;
    use std::process::Command;
    use std::time::{Duration, Instant};
    use vm_memory::{Bytes, GuestAddress};
    use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};

    #[test]
    fn bad_names_are_refused() {
        assert!(matches!(
            Tap::open("a-name-much-too-long"),
            Err(Error::TapName { .. })
        ));
        assert!(matches!(Tap::open("nul\0"), Err(Error::TapName { .. })));
    }

    /// Deletes the namespace when the test ends, however it ends.
    struct Netns(String);

    impl Drop for Netns {
        fn drop(&mut self) {
            let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
        }
    }

    fn ip(ns: &str, args: &[&str]) {
        let st = Command::new("ip")
            .args(["-n", ns])
            .args(args)
            .status()
            .unwrap();
        assert!(st.success(), "ip -n {ns} {args:?} failed");
    }

    const MAC: [u8; 6] = [2, 0, 0, 0, 0, 1];

    /// An ARP request from 10.213.0.2 (MAC) for 10.213.0.1, behind a zero
    /// vnet header.
    fn arp_request() -> Vec<u8> {
        let mut f = vec![0u8; VNET_HDR_LEN];
        f.extend([0xff; 6]);
        f.extend(MAC);
        f.extend([0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, 1]);
        f.extend(MAC);
        f.extend([10, 213, 0, 2]);
        f.extend([0; 6]);
        f.extend([10, 213, 0, 1]);
        f
    }

    /// A real tap in a scratch network namespace: the guest's ARP request
    /// goes out through the tap, the kernel's reply comes back into a
    /// receive buffer.
    #[test]
    fn real_tap_in_a_netns_answers_arp() {
        if !Path::new("/dev/net/tun").exists() {
            println!("skipped real_tap_in_a_netns_answers_arp: /dev/net/tun is missing");
            return;
        }
        let ns = Netns(format!("kvmkit-virtio-{}", std::process::id()));
        let st = Command::new("ip").args(["netns", "add", &ns.0]).status();
        assert!(
            st.is_ok_and(|s| s.success()),
            "ip netns add {} failed (needs root and iproute2)",
            ns.0
        );
        let path = format!("/run/netns/{}", ns.0);
        let tap = std::thread::scope(|s| {
            s.spawn(|| {
                let f = File::open(&path).unwrap();
                crate::sys::setns_net(&f).unwrap();
                Tap::open("kvmkit%d").unwrap()
            })
            .join()
            .unwrap()
        });
        assert!(tap.name().starts_with("kvmkit"), "{}", tap.name());
        ip(&ns.0, &["link", "set", tap.name(), "up"]);
        ip(&ns.0, &["addr", "add", "10.213.0.1/24", "dev", tap.name()]);

        let mem = mem();
        let tap_fd = tap.as_raw_fd();
        let mut net: Net<Tap, Mem> = Net::new(tap, Some(MAC));
        let mut rx = Driver::new(&mem, 0, 16);
        let mut tx = Driver::new(&mem, 0x8000, 16);
        let (a, _irq): (Activation<Mem>, _) = activation(&mem, vec![rx.queue(), tx.queue()]);
        net.activate(a).unwrap();
        for i in 0..16 {
            rx.post(&[(0x10_0000 + i * 0x1000, 0x1000, W)]);
        }
        let req = arp_request();
        mem.write_slice(&req, GuestAddress(0x18_0000)).unwrap();
        tx.post(&[(0x18_0000, u32::try_from(req.len()).unwrap(), R)]);
        net.process_queue(1).unwrap();
        assert_eq!(net.stats().tx_frames, 1);

        let epoll = Epoll::new().unwrap();
        epoll
            .ctl(
                ControlOperation::Add,
                tap_fd,
                EpollEvent::new(EventSet::IN | EventSet::EDGE_TRIGGERED, 0),
            )
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut seen = 0u16;
        loop {
            // Process first: the reply may already be waiting.
            net.process_event(0).unwrap();
            while seen < rx.used_idx() {
                let (head, len) = rx.used(seen);
                seen += 1;
                let mut f = vec![0u8; usize::try_from(len).unwrap()];
                let addr = 0x10_0000 + u64::from(head) * 0x1000;
                mem.read_slice(&mut f, GuestAddress(addr)).unwrap();
                let eth = &f[VNET_HDR_LEN..];
                let is_reply = eth.len() >= 42
                    && eth[12..14] == [0x08, 0x06]
                    && eth[20..22] == [0, 2]
                    && eth[28..32] == [10, 213, 0, 1]
                    && eth[0..6] == MAC;
                if is_reply {
                    assert_eq!(u16::from_le_bytes([f[10], f[11]]), 1);
                    return;
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "no ARP reply from the kernel through the tap"
            );
            let mut ev = [EpollEvent::default(); 1];
            let ms = i32::try_from(left.as_millis().min(500)).unwrap();
            epoll.wait(ms, &mut ev).unwrap();
        }
    }
}
