//! What a container's main process is, from its image's config and `kiln run`'s flags, by
//! Docker's rules: `--entrypoint` replaces the image's entrypoint and drops its `Cmd`; command
//! arguments replace `Cmd`; `-e` overrides the image's `Env` by key; `-w` and `-u` override
//! `WorkingDir` and `User`; `PATH`, `HOSTNAME` (and `TERM` with `-t`) are set as Docker sets
//! them.
//!
//! Pure: reads no files and starts nothing (user names are resolved elsewhere, from the
//! image's own `/etc/passwd`).

use kiln_store::image::RunConfig;

use crate::RuntimeError;

/// Docker's default `PATH`.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The flags of `kiln run` that shape the main process.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// `--entrypoint`: `Some("")` clears the image's entrypoint.
    pub entrypoint: Option<String>,
    /// The arguments after the image name.
    pub command: Vec<String>,
    /// `-e`/`--env-file` entries, `KEY=VALUE`, in order (later wins).
    pub env: Vec<String>,
    pub workdir: Option<String>,
    pub user: Option<String>,
    pub hostname: Option<String>,
    pub tty: bool,
}

/// The main process of a container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessSpec {
    pub argv: Vec<String>,
    pub env: Vec<String>,
    pub cwd: String,
    /// `USER[:GROUP]` as given (empty: root).
    pub user: String,
    pub hostname: String,
}

fn key(entry: &str) -> &str {
    entry.split_once('=').map_or(entry, |(k, _)| k)
}

/// Sets `entry` in `env`, replacing an entry of the same key in place.
fn set(env: &mut Vec<String>, entry: String) {
    match env.iter_mut().find(|e| key(e) == key(&entry)) {
        Some(e) => *e = entry,
        None => env.push(entry),
    }
}

/// The main process for `image` run with `opts`; `id` is the container's id (its first 12
/// characters are the default hostname, as in Docker).
pub fn process_spec(image: &RunConfig, opts: &RunOptions, id: &str) -> Result<ProcessSpec, RuntimeError> {
    let (entrypoint, cmd) = match &opts.entrypoint {
        Some(e) if e.is_empty() => (vec![], opts.command.clone()),
        Some(e) => (vec![e.clone()], opts.command.clone()),
        None => {
            let cmd = if opts.command.is_empty() { image.cmd.clone().unwrap_or_default() } else { opts.command.clone() };
            (image.entrypoint.clone().unwrap_or_default(), cmd)
        }
    };
    let argv: Vec<String> = entrypoint.into_iter().chain(cmd).collect();
    if argv.is_empty() {
        return Err(RuntimeError::Invalid("no command specified: the image has no Entrypoint or Cmd, give one after the image name".into()));
    }
    let hostname = match &opts.hostname {
        Some(h) => check_hostname(h)?,
        None => id.chars().take(12).collect(),
    };
    let mut env = vec![format!("PATH={DEFAULT_PATH}"), format!("HOSTNAME={hostname}")];
    if opts.tty {
        env.push("TERM=xterm".into());
    }
    for e in image.env.iter().flatten().chain(&opts.env) {
        if key(e).is_empty() {
            return Err(RuntimeError::Invalid(format!("invalid environment variable {e:?}: the name is empty")));
        }
        set(&mut env, e.clone());
    }
    let cwd = opts.workdir.clone().or_else(|| image.working_dir.clone()).filter(|w| !w.is_empty()).unwrap_or_else(|| "/".into());
    if !cwd.starts_with('/') {
        return Err(RuntimeError::Invalid(format!("the working directory {cwd:?} is invalid: it needs to be an absolute path")));
    }
    let user = opts.user.clone().or_else(|| image.user.clone()).unwrap_or_default();
    Ok(ProcessSpec { argv, env, cwd, user, hostname })
}

/// A hostname as Linux takes it (RFC 1123 labels, at most 64 bytes).
fn check_hostname(h: &str) -> Result<String, RuntimeError> {
    let ok = !h.is_empty()
        && h.len() <= 64
        && h.split('.').all(|l| !l.is_empty() && !l.starts_with('-') && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'));
    if ok {
        Ok(h.to_string())
    } else {
        Err(RuntimeError::Invalid(format!("invalid hostname {h:?}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(entrypoint: Option<&[&str]>, cmd: Option<&[&str]>) -> RunConfig {
        let v = |x: &[&str]| x.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        RunConfig {
            entrypoint: entrypoint.map(v),
            cmd: cmd.map(v),
            env: Some(vec!["PATH=/opt/bin:/bin".into(), "A=image".into()]),
            working_dir: Some("/srv".into()),
            user: Some("nobody".into()),
            ..Default::default()
        }
    }

    const ID: &str = "0123456789abcdef0123";

    #[test]
    fn docker_combines_entrypoint_cmd_and_flags() {
        let img = image(Some(&["/entry", "-x"]), Some(&["default"]));
        let p = process_spec(&img, &RunOptions::default(), ID).expect("spec");
        assert_eq!(p.argv, ["/entry", "-x", "default"]);
        let p = process_spec(&img, &RunOptions { command: vec!["mine".into()], ..Default::default() }, ID).expect("spec");
        assert_eq!(p.argv, ["/entry", "-x", "mine"]);
        // --entrypoint drops the image's Cmd; an empty one clears the entrypoint.
        let p = process_spec(&img, &RunOptions { entrypoint: Some("/bin/sh".into()), ..Default::default() }, ID).expect("spec");
        assert_eq!(p.argv, ["/bin/sh"]);
        let p = process_spec(&img, &RunOptions { entrypoint: Some(String::new()), command: vec!["ls".into()], ..Default::default() }, ID).expect("spec");
        assert_eq!(p.argv, ["ls"]);
        let err = process_spec(&image(None, None), &RunOptions::default(), ID).expect_err("nothing to run");
        assert!(err.to_string().contains("no command specified"), "{err}");
    }

    #[test]
    fn env_workdir_user_and_hostname() {
        let img = image(None, Some(&["sh"]));
        let opts = RunOptions { env: vec!["A=flag".into(), "B=1".into()], tty: true, ..Default::default() };
        let p = process_spec(&img, &opts, ID).expect("spec");
        assert_eq!(p.env, ["PATH=/opt/bin:/bin", "HOSTNAME=0123456789ab", "TERM=xterm", "A=flag", "B=1"]);
        assert_eq!((p.cwd.as_str(), p.user.as_str(), p.hostname.as_str()), ("/srv", "nobody", "0123456789ab"));
        let opts = RunOptions { workdir: Some("/w".into()), user: Some("1000:1000".into()), hostname: Some("web".into()), ..Default::default() };
        let p = process_spec(&img, &opts, ID).expect("spec");
        assert_eq!((p.cwd.as_str(), p.user.as_str(), p.hostname.as_str()), ("/w", "1000:1000", "web"));
        assert!(p.env.contains(&"HOSTNAME=web".to_string()));
        assert!(process_spec(&img, &RunOptions { workdir: Some("rel".into()), ..Default::default() }, ID).is_err());
        assert!(process_spec(&img, &RunOptions { hostname: Some("bad_name".into()), ..Default::default() }, ID).is_err());
        assert!(process_spec(&img, &RunOptions { env: vec!["=x".into()], ..Default::default() }, ID).is_err());
        let bare = RunConfig { cmd: Some(vec!["sh".into()]), ..Default::default() };
        let p = process_spec(&bare, &RunOptions::default(), ID).expect("spec");
        assert_eq!(p.env[0], format!("PATH={DEFAULT_PATH}"));
        assert_eq!(p.cwd, "/");
    }
}
