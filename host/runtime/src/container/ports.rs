//! Published ports (`-p [IP:][HOSTPORT:]PORT[/tcp|udp]`, ranges, `-P`): kiln listens on the
//! host address given (0.0.0.0 by default, as Docker) and carries each connection to the port
//! on the guest's loopback over the agent connection: no root, no tap device, the same under
//! every backend. UDP ports are carried as flows per client ([`super::udp`]). Sockets are
//! bound before the guest boots, so a port already taken fails the start at once with nothing
//! left behind.

use std::net::{IpAddr, SocketAddr, TcpListener, UdpSocket};

use serde::{Deserialize, Serialize};

use kiln_sandbox::AgentClient;

use crate::RuntimeError;

/// One published port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortMapping {
    pub host_ip: String,
    /// 0: any free port (chosen when bound).
    pub host_port: u16,
    pub container_port: u16,
    pub proto: String,
}

impl PortMapping {
    /// Docker's `0.0.0.0:8080->80/tcp`.
    pub fn describe(&self) -> String {
        format!("{}:{}->{}/{}", self.host_ip, self.host_port, self.container_port, self.proto)
    }
}

fn bad(spec: &str, why: &str) -> RuntimeError {
    RuntimeError::Invalid(format!("invalid -p {spec:?}: {why}"))
}

fn port_range(text: &str, spec: &str) -> Result<(u16, u16), RuntimeError> {
    let num = |t: &str| t.parse::<u16>().ok().filter(|p| *p > 0).ok_or_else(|| bad(spec, &format!("{t:?} is not a port (1-65535)")));
    match text.split_once('-') {
        Some((a, b)) => {
            let (a, b) = (num(a)?, num(b)?);
            if b < a {
                return Err(bad(spec, "the range ends before it starts"));
            }
            Ok((a, b))
        }
        None => {
            let p = num(text)?;
            Ok((p, p))
        }
    }
}

/// Parses one `-p` value into its mappings (a range gives several).
pub fn parse_publish(spec: &str) -> Result<Vec<PortMapping>, RuntimeError> {
    let (addr, proto) = match spec.rsplit_once('/') {
        Some((a, p)) => (a, p.to_ascii_lowercase()),
        None => (spec, "tcp".to_string()),
    };
    match proto.as_str() {
        "tcp" | "udp" => {}
        "sctp" => return Err(bad(spec, "sctp ports are not supported (tcp or udp)")),
        other => return Err(bad(spec, &format!("unknown protocol {other}"))),
    }
    // An IPv6 address is bracketed: [::1]:8080:80.
    let (ip, rest) = if let Some(r) = addr.strip_prefix('[') {
        let (ip, rest) = r.split_once(']').ok_or_else(|| bad(spec, "unclosed ["))?;
        (Some(ip.to_string()), rest.strip_prefix(':').ok_or_else(|| bad(spec, "expected :HOSTPORT:PORT after the address"))?)
    } else {
        let parts: Vec<&str> = addr.split(':').collect();
        match parts.len() {
            1 | 2 => (None, addr),
            3 => (Some(parts[0].to_string()), &addr[parts[0].len() + 1..]),
            _ => return Err(bad(spec, "expected [IP:][HOSTPORT:]PORT")),
        }
    };
    let host_ip = match ip {
        Some(ip) if !ip.is_empty() => {
            ip.parse::<IpAddr>().map_err(|_| bad(spec, &format!("{ip:?} is not an IP address")))?;
            ip
        }
        _ => "0.0.0.0".to_string(),
    };
    let (host, container) = match rest.split_once(':') {
        Some((h, c)) => (h, c),
        None => ("", rest),
    };
    let (c0, c1) = port_range(container, spec)?;
    let hosts = if host.is_empty() { None } else { Some(port_range(host, spec)?) };
    if let Some((h0, h1)) = hosts {
        if h1 - h0 != c1 - c0 {
            return Err(bad(spec, "the host and container port ranges differ in length"));
        }
    }
    Ok((c0..=c1)
        .enumerate()
        .map(|(i, port)| PortMapping {
            host_ip: host_ip.clone(),
            host_port: hosts.map_or(0, |(h0, _)| h0 + i as u16),
            container_port: port,
            proto: proto.clone(),
        })
        .collect())
}

/// `-P`: every port the image EXPOSEs (`80/tcp`), on a free host port.
pub fn exposed(ports: &[String]) -> Result<Vec<PortMapping>, RuntimeError> {
    let mut out = Vec::new();
    for p in ports {
        let (port, proto) = p.split_once('/').unwrap_or((p, "tcp"));
        let proto = proto.to_ascii_lowercase();
        if proto != "tcp" && proto != "udp" {
            continue; // sctp is not carried
        }
        let (a, b) = port_range(port, p)?;
        out.extend((a..=b).map(|c| PortMapping { host_ip: "0.0.0.0".into(), host_port: 0, container_port: c, proto: proto.clone() }));
    }
    Ok(out)
}

/// A published port's host side, bound.
#[derive(Debug)]
pub enum Bound {
    Tcp(TcpListener),
    Udp(UdpSocket),
}

/// Binds every mapping's host side; returns the sockets with the ports actually bound.
pub fn bind(mappings: &[PortMapping]) -> Result<Vec<(PortMapping, Bound)>, RuntimeError> {
    let mut out = Vec::new();
    for m in mappings {
        let ip: IpAddr = m.host_ip.parse().map_err(|_| RuntimeError::Invalid(format!("bad host address {}", m.host_ip)))?;
        let addr = SocketAddr::new(ip, m.host_port);
        let bound = if m.proto == "udp" { UdpSocket::bind(addr).map(Bound::Udp) } else { TcpListener::bind(addr).map(Bound::Tcp) };
        let bound = bound.map_err(|e| {
            let why = if e.kind() == std::io::ErrorKind::AddrInUse { "the port is already allocated".to_string() } else { e.to_string() };
            RuntimeError::Conflict(format!("publishing {}:{} -> {}/{}: {why}", m.host_ip, m.host_port, m.container_port, m.proto))
        })?;
        let local = match &bound {
            Bound::Tcp(l) => l.local_addr(),
            Bound::Udp(s) => s.local_addr(),
        };
        let port = local.map_err(|e| RuntimeError::io("reading a bound port", e))?.port();
        out.push((PortMapping { host_port: port, ..m.clone() }, bound));
    }
    Ok(out)
}

/// Connections being set up at once per published port (each asks the agent to connect);
/// more wait in the listener's backlog. Threads are started with `Builder`, so running out of
/// them drops one connection, never the listener.
const MAX_CONNECTIONS: usize = 256;

/// How long a write to a client that stopped reading may block before it is cut: the agent
/// connection is shared by every stream of the container.
const STALLED_PEER: std::time::Duration = std::time::Duration::from_secs(60);

/// Carries every connection to the bound ports into the guest, each listener on a thread,
/// for the life of this process.
pub fn serve(agent: &AgentClient, bound: Vec<(PortMapping, Bound)>) {
    for (m, bound) in bound {
        let agent = agent.clone();
        let listener = match bound {
            Bound::Tcp(l) => l,
            Bound::Udp(sock) => {
                super::udp::serve(agent, m.container_port, sock);
                continue;
            }
        };
        let open = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        std::thread::spawn(move || {
            use std::sync::atomic::Ordering;
            for conn in listener.incoming().flatten() {
                while open.load(Ordering::SeqCst) >= MAX_CONNECTIONS {
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                let _ = conn.set_write_timeout(Some(STALLED_PEER));
                let (agent, counted) = (agent.clone(), open.clone());
                let port = m.container_port;
                open.fetch_add(1, Ordering::SeqCst);
                // Refused inside (nothing listens yet): the connection just closes, as Docker's.
                let spawned = std::thread::Builder::new().name("kiln-port".into()).spawn(move || {
                    let _ = agent.connect_tcp(port, conn);
                    counted.fetch_sub(1, Ordering::SeqCst);
                });
                if spawned.is_err() {
                    open.fetch_sub(1, Ordering::SeqCst);
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(ip: &str, host: u16, c: u16) -> PortMapping {
        PortMapping { host_ip: ip.into(), host_port: host, container_port: c, proto: "tcp".into() }
    }

    #[test]
    fn docker_publish_forms() {
        assert_eq!(parse_publish("80").expect("80"), [m("0.0.0.0", 0, 80)]);
        assert_eq!(parse_publish("8080:80").expect("8080:80"), [m("0.0.0.0", 8080, 80)]);
        assert_eq!(parse_publish("127.0.0.1:8080:80/tcp").expect("ip"), [m("127.0.0.1", 8080, 80)]);
        assert_eq!(parse_publish("127.0.0.1::80").expect("any port"), [m("127.0.0.1", 0, 80)]);
        assert_eq!(parse_publish("[::1]:8080:80").expect("v6"), [m("::1", 8080, 80)]);
        assert_eq!(parse_publish("8000-8002:9000-9002").expect("range"), [m("0.0.0.0", 8000, 9000), m("0.0.0.0", 8001, 9001), m("0.0.0.0", 8002, 9002)]);
        for bad in ["", "0", "70000", "a:80", "8000-8001:80", "80/sctp", "80/xyz", "1.2.3:80:80", "9-8:9-8", "1:2:3:4"] {
            assert!(parse_publish(bad).is_err(), "{bad:?} should be refused");
        }
        assert_eq!(parse_publish("5353:53/udp").expect("udp")[0].proto, "udp");
        assert_eq!(exposed(&["80/tcp".into(), "53/udp".into(), "8000-8001".into(), "9/sctp".into()]).expect("exposed").len(), 4);
    }

    #[test]
    fn a_taken_port_is_a_clear_error() {
        let taken = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = taken.local_addr().expect("addr").port();
        let err = bind(&[m("127.0.0.1", port, 80)]).expect_err("taken");
        assert!(err.to_string().contains("already allocated"), "{err}");
        let any = bind(&[m("127.0.0.1", 0, 80)]).expect("free port");
        assert_ne!(any[0].0.host_port, 0);
        let udp = UdpSocket::bind("127.0.0.1:0").expect("bind udp");
        let uport = udp.local_addr().expect("addr").port();
        let err = bind(&[PortMapping { proto: "udp".into(), ..m("127.0.0.1", uport, 53) }]).expect_err("udp taken");
        assert!(err.to_string().contains("already allocated"), "{err}");
    }
}
