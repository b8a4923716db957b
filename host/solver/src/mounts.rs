//! What a RUN's process gets beyond its layers, BuildKit-style: a `RUN <<EOF` script with a
//! shebang as `/dev/pipes/EOF`, and `RUN --mount=type=tmpfs|secret|cache`. None of it reaches
//! a layer (the agent keeps mounts and files out of the overlay's upper dir), and secret
//! values never reach the cache key, the history or the logs: only their ids do.
//!
//! Cache mounts persist across builds: the guest keeps each id in `/run/kiln/cache/<n>` for
//! the build, uploaded at first use from `<store>/cache-mounts/<sha256(id)>.tar` and written
//! back there (temp file + rename) when the build ends.

use std::collections::BTreeMap;

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

/// The RUN's argv and what goes with it.
pub struct Prepared {
    pub argv: Vec<String>,
    pub files: Vec<RunFile>,
    /// Mounts other than cache mounts (those need the guest's cache dirs: [`CacheUse`]).
    pub mounts: Vec<RunMount>,
    pub caches: Vec<CacheUse>,
    /// `NAME=value` of secrets mounted as environment variables (`env=`).
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

/// Prepares a RUN: `secrets` are the build's `--secret` values by id.
pub fn prepare(run: &Run, config: &ImageConfig, secrets: &BTreeMap<String, Vec<u8>>) -> Result<Prepared, BuildError> {
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
            MountType::Bind => return Err(BuildError::Invalid("RUN --mount=type=bind is not supported yet".into())),
            MountType::Ssh => return Err(BuildError::Invalid("RUN --mount=type=ssh is not supported yet".into())),
        }
    }
    Ok(Prepared { argv, files, mounts, caches, secret_env, key })
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
        let p = prepare(&run_of("RUN <<EOF\n#!/bin/sh\necho hi\nEOF"), &config, &secrets).expect("script");
        assert_eq!(p.argv, vec!["/dev/pipes/EOF"]);
        assert_eq!(p.files[0].mode, 0o755);
        let p = prepare(&run_of("RUN --mount=type=secret,id=tok --mount=type=tmpfs,target=t --mount=type=cache,target=/c true"), &config, &secrets)
            .expect("mounts");
        assert_eq!(p.mounts.len(), 2);
        assert!(matches!(&p.mounts[0], RunMount::Secret { target, mode: 0o400, .. } if target == "/run/secrets/tok"));
        assert!(matches!(&p.mounts[1], RunMount::Tmpfs { target, .. } if target == "/w/t"));
        assert_eq!(p.caches, vec![CacheUse { id: "/c".into(), target: "/c".into() }]);
        assert!(!p.key.contains("s3cr3t"), "secret values never reach the key");
        assert!(prepare(&run_of("RUN --mount=type=secret,id=nope,required true"), &config, &secrets).is_err());
        assert!(prepare(&run_of("RUN --mount=type=secret,id=nope true"), &config, &secrets).expect("optional").mounts.is_empty());
    }
}
