//! Unix: `kill(2)`, a dup of stderr.

use std::os::fd::AsFd;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};

/// Nothing to do after spawning on unix: [`super::harden`] did it all before `exec`.
pub fn adopt(_child: &Child) -> std::io::Result<()> {
    Ok(())
}

/// SIGKILLs `pid`, a VM process kiln spawned and has not reaped.
pub fn kill(pid: u32) {
    let Ok(pid) = i32::try_from(pid) else { return };
    // SAFETY: kill(2) with a pid we spawned and have not reaped yet (callers forget a pid only
    // after waiting for it), so it cannot have been reused by another process.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
    }
}

/// A copy of kiln's stderr, for a child's output.
pub fn console() -> std::io::Result<Stdio> {
    Ok(Stdio::from(std::io::stderr().as_fd().try_clone_to_owned()?))
}

/// Runs `cmd` in a new session: it outlives kiln's terminal (the container supervisor).
pub fn detach(cmd: &mut Command) {
    // SAFETY: setsid(2) is async-signal-safe and touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
}
