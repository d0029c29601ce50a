//! The QMP wire format: framing of the JSON byte stream, request checks
//! with QEMU's error messages, and the encoding of replies and events.
//!
//! QEMU frames by JSON value, not by line: a message ends where its
//! outermost `{…}` (or `[…]`) closes, and several may share a line. So does
//! [`Splitter`]. A control character outside a string, or any byte that
//! cannot start UTF-8, is a lexical error that resets the parser (the
//! spec's way to get a server back to a known state).

use serde_json::{json, Map, Value};
use std::time::{SystemTime, UNIX_EPOCH};

/// The largest request accepted, in bytes. QEMU allows 64 MiB; no QMP
/// command needs more than a few KiB.
pub const MAX_MESSAGE_BYTES: usize = 1 << 20;

/// The deepest nesting of objects and arrays accepted (QEMU: 1024).
pub const MAX_NESTING: u32 = 1024;

/// The QMP error classes (QEMU's `QapiErrorClass`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorClass {
    /// Everything not listed below.
    GenericError,
    /// The command does not exist (or not before negotiation).
    CommandNotFound,
    /// A device is not active.
    DeviceNotActive,
    /// A device was not found.
    DeviceNotFound,
    /// KVM lacks a capability.
    KvmMissingCap,
}

impl ErrorClass {
    /// The class as it appears on the wire.
    ///
    /// ```
    /// use kvmkit_vmm_reference::qmp::ErrorClass;
    /// assert_eq!(ErrorClass::KvmMissingCap.as_str(), "KVMMissingCap");
    /// ```
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorClass::GenericError => "GenericError",
            ErrorClass::CommandNotFound => "CommandNotFound",
            ErrorClass::DeviceNotActive => "DeviceNotActive",
            ErrorClass::DeviceNotFound => "DeviceNotFound",
            ErrorClass::KvmMissingCap => "KVMMissingCap",
        }
    }
}

/// A QMP error reply: a class and a human-readable description.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QmpError {
    /// The class clients match on.
    pub class: ErrorClass,
    /// The description (clients should not parse it).
    pub desc: String,
}

impl QmpError {
    /// A `GenericError`.
    ///
    /// ```
    /// use kvmkit_vmm_reference::qmp::{ErrorClass, QmpError};
    /// let e = QmpError::generic("Parameter 'x' is missing");
    /// assert_eq!(e.class, ErrorClass::GenericError);
    /// ```
    pub fn generic(desc: impl Into<String>) -> Self {
        QmpError {
            class: ErrorClass::GenericError,
            desc: desc.into(),
        }
    }

    /// A `CommandNotFound` error.
    pub fn command_not_found(desc: impl Into<String>) -> Self {
        QmpError {
            class: ErrorClass::CommandNotFound,
            desc: desc.into(),
        }
    }

    /// The `{"class": …, "desc": …}` object.
    pub fn to_json(&self) -> Value {
        json!({ "class": self.class.as_str(), "desc": self.desc })
    }
}

impl std::fmt::Display for QmpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.class.as_str(), self.desc)
    }
}

/// What [`Splitter::push`] found in the byte stream.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame {
    /// The bytes of one complete JSON value (not yet parsed).
    Message(Vec<u8>),
    /// A lexical error; the splitter is back in its initial state.
    Error(QmpError),
    /// The message in progress passed [`MAX_MESSAGE_BYTES`]: the connection
    /// should be dropped (the rest of the stream cannot be resynchronised).
    TooLong(QmpError),
}

/// Where the splitter is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Between messages.
    Idle,
    /// Inside an object or array, `depth` levels deep.
    Nested,
    /// Inside a top-level string (a scalar message).
    TopString,
    /// Inside a top-level number or keyword (a scalar message).
    TopWord,
}

/// Cuts a QMP byte stream into JSON values, as QEMU's JSON streamer does.
///
/// ```
/// use kvmkit_vmm_reference::qmp::{Frame, Splitter};
/// let mut s = Splitter::new();
/// let frames = s.feed(b"{\"execute\": \"stop\"}{\"a\": \"}\"}\n");
/// assert_eq!(frames, vec![
///     Frame::Message(b"{\"execute\": \"stop\"}".to_vec()),
///     Frame::Message(b"{\"a\": \"}\"}".to_vec()),
/// ]);
/// ```
#[derive(Debug)]
pub struct Splitter {
    buf: Vec<u8>,
    state: State,
    depth: u32,
    in_string: bool,
    escape: bool,
}

impl Default for Splitter {
    fn default() -> Self {
        Splitter::new()
    }
}

fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

/// Bytes that are errors wherever they appear outside a string: ASCII
/// control characters other than whitespace, and bytes that never occur
/// in UTF-8 (0xC0, 0xC1, 0xF5-0xFF).
fn is_stray(b: u8) -> bool {
    (b < 0x20 && !is_space(b)) || b == 0x7f || b == 0xc0 || b == 0xc1 || b >= 0xf5
}

fn stray(b: u8) -> QmpError {
    let shown = if b.is_ascii_graphic() {
        char::from(b).to_string()
    } else {
        format!("\\x{b:02X}")
    };
    QmpError::generic(format!("JSON parse error, stray '{shown}'"))
}

impl Splitter {
    /// A splitter between messages.
    pub fn new() -> Self {
        Splitter {
            buf: Vec::new(),
            state: State::Idle,
            depth: 0,
            in_string: false,
            escape: false,
        }
    }

    /// True when no message is half-read.
    pub fn is_idle(&self) -> bool {
        self.state == State::Idle
    }

    fn reset(&mut self) {
        self.buf.clear();
        self.state = State::Idle;
        self.depth = 0;
        self.in_string = false;
        self.escape = false;
    }

    fn take(&mut self) -> Frame {
        let m = std::mem::take(&mut self.buf);
        self.reset();
        Frame::Message(m)
    }

    fn error(&mut self, e: QmpError) -> Frame {
        self.reset();
        Frame::Error(e)
    }

    /// Feeds bytes; returns the frames they complete, in order.
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<Frame> {
        let mut out = Vec::new();
        for &b in bytes {
            self.push(b, &mut out);
        }
        out
    }

    /// Feeds one byte; completed frames are appended to `out` (at most two:
    /// a top-level word ended by the start of the next value).
    pub fn push(&mut self, b: u8, out: &mut Vec<Frame>) {
        match self.state {
            State::Idle => {
                if is_space(b) {
                    return;
                }
                if is_stray(b) {
                    out.push(self.error(stray(b)));
                    return;
                }
                self.buf.push(b);
                match b {
                    b'{' | b'[' => {
                        self.state = State::Nested;
                        self.depth = 1;
                    }
                    b'"' => self.state = State::TopString,
                    // A closing bracket or separator cannot start a value:
                    // it is a message of its own, which will not parse.
                    b'}' | b']' | b',' | b':' => out.push(self.take()),
                    _ => self.state = State::TopWord,
                }
            }
            State::TopWord => {
                if is_space(b) || matches!(b, b'{' | b'[' | b'}' | b']' | b',' | b':' | b'"') {
                    out.push(self.take());
                    // A delimiter other than space belongs to what follows.
                    self.push(b, out);
                } else if is_stray(b) {
                    out.push(self.error(stray(b)));
                } else {
                    self.push_bounded(b, out);
                }
            }
            State::TopString => {
                if b < 0x20 || is_stray(b) {
                    out.push(self.error(stray(b)));
                } else if self.push_bounded(b, out) {
                    if self.escape {
                        self.escape = false;
                    } else if b == b'\\' {
                        self.escape = true;
                    } else if b == b'"' {
                        out.push(self.take());
                    }
                }
            }
            State::Nested => {
                if self.in_string {
                    if b < 0x20 || is_stray(b) {
                        out.push(self.error(stray(b)));
                    } else if self.push_bounded(b, out) {
                        if self.escape {
                            self.escape = false;
                        } else if b == b'\\' {
                            self.escape = true;
                        } else if b == b'"' {
                            self.in_string = false;
                        }
                    }
                    return;
                }
                if is_stray(b) {
                    out.push(self.error(stray(b)));
                    return;
                }
                if !self.push_bounded(b, out) {
                    return;
                }
                match b {
                    b'"' => self.in_string = true,
                    b'{' | b'[' => {
                        self.depth += 1;
                        if self.depth > MAX_NESTING {
                            out.push(self.error(QmpError::generic(
                                "JSON parse error, JSON nesting depth limit exceeded",
                            )));
                        }
                    }
                    b'}' | b']' => {
                        self.depth -= 1;
                        if self.depth == 0 {
                            out.push(self.take());
                        }
                    }
                    _ => {}
                }
            }
        }
    }

    /// Appends `b` unless the message would pass [`MAX_MESSAGE_BYTES`];
    /// then resets, reports [`Frame::TooLong`] and returns false.
    fn push_bounded(&mut self, b: u8, out: &mut Vec<Frame>) -> bool {
        if self.buf.len() >= MAX_MESSAGE_BYTES {
            self.reset();
            out.push(Frame::TooLong(QmpError::generic(
                "JSON parse error, JSON token size limit exceeded",
            )));
            return false;
        }
        self.buf.push(b);
        true
    }
}

/// Parses a frame's bytes as JSON; a failure is QEMU's `GenericError`
/// "JSON parse error, …".
///
/// ```
/// use kvmkit_vmm_reference::qmp::parse_json;
/// assert!(parse_json(b"{\"execute\": 1}").is_ok());
/// let e = parse_json(b"{\"execute\": }").unwrap_err();
/// assert!(e.desc.starts_with("JSON parse error, "), "{}", e.desc);
/// ```
pub fn parse_json(bytes: &[u8]) -> Result<Value, QmpError> {
    serde_json::from_slice(bytes).map_err(|e| {
        // serde's messages end in " at line L column C": keep it, it helps.
        QmpError::generic(format!("JSON parse error, {e}"))
    })
}

/// A checked command request.
#[derive(Clone, Debug, PartialEq)]
pub struct Request {
    /// The command name (`execute`).
    pub command: String,
    /// Its arguments (an empty object when absent).
    pub arguments: Map<String, Value>,
    /// The `id` to echo, any JSON value.
    pub id: Option<Value>,
}

/// A request that failed the checks, with the `id` to echo (when the
/// request was an object that had one).
#[derive(Clone, Debug, PartialEq)]
pub struct Rejected {
    /// The `id` of the request, if it could be read.
    pub id: Option<Value>,
    /// Why.
    pub error: QmpError,
}

/// Checks a request's shape as QEMU's `qmp_dispatch` does: an object with a
/// string `execute`, an optional object `arguments`, an optional `id` of
/// any type, and nothing else. Out-of-band execution is not offered, so
/// `exec-oob` is an unexpected member.
///
/// ```
/// use kvmkit_vmm_reference::qmp::check_request;
/// use serde_json::json;
/// let r = check_request(json!({"execute": "stop", "id": [1, "a"]})).unwrap();
/// assert_eq!((r.command.as_str(), r.id), ("stop", Some(json!([1, "a"]))));
/// let e = check_request(json!({"execute": "stop", "x": 1, "id": 7})).unwrap_err();
/// assert_eq!(e.error.desc, "QMP input member 'x' is unexpected");
/// assert_eq!(e.id, Some(json!(7)));
/// assert_eq!(check_request(json!([1])).unwrap_err().error.desc,
///            "QMP input must be a JSON object");
/// ```
pub fn check_request(request: Value) -> Result<Request, Rejected> {
    let Value::Object(mut obj) = request else {
        return Err(Rejected {
            id: None,
            error: QmpError::generic("QMP input must be a JSON object"),
        });
    };
    let id = obj.remove("id");
    let reject = |desc: String| Rejected {
        id: id.clone(),
        error: QmpError::generic(desc),
    };
    let mut command = None;
    let mut arguments = Map::new();
    for (name, value) in obj {
        match name.as_str() {
            "execute" => match value {
                Value::String(s) => command = Some(s),
                _ => return Err(reject("QMP input member 'execute' must be a string".into())),
            },
            "arguments" => match value {
                Value::Object(m) => arguments = m,
                _ => {
                    return Err(reject(
                        "QMP input member 'arguments' must be an object".into(),
                    ))
                }
            },
            _ => return Err(reject(format!("QMP input member '{name}' is unexpected"))),
        }
    }
    match command {
        Some(command) => Ok(Request {
            command,
            arguments,
            id,
        }),
        None => Err(reject("QMP input lacks member 'execute'".into())),
    }
}

/// A success reply: `{"return": value, "id": id}`.
pub fn success(value: Value, id: Option<Value>) -> Value {
    let mut m = Map::new();
    m.insert("return".into(), value);
    if let Some(id) = id {
        m.insert("id".into(), id);
    }
    Value::Object(m)
}

/// An error reply: `{"error": {"class": …, "desc": …}, "id": id}`.
pub fn failure(error: &QmpError, id: Option<Value>) -> Value {
    let mut m = Map::new();
    m.insert("error".into(), error.to_json());
    if let Some(id) = id {
        m.insert("id".into(), id);
    }
    Value::Object(m)
}

/// The host time as QMP's event timestamp: `{"seconds", "microseconds"}`
/// since the Unix epoch, both -1 if the clock is before the epoch.
pub fn timestamp(now: SystemTime) -> Value {
    match now.duration_since(UNIX_EPOCH) {
        Ok(d) => json!({ "seconds": d.as_secs(), "microseconds": d.subsec_micros() }),
        Err(_) => json!({ "seconds": -1, "microseconds": -1 }),
    }
}

/// An event message: `{"event": name, "data": data, "timestamp": …}`
/// (`data` left out when `None`, as QEMU does for events without data).
///
/// ```
/// use kvmkit_vmm_reference::qmp::event;
/// use std::time::{Duration, UNIX_EPOCH};
/// let e = event("STOP", None, UNIX_EPOCH + Duration::from_micros(1_500_001));
/// assert_eq!(e.to_string(),
///     r#"{"event":"STOP","timestamp":{"microseconds":500001,"seconds":1}}"#);
/// ```
pub fn event(name: &str, data: Option<Value>, at: SystemTime) -> Value {
    let mut m = Map::new();
    m.insert("event".into(), Value::String(name.into()));
    if let Some(d) = data {
        m.insert("data".into(), d);
    }
    m.insert("timestamp".into(), timestamp(at));
    Value::Object(m)
}

/// One message as sent: compact JSON and CRLF, as QMP prescribes.
pub fn encode(message: &Value) -> Vec<u8> {
    let mut out = message.to_string().into_bytes();
    out.extend_from_slice(b"\r\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(input: &[u8]) -> Vec<Frame> {
        Splitter::new().feed(input)
    }

    fn msg(s: &str) -> Frame {
        Frame::Message(s.as_bytes().to_vec())
    }

    #[test]
    fn splits_by_value_not_by_line() {
        let f = frames(b" {\"a\": [1, {\"b\": \"]}\\\"\"}]}\r\n[1,\n2] {}");
        assert_eq!(
            f,
            vec![
                msg("{\"a\": [1, {\"b\": \"]}\\\"\"}]}"),
                msg("[1,\n2]"),
                msg("{}")
            ]
        );
    }

    #[test]
    fn scalars_are_messages_when_they_end() {
        assert_eq!(frames(b"42 "), vec![msg("42")]);
        assert_eq!(frames(b"\"x\\\"y\""), vec![msg("\"x\\\"y\"")]);
        assert_eq!(frames(b"true{}"), vec![msg("true"), msg("{}")]);
        assert_eq!(frames(b"nul"), vec![], "waits for the end of the word");
        assert_eq!(frames(b"} "), vec![msg("}")]);
        assert_eq!(frames(b"x:"), vec![msg("x"), msg(":")]);
        assert_eq!(frames(b"1\"a\""), vec![msg("1"), msg("\"a\"")]);
    }

    #[test]
    fn control_characters_reset_the_parser() {
        let f = frames(b"{\"execute\": \x01{}");
        assert_eq!(f.len(), 2);
        match &f[0] {
            Frame::Error(e) => assert_eq!(e.desc, "JSON parse error, stray '\\x01'"),
            other => panic!("{other:?}"),
        }
        assert_eq!(f[1], msg("{}"));
        // In a string too, and 0xFF anywhere.
        let f = frames(b"{\"a\x02\"}\xff{}");
        assert!(matches!(&f[0], Frame::Error(_)));
        assert!(matches!(&f[1], Frame::Error(e) if e.desc.contains("\\xFF")));
        assert_eq!(f[2], msg("{}"));
        let f = frames(b"\"ab\x03 12\x7f");
        assert!(matches!(&f[0], Frame::Error(_)));
        assert!(matches!(&f[1], Frame::Error(_)));
        // UTF-8 in strings passes through.
        assert_eq!(frames("{\"é\": 1}".as_bytes()), vec![msg("{\"é\": 1}")]);
    }

    #[test]
    fn oversized_and_overdeep_messages_are_refused() {
        let mut s = Splitter::new();
        let mut big = vec![b'['];
        big.extend(std::iter::repeat_n(b'1', MAX_MESSAGE_BYTES));
        let f = s.feed(&big);
        assert!(matches!(&f[..], [Frame::TooLong(e)] if e.desc.contains("size limit")));
        assert!(s.is_idle());

        let deep = vec![b'['; MAX_NESTING as usize + 1];
        let f = frames(&deep);
        assert!(matches!(&f[..], [Frame::Error(e)] if e.desc.contains("nesting")));

        let word = vec![b'1'; MAX_MESSAGE_BYTES + 1];
        assert!(matches!(&frames(&word)[..], [Frame::TooLong(_)]));
        let mut string = vec![b'"'];
        string.extend(std::iter::repeat_n(b'a', MAX_MESSAGE_BYTES));
        assert!(matches!(&frames(&string)[..], [Frame::TooLong(_)]));
        let mut nested = b"{\"".to_vec();
        nested.extend(std::iter::repeat_n(b'a', MAX_MESSAGE_BYTES));
        assert!(matches!(&frames(&nested)[..], [Frame::TooLong(_)]));
    }

    #[test]
    fn request_checks_follow_qemu() {
        let e = |v: Value| check_request(v).unwrap_err();
        assert_eq!(
            e(json!({"execute": 1, "id": "x"})),
            Rejected {
                id: Some(json!("x")),
                error: QmpError::generic("QMP input member 'execute' must be a string"),
            }
        );
        assert_eq!(
            e(json!({"execute": "a", "arguments": []})).error.desc,
            "QMP input member 'arguments' must be an object"
        );
        assert_eq!(
            e(json!({"arguments": {}, "id": null})),
            Rejected {
                id: Some(Value::Null),
                error: QmpError::generic("QMP input lacks member 'execute'"),
            }
        );
        assert_eq!(
            e(json!({"exec-oob": "stop"})).error.desc,
            "QMP input member 'exec-oob' is unexpected"
        );
        assert_eq!(e(json!("stop")).id, None);
        let r = check_request(json!({"execute": "x", "arguments": {"a": 1}})).unwrap();
        assert_eq!(r.arguments["a"], json!(1));
        assert_eq!(r.id, None);
    }

    #[test]
    fn replies_and_events() {
        assert_eq!(
            success(json!({}), Some(json!({"k": [1]}))).to_string(),
            r#"{"id":{"k":[1]},"return":{}}"#
        );
        assert_eq!(success(json!([]), None).to_string(), r#"{"return":[]}"#);
        let err = QmpError::command_not_found("The command x has not been found");
        assert_eq!(
            failure(&err, Some(json!(3))).to_string(),
            r#"{"error":{"class":"CommandNotFound","desc":"The command x has not been found"},"id":3}"#
        );
        assert_eq!(
            err.to_string(),
            "CommandNotFound: The command x has not been found"
        );
        let before = UNIX_EPOCH - std::time::Duration::from_secs(1);
        assert_eq!(
            timestamp(before),
            json!({"seconds": -1, "microseconds": -1})
        );
        let e = event("SHUTDOWN", Some(json!({"guest": true})), UNIX_EPOCH);
        assert_eq!(e["data"]["guest"], json!(true));
        assert_eq!(encode(&json!({})), b"{}\r\n");
        for class in [
            ErrorClass::GenericError,
            ErrorClass::CommandNotFound,
            ErrorClass::DeviceNotActive,
            ErrorClass::DeviceNotFound,
            ErrorClass::KvmMissingCap,
        ] {
            assert!(!class.as_str().is_empty());
        }
        assert_eq!(
            QmpError::generic("x").to_json(),
            json!({"class": "GenericError", "desc": "x"})
        );
    }

    #[test]
    fn json_errors_are_generic_errors() {
        let e = parse_json(b"{\"a\" 1}").unwrap_err();
        assert_eq!(e.class, ErrorClass::GenericError);
        assert!(e.desc.starts_with("JSON parse error, "));
        assert!(parse_json(b"\"\\ud800\"").is_err());
        assert!(parse_json(&[b'"', 0xe9, b'"']).is_err(), "not UTF-8");
    }
}
