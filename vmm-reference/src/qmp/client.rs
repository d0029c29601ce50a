//! A one-shot QMP client (`vmm-reference qmp PATH COMMAND [JSON-ARGS]`):
//! connect, negotiate, run one command, return its `return` value.

use super::error::{Error, Result};
use serde_json::{json, Map, Value};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

/// How long the client waits for any one message.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(60);

/// The id the client tags its command with.
const ID: &str = "vmm-reference-qmp";

/// Lines the client reads while waiting for its reply (events may come
/// first); a server that sends more is not a QMP server.
const MAX_MESSAGES: usize = 100_000;

/// A negotiated client connection.
pub(super) struct Conn {
    r: BufReader<UnixStream>,
    w: UnixStream,
    /// Events read while waiting for replies, oldest first.
    pub(super) events: Vec<Value>,
}

impl Conn {
    /// Connects to the QMP server at `path` and negotiates capabilities.
    pub(super) fn open(path: &Path) -> Result<Conn> {
        let w = UnixStream::connect(path).map_err(|source| Error::Connect {
            path: path.to_path_buf(),
            source,
        })?;
        let setup = |source| Error::Io {
            doing: "setting up the socket",
            source,
        };
        w.set_read_timeout(Some(CLIENT_TIMEOUT)).map_err(setup)?;
        w.set_write_timeout(Some(CLIENT_TIMEOUT)).map_err(setup)?;
        let r = BufReader::new(w.try_clone().map_err(setup)?);
        let mut conn = Conn {
            r,
            w,
            events: Vec::new(),
        };
        let greeting = conn.recv()?;
        if greeting.get("QMP").is_none() {
            return Err(Error::Protocol {
                detail: format!("no greeting but {greeting}"),
            });
        }
        conn.call("qmp_capabilities", None)?;
        Ok(conn)
    }

    /// Reads what the server still sends until it closes the connection,
    /// keeping the events (after a failed write: the server may have
    /// queued events before it closed).
    pub(super) fn drain(&mut self) {
        while let Ok(msg) = self.recv() {
            if msg.get("event").is_some() {
                self.events.push(msg);
            }
        }
    }

    fn recv(&mut self) -> Result<Value> {
        let mut line = String::new();
        let n = self.r.read_line(&mut line).map_err(|source| Error::Io {
            doing: "reading",
            source,
        })?;
        if n == 0 {
            return Err(Error::Protocol {
                detail: "nothing more: the connection closed".into(),
            });
        }
        serde_json::from_str(&line).map_err(|e| Error::Protocol {
            detail: format!("invalid JSON ({e})"),
        })
    }

    fn send(&mut self, v: &Value) -> Result<()> {
        let mut b = v.to_string().into_bytes();
        b.extend_from_slice(b"\r\n");
        self.w.write_all(&b).map_err(|source| Error::Io {
            doing: "writing",
            source,
        })
    }

    /// Sends `execute` and waits for the reply with our id, keeping the
    /// events that come first in [`Conn::events`].
    pub(super) fn call(
        &mut self,
        execute: &str,
        arguments: Option<Map<String, Value>>,
    ) -> Result<Value> {
        let mut req = json!({ "execute": execute, "id": ID });
        if let Some(a) = arguments {
            req["arguments"] = Value::Object(a);
        }
        self.send(&req)?;
        for _ in 0..MAX_MESSAGES {
            let msg = self.recv()?;
            if msg.get("event").is_some() {
                self.events.push(msg);
                continue;
            }
            if msg.get("id") != Some(&json!(ID)) {
                return Err(Error::Protocol {
                    detail: format!("a reply that is not ours: {msg}"),
                });
            }
            if let Some(e) = msg.get("error") {
                let s = |k: &str| e.get(k).and_then(Value::as_str).unwrap_or("").to_string();
                return Err(Error::Command {
                    class: s("class"),
                    desc: s("desc"),
                });
            }
            return msg.get("return").cloned().ok_or_else(|| Error::Protocol {
                detail: format!("a reply without return or error: {msg}"),
            });
        }
        Err(Error::Protocol {
            detail: "events without end".into(),
        })
    }
}

/// Runs `command` with `arguments` on the QMP server at `path`; returns its
/// `return` value, or the server's error as [`Error::Command`].
///
/// ```no_run
/// let r = kvmkit_vmm_reference::qmp::execute(
///     std::path::Path::new("/tmp/vm.sock"), "query-status", None)?;
/// println!("{}", r["status"]);
/// # Ok::<(), kvmkit_vmm_reference::qmp::Error>(())
/// ```
pub fn execute(path: &Path, command: &str, arguments: Option<Map<String, Value>>) -> Result<Value> {
    Conn::open(path)?.call(command, arguments)
}

/// Parses the client's `JSON-ARGS` argument: a JSON object.
///
/// ```
/// use kvmkit_vmm_reference::qmp::parse_arguments;
/// assert_eq!(parse_arguments(r#"{"calc-time": 1}"#).unwrap()["calc-time"], 1);
/// assert!(parse_arguments("[1]").is_err());
/// ```
pub fn parse_arguments(s: &str) -> std::result::Result<Map<String, Value>, String> {
    match serde_json::from_str::<Value>(s) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(format!("arguments {s:?} are not a JSON object")),
        Err(e) => Err(format!("arguments {s:?} are not valid JSON: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;

    /// A fake server: greets with `greeting`, then answers each line with
    /// the next of `replies`.
    fn fake(tag: &str, greeting: &'static str, replies: Vec<&'static str>) -> std::path::PathBuf {
        let path = std::env::temp_dir().join(format!(
            "kvmkit-qmp-client-{tag}-{}.sock",
            std::process::id()
        ));
        let _ = std::fs::remove_file(&path);
        let l = UnixListener::bind(&path).unwrap();
        std::thread::spawn(move || {
            let (s, _) = l.accept().unwrap();
            let mut w = s.try_clone().unwrap();
            let mut r = BufReader::new(s);
            w.write_all(greeting.as_bytes()).unwrap();
            for reply in replies {
                let mut line = String::new();
                if r.read_line(&mut line).unwrap_or(0) == 0 {
                    return;
                }
                w.write_all(reply.as_bytes()).unwrap();
            }
        });
        path
    }

    const GREET: &str = "{\"QMP\": {\"version\": {}, \"capabilities\": []}}\r\n";
    const OK: &str = "{\"return\": {}, \"id\": \"vmm-reference-qmp\"}\r\n";

    #[test]
    fn runs_a_command_skipping_events() {
        let p = fake(
            "ok",
            GREET,
            vec![
                OK,
                "{\"event\": \"STOP\"}\r\n{\"return\": {\"status\": \"paused\"}, \"id\": \"vmm-reference-qmp\"}\r\n",
            ],
        );
        let r = execute(&p, "query-status", Some(Map::new())).unwrap();
        assert_eq!(r["status"], "paused");
    }

    #[test]
    fn reports_errors() {
        let p = fake(
            "err",
            GREET,
            vec![
                OK,
                "{\"error\": {\"class\": \"CommandNotFound\", \"desc\": \"The command x has not been found\"}, \"id\": \"vmm-reference-qmp\"}\r\n",
            ],
        );
        let e = execute(&p, "x", None).unwrap_err();
        assert_eq!(
            e.to_string(),
            "CommandNotFound: The command x has not been found"
        );

        let p = fake("nogreet", "{\"hello\": 1}\r\n", vec![]);
        assert!(execute(&p, "x", None)
            .unwrap_err()
            .to_string()
            .contains("no greeting"));
        let p = fake("badjson", "not json\r\n", vec![]);
        assert!(execute(&p, "x", None)
            .unwrap_err()
            .to_string()
            .contains("invalid JSON"));
        let p = fake("closed", GREET, vec![]);
        // Closed before or after our request was written, or reset.
        let e = execute(&p, "x", None).unwrap_err();
        assert!(
            matches!(e, Error::Protocol { .. } | Error::Io { .. }),
            "{e}"
        );
        let p = fake("otherid", GREET, vec!["{\"return\": {}, \"id\": 5}\r\n"]);
        assert!(execute(&p, "x", None)
            .unwrap_err()
            .to_string()
            .contains("not ours"));
        let p = fake(
            "noreturn",
            GREET,
            vec!["{\"id\": \"vmm-reference-qmp\"}\r\n"],
        );
        assert!(execute(&p, "x", None)
            .unwrap_err()
            .to_string()
            .contains("without return"));
        let e = execute(Path::new("/nonexistent/qmp.sock"), "x", None).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("cannot connect to the QMP socket"),
            "{e}"
        );
        assert!(parse_arguments("{").unwrap_err().contains("not valid JSON"));
    }
}
