//! Containers on disk: `$KILN_ROOT/containers/<id>/` holds `config.json` (written once, at
//! create), `state.json` (rewritten atomically: temp file + rename), `log.json` (Docker's
//! json-file log), `rw.tar` (the writable layer, an OCI layer tar, once the container has
//! run) and the supervisor's control socket. Every change happens under a lock
//! (`containers/.lock`), so concurrent kiln processes never lose an update and names stay
//! unique; readers need no lock (whole files appear by rename).
//!
//! This module only keeps records: it never starts or stops anything.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::names::valid_name;
use super::ports::PortMapping;
use crate::spec::ProcessSpec;
use crate::RuntimeError;

/// What a container is, fixed at create.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ContainerConfig {
    /// 64 lowercase hex digits.
    pub id: String,
    pub name: String,
    /// The image as the user named it, and the manifest digest it resolved to.
    pub image: String,
    pub image_digest: String,
    /// RFC 3339.
    pub created: String,
    pub argv: Vec<String>,
    pub env: Vec<String>,
    pub cwd: String,
    pub user: String,
    pub hostname: String,
    pub uid: u32,
    pub gid: u32,
    #[serde(default)]
    pub groups: Vec<u32>,
    pub tty: bool,
    pub interactive: bool,
    /// `default` or `none`.
    pub network: String,
    pub memory_mib: u32,
    pub cpus: u32,
    /// Signal number `kiln stop` sends first, and how long it waits before SIGKILL.
    pub stop_signal: i32,
    pub stop_timeout: u64,
    /// `--rm`: removed when it exits.
    pub auto_remove: bool,
    /// The image's layers (bottom first).
    pub layers: Vec<LayerRef>,
    /// Published ports as asked for (`host_port` 0: any free one).
    #[serde(default)]
    pub ports: Vec<PortMapping>,
    /// Volumes, host directories and tmpfs mounts.
    #[serde(default)]
    pub mounts: Vec<super::volumes::VolumeMount>,
    /// `--read-only`: the root filesystem is read-only (mounts and tmpfs stay writable).
    #[serde(default)]
    pub read_only: bool,
    /// `--init`: a small init is process 1 and runs the main process.
    #[serde(default)]
    pub init: bool,
    /// The image's platform (`linux/arm64`); another architecture than the host's runs under
    /// emulation. Empty: the host's.
    #[serde(default)]
    pub platform: String,
}

impl ContainerConfig {
    /// The main process as `kiln ps` shows it.
    pub fn command_line(&self) -> String {
        self.argv.iter().map(|a| if a.contains(' ') { format!("{a:?}") } else { a.clone() }).collect::<Vec<_>>().join(" ")
    }

    pub fn spec(&self) -> ProcessSpec {
        ProcessSpec { argv: self.argv.clone(), env: self.env.clone(), cwd: self.cwd.clone(), user: self.user.clone(), hostname: self.hostname.clone() }
    }
}

/// A layer of the container's image.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LayerRef {
    pub digest: String,
    pub diff_id: String,
    pub size: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Created,
    Running,
    Exited,
}

/// What a container is doing, rewritten as it changes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ContainerState {
    pub status: Status,
    /// The process that owns the container's VM while it runs, and its start time (in clock
    /// ticks since boot, `/proc/PID/stat` field 22), so a reused pid is not mistaken for it.
    #[serde(default)]
    pub owner_pid: Option<u32>,
    #[serde(default)]
    pub owner_start: Option<u64>,
    #[serde(default)]
    pub started_at: Option<String>,
    #[serde(default)]
    pub finished_at: Option<String>,
    #[serde(default)]
    pub exit_code: Option<i32>,
    /// Why the container stopped, when not by its own exit (e.g. its supervisor died).
    #[serde(default)]
    pub error: Option<String>,
    /// Published ports as bound while it runs.
    #[serde(default)]
    pub ports: Vec<PortMapping>,
}

impl ContainerState {
    pub fn created() -> Self {
        Self { status: Status::Created, owner_pid: None, owner_start: None, started_at: None, finished_at: None, exit_code: None, error: None, ports: vec![] }
    }
}

/// A container's record, as read.
#[derive(Debug, Clone)]
pub struct Container {
    pub config: ContainerConfig,
    pub state: ContainerState,
    pub dir: PathBuf,
}

impl Container {
    pub fn short_id(&self) -> &str {
        &self.config.id[..12]
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.join("log.json")
    }

    pub fn rw_layer(&self) -> PathBuf {
        self.dir.join("rw.tar")
    }

    /// Running, or starting (a live process owns it and is booting its VM).
    pub fn is_running(&self) -> bool {
        self.state.status == Status::Running || (self.state.status == Status::Created && self.state.owner_pid.is_some())
    }
}

/// The containers of one store.
pub struct Containers {
    dir: PathBuf,
}

/// Holds `containers/.lock` until dropped.
pub struct ContainersLock(#[allow(dead_code)] File);

fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> RuntimeError {
    let c = context.into();
    move |e| RuntimeError::io(c, e)
}

/// Writes `bytes` to `path` atomically (temp file in the same directory, fsync, rename).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), RuntimeError> {
    let dir = path.parent().ok_or_else(|| RuntimeError::Invalid(format!("{} has no parent", path.display())))?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(io(format!("writing {}", path.display())))?;
    tmp.write_all(bytes).and_then(|()| tmp.as_file().sync_all()).map_err(io(format!("writing {}", path.display())))?;
    tmp.persist(path).map_err(|e| RuntimeError::io(format!("writing {}", path.display()), e.error))?;
    Ok(())
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T, RuntimeError> {
    let bytes = fs::read(path).map_err(io(format!("reading {}", path.display())))?;
    serde_json::from_slice(&bytes).map_err(|e| RuntimeError::Invalid(format!("{} is corrupt: {e}", path.display())))
}

impl Containers {
    /// The containers under store root `root` (the directory is made on first use).
    pub fn new(root: &Path) -> Self {
        Self { dir: root.join("containers") }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Takes the lock that every change holds.
    pub fn lock(&self) -> Result<ContainersLock, RuntimeError> {
        // Only the user enters: logs, writable layers and the control sockets are private.
        kiln_sys::fs::private_dir(std::fs::DirBuilder::new().recursive(true)).create(&self.dir).map_err(io(format!("creating {}", self.dir.display())))?;
        let f = File::create(self.dir.join(".lock")).map_err(io("opening the containers lock"))?;
        f.lock().map_err(|e| RuntimeError::io("locking the containers", e))?;
        Ok(ContainersLock(f))
    }

    /// Records a new container; its name must be unused.
    pub fn create(&self, config: &ContainerConfig) -> Result<Container, RuntimeError> {
        let _lock = self.lock()?;
        if let Some(other) = self.list()?.into_iter().find(|c| c.config.name == config.name) {
            return Err(RuntimeError::Conflict(format!(
                "the container name \"/{}\" is already in use by container \"{}\": remove (or rename) that container to reuse the name",
                config.name, other.config.id
            )));
        }
        let dir = self.dir.join(&config.id);
        kiln_sys::fs::private_dir(&mut std::fs::DirBuilder::new()).create(&dir).map_err(io(format!("creating {}", dir.display())))?;
        let written = serde_json::to_vec_pretty(config)
            .map_err(|e| RuntimeError::Invalid(e.to_string()))
            .and_then(|b| write_atomic(&dir.join("config.json"), &b))
            .and_then(|()| self.write_state(&dir, &ContainerState::created()));
        if let Err(e) = written {
            let _ = fs::remove_dir_all(&dir);
            return Err(e);
        }
        self.read(&dir)
    }

    fn write_state(&self, dir: &Path, state: &ContainerState) -> Result<(), RuntimeError> {
        let bytes = serde_json::to_vec_pretty(state).map_err(|e| RuntimeError::Invalid(e.to_string()))?;
        write_atomic(&dir.join("state.json"), &bytes)
    }

    /// Makes process `pid` the owner of container `id` (it is about to start it), unless a
    /// live process owns it already: one container never runs twice.
    pub fn claim(&self, id: &str, pid: u32) -> Result<(), RuntimeError> {
        let _lock = self.lock()?;
        let dir = self.dir.join(id);
        let current = self.read(&dir)?;
        if current.is_running() && current.state.owner_pid != Some(pid) {
            return Err(RuntimeError::Conflict(format!("container {} is already running", current.config.name)));
        }
        let mut state = ContainerState::created();
        state.owner_pid = Some(pid);
        state.owner_start = process_start(pid);
        self.write_state(&dir, &state)
    }

    /// Records the end of the run that process `pid` owned (nothing if another owns it now).
    pub fn release(&self, id: &str, pid: u32, change: impl FnOnce(&mut ContainerState)) -> Result<(), RuntimeError> {
        let _lock = self.lock()?;
        let dir = self.dir.join(id);
        let mut state: ContainerState = read_json(&dir.join("state.json"))?;
        if state.owner_pid.is_some_and(|p| p != pid) {
            return Ok(());
        }
        change(&mut state);
        state.owner_pid = None;
        state.owner_start = None;
        self.write_state(&dir, &state)
    }

    /// Changes a container's state under the lock.
    pub fn update(&self, id: &str, change: impl FnOnce(&mut ContainerState)) -> Result<ContainerState, RuntimeError> {
        let _lock = self.lock()?;
        let dir = self.dir.join(id);
        let mut state: ContainerState = read_json(&dir.join("state.json"))?;
        change(&mut state);
        self.write_state(&dir, &state)?;
        Ok(state)
    }

    fn read(&self, dir: &Path) -> Result<Container, RuntimeError> {
        let config: ContainerConfig = read_json(&dir.join("config.json"))?;
        let mut state: ContainerState = read_json(&dir.join("state.json"))?;
        let owned = state.status == Status::Running || (state.status == Status::Created && state.owner_pid.is_some());
        if owned && !owner_alive(&state) {
            // Its owner died without a word (SIGKILL): the VM died with it.
            state.status = Status::Exited;
            state.exit_code = state.exit_code.or(Some(137));
            state.error = Some("the process that ran the container was killed".into());
            state.owner_pid = None;
        }
        Ok(Container { config, state, dir: dir.to_path_buf() })
    }

    /// Every container, newest first.
    pub fn list(&self) -> Result<Vec<Container>, RuntimeError> {
        let mut out = Vec::new();
        let entries = match fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(RuntimeError::io(format!("listing {}", self.dir.display()), e)),
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.len() != 64 || !name.bytes().all(|b| b.is_ascii_hexdigit()) {
                continue; // the lock, a removal in progress
            }
            // A container being created or removed right now may lack its files: skip it.
            if let Ok(c) = self.read(&e.path()) {
                out.push(c);
            }
        }
        out.sort_by(|a, b| b.config.created.cmp(&a.config.created));
        Ok(out)
    }

    /// A container by name, full id or unique id prefix.
    pub fn get(&self, what: &str) -> Result<Container, RuntimeError> {
        let all = self.list()?;
        let what_trimmed = what.trim_start_matches('/');
        if let Some(c) = all.iter().find(|c| c.config.name == what_trimmed || c.config.id == what) {
            return Ok(c.clone());
        }
        let matches: Vec<&Container> = if !what.is_empty() && what.bytes().all(|b| b.is_ascii_hexdigit()) {
            all.iter().filter(|c| c.config.id.starts_with(what)).collect()
        } else {
            vec![]
        };
        match matches.as_slice() {
            [one] => Ok((*one).clone()),
            [] => Err(RuntimeError::NoSuchContainer(what.to_string())),
            _ => Err(RuntimeError::Invalid(format!("multiple containers match the id prefix {what}: give more of it"))),
        }
    }

    /// Renames container `id`; the new name must be valid and unused.
    pub fn rename(&self, id: &str, name: &str) -> Result<(), RuntimeError> {
        let name = name.trim_start_matches('/');
        if !valid_name(name) {
            return Err(RuntimeError::Invalid(format!("invalid container name ({name}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed")));
        }
        let _lock = self.lock()?;
        if let Some(other) = self.list()?.into_iter().find(|c| c.config.name == name && c.config.id != id) {
            return Err(RuntimeError::Conflict(format!("the container name \"/{name}\" is already in use by container \"{}\"", other.config.id)));
        }
        let dir = self.dir.join(id);
        let mut config: ContainerConfig = read_json(&dir.join("config.json"))?;
        config.name = name.to_string();
        let bytes = serde_json::to_vec_pretty(&config).map_err(|e| RuntimeError::Invalid(e.to_string()))?;
        write_atomic(&dir.join("config.json"), &bytes)
    }

    /// The store's pin file of container `id`: it keeps the blobs of the container's image
    /// (manifest, config, layers) alive while the container exists, whatever `rmi -f` or a
    /// prune do to the image's name and record.
    pub fn pin_path(&self, id: &str) -> PathBuf {
        let root = self.dir.parent().unwrap_or(&self.dir);
        root.join("pins").join("containers").join(id)
    }

    /// Writes the pin of container `id` for `digests`.
    pub fn pin(&self, id: &str, digests: &[String]) -> Result<(), RuntimeError> {
        let path = self.pin_path(id);
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir).map_err(io(format!("creating {}", dir.display())))?;
        }
        write_atomic(&path, digests.join("\n").as_bytes())
    }

    /// Deletes a container's record and files, and its anonymous volumes when asked or when
    /// it was run with `--rm` (Docker's rule). The caller checked it is not running.
    pub fn remove(&self, id: &str, anonymous_volumes: bool) -> Result<(), RuntimeError> {
        let _lock = self.lock()?;
        let dir = self.dir.join(id);
        let config: Option<ContainerConfig> = read_json(&dir.join("config.json")).ok();
        let _ = fs::remove_file(self.pin_path(id));
        // Renamed first, so no reader sees a half-deleted container.
        let gone = self.dir.join(format!(".removing-{id}"));
        fs::rename(&dir, &gone).map_err(io(format!("removing container {id}")))?;
        fs::remove_dir_all(&gone).map_err(io(format!("removing container {id}")))?;
        match config {
            Some(c) if anonymous_volumes || c.auto_remove => super::volumes::remove_anonymous(self.dir.parent().unwrap_or(&self.dir), &c.mounts),
            _ => Ok(()),
        }
    }
}

/// When process `pid` started (an opaque per-OS stamp), if it runs: with the pid, it names one
/// process even after the pid is reused.
pub fn process_start(pid: u32) -> Option<u64> {
    kiln_sys::process::start_time(pid)
}

fn owner_alive(state: &ContainerState) -> bool {
    match (state.owner_pid, state.owner_start) {
        (Some(pid), Some(start)) => process_start(pid) == Some(start),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(id: char, name: &str) -> ContainerConfig {
        ContainerConfig {
            id: std::iter::repeat_n(id, 64).collect(),
            name: name.into(),
            image: "busybox".into(),
            image_digest: "sha256:00".into(),
            created: format!("2026-01-01T00:00:0{id}Z"),
            argv: vec!["sh".into(), "-c".into(), "echo hi there".into()],
            env: vec![],
            cwd: "/".into(),
            user: String::new(),
            hostname: "h".into(),
            uid: 0,
            gid: 0,
            groups: vec![],
            tty: false,
            interactive: false,
            network: "default".into(),
            memory_mib: 512,
            cpus: 1,
            stop_signal: 15,
            stop_timeout: 10,
            auto_remove: false,
            layers: vec![],
            ports: vec![],
            mounts: vec![],
            read_only: false,
            init: false,
            platform: String::new(),
        }
    }

    #[test]
    fn create_get_update_remove() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cs = Containers::new(dir.path());
        assert!(cs.list().expect("empty").is_empty());
        cs.create(&config('a', "web")).expect("create");
        cs.create(&config('b', "db")).expect("create");
        let err = cs.create(&config('c', "web")).expect_err("name taken");
        assert!(err.to_string().contains("already in use"), "{err}");
        assert!(!dir.path().join("containers").join("c".repeat(64)).exists(), "nothing left of the refused one");
        assert_eq!(cs.list().expect("list").iter().map(|c| c.config.name.as_str()).collect::<Vec<_>>(), ["db", "web"]);
        assert_eq!(cs.get("web").expect("by name").config.id, "a".repeat(64));
        assert_eq!(cs.get("bbb").expect("by prefix").config.name, "db");
        assert!(matches!(cs.get("nope"), Err(RuntimeError::NoSuchContainer(_))));
        assert_eq!(cs.get("db").expect("db").config.command_line(), "sh -c \"echo hi there\"");
        // A running state whose owner is gone reads as exited.
        let me = std::process::id();
        cs.update(&"a".repeat(64), |s| {
            s.status = Status::Running;
            s.owner_pid = Some(me);
            s.owner_start = process_start(me);
        })
        .expect("update");
        assert!(cs.get("web").expect("web").is_running());
        cs.update(&"a".repeat(64), |s| s.owner_start = Some(1)).expect("update");
        let dead = cs.get("web").expect("web");
        assert_eq!((dead.state.status, dead.state.exit_code), (Status::Exited, Some(137)));
        // One owner at a time: a second start is refused while the first owner lives.
        let b = "b".repeat(64);
        cs.claim(&b, me).expect("claim");
        assert!(cs.get("db").expect("db").is_running(), "a claimed container is starting");
        let err = cs.claim(&b, 1).expect_err("already owned");
        assert!(err.to_string().contains("already running"), "{err}");
        cs.release(&b, 1, |s| s.status = Status::Exited).expect("not the owner: no-op");
        assert!(cs.get("db").expect("db").is_running());
        cs.release(&b, me, |s| s.status = Status::Exited).expect("release");
        assert!(!cs.get("db").expect("db").is_running());
        cs.remove(&"a".repeat(64), false).expect("remove");
        assert!(matches!(cs.get("web"), Err(RuntimeError::NoSuchContainer(_))));
        assert!(valid_name("web-1.a_b") && !valid_name("-x") && !valid_name("a") && !valid_name("a/b"));
    }
}
