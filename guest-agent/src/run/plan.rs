//! Everything a Run child needs, prepared before the fork.
//!
//! After `clone` in a multithreaded process the child may only make async-signal-safe calls, so
//! every string, path and pointer array is built here, in the parent, and the child just reads
//! them. Pure apart from allocation: unit-tested.

use std::ffi::{c_char, CString};

use kiln_protocol::{Network, RunSpec};

use super::usermounts::{self, UserFile, UserMount, SECRET_STAGE};
use crate::error::{Error, Result};

/// `PATH` used for the lookup when the environment has none (Docker's default).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// A character device node to create in the container's `/dev`.
pub struct DevNode {
    pub path: CString,
    pub major: u32,
    pub minor: u32,
}

/// Prepared arguments for the child; see [`super::child`].
pub struct Plan {
    pub rootfs: CString,
    pub proc_dir: CString,
    pub dev_dir: CString,
    pub sys_dir: CString,
    pub pts_dir: CString,
    pub shm_dir: CString,
    pub dev_nodes: Vec<DevNode>,
    /// (target, link path) symlinks in `/dev`.
    pub dev_links: Vec<(CString, CString)>,
    pub hostname: Vec<u8>,
    /// `/a`, `/a/b`, ... for `mkdir -p` of the cwd inside the new root.
    pub cwd_prefixes: Vec<CString>,
    pub cwd: CString,
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<libc::gid_t>,
    /// Paths to try with execve, in order.
    pub exec_candidates: Vec<CString>,
    pub argv: Vec<CString>,
    pub envp: Vec<CString>,
    /// `kiln: ARGV0: ` for the exec-failure message on stderr.
    pub exec_error_prefix: Vec<u8>,
    /// `RUN --mount`s, in order; their paths are filled in by `mountpoints::prepare_targets`.
    pub mounts: Vec<UserMount>,
    /// Files in `/dev` or in a tmpfs mount.
    pub files: Vec<UserFile>,
    /// `ROOTFS/dev/.kiln-secrets`, where the secrets tmpfs is staged.
    pub secret_stage: CString,
    /// A network namespace of its own with only `lo` (`RUN --network=none`).
    pub own_network: bool,
    /// The root filesystem is mounted read-only for the process (`kiln run --read-only`).
    pub readonly_root: bool,
    /// A small init is the pid namespace's process 1 (`kiln run --init`); see [`super::init`].
    pub init: bool,
    /// Drop CAP_NET_ADMIN and CAP_NET_RAW from the bounding set (the host is denied: see
    /// [`crate::net::deny_host`]).
    pub drop_net_caps: bool,
}

fn cstr(what: &str, s: impl Into<Vec<u8>>) -> Result<CString> {
    CString::new(s).map_err(|_| Error::msg(format!("run: {what} contains a NUL byte")))
}

/// Where to look for `argv0`: itself if it has a slash, else each `PATH` entry.
pub fn exec_candidates(argv0: &str, env: &[String]) -> Vec<String> {
    if argv0.contains('/') {
        return vec![argv0.to_string()];
    }
    let path = env
        .iter()
        .rev()
        .find_map(|kv| kv.strip_prefix("PATH="))
        .unwrap_or(DEFAULT_PATH);
    path.split(':')
        .map(|dir| if dir.is_empty() { "." } else { dir })
        .map(|dir| format!("{}/{argv0}", dir.trim_end_matches('/')))
        .collect()
}

/// `/a/b/c` -> `["/a", "/a/b", "/a/b/c"]`; relative paths are taken from `/`.
pub fn cwd_prefixes(cwd: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut acc = String::new();
    for comp in cwd.split('/').filter(|c| !c.is_empty() && *c != ".") {
        acc.push('/');
        acc.push_str(comp);
        out.push(acc.clone());
    }
    out
}

impl Plan {
    pub fn new(spec: &RunSpec) -> Result<Self> {
        let Some(argv0) = spec.argv.first() else {
            return Err(Error::msg("run: argv is empty"));
        };
        if argv0.is_empty() {
            return Err(Error::msg("run: argv[0] is empty"));
        }
        let root = spec.rootfs.trim_end_matches('/');
        let under = |rel: &str| cstr("rootfs", format!("{root}/{rel}"));
        let nodes = [
            ("null", 1, 3),
            ("zero", 1, 5),
            ("full", 1, 7),
            ("random", 1, 8),
            ("urandom", 1, 9),
            ("tty", 5, 0),
        ];
        let links = [
            ("/proc/self/fd", "fd"),
            ("/proc/self/fd/0", "stdin"),
            ("/proc/self/fd/1", "stdout"),
            ("/proc/self/fd/2", "stderr"),
            ("pts/ptmx", "ptmx"),
        ];
        let mounts = usermounts::mounts(&spec.mounts, &format!("{root}/dev"))?;
        let files = usermounts::files(&spec.files, &mounts)?;
        let cwd = if spec.cwd.is_empty() {
            "/".to_string()
        } else {
            spec.cwd.clone()
        };
        Ok(Self {
            rootfs: cstr("rootfs", root.to_string())?,
            proc_dir: under("proc")?,
            dev_dir: under("dev")?,
            sys_dir: under("sys")?,
            pts_dir: under("dev/pts")?,
            shm_dir: under("dev/shm")?,
            dev_nodes: nodes
                .iter()
                .map(|(n, major, minor)| {
                    Ok(DevNode {
                        path: under(&format!("dev/{n}"))?,
                        major: *major,
                        minor: *minor,
                    })
                })
                .collect::<Result<_>>()?,
            dev_links: links
                .iter()
                .map(|(t, l)| Ok((cstr("dev link", *t)?, under(&format!("dev/{l}"))?)))
                .collect::<Result<_>>()?,
            hostname: spec.hostname.as_bytes().to_vec(),
            cwd_prefixes: cwd_prefixes(&cwd)
                .into_iter()
                .map(|p| cstr("cwd", p))
                .collect::<Result<_>>()?,
            cwd: cstr(
                "cwd",
                if cwd.starts_with('/') {
                    cwd.clone()
                } else {
                    format!("/{cwd}")
                },
            )?,
            uid: spec.uid,
            gid: spec.gid,
            groups: spec.additional_gids.clone(),
            exec_candidates: exec_candidates(argv0, &spec.env)
                .into_iter()
                .map(|c| cstr("argv[0]", c))
                .collect::<Result<_>>()?,
            argv: spec
                .argv
                .iter()
                .map(|a| cstr("argv", a.as_str()))
                .collect::<Result<_>>()?,
            envp: spec
                .env
                .iter()
                .map(|e| cstr("env", e.as_str()))
                .collect::<Result<_>>()?,
            exec_error_prefix: format!("kiln: {argv0}: ").into_bytes(),
            mounts,
            files,
            secret_stage: under(&format!("dev/{SECRET_STAGE}"))?,
            own_network: spec.network == Network::None,
            readonly_root: spec.readonly_root,
            init: spec.init && spec.join.is_none(),
            drop_net_caps: crate::net::host_denied(),
        })
    }
}

/// A NULL-terminated array of pointers into `strings` (which must outlive it).
pub fn ptr_array(strings: &[CString]) -> Vec<*const c_char> {
    strings
        .iter()
        .map(|s| s.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_lookup_uses_env_path_or_default() {
        assert_eq!(exec_candidates("/bin/sh", &[]), vec!["/bin/sh"]);
        assert_eq!(exec_candidates("./x", &[]), vec!["./x"]);
        let env = vec!["A=1".to_string(), "PATH=/opt/bin::/usr/bin/".to_string()];
        assert_eq!(
            exec_candidates("ls", &env),
            vec!["/opt/bin/ls", "./ls", "/usr/bin/ls"]
        );
        assert_eq!(
            exec_candidates("ls", &[]).len(),
            DEFAULT_PATH.split(':').count()
        );
    }

    #[test]
    fn cwd_prefixes_build_mkdir_p_steps() {
        assert_eq!(cwd_prefixes("/a/b/"), vec!["/a", "/a/b"]);
        assert!(cwd_prefixes("/").is_empty());
        assert_eq!(cwd_prefixes("rel/./x"), vec!["/rel", "/rel/x"]);
    }

    #[test]
    fn plan_refuses_empty_argv_and_nul_bytes() {
        let mut spec = RunSpec {
            rootfs: "/r/".into(),
            argv: vec![],
            env: vec![],
            cwd: "/w".into(),
            uid: 0,
            gid: 0,
            additional_gids: vec![],
            hostname: "h".into(),
            stdout_stream: 1,
            stderr_stream: 2,
            stdin_stream: None,
            tty: None,
            run_id: None,
            join: None,
            readonly_root: false,
            init: false,
            mounts: vec![],
            files: vec![],
            network: Network::Guest,
        };
        assert!(Plan::new(&spec).is_err());
        spec.argv = vec!["sh".into(), "a\0b".into()];
        assert!(Plan::new(&spec).is_err());
        spec.argv = vec!["sh".into()];
        let plan = Plan::new(&spec).expect("plan");
        assert_eq!(plan.proc_dir.to_str().expect("utf8"), "/r/proc");
        assert_eq!(ptr_array(&plan.argv).len(), 2);
        assert_eq!(plan.secret_stage.as_c_str(), c"/r/dev/.kiln-secrets");
        spec.files = vec![kiln_protocol::RunFile {
            path: "/etc/x".into(),
            data: vec![],
            mode: 0o644,
            uid: 0,
            gid: 0,
        }];
        assert!(
            Plan::new(&spec).is_err(),
            "files outside /dev and tmpfs mounts"
        );
    }
}
