//! A hostile agent: a fake guest on the other end of a socket pair that speaks the protocol
//! but lies. The host's client must answer each lie with an error (or ignore it where it is
//! harmless) in bounded time and memory, and never panic. (A mock transport, as the guide
//! allows: a real guest cannot be made to lie on demand; what is under test is the host.)

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::thread;
use std::time::{Duration, Instant};

use kiln_protocol::frame::{encode, Frame, FrameKind};
use kiln_protocol::{Mux, Request, Response, MAX_PAYLOAD, PROTOCOL_VERSION};
use kiln_sandbox::AgentClient;

/// A client whose watchdog gives up within a second, and the fake agent's end.
fn pair() -> (AgentClient, UnixStream) {
    let (host, guest) = UnixStream::pair().expect("socketpair");
    let cut = host.try_clone().expect("dup");
    let client = AgentClient::new(Mux::host(host.try_clone().expect("dup"), host));
    client.watch_with(Duration::from_millis(300), Duration::from_millis(500), Some(Box::new(move || {
        let _ = cut.shutdown(std::net::Shutdown::Both);
    })));
    (client, guest)
}

fn send(guest: &mut UnixStream, kind: FrameKind, stream: u32, payload: &[u8]) {
    guest.write_all(&encode(kind, stream, payload).expect("encode")).expect("write");
}

fn answer(guest: &mut UnixStream, id: u32, resp: &Response) {
    send(guest, FrameKind::Response, id, &serde_json::to_vec(resp).expect("json"));
}

fn hello_answer() -> Response {
    Response::Hello { version: PROTOCOL_VERSION, kernel: "6.1".into(), agent_build_id: "fake".into() }
}

/// Reads the next request the host sent.
fn next_request(guest: &mut UnixStream) -> (u32, Request) {
    loop {
        let f = Frame::read_from(guest).expect("frame from the host");
        if f.kind == FrameKind::Request {
            return (f.stream, serde_json::from_slice(&f.payload).expect("request"));
        }
    }
}

/// Runs `f` on a thread and fails the test if it has not returned within `limit` (a hang is
/// a failure here, not a test that never ends).
fn within<T: Send + 'static>(limit: Duration, f: impl FnOnce() -> T + Send + 'static) -> T {
    let started = Instant::now();
    let (tx, rx) = std::sync::mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(f());
    });
    let out = rx.recv_timeout(limit).unwrap_or_else(|_| panic!("still waiting after {limit:?}: the host hangs on a hostile agent"));
    assert!(started.elapsed() < limit);
    out
}

#[test]
fn a_frame_over_the_size_limit_ends_the_connection_at_once() {
    let (client, mut guest) = pair();
    let fake = thread::spawn(move || {
        let (id, _) = next_request(&mut guest);
        // A header announcing more than a frame may hold: no allocation of it, an error.
        let mut header = Vec::new();
        header.extend_from_slice(&((MAX_PAYLOAD as u32) + 1).to_le_bytes());
        header.extend_from_slice(&id.to_le_bytes());
        header.push(FrameKind::Response as u8);
        guest.write_all(&header).expect("write");
        guest
    });
    let err = within(Duration::from_secs(5), { let c = client.clone(); move || c.hello(Duration::from_secs(30)) }).expect_err("refused");
    assert!(!err.to_string().contains('\n'), "one line: {err}");
    drop(fake.join());
}

#[test]
fn garbage_answers_are_errors_and_stray_frames_are_ignored() {
    let (client, mut guest) = pair();
    let fake = thread::spawn(move || {
        // Stray frames first: data for streams never opened, an answer to a call never made.
        send(&mut guest, FrameKind::Data, 999, b"nobody asked");
        send(&mut guest, FrameKind::End, 998, b"");
        answer(&mut guest, 4242, &Response::Exited { code: Some(0), signal: None });
        let (id, _) = next_request(&mut guest);
        answer(&mut guest, id, &hello_answer());
        // The next call gets JSON that is no answer at all.
        let (id, _) = next_request(&mut guest);
        send(&mut guest, FrameKind::Response, id, b"{\"not\": [\"an answer\"");
        guest
    });
    let info = within(Duration::from_secs(5), { let c = client.clone(); move || c.hello(Duration::from_secs(30)) }).expect("the real answer still arrives");
    assert_eq!(info.agent_build_id, "fake");
    let err = within(Duration::from_secs(5), { let c = client.clone(); move || c.hello(Duration::from_secs(30)) }).expect_err("garbage");
    assert!(!err.to_string().contains('\n'), "one line: {err}");
    drop(fake.join());
}

#[test]
fn an_agent_stalled_mid_frame_is_cut_off_by_the_watchdog() {
    let (client, mut guest) = pair();
    let fake = thread::spawn(move || {
        let (id, _) = next_request(&mut guest);
        answer(&mut guest, id, &hello_answer());
        // The diff's answer starts and never finishes; pings go unanswered.
        let (_id, req) = next_request(&mut guest);
        let Request::Diff { stream, .. } = req else { panic!("expected a diff, got {req:?}") };
        let mut header = Vec::new();
        header.extend_from_slice(&1000u32.to_le_bytes());
        header.extend_from_slice(&stream.to_le_bytes());
        header.push(FrameKind::Data as u8);
        header.extend_from_slice(&[7u8; 10]);
        guest.write_all(&header).expect("write");
        thread::sleep(Duration::from_secs(3));
        guest
    });
    client.hello(Duration::from_secs(5)).expect("hello");
    let c = client.clone();
    let result = within(Duration::from_secs(5), move || {
        c.diff("/upper", &[], None, |stream| {
            let mut buf = Vec::new();
            stream.read_to_end(&mut buf).map_err(|e| kiln_sandbox::SandboxError::io("reading the diff", e))?;
            Ok(buf.len())
        })
    });
    let err = result.expect_err("a stalled agent is an error, not a hang");
    assert!(!err.to_string().contains('\n'), "one line: {err}");
    drop(fake.join());
}

#[test]
fn a_stream_that_never_ends_is_cut_off_after_a_bounded_drain() {
    let (client, mut guest) = pair();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stopped = stop.clone();
    let fake = thread::spawn(move || {
        let (id, _) = next_request(&mut guest);
        answer(&mut guest, id, &hello_answer());
        let (_id, req) = next_request(&mut guest);
        let Request::Diff { stream, .. } = req else { panic!("expected a diff, got {req:?}") };
        // Data without end (until the test is over: the host's reader, like a VM's, only
        // stops reading when the connection is gone).
        let chunk = vec![0u8; 64 * 1024];
        while !stopped.load(std::sync::atomic::Ordering::SeqCst) && guest.write_all(&encode(FrameKind::Data, stream, &chunk).expect("encode")).is_ok() {}
    });
    client.hello(Duration::from_secs(5)).expect("hello");
    // The consumer takes 1 MiB and gives up, as a budget does.
    let c = client.clone();
    let result = within(Duration::from_secs(30), move || {
        c.diff("/upper", &[], None, |stream| {
            let mut buf = vec![0u8; 1 << 20];
            stream.read_exact(&mut buf).map_err(|e| kiln_sandbox::SandboxError::io("reading the diff", e))?;
            Err::<(), _>(kiln_sandbox::SandboxError::Agent("over budget".into()))
        })
    });
    assert!(result.is_err());
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let _ = fake.join();
}
