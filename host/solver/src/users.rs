//! USER and `--chown` names to numeric ids, from the stage's own `/etc/passwd` and
//! `/etc/group` (read from its layers through [`crate::fsview::View`], never from the host).
//!
//! `--chown` follows BuildKit's file operations ([`kiln_frontend::command::chown`]); a RUN's
//! user follows runc's rules as Docker applies them: a numeric user absent from passwd runs
//! with gid 0, a named user must exist, and without an explicit group the user also gets the
//! supplementary groups that list it in `/etc/group`.

use kiln_frontend::command::chown::{resolve_chown, resolve_user, Owner};

use crate::fsview::View;
use crate::BuildError;

fn text(view: &View, path: &str) -> Result<Option<String>, BuildError> {
    Ok(view.kept_file(path)?.map(|b| String::from_utf8_lossy(&b).into_owned()))
}

/// `--chown=user[:group]` against the stage's files.
pub fn chown(view: &View, spec: &str) -> Result<Owner, BuildError> {
    let passwd = text(view, "/etc/passwd")?;
    let group = text(view, "/etc/group")?;
    resolve_chown(spec, passwd.as_deref(), group.as_deref()).map_err(BuildError::Invalid)
}

/// The ids a RUN runs with for `USER spec` ([`resolve_user`], runc's rules).
pub fn run_user(view: &View, spec: &str) -> Result<(u32, u32, Vec<u32>), BuildError> {
    let passwd = text(view, "/etc/passwd")?.unwrap_or_default();
    let group = text(view, "/etc/group")?.unwrap_or_default();
    resolve_user(spec, &passwd, &group).map_err(BuildError::Invalid)
}
