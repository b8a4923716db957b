//! `kiln run --init`: a tiny init as the container's process 1 (what `docker run --init` gets
//! from tini). Process 1 of a pid namespace gets no signal it has no handler for, so a shell
//! or a program that never expected to be process 1 ignores `kiln stop`'s SIGTERM and leaves
//! its orphans unreaped. The init forks the real process, forwards every signal it gets to
//! it, reaps every child, and exits with the process's status (128 + the signal when a signal
//! ended it, as tini does).
//!
//! It runs in the cloned child after the new root is made, so like the rest of
//! [`super::child`] it makes only async-signal-safe syscalls and never allocates. It must
//! never outlive the process it started.

use super::child::{fail, ChildFds, Step};

/// Forks. Returns in the child (which goes on to drop its ids and exec, as the leader of its
/// own process group and, with a terminal, the terminal's foreground group); the parent
/// becomes the init and never returns.
///
/// # Safety
/// Only from the cloned child: async-signal-safe syscalls on prepared fds.
pub(super) unsafe fn fork_under_init(fds: &ChildFds) {
    // SAFETY: sigprocmask/fork/setpgid/tcsetpgrp/close are async-signal-safe; the sets are
    // plain data on this stack.
    unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        // Blocked signals are queued for the init even though it has no handlers (an
        // unblocked one with the default action would be dropped: it is process 1).
        libc::sigprocmask(libc::SIG_SETMASK, &all, std::ptr::null_mut());
        let child = libc::fork();
        if child < 0 {
            fail(fds, Step::Init);
        }
        if child == 0 {
            libc::setpgid(0, 0);
            if fds.tty {
                // Ctrl-C on the terminal goes to the process's group, not to the init.
                libc::tcsetpgrp(0, libc::getpid());
            }
            let mut none: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut none);
            libc::sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
            return;
        }
        // The init never execs, so nothing close-on-exec closes for it: it drops every
        // descriptor but stdio, or it would hold the agent's ends of the process's pipes open
        // (stdin would never end) and the status pipe (the agent reads it to its end).
        libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32);
        libc::close(fds.status);
        serve(child, &all)
    }
}

/// The init's loop: forward signals to `child`, reap, and exit with `child`'s status.
///
/// # Safety
/// Only from the init forked by [`fork_under_init`], with every signal blocked.
unsafe fn serve(child: libc::pid_t, all: &libc::sigset_t) -> ! {
    loop {
        // SAFETY: sigwaitinfo fills a siginfo we own; kill/waitpid/_exit are async-signal-safe.
        unsafe {
            let mut info: libc::siginfo_t = std::mem::zeroed();
            let sig = libc::sigwaitinfo(all, &mut info);
            if sig < 0 {
                continue;
            }
            if sig != libc::SIGCHLD {
                libc::kill(child, sig);
                continue;
            }
            loop {
                let mut status = 0;
                let pid = libc::waitpid(-1, &mut status, libc::WNOHANG);
                if pid <= 0 {
                    break;
                }
                if pid == child {
                    let code = if libc::WIFEXITED(status) { libc::WEXITSTATUS(status) } else { 128 + libc::WTERMSIG(status) };
                    libc::_exit(code);
                }
            }
        }
    }
}
