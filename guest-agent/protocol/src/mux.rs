//! Multiplexing requests, responses and data streams over one byte stream.
//!
//! A reader thread owns the read half and routes each frame: responses to the caller waiting on
//! that request id, requests to the agent's request channel, data to the [`StreamReader`] of its
//! stream. Writers share the write half under a lock, one whole frame at a time.
//!
//! Stream ids are chosen by the host. The agent accepts data for a stream it has not opened yet
//! (the host may send a tar right behind the request that names it); the host drops data for
//! streams it did not open, so a misbehaving guest cannot make it buffer without bound.
//! Buffering per stream is bounded; a full stream applies back-pressure to the connection.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender, SyncSender};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;
use std::time::Duration;

use crate::frame::{Frame, FrameError, FrameKind, MAX_PAYLOAD};
use crate::messages::{Request, Response};

/// Chunks buffered per incoming stream before the reader thread waits for the consumer.
const STREAM_BUFFER_CHUNKS: usize = 64;
/// Size of the Data frames a [`StreamWriter`] sends.
const WRITE_CHUNK: usize = 64 * 1024;

/// Which end of the connection this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Host,
    Agent,
}

/// Failures of the multiplexed connection.
#[derive(Debug, thiserror::Error)]
pub enum MuxError {
    #[error("agent connection lost")]
    Closed,
    #[error("no answer from the agent within {0:?}")]
    Timeout(Duration),
    #[error(transparent)]
    Frame(#[from] FrameError),
    #[error("malformed message from the peer: {0}")]
    Malformed(#[from] serde_json::Error),
}

enum Chunk {
    Data(Vec<u8>),
    End,
    Abort(String),
}

struct StreamSlot {
    tx: SyncSender<Chunk>,
    /// Set until a local reader claims the stream.
    rx: Option<Receiver<Chunk>>,
    /// The sender ended the stream before a local reader claimed it: the slot stays until the
    /// claim so the buffered chunks are not lost.
    ended: bool,
}

struct Shared {
    role: Role,
    writer: Mutex<Box<dyn Write + Send>>,
    streams: Mutex<HashMap<u32, StreamSlot>>,
    pending: Mutex<HashMap<u32, Sender<Vec<u8>>>>,
    requests: Mutex<Option<Sender<(u32, Request)>>>,
    next_id: AtomicU32,
    closed: AtomicBool,
    /// When the last frame arrived (milliseconds since `started`), how many have, and whether
    /// the reader is busy handing one over to a slow local consumer.
    last_frame_ms: std::sync::atomic::AtomicU64,
    frames: std::sync::atomic::AtomicU64,
    delivering: AtomicBool,
    started: std::time::Instant,
}

/// Locks a mutex, recovering the data if another thread panicked while holding it: every
/// critical section here leaves the maps consistent at each step.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// One end of a multiplexed connection. Cheap to clone; all clones share the connection.
#[derive(Clone)]
pub struct Mux {
    shared: Arc<Shared>,
}

/// A request received by the agent, with the id to answer it under.
pub type IncomingRequest = (u32, Request);

impl Mux {
    /// Starts the host end. `reader` and `writer` are the two halves of the byte stream.
    pub fn host(reader: impl Read + Send + 'static, writer: impl Write + Send + 'static) -> Self {
        Self::start(Role::Host, reader, writer, None)
    }

    /// Starts the agent end; requests from the host arrive on the returned channel, which
    /// closes when the connection does.
    pub fn agent(
        reader: impl Read + Send + 'static,
        writer: impl Write + Send + 'static,
    ) -> (Self, Receiver<IncomingRequest>) {
        let (tx, rx) = mpsc::channel();
        (Self::start(Role::Agent, reader, writer, Some(tx)), rx)
    }

    fn start(
        role: Role,
        reader: impl Read + Send + 'static,
        writer: impl Write + Send + 'static,
        requests: Option<Sender<(u32, Request)>>,
    ) -> Self {
        let shared = Arc::new(Shared {
            role,
            writer: Mutex::new(Box::new(writer)),
            streams: Mutex::new(HashMap::new()),
            pending: Mutex::new(HashMap::new()),
            requests: Mutex::new(requests),
            next_id: AtomicU32::new(1),
            closed: AtomicBool::new(false),
            last_frame_ms: std::sync::atomic::AtomicU64::new(0),
            frames: std::sync::atomic::AtomicU64::new(0),
            delivering: AtomicBool::new(false),
            started: std::time::Instant::now(),
        });
        let for_thread = Arc::clone(&shared);
        thread::Builder::new()
            .name("kiln-mux-reader".into())
            .spawn(move || read_loop(&for_thread, reader))
            .map(drop)
            .unwrap_or_else(|_| shared.close());
        Self { shared }
    }

    /// Whether the connection has ended.
    pub fn is_closed(&self) -> bool {
        self.shared.closed.load(Ordering::SeqCst)
    }

    /// Frames received so far.
    pub fn frames_seen(&self) -> u64 {
        self.shared.frames.load(Ordering::SeqCst)
    }

    /// How long since the last frame came in (or since the connection started); zero while
    /// the reader is busy handing a frame to a consumer that is slow to take it.
    pub fn idle_for(&self) -> Duration {
        if self.shared.delivering.load(Ordering::SeqCst) {
            return Duration::ZERO;
        }
        let now = self.shared.started.elapsed().as_millis() as u64;
        Duration::from_millis(now.saturating_sub(self.shared.last_frame_ms.load(Ordering::Relaxed)))
    }

    /// A fresh id, unique on this connection, for a request or a data stream.
    pub fn next_id(&self) -> u32 {
        self.shared.next_id.fetch_add(1, Ordering::SeqCst)
    }

    /// Sends `req` and waits for its response, at most `timeout` if given.
    pub fn call(&self, req: &Request, timeout: Option<Duration>) -> Result<Response, MuxError> {
        self.start_call(req)?.wait(timeout)
    }

    /// Sends `req` now; the answer is collected with [`PendingCall::wait`]. A call whose
    /// request needs a data stream from the host must be started before that stream's data
    /// is sent: the agent's reader buffers only a few chunks of a stream nobody has claimed
    /// yet, and would otherwise stop reading before it ever sees the request.
    pub fn start_call(&self, req: &Request) -> Result<PendingCall, MuxError> {
        let id = self.next_id();
        let (tx, rx) = mpsc::channel();
        lock(&self.shared.pending).insert(id, tx);
        if self.is_closed() {
            lock(&self.shared.pending).remove(&id);
            return Err(MuxError::Closed);
        }
        let payload = serde_json::to_vec(req)?;
        if let Err(e) = self.send(Frame::new(FrameKind::Request, id, payload)) {
            lock(&self.shared.pending).remove(&id);
            return Err(e);
        }
        Ok(PendingCall { mux: self.clone(), id, rx })
    }

    /// Answers request `id` (agent side).
    pub fn respond(&self, id: u32, resp: &Response) -> Result<(), MuxError> {
        let payload = serde_json::to_vec(resp)?;
        self.send(Frame::new(FrameKind::Response, id, payload))
    }

    /// Claims incoming data stream `stream`. The host must call this before sending the request
    /// that makes the agent write to the stream; data for unclaimed streams is dropped there.
    pub fn open_reader(&self, stream: u32) -> StreamReader {
        let mut streams = lock(&self.shared.streams);
        let (rx, ended) = match streams.get_mut(&stream) {
            Some(slot) => (slot.rx.take(), slot.ended),
            None => (None, false),
        };
        if ended {
            // Everything, up to the end, is buffered in `rx`; the slot has done its job.
            streams.remove(&stream);
        }
        let rx = rx.unwrap_or_else(|| {
            let (tx, rx) = mpsc::sync_channel(STREAM_BUFFER_CHUNKS);
            streams.insert(stream, StreamSlot { tx, rx: None, ended: false });
            rx
        });
        if self.is_closed() {
            // The reader thread has already cleared the map; make sure this reader sees the end.
            streams.remove(&stream);
        }
        StreamReader { rx, buf: Vec::new(), pos: 0, done: false }
    }

    /// A writer for outgoing data stream `stream`. Call [`StreamWriter::finish`] to end it
    /// cleanly; dropping it unfinished tells the peer the stream was aborted.
    pub fn open_writer(&self, stream: u32) -> StreamWriter {
        StreamWriter { mux: self.clone(), stream, finished: false }
    }

    fn send(&self, frame: Frame) -> Result<(), MuxError> {
        self.send_encoded(&crate::frame::encode(frame.kind, frame.stream, &frame.payload)?)
    }

    /// Writes one frame's bytes ([`crate::frame::encode`]) whole.
    fn send_encoded(&self, bytes: &[u8]) -> Result<(), MuxError> {
        if self.is_closed() {
            return Err(MuxError::Closed);
        }
        let mut w = lock(&self.shared.writer);
        // Another sender may have torn the connection down while this one waited for the lock
        // (possibly in the middle of a frame: nothing may follow it).
        if self.is_closed() {
            return Err(MuxError::Closed);
        }
        w.write_all(bytes).map_err(|e| {
            self.shared.close();
            MuxError::from(FrameError::from(e))
        })
    }

    /// Tears the connection down locally: pending calls and stream readers fail.
    pub fn close(&self) {
        self.shared.close();
    }
}

impl Shared {
    fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        lock(&self.streams).clear();
        lock(&self.pending).clear();
        lock(&self.requests).take();
    }

    fn deliver(&self, stream: u32, chunk: Chunk) {
        let is_last = !matches!(chunk, Chunk::Data(_));
        let tx = {
            let mut streams = lock(&self.streams);
            match streams.get(&stream) {
                Some(slot) => slot.tx.clone(),
                None if self.role == Role::Agent => {
                    let (tx, rx) = mpsc::sync_channel(STREAM_BUFFER_CHUNKS);
                    streams.insert(stream, StreamSlot { tx: tx.clone(), rx: Some(rx), ended: false });
                    tx
                }
                None => return,
            }
        };
        // A consumer that went away just means nobody wants the rest of this stream.
        self.delivering.store(true, Ordering::SeqCst);
        let sent = tx.send(chunk).is_ok();
        self.delivering.store(false, Ordering::SeqCst);
        self.last_frame_ms.store(self.started.elapsed().as_millis() as u64, Ordering::Relaxed);
        if !sent || is_last {
            let mut streams = lock(&self.streams);
            match streams.get_mut(&stream) {
                // Not claimed yet: keep the buffered chunks for the reader that will claim them.
                Some(slot) if sent && slot.rx.is_some() => slot.ended = true,
                _ => {
                    streams.remove(&stream);
                }
            }
        }
    }
}

fn read_loop(shared: &Shared, mut reader: impl Read) {
    while let Ok(frame) = Frame::read_from(&mut reader) {
        shared.last_frame_ms.store(shared.started.elapsed().as_millis() as u64, Ordering::Relaxed);
        shared.frames.fetch_add(1, Ordering::SeqCst);
        match frame.kind {
            FrameKind::Data => shared.deliver(frame.stream, Chunk::Data(frame.payload)),
            FrameKind::End if frame.payload.is_empty() => shared.deliver(frame.stream, Chunk::End),
            FrameKind::End => {
                let why = String::from_utf8_lossy(&frame.payload).into_owned();
                shared.deliver(frame.stream, Chunk::Abort(why));
            }
            FrameKind::Response => {
                if let Some(tx) = lock(&shared.pending).remove(&frame.stream) {
                    let _ = tx.send(frame.payload);
                }
            }
            FrameKind::Request => {
                if shared.role != Role::Agent {
                    break; // A guest that sends requests to the host is not speaking our protocol.
                }
                let req = match serde_json::from_slice::<Request>(&frame.payload) {
                    Ok(r) => r,
                    Err(_) => break,
                };
                let requests = lock(&shared.requests);
                if let Some(tx) = requests.as_ref() {
                    let _ = tx.send((frame.stream, req));
                }
            }
        }
    }
    shared.close();
}

/// A request sent by [`Mux::start_call`], waiting for its answer.
pub struct PendingCall {
    mux: Mux,
    id: u32,
    rx: Receiver<Vec<u8>>,
}

impl PendingCall {
    /// Waits for the answer, at most `timeout` if given.
    pub fn wait(self, timeout: Option<Duration>) -> Result<Response, MuxError> {
        let bytes = match timeout {
            None => self.rx.recv().map_err(|_| MuxError::Closed)?,
            Some(t) => match self.rx.recv_timeout(t) {
                Ok(b) => b,
                Err(RecvTimeoutError::Timeout) => {
                    lock(&self.mux.shared.pending).remove(&self.id);
                    return Err(MuxError::Timeout(t));
                }
                Err(RecvTimeoutError::Disconnected) => return Err(MuxError::Closed),
            },
        };
        Ok(serde_json::from_slice(&bytes)?)
    }
}

/// Reads one incoming data stream. Ends with `Ok(0)` at the sender's clean end; a stream the
/// sender aborted, or a connection lost midway, is an error, never a silent short read.
pub struct StreamReader {
    rx: Receiver<Chunk>,
    buf: Vec<u8>,
    pos: usize,
    done: bool,
}

impl Read for StreamReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.buf.len() {
            if self.done {
                return Ok(0);
            }
            match self.rx.recv() {
                Ok(Chunk::Data(d)) => {
                    self.buf = d;
                    self.pos = 0;
                }
                Ok(Chunk::End) => self.done = true,
                Ok(Chunk::Abort(why)) => {
                    return Err(io::Error::other(format!("stream aborted by the peer: {why}")))
                }
                Err(_) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "agent connection lost in the middle of a stream",
                    ))
                }
            }
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// Writes one outgoing data stream as Data frames.
pub struct StreamWriter {
    mux: Mux,
    stream: u32,
    finished: bool,
}

impl StreamWriter {
    /// Copies `r` to the end into this stream, reading up to a whole frame's worth at a time
    /// (`io::copy`'s 8 KiB reads would send eight times as many frames).
    pub fn copy_from(&mut self, r: &mut (impl Read + ?Sized)) -> io::Result<u64> {
        let mut buf = vec![0u8; WRITE_CHUNK];
        let mut total = 0u64;
        loop {
            let n = match r.read(&mut buf) {
                Ok(0) => return Ok(total),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            self.write_all(&buf[..n])?;
            total += n as u64;
        }
    }

    /// Sends one Data frame of `len` bytes (at most [`MAX_PAYLOAD`]) whose payload `fill`
    /// puts on the connection itself, after the header, while no other frame can be sent:
    /// for zero-copy paths (`splice(2)` into the connection's descriptor). `fill` must put
    /// exactly `len` bytes; if it fails, the connection is torn down (a frame cut short
    /// cannot be taken back).
    pub fn send_direct(&mut self, len: usize, fill: impl FnOnce(&mut dyn Write) -> io::Result<()>) -> io::Result<()> {
        if len == 0 {
            return Ok(());
        }
        let header = crate::frame::header(FrameKind::Data, self.stream, len).map_err(io::Error::other)?;
        if self.mux.is_closed() {
            return Err(io::Error::other(MuxError::Closed));
        }
        let mut w = lock(&self.mux.shared.writer);
        // Another sender may have torn the connection down while this one waited for the lock.
        if self.mux.is_closed() {
            return Err(io::Error::other(MuxError::Closed));
        }
        let sent = w.write_all(&header).and_then(|()| w.flush()).and_then(|()| fill(&mut **w));
        if sent.is_err() {
            self.mux.shared.close();
        }
        sent
    }

    /// Ends the stream cleanly.
    pub fn finish(mut self) -> io::Result<()> {
        self.finished = true;
        self.mux.send(Frame::new(FrameKind::End, self.stream, Vec::new())).map_err(io::Error::other)
    }

    /// Ends the stream with an error the reader will see.
    pub fn abort(mut self, why: &str) {
        self.finished = true;
        let mut msg = why.as_bytes().to_vec();
        msg.truncate(MAX_PAYLOAD);
        if msg.is_empty() {
            msg.push(b'?');
        }
        let _ = self.mux.send(Frame::new(FrameKind::End, self.stream, msg));
    }
}

impl Write for StreamWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = data.len().min(WRITE_CHUNK);
        if n == 0 {
            return Ok(0);
        }
        let bytes = crate::frame::encode(FrameKind::Data, self.stream, &data[..n]).map_err(io::Error::other)?;
        self.mux.send_encoded(&bytes).map_err(io::Error::other)?;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for StreamWriter {
    fn drop(&mut self) {
        if !self.finished {
            let _ = self.mux.send(Frame::new(FrameKind::End, self.stream, b"writer dropped".to_vec()));
        }
    }
}

// The tests pair two muxes over a unix socket pair.
#[cfg(all(test, unix))]
mod tests;
