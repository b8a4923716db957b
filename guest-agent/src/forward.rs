//! `ForwardListen`, `ForwardAccept`, `ForwardClose`: a unix socket in the guest whose
//! connections the host carries to a socket of its own (`RUN --mount=type=ssh`: the host's SSH
//! agent).
//!
//! The host chooses every stream id, so the agent cannot open a connection towards it: the
//! host keeps one `ForwardAccept` call waiting per listening socket. When a process connects,
//! the call is answered and the connection pumped over the call's two data streams (guest to
//! host, host to guest) until each side ends; the host then waits for the next one.
//! `ForwardClose` stops the listener and answers a waiting accept with `connected: false`.
//!
//! Sockets are created with close-on-exec descriptors (std's default), so processes the agent
//! runs never hold a listener or a connection open.

use std::collections::HashMap;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::{fs, thread};

use kiln_protocol::duplex::Duplex;
use kiln_protocol::{Mux, Response};

use crate::error::{Context, Error, Result};
use crate::log::debug;

struct Listener {
    socket: UnixListener,
    closed: AtomicBool,
}

/// Listening sockets by path.
fn listeners() -> &'static Mutex<HashMap<String, Arc<Listener>>> {
    static LISTENERS: OnceLock<Mutex<HashMap<String, Arc<Listener>>>> = OnceLock::new();
    LISTENERS.get_or_init(Mutex::default)
}

fn lock() -> std::sync::MutexGuard<'static, HashMap<String, Arc<Listener>>> {
    listeners().lock().unwrap_or_else(|e| e.into_inner())
}

/// Creates a listening socket at `path` (parents created, a stale socket replaced), with
/// permission bits `mode` and owner `uid:gid`.
pub fn listen(path: &str, mode: u32, uid: u32, gid: u32) -> Result<()> {
    if !path.starts_with('/') {
        return Err(Error::msg(format!("forward: {path:?} is not an absolute path")));
    }
    if let Some(parent) = Path::new(path).parent() {
        fs::create_dir_all(parent).ctx(|| format!("forward: mkdir -p {}", parent.display()))?;
    }
    match fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io(format!("forward: remove {path}"), e)),
    }
    let socket = UnixListener::bind(path).ctx(|| format!("forward: bind {path}"))?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode & 0o7777))
        .ctx(|| format!("forward: chmod {path}"))?;
    std::os::unix::fs::chown(path, Some(uid), Some(gid))
        .ctx(|| format!("forward: chown {path}"))?;
    let listener = Arc::new(Listener {
        socket,
        closed: AtomicBool::new(false),
    });
    lock().insert(path.to_string(), listener);
    Ok(())
}

/// Waits for a connection on `path`; pumps it over `from_guest` and `to_guest` and answers
/// `connected: true`, or `connected: false` once the listener is closed (or was never there).
pub fn accept(mux: &Mux, path: &str, to_guest: u32, from_guest: u32) -> Result<Response> {
    let Some(listener) = lock().get(path).cloned() else {
        return Ok(Response::Accepted { connected: false });
    };
    let (conn, _) = loop {
        match listener.socket.accept() {
            Ok(c) => break c,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if listener.closed.load(Ordering::SeqCst) => {
                debug!("forward {path}: accept ended: {e}");
                return Ok(Response::Accepted { connected: false });
            }
            Err(e) => return Err(Error::io(format!("forward: accept on {path}"), e)),
        }
    };
    if listener.closed.load(Ordering::SeqCst) {
        // The connection `close` made to wake this call.
        return Ok(Response::Accepted { connected: false });
    }
    pump(mux, conn, to_guest, from_guest, path)?;
    Ok(Response::Accepted { connected: true })
}

/// Copies the connection to `from_guest` and `to_guest` to the connection, each on a thread.
pub(crate) fn pump<S: Duplex + std::os::fd::AsFd>(mux: &Mux, conn: S, to_guest: u32, from_guest: u32, path: &str) -> Result<()> {
    let mut reader = conn
        .dup()
        .ctx(|| format!("forward {path}: dup the connection"))?;
    let mut writer = mux.open_writer(from_guest);
    let out = thread::Builder::new()
        .name("kiln-forward-out".into())
        .spawn(move || match crate::splice::copy(&mut reader, &mut writer) {
            Ok(_) => {
                let _ = writer.finish();
            }
            Err(e) => writer.abort(&format!("reading the guest connection: {e}")),
        });
    out.ctx(|| format!("forward {path}: start a thread"))?;
    let mut incoming = mux.open_reader(to_guest);
    let back = thread::Builder::new()
        .name("kiln-forward-in".into())
        .spawn(move || {
            let mut conn = conn;
            let copied = io::copy(&mut incoming, &mut conn).and_then(|_| conn.flush());
            if copied.is_err() {
                // Drain, so a stream nobody reads never holds up the connection to the host.
                let _ = io::copy(&mut incoming, &mut io::sink());
            }
            conn.shut_write();
        });
    back.ctx(|| format!("forward {path}: start a thread"))?;
    Ok(())
}

/// Stops the listener at `path` and removes its socket; a waiting accept answers
/// `connected: false`. Connections already made go on until their ends close them.
pub fn close(path: &str) -> Result<()> {
    let Some(listener) = lock().remove(path) else {
        return Ok(());
    };
    listener.closed.store(true, Ordering::SeqCst);
    // Wake a waiting accept with a connection of our own, which it recognises and drops.
    let _ = UnixStream::connect(path);
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(format!("forward: remove {path}"), e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::Shutdown;

    #[test]
    fn listen_sets_mode_and_close_removes_the_socket() {
        let dir = std::env::temp_dir().join(format!("kiln-forward-{}", std::process::id()));
        let path = dir.join("sub/agent.sock");
        let p = path.to_str().expect("utf8");
        let (uid, gid) = (nix::unistd::getuid().as_raw(), nix::unistd::getgid().as_raw());
        listen(p, 0o600, uid, gid).expect("listen");
        let meta = fs::metadata(&path).expect("socket");
        assert_eq!(meta.permissions().mode() & 0o7777, 0o600);
        // A client connects; the listener still accepts after a stale socket is replaced.
        listen(p, 0o660, uid, gid).expect("listen again");
        let mut client = UnixStream::connect(&path).expect("connect");
        let (mut server, _) = lock().get(p).cloned().expect("listener").socket.accept().expect("accept");
        client.write_all(b"ping").expect("write");
        let mut buf = [0; 4];
        server.read_exact(&mut buf).expect("read");
        assert_eq!(&buf, b"ping");
        close(p).expect("close");
        assert!(!path.exists(), "the socket file is removed");
        assert!(lock().get(p).is_none());
        close(p).expect("closing twice is fine");
        assert!(listen("relative", 0o600, uid, gid).is_err());
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn accepted_connections_are_pumped_both_ways_and_close_ends_the_accept() {
        let dir = std::env::temp_dir().join(format!("kiln-forward-pump-{}", std::process::id()));
        let path = dir.join("agent.sock");
        let p = path.to_str().expect("utf8").to_string();
        let (uid, gid) = (nix::unistd::getuid().as_raw(), nix::unistd::getgid().as_raw());
        listen(&p, 0o600, uid, gid).expect("listen");
        // The host and agent ends of a connection, as over the VM's transport.
        let (h, a) = UnixStream::pair().expect("pair");
        let host = Mux::host(h.try_clone().expect("dup"), h);
        let (agent, _requests) = Mux::agent(a.try_clone().expect("dup"), a);
        let (to_guest, from_guest) = (101, 102);
        let mut from = host.open_reader(from_guest);

        let (agent2, p2) = (agent.clone(), p.clone());
        let waiting = thread::spawn(move || accept(&agent2, &p2, to_guest, from_guest).expect("accept"));
        let mut client = UnixStream::connect(&path).expect("connect");
        assert_eq!(waiting.join().expect("join"), Response::Accepted { connected: true });
        client.write_all(b"request").expect("write");
        client.shutdown(Shutdown::Write).expect("shutdown");
        let mut got = Vec::new();
        from.read_to_end(&mut got).expect("from the guest");
        assert_eq!(got, b"request");
        let mut w = host.open_writer(to_guest);
        w.write_all(b"answer").expect("to the guest");
        w.finish().expect("finish");
        let mut answer = Vec::new();
        client.read_to_end(&mut answer).expect("read");
        assert_eq!(answer, b"answer", "the answer, then the end");

        // A waiting accept ends when the socket closes.
        let (agent3, p3) = (agent.clone(), p.clone());
        let waiting = thread::spawn(move || accept(&agent3, &p3, 103, 104).expect("accept"));
        thread::sleep(std::time::Duration::from_millis(50));
        close(&p).expect("close");
        assert_eq!(waiting.join().expect("join"), Response::Accepted { connected: false });
        assert_eq!(accept(&agent, &p, 105, 106).expect("accept"), Response::Accepted { connected: false });
        let _ = fs::remove_dir_all(&dir);
    }
}
