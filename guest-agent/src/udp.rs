//! `ConnectUdp`: one flow of a published UDP port. The host keeps a flow per client address;
//! here each flow is a UDP socket of its own, connected to the port on the guest's loopback,
//! so the container's answers come back to the flow (and to the client) they belong to.
//!
//! Datagrams travel on the flow's two streams framed by [`kiln_protocol::datagram`]. The end
//! of the host's stream (the flow idled out on the host, or the container stopped) closes the
//! socket; the agent never keeps a flow the host has dropped.

use std::net::UdpSocket;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use kiln_protocol::datagram::{read_datagram, write_datagram, MAX_DATAGRAM};
use kiln_protocol::Mux;

use crate::error::{Context, Error, Result};

/// Opens the flow's socket and starts its two pumps.
pub fn connect(mux: &Mux, port: u16, to_guest: u32, from_guest: u32) -> Result<()> {
    let what = || format!("udp flow to port {port} in the container");
    let sock = UdpSocket::bind(("127.0.0.1", 0)).map_err(|e| Error::io(what(), e))?;
    sock.connect(("127.0.0.1", port)).map_err(|e| Error::io(what(), e))?;
    // Woken once a second to notice that the host ended the flow.
    sock.set_read_timeout(Some(Duration::from_secs(1))).map_err(|e| Error::io(what(), e))?;
    let replies = sock.try_clone().map_err(|e| Error::io(what(), e))?;
    let ended = Arc::new(AtomicBool::new(false));
    let mut writer = mux.open_writer(from_guest);
    let out_ended = ended.clone();
    thread::Builder::new()
        .name("kiln-udp-out".into())
        .spawn(move || {
            let mut buf = vec![0u8; MAX_DATAGRAM];
            while !out_ended.load(Ordering::SeqCst) {
                match replies.recv(&mut buf) {
                    Ok(n) => {
                        if write_datagram(&mut writer, &buf[..n]).is_err() {
                            break;
                        }
                    }
                    // Timeouts, and ICMP "port unreachable" from an earlier send: go on.
                    Err(_) => continue,
                }
            }
            let _ = writer.finish();
        })
        .ctx(what)?;
    let mut incoming = mux.open_reader(to_guest);
    thread::Builder::new()
        .name("kiln-udp-in".into())
        .spawn(move || {
            let mut buf = vec![0u8; MAX_DATAGRAM];
            // A datagram nobody receives is lost, as UDP's are; only the stream's end stops.
            while let Ok(Some(n)) = read_datagram(&mut incoming, &mut buf) {
                let _ = sock.send(&buf[..n]);
            }
            let _ = std::io::copy(&mut incoming, &mut std::io::sink());
            ended.store(true, Ordering::SeqCst);
        })
        .ctx(what)?;
    Ok(())
}
