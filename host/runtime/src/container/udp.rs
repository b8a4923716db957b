//! Published UDP ports (`-p 5353:53/udp`). UDP has no connections, so the host keeps a flow
//! per client address, as Docker's userland proxy does: the first datagram from a client
//! opens a flow into the guest (its own socket there, so answers come back to the client
//! that asked), later ones reuse it, and a flow idle for [`FLOW_IDLE`] is closed.
//!
//! Flows are bounded ([`MAX_FLOWS`]): datagrams from new clients beyond that are dropped,
//! as a full conntrack table would. Nothing here may block the receiving loop on one client.

use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use kiln_protocol::datagram::{read_datagram, write_datagram, MAX_DATAGRAM};
use kiln_protocol::StreamWriter;
use kiln_sandbox::AgentClient;

/// A flow that carried nothing for this long is closed (Docker's proxy uses 90 s).
pub const FLOW_IDLE: Duration = Duration::from_secs(90);

/// Flows open at once per published port.
pub const MAX_FLOWS: usize = 1024;

struct Flow {
    to_guest: StreamWriter,
    last: Instant,
}

/// Carries datagrams between `sock` (bound on the host) and UDP port `port` in the guest,
/// on a thread, for the life of this process.
pub fn serve(agent: AgentClient, port: u16, sock: UdpSocket) {
    let _ = std::thread::Builder::new().name("kiln-udp".into()).spawn(move || {
        let _ = sock.set_read_timeout(Some(Duration::from_secs(1)));
        let mut flows: HashMap<SocketAddr, Flow> = HashMap::new();
        let mut buf = vec![0u8; MAX_DATAGRAM];
        loop {
            if let Ok((n, client)) = sock.recv_from(&mut buf) {
                if !flows.contains_key(&client) && flows.len() < MAX_FLOWS {
                    if let Some(flow) = open_flow(&agent, port, &sock, client) {
                        flows.insert(client, flow);
                    }
                }
                if let Some(flow) = flows.get_mut(&client) {
                    flow.last = Instant::now();
                    if write_datagram(&mut flow.to_guest, &buf[..n]).is_err() {
                        flows.remove(&client);
                    }
                }
            }
            let idle: Vec<SocketAddr> = flows.iter().filter(|(_, f)| f.last.elapsed() > FLOW_IDLE).map(|(a, _)| *a).collect();
            for a in idle {
                if let Some(f) = flows.remove(&a) {
                    let _ = f.to_guest.finish();
                }
            }
        }
    });
}

/// Opens a flow for `client`: the guest's answers are sent back to it from `sock`.
fn open_flow(agent: &AgentClient, port: u16, sock: &UdpSocket, client: SocketAddr) -> Option<Flow> {
    let back = sock.try_clone().ok()?;
    let (to_guest, mut from_guest) = agent.connect_udp(port).ok()?;
    std::thread::Builder::new()
        .name("kiln-udp-flow".into())
        .spawn(move || {
            let mut buf = vec![0u8; MAX_DATAGRAM];
            while let Ok(Some(n)) = read_datagram(&mut from_guest, &mut buf) {
                let _ = back.send_to(&buf[..n], client);
            }
        })
        .ok()?;
    Some(Flow { to_guest, last: Instant::now() })
}
