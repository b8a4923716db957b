//! The Run child, between `clone` and `execve`.
//!
//! Runs in a copy of a multithreaded process: it must not allocate, lock, or call anything that
//! is not async-signal-safe. It only reads the prepared [`Plan`] and makes raw syscalls. A setup
//! failure is reported on the status pipe as `(step, errno, index)`; an exec failure is reported on the
//! process's stderr like a shell would, with exit code 127 (not found) or 126 (not executable).
//! `RUN --mount`s and per-process files are set up by [`child_mounts::apply`], after `/sys`.

use std::ffi::{c_char, CStr};

use super::child_mounts;
use super::plan::Plan;

/// Which setup step failed; the parent turns it into a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum Step {
    Stdio = 1,
    MakePrivate,
    MountProc,
    MountDev,
    DevNodes,
    MountDevPts,
    MountShm,
    MountSys,
    Hostname,
    Chroot,
    Cwd,
    Groups,
    SetGid,
    SetUid,
    Signals,
    MountTarget,
    UserMount,
    MountReadonly,
    SecretStage,
    WriteSecret,
    WriteFile,
    Loopback,
    ControllingTty,
    JoinNamespaces,
    ReadonlyRoot,
    Init,
    DropCaps,
}

impl Step {
    pub fn from_u32(v: u32) -> Option<Self> {
        use Step::*;
        [
            Stdio,
            MakePrivate,
            MountProc,
            MountDev,
            DevNodes,
            MountDevPts,
            MountShm,
            MountSys,
            Hostname,
            Chroot,
            Cwd,
            Groups,
            SetGid,
            SetUid,
            Signals,
            MountTarget,
            UserMount,
            MountReadonly,
            SecretStage,
            WriteSecret,
            WriteFile,
            Loopback,
            ControllingTty,
            JoinNamespaces,
            ReadonlyRoot,
            Init,
            DropCaps,
        ]
        .into_iter()
        .find(|s| *s as u32 == v)
    }

    pub fn describe(self) -> &'static str {
        match self {
            Step::Stdio => "set up stdin/stdout/stderr",
            Step::MakePrivate => "make mounts private (mount --make-rprivate /)",
            Step::MountProc => "mount proc at ROOTFS/proc",
            Step::MountDev => "mount tmpfs at ROOTFS/dev",
            Step::DevNodes => "create device nodes in ROOTFS/dev",
            Step::MountDevPts => "mount devpts at ROOTFS/dev/pts",
            Step::MountShm => "mount tmpfs at ROOTFS/dev/shm",
            Step::MountSys => "mount sysfs at ROOTFS/sys",
            Step::Hostname => "sethostname",
            Step::Chroot => "chroot into ROOTFS",
            Step::Cwd => "create or enter the working directory",
            Step::Groups => "setgroups",
            Step::SetGid => "setgid",
            Step::SetUid => "setuid",
            Step::Signals => "reset signal mask and dispositions",
            Step::MountTarget => "open or create the mount point of RUN --mount target TARGET",
            Step::UserMount => "mount RUN --mount target TARGET",
            Step::MountReadonly => "make RUN --mount target TARGET read-only",
            Step::SecretStage => "set up the secrets tmpfs in ROOTFS/dev",
            Step::WriteSecret => "write the secret for RUN --mount target TARGET",
            Step::WriteFile => "create file TARGET",
            Step::Loopback => "bring up lo in the process's network namespace",
            Step::ControllingTty => "make the pseudo-terminal the controlling terminal",
            Step::JoinNamespaces => "enter the running container's namespaces and root",
            Step::ReadonlyRoot => "make ROOTFS read-only",
            Step::Init => "start the process under the init (fork)",
            Step::DropCaps => "drop CAP_NET_ADMIN and CAP_NET_RAW (the host is denied)",
        }
    }

    /// Whether the step's index names a file (else a mount).
    pub fn is_file_step(self) -> bool {
        self == Step::WriteFile
    }
}

/// File descriptors the child needs.
pub struct ChildFds {
    pub stdin: i32,
    pub stdout: i32,
    pub stderr: i32,
    /// Write end of the CLOEXEC status pipe.
    pub status: i32,
    /// stdin is a pseudo-terminal's slave, to become the controlling terminal.
    pub tty: bool,
    /// Namespaces and root to enter instead of making new ones (`kiln exec`).
    pub join: Option<JoinFds>,
}

/// Open `/proc/PID/ns/*` and `/proc/PID/root` of the process an exec joins.
pub struct JoinFds {
    pub mnt: i32,
    pub uts: i32,
    pub ipc: i32,
    pub net: i32,
    pub root: i32,
}

pub fn errno() -> i32 {
    // SAFETY: __errno_location returns this thread's errno slot, always valid.
    unsafe { *libc::__errno_location() }
}

/// Size of a status message: `step: u32 LE | errno: i32 LE | index: u32 LE`.
pub const STATUS_LEN: usize = 12;

/// Reports a failed step and exits. Never returns.
pub(super) fn fail(fds: &ChildFds, step: Step) -> ! {
    report(fds, step, 0, errno())
}

/// Reports a failed step for mount or file number `index` with `errno` and exits.
fn report(fds: &ChildFds, step: Step, index: u32, errno: i32) -> ! {
    let mut msg = [0u8; STATUS_LEN];
    msg[..4].copy_from_slice(&(step as u32).to_le_bytes());
    msg[4..8].copy_from_slice(&errno.to_le_bytes());
    msg[8..].copy_from_slice(&index.to_le_bytes());
    // SAFETY: write(2) and _exit(2) are async-signal-safe; `msg` is a valid buffer.
    unsafe {
        libc::write(fds.status, msg.as_ptr().cast(), msg.len());
        libc::_exit(125)
    }
}

fn ok(r: libc::c_int, fds: &ChildFds, step: Step) {
    if r < 0 {
        fail(fds, step);
    }
}

fn mount(
    src: &CStr,
    target: &CStr,
    fstype: &CStr,
    flags: libc::c_ulong,
    data: Option<&CStr>,
) -> libc::c_int {
    let data = data.map_or(std::ptr::null(), |d| d.as_ptr().cast());
    // SAFETY: all strings are NUL-terminated and outlive the call; mount(2) is a plain syscall.
    unsafe { libc::mount(src.as_ptr(), target.as_ptr(), fstype.as_ptr(), flags, data) }
}

/// `ip link set lo up` in the child's fresh network namespace (`RUN --network=none`), with
/// raw syscalls on a stack-allocated `ifreq`.
fn loopback_up(fds: &ChildFds) {
    // SAFETY: socket/ioctl/close are async-signal-safe syscalls; `req` is plain old data on
    // this stack, all-zero is a valid value for it, and the ioctls only read/write it.
    unsafe {
        let sock = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        ok(sock, fds, Step::Loopback);
        let mut req: libc::ifreq = std::mem::zeroed();
        req.ifr_name[0] = b'l' as libc::c_char;
        req.ifr_name[1] = b'o' as libc::c_char;
        ok(
            libc::ioctl(sock, libc::SIOCGIFFLAGS, &mut req),
            fds,
            Step::Loopback,
        );
        req.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
        ok(
            libc::ioctl(sock, libc::SIOCSIFFLAGS, &req),
            fds,
            Step::Loopback,
        );
        libc::close(sock);
    }
}

fn write_stderr(parts: &[&[u8]]) {
    for p in parts {
        // SAFETY: write(2) to fd 2 from a valid buffer; async-signal-safe.
        unsafe { libc::write(2, p.as_ptr().cast(), p.len()) };
    }
}

/// The body of the cloned child. `argv`/`envp` are NULL-terminated pointer arrays built from
/// `plan` before the clone. Never returns.
pub fn run_child(plan: &Plan, fds: &ChildFds, argv: &[*const c_char], envp: &[*const c_char]) -> ! {
    // SAFETY: only async-signal-safe syscalls on buffers prepared before the
    // clone; this process is a private copy, so nothing here can disturb the agent.
    unsafe {
        // Rust sets SIGPIPE to SIG_IGN, and ignored signals survive execve; undo that and any
        // mask inherited from the agent's thread so pipelines in RUN behave as in a shell.
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        ok(
            libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut()),
            fds,
            Step::Signals,
        );
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        libc::setsid();

        ok(libc::dup2(fds.stdin, 0), fds, Step::Stdio);
        ok(libc::dup2(fds.stdout, 1), fds, Step::Stdio);
        ok(libc::dup2(fds.stderr, 2), fds, Step::Stdio);
        if fds.tty {
            // The new session (setsid above) takes the terminal as its controlling one, so
            // Ctrl-C typed on the host's terminal becomes SIGINT of the foreground job.
            ok(libc::ioctl(0, libc::TIOCSCTTY, 0), fds, Step::ControllingTty);
        }
        match &fds.join {
            Some(join) => join_root(join, fds),
            None => new_root(plan, fds),
        }
        for dir in &plan.cwd_prefixes {
            if libc::mkdir(dir.as_ptr(), 0o755) < 0 && errno() != libc::EEXIST {
                fail(fds, Step::Cwd);
            }
        }
        ok(libc::chdir(plan.cwd.as_ptr()), fds, Step::Cwd);
        if plan.drop_net_caps {
            // CAP_NET_ADMIN (12) and CAP_NET_RAW (13) of <linux/capability.h>.
            for cap in [12 as libc::c_ulong, 13] {
                ok(libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0), fds, Step::DropCaps);
            }
        }
        if plan.init {
            // Returns in the forked process that goes on to exec; the init never returns.
            super::init::fork_under_init(fds);
        }
        set_ids_and_exec(plan, fds, argv, envp)
    }
}

/// Enters the namespaces and the root of a running process (the pid namespace was entered
/// by the parent before the clone: it applies to children only).
///
/// # Safety
/// Only from the cloned child: async-signal-safe syscalls on prepared fds.
unsafe fn join_root(join: &JoinFds, fds: &ChildFds) {
    // SAFETY: setns/fchdir/chroot on fds opened before the clone; async-signal-safe.
    unsafe {
        for (fd, kind) in [(join.mnt, libc::CLONE_NEWNS), (join.uts, libc::CLONE_NEWUTS), (join.ipc, libc::CLONE_NEWIPC), (join.net, libc::CLONE_NEWNET)] {
            ok(libc::setns(fd, kind), fds, Step::JoinNamespaces);
        }
        ok(libc::fchdir(join.root), fds, Step::JoinNamespaces);
        ok(libc::chroot(c".".as_ptr()), fds, Step::JoinNamespaces);
    }
}

/// Makes the process's own root: private mounts, /proc, /dev, /sys, its mounts and files,
/// hostname, loopback, then chroot into the rootfs.
///
/// # Safety
/// Only from the cloned child: async-signal-safe syscalls on data prepared before the clone.
unsafe fn new_root(plan: &Plan, fds: &ChildFds) {
    // SAFETY: as the function's contract says.
    unsafe {
        let none = c"none";
        ok(
            mount(none, c"/", none, libc::MS_REC | libc::MS_PRIVATE, None),
            fds,
            Step::MakePrivate,
        );
        let nosuid_nodev_noexec = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
        ok(
            mount(c"proc", &plan.proc_dir, c"proc", nosuid_nodev_noexec, None),
            fds,
            Step::MountProc,
        );
        ok(
            mount(
                c"tmpfs",
                &plan.dev_dir,
                c"tmpfs",
                libc::MS_NOSUID | libc::MS_STRICTATIME,
                Some(c"mode=755,size=65536k"),
            ),
            fds,
            Step::MountDev,
        );
        for node in &plan.dev_nodes {
            let dev = libc::makedev(node.major, node.minor);
            ok(
                libc::mknod(node.path.as_ptr(), libc::S_IFCHR | 0o666, dev),
                fds,
                Step::DevNodes,
            );
            ok(libc::chmod(node.path.as_ptr(), 0o666), fds, Step::DevNodes);
        }
        for (target, link) in &plan.dev_links {
            ok(
                libc::symlink(target.as_ptr(), link.as_ptr()),
                fds,
                Step::DevNodes,
            );
        }
        ok(
            libc::mkdir(plan.pts_dir.as_ptr(), 0o755),
            fds,
            Step::MountDevPts,
        );
        ok(
            mount(
                c"devpts",
                &plan.pts_dir,
                c"devpts",
                libc::MS_NOSUID | libc::MS_NOEXEC,
                Some(c"newinstance,ptmxmode=0666,mode=0620,gid=5"),
            ),
            fds,
            Step::MountDevPts,
        );
        ok(
            libc::mkdir(plan.shm_dir.as_ptr(), 0o1777),
            fds,
            Step::MountShm,
        );
        ok(
            mount(
                c"shm",
                &plan.shm_dir,
                c"tmpfs",
                nosuid_nodev_noexec,
                Some(c"mode=1777,size=65536k"),
            ),
            fds,
            Step::MountShm,
        );
        ok(
            mount(
                c"sysfs",
                &plan.sys_dir,
                c"sysfs",
                nosuid_nodev_noexec | libc::MS_RDONLY,
                None,
            ),
            fds,
            Step::MountSys,
        );
        if let Err(f) = child_mounts::apply(plan) {
            report(fds, f.step, f.index, f.errno);
        }

        ok(
            libc::sethostname(plan.hostname.as_ptr().cast(), plan.hostname.len()),
            fds,
            Step::Hostname,
        );
        if plan.own_network {
            loopback_up(fds);
        }
        // pivot_root is impossible from an initramfs root (rootfs cannot be unmounted): chroot.
        if plan.readonly_root {
            // In this process's own mount namespace only: the overlay stays writable for the
            // agent (and the diff), the mounts below the root (proc, dev, tmpfs, volumes) too.
            let flags = libc::MS_REMOUNT | libc::MS_BIND | libc::MS_RDONLY;
            ok(mount(none, &plan.rootfs, none, flags, None), fds, Step::ReadonlyRoot);
        }
        ok(libc::chdir(plan.rootfs.as_ptr()), fds, Step::Chroot);
        ok(libc::chroot(c".".as_ptr()), fds, Step::Chroot);
    }
}

/// Drops to the process's ids and execs it (or reports why not, as a shell would).
///
/// # Safety
/// Only from the cloned child: async-signal-safe syscalls on data prepared before the clone.
unsafe fn set_ids_and_exec(plan: &Plan, fds: &ChildFds, argv: &[*const c_char], envp: &[*const c_char]) -> ! {
    // SAFETY: as the function's contract says.
    unsafe {

        // Raw syscalls, not the glibc wrappers: glibc broadcasts set*id to every thread it
        // believes exists, and the cloned child inherited the agent's thread list, so the
        // wrappers wait forever for threads that are not in this process.
        let sys = |nr: libc::c_long, a: libc::c_long, b: libc::c_long, c: libc::c_long| {
            libc::syscall(nr, a, b, c) as libc::c_int
        };
        ok(
            sys(
                libc::SYS_setgroups,
                plan.groups.len() as libc::c_long,
                plan.groups.as_ptr() as libc::c_long,
                0,
            ),
            fds,
            Step::Groups,
        );
        let (gid, uid) = (libc::c_long::from(plan.gid), libc::c_long::from(plan.uid));
        ok(sys(libc::SYS_setresgid, gid, gid, gid), fds, Step::SetGid);
        ok(sys(libc::SYS_setresuid, uid, uid, uid), fds, Step::SetUid);

        let mut saw_eacces = false;
        let mut last = libc::ENOENT;
        for candidate in &plan.exec_candidates {
            libc::execve(candidate.as_ptr(), argv.as_ptr(), envp.as_ptr());
            match errno() {
                libc::EACCES => saw_eacces = true,
                libc::ENOENT | libc::ENOTDIR => {}
                e => last = e,
            }
        }
        let err = if saw_eacces && last == libc::ENOENT {
            libc::EACCES
        } else {
            last
        };
        let (reason, code): (&[u8], i32) = match err {
            libc::ENOENT => (b"not found (no such file or directory)", 127),
            libc::EACCES => (b"permission denied", 126),
            libc::ENOEXEC => (b"exec format error", 126),
            libc::E2BIG => (b"argument list too long", 126),
            libc::ENOMEM => (b"out of memory", 126),
            libc::ELOOP => (b"too many levels of symbolic links", 126),
            _ => (b"cannot execute", 126),
        };
        write_stderr(&[&plan.exec_error_prefix, reason, b"\n"]);
        libc::_exit(code)
    }
}
