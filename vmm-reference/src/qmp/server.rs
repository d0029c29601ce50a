//! The QMP server on a Unix socket.
//!
//! Threads: one accepts connections; each client has a reader, which parses
//! its requests and runs them through the [`Dispatcher`] one after the
//! other (QEMU's in-band execution), and a writer, which drains the
//! client's [`Outbox`]. Several clients may be connected at once (QEMU
//! allows one per monitor): each negotiates on its own and every
//! negotiated client receives every event. A client that sends garbage
//! gets QEMU's errors and stays; one that sends an over-long message, stops
//! reading its replies or disconnects is dropped; none can block the
//! machine or another client.

use super::commands::{Dispatcher, Session};
use super::error::{Error, Result};
use super::events::{Outbox, OUTBOX_CAPACITY};
use super::protocol::{encode, failure, Frame, Splitter};
use std::io::{Read, Write};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

/// The most clients connected at once; more are closed on accept.
pub const MAX_CLIENTS: usize = 16;

/// How long a write to a client may block before the client is dropped.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug)]
struct Client {
    stream: UnixStream,
    outbox: Arc<Outbox>,
    reader: Option<JoinHandle<()>>,
    writer: Option<JoinHandle<()>>,
}

impl Client {
    fn finished(&self) -> bool {
        self.reader.as_ref().is_none_or(JoinHandle::is_finished)
            && self.writer.as_ref().is_none_or(JoinHandle::is_finished)
    }

    /// Stops reading, lets the writer send what is queued, joins both.
    fn close(mut self) {
        self.outbox.close();
        let _ = self.stream.shutdown(std::net::Shutdown::Read);
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        if let Some(w) = self.writer.take() {
            let _ = w.join();
        }
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
    }
}

#[derive(Debug, Default)]
struct Shared {
    stopping: AtomicBool,
    clients: Mutex<Vec<Client>>,
}

impl Shared {
    fn clients(&self) -> MutexGuard<'_, Vec<Client>> {
        self.clients.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A QMP server on a Unix socket.
#[derive(Debug)]
pub struct QmpServer {
    path: PathBuf,
    listener: Option<UnixListener>,
    dispatcher: Arc<Dispatcher>,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
}

impl QmpServer {
    /// Binds the socket at `path` (replacing a stale socket there, as QEMU
    /// does; refusing any other file); connections wait until
    /// [`QmpServer::start`].
    pub fn bind(path: &Path, dispatcher: Arc<Dispatcher>) -> Result<Self> {
        if let Ok(meta) = std::fs::symlink_metadata(path) {
            if !meta.file_type().is_socket() {
                return Err(Error::SocketPathTaken {
                    path: path.to_path_buf(),
                });
            }
            let _ = std::fs::remove_file(path);
        }
        let listener = UnixListener::bind(path).map_err(|source| Error::BindSocket {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(QmpServer {
            path: path.to_path_buf(),
            listener: Some(listener),
            dispatcher,
            shared: Arc::new(Shared::default()),
            accept: None,
        })
    }

    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Starts accepting connections.
    pub fn start(&mut self) -> Result<()> {
        let Some(listener) = self.listener.take() else {
            return Ok(());
        };
        let shared = self.shared.clone();
        let dispatcher = self.dispatcher.clone();
        let h = std::thread::Builder::new()
            .name("qmp accept".into())
            .spawn(move || accept_loop(&listener, &shared, &dispatcher))
            .map_err(|source| Error::SpawnThread {
                what: "accept",
                source,
            })?;
        self.accept = Some(h);
        Ok(())
    }

    /// How many clients are connected.
    pub fn clients(&self) -> usize {
        self.shared
            .clients()
            .iter()
            .filter(|c| !c.finished())
            .count()
    }

    /// Stops accepting, sends every client what is queued for it (the last
    /// events), closes the connections and removes the socket. Idempotent.
    pub fn shutdown(&mut self) {
        if self.shared.stopping.swap(true, Ordering::SeqCst) {
            return;
        }
        if let Some(h) = self.accept.take() {
            // Wake the accept thread; it sees `stopping` and ends.
            let _ = UnixStream::connect(&self.path);
            let _ = h.join();
        }
        let clients: Vec<Client> = self.shared.clients().drain(..).collect();
        for c in clients {
            c.close();
        }
        self.listener = None;
        let _ = std::fs::remove_file(&self.path);
    }
}

impl Drop for QmpServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn accept_loop(listener: &UnixListener, shared: &Arc<Shared>, dispatcher: &Arc<Dispatcher>) {
    for conn in listener.incoming() {
        if shared.stopping.load(Ordering::SeqCst) {
            return;
        }
        let Ok(stream) = conn else { continue };
        let mut clients = shared.clients();
        // Forget clients that have gone; join their threads (they ended).
        let (gone, live): (Vec<Client>, Vec<Client>) =
            clients.drain(..).partition(Client::finished);
        *clients = live;
        drop(clients);
        for c in gone {
            c.close();
        }
        if shared.clients().len() >= MAX_CLIENTS {
            // Too many: closing the connection is the answer.
            drop(stream);
            continue;
        }
        if let Some(c) = spawn_client(stream, dispatcher) {
            shared.clients().push(c);
        }
    }
}

fn spawn_client(stream: UnixStream, dispatcher: &Arc<Dispatcher>) -> Option<Client> {
    let reader_stream = stream.try_clone().ok()?;
    let mut writer_stream = stream.try_clone().ok()?;
    let (outbox, rx) = Outbox::new(OUTBOX_CAPACITY, stream.try_clone().ok());
    let _ = writer_stream.set_write_timeout(Some(WRITE_TIMEOUT));
    dispatcher.events().subscribe(&outbox);
    outbox.reply(&encode(&dispatcher.greeting()), false);
    let writer = std::thread::Builder::new()
        .name("qmp writer".into())
        .spawn(move || {
            for msg in rx {
                if writer_stream.write_all(&msg).is_err() {
                    break;
                }
            }
            // Everything queued is sent (or the client is gone): end the
            // connection, so that the client and our reader see the end.
            let _ = writer_stream.shutdown(std::net::Shutdown::Both);
        })
        .ok()?;
    let d = dispatcher.clone();
    let out = outbox.clone();
    let reader = std::thread::Builder::new()
        .name("qmp reader".into())
        .spawn(move || serve(reader_stream, &d, &out))
        .ok();
    if reader.is_none() {
        outbox.close();
    }
    Some(Client {
        stream,
        outbox,
        reader,
        writer: Some(writer),
    })
}

/// Reads and answers one client's requests until it goes.
fn serve(mut stream: UnixStream, dispatcher: &Dispatcher, outbox: &Outbox) {
    let mut session = Session::new();
    let mut splitter = Splitter::new();
    let mut buf = [0u8; 4096];
    'conn: loop {
        let n = match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        for frame in splitter.feed(&buf[..n]) {
            match frame {
                Frame::Message(bytes) => {
                    let o = dispatcher.handle_bytes(&mut session, &bytes);
                    outbox.reply(&encode(&o.response), session.is_negotiated());
                    if let Some(after) = o.after {
                        after();
                    }
                }
                Frame::Error(e) => {
                    outbox.reply(&encode(&failure(&e, None)), session.is_negotiated());
                }
                Frame::TooLong(e) => {
                    outbox.reply(&encode(&failure(&e, None)), session.is_negotiated());
                    // Refuse the rest: a client still writing gets EPIPE.
                    let _ = stream.shutdown(std::net::Shutdown::Read);
                    break 'conn;
                }
            }
            if !outbox.is_open() {
                break 'conn;
            }
        }
    }
    // The writer sends what is queued, then ends.
    outbox.close();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::{MachineEvent, MachineObserver, ShutdownCause};
    use crate::qmp::events::EventBus;
    use crate::qmp::machine::{
        DirtyPageCounter, DirtyRateMode, Machine, MachineError, RunState, VcpuInfo,
    };
    use serde_json::{json, Value};
    use std::io::{BufRead, BufReader};
    use vm_memory::{GuestAddress, GuestMemoryMmap};

    struct Idle {
        events: Arc<EventBus>,
        mem: Arc<GuestMemoryMmap>,
    }

    impl Machine for Idle {
        fn run_state(&self) -> RunState {
            RunState::Running
        }
        fn stop(&self) -> Result<(), MachineError> {
            self.events.machine_event(MachineEvent::Stopped);
            Ok(())
        }
        fn cont(&self) -> Result<(), MachineError> {
            Ok(())
        }
        fn power_button(&self) -> Result<(), MachineError> {
            Ok(())
        }
        fn quit(&self) {
            self.events
                .machine_event(MachineEvent::Shutdown(ShutdownCause::HostQmpQuit));
        }
        fn vcpus(&self) -> Vec<VcpuInfo> {
            Vec::new()
        }
        fn target(&self) -> &'static str {
            "x86_64"
        }
        fn guest_memory(&self) -> Arc<GuestMemoryMmap> {
            self.mem.clone()
        }
        fn start_dirty_count(
            &self,
            _: DirtyRateMode,
        ) -> Result<Box<dyn DirtyPageCounter>, MachineError> {
            Err(MachineError("no".into()))
        }
    }

    fn server(tag: &str) -> QmpServer {
        let events = Arc::new(EventBus::new());
        let m = Arc::new(Idle {
            events: events.clone(),
            mem: Arc::new(GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap()),
        });
        let d = Arc::new(Dispatcher::new(m, events));
        let path =
            std::env::temp_dir().join(format!("kvmkit-qmp-{tag}-{}.sock", std::process::id()));
        let mut s = QmpServer::bind(&path, d).unwrap();
        s.start().unwrap();
        s
    }

    struct Conn {
        r: BufReader<UnixStream>,
        w: UnixStream,
    }

    impl Conn {
        fn open(path: &Path) -> Conn {
            let w = UnixStream::connect(path).unwrap();
            w.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
            Conn {
                r: BufReader::new(w.try_clone().unwrap()),
                w,
            }
        }
        fn recv(&mut self) -> Value {
            let mut line = String::new();
            self.r.read_line(&mut line).unwrap();
            assert!(line.ends_with("\r\n"), "CRLF: {line:?}");
            serde_json::from_str(&line).unwrap()
        }
        fn send(&mut self, s: &[u8]) {
            self.w.write_all(s).unwrap();
        }
        fn eof(&mut self) -> bool {
            let mut line = String::new();
            matches!(self.r.read_line(&mut line), Ok(0))
        }
    }

    #[test]
    fn serves_several_clients_and_broadcasts_events() {
        let mut s = server("multi");
        let mut a = Conn::open(s.path());
        let mut b = Conn::open(s.path());
        assert_eq!(a.recv()["QMP"]["capabilities"], json!([]));
        assert!(b.recv()["QMP"]["version"]["package"].is_string());
        // Two requests in one write, split mid-way.
        a.send(br#"{"execute":"qmp_capabilities","id":1}{"execute":"query-st"#);
        a.send(b"atus\",\"id\":2}\n");
        assert_eq!(a.recv(), json!({"return": {}, "id": 1}));
        assert_eq!(a.recv()["return"]["status"], "running");
        // b has not negotiated: a's stop reaches a only.
        a.send(br#"{"execute":"stop"}"#);
        assert_eq!(a.recv()["event"], "STOP");
        assert_eq!(a.recv(), json!({"return": {}}));
        b.send(b"{\"execute\":\"qmp_capabilities\"}\r\n");
        assert_eq!(b.recv(), json!({"return": {}}));
        // Garbage: errors, the connection stays.
        b.send(b"{\"execute\": }\n");
        assert!(b.recv()["error"]["desc"]
            .as_str()
            .unwrap()
            .starts_with("JSON parse error"));
        b.send(b"\x01");
        assert_eq!(b.recv()["error"]["desc"], "JSON parse error, stray '\\x01'");
        b.send(b"[] ");
        assert_eq!(b.recv()["error"]["desc"], "QMP input must be a JSON object");
        assert_eq!(s.clients(), 2);
        // quit: the reply, then SHUTDOWN to both.
        a.send(br#"{"execute":"quit","id":"q"}"#);
        assert_eq!(a.recv(), json!({"return": {}, "id": "q"}));
        let sd = a.recv();
        assert_eq!(sd["event"], "SHUTDOWN");
        assert_eq!(
            sd["data"],
            json!({"guest": false, "reason": "host-qmp-quit"})
        );
        assert_eq!(b.recv()["event"], "SHUTDOWN");
        let path = s.path().to_path_buf();
        s.shutdown();
        assert!(a.eof() && b.eof(), "connections closed");
        assert!(!path.exists(), "socket removed");
        s.shutdown();
    }

    #[test]
    fn drops_clients_that_send_too_much_or_vanish() {
        let mut s = server("drop");
        let mut a = Conn::open(s.path());
        a.recv();
        // A client that disconnects mid-message.
        let mut c = Conn::open(s.path());
        c.recv();
        c.send(br#"{"execute":"qmp_capa"#);
        drop(c);
        // An over-long message: an error, then the connection ends.
        let big = vec![b'['; 1]
            .into_iter()
            .chain(std::iter::repeat_n(b'1', 2 << 20));
        let big: Vec<u8> = big.collect();
        let _ = a.w.write_all(&big);
        assert!(a.recv()["error"]["desc"]
            .as_str()
            .unwrap()
            .contains("size limit"));
        assert!(a.eof());
        // The server still serves.
        let mut b = Conn::open(s.path());
        b.recv();
        b.send(br#"{"execute":"qmp_capabilities"}"#);
        assert_eq!(b.recv(), json!({"return": {}}));
        s.shutdown();
    }

    #[test]
    fn refuses_more_than_max_clients_and_non_sockets() {
        let mut s = server("max");
        let mut conns: Vec<Conn> = (0..MAX_CLIENTS).map(|_| Conn::open(s.path())).collect();
        for c in &mut conns {
            c.recv();
        }
        let mut extra = Conn::open(s.path());
        assert!(extra.eof(), "closed at once");
        drop(conns);
        s.shutdown();

        let file = std::env::temp_dir().join(format!("kvmkit-qmp-file-{}", std::process::id()));
        std::fs::write(&file, b"x").unwrap();
        let events = Arc::new(EventBus::new());
        let m = Arc::new(Idle {
            events: events.clone(),
            mem: Arc::new(GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap()),
        });
        let d = Arc::new(Dispatcher::new(m, events));
        let e = QmpServer::bind(&file, d.clone()).unwrap_err();
        assert!(e.to_string().contains("is not a socket"), "{e}");
        std::fs::remove_file(&file).unwrap();
        let e = QmpServer::bind(Path::new("/nonexistent/dir/x.sock"), d).unwrap_err();
        assert!(
            e.to_string().starts_with("cannot bind the API socket"),
            "{e}"
        );
    }

    #[test]
    fn a_stale_socket_is_replaced() {
        let path =
            std::env::temp_dir().join(format!("kvmkit-qmp-stale-{}.sock", std::process::id()));
        // A socket file left behind, as by a VMM that crashed.
        drop(UnixListener::bind(&path).unwrap());
        assert!(path.exists());
        let events = Arc::new(EventBus::new());
        let m = Arc::new(Idle {
            events: events.clone(),
            mem: Arc::new(GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap()),
        });
        let mut s = QmpServer::bind(&path, Arc::new(Dispatcher::new(m, events))).unwrap();
        s.start().unwrap();
        s.start().unwrap();
        let mut c = Conn::open(s.path());
        assert!(c.recv().get("QMP").is_some());
        drop(s);
        assert!(!path.exists(), "dropping the server removes the socket");
    }
}
