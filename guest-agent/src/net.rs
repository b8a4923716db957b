//! The guest's network: its interface from `kiln.net=`, and the `/etc/hosts` and
//! `/etc/resolv.conf` every Run gets.
//!
//! The host passes the addresses of its user-mode NAT on the command line
//! (`kiln.net=ADDR/PREFIX,GATEWAY,DNS`, QEMU's slirp: `10.0.2.15/24,10.0.2.2,10.0.2.3`), or
//! `kiln.net=dhcp` where the NAT assigns them (Virtualization.framework; see [`crate::dhcp`]).
//! The agent configures the first non-loopback interface with ioctls (address, netmask, up,
//! default route). Without `kiln.net=` (or without a network device) the guest has loopback
//! only and a RUN that needs the network fails as it would offline.
//!
//! Like BuildKit, each Run gets its own copies of `hosts` and `resolv.conf`, bind-mounted over
//! the image's files (or onto stubs that are removed again), so a step can edit them without
//! touching its layer or other steps. `host.docker.internal` (and `host.kiln.internal`) name
//! the host, as on Docker Desktop.

use std::fs;
use std::mem::size_of;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use kiln_protocol::RunMount;

use crate::error::{Context, Error, Result};

/// Where the agent keeps the network files (a tmpfs in the guest).
pub const NET_DIR: &str = "/run/kiln/net";

/// Addresses from `kiln.net=`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetConfig {
    pub addr: Ipv4Addr,
    pub prefix: u8,
    pub gateway: Ipv4Addr,
    pub dns: Ipv4Addr,
}

impl NetConfig {
    /// Parses `ADDR/PREFIX,GATEWAY,DNS`.
    pub fn parse(value: &str) -> std::result::Result<Self, String> {
        let bad = || format!("kiln.net={value}: expected ADDR/PREFIX,GATEWAY,DNS");
        let mut parts = value.split(',');
        let (addr, prefix) = parts.next().and_then(|a| a.split_once('/')).ok_or_else(bad)?;
        let ip = |s: Option<&str>| s.and_then(|s| s.parse::<Ipv4Addr>().ok()).ok_or_else(bad);
        let cfg = Self {
            addr: ip(Some(addr))?,
            prefix: prefix.parse().ok().filter(|p| *p <= 32).ok_or_else(bad)?,
            gateway: ip(parts.next())?,
            dns: ip(parts.next())?,
        };
        if parts.next().is_some() {
            return Err(bad());
        }
        Ok(cfg)
    }

    fn netmask(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::MAX.checked_shl(32 - u32::from(self.prefix)).unwrap_or(0))
    }
}

/// What `kiln.net=` asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetSetting {
    /// `ADDR/PREFIX,GATEWAY,DNS`.
    Static(NetConfig),
    /// `dhcp`: a lease from the NAT's DHCP server.
    Dhcp,
}

impl NetSetting {
    /// Parses `dhcp` or `ADDR/PREFIX,GATEWAY,DNS`.
    pub fn parse(value: &str) -> std::result::Result<Self, String> {
        if value == "dhcp" {
            return Ok(Self::Dhcp);
        }
        NetConfig::parse(value).map(Self::Static)
    }
}

/// How long a DHCP exchange may take (slow under TCG, instant on a real NAT).
const DHCP_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(20);

/// The `hosts` file for Runs.
pub fn hosts_file(cfg: Option<&NetConfig>) -> String {
    let mut text = String::from("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n");
    if let Some(c) = cfg {
        text.push_str(&format!("{}\thost.docker.internal host.kiln.internal\n", c.gateway));
    }
    text
}

/// The `resolv.conf` file for Runs (empty without a network: lookups fail at once).
pub fn resolv_file(cfg: Option<&NetConfig>) -> String {
    cfg.map(|c| format!("nameserver {}\n", c.dns)).unwrap_or_default()
}

/// The host's address in the guest (the gateway), once the network is set up.
static HOST: std::sync::OnceLock<Ipv4Addr> = std::sync::OnceLock::new();

/// Set by [`deny_host`]: processes started from then on run without CAP_NET_ADMIN and
/// CAP_NET_RAW, so not even a root process can take the route away or go around it.
static HOST_DENIED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Whether [`deny_host`] is in force.
pub fn host_denied() -> bool {
    HOST_DENIED.load(Ordering::SeqCst)
}

/// Configures the interface as `setting` says (taking a DHCP lease first for `dhcp`) and
/// writes the network files into [`NET_DIR`] (loopback-only ones when that fails).
pub fn setup(setting: Option<&NetSetting>) -> Result<()> {
    let resolved = match setting {
        None => Ok(None),
        Some(NetSetting::Static(cfg)) => Ok(Some(cfg.clone())),
        Some(NetSetting::Dhcp) => dhcp_lease().map(Some),
    };
    let cfg = match resolved {
        Ok(cfg) => cfg,
        Err(e) => {
            write_files(Path::new(NET_DIR), None)?;
            return Err(e);
        }
    };
    write_files(Path::new(NET_DIR), cfg.as_ref())?;
    if let Some(cfg) = cfg {
        let _ = HOST.set(cfg.gateway);
        let iface = first_interface()?;
        configure(&iface, &cfg)
            .map_err(|e| Error::msg(format!("configure {iface} as {}/{}: {e}", cfg.addr, cfg.prefix)))?;
        crate::log::debug!("network: {iface} {}/{} via {}", cfg.addr, cfg.prefix, cfg.gateway);
    }
    Ok(())
}

/// Brings the first interface up and takes a lease on it.
fn dhcp_lease() -> Result<NetConfig> {
    let iface = first_interface()?;
    let text = fs::read_to_string(format!("/sys/class/net/{iface}/address")).ctx(|| format!("read {iface}'s address"))?;
    let mut mac = [0u8; 6];
    let bytes: Vec<u8> = text.trim().split(':').filter_map(|b| u8::from_str_radix(b, 16).ok()).collect();
    if bytes.len() != 6 {
        return Err(Error::msg(format!("{iface} has no Ethernet address ({:?})", text.trim())));
    }
    mac.copy_from_slice(&bytes);
    let sock = inet_socket()?;
    set_up(&sock, &iface)?;
    crate::dhcp::lease(&iface, mac, DHCP_TIMEOUT).map_err(|e| Error::msg(format!("DHCP on {iface}: {e}")))
}

fn inet_socket() -> Result<OwnedFd> {
    // SAFETY: plain socket(2) call; the result is checked and wrapped at once.
    let raw = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if raw < 0 {
        return Err(Error::io("socket(AF_INET)", std::io::Error::last_os_error()));
    }
    // SAFETY: `raw` is a fresh descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

/// Sets `iface` up (and running).
fn set_up(sock: &OwnedFd, iface: &str) -> Result<()> {
    let mut req = ifreq(iface)?;
    ioctl(sock, libc::SIOCGIFFLAGS, &mut req, "ioctl SIOCGIFFLAGS")?;
    // SAFETY: SIOCGIFFLAGS filled in the ifru_flags member of the union.
    unsafe { req.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short };
    ioctl(sock, libc::SIOCSIFFLAGS, &mut req, "ioctl SIOCSIFFLAGS up")
}

fn write_files(dir: &Path, cfg: Option<&NetConfig>) -> Result<()> {
    fs::create_dir_all(dir).ctx(|| format!("mkdir {}", dir.display()))?;
    for (name, text) in [("hosts", hosts_file(cfg)), ("resolv.conf", resolv_file(cfg))] {
        let path = dir.join(name);
        fs::write(&path, text).ctx(|| format!("write {}", path.display()))?;
    }
    Ok(())
}

/// The first interface that is not `lo`, in name order.
fn first_interface() -> Result<String> {
    let mut names: Vec<String> = fs::read_dir("/sys/class/net")
        .ctx(|| "read /sys/class/net".to_string())?
        .filter_map(|e| e.ok().and_then(|e| e.file_name().into_string().ok()))
        .filter(|n| n != "lo")
        .collect();
    names.sort();
    names
        .into_iter()
        .next()
        .ok_or_else(|| Error::msg("kiln.net= given but the guest has no network interface"))
}

fn sockaddr(ip: Ipv4Addr) -> libc::sockaddr {
    let sin = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from(ip).to_be(),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: sockaddr_in and sockaddr have the same size (16 bytes) on Linux, and both are
    // plain old data; the kernel reads a sockaddr_in back out of it for AF_INET.
    unsafe { std::mem::transmute::<libc::sockaddr_in, libc::sockaddr>(sin) }
}

fn ifreq(name: &str) -> Result<libc::ifreq> {
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    if name.len() >= req.ifr_name.len() {
        return Err(Error::msg(format!("interface name {name:?} too long")));
    }
    for (dst, src) in req.ifr_name.iter_mut().zip(name.bytes()) {
        *dst = src as libc::c_char;
    }
    Ok(req)
}

fn ioctl<T>(sock: &OwnedFd, request: libc::c_ulong, arg: &mut T, what: &str) -> Result<()> {
    // SAFETY: every caller passes the argument type its request expects (ifreq or rtentry),
    // owned by the caller for the duration of the call; the fd is valid.
    if unsafe { libc::ioctl(sock.as_raw_fd(), request, arg as *mut T) } < 0 {
        return Err(Error::io(what.to_string(), std::io::Error::last_os_error()));
    }
    Ok(())
}

fn configure(iface: &str, cfg: &NetConfig) -> Result<()> {
    let sock = inet_socket()?;

    let mut req = ifreq(iface)?;
    req.ifr_ifru.ifru_addr = sockaddr(cfg.addr);
    ioctl(&sock, libc::SIOCSIFADDR, &mut req, "ioctl SIOCSIFADDR")?;
    let mut req = ifreq(iface)?;
    req.ifr_ifru.ifru_netmask = sockaddr(cfg.netmask());
    ioctl(&sock, libc::SIOCSIFNETMASK, &mut req, "ioctl SIOCSIFNETMASK")?;
    set_up(&sock, iface)?;

    // SAFETY: rtentry is plain old data; all-zero is a valid value (null rt_dev: any device).
    let mut route: libc::rtentry = unsafe { std::mem::zeroed() };
    route.rt_dst = sockaddr(Ipv4Addr::UNSPECIFIED);
    route.rt_genmask = sockaddr(Ipv4Addr::UNSPECIFIED);
    route.rt_gateway = sockaddr(cfg.gateway);
    route.rt_flags = libc::RTF_UP | libc::RTF_GATEWAY;
    ioctl(&sock, libc::SIOCADDRT, &mut route, "ioctl SIOCADDRT default route")?;
    debug_assert_eq!(size_of::<libc::sockaddr_in>(), size_of::<libc::sockaddr>());
    Ok(())
}

/// `DenyHost`: connections to the host's own address (its loopback services, which QEMU's
/// user-mode NAT serves there) are refused from now on, by an unreachable route for that one
/// address; the default route through it (added before, its next hop already resolved) still
/// carries everything else. Without a network there is nothing to do.
pub fn deny_host() -> Result<()> {
    let Some(host) = HOST.get() else { return Ok(()) };
    HOST_DENIED.store(true, Ordering::SeqCst);
    // SAFETY: socket(2) with constant arguments; the result is checked.
    let raw = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if raw < 0 {
        return Err(Error::io("socket(AF_INET)", std::io::Error::last_os_error()));
    }
    // SAFETY: `raw` is a fresh descriptor nobody else owns.
    let sock = unsafe { OwnedFd::from_raw_fd(raw) };
    // SAFETY: rtentry is plain old data; all-zero is a valid value.
    let mut route: libc::rtentry = unsafe { std::mem::zeroed() };
    route.rt_dst = sockaddr(*host);
    route.rt_genmask = sockaddr(Ipv4Addr::BROADCAST);
    route.rt_flags = libc::RTF_UP | libc::RTF_HOST | libc::RTF_REJECT;
    // SAFETY: SIOCADDRT takes an rtentry, owned here for the call; the fd is valid.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCADDRT, &mut route as *mut libc::rtentry) } < 0 {
        let e = std::io::Error::last_os_error();
        // Denied already (a second request): nothing more to do.
        if e.raw_os_error() != Some(libc::EEXIST) {
            return Err(Error::io("ioctl SIOCADDRT unreachable route to the host", e));
        }
    }
    Ok(())
}

/// One Run's copies of the network files, removed on drop.
#[derive(Debug)]
pub struct RunFiles {
    dir: PathBuf,
}

impl Drop for RunFiles {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

impl RunFiles {
    /// Copies `hosts` and `resolv.conf` from `net_dir` for one Run; `None` when the agent has
    /// no network files there (tests on a host). The mounts go first in the Run's list so the
    /// step's own mounts can still cover them.
    pub fn prepare(net_dir: &Path) -> Result<Option<(Self, Vec<RunMount>)>> {
        if !net_dir.join("hosts").is_file() {
            return Ok(None);
        }
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let dir = net_dir.join(format!("run-{}", NEXT.fetch_add(1, Ordering::Relaxed)));
        fs::create_dir_all(&dir).ctx(|| format!("mkdir {}", dir.display()))?;
        let files = Self { dir };
        let mut mounts = Vec::new();
        for (name, target) in [("hosts", "/etc/hosts"), ("resolv.conf", "/etc/resolv.conf")] {
            let copy = files.dir.join(name);
            fs::copy(net_dir.join(name), &copy).ctx(|| format!("copy {name} to {}", copy.display()))?;
            mounts.push(RunMount::Bind {
                target: target.into(),
                source: copy.display().to_string(),
                readonly: false,
            });
        }
        Ok(Some((files, mounts)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_command_line_value() {
        let c = NetConfig::parse("10.0.2.15/24,10.0.2.2,10.0.2.3").expect("parse");
        assert_eq!(c.addr, Ipv4Addr::new(10, 0, 2, 15));
        assert_eq!(c.netmask(), Ipv4Addr::new(255, 255, 255, 0));
        assert_eq!(c.gateway, Ipv4Addr::new(10, 0, 2, 2));
        assert_eq!(c.dns, Ipv4Addr::new(10, 0, 2, 3));
        let zero = NetConfig::parse("10.0.2.15/0,10.0.2.2,10.0.2.3").expect("parse");
        assert_eq!(zero.netmask(), Ipv4Addr::UNSPECIFIED);
        for bad in ["", "10.0.2.15,10.0.2.2,10.0.2.3", "10.0.2.15/33,1.1.1.1,1.1.1.1", "1.2.3.4/8,x,1.1.1.1", "1.2.3.4/8,1.1.1.1", "1.2.3.4/8,1.1.1.1,1.1.1.1,1.1.1.1"] {
            assert!(NetConfig::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn files_name_the_host_only_with_a_network() {
        let c = NetConfig::parse("10.0.2.15/24,10.0.2.2,10.0.2.3").expect("parse");
        assert!(hosts_file(Some(&c)).contains("10.0.2.2\thost.docker.internal"));
        assert!(!hosts_file(None).contains("host.docker.internal"));
        assert!(hosts_file(None).starts_with("127.0.0.1\tlocalhost\n"));
        assert_eq!(resolv_file(Some(&c)), "nameserver 10.0.2.3\n");
        assert_eq!(resolv_file(None), "");
    }

    #[test]
    fn run_files_are_private_copies_removed_on_drop() {
        let dir = tempfile_dir("netfiles");
        assert!(RunFiles::prepare(&dir).expect("prepare").is_none());
        write_files(&dir, None).expect("write");
        let (files, mounts) = RunFiles::prepare(&dir).expect("prepare").expect("some");
        let copy = files.dir.clone();
        assert_eq!(mounts.len(), 2);
        assert_eq!(mounts[0].target(), "/etc/hosts");
        assert_eq!(fs::read_to_string(copy.join("hosts")).expect("read"), hosts_file(None));
        drop(files);
        assert!(!copy.exists());
        let _ = fs::remove_dir_all(&dir);
    }

    fn tempfile_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("kiln-agent-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }
}
