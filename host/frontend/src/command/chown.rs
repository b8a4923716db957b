//! `--chown=user[:group]` to numeric ids, with the rules of BuildKit's file operations: names
//! come from the image's own `/etc/passwd` and `/etc/group` (their text is passed in; this
//! module reads no files); a numeric user without a group gets gid = uid; a named user without
//! a group gets its primary group from passwd.

/// Resolved owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owner {
    pub uid: u32,
    pub gid: u32,
}

/// The records of passwd or group text, split on `:` (blank lines and comments skipped).
pub fn records(text: &str) -> impl Iterator<Item = Vec<&str>> {
    text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).map(|l| l.split(':').collect())
}

/// Looks a name up in passwd (`name:x:uid:gid:...`) or group (`name:x:gid:...`) text.
fn lookup<'a>(text: &'a str, name: &str) -> Option<Vec<&'a str>> {
    records(text).find(|f| f.first() == Some(&name))
}

fn id(field: Option<&&str>, what: &str) -> Result<u32, String> {
    field.and_then(|f| f.parse().ok()).ok_or_else(|| format!("malformed {what} entry"))
}

/// Resolves a `--chown` value against the image's passwd and group files (None if absent).
pub fn resolve_chown(spec: &str, passwd: Option<&str>, group: Option<&str>) -> Result<Owner, String> {
    let (user, grp) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    if user.is_empty() {
        return Err(format!("invalid chown {spec:?}: empty user"));
    }
    let (uid, primary_gid) = match user.parse::<u32>() {
        Ok(uid) => (uid, uid),
        Err(_) => {
            let entry = passwd
                .and_then(|p| lookup(p, user))
                .ok_or_else(|| format!("unable to find user {user}: no matching entries in passwd file"))?;
            (id(entry.get(2), "passwd")?, id(entry.get(3), "passwd")?)
        }
    };
    let gid = match grp {
        None => primary_gid,
        Some("") => return Err(format!("invalid chown {spec:?}: empty group")),
        Some(g) => match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => {
                let entry = group
                    .and_then(|t| lookup(t, g))
                    .ok_or_else(|| format!("unable to find group {g}: no matching entries in group file"))?;
                id(entry.get(2), "group")?
            }
        },
    };
    Ok(Owner { uid, gid })
}

/// The uid, gid and supplementary groups a process runs with for `USER spec` (RUN steps,
/// `kiln run -u`), by runc's rules as Docker applies them: a numeric user absent from passwd
/// runs with gid 0, a named user must exist, and without an explicit group the user also gets
/// the supplementary groups that list it in `group`. `passwd`/`group` are the image's files.
pub fn resolve_user(spec: &str, passwd: &str, groups_text: &str) -> Result<(u32, u32, Vec<u32>), String> {
    let (user, group) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let entry = records(passwd).find(|f| f.first() == Some(&user) || (user.parse::<u32>().is_ok() && f.get(2) == Some(&user)));
    let (uid, mut gid, name) = match (user.parse::<u32>(), &entry) {
        (_, Some(f)) => {
            let id = |i: usize| f.get(i).and_then(|v| v.parse::<u32>().ok());
            match (id(2), id(3)) {
                (Some(u), Some(g)) => (u, g, f.first().map(|s| s.to_string())),
                _ => return Err(format!("USER {spec}: malformed passwd entry")),
            }
        }
        (Ok(uid), None) => (uid, 0, None),
        (Err(_), None) => return Err(format!("unable to find user {user}: no matching entries in passwd file")),
    };
    let mut supplementary = Vec::new();
    match group {
        Some(g) => {
            gid = match g.parse::<u32>() {
                Ok(n) => n,
                Err(_) => records(groups_text)
                    .find(|f| f.first() == Some(&g))
                    .and_then(|f| f.get(2).and_then(|v| v.parse().ok()))
                    .ok_or_else(|| format!("unable to find group {g}: no matching entries in group file"))?,
            };
        }
        None => {
            if let Some(name) = &name {
                for f in records(groups_text) {
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

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n# comment\napp:x:1000:1001::/home/app:/bin/sh\n";
    const GROUP: &str = "root:x:0:\nstaff:x:50:app\napp:x:1001:\n";

    #[test]
    fn chown_rules() {
        let r = |s: &str| resolve_chown(s, Some(PASSWD), Some(GROUP));
        assert_eq!(r("1234"), Ok(Owner { uid: 1234, gid: 1234 }));
        assert_eq!(r("1234:5"), Ok(Owner { uid: 1234, gid: 5 }));
        assert_eq!(r("app"), Ok(Owner { uid: 1000, gid: 1001 }));
        assert_eq!(r("app:staff"), Ok(Owner { uid: 1000, gid: 50 }));
        assert_eq!(r("0:app"), Ok(Owner { uid: 0, gid: 1001 }));
        assert_eq!(r("nobody").expect_err("user"), "unable to find user nobody: no matching entries in passwd file");
        assert_eq!(r("app:wheel").expect_err("group"), "unable to find group wheel: no matching entries in group file");
        assert!(resolve_chown("app", None, None).is_err(), "scratch images have no passwd");
        assert!(r(":x").is_err() && r("x:").is_err());
    }
}
