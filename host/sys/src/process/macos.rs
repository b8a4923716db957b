//! macOS (experimental: type-checked in CI, not yet run on a Mac): macOS has no parent-death
//! signal, so between fork and exec the VM process forks a tiny watcher. The watcher closes
//! every descriptor it inherited, waits with kqueue (`EVFILT_PROC`/`NOTE_EXIT`) for kiln or the
//! VM process to end, and SIGKILLs the VM process if kiln ended first. It never runs anything
//! else and holds nothing of kiln's.

use std::os::unix::process::CommandExt;

/// The Darwin kernel's release (`sysctl kern.osrelease`), for caches of what this host can do.
pub fn os_release() -> String {
    let mut buf = [0u8; 64];
    let mut len = buf.len();
    // SAFETY: a NUL-terminated name and an output buffer of `len` bytes that we own.
    let rc = unsafe { libc::sysctlbyname(c"kern.osrelease".as_ptr(), buf.as_mut_ptr().cast(), &mut len, std::ptr::null_mut(), 0) };
    if rc != 0 {
        return "darwin".into();
    }
    format!("darwin-{}", String::from_utf8_lossy(&buf[..len.min(buf.len())]).trim_end_matches('\0'))
}

/// The start time of process `pid` (microseconds since the epoch, from `proc_pidinfo`), if it
/// runs (not a zombie).
pub fn start_time(pid: u32) -> Option<u64> {
    let pid = i32::try_from(pid).ok()?;
    // SAFETY: all-zero is a valid proc_bsdinfo (plain integers and byte arrays).
    let mut info: libc::proc_bsdinfo = unsafe { std::mem::zeroed() };
    let size = std::mem::size_of::<libc::proc_bsdinfo>() as libc::c_int;
    // SAFETY: the buffer is ours and `size` bytes long; the call writes at most that.
    let got = unsafe { libc::proc_pidinfo(pid, libc::PROC_PIDTBSDINFO, 0, (&raw mut info).cast(), size) };
    if got != size || info.pbi_status == libc::SZOMB {
        return None;
    }
    Some(info.pbi_start_tvsec * 1_000_000 + info.pbi_start_tvusec)
}
use std::process::Command;

/// Makes `cmd`'s process die with kiln and keeps it out of the terminal's process group.
pub fn harden(cmd: &mut Command) {
    cmd.process_group(0);
    // SAFETY: the closure runs in the child between fork and exec, which has one thread (the
    // forking one), so the locks fork's atfork handlers take cannot be held by another thread.
    // It calls only getppid and fork, and in the watcher sigfillset, sigprocmask, close,
    // kqueue, kevent, kill and _exit, which allocate nothing; it touches no memory shared with
    // the parent.
    unsafe {
        cmd.pre_exec(|| {
            let kiln = libc::getppid();
            if kiln == 1 {
                return Err(std::io::Error::other("parent exited"));
            }
            match libc::fork() {
                -1 => Err(std::io::Error::last_os_error()),
                0 => watch(kiln),
                _ => Ok(()),
            }
        });
    }
}

/// The watcher: its parent is the VM process (about to exec). Never returns.
///
/// # Safety
/// Only in a freshly forked child: it closes every descriptor and ends with `_exit`.
unsafe fn watch(kiln: libc::pid_t) -> ! {
    // SAFETY: plain system calls on values this function owns; see `harden`.
    unsafe {
        // Every signal blocked (SIGKILL cannot be): the watcher inherited kiln's handlers, and a
        // caught signal would interrupt the wait and end the watch.
        let mut all: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::sigprocmask(libc::SIG_SETMASK, &all, std::ptr::null_mut());
        let vm = libc::getppid();
        let max = libc::getdtablesize();
        for fd in 0..max {
            libc::close(fd);
        }
        let kq = libc::kqueue();
        if kq < 0 {
            libc::_exit(1);
        }
        let watch_pid = |pid: libc::pid_t| libc::kevent {
            ident: pid as libc::uintptr_t,
            filter: libc::EVFILT_PROC,
            flags: libc::EV_ADD | libc::EV_ONESHOT,
            fflags: libc::NOTE_EXIT,
            data: 0,
            udata: std::ptr::null_mut(),
        };
        let changes = [watch_pid(kiln), watch_pid(vm)];
        let mut fired: libc::kevent = std::mem::zeroed();
        let errno = || *libc::__error();
        // Registering a process that is already gone fails with ESRCH: kiln died first. Any
        // other failure leaves the VM alone (it still dies with kiln's other defences).
        let kiln_gone = if libc::kevent(kq, changes.as_ptr(), 1, std::ptr::null_mut(), 0, std::ptr::null()) < 0 {
            if errno() != libc::ESRCH {
                libc::_exit(1);
            }
            true
        } else {
            false
        };
        if !kiln_gone {
            if libc::kevent(kq, changes[1..].as_ptr(), 1, std::ptr::null_mut(), 0, std::ptr::null()) < 0 {
                libc::_exit(0); // the VM process is already gone
            }
            loop {
                let n = libc::kevent(kq, std::ptr::null(), 0, &mut fired, 1, std::ptr::null());
                if n < 0 && errno() == libc::EINTR {
                    continue;
                }
                if n != 1 || fired.ident != kiln as libc::uintptr_t {
                    libc::_exit(0); // the VM process ended first (or the wait failed): nothing to do
                }
                break;
            }
        }
        libc::kill(vm, libc::SIGKILL);
        libc::_exit(0)
    }
}
