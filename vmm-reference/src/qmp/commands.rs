//! The command dispatcher: capabilities negotiation, the command table and
//! the built-in commands.
//!
//! Commands live in a table of handlers keyed by name. The built-ins are
//! registered by [`Dispatcher::new`]; another command family (migration,
//! snapshots) adds its own with [`Dispatcher::register`], with its own
//! state captured in the handler, without touching this file.

use super::args::{Args, QapiEnum};
use super::dirty_rate::{CalcRequest, DirtyRate, TimeUnit};
use super::events::EventBus;
use super::machine::{DirtyRateMode, Machine};
use super::protocol::{check_request, failure, parse_json, success, QmpError};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::Arc;

/// The QEMU release whose QMP this server follows (reported as
/// `version.qemu`: clients gate features on it).
pub const QEMU_VERSION: (u32, u32, u32) = (8, 2, 0);

/// Run after the reply is queued (a reply must precede the events its
/// command causes, e.g. `quit`'s `SHUTDOWN`).
pub type After = Box<dyn FnOnce() + Send>;

/// A command's success: the `return` value and what to do once it is sent.
pub struct Reply {
    /// The `return` value.
    pub value: Value,
    /// Work to run after the reply is queued.
    pub after: Option<After>,
}

impl std::fmt::Debug for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reply")
            .field("value", &self.value)
            .field("after", &self.after.is_some())
            .finish()
    }
}

impl Reply {
    /// `{}` and nothing after.
    pub fn empty() -> Self {
        Reply::value(json!({}))
    }

    /// `value` and nothing after.
    pub fn value(value: Value) -> Self {
        Reply { value, after: None }
    }
}

/// What a handler sees.
#[derive(Clone)]
pub struct Context {
    /// The machine.
    pub machine: Arc<dyn Machine>,
    /// The event bus (for events that are not the machine's, e.g. `POWERDOWN`).
    pub events: Arc<EventBus>,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context").finish_non_exhaustive()
    }
}

/// A command handler: arguments in, reply or QMP error out. It must read
/// every argument it accepts and end with [`Args::finish`].
pub type Handler = Box<dyn Fn(&Context, Args) -> Result<Reply, QmpError> + Send + Sync>;

/// One connection's protocol state.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Session {
    negotiated: bool,
}

impl Session {
    /// A new connection: capabilities negotiation mode.
    pub fn new() -> Self {
        Session::default()
    }

    /// True once `qmp_capabilities` succeeded (command mode).
    pub fn is_negotiated(&self) -> bool {
        self.negotiated
    }
}

/// The answer to one request.
pub struct Outcome {
    /// The reply message (`return` or `error`, with the request's `id`).
    pub response: Value,
    /// Work to run once the reply is queued.
    pub after: Option<After>,
}

impl std::fmt::Debug for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outcome")
            .field("response", &self.response)
            .field("after", &self.after.is_some())
            .finish()
    }
}

/// QMP capabilities this server offers: none (no out-of-band execution).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Capability {
    Oob,
}

impl QapiEnum for Capability {
    const VALUES: &'static [(&'static str, Self)] = &[("oob", Capability::Oob)];

    fn name(self) -> &'static str {
        "oob"
    }
}

/// The QMP command dispatcher of one VM, shared by all connections.
pub struct Dispatcher {
    context: Context,
    commands: BTreeMap<&'static str, Handler>,
    package: String,
}

impl std::fmt::Debug for Dispatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dispatcher")
            .field("commands", &self.commands.keys().collect::<Vec<_>>())
            .field("package", &self.package)
            .finish()
    }
}

/// The name negotiation mode knows.
const QMP_CAPABILITIES: &str = "qmp_capabilities";

impl Dispatcher {
    /// A dispatcher with the built-in commands, driving `machine` and
    /// emitting events on `events`.
    pub fn new(machine: Arc<dyn Machine>, events: Arc<EventBus>) -> Self {
        let mut d = Dispatcher {
            context: Context { machine, events },
            commands: BTreeMap::new(),
            package: format!("kvmkit vmm-reference {}", env!("CARGO_PKG_VERSION")),
        };
        register_builtins(&mut d);
        d
    }

    /// Adds (or replaces) command `name`.
    pub fn register(&mut self, name: &'static str, handler: Handler) {
        self.commands.insert(name, handler);
    }

    /// The command names, sorted (as `query-commands` lists them).
    pub fn command_names(&self) -> Vec<&'static str> {
        let mut v: Vec<&'static str> = self.commands.keys().copied().collect();
        v.extend([QMP_CAPABILITIES, "query-version", "query-commands"]);
        v.sort_unstable();
        v
    }

    /// The event bus.
    pub fn events(&self) -> &Arc<EventBus> {
        &self.context.events
    }

    /// The `query-version` value (also the greeting's `version`).
    pub fn version(&self) -> Value {
        let (major, minor, micro) = QEMU_VERSION;
        json!({
            "qemu": { "major": major, "minor": minor, "micro": micro },
            "package": self.package,
        })
    }

    /// The greeting sent on connect: no capabilities are offered.
    pub fn greeting(&self) -> Value {
        json!({ "QMP": { "version": self.version(), "capabilities": [] } })
    }

    /// Handles one framed message (the bytes of a JSON value).
    pub fn handle_bytes(&self, session: &mut Session, bytes: &[u8]) -> Outcome {
        match parse_json(bytes) {
            Ok(v) => self.handle(session, v),
            Err(e) => Outcome {
                response: failure(&e, None),
                after: None,
            },
        }
    }

    /// Handles one parsed request.
    pub fn handle(&self, session: &mut Session, request: Value) -> Outcome {
        let req = match check_request(request) {
            Ok(r) => r,
            Err(rej) => {
                return Outcome {
                    response: failure(&rej.error, rej.id),
                    after: None,
                }
            }
        };
        let result = self.execute(session, &req.command, Args::new(req.arguments));
        match result {
            Ok(reply) => Outcome {
                response: success(reply.value, req.id),
                after: reply.after,
            },
            Err(e) => Outcome {
                response: failure(&e, req.id),
                after: None,
            },
        }
    }

    fn execute(
        &self,
        session: &mut Session,
        name: &str,
        mut args: Args,
    ) -> Result<Reply, QmpError> {
        if name == QMP_CAPABILITIES {
            if session.negotiated {
                return Err(QmpError::command_not_found(
                    "Capabilities negotiation is already complete, command ignored",
                ));
            }
            let enable = args.optional_enum_list::<Capability>("enable")?;
            args.finish()?;
            if let Some(caps) = enable.filter(|c| !c.is_empty()) {
                let names: Vec<&str> = caps.iter().map(|c| c.name()).collect();
                return Err(QmpError::generic(format!(
                    "Capability {} not available",
                    names.join(", ")
                )));
            }
            session.negotiated = true;
            return Ok(Reply::empty());
        }
        if !session.negotiated {
            // QEMU knows only qmp_capabilities here, and rewords the
            // CommandNotFound of everything else.
            return Err(QmpError::command_not_found(
                "Expecting capabilities negotiation with 'qmp_capabilities'",
            ));
        }
        match name {
            "query-version" => {
                args.finish()?;
                Ok(Reply::value(self.version()))
            }
            "query-commands" => {
                args.finish()?;
                let list: Vec<Value> = self
                    .command_names()
                    .into_iter()
                    .map(|n| json!({ "name": n }))
                    .collect();
                Ok(Reply::value(Value::Array(list)))
            }
            _ => match self.commands.get(name) {
                Some(h) => h(&self.context, args),
                None => Err(QmpError::command_not_found(format!(
                    "The command {name} has not been found"
                ))),
            },
        }
    }
}

fn no_args(f: impl Fn(&Context) -> Result<Reply, QmpError> + Send + Sync + 'static) -> Handler {
    Box::new(move |ctx, args| {
        args.finish()?;
        f(ctx)
    })
}

fn machine_err(e: super::machine::MachineError) -> QmpError {
    QmpError::generic(e.0)
}

/// The x86 QOM path QEMU gives a `-smp` CPU.
fn qom_path(index: u32) -> String {
    format!("/machine/unattached/device[{index}]")
}

fn register_builtins(d: &mut Dispatcher) {
    d.register(
        "query-status",
        no_args(|ctx| {
            let state = ctx.machine.run_state();
            Ok(Reply::value(json!({
                "running": state == super::machine::RunState::Running,
                "singlestep": false,
                "status": state.name(),
            })))
        }),
    );
    d.register(
        "stop",
        no_args(|ctx| {
            ctx.machine.stop().map_err(machine_err)?;
            Ok(Reply::empty())
        }),
    );
    d.register(
        "cont",
        no_args(|ctx| {
            if ctx.machine.run_state().needs_reset() {
                return Err(QmpError::generic(
                    "Resetting the Virtual Machine is required",
                ));
            }
            ctx.machine.cont().map_err(machine_err)?;
            Ok(Reply::empty())
        }),
    );
    d.register(
        "system_powerdown",
        no_args(|ctx| {
            let ctx = ctx.clone();
            Ok(Reply {
                value: json!({}),
                after: Some(Box::new(move || {
                    // QEMU emits POWERDOWN, then the button is pressed.
                    ctx.events.emit("POWERDOWN", None);
                    if let Err(e) = ctx.machine.power_button() {
                        eprintln!("vmm-reference: system_powerdown: {e}");
                    }
                })),
            })
        }),
    );
    d.register(
        "quit",
        no_args(|ctx| {
            let machine = ctx.machine.clone();
            Ok(Reply {
                value: json!({}),
                after: Some(Box::new(move || machine.quit())),
            })
        }),
    );
    d.register(
        "query-kvm",
        no_args(|_| Ok(Reply::value(json!({ "enabled": true, "present": true })))),
    );
    d.register(
        "query-cpus-fast",
        no_args(|ctx| {
            let target = ctx.machine.target();
            let list: Vec<Value> = ctx
                .machine
                .vcpus()
                .into_iter()
                .map(|v| {
                    json!({
                        "cpu-index": v.index,
                        "qom-path": qom_path(v.index),
                        "thread-id": v.thread_id,
                        "props": {
                            "socket-id": v.socket_id,
                            "core-id": v.core_id,
                            "thread-id": v.thread_in_core,
                        },
                        "target": target,
                    })
                })
                .collect();
            Ok(Reply::value(Value::Array(list)))
        }),
    );
    let dirty = Arc::new(DirtyRate::new());
    let calc = dirty.clone();
    d.register(
        "calc-dirty-rate",
        Box::new(move |ctx, mut args| {
            let req = CalcRequest {
                calc_time: args.required_int("calc-time")?,
                unit: args.optional_enum::<TimeUnit>("calc-time-unit")?,
                sample_pages: args.optional_int("sample-pages")?,
                mode: args.optional_enum::<DirtyRateMode>("mode")?,
            };
            args.finish()?;
            calc.start(ctx.machine.as_ref(), req)?;
            Ok(Reply::empty())
        }),
    );
    d.register(
        "query-dirty-rate",
        Box::new(move |_, mut args| {
            let unit = args.optional_enum::<TimeUnit>("calc-time-unit")?;
            args.finish()?;
            Ok(Reply::value(dirty.query(unit.unwrap_or(TimeUnit::Second))))
        }),
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::qmp::events::Outbox;
    use crate::qmp::machine::{DirtyPageCounter, MachineError, RunState, VcpuInfo};
    use std::sync::Mutex;
    use std::time::Duration;
    use vm_memory::{GuestAddress, GuestMemoryMmap};

    /// A machine that records what it was asked and plays the machine
    /// loop's part (events, state).
    struct Mock {
        state: Mutex<RunState>,
        calls: Mutex<Vec<&'static str>>,
        events: Arc<EventBus>,
        mem: Arc<GuestMemoryMmap>,
    }

    impl Mock {
        fn calls(&self) -> Vec<&'static str> {
            self.calls.lock().unwrap().clone()
        }
        fn set(&self, s: RunState) {
            *self.state.lock().unwrap() = s;
        }
    }

    impl Machine for Mock {
        fn run_state(&self) -> RunState {
            *self.state.lock().unwrap()
        }
        fn stop(&self) -> Result<(), MachineError> {
            self.calls.lock().unwrap().push("stop");
            let mut s = self.state.lock().unwrap();
            if *s == RunState::Running {
                *s = RunState::Paused;
                self.events.emit("STOP", None);
            }
            Ok(())
        }
        fn cont(&self) -> Result<(), MachineError> {
            self.calls.lock().unwrap().push("cont");
            let mut s = self.state.lock().unwrap();
            if *s == RunState::Paused {
                *s = RunState::Running;
                self.events.emit("RESUME", None);
            }
            Ok(())
        }
        fn power_button(&self) -> Result<(), MachineError> {
            self.calls.lock().unwrap().push("power_button");
            Err(MachineError("no ACPI".into()))
        }
        fn quit(&self) {
            self.calls.lock().unwrap().push("quit");
        }
        fn vcpus(&self) -> Vec<VcpuInfo> {
            (0..2)
                .map(|i| VcpuInfo {
                    index: i,
                    thread_id: 1000 + i64::from(i),
                    socket_id: 0,
                    core_id: i,
                    thread_in_core: 0,
                })
                .collect()
        }
        fn target(&self) -> &'static str {
            "x86_64"
        }
        fn guest_memory(&self) -> Arc<GuestMemoryMmap> {
            self.mem.clone()
        }
        fn start_dirty_count(
            &self,
            mode: DirtyRateMode,
        ) -> Result<Box<dyn DirtyPageCounter>, MachineError> {
            Err(MachineError(format!(
                "mode {} is not available in this build",
                mode.name()
            )))
        }
    }

    struct Fixture {
        d: Dispatcher,
        m: Arc<Mock>,
        s: Session,
        out: Arc<Outbox>,
        rx: std::sync::mpsc::Receiver<Arc<[u8]>>,
    }

    fn fixture() -> Fixture {
        let events = Arc::new(EventBus::new());
        let m = Arc::new(Mock {
            state: Mutex::new(RunState::Running),
            calls: Mutex::new(Vec::new()),
            events: events.clone(),
            mem: Arc::new(GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 16 << 20)]).unwrap()),
        });
        let d = Dispatcher::new(m.clone(), events.clone());
        let (out, rx) = Outbox::new(64, None);
        events.subscribe(&out);
        Fixture {
            d,
            m,
            s: Session::new(),
            out,
            rx,
        }
    }

    impl Fixture {
        /// Sends `req` as a client would and returns every message it
        /// gets, the reply where the server queues it.
        fn send(&mut self, req: &str) -> Vec<Value> {
            let o = self.d.handle_bytes(&mut self.s, req.as_bytes());
            self.out.reply(
                &crate::qmp::protocol::encode(&o.response),
                self.s.is_negotiated(),
            );
            if let Some(a) = o.after {
                a();
            }
            self.rx
                .try_iter()
                .map(|b| serde_json::from_slice(&b).unwrap())
                .collect()
        }

        fn one(&mut self, req: &str) -> Value {
            let mut v = self.send(req);
            assert_eq!(v.len(), 1, "{v:?}");
            v.remove(0)
        }

        fn negotiate(&mut self) {
            assert_eq!(
                self.one(r#"{"execute":"qmp_capabilities"}"#),
                json!({"return": {}})
            );
        }
    }

    fn err(class: &str, desc: &str) -> Value {
        json!({"error": {"class": class, "desc": desc}})
    }

    fn err_id(class: &str, desc: &str, id: Value) -> Value {
        json!({"error": {"class": class, "desc": desc}, "id": id})
    }

    #[test]
    fn greeting_offers_no_capabilities() {
        let f = fixture();
        let g = f.d.greeting();
        assert_eq!(g["QMP"]["capabilities"], json!([]));
        assert_eq!(
            g["QMP"]["version"]["qemu"],
            json!({"major": 8, "minor": 2, "micro": 0})
        );
        assert_eq!(
            g["QMP"]["version"]["package"],
            format!("kvmkit vmm-reference {}", env!("CARGO_PKG_VERSION"))
        );
        assert!(format!("{:?}", f.d).contains("query-status"));
    }

    #[test]
    fn negotiation_gates_every_command() {
        let mut f = fixture();
        for cmd in ["query-status", "stop", "no-such-command", "query-commands"] {
            assert_eq!(
                f.one(&format!(r#"{{"execute":"{cmd}","id":"a"}}"#)),
                err_id(
                    "CommandNotFound",
                    "Expecting capabilities negotiation with 'qmp_capabilities'",
                    json!("a")
                )
            );
        }
        // Protocol errors keep their class and message before negotiation.
        assert_eq!(
            f.one(r#"{"id":1}"#),
            err_id("GenericError", "QMP input lacks member 'execute'", json!(1))
        );
        assert!(f.m.calls().is_empty(), "nothing ran");
        assert_eq!(
            f.one(r#"{"execute":"qmp_capabilities","arguments":{"enable":["oob"]}}"#),
            err("GenericError", "Capability oob not available")
        );
        assert_eq!(
            f.one(r#"{"execute":"qmp_capabilities","arguments":{"enable":["x"]}}"#),
            err("GenericError", "Parameter 'null' does not accept value 'x'")
        );
        assert_eq!(
            f.one(r#"{"execute":"qmp_capabilities","arguments":{"x":1}}"#),
            err("GenericError", "Parameter 'x' is unexpected")
        );
        assert!(!f.s.is_negotiated());
        assert_eq!(
            f.one(r#"{"execute":"qmp_capabilities","arguments":{"enable":[]},"id":{"n":[1]}}"#),
            json!({"return": {}, "id": {"n": [1]}})
        );
        assert!(f.s.is_negotiated());
        assert_eq!(
            f.one(r#"{"execute":"qmp_capabilities"}"#),
            err(
                "CommandNotFound",
                "Capabilities negotiation is already complete, command ignored"
            )
        );
    }

    #[test]
    fn ids_are_echoed_whatever_their_type() {
        let mut f = fixture();
        f.negotiate();
        for id in [
            json!(0),
            json!(-1.5),
            json!("x"),
            json!(null),
            json!(true),
            json!([1, {"a": "b"}]),
            json!({"deep": {"er": []}}),
        ] {
            let req = json!({"execute": "query-kvm", "id": id});
            let r = f.one(&req.to_string());
            assert_eq!(r["id"], id);
            assert_eq!(r["return"], json!({"enabled": true, "present": true}));
        }
        let r = f.one(r#"{"execute":"query-kvm"}"#);
        assert!(r.get("id").is_none());
    }

    #[test]
    fn malformed_requests_get_qemus_errors() {
        let mut f = fixture();
        f.negotiate();
        let r = f.one(r#"{"execute": }"#);
        assert_eq!(r["error"]["class"], "GenericError");
        assert!(r["error"]["desc"]
            .as_str()
            .unwrap()
            .starts_with("JSON parse error, "));
        assert!(r.get("id").is_none(), "no id from unparsable input");
        assert_eq!(
            f.one("[1, 2]"),
            err("GenericError", "QMP input must be a JSON object")
        );
        assert_eq!(
            f.one("3"),
            err("GenericError", "QMP input must be a JSON object")
        );
        assert_eq!(
            f.one(r#"{"execute": ["stop"], "id": 2}"#),
            err_id(
                "GenericError",
                "QMP input member 'execute' must be a string",
                json!(2)
            )
        );
        assert_eq!(
            f.one(r#"{"execute": "stop", "arguments": 1}"#),
            err(
                "GenericError",
                "QMP input member 'arguments' must be an object"
            )
        );
        assert_eq!(
            f.one(r#"{"execute": "stop", "extra": 1}"#),
            err("GenericError", "QMP input member 'extra' is unexpected")
        );
        assert_eq!(
            f.one(r#"{"execute": "nope", "id": 5}"#),
            err_id(
                "CommandNotFound",
                "The command nope has not been found",
                json!(5)
            )
        );
        assert_eq!(
            f.one(r#"{"execute": "stop", "arguments": {"now": true}}"#),
            err("GenericError", "Parameter 'now' is unexpected")
        );
        assert!(f.m.calls().is_empty(), "no command ran");
        assert_eq!(f.m.run_state(), RunState::Running);
    }

    #[test]
    fn stop_cont_and_their_events() {
        let mut f = fixture();
        f.negotiate();
        let v = f.send(r#"{"execute":"stop","id":1}"#);
        assert_eq!(v.len(), 2);
        assert_eq!(
            v[0]["event"], "STOP",
            "the event precedes the reply, as in QEMU"
        );
        assert_eq!(v[1], json!({"return": {}, "id": 1}));
        assert_eq!(
            f.one(r#"{"execute":"query-status"}"#),
            json!({"return": {"running": false, "singlestep": false, "status": "paused"}})
        );
        // Stop again: no event.
        assert_eq!(f.one(r#"{"execute":"stop"}"#), json!({"return": {}}));
        let v = f.send(r#"{"execute":"cont"}"#);
        assert_eq!(v[0]["event"], "RESUME");
        assert_eq!(v[1], json!({"return": {}}));
        assert_eq!(f.one(r#"{"execute":"cont"}"#), json!({"return": {}}));
        assert_eq!(
            f.one(r#"{"execute":"query-status"}"#)["return"]["status"],
            "running"
        );
        // After the end, cont is refused and changes nothing.
        f.m.set(RunState::Shutdown);
        assert_eq!(
            f.one(r#"{"execute":"cont"}"#),
            err("GenericError", "Resetting the Virtual Machine is required")
        );
        assert_eq!(f.m.calls(), ["stop", "stop", "cont", "cont"]);
        assert_eq!(
            f.one(r#"{"execute":"query-status"}"#)["return"],
            json!({"running": false, "singlestep": false, "status": "shutdown"})
        );
        f.m.set(RunState::InternalError);
        assert_eq!(
            f.one(r#"{"execute":"query-status"}"#)["return"]["status"],
            "internal-error"
        );
    }

    #[test]
    fn powerdown_and_quit_act_after_the_reply() {
        let mut f = fixture();
        f.negotiate();
        let v = f.send(r#"{"execute":"system_powerdown","id":"p"}"#);
        assert_eq!(v[0], json!({"return": {}, "id": "p"}));
        assert_eq!(v[1]["event"], "POWERDOWN");
        assert!(v[1].get("data").is_none());
        assert_eq!(f.m.calls(), ["power_button"]);
        assert_eq!(f.one(r#"{"execute":"quit"}"#), json!({"return": {}}));
        assert_eq!(f.m.calls(), ["power_button", "quit"]);
    }

    #[test]
    fn queries() {
        let mut f = fixture();
        f.negotiate();
        let cpus = f.one(r#"{"execute":"query-cpus-fast"}"#)["return"].clone();
        assert_eq!(
            cpus[1],
            json!({"cpu-index": 1, "qom-path": "/machine/unattached/device[1]",
                   "thread-id": 1001, "target": "x86_64",
                   "props": {"socket-id": 0, "core-id": 1, "thread-id": 0}})
        );
        let names: Vec<String> = f.one(r#"{"execute":"query-commands"}"#)["return"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap().to_string())
            .collect();
        for n in [
            "qmp_capabilities",
            "query-version",
            "query-commands",
            "query-status",
            "stop",
            "cont",
            "system_powerdown",
            "quit",
            "query-cpus-fast",
            "query-kvm",
            "calc-dirty-rate",
            "query-dirty-rate",
        ] {
            assert!(names.iter().any(|x| x == n), "{n} in {names:?}");
        }
        assert_eq!(names.len(), 12);
        let v = f.one(r#"{"execute":"query-version"}"#)["return"].clone();
        assert_eq!(v, f.d.version());
        assert_eq!(
            f.one(r#"{"execute":"query-version","arguments":{"a":1}}"#),
            err("GenericError", "Parameter 'a' is unexpected")
        );
        assert_eq!(
            f.one(r#"{"execute":"query-commands","arguments":{"a":1}}"#),
            err("GenericError", "Parameter 'a' is unexpected")
        );
    }

    #[test]
    fn dirty_rate_commands() {
        let mut f = fixture();
        f.negotiate();
        assert_eq!(
            f.one(r#"{"execute":"calc-dirty-rate"}"#),
            err("GenericError", "Parameter 'calc-time' is missing")
        );
        assert_eq!(
            f.one(r#"{"execute":"calc-dirty-rate","arguments":{"calc-time":"1"}}"#),
            err(
                "GenericError",
                "Invalid parameter type for 'calc-time', expected: integer"
            )
        );
        assert_eq!(
            f.one(r#"{"execute":"calc-dirty-rate","arguments":{"calc-time":1,"mode":"fast"}}"#),
            err(
                "GenericError",
                "Parameter 'mode' does not accept value 'fast'"
            )
        );
        assert_eq!(
            f.one(r#"{"execute":"calc-dirty-rate","arguments":{"calc-time":1,"calc-time-unit":"hour"}}"#),
            err("GenericError", "Parameter 'calc-time-unit' does not accept value 'hour'")
        );
        assert_eq!(
            f.one(r#"{"execute":"calc-dirty-rate","arguments":{"calc-time":1,"x":1}}"#),
            err("GenericError", "Parameter 'x' is unexpected")
        );
        assert_eq!(
            f.one(
                r#"{"execute":"calc-dirty-rate","arguments":{"calc-time":1,"mode":"dirty-ring"}}"#
            ),
            err(
                "GenericError",
                "mode dirty-ring is not available in this build"
            )
        );
        assert_eq!(
            f.one(r#"{"execute":"query-dirty-rate"}"#)["return"]["status"],
            "unstarted"
        );
        assert_eq!(
            f.one(r#"{"execute":"query-dirty-rate","arguments":{"calc-time-unit":1}}"#),
            err(
                "GenericError",
                "Invalid parameter type for 'calc-time-unit', expected: string"
            )
        );
        assert_eq!(
            f.one(r#"{"execute":"calc-dirty-rate","arguments":{"calc-time":100,"calc-time-unit":"millisecond","sample-pages":128}}"#),
            json!({"return": {}})
        );
        // Wait for the end: poll as a client would.
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            let q = f.one(r#"{"execute":"query-dirty-rate"}"#)["return"].clone();
            if q["status"] == "measured" && q.get("dirty-rate").is_some() {
                assert!(q["dirty-rate"].as_i64().unwrap() >= 0);
                assert_eq!(q["mode"], "page-sampling");
                assert_eq!(q["calc-time-unit"], "second");
                break;
            }
            assert!(std::time::Instant::now() < deadline, "never measured: {q}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    #[test]
    fn a_second_measurement_is_refused_while_one_runs() {
        let mut f = fixture();
        f.negotiate();
        // The longest measurement: it cannot end during the test, and
        // dropping the dispatcher cancels it.
        assert_eq!(
            f.one(
                r#"{"execute":"calc-dirty-rate","arguments":{"calc-time":60,"sample-pages":4096}}"#
            ),
            json!({"return": {}})
        );
        assert_eq!(
            f.one(r#"{"execute":"calc-dirty-rate","arguments":{"calc-time":1}}"#),
            err("GenericError", "the dirty rate is already being measured.")
        );
        let q =
            f.one(r#"{"execute":"query-dirty-rate","arguments":{"calc-time-unit":"millisecond"}}"#);
        assert_eq!(q["return"]["status"], "measuring");
        assert_eq!(q["return"]["calc-time"], 60_000);
        assert_eq!(q["return"]["calc-time-unit"], "millisecond");
        assert_eq!(q["return"]["sample-pages"], 4096);
        assert!(q["return"].get("dirty-rate").is_none());
    }

    #[test]
    fn registered_commands_extend_the_table() {
        let mut f = fixture();
        f.d.register(
            "migrate_cancel",
            Box::new(|_, args| {
                args.finish()?;
                Ok(Reply::value(json!({"cancelled": true})))
            }),
        );
        f.negotiate();
        assert_eq!(
            f.one(r#"{"execute":"migrate_cancel","id":9}"#),
            json!({"return": {"cancelled": true}, "id": 9})
        );
        assert!(f.d.command_names().contains(&"migrate_cancel"));
        assert!(format!("{:?}", Reply::empty()).contains("Reply"));
        let o = f.d.handle(&mut f.s, json!({"execute": "query-kvm"}));
        assert!(format!("{o:?}").contains("Outcome"));
        assert!(Arc::ptr_eq(f.d.events(), &f.m.events));
        assert!(format!("{:?}", f.d.context).contains("Context"));
    }
}
