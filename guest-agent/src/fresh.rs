//! What makes a guest restored from a snapshot its own: the host's randomness mixed into the
//! kernel's pool and the pool reseeded at once (a clone otherwise hands out the same random
//! bytes as every other clone of that snapshot: Firecracker's documented risk), and the
//! host's wall clock (a clone's clock is the snapshot's). Done on every Hello: a fresh boot
//! gets the same treatment.
//!
//! This module must never log or answer with the randomness it was given.

use std::fs::OpenOptions;
use std::os::fd::AsRawFd;

use crate::error::{Error, Result};

/// `RNDADDENTROPY` and `RNDRESEEDCRNG` of `<linux/random.h>`.
const RNDADDENTROPY: libc::c_ulong = 0x4008_5203;
const RNDRESEEDCRNG: libc::c_ulong = 0x5207;

/// The largest randomness accepted (more adds nothing).
const MAX_ENTROPY: usize = 512;

/// Mixes `entropy` (base64) into the kernel's pool and reseeds it; sets the clock to `now_ns`.
pub fn apply(entropy: Option<&str>, now_ns: Option<u64>) -> Result<()> {
    if let Some(text) = entropy {
        let bytes = kiln_protocol::base64::decode(text).map_err(|e| Error::msg(format!("hello: bad entropy: {e}")))?;
        add_entropy(&bytes[..bytes.len().min(MAX_ENTROPY)])?;
    }
    if let Some(ns) = now_ns {
        let ts = libc::timespec { tv_sec: (ns / 1_000_000_000) as libc::time_t, tv_nsec: (ns % 1_000_000_000) as libc::c_long };
        // SAFETY: clock_settime with a timespec we own.
        if unsafe { libc::clock_settime(libc::CLOCK_REALTIME, &ts) } < 0 {
            return Err(Error::io("hello: set the clock", std::io::Error::last_os_error()));
        }
    }
    Ok(())
}

fn add_entropy(bytes: &[u8]) -> Result<()> {
    if bytes.is_empty() {
        return Ok(());
    }
    let random = OpenOptions::new().write(true).open("/dev/urandom").map_err(|e| Error::io("hello: open /dev/urandom", e))?;
    // struct rand_pool_info { int entropy_count; int buf_size; __u32 buf[]; }
    let mut info = Vec::with_capacity(8 + bytes.len());
    info.extend_from_slice(&((bytes.len() * 8) as i32).to_ne_bytes());
    info.extend_from_slice(&(bytes.len() as i32).to_ne_bytes());
    info.extend_from_slice(bytes);
    // The kernel reads u32s: pad to a whole one.
    info.resize(info.len().div_ceil(4) * 4, 0);
    // SAFETY: RNDADDENTROPY reads a rand_pool_info of the size its header announces, which
    // `info` holds; the descriptor is open.
    if unsafe { libc::ioctl(random.as_raw_fd(), RNDADDENTROPY, info.as_ptr()) } < 0 {
        return Err(Error::io("hello: add entropy", std::io::Error::last_os_error()));
    }
    // SAFETY: RNDRESEEDCRNG takes no argument.
    if unsafe { libc::ioctl(random.as_raw_fd(), RNDRESEEDCRNG) } < 0 {
        return Err(Error::io("hello: reseed the random pool", std::io::Error::last_os_error()));
    }
    Ok(())
}
