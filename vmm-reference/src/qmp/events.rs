//! Asynchronous events and each client's outgoing queue.
//!
//! Every connected client has an [`Outbox`]: a bounded queue drained by its
//! own writer thread, so that neither the machine loop (which emits
//! `STOP`, `RESUME` and `SHUTDOWN`) nor another client ever waits for a
//! slow reader. A client whose queue overflows is disconnected. Replies and
//! events share the queue, so a client sees them in the order they
//! happened: the `STOP` of its own `stop` before the reply, the reply to
//! `quit` before `SHUTDOWN`, and nothing before the reply that ends
//! capabilities negotiation.

use super::protocol::{encode, event};
use crate::core::{MachineEvent, MachineObserver, ShutdownCause};
use serde_json::{json, Value};
use std::os::unix::net::UnixStream;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::SystemTime;

/// How many messages may wait for a client before it is disconnected.
pub const OUTBOX_CAPACITY: usize = 1024;

#[derive(Debug)]
struct OutboxState {
    tx: Option<SyncSender<Arc<[u8]>>>,
    negotiated: bool,
}

/// One client's outgoing messages.
#[derive(Debug)]
pub struct Outbox {
    state: Mutex<OutboxState>,
    /// Shut down when the queue overflows, so that the client's reader
    /// ends too (absent in tests).
    socket: Option<UnixStream>,
}

impl Outbox {
    /// An outbox of `capacity` messages; the receiver is for the writer.
    /// `socket` is shut down if the client stops reading.
    ///
    /// ```
    /// use kvmkit_vmm_reference::qmp::Outbox;
    /// let (out, rx) = Outbox::new(4, None);
    /// out.reply(b"{}\r\n", false);
    /// assert!(!out.event(b"{\"event\":\"STOP\"}\r\n"), "not negotiated: no events");
    /// assert_eq!(&*rx.try_recv().unwrap(), b"{}\r\n");
    /// assert!(rx.try_recv().is_err());
    /// ```
    pub fn new(capacity: usize, socket: Option<UnixStream>) -> (Arc<Outbox>, Receiver<Arc<[u8]>>) {
        let (tx, rx) = sync_channel(capacity);
        (
            Arc::new(Outbox {
                state: Mutex::new(OutboxState {
                    tx: Some(tx),
                    negotiated: false,
                }),
                socket,
            }),
            rx,
        )
    }

    fn lock(&self) -> MutexGuard<'_, OutboxState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn send_locked(&self, st: &mut OutboxState, bytes: Arc<[u8]>) -> bool {
        let Some(tx) = &st.tx else { return false };
        match tx.try_send(bytes) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                // The client does not read: drop it rather than wait.
                st.tx = None;
                if let Some(s) = &self.socket {
                    let _ = s.shutdown(std::net::Shutdown::Both);
                }
                false
            }
        }
    }

    /// Queues a reply (or the greeting), then records whether the client
    /// is now in command mode: events queued after this call reach it only
    /// if `negotiated`.
    pub fn reply(&self, bytes: &[u8], negotiated: bool) -> bool {
        let mut st = self.lock();
        let sent = self.send_locked(&mut st, bytes.into());
        st.negotiated = negotiated;
        sent
    }

    /// Queues an event if the client finished negotiation; returns whether
    /// it was queued.
    pub fn event(&self, bytes: &[u8]) -> bool {
        self.event_shared(bytes.into())
    }

    fn event_shared(&self, bytes: Arc<[u8]>) -> bool {
        let mut st = self.lock();
        if !st.negotiated {
            return false;
        }
        self.send_locked(&mut st, bytes)
    }

    /// Closes the queue: the writer sends what is queued, then ends.
    pub fn close(&self) {
        self.lock().tx = None;
    }

    /// True while messages can still be queued.
    pub fn is_open(&self) -> bool {
        self.lock().tx.is_some()
    }
}

/// Sends events to every connected client that finished negotiation.
#[derive(Debug, Default)]
pub struct EventBus {
    clients: Mutex<Vec<Weak<Outbox>>>,
}

impl EventBus {
    /// A bus with no clients.
    pub fn new() -> Self {
        EventBus::default()
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Weak<Outbox>>> {
        self.clients.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds a client; it is dropped from the bus when its outbox is.
    pub fn subscribe(&self, outbox: &Arc<Outbox>) {
        let mut c = self.lock();
        c.retain(|w| w.strong_count() > 0);
        c.push(Arc::downgrade(outbox));
    }

    /// How many clients are connected.
    pub fn clients(&self) -> usize {
        self.lock().iter().filter(|w| w.strong_count() > 0).count()
    }

    /// Emits event `name` with `data`, timestamped now; returns how many
    /// clients it was queued for.
    pub fn emit(&self, name: &str, data: Option<Value>) -> usize {
        let bytes: Arc<[u8]> = encode(&event(name, data, SystemTime::now())).into();
        let clients: Vec<Arc<Outbox>> = self.lock().iter().filter_map(Weak::upgrade).collect();
        clients
            .iter()
            .filter(|o| o.event_shared(bytes.clone()))
            .count()
    }
}

/// QEMU's `ShutdownCause` name.
///
/// ```
/// use kvmkit_vmm_reference::{qmp::shutdown_reason, ShutdownCause};
/// assert_eq!(shutdown_reason(ShutdownCause::HostQmpQuit), "host-qmp-quit");
/// ```
pub fn shutdown_reason(cause: ShutdownCause) -> &'static str {
    match cause {
        ShutdownCause::HostError => "host-error",
        ShutdownCause::HostQmpQuit => "host-qmp-quit",
        ShutdownCause::HostSignal => "host-signal",
        ShutdownCause::HostUi => "host-ui",
        ShutdownCause::GuestShutdown => "guest-shutdown",
        ShutdownCause::GuestReset => "guest-reset",
    }
}

/// The machine loop's events, as QMP events: `STOP`, `RESUME` and
/// `SHUTDOWN` with `guest` and `reason`.
impl MachineObserver for EventBus {
    fn machine_event(&self, e: MachineEvent) {
        match e {
            MachineEvent::Stopped => self.emit("STOP", None),
            MachineEvent::Resumed => self.emit("RESUME", None),
            MachineEvent::Shutdown(cause) => self.emit(
                "SHUTDOWN",
                Some(json!({ "guest": cause.by_guest(), "reason": shutdown_reason(cause) })),
            ),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(b: &[u8]) -> Value {
        serde_json::from_slice(b).unwrap()
    }

    #[test]
    fn events_reach_negotiated_clients_only() {
        let bus = EventBus::new();
        let (a, ra) = Outbox::new(8, None);
        let (b, rb) = Outbox::new(8, None);
        bus.subscribe(&a);
        bus.subscribe(&b);
        assert_eq!(bus.clients(), 2);
        a.reply(b"{\"return\": {}}\r\n", true);
        assert_eq!(bus.emit("STOP", None), 1);
        assert_eq!(ra.try_recv().unwrap().as_ref(), b"{\"return\": {}}\r\n");
        let stop = parse(&ra.try_recv().unwrap());
        assert_eq!(stop["event"], "STOP");
        assert!(stop.get("data").is_none());
        assert!(stop["timestamp"]["seconds"].as_u64().unwrap() > 0);
        assert!(stop["timestamp"]["microseconds"].as_u64().unwrap() < 1_000_000);
        assert!(rb.try_recv().is_err());
        drop(b);
        assert_eq!(bus.clients(), 1);
        bus.machine_event(MachineEvent::Shutdown(ShutdownCause::GuestShutdown));
        let sd = parse(&ra.try_recv().unwrap());
        assert_eq!(sd["event"], "SHUTDOWN");
        assert_eq!(
            sd["data"],
            json!({"guest": true, "reason": "guest-shutdown"})
        );
        bus.machine_event(MachineEvent::Resumed);
        assert_eq!(parse(&ra.try_recv().unwrap())["event"], "RESUME");
        bus.machine_event(MachineEvent::Stopped);
        assert_eq!(parse(&ra.try_recv().unwrap())["event"], "STOP");
    }

    #[test]
    fn a_full_outbox_drops_the_client() {
        let (a, rx) = Outbox::new(2, None);
        assert!(a.reply(b"1", true));
        assert!(a.event(b"2"));
        assert!(a.is_open());
        assert!(!a.event(b"3"), "full");
        assert!(!a.is_open(), "dropped");
        assert!(!a.reply(b"4", true));
        assert_eq!(rx.try_iter().count(), 2);
        let (b, rx) = Outbox::new(2, None);
        drop(rx);
        assert!(!b.reply(b"x", false), "the writer is gone");
        let (c, rx) = Outbox::new(2, None);
        c.close();
        assert!(!c.is_open());
        assert!(rx.recv().is_err(), "closed: the writer ends");
    }

    #[test]
    fn full_outbox_shuts_the_socket() {
        let (mine, theirs) = UnixStream::pair().unwrap();
        let (a, _rx) = Outbox::new(1, Some(mine));
        assert!(a.reply(b"1", true));
        assert!(!a.event(b"2"));
        let mut buf = [0u8; 1];
        use std::io::Read;
        assert_eq!((&theirs).read(&mut buf).unwrap(), 0, "peer sees EOF");
    }

    #[test]
    fn every_cause_has_its_qemu_name() {
        for (cause, name, guest) in [
            (ShutdownCause::HostError, "host-error", false),
            (ShutdownCause::HostQmpQuit, "host-qmp-quit", false),
            (ShutdownCause::HostSignal, "host-signal", false),
            (ShutdownCause::HostUi, "host-ui", false),
            (ShutdownCause::GuestShutdown, "guest-shutdown", true),
            (ShutdownCause::GuestReset, "guest-reset", true),
        ] {
            assert_eq!(shutdown_reason(cause), name);
            assert_eq!(cause.by_guest(), guest);
        }
    }
}
