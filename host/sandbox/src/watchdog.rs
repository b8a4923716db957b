//! The host's watchdog over an agent connection: when nothing has come in for a while, it
//! pings the agent (`Request::Ping`, answered at once whatever else runs); an agent that does
//! not answer in time (hung, stalled in the middle of a frame, or no longer reading what kiln
//! sends) has its connection closed and its socket shut down, so every call waiting on it, a
//! writer blocked on a full socket included, fails with one error instead of waiting forever.
//!
//! It never gives up on a connection whose frames kiln itself is slow to take (a consumer
//! that stopped reading a stream holds the reader back): frames arriving, or the reader busy
//! handing one over, count as signs of life. Started once the agent has answered its Hello,
//! so a slow boot gets the boot's own timeout and message.

use std::thread;
use std::time::Duration;

use kiln_protocol::{Mux, Request};

/// Quiet time after which the watchdog asks the agent whether it is there.
pub const IDLE: Duration = Duration::from_secs(30);
/// How long the agent has to answer (a guest under emulation on a loaded machine is slow).
pub const ANSWER: Duration = Duration::from_secs(60);

/// What cuts the connection off for good (shuts its socket down).
pub type Cut = Box<dyn Fn() + Send>;

/// Watches `mux` on a thread of its own until the connection ends.
pub fn spawn(mux: Mux, idle: Duration, answer: Duration, cut: Option<Cut>) {
    let _ = thread::Builder::new().name("kiln-agent-watchdog".into()).spawn(move || watch(&mux, idle, answer, cut));
}

fn watch(mux: &Mux, idle: Duration, answer: Duration, cut: Option<Cut>) {
    let tick = (idle / 4).clamp(Duration::from_millis(10), Duration::from_secs(1));
    while !mux.is_closed() {
        thread::sleep(tick);
        if mux.idle_for() < idle || mux.is_closed() {
            continue;
        }
        let seen = mux.frames_seen();
        // The ping goes out from a thread of its own: sending may block behind a writer stuck
        // on a guest that does not read, which is exactly what must be cut off.
        let (tx, rx) = std::sync::mpsc::channel();
        let pinger = mux.clone();
        let _ = thread::Builder::new().name("kiln-agent-ping".into()).spawn(move || {
            let _ = tx.send(pinger.call(&Request::Ping, Some(answer)).is_ok());
        });
        if rx.recv_timeout(answer + Duration::from_secs(1)) == Ok(true) || mux.is_closed() {
            continue;
        }
        if mux.frames_seen() != seen || mux.idle_for() < idle {
            continue; // Alive: its frames are coming, kiln is slow to take them.
        }
        mux.close();
        if let Some(cut) = &cut {
            cut();
        }
        return;
    }
}
