//! USER and `--chown` names to numeric ids, from the stage's own `/etc/passwd` and
//! `/etc/group` (read from its layers through [`crate::fsview::View`], never from the host).
//!
//! `--chown` follows BuildKit's file operations ([`kiln_frontend::command::chown`]); a RUN's
//! user follows runc's rules as Docker applies them: a numeric user absent from passwd runs
//! with gid 0, a named user must exist, and without an explicit group the user also gets the
//! supplementary groups that list it in `/etc/group`.

use kiln_frontend::command::chown::{records, resolve_chown, Owner};

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

/// The ids a RUN runs with for `USER spec`.
pub fn run_user(view: &View, spec: &str) -> Result<(u32, u32, Vec<u32>), BuildError> {
    let (user, group) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let passwd = text(view, "/etc/passwd")?.unwrap_or_default();
    let entry = records(&passwd).find(|f| f.first() == Some(&user) || (user.parse::<u32>().is_ok() && f.get(2) == Some(&user)));
    let (uid, mut gid, name) = match (user.parse::<u32>(), &entry) {
        (_, Some(f)) => {
            let id = |i: usize| f.get(i).and_then(|v| v.parse::<u32>().ok());
            match (id(2), id(3)) {
                (Some(u), Some(g)) => (u, g, f.first().map(|s| s.to_string())),
                _ => return Err(BuildError::Invalid(format!("USER {spec}: malformed passwd entry"))),
            }
        }
        (Ok(uid), None) => (uid, 0, None),
        (Err(_), None) => return Err(BuildError::Invalid(format!("unable to find user {user}: no matching entries in passwd file"))),
    };
    let groups_text = text(view, "/etc/group")?.unwrap_or_default();
    let mut supplementary = Vec::new();
    match group {
        Some(g) => {
            gid = match g.parse::<u32>() {
                Ok(n) => n,
                Err(_) => records(&groups_text)
                    .find(|f| f.first() == Some(&g))
                    .and_then(|f| f.get(2).and_then(|v| v.parse().ok()))
                    .ok_or_else(|| BuildError::Invalid(format!("unable to find group {g}: no matching entries in group file")))?,
            };
        }
        None => {
            if let Some(name) = &name {
                for f in records(&groups_text) {
                    let member = f.get(3).is_some_and(|m| m.split(',').any(|x| x.trim() == name));
                    if let (true, Some(id)) = (member, f.get(2).and_then(|v| v.parse::<u32>().ok())) {
                        if id != gid && !supplementary.contains(&id) {
                            supplementary.push(id);
                        }
                    }
                }
            }
        }
    }
    Ok((uid, gid, supplementary))
}
