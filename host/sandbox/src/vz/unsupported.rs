//! Everywhere but macOS: there is no Virtualization.framework.

use crate::Backend;

/// Always the reason there is no such backend here.
pub fn backend() -> Result<Box<dyn Backend>, String> {
    Err("Virtualization.framework exists only on macOS".into())
}
