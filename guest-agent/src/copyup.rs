//! A volume's first use: an empty share is filled with a copy of what the container's image
//! holds at the mount point (Docker copies an image's `VOLUME` content into a new volume).
//!
//! The source is resolved beneath the container's root (`openat2` `RESOLVE_BENEATH`), so an
//! image's symlink never makes the agent copy its own files; nothing below it is followed
//! either (every node is opened or read with `*at` calls that do not follow the last
//! component). Hard links become separate copies, as in Docker.
//!
//! The copy is made in a hidden directory of the share, renamed when whole, and only then
//! moved into place entry by entry: a copy cut short (no space, the VM killed) is redone at
//! the next start, a move cut short is finished, and a volume is never left half-filled and
//! taken for a filled one.
//!
//! This module must never write outside the share it was given.

use std::ffi::CStr;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;

use crate::error::{Error, Result};
use crate::{fsat, safepath};

/// How deep a tree is copied before the copy gives up (a guard for the agent's stack).
const MAX_DEPTH: usize = 256;

/// Where the copy is made, and what it is renamed to once whole.
const STAGING: &str = ".kiln-copyup";
const DONE: &str = ".kiln-copyup-done";

fn rename_at(from: BorrowedFd<'_>, from_name: &CStr, to: BorrowedFd<'_>, to_name: &CStr) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: renameat on two open directory descriptors and NUL-terminated names.
    if unsafe { libc::renameat(from.as_raw_fd(), from_name.as_ptr(), to.as_raw_fd(), to_name.as_ptr()) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Moves every entry of `DONE` into the volume's root, then removes `DONE`.
fn finish_move(dest: &OwnedFd) -> io::Result<()> {
    let done_name = safepath::cname(DONE.as_bytes())?;
    let done = fsat::open_dir(dest.as_fd(), &done_name)?;
    for entry in std::fs::read_dir(safepath::proc_path(&done, b""))? {
        let name = safepath::cname(entry?.file_name().as_bytes())?;
        rename_at(done.as_fd(), &name, dest.as_fd(), &name)?;
    }
    fsat::unlink(dest.as_fd(), &done_name, true)
}

/// Fills `dest` (an empty directory) with a copy of directory `path` inside the root
/// filesystem at `root`. A `dest` that holds anything, and a `path` that is not a directory
/// beneath the root, are left alone: there is nothing to copy.
pub fn populate(root: &str, path: &str, dest: &str) -> Result<()> {
    let err = |what: &str, e: io::Error| Error::io(format!("copy {path} into the new volume: {what}"), e);
    let dest_fd = safepath::open_root(std::path::Path::new(dest)).map_err(|e| err("open the volume", e))?;
    let mut staged = false;
    let mut others = false;
    for entry in std::fs::read_dir(safepath::proc_path(&dest_fd, b"")).map_err(|e| err("list the volume", e))? {
        match entry.map_err(|e| err("list the volume", e))?.file_name().as_bytes() {
            b".kiln-copyup-done" => return finish_move(&dest_fd).map_err(|e| err("finish an interrupted copy", e)),
            b".kiln-copyup" => staged = true,
            _ => others = true,
        }
    }
    if staged {
        // A copy cut short: start it again.
        std::fs::remove_dir_all(safepath::proc_path(&dest_fd, STAGING.as_bytes())).map_err(|e| err("remove an interrupted copy", e))?;
    }
    if others {
        return Ok(());
    }
    let parts = safepath::normalize(path.trim_start_matches('/').as_bytes()).map_err(Error::msg)?;
    let root_fd = safepath::open_root(std::path::Path::new(root)).map_err(|e| err("open the root", e))?;
    let src = match safepath::open_dir_beneath(&root_fd, &parts) {
        Ok(fd) => fd,
        // Absent, not a directory, or a symlink out of the root: an empty volume, as Docker.
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ENOTDIR | libc::EXDEV | libc::ELOOP)) => return Ok(()),
        Err(e) => return Err(err("open the source", e)),
    };
    let staging_name = safepath::cname(STAGING.as_bytes()).map_err(|e| err("copy", e))?;
    let done_name = safepath::cname(DONE.as_bytes()).map_err(|e| err("copy", e))?;
    fsat::mkdir(dest_fd.as_fd(), &staging_name, 0o700).map_err(|e| err("make the staging directory", e))?;
    let staging = fsat::open_dir(dest_fd.as_fd(), &staging_name).map_err(|e| err("open the staging directory", e))?;
    copy_dir(&src, &staging, 0).map_err(|e| err("copy", e))?;
    drop(staging);
    rename_at(dest_fd.as_fd(), &staging_name, dest_fd.as_fd(), &done_name).map_err(|e| err("copy", e))?;
    finish_move(&dest_fd).map_err(|e| err("move the copy into place", e))?;
    // The volume's root takes the source directory's owner and mode.
    let st = fsat::fstat(src.as_fd()).map_err(|e| err("stat the source", e))?;
    fchown(dest_fd.as_fd(), st.st_uid, st.st_gid)
        .and_then(|()| fchmod(dest_fd.as_fd(), st.st_mode & 0o7777))
        .map_err(|e| err("set the volume's owner and mode", e))
}

fn copy_dir(src: &OwnedFd, dst: &OwnedFd, depth: usize) -> io::Result<()> {
    if depth > MAX_DEPTH {
        return Err(io::Error::other(format!("more than {MAX_DEPTH} directories deep")));
    }
    for entry in std::fs::read_dir(safepath::proc_path(src, b""))? {
        let entry = entry?;
        let name = safepath::cname(entry.file_name().as_bytes())?;
        let Some(st) = fsat::lstat(src.as_fd(), &name)? else { continue };
        copy_node(src, dst, &name, &st, depth)?;
    }
    Ok(())
}

fn copy_node(src: &OwnedFd, dst: &OwnedFd, name: &CStr, st: &libc::stat, depth: usize) -> io::Result<()> {
    let mode = st.st_mode & 0o7777;
    match st.st_mode & libc::S_IFMT {
        libc::S_IFDIR => {
            fsat::mkdir(dst.as_fd(), name, 0o700)?;
            let (s, d) = (fsat::open_dir(src.as_fd(), name)?, fsat::open_dir(dst.as_fd(), name)?);
            copy_dir(&s, &d, depth + 1)?;
            fchown(d.as_fd(), st.st_uid, st.st_gid)?;
            fchmod(d.as_fd(), mode)?;
            fsat::set_times(d.as_fd(), atime(st), mtime(st))
        }
        libc::S_IFREG => {
            let mut from = open_file(src.as_fd(), name)?;
            let mut to = fsat::create_file(dst.as_fd(), name)?;
            io::copy(&mut from, &mut to)?;
            fchown(to.as_fd(), st.st_uid, st.st_gid)?;
            fchmod(to.as_fd(), mode)?;
            fsat::set_times(to.as_fd(), atime(st), mtime(st))
        }
        libc::S_IFLNK => {
            let target = safepath::cname(&fsat::readlink(src.as_fd(), name)?)?;
            fsat::symlink(&target, dst.as_fd(), name)?;
            fsat::lchown(dst.as_fd(), name, st.st_uid, st.st_gid)
        }
        // Fifos, sockets and device nodes are copied as nodes.
        _ => {
            fsat::mknod(dst.as_fd(), name, st.st_mode, st.st_rdev)?;
            fsat::lchown(dst.as_fd(), name, st.st_uid, st.st_gid)
        }
    }
}

fn atime(st: &libc::stat) -> libc::timespec {
    libc::timespec { tv_sec: st.st_atime, tv_nsec: st.st_atime_nsec }
}

fn mtime(st: &libc::stat) -> libc::timespec {
    libc::timespec { tv_sec: st.st_mtime, tv_nsec: st.st_mtime_nsec }
}

/// Opens regular file `name` in `dir` for reading, never following a symlink.
fn open_file(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<std::fs::File> {
    use std::os::fd::{AsRawFd, FromRawFd};
    let flags = libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_CLOEXEC;
    // SAFETY: valid dirfd and NUL-terminated name; the fd is wrapped right away.
    let fd = unsafe { libc::openat(dir.as_raw_fd(), name.as_ptr(), flags) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor nobody else owns.
    Ok(unsafe { std::fs::File::from_raw_fd(fd) })
}

fn fchown(fd: BorrowedFd<'_>, uid: u32, gid: u32) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: fchown on a valid descriptor.
    if unsafe { libc::fchown(fd.as_raw_fd(), uid, gid) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn fchmod(fd: BorrowedFd<'_>, mode: u32) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: fchmod on a valid descriptor (after fchown, which clears setuid bits).
    if unsafe { libc::fchmod(fd.as_raw_fd(), mode) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
