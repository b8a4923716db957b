//! Shared harness for the end-to-end tests: runs the real `kiln` binary, as an unprivileged
//! user when the tests run as root (`KILN_TEST_USER`, default `kilntest`, which
//! `tests/run.sh` creates), against a private store, with real QEMU guests.
//!
//! Every kiln process gets a unique `KILN_TEST_TAG` in its environment; QEMU inherits it, which
//! is how [`TestEnv::vm_processes`] finds VMs that a test's kiln left behind.

#![allow(dead_code)]

pub mod containers;
pub mod pty;
pub mod registry;
pub mod tars;
pub mod terminal;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

pub struct TestEnv {
    pub dir: tempfile::TempDir,
    pub root: PathBuf,
    pub home: PathBuf,
    pub tag: String,
    /// uid/gid kiln runs as, when the tests run as root.
    pub user: Option<(u32, u32)>,
}

fn id_of(user: &str, flag: &str) -> u32 {
    let out = Command::new("id").args([flag, user]).output().expect("run id");
    assert!(
        out.status.success(),
        "the end-to-end tests run kiln as the unprivileged user {user:?}, which does not exist: \
         create it (useradd -m {user}) or run the tests as a non-root user (tests/run.sh does this)"
    );
    String::from_utf8_lossy(&out.stdout).trim().parse().expect("numeric id")
}

fn current_uid() -> u32 {
    fs::metadata("/proc/self").expect("/proc/self").uid()
}

/// Fails the test with a clear message when a tool it needs is absent.
pub fn require_tool(tool: &str) {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
        .unwrap_or(false);
    assert!(found, "{tool} is required by the end-to-end tests: run the README's setup command (examples/setup-and-build.sh)");
}

impl TestEnv {
    pub fn new(name: &str) -> Self {
        let dir = tempfile::Builder::new().prefix(&format!("kiln-e2e-{name}-")).tempdir().expect("tempdir");
        let user = if current_uid() == 0 {
            let name = std::env::var("KILN_TEST_USER").unwrap_or_else(|_| "kilntest".into());
            Some((id_of(&name, "-u"), id_of(&name, "-g")))
        } else {
            None
        };
        let env = Self {
            root: dir.path().join("store"),
            home: dir.path().join("home"),
            tag: format!("{name}-{}-{}", std::process::id(), dir.path().display().to_string().len()),
            dir,
            user,
        };
        fs::create_dir(&env.home).expect("home");
        env.give_to_user(env.dir.path());
        env
    }

    /// Makes `path` (recursively) belong to the user kiln runs as.
    pub fn give_to_user(&self, path: &Path) {
        let Some((uid, gid)) = self.user else { return };
        std::os::unix::fs::lchown(path, Some(uid), Some(gid)).expect("chown");
        if fs::symlink_metadata(path).map(|m| m.is_dir()).unwrap_or(false) {
            for e in fs::read_dir(path).expect("readdir") {
                self.give_to_user(&e.expect("entry").path());
            }
        }
    }

    /// A build context with the given files (and busybox as `busybox` if asked).
    pub fn context(&self, name: &str, dockerfile: &str, files: &[(&str, &str)], with_busybox: bool) -> PathBuf {
        let ctx = self.dir.path().join(name);
        fs::create_dir_all(&ctx).expect("ctx");
        fs::write(ctx.join("Dockerfile"), dockerfile).expect("Dockerfile");
        for (path, content) in files {
            let p = ctx.join(path);
            fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
            fs::write(p, content).expect("write");
        }
        if with_busybox {
            let bb = Path::new("/bin/busybox");
            assert!(bb.is_file(), "/bin/busybox is required (Debian package busybox-static)");
            fs::copy(bb, ctx.join("busybox")).expect("copy busybox");
        }
        self.give_to_user(&ctx);
        ctx
    }

    pub fn command(&self, args: &[&str]) -> Command {
        // tests/run.sh may hand over a copy the unprivileged user can reach.
        let kiln = std::env::var("KILN_TEST_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_kiln").to_string());
        let mut cmd = match self.user {
            Some((uid, gid)) => {
                let mut c = Command::new("setpriv");
                c.args([format!("--reuid={uid}"), format!("--regid={gid}"), "--clear-groups".into(), "--".into(), kiln]);
                c
            }
            None => Command::new(kiln),
        };
        cmd.args(args)
            .env("KILN_ROOT", &self.root)
            .env("HOME", &self.home)
            .env("KILN_TEST_TAG", &self.tag)
            .env_remove("XDG_DATA_HOME")
            .env_remove("XDG_CACHE_HOME")
            .env_remove("KILN_CACHE_DIR")
            .current_dir(self.dir.path())
            .stdin(Stdio::null());
        cmd
    }

    pub fn kiln(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("run kiln")
    }

    pub fn kiln_with(&self, args: &[&str], vars: &[(&str, &str)]) -> Output {
        let mut cmd = self.command(args);
        for (k, v) in vars {
            cmd.env(k, v);
        }
        cmd.output().expect("run kiln")
    }

    pub fn spawn(&self, args: &[&str]) -> Child {
        self.command(args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn kiln")
    }

    /// Every file under the store with its size: equal snapshots mean an unchanged store.
    pub fn store_snapshot(&self) -> BTreeMap<String, u64> {
        let mut out = BTreeMap::new();
        fn walk(dir: &Path, base: &Path, out: &mut BTreeMap<String, u64>) {
            let Ok(rd) = fs::read_dir(dir) else { return };
            for e in rd.flatten() {
                let p = e.path();
                let m = fs::symlink_metadata(&p).expect("stat");
                let rel = p.strip_prefix(base).expect("rel").display().to_string();
                if m.is_dir() {
                    out.insert(format!("{rel}/"), 0);
                    walk(&p, base, out);
                } else {
                    out.insert(rel, m.len());
                }
            }
        }
        walk(&self.root, &self.root, &mut out);
        out
    }

    /// Paths under the store not owned by the unprivileged user (empty when rootless holds).
    pub fn store_files_not_owned_by_user(&self) -> Vec<String> {
        let Some((uid, _)) = self.user else { return vec![] };
        let mut bad = Vec::new();
        fn walk(dir: &Path, uid: u32, bad: &mut Vec<String>) {
            let Ok(rd) = fs::read_dir(dir) else { return };
            for e in rd.flatten() {
                let p = e.path();
                let m = fs::symlink_metadata(&p).expect("stat");
                if m.uid() != uid {
                    bad.push(p.display().to_string());
                }
                if m.is_dir() {
                    walk(&p, uid, bad);
                }
            }
        }
        walk(&self.root, uid, &mut bad);
        bad
    }

    /// Pids of live processes carrying this test's tag (kiln supervisors, QEMU).
    fn tagged_pids(&self) -> Vec<i32> {
        self.vm_processes().iter().filter_map(|p| p.split(':').next()?.parse().ok()).collect()
    }

    /// Live processes started by this test's kiln runs (QEMU inherits KILN_TEST_TAG).
    pub fn vm_processes(&self) -> Vec<String> {
        let needle = format!("KILN_TEST_TAG={}", self.tag);
        let mut found = Vec::new();
        for e in fs::read_dir("/proc").expect("/proc").flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            if !name.bytes().all(|b| b.is_ascii_digit()) {
                continue;
            }
            let Ok(environ) = fs::read(e.path().join("environ")) else { continue };
            if environ.split(|b| *b == 0).any(|kv| kv == needle.as_bytes()) {
                let cmdline = fs::read(e.path().join("cmdline")).unwrap_or_default();
                let exe = String::from_utf8_lossy(&cmdline).replace('\0', " ");
                // A zombie or exiting process has an empty cmdline; those do not run.
                if !exe.trim().is_empty() {
                    found.push(format!("{name}: {exe}"));
                }
            }
        }
        found
    }
}

impl Drop for TestEnv {
    /// A failed test may leave a detached container's supervisor (and its VM) running: end
    /// them with the test, so no run leaves processes behind.
    fn drop(&mut self) {
        for pid in self.tagged_pids() {
            // SAFETY: kill(2) of a pid found by its environment; no memory is involved.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
}

/// Every file of `kiln save IMAGE` (a docker-archive) by its path, gzip-compressed blobs
/// uncompressed: what a test searches for leaked content or reads layers from.
pub fn saved_image(env: &TestEnv, image: &str) -> BTreeMap<String, Vec<u8>> {
    use std::io::Read;
    let archive = env.dir.path().join(format!("{}.saved.tar", image.replace(['/', ':'], "_")));
    let out = env.kiln(&["save", "-o", archive.to_str().expect("utf8"), image]);
    assert!(out.status.success(), "kiln save {image}: {}", text(&out.stderr));
    let mut files = BTreeMap::new();
    let mut outer = tar::Archive::new(fs::File::open(&archive).expect("archive"));
    for entry in outer.entries().expect("entries") {
        let mut entry = entry.expect("entry");
        let name = entry.path().expect("path").display().to_string();
        let mut bytes = Vec::new();
        entry.read_to_end(&mut bytes).expect("read");
        let mut plain = Vec::new();
        if flate2::read::GzDecoder::new(bytes.as_slice()).read_to_end(&mut plain).is_err() {
            plain = bytes;
        }
        files.insert(name, plain);
    }
    files
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Asserts kiln failed with a one-line `kiln: error:` message containing `needle`.
pub fn assert_clean_error(out: &Output, needle: &str) {
    let stderr = text(&out.stderr);
    assert!(!out.status.success(), "kiln should have failed; stderr:\n{stderr}");
    assert_eq!(out.status.code(), Some(1), "exit code; stderr:\n{stderr}");
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("kiln: error:")).collect();
    assert_eq!(errors.len(), 1, "exactly one error line expected; stderr:\n{stderr}");
    assert!(errors[0].contains(needle), "error should mention {needle:?}; got: {}", errors[0]);
    assert!(!stderr.contains("panicked") && !stderr.contains("RUST_BACKTRACE"), "no panic expected:\n{stderr}");
}
