//! Linux: the child gets `PR_SET_PDEATHSIG(SIGKILL)`, so it dies with kiln even when kiln is
//! SIGKILLed. (It fires when the *thread* that forked the child ends: callers spawn from a
//! thread that lives as long as kiln, see kiln-sandbox's `children::spawn`.)

use std::os::unix::process::CommandExt;

/// The host kernel's release (`/proc/sys/kernel/osrelease`), for caches of what this host can
/// do.
pub fn os_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease").map(|s| s.trim().to_string()).unwrap_or_default()
}

/// The start time of process `pid` (field 22 of `/proc/PID/stat`, in clock ticks since boot),
/// if it runs (a zombie, dead but not yet reaped by its parent, does not).
pub fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: fields follow the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    if matches!(fields.next(), Some("Z" | "X" | "x")) {
        return None;
    }
    fields.nth(18)?.parse().ok()
}
use std::process::Command;

/// Makes `cmd`'s process die with kiln and keeps it out of the terminal's process group (so
/// Ctrl-C reaches kiln first, and kiln stops the VM in order).
pub fn harden(cmd: &mut Command) {
    cmd.process_group(0);
    // SAFETY: the closure runs in the child between fork and exec and only calls prctl(2) and
    // getppid(2), both async-signal-safe; it touches no memory shared with the parent.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0, 0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The parent may have died before prctl took effect.
            if libc::getppid() == 1 {
                return Err(std::io::Error::other("parent exited"));
            }
            Ok(())
        });
    }
}
