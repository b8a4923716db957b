//! PID-1 duties: the minimal system setup a bare initramfs needs before the agent can serve.
//!
//! Mounts the pseudo filesystems, points fds 0-2 at the console (an initramfs without
//! `/dev/console` starts init with no fds at all: the first file opened would otherwise become
//! stdout and stray writes would corrupt the protocol channel), brings up `lo`, and powers the
//! machine off. It never exits the process: PID 1 exiting panics the kernel.

use std::collections::HashSet;
use std::fs;
use std::os::fd::AsRawFd;
use std::os::unix::fs::DirBuilderExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use nix::mount::{mount, MsFlags};

use crate::error::{Context, Error, Result};
use crate::log::info;

struct PseudoFs {
    source: &'static str,
    target: &'static str,
    fstype: &'static str,
    flags: MsFlags,
    data: Option<&'static str>,
}

fn pseudo_filesystems() -> [PseudoFs; 7] {
    let nosuid_nodev = MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
    [
        PseudoFs {
            source: "proc",
            target: "/proc",
            fstype: "proc",
            flags: nosuid_nodev | MsFlags::MS_NOEXEC,
            data: None,
        },
        PseudoFs {
            source: "sysfs",
            target: "/sys",
            fstype: "sysfs",
            flags: nosuid_nodev | MsFlags::MS_NOEXEC,
            data: None,
        },
        PseudoFs {
            source: "devtmpfs",
            target: "/dev",
            fstype: "devtmpfs",
            flags: MsFlags::MS_NOSUID,
            data: Some("mode=0755"),
        },
        PseudoFs {
            source: "devpts",
            target: "/dev/pts",
            fstype: "devpts",
            flags: MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
            data: Some("gid=5,mode=0620,ptmxmode=0666"),
        },
        PseudoFs {
            source: "shm",
            target: "/dev/shm",
            fstype: "tmpfs",
            flags: nosuid_nodev,
            data: Some("mode=1777"),
        },
        PseudoFs {
            source: "tmpfs",
            target: "/tmp",
            fstype: "tmpfs",
            flags: nosuid_nodev,
            data: Some("mode=1777"),
        },
        PseudoFs {
            source: "tmpfs",
            target: "/run",
            fstype: "tmpfs",
            flags: nosuid_nodev,
            data: Some("mode=0755"),
        },
    ]
}

/// Mount points already in use, from `/proc/self/mounts` (empty if proc is not mounted yet).
fn mounted_targets() -> HashSet<String> {
    fs::read_to_string("/proc/self/mounts")
        .map(|text| {
            text.lines()
                .filter_map(|l| l.split(' ').nth(1))
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// Mounts everything in [`pseudo_filesystems`] that is not mounted yet, then sets up fds 0-2
/// and `lo`. Failures of optional parts are logged, not fatal.
pub fn setup_system() -> Result<()> {
    for pfs in pseudo_filesystems() {
        // Re-read each time: mounting /proc is what makes the list readable at all.
        if mounted_targets().contains(pfs.target) {
            continue;
        }
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(pfs.target)
            .ctx(|| format!("mkdir {}", pfs.target))?;
        let res = mount(
            Some(pfs.source),
            pfs.target,
            Some(pfs.fstype),
            pfs.flags,
            pfs.data,
        )
        .ctx(|| format!("mount {} on {}", pfs.fstype, pfs.target));
        match res {
            Ok(()) => {}
            // /proc, /sys and /dev are essential; the rest only degrades RUN steps.
            Err(e) if matches!(pfs.target, "/proc" | "/sys" | "/dev") => return Err(e),
            Err(e) => info!("{e} (continuing)"),
        }
    }
    setup_std_fds();
    if let Err(e) = bring_up_loopback() {
        info!("{e} (continuing without loopback)");
    }
    Ok(())
}

/// Makes sure fds 0, 1, 2 are open: stdin on /dev/null, stdout/stderr on the console.
fn setup_std_fds() {
    let open =
        |path: &str, write: bool| fs::OpenOptions::new().read(!write).write(write).open(path);
    for fd in 0..=2 {
        // SAFETY: F_GETFD only queries the descriptor table.
        if unsafe { libc::fcntl(fd, libc::F_GETFD) } != -1 {
            continue;
        }
        let file = if fd == 0 {
            open("/dev/null", false)
        } else {
            open("/dev/console", true).or_else(|_| open("/dev/null", true))
        };
        if let Ok(file) = file {
            if file.as_raw_fd() != fd {
                // SAFETY: dup2 onto a free low descriptor; `file` stays owned and is closed on drop.
                unsafe { libc::dup2(file.as_raw_fd(), fd) };
            } else {
                // The file landed exactly on the free fd: keep it open for the agent's lifetime.
                std::mem::forget(file);
            }
        }
    }
}

/// `ip link set lo up`, done with the SIOCGIFFLAGS/SIOCSIFFLAGS ioctls.
pub fn bring_up_loopback() -> Result<()> {
    // SAFETY: plain socket(2) call; the returned fd is wrapped in an OwnedFd right away.
    let raw = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if raw < 0 {
        return Err(Error::io(
            "socket(AF_INET) for lo",
            std::io::Error::last_os_error(),
        ));
    }
    // SAFETY: `raw` is a fresh descriptor nobody else owns.
    let sock = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(raw) };
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS reads into the ifreq we own; the fd is valid.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) } < 0 {
        return Err(Error::io(
            "ioctl SIOCGIFFLAGS lo",
            std::io::Error::last_os_error(),
        ));
    }
    // SAFETY: the union member ifru_flags is the one SIOCGIFFLAGS filled in.
    unsafe { req.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short };
    // SAFETY: SIOCSIFFLAGS reads the ifreq we own; the fd is valid.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) } < 0 {
        return Err(Error::io(
            "ioctl SIOCSIFFLAGS lo up",
            std::io::Error::last_os_error(),
        ));
    }
    Ok(())
}

static REBOOT_TO_EXIT: AtomicBool = AtomicBool::new(false);

/// Sets the wall clock (the guest has no RTC; the host passes its time on the command line).
pub fn set_clock(secs: i64) -> std::result::Result<(), nix::Error> {
    let ts = nix::sys::time::TimeSpec::new(secs, 0);
    nix::time::clock_settime(nix::time::ClockId::CLOCK_REALTIME, ts)
}

/// Makes [`power_off`] use reboot(RB_AUTOBOOT) (see `kiln.poweroff=reboot` in [`crate::cmdline`]).
pub fn set_reboot_to_exit(on: bool) {
    REBOOT_TO_EXIT.store(on, Ordering::Relaxed);
}

/// Syncs and powers the machine off. Never returns: if power-off fails (not PID 1, no
/// privilege), it logs and parks the thread forever rather than exiting PID 1.
pub fn power_off() -> ! {
    nix::unistd::sync();
    use nix::sys::reboot::{reboot, RebootMode};
    let mode = if REBOOT_TO_EXIT.load(Ordering::Relaxed) {
        RebootMode::RB_AUTOBOOT
    } else {
        RebootMode::RB_POWER_OFF
    };
    let Err(e) = reboot(mode);
    info!("reboot({mode:?}) failed: {e}");
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

/// Logs a fatal error and powers off (PID 1 must never exit).
pub fn fatal(err: &dyn std::fmt::Display) -> ! {
    info!("fatal: {err}; powering off");
    power_off()
}
