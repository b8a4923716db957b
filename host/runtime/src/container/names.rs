//! Small rules shared by the container modules, with no dependencies among them: valid
//! names and ids, and the exit code Docker reports for a process's end.

use std::io::Read;

use kiln_sandbox::ExitStatus;

use crate::RuntimeError;

/// Whether `name` is a valid container name (Docker's `[a-zA-Z0-9][a-zA-Z0-9_.-]+`).
pub fn valid_name(name: &str) -> bool {
    let mut b = name.bytes();
    name.len() >= 2
        && b.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && b.all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
}

/// The exit code Docker reports for a status: the code, or 128 + the signal.
pub fn exit_code(status: &ExitStatus) -> i32 {
    match (status.code, status.signal) {
        (Some(c), _) => c,
        (None, Some(s)) => 128 + s,
        (None, None) => 255,
    }
}


/// `bytes` random bytes as hex (container ids, anonymous volume names).
pub fn random_hex(bytes: usize) -> Result<String, RuntimeError> {
    let mut buf = vec![0u8; bytes];
    std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut buf)).map_err(|e| RuntimeError::io("reading /dev/urandom", e))?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}
