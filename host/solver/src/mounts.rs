//! What a RUN's process gets beyond its layers, BuildKit-style: a `RUN <<EOF` script with a
//! shebang as `/dev/pipes/EOF`, and `RUN --mount=type=tmpfs|secret|cache|bind`. None of it
//! reaches a layer (the agent keeps mounts and files out of the overlay's upper dir), and
//! secret values never reach the cache key, the history or the logs: only their ids do.
//!
//! Bind mounts are only named here ([`BindUse`]); what they hold is found, keyed and uploaded
//! by [`crate::bind`]. An ssh mount ([`SshUse`]) is a socket in the guest forwarded to the
//! host socket `kiln build --ssh ID=SOCKET` named; its key holds the id, never the socket.
//!
//! Cache mounts persist across builds: the guest keeps each id in `/run/kiln/cache/<n>` for
//! the build, uploaded at first use from `<store>/cache-mounts/<sha256(id)>.tar` and written
//! back there (temp file + rename) when the build ends.

use std::collections::BTreeMap;
use std::path::PathBuf;

use kiln_frontend::command::{Mount, MountType, Run, RunProgram};
use kiln_frontend::config::ImageConfig;
use kiln_sandbox::agent::{RunFile, RunMount};

use crate::BuildError;

/// A cache mount the process needs: its id and where the guest mounts it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheUse {
    pub id: String,
    pub target: String,
}

/// A bind mount the process needs (`RUN --mount=type=bind`), as written: [`crate::bind`]
/// finds its content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindUse {
    /// The stage (name or index) or image to read from; `None`: the build context.
    pub from: Option<String>,
    /// The path in `from` (or the context), `/` when not given.
    pub source: String,
    /// Absolute path in the container.
    pub target: String,
    /// Read-only unless `rw`/`readwrite`; writes to a read-write bind are discarded.
    pub readonly: bool,
}

/// An ssh mount (`RUN --mount=type=ssh`): a socket at `target` whose connections reach the
/// host socket given for `id`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshUse {
    pub id: String,
    pub target: String,
    pub host_socket: PathBuf,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

/// The RUN's argv and what goes with it.
pub struct Prepared {
    pub argv: Vec<String>,
    pub files: Vec<RunFile>,
    /// Mounts other than cache mounts (those need the guest's cache dirs: [`CacheUse`]).
    pub mounts: Vec<RunMount>,
    pub caches: Vec<CacheUse>,
    pub binds: Vec<BindUse>,
    pub ssh: Vec<SshUse>,
    /// `NAME=value` of secrets mounted as environment variables (`env=`), and
    /// `SSH_AUTH_SOCK` (the first ssh mount's target, as BuildKit sets it).
    pub secret_env: Vec<String>,
    /// Everything about the mounts that belongs in the cache key (no secret values).
    pub key: String,
}

fn absolute(target: &str, workdir: &str) -> String {
    if target.starts_with('/') {
        target.to_string()
    } else {
        format!("{}/{target}", workdir.trim_end_matches('/'))
    }
}

/// Prepares a RUN: `secrets` are the build's `--secret` values by id, `ssh` its `--ssh`
/// sockets by id.
pub fn prepare(
    run: &Run,
    config: &ImageConfig,
    secrets: &BTreeMap<String, Vec<u8>>,
    ssh: &BTreeMap<String, PathBuf>,
) -> Result<Prepared, BuildError> {
    let workdir = config.working_dir.clone().unwrap_or_else(|| "/".into());
    let mut files = Vec::new();
    let mut key = String::new();
    let argv = match run.program() {
        RunProgram::Command(c) => config.argv(&c),
        RunProgram::Script { name, data } => {
            let path = format!("/dev/pipes/{name}");
            key.push_str(&format!("script {name}:{data}\0"));
            files.push(RunFile { path: path.clone(), data: data.into_bytes(), mode: 0o755, uid: 0, gid: 0 });
            vec![path]
        }
    };
    let mut mounts = Vec::new();
    let mut caches = Vec::new();
    let mut binds = Vec::new();
    let mut ssh_uses = Vec::new();
    let mut secret_env = Vec::new();
    for m in &run.mounts {
        let target = absolute(&m.target, &workdir);
        match m.kind {
            MountType::Tmpfs => {
                key.push_str(&format!("tmpfs {target} {:?}\0", m.size));
                mounts.push(RunMount::Tmpfs { target, size_bytes: m.size });
            }
            MountType::Secret => {
                let id = secret_id(m)?;
                let as_env = m.env.is_some() && m.target.is_empty();
                let target = if m.target.is_empty() { format!("/run/secrets/{id}") } else { target };
                key.push_str(&format!("secret {id} {target} {:?} {:?} {:?} {:?}\0", m.mode, m.uid, m.gid, m.env));
                if let (Some(name), Some(value)) = (&m.env, secrets.get(&id)) {
                    secret_env.push(format!("{name}={}", String::from_utf8_lossy(value)));
                }
                match secrets.get(&id) {
                    Some(_) if as_env => {}
                    Some(value) => mounts.push(RunMount::Secret {
                        target,
                        data: value.clone(),
                        mode: m.mode.unwrap_or(0o400),
                        uid: m.uid.unwrap_or(0),
                        gid: m.gid.unwrap_or(0),
                    }),
                    None if m.required => {
                        return Err(BuildError::Invalid(format!("secret {id} is required but was not given (--secret id={id},src=FILE)")))
                    }
                    None => {}
                }
            }
            MountType::Cache => {
                if m.from.is_some() || m.source.is_some() {
                    return Err(BuildError::Invalid("RUN --mount=type=cache with from= or source= is not supported yet".into()));
                }
                // BuildKit's default id is the target path.
                let id = m.id.clone().unwrap_or_else(|| target.clone());
                key.push_str(&format!("cache {id} {target}\0"));
                caches.push(CacheUse { id, target });
            }
            MountType::Bind => {
                let bind = BindUse {
                    from: m.from.clone(),
                    source: m.source.clone().unwrap_or_else(|| "/".into()),
                    target,
                    readonly: m.read_only,
                };
                // The content itself is keyed by the caller ([`crate::bind`]).
                key.push_str(&format!("bind {:?} {:?} {} ro={}\0", bind.from, bind.source, bind.target, bind.readonly));
                binds.push(bind);
            }
            MountType::Ssh => {
                let id = m.id.clone().unwrap_or_else(|| "default".into());
                let (mode, uid, gid) = (m.mode.unwrap_or(0o600), m.uid.unwrap_or(0), m.gid.unwrap_or(0));
                key.push_str(&format!("ssh {id} {target} {mode:o} {uid} {gid}\0"));
                match ssh.get(&id) {
                    Some(host_socket) => ssh_uses.push(SshUse { id, target, host_socket: host_socket.clone(), mode, uid, gid }),
                    None if m.required => {
                        return Err(BuildError::Invalid(format!("ssh agent {id} is required but was not given (kiln build --ssh {id}=SOCKET, or --ssh default)")))
                    }
                    // BuildKit leaves an optional mount out when its id was not given.
                    None => {}
                }
            }
        }
    }
    if let Some(first) = ssh_uses.first() {
        if config.env_value("SSH_AUTH_SOCK").is_none() {
            secret_env.push(format!("SSH_AUTH_SOCK={}", first.target));
        }
    }
    Ok(Prepared { argv, files, mounts, caches, binds, ssh: ssh_uses, secret_env, key })
}

/// A secret mount's id: `id=`, else the target's file name (BuildKit's rule).
fn secret_id(m: &Mount) -> Result<String, BuildError> {
    if let Some(id) = &m.id {
        return Ok(id.clone());
    }
    m.target
        .rsplit('/')
        .find(|s| !s.is_empty())
        .map(str::to_string)
        .ok_or_else(|| BuildError::Invalid("RUN --mount=type=secret needs id= or target=".into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_frontend::command::Command;

    fn prepare_no_ssh(run: &Run, config: &ImageConfig, secrets: &BTreeMap<String, Vec<u8>>) -> Result<Prepared, BuildError> {
        prepare(run, config, secrets, &BTreeMap::new())
    }

    fn run_of(line: &str) -> Run {
        let df = kiln_frontend::parse_full(&format!("FROM scratch\n{line}\n")).expect("parse");
        match &df.stages[0].commands[0].command {
            Command::Run(r) => r.clone(),
            other => panic!("not a RUN: {other:?}"),
        }
    }

    #[test]
    fn scripts_secrets_tmpfs_and_caches() {
        let config = ImageConfig { working_dir: Some("/w".into()), ..Default::default() };
        let secrets: BTreeMap<String, Vec<u8>> = [("tok".to_string(), b"s3cr3t".to_vec())].into();
        let p = prepare_no_ssh(&run_of("RUN <<EOF\n#!/bin/sh\necho hi\nEOF"), &config, &secrets).expect("script");
        assert_eq!(p.argv, vec!["/dev/pipes/EOF"]);
        assert_eq!(p.files[0].mode, 0o755);
        let p = prepare_no_ssh(&run_of("RUN --mount=type=secret,id=tok --mount=type=tmpfs,target=t --mount=type=cache,target=/c true"), &config, &secrets)
            .expect("mounts");
        assert_eq!(p.mounts.len(), 2);
        assert!(matches!(&p.mounts[0], RunMount::Secret { target, mode: 0o400, .. } if target == "/run/secrets/tok"));
        assert!(matches!(&p.mounts[1], RunMount::Tmpfs { target, .. } if target == "/w/t"));
        assert_eq!(p.caches, vec![CacheUse { id: "/c".into(), target: "/c".into() }]);
        assert!(!p.key.contains("s3cr3t"), "secret values never reach the key");
        assert!(prepare_no_ssh(&run_of("RUN --mount=type=secret,id=nope,required true"), &config, &secrets).is_err());
        assert!(prepare_no_ssh(&run_of("RUN --mount=type=secret,id=nope true"), &config, &secrets).expect("optional").mounts.is_empty());
    }

    #[test]
    fn binds_are_named_with_their_defaults_and_keyed() {
        let config = ImageConfig { working_dir: Some("/w".into()), ..Default::default() };
        let none = BTreeMap::new();
        let p = prepare_no_ssh(&run_of("RUN --mount=type=bind,target=src --mount=type=bind,from=build,source=/out,target=/o,rw true"), &config, &none)
            .expect("binds");
        assert!(p.mounts.is_empty() && p.caches.is_empty());
        assert_eq!(
            p.binds,
            vec![
                BindUse { from: None, source: "/".into(), target: "/w/src".into(), readonly: true },
                BindUse { from: Some("build".into()), source: "/out".into(), target: "/o".into(), readonly: false },
            ]
        );
        // Every option that changes what the process sees changes the key.
        let key = |line: &str| prepare_no_ssh(&run_of(line), &config, &none).expect(line).key;
        let base = key("RUN --mount=type=bind,source=a,target=/t true");
        for other in [
            "RUN --mount=type=bind,source=b,target=/t true",
            "RUN --mount=type=bind,source=a,target=/u true",
            "RUN --mount=type=bind,source=a,target=/t,rw true",
            "RUN --mount=type=bind,source=a,target=/t,from=x true",
        ] {
            assert_ne!(key(other), base, "{other}");
        }
    }

    #[test]
    fn ssh_mounts_need_their_socket_unless_optional() {
        let config = ImageConfig::default();
        let none = BTreeMap::new();
        let ssh: BTreeMap<String, PathBuf> = [("default".to_string(), PathBuf::from("/tmp/agent.sock"))].into();
        let p = prepare(&run_of("RUN --mount=type=ssh true"), &config, &none, &ssh).expect("ssh");
        assert_eq!(
            p.ssh,
            vec![SshUse {
                id: "default".into(),
                target: "/run/buildkit/ssh_agent.0".into(),
                host_socket: "/tmp/agent.sock".into(),
                mode: 0o600,
                uid: 0,
                gid: 0
            }]
        );
        assert_eq!(p.secret_env, vec!["SSH_AUTH_SOCK=/run/buildkit/ssh_agent.0"]);
        assert!(!p.key.contains("/tmp/agent.sock"), "the host socket is not part of the key: {:?}", p.key);
        let p = prepare(&run_of("RUN --mount=type=ssh,id=other,target=/s,mode=0660,uid=7 true"), &config, &none, &ssh).expect("optional");
        assert!(p.ssh.is_empty() && p.secret_env.is_empty(), "an optional ssh id not given is left out");
        let e = prepare(&run_of("RUN --mount=type=ssh,id=other,required true"), &config, &none, &ssh).err().expect("required");
        assert!(e.to_string().contains("ssh agent other is required"), "{e}");
        // SSH_AUTH_SOCK set by ENV wins.
        let with_env = ImageConfig { env: vec!["SSH_AUTH_SOCK=/mine".into()], ..Default::default() };
        assert!(prepare(&run_of("RUN --mount=type=ssh true"), &with_env, &none, &ssh).expect("ssh").secret_env.is_empty());
    }
}
