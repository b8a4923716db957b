//! The child's side of `RUN --mount`s and per-process files, between `clone` and `execve`.
//!
//! Same rules as [`super::child`]: no allocation, no locks, raw syscalls on data prepared in
//! the [`Plan`]. Runs in the child's private mount namespace after `/proc`, `/dev` and `/sys`
//! are mounted and before the chroot, so every mount vanishes with the namespace.
//!
//! Targets are walked one component at a time with `O_NOFOLLOW` opens from an fd of the
//! rootfs, along the symlink-free path the parent resolved (it also created the mount points;
//! only components inside an earlier mount are created here). Mounts are made on the opened
//! target through its `/proc/self/fd/N` link, so nothing is looked up by path inside the
//! rootfs; to change the new mount (read-only) or fill it (files), the target is opened again
//! from its parent, which now lands on the mount's root.
//!
//! Secrets are written into a private tmpfs staged at `ROOTFS/dev/.kiln-secrets`, bind-mounted
//! read-only onto their targets, and the stage is detached and removed again before the exec.

use std::ffi::{c_char, CStr, CString};

use super::child::{errno, Step};
use super::plan::Plan;
use super::usermounts::{FileBase, MountKind, UserMount};

/// A failed step: which, for which mount or file (by index in the spec), and its errno.
#[derive(Debug, Clone, Copy)]
pub struct Failed {
    pub step: Step,
    pub index: u32,
    pub errno: i32,
}

/// An fd closed on drop (close(2) is async-signal-safe).
struct Fd(libc::c_int);

impl Drop for Fd {
    fn drop(&mut self) {
        // SAFETY: this Fd owns the descriptor, which nobody else closes.
        unsafe { libc::close(self.0) };
    }
}

/// `/proc/self/fd/N` for an fd, NUL-terminated, in a stack buffer.
struct FdPath([u8; 32]);

impl FdPath {
    fn new(fd: &Fd) -> Self {
        const PREFIX: &[u8; 14] = b"/proc/self/fd/";
        let mut buf = [0u8; 32];
        buf[..PREFIX.len()].copy_from_slice(PREFIX);
        let mut digits = [0u8; 10];
        let (mut n, mut len) = (fd.0.unsigned_abs(), 0);
        loop {
            digits[len] = b'0' + (n % 10) as u8;
            n /= 10;
            len += 1;
            if n == 0 {
                break;
            }
        }
        for i in 0..len {
            buf[PREFIX.len() + i] = digits[len - 1 - i];
        }
        Self(buf)
    }

    fn as_ptr(&self) -> *const c_char {
        self.0.as_ptr().cast()
    }
}

fn check(r: libc::c_int) -> Result<libc::c_int, i32> {
    if r < 0 {
        Err(errno())
    } else {
        Ok(r)
    }
}

const DIR_PATH: libc::c_int = libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC;
const NODE_PATH: libc::c_int = libc::O_PATH | libc::O_NOFOLLOW | libc::O_CLOEXEC;

fn dup(fd: libc::c_int) -> Result<Fd, i32> {
    // SAFETY: fcntl(F_DUPFD_CLOEXEC) on a descriptor we hold; the copy is owned by the Fd.
    check(unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0) }).map(Fd)
}

fn open_at(dir: &Fd, name: &CStr, flags: libc::c_int) -> Result<Fd, i32> {
    // SAFETY: valid dirfd and NUL-terminated name; the new fd is owned by the Fd.
    check(unsafe { libc::openat(dir.0, name.as_ptr(), flags, 0o600 as libc::c_uint) }).map(Fd)
}

/// Opens directory `name` in `dir` (never through a symlink), creating it (0755) if missing
/// and `create` is set.
fn open_dir(dir: &Fd, name: &CStr, create: bool) -> Result<Fd, i32> {
    match open_at(dir, name, DIR_PATH) {
        Err(libc::ENOENT) if create => {
            // SAFETY: valid dirfd and NUL-terminated name.
            if unsafe { libc::mkdirat(dir.0, name.as_ptr(), 0o755) } < 0 && errno() != libc::EEXIST
            {
                return Err(errno());
            }
            open_at(dir, name, DIR_PATH)
        }
        r => r,
    }
}

/// Opens a mount target; returns the fds of its parent directory and of the target itself.
fn open_target(root: &Fd, m: &UserMount) -> Result<(Fd, Fd), i32> {
    let Some((last, dirs)) = m.path.split_last() else {
        return Err(libc::EINVAL);
    };
    let mut cur = dup(root.0)?;
    for (i, d) in dirs.iter().enumerate() {
        cur = open_dir(&cur, d, i >= m.create_from)?;
    }
    let target = match open_at(&cur, last, NODE_PATH) {
        Err(libc::ENOENT) if dirs.len() >= m.create_from => {
            if m.dir {
                drop(open_dir(&cur, last, true)?);
            } else {
                let flags = libc::O_WRONLY
                    | libc::O_CREAT
                    | libc::O_EXCL
                    | libc::O_NOFOLLOW
                    | libc::O_CLOEXEC;
                drop(open_at(&cur, last, flags)?);
            }
            open_at(&cur, last, NODE_PATH)?
        }
        r => r?,
    };
    // SAFETY: `stat` is plain old data, filled in by the kernel.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: valid fd and a stat buffer we own.
    check(unsafe { libc::fstat(target.0, &mut st) })?;
    if st.st_mode & libc::S_IFMT == libc::S_IFLNK {
        return Err(libc::ELOOP);
    }
    Ok((cur, target))
}

/// The root of what is now mounted on the target (the target opened again from its parent).
fn reopen(parent: &Fd, m: &UserMount) -> Result<Fd, i32> {
    let Some(last) = m.path.last() else {
        return Err(libc::EINVAL);
    };
    open_at(parent, last, NODE_PATH)
}

fn mount(
    src: *const c_char,
    target: &FdPath,
    fstype: *const c_char,
    flags: libc::c_ulong,
    data: Option<&CString>,
) -> Result<(), i32> {
    let data = data.map_or(std::ptr::null(), |d| d.as_ptr().cast());
    // SAFETY: every pointer is NULL or a NUL-terminated string that outlives the call.
    check(unsafe { libc::mount(src, target.as_ptr(), fstype, flags, data) }).map(drop)
}

/// Makes the mount on the target read-only with `flags` (plus MS_BIND | MS_REMOUNT).
fn remount(parent: &Fd, m: &UserMount, flags: libc::c_ulong) -> Result<(), i32> {
    let top = reopen(parent, m)?;
    let flags = flags | libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY;
    mount(
        std::ptr::null(),
        &FdPath::new(&top),
        std::ptr::null(),
        flags,
        None,
    )
}

/// Creates file `name` (it must not exist) below `dir`/`dirs` with `data`, owner and mode.
fn write_file(
    dir: &Fd,
    dirs: &[CString],
    name: &CStr,
    data: &[u8],
    mode: u32,
    uid: u32,
    gid: u32,
) -> Result<(), i32> {
    let mut cur = dup(dir.0)?;
    for d in dirs {
        cur = open_dir(&cur, d, true)?;
    }
    let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC;
    let f = open_at(&cur, name, flags)?;
    let mut rest = data;
    while !rest.is_empty() {
        // SAFETY: write(2) from a valid buffer of the length given.
        let n = unsafe { libc::write(f.0, rest.as_ptr().cast(), rest.len()) };
        if n < 0 {
            match errno() {
                libc::EINTR => continue,
                e => return Err(e),
            }
        }
        rest = rest.get(n as usize..).unwrap_or_default();
    }
    // SAFETY: plain syscalls on a descriptor we own; chown first, it clears set-id bits.
    unsafe {
        check(libc::fchown(f.0, uid, gid))?;
        check(libc::fchmod(f.0, mode))?;
    }
    Ok(())
}

/// Writes the plan's files whose base is `base` into the directory `dir`.
fn write_files(plan: &Plan, base: FileBase, dir: &Fd) -> Result<(), Failed> {
    for (j, f) in plan
        .files
        .iter()
        .enumerate()
        .filter(|(_, f)| f.base == base)
    {
        write_file(dir, &f.dirs, &f.name, &f.data, f.mode, f.uid, f.gid).map_err(|errno| {
            Failed {
                step: Step::WriteFile,
                index: j as u32,
                errno,
            }
        })?;
    }
    Ok(())
}

/// Writes the `/dev` files, then makes the mounts (writing the files that live in them).
pub fn apply(plan: &Plan) -> Result<(), Failed> {
    let at = |step: Step, index: usize| {
        move |errno: i32| Failed {
            step,
            index: index as u32,
            errno,
        }
    };
    if plan.files.iter().any(|f| f.base == FileBase::Dev) {
        // SAFETY: open(2) of a NUL-terminated path; the fd is owned by the Fd.
        let dev = check(unsafe { libc::open(plan.dev_dir.as_ptr(), DIR_PATH) })
            .map(Fd)
            .map_err(at(Step::WriteFile, 0))?;
        write_files(plan, FileBase::Dev, &dev)?;
    }
    if plan.mounts.is_empty() {
        return Ok(());
    }
    // SAFETY: open(2) of a NUL-terminated path; the fd is owned by the Fd.
    let root = check(unsafe { libc::open(plan.rootfs.as_ptr(), DIR_PATH) })
        .map(Fd)
        .map_err(at(Step::MountTarget, 0))?;
    let secrets = plan
        .mounts
        .iter()
        .any(|m| matches!(m.kind, MountKind::Secret { .. }));
    let stage = if secrets {
        Some(open_stage(plan).map_err(at(Step::SecretStage, 0))?)
    } else {
        None
    };
    for (i, m) in plan.mounts.iter().enumerate() {
        let (parent, target) = open_target(&root, m).map_err(at(Step::MountTarget, i))?;
        let on = FdPath::new(&target);
        match &m.kind {
            MountKind::Tmpfs { data } => {
                mount(
                    c"tmpfs".as_ptr(),
                    &on,
                    c"tmpfs".as_ptr(),
                    libc::MS_NOSUID,
                    data.as_ref(),
                )
                .map_err(at(Step::UserMount, i))?;
                if plan.files.iter().any(|f| f.base == FileBase::Mount(i)) {
                    let top = reopen(&parent, m).map_err(at(Step::UserMount, i))?;
                    write_files(plan, FileBase::Mount(i), &top)?;
                }
            }
            MountKind::Bind { source, readonly } => {
                let flags = libc::MS_BIND | libc::MS_REC;
                mount(source.as_ptr(), &on, std::ptr::null(), flags, None)
                    .map_err(at(Step::UserMount, i))?;
                if *readonly {
                    remount(&parent, m, 0).map_err(at(Step::MountReadonly, i))?;
                }
            }
            MountKind::Secret {
                name,
                staged,
                data,
                mode,
                uid,
                gid,
            } => {
                let Some(stage) = stage.as_ref() else {
                    return Err(at(Step::SecretStage, i)(libc::EINVAL));
                };
                write_file(stage, &[], name, data, *mode, *uid, *gid)
                    .map_err(at(Step::WriteSecret, i))?;
                mount(staged.as_ptr(), &on, std::ptr::null(), libc::MS_BIND, None)
                    .map_err(at(Step::UserMount, i))?;
                let flags = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
                remount(&parent, m, flags).map_err(at(Step::MountReadonly, i))?;
            }
        }
    }
    if let Some(stage) = stage {
        drop(stage);
        // SAFETY: umount2(2) and rmdir(2) on a NUL-terminated path prepared in the plan.
        unsafe {
            check(libc::umount2(plan.secret_stage.as_ptr(), libc::MNT_DETACH))
                .map_err(at(Step::SecretStage, 0))?;
            check(libc::rmdir(plan.secret_stage.as_ptr())).map_err(at(Step::SecretStage, 0))?;
        }
    }
    Ok(())
}

/// Mounts the private secrets tmpfs at `ROOTFS/dev/.kiln-secrets` and opens it.
fn open_stage(plan: &Plan) -> Result<Fd, i32> {
    let stage = plan.secret_stage.as_ptr();
    let flags = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
    // SAFETY: mkdir(2), mount(2) and open(2) on NUL-terminated strings from the plan.
    unsafe {
        check(libc::mkdir(stage, 0o700))?;
        check(libc::mount(
            c"tmpfs".as_ptr(),
            stage,
            c"tmpfs".as_ptr(),
            flags,
            c"mode=700".as_ptr().cast(),
        ))?;
        check(libc::open(stage, DIR_PATH)).map(Fd)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fd_path_formats_without_allocating() {
        for (fd, want) in [
            (0, "/proc/self/fd/0"),
            (7, "/proc/self/fd/7"),
            (1234567890, "/proc/self/fd/1234567890"),
        ] {
            let f = Fd(fd);
            let p = FdPath::new(&f);
            std::mem::forget(f);
            // SAFETY: FdPath always holds a NUL-terminated string.
            let got = unsafe { CStr::from_ptr(p.as_ptr()) };
            assert_eq!(got.to_str().expect("utf8"), want);
        }
    }
}
