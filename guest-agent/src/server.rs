//! Serving the protocol: one thread per request, so a long Run never blocks other calls.
//!
//! Maps each [`Request`] to its handler module and every failure to `Response::Error`; a
//! panicking handler (a bug) is caught and answered with an Error too, and the agent goes on.

use std::io::Read;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::sync::mpsc::Receiver;
use std::sync::OnceLock;
use std::time::Duration;

use kiln_protocol::mux::IncomingRequest;
use kiln_protocol::{Mux, Request, Response, PROTOCOL_VERSION};

use crate::error::{Context, Error, Result};
use crate::log::{debug, info};
use crate::reaper::Reaper;
use crate::{diff, forward, fresh, mounts, receive, run, udp};

/// What the agent does on `PowerOff` after answering.
pub type PowerOff = fn() -> !;

#[derive(Clone)]
pub struct Server {
    mux: Mux,
    reaper: Reaper,
    power_off: PowerOff,
}

impl Server {
    pub fn new(mux: Mux, reaper: Reaper, power_off: PowerOff) -> Self {
        Self {
            mux,
            reaper,
            power_off,
        }
    }

    /// Serves until the connection closes.
    pub fn serve(&self, requests: Receiver<IncomingRequest>) {
        for (id, req) in requests {
            let server = self.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("kiln-req-{id}"))
                .spawn(move || server.handle(id, req));
            if let Err(e) = spawned {
                let msg = format!("cannot start a thread for request {id}: {e}");
                info!("{msg}");
                let _ = self.mux.respond(id, &Response::Error { message: msg });
            }
        }
    }

    fn handle(&self, id: u32, req: Request) {
        let op = op_name(&req);
        debug!("request {id}: {op}");
        let is_power_off = matches!(req, Request::PowerOff);
        let started = std::time::Instant::now();
        let resp = match catch_unwind(AssertUnwindSafe(|| self.dispatch(req))) {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => Response::Error {
                message: e.to_string(),
            },
            Err(_) => Response::Error {
                message: format!("{op}: internal error (handler panicked; see the guest console)"),
            },
        };
        if let Response::Error { message } = &resp {
            info!("request {id} ({op}) failed: {message}");
        }
        debug!("request {id}: {op} done in {:?}", started.elapsed());
        if let Err(e) = self.mux.respond(id, &resp) {
            info!("request {id} ({op}): cannot send the answer: {e}");
        }
        if is_power_off && matches!(resp, Response::Done) {
            // Let the answer leave before the machine goes away.
            std::thread::sleep(Duration::from_millis(50));
            (self.power_off)();
        }
    }

    fn dispatch(&self, req: Request) -> Result<Response> {
        match req {
            Request::Hello { versions, entropy, now_ns } => {
                fresh::apply(entropy.as_deref(), now_ns)?;
                hello(&versions)
            }
            Request::ReceiveTar { dest, stream } => {
                let mut reader = self.mux.open_reader(stream);
                let result = receive::receive_tar(&mut reader, Path::new(&dest));
                if result.is_err() {
                    // Swallow the rest of the stream so the connection never stalls on it.
                    let _ = std::io::copy(&mut reader, &mut std::io::sink());
                }
                let entries =
                    result.map_err(|e| Error::msg(format!("receive tar into {dest}: {e}")))?;
                Ok(Response::TarReceived { entries })
            }
            Request::MakeDirs { paths } => mounts::make_dirs(&paths).map(|()| Response::Done),
            Request::MountOverlay {
                lowers,
                upper,
                work,
                target,
            } => mounts::mount_overlay(&lowers, &upper, &work, &target).map(|()| Response::Done),
            Request::MountShare { tag, target, readonly, copy_up, virtiofs } => mounts::mount_share(&tag, &target, readonly, copy_up.as_ref(), virtiofs).map(|()| Response::Done),
            Request::Unmount { target } => mounts::unmount(&target).map(|()| Response::Done),
            Request::ForwardListen {
                path,
                mode,
                uid,
                gid,
            } => forward::listen(&path, mode, uid, gid).map(|()| Response::Done),
            Request::ForwardAccept {
                path,
                to_guest,
                from_guest,
            } => forward::accept(&self.mux, &path, to_guest, from_guest),
            Request::ConnectTcp { port, to_guest, from_guest } => {
                let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
                let conn = std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_secs(10))
                    .map_err(|e| Error::io(format!("connect to port {port} in the container"), e))?;
                // A container that stops reading must not stall the connection to the host.
                let _ = conn.set_write_timeout(Some(std::time::Duration::from_secs(60)));
                forward::pump(&self.mux, conn, to_guest, from_guest, &format!("tcp:{port}"))?;
                Ok(Response::Accepted { connected: true })
            }
            Request::ConnectUdp { port, to_guest, from_guest } => udp::connect(&self.mux, port, to_guest, from_guest).map(|()| Response::Accepted { connected: true }),
            Request::ForwardClose { path } => forward::close(&path).map(|()| Response::Done),
            Request::Run(spec) => run::run(&self.mux, &self.reaper, &spec),
            Request::Signal { run, signal } => run::control::signal(run, signal).map(|()| Response::Done),
            Request::WaitStarted { run } => run::control::wait_started(run).map(|pid| Response::Started { pid }),
            Request::Resize { run, rows, cols } => run::control::resize(run, rows, cols).map(|()| Response::Done),
            Request::Diff {
                upper,
                stream,
                clamp_mtime,
                lowers,
            } => {
                let lowers: Vec<std::path::PathBuf> =
                    lowers.iter().map(std::path::PathBuf::from).collect();
                let mut writer =
                    std::io::BufWriter::with_capacity(64 * 1024, self.mux.open_writer(stream));
                match diff::write_diff(Path::new(&upper), &lowers, &mut writer, clamp_mtime) {
                    Ok(entries) => {
                        let w = writer.into_inner().map_err(|e| {
                            Error::io(format!("diff {upper}: flush"), e.into_error())
                        })?;
                        w.finish().ctx(|| format!("diff {upper}: end stream"))?;
                        Ok(Response::Diffed { entries })
                    }
                    Err(e) => {
                        let message = format!("diff {upper}: {e}");
                        if let Ok(w) = writer.into_inner() {
                            w.abort(&message);
                        }
                        Err(Error::msg(message))
                    }
                }
            }
            Request::RegisterBinfmt {
                name,
                magic,
                mask,
                interpreter,
            } => crate::binfmt::register(&name, &magic, &mask, &interpreter).map(|()| Response::Done),
            Request::PowerOff => {
                nix::unistd::sync();
                Ok(Response::Done)
            }
            Request::Ping => Ok(Response::Done),
            Request::DenyHost => crate::net::deny_host().map(|()| Response::Done),
        }
    }
}

fn op_name(req: &Request) -> &'static str {
    match req {
        Request::Hello { .. } => "hello",
        Request::ReceiveTar { .. } => "receive_tar",
        Request::MakeDirs { .. } => "make_dirs",
        Request::MountOverlay { .. } => "mount_overlay",
        Request::Unmount { .. } => "unmount",
        Request::ForwardListen { .. } => "forward_listen",
        Request::ForwardAccept { .. } => "forward_accept",
        Request::ForwardClose { .. } => "forward_close",
        Request::Run(_) => "run",
        Request::Diff { .. } => "diff",
        Request::RegisterBinfmt { .. } => "register_binfmt",
        Request::PowerOff => "power_off",
        Request::Ping => "ping",
        Request::DenyHost => "deny_host",
        Request::Signal { .. } => "signal",
        Request::Resize { .. } => "resize",
        Request::WaitStarted { .. } => "wait_started",
        Request::ConnectTcp { .. } => "connect_tcp",
        Request::ConnectUdp { .. } => "connect_udp",
        Request::MountShare { .. } => "mount_share",
    }
}

/// Highest version both sides speak.
pub fn negotiate(offered: &[u32]) -> Option<u32> {
    offered
        .iter()
        .copied()
        .filter(|v| *v >= 1 && *v <= PROTOCOL_VERSION)
        .max()
}

fn hello(versions: &[u32]) -> Result<Response> {
    let version = negotiate(versions).ok_or_else(|| {
        Error::msg(format!("hello: no shared protocol version (host offers {versions:?}, agent speaks 1..={PROTOCOL_VERSION})"))
    })?;
    Ok(Response::Hello {
        version,
        kernel: kernel_release(),
        agent_build_id: build_id().to_string(),
    })
}

fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

/// `<crate version>+<short hash of /proc/self/exe>`, computed once (call it early from a
/// background thread so the first Hello does not pay for hashing the binary).
pub fn build_id() -> &'static str {
    static ID: OnceLock<String> = OnceLock::new();
    ID.get_or_init(|| {
        let hash = std::fs::File::open("/proc/self/exe").and_then(|mut f| {
            let mut h = Fnv64::default();
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                let n = f.read(&mut buf)?;
                if n == 0 {
                    return Ok(h.0);
                }
                h.update(&buf[..n]);
            }
        });
        match hash {
            Ok(h) => format!("{}+{:012x}", env!("CARGO_PKG_VERSION"), h >> 16),
            Err(_) => format!("{}+unknown", env!("CARGO_PKG_VERSION")),
        }
    })
}

/// FNV-1a 64: enough to tell agent builds apart (not a security hash).
struct Fnv64(u64);

impl Default for Fnv64 {
    fn default() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv64 {
    fn update(&mut self, data: &[u8]) {
        for b in data {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiation_picks_highest_shared() {
        assert_eq!(negotiate(&[1, 7]), Some(1));
        assert_eq!(negotiate(&[0, 9]), None);
        assert_eq!(negotiate(&[]), None);
    }

    #[test]
    fn hello_reports_version_and_build() {
        match hello(&[1]).expect("hello") {
            Response::Hello {
                version,
                agent_build_id,
                ..
            } => {
                assert_eq!(version, 1);
                assert!(agent_build_id.starts_with(concat!(env!("CARGO_PKG_VERSION"), "+")));
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(matches!(hello(&[1, 2, 3]), Ok(Response::Hello { version: 3, .. })));
        let current = kiln_protocol::PROTOCOL_VERSION;
        assert!(matches!(hello(&[2, current]), Ok(Response::Hello { version, .. }) if version == current));
        assert!(hello(&[current + 1]).is_err());
    }
}
