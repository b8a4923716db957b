//! A DHCPv4 client just big enough for a VM's NAT (`kiln.net=dhcp`): DISCOVER, OFFER, REQUEST,
//! ACK on the first network interface, giving the [`NetConfig`] the static path takes from the
//! command line. Virtualization.framework's NAT (macOS vmnet) hands out addresses only this
//! way; QEMU's slirp also answers, which is how it is tested.
//!
//! Messages are encoded and decoded by pure functions (unit-tested); [`lease`] does the
//! exchange on a UDP socket bound to the interface (SO_BINDTODEVICE), with the broadcast flag
//! set so the server answers to 255.255.255.255 while the guest has no address yet. Every
//! wait is bounded. The lease is never renewed: a build or container VM lives far shorter than
//! any NAT's lease. Untrusted input: a reply is accepted only with our transaction id and
//! hardware address, and its options are bounds-checked.

use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::net::NetConfig;

const BOOTREQUEST: u8 = 1;
const BOOTREPLY: u8 = 2;
const COOKIE: [u8; 4] = [99, 130, 83, 99];
const DISCOVER: u8 = 1;
const OFFER: u8 = 2;
const REQUEST: u8 = 3;
const ACK: u8 = 5;
const NAK: u8 = 6;
/// Options: subnet mask, router, DNS, server identifier, message type, requested address,
/// parameter list, end.
const OPT_MASK: u8 = 1;
const OPT_ROUTER: u8 = 3;
const OPT_DNS: u8 = 6;
const OPT_REQUESTED: u8 = 50;
const OPT_TYPE: u8 = 53;
const OPT_SERVER: u8 = 54;
const OPT_PARAMS: u8 = 55;
const OPT_END: u8 = 255;
const OPT_PAD: u8 = 0;
/// Fixed fields before the options' magic cookie.
const FIXED: usize = 236;

/// A request: DISCOVER, or REQUEST for `requested` from `server`.
pub fn encode(kind: u8, xid: u32, mac: [u8; 6], requested: Option<(Ipv4Addr, Ipv4Addr)>) -> Vec<u8> {
    let mut m = vec![0u8; FIXED];
    m[0] = BOOTREQUEST;
    m[1] = 1; // Ethernet
    m[2] = 6;
    m[4..8].copy_from_slice(&xid.to_be_bytes());
    m[10..12].copy_from_slice(&0x8000u16.to_be_bytes()); // broadcast replies: no address yet
    m[28..34].copy_from_slice(&mac);
    m.extend(COOKIE);
    m.extend([OPT_TYPE, 1, kind]);
    if let Some((addr, server)) = requested {
        m.extend([OPT_REQUESTED, 4]);
        m.extend(addr.octets());
        m.extend([OPT_SERVER, 4]);
        m.extend(server.octets());
    }
    m.extend([OPT_PARAMS, 3, OPT_MASK, OPT_ROUTER, OPT_DNS, OPT_END]);
    m.resize(m.len().max(300), OPT_PAD); // BOOTP's minimum, which some servers insist on
    m
}

/// What a server's reply says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub kind: u8,
    pub addr: Ipv4Addr,
    pub server: Option<Ipv4Addr>,
    pub mask: Option<Ipv4Addr>,
    pub router: Option<Ipv4Addr>,
    pub dns: Option<Ipv4Addr>,
}

fn ip(b: &[u8]) -> Option<Ipv4Addr> {
    let b: [u8; 4] = b.get(..4)?.try_into().ok()?;
    Some(Ipv4Addr::from(b))
}

/// Decodes a reply to transaction `xid` from hardware address `mac`; `None` for anything
/// else (another client's, malformed, truncated).
pub fn decode(m: &[u8], xid: u32, mac: [u8; 6]) -> Option<Reply> {
    if m.len() < FIXED + 4 || m[0] != BOOTREPLY || m[4..8] != xid.to_be_bytes() || m[28..34] != mac || m[FIXED..FIXED + 4] != COOKIE {
        return None;
    }
    let mut reply = Reply { kind: 0, addr: ip(&m[16..20])?, server: None, mask: None, router: None, dns: None };
    let mut opts = &m[FIXED + 4..];
    while let Some((&code, rest)) = opts.split_first() {
        match code {
            OPT_PAD => opts = rest,
            OPT_END => break,
            _ => {
                let (&len, rest) = rest.split_first()?;
                let value = rest.get(..usize::from(len))?;
                match code {
                    OPT_TYPE => reply.kind = *value.first()?,
                    OPT_MASK => reply.mask = ip(value),
                    OPT_ROUTER => reply.router = ip(value),
                    OPT_DNS => reply.dns = ip(value),
                    OPT_SERVER => reply.server = ip(value),
                    _ => {}
                }
                opts = &rest[usize::from(len)..];
            }
        }
    }
    (reply.kind != 0).then_some(reply)
}

/// The configuration an ACK gives (a mask is required; DNS defaults to the router, as NATs
/// forward DNS there).
pub fn config(ack: &Reply) -> Option<NetConfig> {
    let mask = u32::from(ack.mask?);
    let prefix = mask.leading_ones();
    if mask.count_ones() != prefix {
        return None; // not a contiguous mask
    }
    let router = ack.router?;
    Some(NetConfig { addr: ack.addr, prefix: u8::try_from(prefix).ok()?, gateway: router, dns: ack.dns.unwrap_or(router) })
}

/// Takes a lease on `iface` (hardware address `mac`, already up), within `timeout`.
pub fn lease(iface: &str, mac: [u8; 6], timeout: Duration) -> Result<NetConfig> {
    let sock = UdpSocket::bind(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 68)).map_err(|e| Error::io("bind udp :68", e))?;
    sock.set_broadcast(true).map_err(|e| Error::io("SO_BROADCAST", e))?;
    // SAFETY: setsockopt with the interface name's bytes and their length, valid for the call.
    if unsafe {
        libc::setsockopt(sock.as_raw_fd(), libc::SOL_SOCKET, libc::SO_BINDTODEVICE, iface.as_ptr().cast(), iface.len() as libc::socklen_t)
    } < 0
    {
        return Err(Error::io("SO_BINDTODEVICE", std::io::Error::last_os_error()));
    }
    let deadline = Instant::now() + timeout;
    let xid = u32::from_be_bytes([mac[2], mac[3], mac[4], mac[5]]) ^ std::process::id().rotate_left(16) ^ 0x6b69_6c6e;
    let server = SocketAddrV4::new(Ipv4Addr::BROADCAST, 67);
    let exchange = |kind: u8, requested: Option<(Ipv4Addr, Ipv4Addr)>, want: u8| -> Result<Reply> {
        let msg = encode(kind, xid, mac, requested);
        let mut buf = [0u8; 1500];
        // Resend every second until an answer of the wanted kind (or a NAK) arrives.
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Error::msg(format!("no DHCP answer on {iface} within {timeout:?}")));
            }
            sock.send_to(&msg, server).map_err(|e| Error::io("send DHCP", e))?;
            let round = Instant::now() + left.min(Duration::from_secs(1));
            loop {
                let wait = round.saturating_duration_since(Instant::now());
                if wait.is_zero() {
                    break;
                }
                sock.set_read_timeout(Some(wait)).map_err(|e| Error::io("SO_RCVTIMEO", e))?;
                let n = match sock.recv(&mut buf) {
                    Ok(n) => n,
                    Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => break,
                    Err(e) => return Err(Error::io("receive DHCP", e)),
                };
                match decode(&buf[..n], xid, mac) {
                    Some(r) if r.kind == want => return Ok(r),
                    Some(r) if r.kind == NAK => return Err(Error::msg("the DHCP server refused the request (NAK)")),
                    _ => {}
                }
            }
        }
    };
    let offer = exchange(DISCOVER, None, OFFER)?;
    let server_id = offer.server.ok_or_else(|| Error::msg("DHCP offer without a server identifier"))?;
    let ack = exchange(REQUEST, Some((offer.addr, server_id)), ACK)?;
    config(&ack).ok_or_else(|| Error::msg(format!("DHCP lease without a usable subnet mask or router: {ack:?}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: [u8; 6] = [0x52, 0x54, 0, 0x12, 0x34, 0x56];

    /// A server's reply as slirp or vmnet would send it.
    fn reply(kind: u8, xid: u32, mac: [u8; 6]) -> Vec<u8> {
        let mut m = vec![0u8; FIXED];
        m[0] = BOOTREPLY;
        m[4..8].copy_from_slice(&xid.to_be_bytes());
        m[16..20].copy_from_slice(&[10, 0, 2, 15]);
        m[28..34].copy_from_slice(&mac);
        m.extend(COOKIE);
        m.extend([OPT_TYPE, 1, kind, OPT_SERVER, 4, 10, 0, 2, 2, OPT_MASK, 4, 255, 255, 255, 0, OPT_PAD]);
        m.extend([OPT_ROUTER, 8, 10, 0, 2, 2, 10, 0, 2, 9, OPT_DNS, 4, 10, 0, 2, 3, OPT_END]);
        m
    }

    #[test]
    fn a_discover_and_a_request_carry_what_servers_need() {
        let d = encode(DISCOVER, 7, MAC, None);
        assert_eq!((d[0], d[1], d[2], &d[4..8], &d[10..12], &d[28..34]), (1, 1, 6, &[0, 0, 0, 7][..], &[0x80, 0][..], &MAC[..]));
        assert_eq!(&d[FIXED..FIXED + 7], &[99, 130, 83, 99, OPT_TYPE, 1, DISCOVER]);
        assert_eq!(d.len(), 300);
        let r = encode(REQUEST, 7, MAC, Some((Ipv4Addr::new(10, 0, 2, 15), Ipv4Addr::new(10, 0, 2, 2))));
        assert_eq!(&r[FIXED + 4..FIXED + 19], &[OPT_TYPE, 1, REQUEST, OPT_REQUESTED, 4, 10, 0, 2, 15, OPT_SERVER, 4, 10, 0, 2, 2]);
    }

    #[test]
    fn an_ack_becomes_the_static_configuration() {
        let ack = decode(&reply(ACK, 9, MAC), 9, MAC).expect("ack");
        assert_eq!(ack.server, Some(Ipv4Addr::new(10, 0, 2, 2)));
        let cfg = config(&ack).expect("config");
        assert_eq!(cfg, NetConfig::parse("10.0.2.15/24,10.0.2.2,10.0.2.3").expect("parse"));
    }

    #[test]
    fn replies_for_others_and_hostile_replies_are_ignored() {
        assert_eq!(decode(&reply(ACK, 9, MAC), 10, MAC), None, "another transaction");
        assert_eq!(decode(&reply(ACK, 9, [1; 6]), 9, MAC), None, "another client");
        let full = reply(ACK, 9, MAC);
        for cut in [0, 100, FIXED + 2, full.len() - 3] {
            let _ = decode(&full[..cut], 9, MAC); // never panics
        }
        let mut long = reply(ACK, 9, MAC);
        let at = long.len() - 1;
        long[at] = OPT_DNS; // an option whose length runs past the end
        long.push(200);
        assert_eq!(decode(&long, 9, MAC), None, "an option running past the end");
        let mut holey = decode(&reply(ACK, 9, MAC), 9, MAC).expect("ack");
        holey.mask = Some(Ipv4Addr::new(255, 0, 255, 0));
        assert_eq!(config(&holey), None, "a non-contiguous mask");
    }
}
