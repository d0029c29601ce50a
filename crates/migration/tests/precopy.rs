//! The pre-copy engine end to end over a Unix socket pair, with a "guest"
//! (a thread) that keeps writing memory through vm-memory while the
//! migration runs; vm-memory's dirty bitmap stands in for KVM's dirty log.

use kvmkit_migration::{
    migrate, receive, BoxError, Error, MigrationDestination, MigrationSource, Policy, Progress,
    RamRange, Status, PAGE_SIZE,
};
use serde_json::{json, Value};
use std::io::Write;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;
use vm_memory::bitmap::AtomicBitmap;
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};

type Mem = GuestMemoryMmap<AtomicBitmap>;

const RAM: [(u64, u64); 2] = [(0, 0x40_0000), (0x100_0000, 0x20_0000)];

fn ram() -> Vec<RamRange> {
    RAM.iter().map(|&(g, l)| RamRange::new(g, l)).collect()
}

fn new_mem() -> Arc<Mem> {
    let ranges: Vec<_> = RAM
        .iter()
        .map(|&(g, l)| (GuestAddress(g), usize::try_from(l).unwrap()))
        .collect();
    Arc::new(GuestMemoryMmap::from_ranges(&ranges).unwrap())
}

/// A "guest": a thread writing a counter into pseudo-random pages.
struct Guest {
    mem: Arc<Mem>,
    gate: Arc<Mutex<()>>,
    paused: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    count: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

impl Guest {
    fn start(mem: Arc<Mem>) -> Self {
        let gate = Arc::new(Mutex::new(()));
        let paused = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let count = Arc::new(AtomicU64::new(0));
        let thread = {
            let (mem, gate, paused, stop, count) = (
                mem.clone(),
                gate.clone(),
                paused.clone(),
                stop.clone(),
                count.clone(),
            );
            std::thread::spawn(move || {
                let mut x = 0x9e37_79b9_7f4a_7c15u64;
                let pages: u64 = RAM.iter().map(|r| r.1 / PAGE_SIZE).sum();
                while !stop.load(Ordering::SeqCst) {
                    let g = gate.lock().unwrap();
                    if paused.load(Ordering::SeqCst) {
                        drop(g);
                        std::thread::sleep(Duration::from_micros(200));
                        continue;
                    }
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    let mut page = x % pages;
                    let mut gpa = 0;
                    for (g, l) in RAM {
                        if page < l / PAGE_SIZE {
                            gpa = g + page * PAGE_SIZE;
                            break;
                        }
                        page -= l / PAGE_SIZE;
                    }
                    let n = count.fetch_add(1, Ordering::SeqCst) + 1;
                    mem.write_obj(n, GuestAddress(gpa + (x % 500) * 8)).unwrap();
                    // Also the counter itself, at a fixed place.
                    mem.write_obj(n, GuestAddress(0x100)).unwrap();
                    drop(g);
                    if n % 64 == 0 {
                        std::thread::sleep(Duration::from_micros(50));
                    }
                }
            })
        };
        Guest {
            mem,
            gate,
            paused,
            stop,
            count,
            thread: Some(thread),
        }
    }

    fn pause(&self) {
        self.paused.store(true, Ordering::SeqCst);
        // Any write in progress has finished once we get the gate.
        drop(self.gate.lock().unwrap());
    }

    fn resume(&self) {
        self.paused.store(false, Ordering::SeqCst);
    }
}

impl Drop for Guest {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
    }
}

struct Source {
    guest: Guest,
    logging: bool,
    stopped_logging: bool,
    resumed: u32,
    profile: Value,
}

impl MigrationSource for Source {
    type Memory = Mem;
    fn memory(&self) -> &Mem {
        &self.guest.mem
    }
    fn ram(&self) -> Vec<RamRange> {
        ram()
    }
    fn profile(&mut self) -> Result<Value, BoxError> {
        Ok(self.profile.clone())
    }
    fn start_dirty_log(&mut self) -> Result<(), BoxError> {
        self.logging = true;
        Ok(())
    }
    fn harvest(&mut self) -> Result<Vec<RamRange>, BoxError> {
        assert!(self.logging);
        let mut out = Vec::new();
        for region in self.guest.mem.iter() {
            let words = std::ops::Deref::deref(region).bitmap().get_and_reset();
            let base = region.start_addr().0;
            for (w, word) in words.iter().enumerate() {
                for bit in 0..64 {
                    if word & (1 << bit) != 0 {
                        let page = (w * 64 + bit) as u64;
                        out.push(RamRange::new(base + page * PAGE_SIZE, PAGE_SIZE));
                    }
                }
            }
        }
        Ok(out)
    }
    fn stop_dirty_log(&mut self) {
        self.logging = false;
        self.stopped_logging = true;
    }
    fn pause(&mut self) -> Result<(), BoxError> {
        self.guest.pause();
        Ok(())
    }
    fn resume(&mut self) -> Result<(), BoxError> {
        self.resumed += 1;
        self.guest.resume();
        Ok(())
    }
    fn state(&mut self) -> Result<Value, BoxError> {
        Ok(json!({ "count": self.guest.count.load(Ordering::SeqCst) }))
    }
}

struct Dest {
    mem: Arc<Mem>,
    state: Option<Value>,
    refuse: Option<String>,
    refuse_state: Option<String>,
}

impl MigrationDestination for Dest {
    type Memory = Mem;
    fn memory(&self) -> &Mem {
        &self.mem
    }
    fn ram(&self) -> Vec<RamRange> {
        ram()
    }
    fn check_profile(&mut self, profile: &Value) -> Result<(), BoxError> {
        if let Some(r) = &self.refuse {
            return Err(r.clone().into());
        }
        if profile["arch"] != "test" {
            return Err(format!("profile arch {} is not test", profile["arch"]).into());
        }
        Ok(())
    }
    fn restore(&mut self, state: &Value) -> Result<(), BoxError> {
        if let Some(r) = &self.refuse_state {
            return Err(r.clone().into());
        }
        self.state = Some(state.clone());
        Ok(())
    }
}

fn source() -> Source {
    Source {
        guest: Guest::start(new_mem()),
        logging: false,
        stopped_logging: false,
        resumed: 0,
        profile: json!({"arch": "test"}),
    }
}

/// A source whose every page holds data: round 0 alone is the whole RAM
/// (6 MiB), far more than a socket buffer, however fast the pages are read.
fn full_source() -> Source {
    let src = source();
    src.guest.pause();
    for &(g, l) in &RAM {
        for gpa in (g..g + l).step_by(usize::try_from(PAGE_SIZE).unwrap()) {
            src.guest
                .mem
                .write_obj(gpa | 1, GuestAddress(gpa + 8))
                .unwrap();
        }
    }
    src.guest.resume();
    src
}

fn dest() -> Dest {
    Dest {
        mem: new_mem(),
        state: None,
        refuse: None,
        refuse_state: None,
    }
}

fn same_memory(a: &Mem, b: &Mem) -> bool {
    RAM.iter().all(|&(g, l)| {
        let mut x = vec![0u8; usize::try_from(l).unwrap()];
        let mut y = vec![0u8; usize::try_from(l).unwrap()];
        a.read_slice(&mut x, GuestAddress(g)).unwrap();
        b.read_slice(&mut y, GuestAddress(g)).unwrap();
        x == y
    })
}

/// Runs a migration between `src` and a destination thread.
fn run(
    src: &mut Source,
    mut d: Dest,
    policy: Policy,
    cancel: &AtomicBool,
) -> (
    kvmkit_migration::Result<()>,
    Progress,
    Dest,
    Result<kvmkit_migration::Received, Error>,
) {
    let (a, b) = UnixStream::pair().unwrap();
    let dst = std::thread::spawn(move || {
        let r = receive(&mut d, &b, &b);
        (d, r)
    });
    let progress = Progress::default();
    let res = migrate(src, &a, &a, &policy, &progress, cancel);
    drop(a);
    let (d, r) = dst.join().unwrap();
    (res, progress, d, r)
}

#[test]
fn migration_converges_while_the_guest_writes() {
    let mut src = source();
    std::thread::sleep(Duration::from_millis(20));
    let (res, progress, d, received) =
        run(&mut src, dest(), Policy::default(), &AtomicBool::new(false));
    res.unwrap();
    let received = received.unwrap();
    assert_eq!(progress.status().0, Status::Completed);
    // The source stays paused after a successful migration.
    assert!(src.guest.paused.load(Ordering::SeqCst));
    assert_eq!(src.resumed, 0);
    assert!(same_memory(&src.guest.mem, &d.mem));
    let count = src.guest.count.load(Ordering::SeqCst);
    assert_eq!(d.state.unwrap()["count"], count);
    let at_0x100: u64 = d.mem.read_obj(GuestAddress(0x100)).unwrap();
    assert_eq!(at_0x100, count);
    assert!(progress.rounds.load(Ordering::Relaxed) >= 1);
    assert!(received.end.paused_at_ns > 0);
    assert_eq!(
        progress.transferred.load(Ordering::Relaxed),
        received.bytes,
        "every byte sent was read"
    );
    let total_pages: u64 = RAM.iter().map(|r| r.1 / PAGE_SIZE).sum();
    assert!(received.pages >= total_pages);
}

#[test]
fn refusal_keeps_the_source_running() {
    let mut src = full_source();
    let mut d = dest();
    d.refuse = Some("host lacks KVM_CAP_XSAVE2".into());
    let (res, progress, d, received) = run(&mut src, d, Policy::default(), &AtomicBool::new(false));
    let e = res.unwrap_err();
    assert_eq!(
        e.to_string(),
        "the destination refused the migration: ABI profile check failed: host lacks KVM_CAP_XSAVE2"
    );
    assert!(matches!(received, Err(Error::Profile(_))));
    assert!(d.state.is_none());
    let (status, why) = progress.status();
    assert_eq!(status, Status::Failed);
    assert!(why.unwrap().contains("KVM_CAP_XSAVE2"));
    assert!(src.stopped_logging);
    // The refusal came before the pause: the guest was never stopped.
    assert_eq!(src.resumed, 0);
    let before = src.guest.count.load(Ordering::SeqCst);
    std::thread::sleep(Duration::from_millis(20));
    assert!(
        src.guest.count.load(Ordering::SeqCst) > before,
        "guest runs"
    );
}

#[test]
fn wrong_profile_and_layout_are_refused() {
    let mut src = source();
    src.profile = json!({"arch": "s390x"});
    let (res, _, _, received) = run(&mut src, dest(), Policy::default(), &AtomicBool::new(false));
    assert!(res
        .unwrap_err()
        .to_string()
        .contains("profile arch \"s390x\" is not test"));
    assert!(received.is_err());
}

/// A connection that breaks after `left` bytes.
struct Cut<'a> {
    inner: &'a UnixStream,
    left: usize,
}

impl Write for Cut<'_> {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        if self.left == 0 {
            let _ = self.inner.shutdown(std::net::Shutdown::Both);
            return Err(std::io::Error::from(std::io::ErrorKind::ConnectionReset));
        }
        let n = b.len().min(self.left);
        self.left -= n;
        (&mut &*self.inner).write(&b[..n])
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn a_cut_connection_leaves_the_source_running() {
    for cut in [100usize, 2 << 20, 6 << 20] {
        let mut src = full_source();
        let mut d = dest();
        let (a, b) = UnixStream::pair().unwrap();
        let dst = std::thread::spawn(move || {
            let r = receive(&mut d, &b, &b);
            (d, r)
        });
        let progress = Progress::default();
        let res = migrate(
            &mut src,
            &a,
            Cut {
                inner: &a,
                left: cut,
            },
            &Policy::default(),
            &progress,
            &AtomicBool::new(false),
        );
        let e = res.unwrap_err();
        assert!(matches!(e, Error::Write { .. }), "cut {cut}: {e}");
        let (d, r) = dst.join().unwrap();
        let r = r.unwrap_err();
        assert!(
            matches!(r, Error::Truncated { .. } | Error::Read { .. }),
            "cut {cut}: {r}"
        );
        assert!(d.state.is_none(), "nothing restored");
        assert_eq!(progress.status().0, Status::Failed);
        assert!(!src.guest.paused.load(Ordering::SeqCst), "source runs");
        let before = src.guest.count.load(Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(20));
        assert!(src.guest.count.load(Ordering::SeqCst) > before);
    }
}

#[test]
fn cancel_before_the_end_keeps_the_source_running() {
    let mut src = source();
    let (res, progress, d, received) =
        run(&mut src, dest(), Policy::default(), &AtomicBool::new(true));
    assert!(matches!(res, Err(Error::Cancelled)));
    assert_eq!(progress.status().0, Status::Cancelled);
    assert!(received.is_err());
    assert!(d.state.is_none());
    assert!(!src.guest.paused.load(Ordering::SeqCst));
}

#[test]
fn damaged_streams_are_refused_by_the_destination() {
    // Record a real stream from a paused guest, then replay it damaged.
    let mut src = source();
    src.guest.pause();
    let (a, b) = UnixStream::pair().unwrap();
    let rec = std::thread::spawn(move || {
        use std::io::Read;
        // Answer like a destination: a header then an ACK, after reading all.
        let mut all = Vec::new();
        let mut buf = [0u8; 65536];
        let mut r = &b;
        loop {
            let n = r.read(&mut buf).unwrap();
            all.extend_from_slice(&buf[..n]);
            // The END frame is the last; stop when the stream parses to it.
            let mut fr = kvmkit_migration::FrameReader::new(&all[..]).ok();
            let mut done = false;
            while let Some(Ok(f)) = fr.as_mut().map(|f| f.next_frame()) {
                if f.tag == kvmkit_migration::Tag::End {
                    done = true;
                    break;
                }
            }
            if done {
                break;
            }
        }
        let mut w = kvmkit_migration::FrameWriter::new(&b).unwrap();
        w.frame(kvmkit_migration::Tag::Ack, &[]).unwrap();
        all
    });
    let progress = Progress::default();
    migrate(
        &mut src,
        &a,
        &a,
        &Policy::default(),
        &progress,
        &AtomicBool::new(false),
    )
    .unwrap();
    let stream = rec.join().unwrap();

    let replay = |bytes: &[u8]| {
        let mut d = dest();
        let mut answer = Vec::new();
        let r = receive(&mut d, bytes, &mut answer);
        (r, d, answer)
    };
    let (ok, d, _) = replay(&stream);
    ok.unwrap();
    assert!(same_memory(&src.guest.mem, &d.mem));

    // Truncated anywhere: refused, nothing restored.
    for cut in [0, 10, 17, 40, stream.len() / 2, stream.len() - 1] {
        let (r, d, answer) = replay(&stream[..cut]);
        let e = r.unwrap_err();
        assert!(matches!(e, Error::Truncated { .. }), "cut {cut}: {e}");
        assert!(d.state.is_none() || cut > stream.len() - 40);
        // The source is told why.
        let mut fr = kvmkit_migration::FrameReader::new(&answer[..]).unwrap();
        let ack = fr.next_frame().unwrap();
        assert!(String::from_utf8_lossy(&ack.payload).contains("truncated"));
    }
    // A flipped byte in the middle of the page data.
    let mut bad = stream.clone();
    let mid = bad.len() / 2;
    bad[mid] ^= 0x01;
    let (r, _, _) = replay(&bad);
    let e = r.unwrap_err();
    assert!(matches!(e, Error::Checksum { .. }), "{e}");
    assert!(e.to_string().contains("is corrupted"), "{e}");
    // Not a stream at all.
    let (r, _, _) = replay(b"GET / HTTP/1.1\r\n\r\n");
    assert!(matches!(r, Err(Error::BadMagic { .. })));
}

#[test]
fn progress_moves_within_a_round_and_cancel_ends_a_blocked_write() {
    let mut src = source();
    // Every page holds data: round 0 sends all 6 MiB of RAM as pages.
    src.guest.pause();
    for &(g, l) in &RAM {
        let mut gpa = g;
        while gpa < g + l {
            src.guest
                .mem
                .write_obj(gpa | 1, GuestAddress(gpa + 8))
                .unwrap();
            gpa += PAGE_SIZE;
        }
    }
    src.guest.resume();
    // A destination that reads 4.5 MiB, then nothing more: the source sends
    // the first 4 MiB range, then blocks in a write within the next 2 MiB
    // (a socket buffer is far less than the 1.5 MiB left).
    const READ: usize = 9 << 19;
    let (a, b) = UnixStream::pair().unwrap();
    let reader = std::thread::spawn(move || {
        use std::io::Read;
        let mut buf = vec![0u8; READ];
        (&b).read_exact(&mut buf).unwrap();
        b
    });
    let progress = Arc::new(Progress::default());
    let cancel = Arc::new(AtomicBool::new(false));
    let (p, c, conn) = (progress.clone(), cancel.clone(), a.try_clone().unwrap());
    let t = std::thread::spawn(move || {
        let res = migrate(&mut src, &conn, &conn, &Policy::default(), &p, &c);
        (res, src)
    });
    let _b = reader.join().unwrap();
    // The first 4 MiB are counted while round 0 is still under way; before,
    // nothing moved until the round ended.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while progress.normal_pages.load(Ordering::Relaxed) < 1024 {
        assert!(
            !t.is_finished(),
            "the migration ended: {:?}",
            progress.status()
        );
        assert!(
            std::time::Instant::now() < deadline,
            "no progress within round 0: {} pages, {} bytes",
            progress.normal_pages.load(Ordering::Relaxed),
            progress.transferred.load(Ordering::Relaxed)
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    let total = progress.total.load(Ordering::Relaxed);
    assert_eq!(total, RAM.iter().map(|r| r.1).sum::<u64>());
    assert_eq!(progress.status().0, Status::Active);
    assert_eq!(
        progress.rounds.load(Ordering::Relaxed),
        0,
        "round 0 cannot end"
    );
    assert_eq!(progress.normal_pages.load(Ordering::Relaxed), 1024);
    // At least the first range's pages (a write in progress is not counted:
    // a blocking socket write returns only once all of it is queued).
    assert!(progress.transferred.load(Ordering::Relaxed) > 4 << 20);
    assert_eq!(
        progress.remaining.load(Ordering::Relaxed),
        total - (4 << 20)
    );

    // The writer is blocked on the full socket: the cancel flag alone is
    // not seen until the write returns; shutting the socket down ends it.
    cancel.store(true, Ordering::SeqCst);
    a.shutdown(std::net::Shutdown::Both).unwrap();
    let (res, src) = t.join().unwrap();
    assert!(matches!(res, Err(Error::Cancelled)), "{res:?}");
    let (status, why) = progress.status();
    assert_eq!(status, Status::Cancelled);
    assert_eq!(why.as_deref(), Some("the migration was cancelled"));
    assert!(src.stopped_logging);
    assert!(!src.guest.paused.load(Ordering::SeqCst), "the source runs");
}

#[test]
fn a_refused_state_tells_the_source_why_and_it_resumes() {
    let mut src = source();
    let mut d = dest();
    d.refuse_state = Some("the saved state has 1 vCPU states for 2 vCPUs".into());
    let (res, progress, d, received) = run(&mut src, d, Policy::default(), &AtomicBool::new(false));
    // The cause travels with the step that failed, to both sides.
    let why = "restoring the VM state failed: the saved state has 1 vCPU states for 2 vCPUs";
    assert_eq!(
        res.unwrap_err().to_string(),
        format!("the destination refused the migration: {why}")
    );
    let (status, desc) = progress.status();
    assert_eq!(status, Status::Failed);
    assert_eq!(
        desc.as_deref(),
        Some(format!("the destination refused the migration: {why}").as_str())
    );
    assert!(matches!(received, Err(Error::Vmm { .. })));
    assert!(d.state.is_none());
    // Refused after the pause: the source was resumed.
    assert_eq!(src.resumed, 1);
    assert!(!src.guest.paused.load(Ordering::SeqCst));
}

#[test]
fn a_broken_connection_is_reported_with_its_cause() {
    let mut src = source();
    let (a, b) = UnixStream::pair().unwrap();
    drop(b);
    let progress = Progress::default();
    let res = migrate(
        &mut src,
        &a,
        &a,
        &Policy::default(),
        &progress,
        &AtomicBool::new(false),
    );
    assert!(matches!(res, Err(Error::Write { .. })), "{res:?}");
    let desc = progress.status().1.unwrap();
    assert!(
        desc.starts_with("writing the migration stream failed after 0 bytes: "),
        "the I/O error is named: {desc}"
    );
    assert!(desc.len() > "writing the migration stream failed after 0 bytes: ".len());
}
