//! `RUN --mount=type=...,key=value,...` as BuildKit reads it (its `instructions/commands_runmount`):
//! types bind (default), cache, tmpfs, secret, ssh; each key checked against its type.

/// The kind of a RUN mount.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MountType {
    Bind,
    Cache,
    Tmpfs,
    Secret,
    Ssh,
}

/// Sharing mode of a cache mount.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sharing {
    Shared,
    Private,
    Locked,
}

/// One `--mount`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub kind: MountType,
    /// Where it appears in the container (defaults for secret and ssh filled in).
    pub target: String,
    /// Path in the source (context, stage or image); none means its root.
    pub source: Option<String>,
    /// Stage or image to take the source from (bind, cache).
    pub from: Option<String>,
    pub read_only: bool,
    /// Cache id / secret id / ssh id.
    pub id: Option<String>,
    pub sharing: Sharing,
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    /// Fail if the secret or ssh socket is not provided.
    pub required: bool,
    /// tmpfs size in bytes.
    pub size: Option<u64>,
    /// Expose a secret as this environment variable instead of a file.
    pub env: Option<String>,
}

/// Splits on commas outside double quotes; quotes are removed (BuildKit reads the value as CSV).
fn csv_fields(s: &str) -> Result<Vec<String>, String> {
    let mut out = vec![String::new()];
    let mut quoted = false;
    for c in s.chars() {
        match c {
            '"' => quoted = !quoted,
            ',' if !quoted => out.push(String::new()),
            c => out.last_mut().map(|f| f.push(c)).unwrap_or_default(),
        }
    }
    if quoted {
        return Err(format!("invalid mount {s:?}: unterminated quote"));
    }
    Ok(out)
}

fn parse_bool(key: &str, v: &str) -> Result<bool, String> {
    match v.to_ascii_lowercase().as_str() {
        "" | "true" | "1" => Ok(true),
        "false" | "0" => Ok(false),
        _ => Err(format!("invalid value for {key}: {v}")),
    }
}

fn parse_size(v: &str) -> Result<u64, String> {
    let lower = v.to_ascii_lowercase();
    let digits = lower.find(|c: char| !c.is_ascii_digit()).unwrap_or(lower.len());
    let n: u64 = lower[..digits].parse().map_err(|_| format!("invalid size {v:?}"))?;
    let mult: u64 = match lower[digits..].trim_end_matches('b').trim_end_matches('i') {
        "" => 1,
        "k" => 1 << 10,
        "m" => 1 << 20,
        "g" => 1 << 30,
        _ => return Err(format!("invalid size {v:?}")),
    };
    Ok(n * mult)
}

/// Parses one `--mount` value.
pub fn parse_mount(value: &str) -> Result<Mount, String> {
    let fields = csv_fields(value)?;
    let mut kind = MountType::Bind;
    for f in &fields {
        if let Some(t) = f.trim().strip_prefix("type=") {
            kind = match t {
                "bind" => MountType::Bind,
                "cache" => MountType::Cache,
                "tmpfs" => MountType::Tmpfs,
                "secret" => MountType::Secret,
                "ssh" => MountType::Ssh,
                other => return Err(format!("unsupported mount type {other:?}")),
            };
        }
    }
    let mut m = Mount {
        kind,
        target: String::new(),
        source: None,
        from: None,
        read_only: kind == MountType::Bind,
        id: None,
        sharing: Sharing::Shared,
        mode: None,
        uid: None,
        gid: None,
        required: false,
        size: None,
        env: None,
    };
    for f in fields.iter().map(|f| f.trim()).filter(|f| !f.is_empty()) {
        let (key, v) = match f.split_once('=') {
            Some((k, v)) => (k.to_ascii_lowercase(), v.to_string()),
            None => (f.to_ascii_lowercase(), String::new()),
        };
        let need = |v: &str| if v.is_empty() { Err(format!("invalid mount option {f:?}: missing value")) } else { Ok(v.to_string()) };
        let num = |v: &str| v.parse::<u32>().map_err(|_| format!("invalid value for {key}: {v}"));
        match key.as_str() {
            "type" => {}
            "target" | "dst" | "destination" => m.target = need(&v)?,
            "source" | "src" => m.source = Some(need(&v)?),
            "from" if matches!(kind, MountType::Bind | MountType::Cache) => m.from = Some(need(&v)?),
            "readonly" | "ro" => m.read_only = parse_bool(&key, &v)?,
            "readwrite" | "rw" => m.read_only = !parse_bool(&key, &v)?,
            "id" if kind != MountType::Tmpfs && kind != MountType::Bind => m.id = Some(need(&v)?),
            "sharing" if kind == MountType::Cache => {
                m.sharing = match v.as_str() {
                    "shared" => Sharing::Shared,
                    "private" => Sharing::Private,
                    "locked" => Sharing::Locked,
                    _ => return Err(format!("unsupported sharing value {v:?}")),
                }
            }
            "mode" if kind != MountType::Bind && kind != MountType::Tmpfs => {
                m.mode = Some(u32::from_str_radix(&v, 8).map_err(|_| format!("invalid value {v} for mode"))?)
            }
            "uid" if kind != MountType::Bind && kind != MountType::Tmpfs => m.uid = Some(num(&v)?),
            "gid" if kind != MountType::Bind && kind != MountType::Tmpfs => m.gid = Some(num(&v)?),
            "required" if matches!(kind, MountType::Secret | MountType::Ssh) => m.required = parse_bool(&key, &v)?,
            "size" if kind == MountType::Tmpfs => m.size = Some(parse_size(&v)?),
            "env" if kind == MountType::Secret => m.env = Some(need(&v)?),
            _ => return Err(format!("unexpected key '{key}' in '{f}'")),
        }
    }
    match kind {
        MountType::Secret => {
            if m.id.is_none() && m.target.is_empty() && m.env.is_none() {
                return Err("one of target, env or id is required for a secret mount".into());
            }
            if m.target.is_empty() && m.env.is_none() {
                let id = m.id.clone().unwrap_or_default();
                m.target = format!("/run/secrets/{id}");
            }
            if m.id.is_none() {
                let base = m.target.rsplit('/').next().unwrap_or_default().to_string();
                m.id = Some(if base.is_empty() { m.env.clone().unwrap_or_default() } else { base });
            }
        }
        MountType::Ssh => {
            if m.target.is_empty() {
                m.target = "/run/buildkit/ssh_agent.0".into();
            }
            m.id.get_or_insert_with(|| "default".into());
        }
        _ if m.target.is_empty() => return Err(format!("mount type {} requires a target", type_name(kind))),
        _ => {}
    }
    if kind == MountType::Cache && m.id.is_none() {
        m.id = Some(m.target.clone());
    }
    Ok(m)
}

fn type_name(k: MountType) -> &'static str {
    match k {
        MountType::Bind => "bind",
        MountType::Cache => "cache",
        MountType::Tmpfs => "tmpfs",
        MountType::Secret => "secret",
        MountType::Ssh => "ssh",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_kinds() {
        let m = parse_mount("type=cache,target=/root/.cache,sharing=locked").expect("cache");
        assert_eq!(
            (m.kind, m.target.as_str(), m.sharing, m.id.as_deref()),
            (MountType::Cache, "/root/.cache", Sharing::Locked, Some("/root/.cache"))
        );
        assert!(!m.read_only);
        let m = parse_mount("target=/src,from=build,source=/out,rw").expect("bind");
        assert_eq!((m.kind, m.from.as_deref(), m.source.as_deref(), m.read_only), (MountType::Bind, Some("build"), Some("/out"), false));
        let m = parse_mount("type=secret,id=npmrc").expect("secret");
        assert_eq!(m.target, "/run/secrets/npmrc");
        let m = parse_mount("type=secret,id=tok,env=TOKEN,required").expect("secret env");
        assert_eq!((m.env.as_deref(), m.required, m.target.as_str()), (Some("TOKEN"), true, ""));
        let m = parse_mount("type=tmpfs,dst=/tmp,size=64m").expect("tmpfs");
        assert_eq!(m.size, Some(64 << 20));
        let m = parse_mount("type=ssh").expect("ssh");
        assert_eq!(m.target, "/run/buildkit/ssh_agent.0");
        let m = parse_mount("type=cache,target=/c,mode=0700,uid=1000,gid=1000,id=x").expect("cache opts");
        assert_eq!((m.mode, m.uid, m.id.as_deref()), (Some(0o700), Some(1000), Some("x")));
    }

    #[test]
    fn mount_errors() {
        assert_eq!(parse_mount("type=nfs,target=/x").expect_err("type"), "unsupported mount type \"nfs\"");
        assert_eq!(parse_mount("type=cache").expect_err("target"), "mount type cache requires a target");
        assert!(parse_mount("type=bind,target=/x,size=1").expect_err("key").contains("unexpected key 'size'"));
        assert!(parse_mount("type=cache,target=/x,sharing=wide").is_err());
        assert!(parse_mount("type=secret").is_err());
        assert!(parse_mount("type=cache,target=\"/x").is_err());
    }
}
