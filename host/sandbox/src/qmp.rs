//! A minimal QMP client (QEMU's JSON machine protocol on a Unix socket): enough to take a VM
//! snapshot (`migrate` to a file, wait for it, `cont`). Events QEMU sends in between are
//! skipped. Every wait is bounded.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use kiln_sys::net::UnixStream;
use crate::SandboxError;

pub struct Qmp {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

fn err(what: &str, why: impl std::fmt::Display) -> SandboxError {
    SandboxError::Snapshot(format!("QMP {what}: {why}"))
}

impl Qmp {
    /// Connects to the socket at `path` (waiting for QEMU to create it until `deadline`) and
    /// leaves the greeting's capability negotiation done.
    pub fn connect(path: &Path, deadline: Instant) -> Result<Self, SandboxError> {
        let stream = loop {
            match UnixStream::connect(path) {
                Ok(s) => break s,
                Err(e) if Instant::now() >= deadline => return Err(err("connect", e)),
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        };
        let left = deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(10));
        stream.set_read_timeout(Some(left)).map_err(|e| err("connect", e))?;
        let writer = stream.try_clone().map_err(|e| err("connect", e))?;
        let mut qmp = Self { reader: BufReader::new(stream), writer };
        let greeting = qmp.read_message()?;
        if greeting.get("QMP").is_none() {
            return Err(err("greeting", greeting));
        }
        qmp.execute("qmp_capabilities", json!({}))?;
        Ok(qmp)
    }

    fn read_message(&mut self) -> Result<Value, SandboxError> {
        let mut line = String::new();
        if self.reader.read_line(&mut line).map_err(|e| err("read", e))? == 0 {
            return Err(err("read", "QEMU closed the connection"));
        }
        serde_json::from_str(&line).map_err(|e| err("read", e))
    }

    /// Runs `command` and returns its `return` value (events before the answer are skipped).
    pub fn execute(&mut self, command: &str, arguments: Value) -> Result<Value, SandboxError> {
        let msg = json!({"execute": command, "arguments": arguments});
        writeln!(self.writer, "{msg}").map_err(|e| err(command, e))?;
        loop {
            let answer = self.read_message()?;
            if let Some(r) = answer.get("return") {
                return Ok(r.clone());
            }
            if let Some(e) = answer.get("error") {
                return Err(err(command, e.get("desc").and_then(Value::as_str).unwrap_or("failed")));
            }
        }
    }

    /// Migrates the VM's whole state to `uri` and waits until it is written (the VM is then
    /// paused, as after any migration) or `deadline` passes.
    pub fn migrate(&mut self, uri: &str, deadline: Instant) -> Result<(), SandboxError> {
        self.execute("migrate", json!({"uri": uri}))?;
        loop {
            let info = self.execute("query-migrate", json!({}))?;
            match info.get("status").and_then(Value::as_str) {
                Some("completed") => return Ok(()),
                Some("failed" | "cancelled") => {
                    let why = info.get("error-desc").and_then(Value::as_str).unwrap_or("failed").to_string();
                    return Err(err("migrate", why));
                }
                _ if Instant::now() >= deadline => {
                    let _ = self.execute("migrate_cancel", json!({}));
                    return Err(err("migrate", "timed out"));
                }
                _ => std::thread::sleep(Duration::from_millis(10)),
            }
        }
    }
}
