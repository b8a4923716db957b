//! How much a guest may write to the host: every byte a guest sends to be kept (a build's
//! layers and cache mounts, a container's writable layer) is counted against one budget per
//! VM, so a hostile or runaway guest fills neither the disk nor the store. The default is the
//! free space of the store's filesystem when the VM starts, less a reserve of 1 GiB (a quarter
//! of the free space on a disk with less than 4 GiB free); `KILN_MAX_GUEST_WRITE` (bytes, with
//! k/m/g/t) sets it.
//!
//! This module must never let a stream past the budget it reported exhausted.

use std::io::{self, Read};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::RuntimeError;

/// Kept free on the store's filesystem by the default budget.
const RESERVE: u64 = 1 << 30;

/// Bytes a guest may still write to the host.
#[derive(Debug, Clone)]
pub struct WriteBudget {
    left: Arc<AtomicU64>,
    total: u64,
}

/// Free bytes for an unprivileged user on the filesystem holding `path` (or, when it does not
/// exist yet, its nearest existing parent).
fn free_space(path: &Path) -> io::Result<u64> {
    Ok(kiln_sys::fs::space_near(path)?.available)
}

impl WriteBudget {
    /// A budget of `bytes`.
    pub fn of(bytes: u64) -> Self {
        Self { left: Arc::new(AtomicU64::new(bytes)), total: bytes }
    }

    /// The budget for a VM whose writes land in the store at `root` (see the module's docs).
    pub fn for_store(root: &Path) -> Result<Self, RuntimeError> {
        if let Some(v) = std::env::var("KILN_MAX_GUEST_WRITE").ok().filter(|v| !v.is_empty()) {
            let bytes = kiln_store::parse_size(&v).map_err(|_| RuntimeError::Invalid(format!("KILN_MAX_GUEST_WRITE={v:?}: expected a size such as 20g")))?;
            return Ok(Self::of(bytes));
        }
        let free = free_space(root).map_err(|e| RuntimeError::io(format!("measuring the free space at {}", root.display()), e))?;
        // On a small disk, a quarter of the free space is kept instead of 1 GiB.
        Ok(Self::of(free.saturating_sub(RESERVE.min(free / 4))))
    }

    /// `stream`, counted against the budget: past it, reads fail.
    pub fn reader<R: Read>(&self, stream: R) -> BudgetReader<R> {
        BudgetReader { inner: stream, budget: self.clone() }
    }

    fn take(&self, n: u64) -> io::Result<()> {
        let ok = self.left.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |left| left.checked_sub(n)).is_ok();
        if !ok {
            self.left.store(0, Ordering::SeqCst);
            return Err(io::Error::new(
                io::ErrorKind::FileTooLarge,
                format!("the guest wrote more than {} bytes to the host (KILN_MAX_GUEST_WRITE; the default is the store's free space less 1 GiB)", self.total),
            ));
        }
        Ok(())
    }
}

/// A guest's stream held to a [`WriteBudget`].
pub struct BudgetReader<R> {
    inner: R,
    budget: WriteBudget,
}

impl<R: Read> Read for BudgetReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.budget.take(n as u64)?;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stream_past_the_budget_fails_and_so_do_later_ones() {
        let budget = WriteBudget::of(1000);
        let mut out = Vec::new();
        budget.reader(&[1u8; 600][..]).read_to_end(&mut out).expect("within");
        let err = budget.reader(&[1u8; 600][..]).read_to_end(&mut out).expect_err("past");
        assert!(err.to_string().contains("KILN_MAX_GUEST_WRITE"), "{err}");
        assert!(budget.reader(&[1u8; 1][..]).read_to_end(&mut out).is_err(), "nothing is left");
        assert!(free_space(Path::new("/")).expect("statvfs") > 0);
    }
}
