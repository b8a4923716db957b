//! Both ends of a [`Mux`] over a real Unix socket pair, with a toy agent.

use super::*;
use std::os::unix::net::UnixStream;

fn pair() -> (Mux, Mux, Receiver<IncomingRequest>) {
    let (host, agent, reqs, _) = pair_with_socket();
    (host, agent, reqs)
}

/// Also returns the agent's socket, so a test can cut the connection as a dying guest would.
fn pair_with_socket() -> (Mux, Mux, Receiver<IncomingRequest>, UnixStream) {
    let (h, a) = UnixStream::pair().expect("socketpair");
    let host = Mux::host(h.try_clone().expect("clone"), h);
    let keep = a.try_clone().expect("clone");
    let (agent, reqs) = Mux::agent(a.try_clone().expect("clone"), a);
    (host, agent, reqs, keep)
}

/// A toy agent: echoes `ReceiveTar` streams back on stream+1000 with the byte count.
fn serve(agent: Mux, reqs: Receiver<IncomingRequest>) {
    thread::spawn(move || {
        for (id, req) in reqs {
            let agent = agent.clone();
            thread::spawn(move || {
                let resp = match req {
                    Request::ReceiveTar { stream, .. } => {
                        let mut r = agent.open_reader(stream);
                        let mut data = Vec::new();
                        match r.read_to_end(&mut data) {
                            Ok(_) => {
                                let mut w = agent.open_writer(stream + 1000);
                                w.write_all(&data).expect("echo");
                                w.finish().expect("finish");
                                Response::TarReceived { entries: data.len() as u64 }
                            }
                            Err(e) => Response::Error { message: e.to_string() },
                        }
                    }
                    Request::PowerOff => {
                        agent.close();
                        return;
                    }
                    _ => Response::Done,
                };
                agent.respond(id, &resp).expect("respond");
            });
        }
    });
}

#[test]
fn streams_and_calls_interleave() {
    let (host, agent, reqs) = pair();
    serve(agent, reqs);
    let data: Vec<u8> = (0..1_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let mut handles = Vec::new();
    for n in 0..4u32 {
        let host = host.clone();
        let data = data.clone();
        handles.push(thread::spawn(move || {
            let stream = 100 + n;
            let mut echo = host.open_reader(stream + 1000);
            let h2 = host.clone();
            let caller = thread::spawn(move || {
                h2.call(&Request::ReceiveTar { dest: "/x".into(), stream }, None)
            });
            let mut w = host.open_writer(stream);
            w.write_all(&data).expect("send");
            w.finish().expect("finish");
            let mut back = Vec::new();
            echo.read_to_end(&mut back).expect("echo");
            assert_eq!(back, data);
            let resp = caller.join().expect("join").expect("call");
            assert_eq!(resp, Response::TarReceived { entries: data.len() as u64 });
        }));
    }
    for h in handles {
        h.join().expect("worker");
    }
}

#[test]
fn aborted_stream_is_an_error_not_a_short_read() {
    let (host, agent, reqs) = pair();
    serve(agent, reqs);
    let h2 = host.clone();
    let caller = thread::spawn(move || h2.call(&Request::ReceiveTar { dest: "/x".into(), stream: 5 }, None));
    let mut w = host.open_writer(5);
    w.write_all(b"partial").expect("send");
    drop(w);
    match caller.join().expect("join").expect("call") {
        Response::Error { message } => assert!(message.contains("aborted"), "{message}"),
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn lost_connection_fails_pending_calls_and_readers() {
    let (host, agent, reqs, sock) = pair_with_socket();
    // The agent takes requests but dies on the first, answering nothing.
    thread::spawn(move || {
        if let Ok((_, _)) = reqs.recv() {
            agent.close();
            let _ = sock.shutdown(std::net::Shutdown::Both);
        }
    });
    let mut reader = host.open_reader(9);
    let err = host.call(&Request::PowerOff, Some(Duration::from_secs(10))).expect_err("must fail");
    assert!(matches!(err, MuxError::Closed), "{err}");
    let mut buf = Vec::new();
    assert!(reader.read_to_end(&mut buf).is_err());
    assert!(host.call(&Request::PowerOff, None).is_err());
}

#[test]
fn host_drops_data_for_streams_it_did_not_open() {
    let (host, agent, reqs) = pair();
    drop(reqs);
    let mut w = agent.open_writer(77);
    // Far more than the per-stream buffer: must not block the host's reader thread.
    for _ in 0..(STREAM_BUFFER_CHUNKS * 4) {
        w.write_all(&[1u8; 1024]).expect("send");
    }
    w.finish().expect("finish");
    let mut r = host.open_reader(78);
    let mut w2 = agent.open_writer(78);
    w2.write_all(b"ok").expect("send");
    w2.finish().expect("finish");
    let mut got = Vec::new();
    r.read_to_end(&mut got).expect("read");
    assert_eq!(got, b"ok");
}

#[test]
fn call_times_out_when_agent_is_silent() {
    let (host, _agent, _reqs) = pair();
    let err = host.call(&Request::PowerOff, Some(Duration::from_millis(50))).expect_err("timeout");
    assert!(matches!(err, MuxError::Timeout(_)));
}

#[test]
fn agent_keeps_a_stream_that_ended_before_it_was_claimed() {
    let (host, agent, _reqs) = pair();
    let mut w = host.open_writer(42);
    w.write_all(b"small tar").expect("send");
    w.finish().expect("finish");
    // Make sure the agent's reader thread has routed the End frame before the claim.
    let mut probe = agent.open_reader(43);
    let w2 = host.open_writer(43);
    w2.finish().expect("finish");
    probe.read_to_end(&mut Vec::new()).expect("probe");
    let mut got = Vec::new();
    agent.open_reader(42).read_to_end(&mut got).expect("read");
    assert_eq!(got, b"small tar");
}

/// The request goes out before the stream's data, so the agent claims the stream and keeps
/// reading however much follows. (Data first would fill the agent's buffer for the unclaimed
/// stream and stall its reader before it saw the request: the hang this order prevents.)
#[test]
fn start_call_sends_the_request_before_a_big_stream() {
    let (host, agent, reqs) = pair();
    serve(agent, reqs);
    let stream = host.next_id();
    let mut echo = host.open_reader(stream + 1000);
    let pending = host.start_call(&Request::ReceiveTar { dest: "/x".into(), stream }).expect("start");
    let writer_host = host.clone();
    let writer = thread::spawn(move || {
        let mut w = writer_host.open_writer(stream);
        let chunk = vec![7u8; 64 * 1024];
        for _ in 0..64 {
            w.write_all(&chunk).expect("write");
        }
        w.finish().expect("finish");
    });
    let echoed = thread::spawn(move || {
        let mut data = Vec::new();
        echo.read_to_end(&mut data).map(|_| data.len())
    });
    let resp = pending.wait(Some(Duration::from_secs(30))).expect("answer");
    assert_eq!(resp, Response::TarReceived { entries: 64 * 64 * 1024 });
    writer.join().expect("writer");
    assert_eq!(echoed.join().expect("echo").expect("read"), 64 * 64 * 1024);
}
