//! `kiln attach`: clients that join a running container's main process after its start.
//!
//! The owner keeps an [`Attached`] set: everything the process writes also goes, as frames
//! ([`super::exec`]'s format), to every attached client; their stdin frames go to the
//! process's stdin when the container was started with `-i` (through a pipe the owner holds,
//! so clients may come and go), their resize frames to its terminal. When the process ends,
//! each client gets the exit code. A client that stops reading is dropped, never waited for:
//! the container's output never blocks on an attached terminal.

use std::io::{self, Write};
use std::sync::{Arc, Mutex};

use kiln_sys::net::UnixStream;
use kiln_sandbox::ProcessControl;

use super::exec::{read_frame, write_frame, EXIT, RESIZE, STDERR, STDIN, STDOUT};

type Client = Arc<Mutex<UnixStream>>;

/// The attached clients of one container, and what they may feed.
#[derive(Clone, Default)]
pub struct Attached {
    clients: Arc<Mutex<Vec<Client>>>,
    /// The write end of the process's stdin pipe (`-i`), shared by every client.
    stdin: Option<Arc<Mutex<io::PipeWriter>>>,
    control: Arc<Mutex<Option<ProcessControl>>>,
}

impl Attached {
    /// With `stdin`, clients' input goes to that pipe (the process reads its other end).
    pub fn new(stdin: Option<io::PipeWriter>) -> Self {
        Self { stdin: stdin.map(|w| Arc::new(Mutex::new(w))), ..Default::default() }
    }

    /// The running process, for resizes.
    pub fn set_control(&self, control: ProcessControl) {
        *self.control.lock().unwrap_or_else(|e| e.into_inner()) = Some(control);
    }

    /// A writer that copies output of kind `STDOUT`/`STDERR` to every client.
    pub fn output(&self, kind: u8) -> AttachedOutput {
        AttachedOutput { attached: self.clone(), kind }
    }

    /// Adds a client; its frames are read on a thread until it goes away.
    pub fn add(&self, conn: UnixStream) {
        // A client that stops reading is dropped after this long, never waited for.
        let _ = conn.set_write_timeout(Some(std::time::Duration::from_secs(2)));
        let Ok(reader) = conn.try_clone() else { return };
        let client: Client = Arc::new(Mutex::new(conn));
        self.clients.lock().unwrap_or_else(|e| e.into_inner()).push(client.clone());
        let me = self.clone();
        std::thread::spawn(move || {
            let mut reader = reader;
            while let Ok(Some((kind, data))) = read_frame(&mut reader) {
                match kind {
                    STDIN => {
                        if let Some(w) = &me.stdin {
                            let _ = w.lock().unwrap_or_else(|e| e.into_inner()).write_all(&data);
                        }
                    }
                    RESIZE if data.len() == 4 => {
                        if let Some(c) = me.control.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
                            let _ = c.resize(u16::from_be_bytes([data[0], data[1]]), u16::from_be_bytes([data[2], data[3]]));
                        }
                    }
                    _ => {}
                }
            }
            me.clients.lock().unwrap_or_else(|e| e.into_inner()).retain(|c| !Arc::ptr_eq(c, &client));
        });
    }

    fn send(&self, kind: u8, data: &[u8]) {
        let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        clients.retain(|c| {
            let mut conn = c.lock().unwrap_or_else(|e| e.into_inner());
            let ok = write_frame(&mut *conn, kind, data).is_ok();
            if !ok {
                // Cut mid-frame: end the connection, so the client sees the end, not a hang.
                let _ = conn.shutdown(std::net::Shutdown::Both);
            }
            ok
        });
    }

    /// Tells every client the process ended with `code`, and lets them go.
    pub fn finish(&self, code: i32) {
        self.send(EXIT, &code.to_be_bytes());
        self.clients.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }
}

/// Output to the attached clients (see [`Attached::output`]).
pub struct AttachedOutput {
    attached: Attached,
    kind: u8,
}

impl Write for AttachedOutput {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.kind == STDOUT || self.kind == STDERR {
            self.attached.send(self.kind, buf);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
