//! The host side of virtio-vsock: guest stream connections mapped to Unix sockets, the way
//! Firecracker does it.
//!
//! - A guest connecting to host port P reaches the Unix socket `<uds_path>_P`.
//! - A host process connects to `<uds_path>`, writes `CONNECT <port>\n`, and once the guest
//!   accepts, reads `OK <local_port>\n`; after that the stream carries the connection's bytes.
//!
//! The muxer owns the sockets, the connection table and flow control (credit), and moves
//! packets between them and the rx/tx queues. It never blocks on a socket (all non-blocking,
//! driven by one epoll set), and a guest's malformed packet resets that connection (or is
//! dropped and counted) — never a panic. It knows nothing of threads or the transport.

use std::collections::{HashMap, VecDeque};
use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use virtio_queue::{Queue, QueueOwnedT, QueueT};
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};

use super::packet::{op, Header, HDR_LEN, HOST_CID, SHUTDOWN_RCV, SHUTDOWN_SEND, TYPE_STREAM};
use crate::virtio::VirtioError;

/// Receive buffer kiln advertises per connection (the guest sends at most this much unread).
pub const BUF_ALLOC: u32 = 256 * 1024;
/// Largest payload accepted from the guest in one packet, and sent in one.
pub const MAX_PKT_PAYLOAD: u32 = 64 * 1024;
const MAX_CONNS: usize = 1024;
const MAX_CONNECT_LINE: usize = 64;
/// First local port handed to host-initiated connections.
const FIRST_LOCAL_PORT: u32 = 1 << 30;

/// Epoll tokens: the listener, connections (`CONN | id`), handshakes (`HANDSHAKE | id`), and
/// tokens the caller registers itself (below `CONN`).
pub const TOKEN_LISTENER: u64 = 1 << 40;
const CONN: u64 = 1 << 32;
const HANDSHAKE: u64 = 2 << 32;

#[derive(Debug, PartialEq, Eq)]
enum State {
    /// Host-initiated, REQUEST queued for the guest, awaiting its RESPONSE.
    AwaitingResponse,
    Established,
    /// The guest closed; flushing what is left for the host, then RST.
    Closing,
}

struct Conn {
    stream: UnixStream,
    local_port: u32,
    peer_port: u32,
    state: State,
    peer_buf_alloc: u32,
    peer_fwd_cnt: u32,
    /// Bytes sent to the guest.
    tx_cnt: u32,
    /// Bytes received from the guest and written to the host socket.
    fwd_cnt: u32,
    fwd_cnt_sent: u32,
    to_host: Vec<u8>,
    from_host: Vec<u8>,
    host_eof: bool,
    interest: EventSet,
}

impl Conn {
    fn credit(&self) -> u32 {
        self.peer_buf_alloc.saturating_sub(self.tx_cnt.wrapping_sub(self.peer_fwd_cnt))
    }

    fn wanted_interest(&self) -> EventSet {
        let mut set = EventSet::empty();
        if self.state == State::Established && self.from_host.is_empty() && !self.host_eof && self.credit() > 0 {
            set |= EventSet::IN;
        }
        if !self.to_host.is_empty() {
            set |= EventSet::OUT;
        }
        set
    }
}

struct Handshake {
    stream: UnixStream,
    line: Vec<u8>,
}

/// Connection table and Unix-socket side of one vsock device.
pub struct Muxer {
    guest_cid: u64,
    uds_path: PathBuf,
    listener: UnixListener,
    epoll: Epoll,
    conns: HashMap<u64, Conn>,
    /// (local port, peer port) -> connection id.
    ports: HashMap<(u32, u32), u64>,
    handshakes: HashMap<u64, Handshake>,
    /// Control packets (no payload) waiting for rx buffers.
    ctrl: VecDeque<Header>,
    next_id: u64,
    next_local_port: u32,
    /// Malformed guest packets and socket failures (for reports and tests).
    pub errors: u64,
    pub last_error: Option<String>,
}

fn io_err(context: String) -> impl FnOnce(io::Error) -> VirtioError {
    move |source| VirtioError::Io { context, source }
}

impl Muxer {
    /// Listens on `uds_path` (a stale socket file there is replaced; any other file is an
    /// error).
    pub fn new(guest_cid: u64, uds_path: &Path) -> Result<Self, VirtioError> {
        if let Ok(meta) = std::fs::symlink_metadata(uds_path) {
            if !meta.file_type().is_socket() {
                return Err(VirtioError::Io {
                    context: format!("vsock socket path {} exists and is not a socket", uds_path.display()),
                    source: io::Error::from(io::ErrorKind::AlreadyExists),
                });
            }
            std::fs::remove_file(uds_path).map_err(io_err(format!("removing stale socket {}", uds_path.display())))?;
        }
        let listener = UnixListener::bind(uds_path).map_err(io_err(format!("listening on {}", uds_path.display())))?;
        listener.set_nonblocking(true).map_err(io_err("making the vsock listener non-blocking".into()))?;
        let epoll = Epoll::new().map_err(io_err("creating the vsock epoll set".into()))?;
        epoll
            .ctl(ControlOperation::Add, listener.as_raw_fd(), EpollEvent::new(EventSet::IN, TOKEN_LISTENER))
            .map_err(io_err("watching the vsock listener".into()))?;
        Ok(Muxer {
            guest_cid,
            uds_path: uds_path.to_path_buf(),
            listener,
            epoll,
            conns: HashMap::new(),
            ports: HashMap::new(),
            handshakes: HashMap::new(),
            ctrl: VecDeque::new(),
            next_id: 0,
            next_local_port: FIRST_LOCAL_PORT,
            errors: 0,
            last_error: None,
        })
    }

    /// Adds a caller's fd (a queue kick, a stop event) to the epoll set under `token`
    /// (which must be below 2^32).
    pub fn watch(&self, fd: RawFd, token: u64) -> Result<(), VirtioError> {
        self.epoll.ctl(ControlOperation::Add, fd, EpollEvent::new(EventSet::IN, token)).map_err(io_err("watching an event fd".into()))
    }

    /// Removes a fd added with [`Muxer::watch`]. Needed before the fd is closed while another
    /// descriptor still refers to the same eventfd, or epoll keeps reporting it.
    pub fn unwatch(&self, fd: RawFd) {
        let _ = self.epoll.ctl(ControlOperation::Delete, fd, EpollEvent::default());
    }

    pub fn connection_count(&self) -> usize {
        self.conns.len()
    }

    /// Forgets every connection (the guest driver was reset); the listener stays.
    pub fn reset(&mut self) {
        for (_, c) in self.conns.drain() {
            let _ = self.epoll.ctl(ControlOperation::Delete, c.stream.as_raw_fd(), EpollEvent::default());
        }
        for (_, h) in self.handshakes.drain() {
            let _ = self.epoll.ctl(ControlOperation::Delete, h.stream.as_raw_fd(), EpollEvent::default());
        }
        self.ports.clear();
        self.ctrl.clear();
    }

    fn record(&mut self, why: String) {
        self.errors += 1;
        self.last_error = Some(why);
    }

    fn reply(&self, local_port: u32, peer_port: u32, op: u16, flags: u32, fwd_cnt: u32) -> Header {
        Header {
            src_cid: HOST_CID,
            dst_cid: self.guest_cid,
            src_port: local_port,
            dst_port: peer_port,
            len: 0,
            type_: TYPE_STREAM,
            op,
            flags,
            buf_alloc: BUF_ALLOC,
            fwd_cnt,
        }
    }

    fn rst(&mut self, local_port: u32, peer_port: u32) {
        let h = self.reply(local_port, peer_port, op::RST, 0, 0);
        self.ctrl.push_back(h);
    }

    fn remove(&mut self, id: u64) {
        if let Some(c) = self.conns.remove(&id) {
            let _ = self.epoll.ctl(ControlOperation::Delete, c.stream.as_raw_fd(), EpollEvent::default());
            self.ports.remove(&(c.local_port, c.peer_port));
        }
    }

    fn add_conn(&mut self, stream: UnixStream, local_port: u32, peer_port: u32, state: State) -> Result<u64, io::Error> {
        stream.set_nonblocking(true)?;
        let id = self.next_id;
        self.next_id += 1;
        self.epoll.ctl(ControlOperation::Add, stream.as_raw_fd(), EpollEvent::new(EventSet::empty(), CONN | id))?;
        self.conns.insert(
            id,
            Conn {
                stream,
                local_port,
                peer_port,
                state,
                peer_buf_alloc: 0,
                peer_fwd_cnt: 0,
                tx_cnt: 0,
                fwd_cnt: 0,
                fwd_cnt_sent: 0,
                to_host: Vec::new(),
                from_host: Vec::new(),
                host_eof: false,
                interest: EventSet::empty(),
            },
        );
        self.ports.insert((local_port, peer_port), id);
        Ok(id)
    }

    /// Consumes the guest's packets from the tx queue. Returns whether any chain was used.
    pub fn process_tx(&mut self, mem: &GuestMemoryMmap, queue: &mut Queue) -> Result<bool, VirtioError> {
        let mut used = false;
        for _ in 0..=queue.size() {
            let Some(chain) = queue.pop_descriptor_chain(mem) else { break };
            let head = chain.head_index();
            match chain.reader(mem) {
                Ok(mut reader) => {
                    let mut hdr = [0u8; HDR_LEN];
                    if reader.read_exact(&mut hdr).is_err() {
                        self.record("tx packet shorter than the 44-byte header".into());
                    } else {
                        let h = Header::from_bytes(&hdr);
                        if self.host_backlogged(&h) {
                            // Back-pressure: leave the packet in the ring until the host socket
                            // drains (EPOLLOUT), instead of buffering without bound.
                            queue.go_to_previous_position();
                            break;
                        }
                        self.guest_packet(h, &mut reader);
                    }
                }
                Err(e) => self.record(format!("unusable tx descriptor chain: {e}")),
            }
            queue.add_used(mem, head, 0)?;
            used = true;
        }
        self.update_interest();
        Ok(used)
    }

    /// Whether `h` carries data for a connection whose host socket already has a full
    /// receive buffer's worth waiting.
    fn host_backlogged(&self, h: &Header) -> bool {
        h.op == op::RW
            && self
                .ports
                .get(&(h.dst_port, h.src_port))
                .and_then(|id| self.conns.get(id))
                .is_some_and(|c| c.to_host.len() >= BUF_ALLOC as usize)
    }

    fn guest_packet(&mut self, h: Header, payload: &mut impl Read) {
        if h.src_cid != self.guest_cid || h.dst_cid != HOST_CID {
            self.record(format!("packet from cid {} to cid {} dropped", h.src_cid, h.dst_cid));
            return;
        }
        let (local, peer) = (h.dst_port, h.src_port);
        if h.type_ != TYPE_STREAM {
            if h.op != op::RST {
                self.rst(local, peer);
            }
            return;
        }
        let id = self.ports.get(&(local, peer)).copied();
        if let (Some(id), Some(c)) = (id, id.and_then(|id| self.conns.get_mut(&id))) {
            c.peer_buf_alloc = h.buf_alloc;
            c.peer_fwd_cnt = h.fwd_cnt;
            self.conn_packet(id, h, payload);
            return;
        }
        match h.op {
            op::REQUEST => self.guest_connect(local, peer, h),
            op::RST => {}
            _ => self.rst(local, peer),
        }
    }

    /// The guest connects to host port `local`: reach `<uds_path>_<local>`.
    fn guest_connect(&mut self, local: u32, peer: u32, h: Header) {
        if self.conns.len() >= MAX_CONNS {
            self.record("too many vsock connections".into());
            self.rst(local, peer);
            return;
        }
        let mut path = self.uds_path.clone().into_os_string();
        path.push(format!("_{local}"));
        let result = UnixStream::connect(&path).and_then(|s| self.add_conn(s, local, peer, State::Established));
        match result {
            Ok(id) => {
                if let Some(c) = self.conns.get_mut(&id) {
                    c.peer_buf_alloc = h.buf_alloc;
                    c.peer_fwd_cnt = h.fwd_cnt;
                }
                let resp = self.reply(local, peer, op::RESPONSE, 0, 0);
                self.ctrl.push_back(resp);
            }
            Err(e) => {
                self.record(format!("guest connect to host port {local} ({}): {e}", PathBuf::from(path).display()));
                self.rst(local, peer);
            }
        }
    }

    fn conn_packet(&mut self, id: u64, h: Header, payload: &mut impl Read) {
        let Some(c) = self.conns.get_mut(&id) else { return };
        let (local, peer) = (c.local_port, c.peer_port);
        match h.op {
            op::RESPONSE if c.state == State::AwaitingResponse => {
                c.state = State::Established;
                c.to_host.extend_from_slice(format!("OK {local}\n").as_bytes());
                self.flush_to_host(id);
            }
            op::RW if c.state == State::Established => {
                let len = h.len;
                let pending = c.to_host.len() as u64 + u64::from(len);
                if len > MAX_PKT_PAYLOAD || pending > u64::from(BUF_ALLOC) + u64::from(MAX_PKT_PAYLOAD) {
                    self.record(format!("guest sent {len} bytes past its credit on port {local}"));
                    self.reset_conn(id);
                    return;
                }
                let start = c.to_host.len();
                c.to_host.resize(start + len as usize, 0);
                if payload.read_exact(&mut c.to_host[start..]).is_err() {
                    c.to_host.truncate(start);
                    self.record(format!("RW packet on port {local} claims {len} bytes it does not carry"));
                    self.reset_conn(id);
                    return;
                }
                self.flush_to_host(id);
            }
            op::CREDIT_UPDATE => {}
            op::CREDIT_REQUEST => {
                let fwd = c.fwd_cnt;
                c.fwd_cnt_sent = fwd;
                let upd = self.reply(local, peer, op::CREDIT_UPDATE, 0, fwd);
                self.ctrl.push_back(upd);
            }
            op::SHUTDOWN => {
                if h.flags & (SHUTDOWN_RCV | SHUTDOWN_SEND) == (SHUTDOWN_RCV | SHUTDOWN_SEND) {
                    c.state = State::Closing;
                    self.flush_to_host(id);
                } else if h.flags & SHUTDOWN_SEND != 0 && c.to_host.is_empty() {
                    let _ = c.stream.shutdown(Shutdown::Write);
                }
            }
            op::RST => self.remove(id),
            _ => self.reset_conn(id),
        }
    }

    fn reset_conn(&mut self, id: u64) {
        if let Some(c) = self.conns.get(&id) {
            let (l, p) = (c.local_port, c.peer_port);
            self.remove(id);
            self.rst(l, p);
        }
    }

    /// Writes what the guest sent to the host socket, as far as it takes it now.
    fn flush_to_host(&mut self, id: u64) {
        let Some(c) = self.conns.get_mut(&id) else { return };
        while !c.to_host.is_empty() {
            match c.stream.write(&c.to_host) {
                Ok(0) => break,
                Ok(n) => {
                    c.to_host.drain(..n);
                    // The handshake line is not guest data and is not counted.
                    if c.state != State::AwaitingResponse {
                        c.fwd_cnt = c.fwd_cnt.wrapping_add(n as u32);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    let why = format!("writing to host socket of port {}: {e}", c.local_port);
                    self.record(why);
                    self.reset_conn(id);
                    return;
                }
            }
        }
        let Some(c) = self.conns.get_mut(&id) else { return };
        let (local, peer, fwd) = (c.local_port, c.peer_port, c.fwd_cnt);
        if c.state == State::Closing && c.to_host.is_empty() {
            self.reset_conn(id);
            return;
        }
        // Tell the guest about freed buffer space before it runs dry.
        if fwd.wrapping_sub(c.fwd_cnt_sent) >= BUF_ALLOC / 4 {
            c.fwd_cnt_sent = fwd;
            let upd = self.reply(local, peer, op::CREDIT_UPDATE, 0, fwd);
            self.ctrl.push_back(upd);
        }
    }

    /// Waits up to `timeout_ms` for socket events and handles them. Returns the caller tokens
    /// (see [`Muxer::watch`]) that fired.
    pub fn poll(&mut self, timeout_ms: i32) -> Result<Vec<u64>, VirtioError> {
        let mut events = [EpollEvent::default(); 32];
        let n = match self.epoll.wait(timeout_ms, &mut events) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => 0,
            Err(e) => return Err(VirtioError::Io { context: "waiting for vsock events".into(), source: e }),
        };
        let mut caller = Vec::new();
        for ev in &events[..n] {
            let token = ev.data();
            match token {
                TOKEN_LISTENER => self.accept(),
                t if t & HANDSHAKE != 0 && t & CONN == 0 => self.read_handshake(t & !HANDSHAKE),
                t if t & CONN != 0 => {
                    let id = t & !CONN;
                    let set = ev.event_set();
                    if set.intersects(EventSet::OUT) {
                        self.flush_to_host(id);
                    }
                    if set.intersects(EventSet::IN | EventSet::HANG_UP | EventSet::ERROR) {
                        self.read_from_host(id);
                    }
                }
                t => caller.push(t),
            }
        }
        self.update_interest();
        Ok(caller)
    }

    fn accept(&mut self) {
        loop {
            match self.listener.accept() {
                Ok((stream, _)) => {
                    if self.handshakes.len() + self.conns.len() >= MAX_CONNS || stream.set_nonblocking(true).is_err() {
                        continue; // dropped: the host sees the connection close
                    }
                    let id = self.next_id;
                    self.next_id += 1;
                    if self.epoll.ctl(ControlOperation::Add, stream.as_raw_fd(), EpollEvent::new(EventSet::IN, HANDSHAKE | id)).is_ok() {
                        self.handshakes.insert(id, Handshake { stream, line: Vec::new() });
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    self.record(format!("accepting on {}: {e}", self.uds_path.display()));
                    return;
                }
            }
        }
    }

    /// Reads `CONNECT <port>\n` byte by byte (so no connection data is consumed with it).
    fn read_handshake(&mut self, id: u64) {
        let Some(hs) = self.handshakes.get_mut(&id) else { return };
        let mut byte = [0u8; 1];
        let port = loop {
            match hs.stream.read(&mut byte) {
                Ok(0) => break Err("closed before CONNECT".to_string()),
                Ok(_) if byte[0] == b'\n' => break parse_connect(&hs.line),
                Ok(_) if hs.line.len() >= MAX_CONNECT_LINE => break Err("CONNECT line too long".to_string()),
                Ok(_) => hs.line.push(byte[0]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => break Err(e.to_string()),
            }
        };
        let Some(hs) = self.handshakes.remove(&id) else { return };
        let _ = self.epoll.ctl(ControlOperation::Delete, hs.stream.as_raw_fd(), EpollEvent::default());
        let peer = match port {
            Ok(p) => p,
            Err(why) => {
                self.record(format!("host vsock handshake: {why}"));
                return;
            }
        };
        let local = self.alloc_local_port(peer);
        match self.add_conn(hs.stream, local, peer, State::AwaitingResponse) {
            Ok(_) => {
                let req = self.reply(local, peer, op::REQUEST, 0, 0);
                self.ctrl.push_back(req);
            }
            Err(e) => self.record(format!("registering host connection: {e}")),
        }
    }

    fn alloc_local_port(&mut self, peer: u32) -> u32 {
        loop {
            let p = self.next_local_port;
            self.next_local_port = self.next_local_port.checked_add(1).unwrap_or(FIRST_LOCAL_PORT);
            if !self.ports.contains_key(&(p, peer)) {
                return p;
            }
        }
    }

    fn read_from_host(&mut self, id: u64) {
        let Some(c) = self.conns.get_mut(&id) else { return };
        if !c.from_host.is_empty() || c.host_eof || c.state != State::Established {
            return;
        }
        let want = c.credit().min(MAX_PKT_PAYLOAD) as usize;
        if want == 0 {
            return;
        }
        c.from_host.resize(want, 0);
        let result = c.stream.read(&mut c.from_host);
        match result {
            Ok(0) => {
                c.from_host.clear();
                c.host_eof = true;
                let (l, p, f) = (c.local_port, c.peer_port, c.fwd_cnt);
                let h = self.reply(l, p, op::SHUTDOWN, SHUTDOWN_SEND, f);
                self.ctrl.push_back(h);
            }
            Ok(n) => c.from_host.truncate(n),
            Err(e) => {
                c.from_host.clear();
                if !matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted) {
                    let why = format!("reading host socket of port {}: {e}", c.local_port);
                    self.record(why);
                    self.reset_conn(id);
                }
            }
        }
    }

    fn update_interest(&mut self) {
        for (id, c) in self.conns.iter_mut() {
            let want = c.wanted_interest();
            if want != c.interest
                && self.epoll.ctl(ControlOperation::Modify, c.stream.as_raw_fd(), EpollEvent::new(want, CONN | id)).is_ok()
            {
                c.interest = want;
            }
        }
    }

    /// Whether packets are waiting for rx buffers.
    pub fn has_rx_work(&self) -> bool {
        !self.ctrl.is_empty() || self.conns.values().any(|c| !c.from_host.is_empty() && c.credit() > 0)
    }

    /// Delivers control packets and host data into the guest's rx buffers. Returns whether any
    /// chain was used.
    pub fn fill_rx(&mut self, mem: &GuestMemoryMmap, queue: &mut Queue) -> Result<bool, VirtioError> {
        let mut used = false;
        while self.has_rx_work() {
            let Some(chain) = queue.pop_descriptor_chain(mem) else { break };
            let head = chain.head_index();
            let mut writer = match chain.writer(mem) {
                Ok(w) if w.available_bytes() >= HDR_LEN => w,
                Ok(_) => {
                    self.record("rx buffer smaller than the 44-byte header".into());
                    queue.add_used(mem, head, 0)?;
                    used = true;
                    continue;
                }
                Err(e) => {
                    self.record(format!("unusable rx descriptor chain: {e}"));
                    queue.add_used(mem, head, 0)?;
                    used = true;
                    continue;
                }
            };
            let room = writer.available_bytes() - HDR_LEN;
            let (hdr, payload) = match self.ctrl.pop_front() {
                Some(h) => (h, Vec::new()),
                None => match self.next_data(room) {
                    Some(p) => p,
                    None => {
                        // Nothing deliverable after all: give the buffer back unused.
                        queue.go_to_previous_position();
                        break;
                    }
                },
            };
            let mut len = HDR_LEN as u32 + hdr.len;
            if writer.write_all(&hdr.to_bytes()).and_then(|_| writer.write_all(&payload)).is_err() {
                self.record("writing an rx packet into guest memory failed".into());
                len = 0;
            }
            queue.add_used(mem, head, len)?;
            used = true;
        }
        self.update_interest();
        Ok(used)
    }

    /// Takes up to `room` bytes of some connection's host data, with its RW header.
    fn next_data(&mut self, room: usize) -> Option<(Header, Vec<u8>)> {
        let (&id, _) = self.conns.iter().find(|(_, c)| !c.from_host.is_empty() && c.credit() > 0)?;
        let c = self.conns.get_mut(&id)?;
        let n = room.min(c.from_host.len()).min(c.credit() as usize);
        if n == 0 {
            return None;
        }
        let payload: Vec<u8> = c.from_host.drain(..n).collect();
        c.tx_cnt = c.tx_cnt.wrapping_add(n as u32);
        c.fwd_cnt_sent = c.fwd_cnt;
        let (l, p, f) = (c.local_port, c.peer_port, c.fwd_cnt);
        let mut h = self.reply(l, p, op::RW, 0, f);
        h.len = n as u32;
        Some((h, payload))
    }
}

fn parse_connect(line: &[u8]) -> Result<u32, String> {
    let text = std::str::from_utf8(line).map_err(|_| "CONNECT line is not UTF-8".to_string())?;
    let port = text
        .trim_end_matches('\r')
        .strip_prefix("CONNECT ")
        .ok_or_else(|| format!("expected `CONNECT <port>`, got {text:?}"))?;
    port.trim().parse::<u32>().map_err(|_| format!("bad port in {text:?}"))
}

#[cfg(test)]
#[path = "muxer_tests.rs"]
mod tests;
