//! Published UDP ports (`-p 5353:53/udp`). UDP has no connections, so the host keeps a flow
//! per client address, as Docker's userland proxy does: the first datagram from a client
//! opens a flow into the guest (its own socket there, so answers come back to the client
//! that asked), later ones reuse it, and a flow idle for [`FLOW_IDLE`] is closed.
//!
//! Flows are opened off the receiving loop (a new client never holds up the others: its
//! datagrams wait, a few at most, until its flow is open) and bounded per container
//! ([`MAX_FLOWS`], across its ports): datagrams from new clients beyond that are dropped, as
//! a full conntrack table would. Each flow costs the guest a socket and two threads.

use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kiln_protocol::datagram::{read_datagram, write_datagram, MAX_DATAGRAM};
use kiln_protocol::StreamWriter;
use kiln_sandbox::AgentClient;

/// A flow that carried nothing for this long is closed (Docker's proxy uses 90 s).
pub const FLOW_IDLE: Duration = Duration::from_secs(90);

/// Flows open at once, all published UDP ports of the process together.
pub const MAX_FLOWS: usize = 256;

/// Datagrams kept for a flow that is still being opened.
const PENDING: usize = 16;

static OPEN_FLOWS: AtomicUsize = AtomicUsize::new(0);

#[derive(Default)]
struct Flow {
    /// `None` while the flow is being opened (or when it could not be).
    to_guest: Option<StreamWriter>,
    pending: Vec<Vec<u8>>,
    failed: bool,
    last: Option<Instant>,
}

type Shared = Arc<Mutex<Flow>>;

fn lock(f: &Shared) -> std::sync::MutexGuard<'_, Flow> {
    f.lock().unwrap_or_else(|e| e.into_inner())
}

/// Carries datagrams between `sock` (bound on the host) and UDP port `port` in the guest,
/// on a thread, for the life of this process.
pub fn serve(agent: AgentClient, port: u16, sock: UdpSocket) {
    let _ = std::thread::Builder::new().name("kiln-udp".into()).spawn(move || {
        let _ = sock.set_read_timeout(Some(Duration::from_secs(1)));
        let mut flows: HashMap<SocketAddr, Shared> = HashMap::new();
        let mut buf = vec![0u8; MAX_DATAGRAM];
        loop {
            if let Ok((n, client)) = sock.recv_from(&mut buf) {
                let flow = match flows.get(&client) {
                    Some(f) => Some(f.clone()),
                    None if OPEN_FLOWS.fetch_add(1, Ordering::SeqCst) < MAX_FLOWS => {
                        let f: Shared = Arc::default();
                        flows.insert(client, f.clone());
                        open_flow(&agent, port, &sock, client, f.clone());
                        Some(f)
                    }
                    None => {
                        OPEN_FLOWS.fetch_sub(1, Ordering::SeqCst);
                        None
                    }
                };
                if let Some(f) = flow {
                    let mut guard = lock(&f);
                    let f = &mut *guard;
                    f.last = Some(Instant::now());
                    match f.to_guest.as_mut() {
                        Some(w) => f.failed |= write_datagram(w, &buf[..n]).is_err(),
                        None if f.pending.len() < PENDING => f.pending.push(buf[..n].to_vec()),
                        None => {}
                    }
                }
            }
            flows.retain(|_, f| {
                let mut f = lock(f);
                let idle = f.last.is_some_and(|t| t.elapsed() > FLOW_IDLE);
                if !(idle || f.failed) {
                    return true;
                }
                if let Some(w) = f.to_guest.take() {
                    let _ = w.finish();
                }
                OPEN_FLOWS.fetch_sub(1, Ordering::SeqCst);
                false
            });
        }
    });
}

/// Opens `client`'s flow on a thread of its own; the guest's answers go back to `client`
/// from `sock`. Datagrams that arrived meanwhile are sent once it is open.
fn open_flow(agent: &AgentClient, port: u16, sock: &UdpSocket, client: SocketAddr, flow: Shared) {
    let Ok(back) = sock.try_clone() else {
        lock(&flow).failed = true;
        return;
    };
    let agent = agent.clone();
    let failed = flow.clone();
    let spawned = std::thread::Builder::new().name("kiln-udp-flow".into()).spawn(move || {
        let Ok((mut to_guest, mut from_guest)) = agent.connect_udp(port) else {
            lock(&flow).failed = true;
            return;
        };
        {
            let mut f = lock(&flow);
            let sent = f.pending.drain(..).try_for_each(|d| write_datagram(&mut to_guest, &d));
            f.failed |= sent.is_err();
            f.to_guest = Some(to_guest);
        }
        let mut buf = vec![0u8; MAX_DATAGRAM];
        while let Ok(Some(n)) = read_datagram(&mut from_guest, &mut buf) {
            let _ = back.send_to(&buf[..n], client);
        }
    });
    if spawned.is_err() {
        lock(&failed).failed = true;
    }
}
