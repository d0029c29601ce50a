//! Live migration and snapshots of the reference VMM, on kvmkit-migration:
//! the VMM's side of the source and destination, URIs, and the QMP commands
//! (`migrate`, `migrate_cancel`, `query-migrate`, `snapshot-save`, the
//! `MIGRATION` event).

use crate::core::{ControlRequest, MachineStatus, RunStatus, PAUSE_TIMEOUT, QUIT_SIGNAL};
use crate::qmp::{Args, Dispatcher, EventBus, QmpError, Reply};
use crate::state::{StateParts, VmmState};
use crate::HostArch;
use kvmkit_core::{SlotId, Vcpu};
use kvmkit_dirty_log::DirtyTracker;
use kvmkit_memory::SlotTable;
use kvmkit_migration::{
    migrate, receive, save_snapshot, unix_time_ns, BoxError, MigrationDestination, MigrationSource,
    Policy, Progress, RamRange, Received, Status,
};
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::channel;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};
use vm_memory::{GuestAddress, GuestMemoryMmap};

/// How long a migration connection may stay silent before it counts as
/// broken.
pub const IO_TIMEOUT: Duration = Duration::from_secs(30);

/// Where a migration goes or comes from: QEMU's `tcp:HOST:PORT` and
/// `unix:PATH` URIs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MigrationUri {
    /// `tcp:HOST:PORT`.
    Tcp(String),
    /// `unix:PATH`.
    Unix(PathBuf),
}

impl std::str::FromStr for MigrationUri {
    type Err = String;

    /// Parses a URI.
    ///
    /// ```
    /// use kvmkit_vmm_reference::MigrationUri;
    /// assert_eq!("tcp:127.0.0.1:4444".parse(), Ok(MigrationUri::Tcp("127.0.0.1:4444".into())));
    /// assert_eq!("unix:/tmp/m.sock".parse(), Ok(MigrationUri::Unix("/tmp/m.sock".into())));
    /// assert!("exec:cat".parse::<MigrationUri>().is_err());
    /// ```
    fn from_str(s: &str) -> Result<Self, String> {
        if let Some(addr) = s.strip_prefix("tcp:") {
            if addr
                .rsplit_once(':')
                .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok())
            {
                return Ok(MigrationUri::Tcp(addr.to_string()));
            }
            return Err(format!("'{s}': expected tcp:HOST:PORT"));
        }
        if let Some(path) = s.strip_prefix("unix:") {
            if !path.is_empty() {
                return Ok(MigrationUri::Unix(PathBuf::from(path)));
            }
        }
        Err(format!(
            "'{s}' is not a supported migration URI (tcp:HOST:PORT or unix:PATH)"
        ))
    }
}

/// What `--incoming` says: where the state comes from, or `defer` (QMP
/// `migrate-incoming` says it later).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Incoming {
    /// Listen on this URI at once.
    At(MigrationUri),
    /// Wait for `migrate-incoming`.
    Defer,
}

impl std::str::FromStr for Incoming {
    type Err = String;

    /// Parses `defer` or a [`MigrationUri`].
    ///
    /// ```
    /// use kvmkit_vmm_reference::{Incoming, MigrationUri};
    /// assert_eq!("defer".parse(), Ok(Incoming::Defer));
    /// assert_eq!("unix:/tmp/m".parse(), Ok(Incoming::At(MigrationUri::Unix("/tmp/m".into()))));
    /// ```
    fn from_str(s: &str) -> Result<Self, String> {
        if s == "defer" {
            Ok(Incoming::Defer)
        } else {
            s.parse().map(Incoming::At)
        }
    }
}

/// What a VMM started with `--incoming defer` is told to load.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Deferred {
    /// `migrate-incoming`: receive a migration on this URI.
    Migration(MigrationUri),
    /// `snapshot-load`: load the snapshot in this directory.
    Snapshot(PathBuf),
}

impl std::fmt::Display for MigrationUri {
    /// The URI as written: `tcp:HOST:PORT` or `unix:PATH`.
    ///
    /// ```
    /// use kvmkit_vmm_reference::MigrationUri;
    /// let u: MigrationUri = "tcp:[::1]:4444".parse().unwrap();
    /// assert_eq!(u.to_string(), "tcp:[::1]:4444");
    /// ```
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MigrationUri::Tcp(a) => write!(f, "tcp:{a}"),
            MigrationUri::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

/// A connected migration stream: both directions.
pub(crate) enum Conn {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Conn {
    fn try_clone(&self) -> std::io::Result<Conn> {
        Ok(match self {
            Conn::Tcp(s) => Conn::Tcp(s.try_clone()?),
            Conn::Unix(s) => Conn::Unix(s.try_clone()?),
        })
    }

    fn shutdown(&self) {
        // Already closed: nothing left to break.
        let _ = match self {
            Conn::Tcp(s) => s.shutdown(std::net::Shutdown::Both),
            Conn::Unix(s) => s.shutdown(std::net::Shutdown::Both),
        };
    }

    fn halves(&self) -> std::io::Result<(Box<dyn Read + Send>, Box<dyn Write + Send>)> {
        Ok(match self {
            Conn::Tcp(s) => {
                s.set_nodelay(true)?;
                s.set_read_timeout(Some(IO_TIMEOUT))?;
                s.set_write_timeout(Some(IO_TIMEOUT))?;
                (Box::new(s.try_clone()?), Box::new(s.try_clone()?))
            }
            Conn::Unix(s) => {
                s.set_read_timeout(Some(IO_TIMEOUT))?;
                s.set_write_timeout(Some(IO_TIMEOUT))?;
                (Box::new(s.try_clone()?), Box::new(s.try_clone()?))
            }
        })
    }
}

impl MigrationUri {
    /// Connects to a destination.
    pub(crate) fn connect(&self) -> std::io::Result<Conn> {
        Ok(match self {
            MigrationUri::Tcp(a) => Conn::Tcp(TcpStream::connect(a)?),
            MigrationUri::Unix(p) => Conn::Unix(UnixStream::connect(p)?),
        })
    }

    /// Waits for the source's connection.
    ///
    /// Once it listens it says where on stderr
    /// (`vmm-reference: waiting for the incoming migration on URI`), with the
    /// port the system chose for `tcp:HOST:0`: the source may connect from then on.
    pub(crate) fn accept(&self) -> std::io::Result<Conn> {
        let listening = |uri: String| {
            eprintln!("vmm-reference: waiting for the incoming migration on {uri}");
        };
        Ok(match self {
            MigrationUri::Tcp(a) => {
                let l = TcpListener::bind(a)?;
                listening(format!("tcp:{}", l.local_addr()?));
                l.set_nonblocking(true)?;
                let c = wait_for_connection(|| l.accept().map(|(c, _)| c))?;
                c.set_nonblocking(false)?;
                Conn::Tcp(c)
            }
            MigrationUri::Unix(p) => {
                // A stale socket file from an earlier run would make bind fail.
                if std::fs::symlink_metadata(p).is_ok_and(|m| {
                    use std::os::unix::fs::FileTypeExt;
                    m.file_type().is_socket()
                }) {
                    let _ = std::fs::remove_file(p);
                }
                let l = UnixListener::bind(p)?;
                listening(format!("unix:{}", p.display()));
                let c = l
                    .set_nonblocking(true)
                    .and_then(|()| wait_for_connection(|| l.accept().map(|(c, _)| c)));
                let _ = std::fs::remove_file(p);
                let c = c?;
                c.set_nonblocking(false)?;
                Conn::Unix(c)
            }
        })
    }
}

/// How often a listener waiting for the source checks for SIGINT, SIGTERM
/// and SIGHUP.
const ACCEPT_POLL: Duration = Duration::from_millis(20);

/// Calls `accept` (on a non-blocking listener) until a connection comes or a
/// quit signal arrives: a blocking accept would never see the signal.
fn wait_for_connection<T>(mut accept: impl FnMut() -> std::io::Result<T>) -> std::io::Result<T> {
    loop {
        match accept() {
            Ok(c) => return Ok(c),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
        if QUIT_SIGNAL.load(Ordering::SeqCst) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::Interrupted,
                "quit (signal) while waiting for the source",
            ));
        }
        std::thread::sleep(ACCEPT_POLL);
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Guest RAM: the writable slots of the table.
fn ram_ranges(table: &Mutex<SlotTable<HostArch>>) -> Vec<RamRange> {
    ram_slots(&lock(table))
        .into_iter()
        .map(|(_, r)| r)
        .collect()
}

/// Guest RAM with the slot of each range.
fn ram_slots(table: &SlotTable<HostArch>) -> Vec<(SlotId, RamRange)> {
    table
        .iter()
        .filter(|s| !s.is_read_only())
        .map(|s| (s.id(), RamRange::new(s.gpa().0, s.len())))
        .collect()
}

/// What the migration thread and the QMP commands share.
pub(crate) struct Migrator {
    pub(crate) requests: std::sync::mpsc::Sender<ControlRequest>,
    pub(crate) status: Arc<MachineStatus>,
    pub(crate) memory: Arc<GuestMemoryMmap>,
    pub(crate) table: Arc<Mutex<SlotTable<HostArch>>>,
    pub(crate) tracker: Result<Arc<DirtyTracker<HostArch>>, String>,
    pub(crate) parts: Arc<StateParts>,
    pub(crate) events: Arc<EventBus>,
    pub(crate) job: Mutex<Option<Job>>,
    /// With `--incoming defer`: where `migrate-incoming` sends its URI.
    pub(crate) deferred: Arc<Mutex<Option<std::sync::mpsc::Sender<Deferred>>>>,
}

impl Job {
    /// True until the migration completed, failed or was cancelled.
    fn running(&self) -> bool {
        !matches!(
            self.progress.status().0,
            Status::Completed | Status::Failed | Status::Cancelled | Status::None
        )
    }
}

/// The current (or last) outgoing migration.
pub(crate) struct Job {
    progress: Arc<Progress>,
    cancel: Arc<AtomicBool>,
    /// The connection once made, so that a cancel can break a blocked write.
    conn: Arc<Mutex<Option<Conn>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Migrator {
    fn request<T>(
        &self,
        make: impl FnOnce(std::sync::mpsc::Sender<T>) -> ControlRequest,
    ) -> Result<T, String> {
        let (tx, rx) = channel();
        self.requests
            .send(make(tx))
            .map_err(|_| "the VM is shutting down".to_string())?;
        rx.recv_timeout(PAUSE_TIMEOUT + Duration::from_secs(5))
            .map_err(|_| "the VM is shutting down".to_string())
    }

    fn pause(&self) -> Result<(), String> {
        self.request(ControlRequest::Pause)?
            .map_err(|e| format!("cannot pause the vCPUs: {e}"))
    }

    fn resume(&self) -> Result<(), String> {
        self.request(ControlRequest::Resume)?
            .map_err(|e| format!("cannot resume the vCPUs: {e}"))
    }

    fn save_state(&self) -> Result<Value, String> {
        self.request(ControlRequest::SaveState)?
    }

    pub(crate) fn emit(&self, status: Status) {
        let name = serde_json::to_value(status).unwrap_or(Value::Null);
        self.events
            .emit("MIGRATION", Some(json!({ "status": name })));
    }

    fn busy(&self) -> bool {
        lock(&self.job).as_ref().is_some_and(Job::running)
    }

    /// `snapshot-save`: pauses, saves the state and memory into `dir`, and
    /// resumes if the VM was running.
    pub(crate) fn snapshot(&self, dir: &Path) -> Result<Value, String> {
        self.parts.check_saveable()?;
        if self.busy() {
            return Err("a migration is in progress".to_string());
        }
        let was_running = self.status.get() == RunStatus::Running;
        match self.status.get() {
            RunStatus::Running | RunStatus::Paused => {}
            _ => return Err("the VM has ended".to_string()),
        }
        // Described before the pause: it builds a scratch VM.
        let profile = self.parts.host_profile()?;
        let t = Instant::now();
        self.pause()?;
        let res = (|| {
            let state = self.save_state()?;
            let profile = serde_json::to_value(profile).map_err(|e| e.to_string())?;
            let ram = ram_ranges(&self.table);
            save_snapshot(dir, &*self.memory, &ram, &profile, &state).map_err(|e| {
                format!(
                    "cannot save the snapshot: {}",
                    crate::state::error_chain(&e)
                )
            })
        })();
        let paused_for = t.elapsed();
        if was_running {
            self.resume()?;
        }
        let stats = res?;
        Ok(json!({
            "data-pages": stats.data_pages,
            "zero-pages": stats.zero_pages,
            "paused-ms": paused_for.as_secs_f64() * 1000.0,
        }))
    }

    /// `migrate`: starts the migration thread.
    pub(crate) fn start(self: &Arc<Self>, uri: MigrationUri) -> Result<(), String> {
        self.parts.check_saveable()?;
        let tracker = self.tracker.clone()?;
        // Held until the new job is in place: two `migrate` commands from
        // two clients cannot both start one.
        let mut job = lock(&self.job);
        if job.as_ref().is_some_and(Job::running) {
            return Err("There's a migration process in progress".to_string());
        }
        match self.status.get() {
            RunStatus::Running | RunStatus::Paused => {}
            _ => return Err("the VM has ended".to_string()),
        }
        let progress = Arc::new(Progress::default());
        progress.set_status(Status::Setup, None);
        let cancel = Arc::new(AtomicBool::new(false));
        let me = self.clone();
        let conn = Arc::new(Mutex::new(None));
        let (p, c, k) = (progress.clone(), cancel.clone(), conn.clone());
        self.emit(Status::Setup);
        let thread = std::thread::Builder::new()
            .name("migration".into())
            .spawn(move || me.run(uri, tracker, &p, &c, &k))
            .map_err(|e| format!("cannot start the migration thread: {e}"))?;
        *job = Some(Job {
            progress,
            cancel,
            conn,
            thread: Some(thread),
        });
        Ok(())
    }

    fn run(
        &self,
        uri: MigrationUri,
        tracker: Arc<DirtyTracker<HostArch>>,
        progress: &Progress,
        cancel: &AtomicBool,
        shared: &Mutex<Option<Conn>>,
    ) {
        // The host profile is described (a scratch VM) before anything else;
        // an error shows up in the PROFILE step below.
        let _ = self.parts.host_profile();
        let conn = match uri.connect().and_then(|c| c.halves().map(|h| (c, h))) {
            Ok(c) => c,
            Err(e) => {
                progress.set_status(
                    Status::Failed,
                    Some(format!("cannot connect to the destination: {e}")),
                );
                self.emit(Status::Failed);
                return;
            }
        };
        let (conn, (reader, writer)) = conn;
        *lock(shared) = conn.try_clone().ok();
        if cancel.load(Ordering::SeqCst) {
            conn.shutdown();
        }
        self.emit(Status::Active);
        let mut src = VmmSource {
            m: self,
            tracker,
            slots: Vec::new(),
            was_running: self.status.get() == RunStatus::Running,
        };
        let res = migrate(
            &mut src,
            reader,
            std::io::BufWriter::with_capacity(1 << 20, writer),
            &Policy::default(),
            progress,
            cancel,
        );
        match res {
            Ok(()) => {
                self.emit(Status::Completed);
                let _ = self.requests.send(ControlRequest::Migrated);
            }
            Err(e) => {
                eprintln!("vmm-reference: migration failed: {e}");
                self.emit(progress.status().0);
            }
        }
    }

    /// `migrate_cancel`.
    pub(crate) fn cancel(&self) {
        if let Some(j) = lock(&self.job).as_ref() {
            j.cancel.store(true, Ordering::SeqCst);
            // A write blocked on a slow destination ends at once.
            if let Some(c) = lock(&j.conn).as_ref() {
                c.shutdown();
            }
        }
    }

    /// `query-migrate`, in QEMU's `MigrationInfo` shape.
    pub(crate) fn info(&self) -> Value {
        let job = lock(&self.job);
        let Some(j) = job.as_ref() else {
            return json!({});
        };
        let p = &j.progress;
        let (status, error) = p.status();
        let l = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        let mut v = json!({
            "status": status,
            "total-time": l(&p.total_time_ms),
            "setup-time": l(&p.setup_time_ms),
            "ram": {
                "transferred": l(&p.transferred),
                "remaining": l(&p.remaining),
                "total": l(&p.total),
                "duplicate": l(&p.zero_pages),
                "normal": l(&p.normal_pages),
                "normal-bytes": l(&p.normal_pages) * kvmkit_migration::PAGE_SIZE,
                "dirty-pages-rate": l(&p.dirty_pages_rate),
                "mbps": l(&p.bytes_per_second) as f64 * 8.0 / 1e6,
                "dirty-sync-count": l(&p.rounds),
                "page-size": kvmkit_migration::PAGE_SIZE,
            },
        });
        if status == Status::Completed {
            v["downtime"] = json!(l(&p.downtime_ms));
            v["x-paused-at-ns"] = json!(l(&p.paused_at_ns));
        }
        if let Some(e) = error {
            v["error-desc"] = json!(e);
        }
        v
    }

    /// Waits for the migration thread (at VMM exit); a migration still
    /// running (the guest powered off, QMP `quit`) is cancelled first, so
    /// that the VMM does not wait for a stalled destination.
    pub(crate) fn join(&self) {
        if lock(&self.job).as_ref().is_some_and(Job::running) {
            self.cancel();
        }
        let t = lock(&self.job).as_mut().and_then(|j| j.thread.take());
        if let Some(t) = t {
            let _ = t.join();
        }
    }
}

/// The source side: dirty log, pause/resume and state through the machine
/// loop.
struct VmmSource<'a> {
    m: &'a Migrator,
    tracker: Arc<DirtyTracker<HostArch>>,
    slots: Vec<(SlotId, RamRange)>,
    was_running: bool,
}

fn boxed(e: impl std::fmt::Display) -> BoxError {
    e.to_string().into()
}

impl MigrationSource for VmmSource<'_> {
    type Memory = GuestMemoryMmap;

    fn memory(&self) -> &GuestMemoryMmap {
        &self.m.memory
    }

    fn ram(&self) -> Vec<RamRange> {
        ram_ranges(&self.m.table)
    }

    fn profile(&mut self) -> Result<Value, BoxError> {
        let p = self.m.parts.host_profile()?;
        Ok(serde_json::to_value(p)?)
    }

    fn start_dirty_log(&mut self) -> Result<(), BoxError> {
        let mut table = lock(&self.m.table);
        self.slots = ram_slots(&table);
        for i in 0..self.slots.len() {
            if let Err(e) = self.tracker.enable_logging(&mut table, self.slots[i].0) {
                for &(id, _) in &self.slots[..i] {
                    let _ = self.tracker.disable_logging(&mut table, id);
                }
                self.slots.clear();
                return Err(boxed(format!("cannot turn dirty logging on: {e}")));
            }
        }
        Ok(())
    }

    fn harvest(&mut self) -> Result<Vec<RamRange>, BoxError> {
        self.tracker.harvest().map_err(boxed)?;
        let mut out = Vec::new();
        for &(id, r) in &self.slots {
            if let Some(b) = self.tracker.take(id) {
                out.extend(
                    b.gpa_ranges(GuestAddress(r.gpa))
                        .map(|(a, len)| RamRange::new(a.0, len)),
                );
            }
        }
        Ok(out)
    }

    fn stop_dirty_log(&mut self) {
        let mut table = lock(&self.m.table);
        for &(id, _) in &self.slots {
            let _ = self.tracker.disable_logging(&mut table, id);
        }
        self.slots.clear();
    }

    fn pause(&mut self) -> Result<(), BoxError> {
        self.m.pause().map_err(boxed)
    }

    fn resume(&mut self) -> Result<(), BoxError> {
        if self.was_running {
            self.m.resume().map_err(boxed)
        } else {
            Ok(())
        }
    }

    fn state(&mut self) -> Result<Value, BoxError> {
        self.m.save_state().map_err(boxed)
    }
}

/// The destination side: checks and restores into a VM built from the same
/// configuration, before it runs.
pub(crate) struct VmmDestination<'a> {
    pub(crate) memory: &'a GuestMemoryMmap,
    pub(crate) table: &'a Mutex<SlotTable<HostArch>>,
    pub(crate) parts: &'a StateParts,
    pub(crate) vcpus: &'a [Vcpu<HostArch>],
}

impl MigrationDestination for VmmDestination<'_> {
    type Memory = GuestMemoryMmap;

    fn memory(&self) -> &GuestMemoryMmap {
        self.memory
    }

    fn ram(&self) -> Vec<RamRange> {
        ram_ranges(self.table)
    }

    fn check_profile(&mut self, profile: &Value) -> Result<(), BoxError> {
        check_profile_frame(self.parts, profile, "the source's VM").map_err(boxed)
    }

    fn restore(&mut self, state: &Value) -> Result<(), BoxError> {
        let state: VmmState = serde_json::from_value(state.clone())
            .map_err(|e| boxed(format!("the VM state is not readable: {e}")))?;
        self.parts.restore(self.vcpus, &state).map_err(boxed)
    }
}

/// Checks the `PROFILE` frame of a stream or snapshot (`whose`: "the
/// source's VM", "the saved VM") against this host and machine.
pub(crate) fn check_profile_frame(
    parts: &StateParts,
    profile: &Value,
    whose: &str,
) -> Result<(), String> {
    let saved: <HostArch as kvmkit_core::SnapshotArch>::AbiProfile =
        serde_json::from_value(profile.clone())
            .map_err(|e| format!("the ABI profile of {whose} is not readable: {e}"))?;
    parts.check_profile(&saved, whose)
}

/// Receives an incoming migration on `uri` into the VM, before it runs.
pub(crate) fn receive_incoming(
    uri: &MigrationUri,
    dest: &mut VmmDestination<'_>,
) -> Result<Received, String> {
    // Describe this host (a scratch VM) before the source connects, so the
    // profile check does not hold up the stream, nor the downtime.
    dest.parts.host_profile()?;
    let conn = uri
        .accept()
        .map_err(|e| format!("cannot accept the incoming migration on {uri}: {e}"))?;
    let (reader, writer) = conn
        .halves()
        .map_err(|e| format!("cannot set up the incoming connection: {e}"))?;
    let received = receive(
        dest,
        std::io::BufReader::with_capacity(1 << 20, reader),
        writer,
    )
    .map_err(|e| {
        format!(
            "incoming migration refused: {}",
            crate::state::error_chain(&e)
        )
    })?;
    let now = unix_time_ns();
    eprintln!(
        "vmm-reference: migration received: {} pages, {} bytes, {} rounds; downtime {:.2} ms (source paused at {} ns, resuming at {} ns)",
        received.pages,
        received.bytes,
        received.end.rounds,
        now.saturating_sub(received.end.paused_at_ns) as f64 / 1e6,
        received.end.paused_at_ns,
        now
    );
    Ok(received)
}

/// Hands what to load to a VMM waiting with `--incoming defer`.
fn send_deferred(
    m: &Migrator,
    deferred: &Mutex<Option<std::sync::mpsc::Sender<Deferred>>>,
    what: Deferred,
) -> Result<Reply, QmpError> {
    let Some(tx) = lock(deferred).take() else {
        return Err(QmpError::generic(
            if m.status.get() == RunStatus::InMigrate {
                "The incoming migration has already been started"
            } else {
                "'-incoming' was not specified on the command line"
            },
        ));
    };
    tx.send(what)
        .map_err(|_| QmpError::generic("the VM is shutting down"))?;
    Ok(Reply::empty())
}

/// Loads the snapshot in `dir` into a VM that has not run: copies its memory
/// (zero pages skipped: the VM's memory is fresh) and restores its state.
pub(crate) fn load_snapshot_into(dir: &Path, dest: &mut VmmDestination<'_>) -> Result<(), String> {
    let started = Instant::now();
    let snap = kvmkit_migration::load_snapshot(dir).map_err(|e| {
        format!(
            "cannot read the snapshot in {}: {}",
            dir.display(),
            crate::state::error_chain(&e)
        )
    })?;
    let ram = dest.ram();
    let have: Vec<RamRange> = snap
        .layout
        .iter()
        .map(|r| RamRange::new(r.gpa, r.len))
        .collect();
    if have != ram {
        return Err(format!(
            "the snapshot in {} has guest RAM {have:x?}, this machine {ram:x?} (start it with the saved VM's --memory)",
            dir.display()
        ));
    }
    let profile: <HostArch as kvmkit_core::SnapshotArch>::AbiProfile =
        serde_json::from_value(snap.profile.clone())
            .map_err(|e| format!("the snapshot's ABI profile is not readable: {e}"))?;
    dest.parts.check_profile(&profile, "the saved VM")?;
    let state: VmmState = serde_json::from_value(snap.state.clone())
        .map_err(|e| format!("the snapshot's state is not readable: {e}"))?;
    dest.parts.check(&state)?;
    let file = std::fs::File::open(&snap.memory)
        .map_err(|e| format!("cannot open {}: {e}", snap.memory.display()))?;
    let mut buf = vec![0u8; 1 << 20];
    for r in &snap.layout {
        let mut done = 0u64;
        while done < r.len {
            let n = usize::try_from((r.len - done).min(1 << 20)).unwrap_or(1 << 20);
            let chunk = &mut buf[..n];
            std::os::unix::fs::FileExt::read_exact_at(&file, chunk, r.file_offset + done)
                .map_err(|e| format!("cannot read {}: {e}", snap.memory.display()))?;
            if chunk.iter().any(|&b| b != 0) {
                vm_memory::Bytes::write_slice(dest.memory, chunk, GuestAddress(r.gpa + done))
                    .map_err(|e| {
                        format!("cannot write guest memory at {:#x}: {e}", r.gpa + done)
                    })?;
            }
            done += n as u64;
        }
    }
    dest.parts.restore(dest.vcpus, &state)?;
    eprintln!(
        "vmm-reference: loaded the snapshot in {} ({:.2} ms)",
        dir.display(),
        started.elapsed().as_secs_f64() * 1000.0
    );
    Ok(())
}

/// Registers the migration and snapshot commands.
pub(crate) fn register(d: &mut Dispatcher, m: Arc<Migrator>) {
    let err = |e: String| QmpError::generic(e);
    let mm = m.clone();
    d.register(
        "migrate",
        Box::new(move |_, mut args: Args| {
            let uri = args.required_str("uri")?;
            // Accepted for compatibility; this VMM always detaches.
            let _ = args.optional_bool("detach")?;
            args.finish()?;
            let uri: MigrationUri = uri.parse().map_err(err)?;
            mm.start(uri).map_err(err)?;
            Ok(Reply::empty())
        }),
    );
    let deferred = m.deferred.clone();
    let mm = m.clone();
    d.register(
        "migrate-incoming",
        Box::new(move |_, mut args: Args| {
            let uri = args.required_str("uri")?;
            args.finish()?;
            let uri: MigrationUri = uri.parse().map_err(err)?;
            send_deferred(&mm, &deferred, Deferred::Migration(uri))
        }),
    );
    let deferred = m.deferred.clone();
    let mm = m.clone();
    d.register(
        "snapshot-load",
        Box::new(move |_, mut args: Args| {
            let path = args.required_str("path")?;
            args.finish()?;
            send_deferred(&mm, &deferred, Deferred::Snapshot(PathBuf::from(path)))
        }),
    );
    let mm = m.clone();
    d.register(
        "migrate_cancel",
        Box::new(move |_, args: Args| {
            args.finish()?;
            mm.cancel();
            Ok(Reply::empty())
        }),
    );
    let mm = m.clone();
    d.register(
        "query-migrate",
        Box::new(move |_, args: Args| {
            args.finish()?;
            Ok(Reply::value(mm.info()))
        }),
    );
    d.register(
        "snapshot-save",
        Box::new(move |_, mut args: Args| {
            let path = args.required_str("path")?;
            args.finish()?;
            let v = m.snapshot(Path::new(&path)).map_err(err)?;
            Ok(Reply::value(v))
        }),
    );
}
