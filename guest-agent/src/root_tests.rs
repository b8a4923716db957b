//! Tests that need root, mounts, overlayfs and namespaces: ReceiveTar, Diff and Run end to end
//! on the test host, in a private tmpfs. Each test skips itself (with a note on stderr) when
//! the host cannot do this, e.g. an unprivileged CI runner.

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use kiln_protocol::{Mux, Response, RunSpec};
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use tar::{Builder, EntryType, Header};

use crate::reaper::Reaper;

mod diff_unchanged;
mod network;
mod run_mounts;

/// A private tmpfs for one test, unmounted on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Option<Self> {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipping {name}: needs root");
            return None;
        }
        let dir =
            std::env::temp_dir().join(format!("kiln-agent-test-{name}-{}", std::process::id()));
        fs::create_dir_all(&dir).expect("mkdir scratch");
        if let Err(e) = mount(
            Some("tmpfs"),
            &dir,
            Some("tmpfs"),
            MsFlags::empty(),
            None::<&str>,
        ) {
            eprintln!("skipping {name}: cannot mount tmpfs: {e}");
            return None;
        }
        Some(Self(dir))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = crate::mounts::unmount(&self.0.display().to_string());
        let _ = umount2(&self.0, MntFlags::MNT_DETACH);
        let _ = fs::remove_dir(&self.0);
    }
}

fn header(kind: EntryType, mode: u32, size: u64) -> Header {
    let mut h = Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_size(size);
    h.set_mtime(1_600_000_000);
    h
}

fn add_file(b: &mut Builder<Vec<u8>>, path: &str, data: &[u8], mode: u32) {
    let mut h = header(EntryType::Regular, mode, data.len() as u64);
    b.append_data(&mut h, path, data).expect("append");
}

fn add_dir(b: &mut Builder<Vec<u8>>, path: &str) {
    let mut h = header(EntryType::Directory, 0o755, 0);
    b.append_data(&mut h, path, std::io::empty())
        .expect("append");
}

fn add_link(b: &mut Builder<Vec<u8>>, kind: EntryType, path: &str, target: &str) {
    let mut h = header(kind, 0o777, 0);
    b.append_link(&mut h, path, target).expect("append");
}

/// A busybox rootfs: bin/busybox plus applet symlinks.
fn busybox_tar() -> Option<Vec<u8>> {
    let busybox = fs::read("/bin/busybox").ok()?;
    let mut b = Builder::new(Vec::new());
    add_dir(&mut b, "bin/");
    add_file(&mut b, "bin/busybox", &busybox, 0o755);
    for applet in [
        "sh", "echo", "mkdir", "rm", "cat", "ls", "ln", "touch", "stat", "id", "grep",
    ] {
        add_link(
            &mut b,
            EntryType::Symlink,
            &format!("bin/{applet}"),
            "busybox",
        );
    }
    add_dir(&mut b, "etc/");
    add_file(&mut b, "etc/gone", b"bye", 0o644);
    add_dir(&mut b, "opaque/");
    add_file(&mut b, "opaque/old", b"old", 0o644);
    Some(b.into_inner().expect("finish"))
}

/// Names and types of a tar's entries.
fn list_tar(data: &[u8]) -> BTreeMap<String, (EntryType, Vec<u8>)> {
    let mut out = BTreeMap::new();
    let mut ar = tar::Archive::new(data);
    for e in ar.entries().expect("entries") {
        let mut e = e.expect("entry");
        let name = String::from_utf8_lossy(&e.path_bytes()).into_owned();
        let kind = e.header().entry_type();
        let mut body = Vec::new();
        if kind == EntryType::Link {
            body = e.link_name_bytes().expect("link").into_owned();
        } else {
            e.read_to_end(&mut body).expect("read");
        }
        out.insert(name, (kind, body));
    }
    out
}

#[test]
fn receive_tar_preserves_metadata_and_converts_whiteouts() {
    let Some(s) = Scratch::new("receive") else {
        return;
    };
    let mut b = Builder::new(Vec::new());
    add_dir(&mut b, "./d/");
    let mut h = header(EntryType::Regular, 0o4750, 2);
    h.set_uid(1234);
    h.set_gid(5678);
    b.append_data(&mut h, "d/f", &b"hi"[..]).expect("append");
    add_link(&mut b, EntryType::Symlink, "d/l", "f");
    add_link(&mut b, EntryType::Link, "d/h", "d/f");
    let mut fifo = header(EntryType::Fifo, 0o644, 0);
    b.append_data(&mut fifo, "d/p", std::io::empty())
        .expect("fifo");
    add_file(&mut b, "d/.wh.gone", b"", 0o644);
    add_file(&mut b, "e/.wh..wh..opq", b"", 0o644);
    b.append_pax_extensions([("SCHILY.xattr.trusted.kiln", &b"v"[..])])
        .expect("pax");
    add_file(&mut b, "x", b"", 0o600);
    let tar = b.into_inner().expect("finish");
    let dest = s.0.join("layer");
    let n = receive_tar(tar.as_slice(), &dest).expect("receive");
    assert_eq!(n, 8);
    let f = fs::metadata(dest.join("d/f")).expect("f");
    assert_eq!(
        (f.mode() & 0o7777, f.uid(), f.gid(), f.mtime()),
        (0o4750, 1234, 5678, 1_600_000_000)
    );
    assert_eq!(f.nlink(), 2);
    assert_eq!(fs::read_link(dest.join("d/l")).expect("l"), Path::new("f"));
    assert!(fs::symlink_metadata(dest.join("d/p"))
        .expect("p")
        .file_type()
        .is_fifo());
    let wh = fs::symlink_metadata(dest.join("d/gone")).expect("whiteout");
    assert!(wh.file_type().is_char_device() && wh.rdev() == 0);
    assert!(!dest.join("d/.wh.gone").exists());
    assert_eq!(
        crate::xattr::get(&dest.join("e"), b"trusted.overlay.opaque")
            .expect("get")
            .as_deref(),
        Some(&b"y"[..])
    );
    assert_eq!(
        crate::xattr::get(&dest.join("x"), b"trusted.kiln")
            .expect("get")
            .as_deref(),
        Some(&b"v"[..])
    );
    assert_eq!(
        fs::metadata(dest.join("d")).expect("d").mtime(),
        1_600_000_000
    );
}

#[test]
fn receive_tar_refuses_escapes() {
    let Some(s) = Scratch::new("escape") else {
        return;
    };
    let outside = s.0.join("outside");
    fs::create_dir_all(&outside).expect("mkdir");
    // Raw headers: the tar crate refuses to *write* such names, so set the bytes directly.
    let evil = |name: &[u8]| {
        let mut b = Builder::new(Vec::new());
        let mut h = header(EntryType::Regular, 0o644, 1);
        h.as_old_mut().name[..name.len()].copy_from_slice(name);
        h.set_cksum();
        b.append(&h, &b"x"[..]).expect("append");
        b.into_inner().expect("finish")
    };
    for name in [&b"/abs"[..], b"../up", b"a/../../up"] {
        let err = receive_tar(evil(name).as_slice(), &s.0.join("dest"))
            .expect_err("refused");
        assert!(err.to_string().contains("tar entry"), "{err}");
    }
    let mut b = Builder::new(Vec::new());
    add_link(
        &mut b,
        EntryType::Symlink,
        "esc",
        outside.to_str().expect("utf8"),
    );
    add_file(&mut b, "esc/pwned", b"x", 0o644);
    let tar = b.into_inner().expect("finish");
    assert!(receive_tar(tar.as_slice(), &s.0.join("dest2")).is_err());
    assert!(!outside.join("pwned").exists());
    let mut b = Builder::new(Vec::new());
    add_link(&mut b, EntryType::Symlink, "esc", "../../..");
    add_file(&mut b, "esc/pwned", b"x", 0o644);
    let tar = b.into_inner().expect("finish");
    assert!(receive_tar(tar.as_slice(), &s.0.join("dest3")).is_err());
}

#[test]
fn diff_of_an_overlay_upper_is_an_oci_layer() {
    let Some(s) = Scratch::new("diff") else {
        return;
    };
    let Some(rootfs) = busybox_tar() else { return };
    let lower = s.0.join("lower");
    receive_tar(rootfs.as_slice(), &lower).expect("receive");
    let (upper, work, merged) = (s.0.join("upper"), s.0.join("work"), s.0.join("merged"));
    let p = |p: &Path| p.display().to_string();
    crate::mounts::mount_overlay(&[p(&lower)], &p(&upper), &p(&work), &p(&merged)).expect("mount");
    fs::create_dir(merged.join("a")).expect("mkdir");
    fs::write(merged.join("a/f"), b"x\n").expect("write");
    fs::hard_link(merged.join("a/f"), merged.join("a/g")).expect("link");
    fs::set_permissions(merged.join("a"), fs::Permissions::from_mode(0o711)).expect("chmod");
    fs::remove_file(merged.join("etc/gone")).expect("rm");
    fs::remove_dir_all(merged.join("opaque")).expect("rm -r");
    fs::create_dir(merged.join("opaque")).expect("mkdir");
    let mut out = Vec::new();
    let n = crate::diff::write_diff(&upper, &[], &mut out, None).expect("diff");
    crate::mounts::unmount(&p(&merged)).expect("unmount");
    let entries = list_tar(&out);
    assert_eq!(n as usize, entries.len(), "{entries:?}");
    let names: Vec<_> = entries.keys().cloned().collect();
    assert_eq!(
        names,
        [
            "a/",
            "a/f",
            "a/g",
            "etc/",
            "etc/.wh.gone",
            "opaque/",
            "opaque/.wh..wh..opq"
        ],
        "{entries:?}"
    );
    assert_eq!(entries["a/f"], (EntryType::Regular, b"x\n".to_vec()));
    assert_eq!(entries["a/g"], (EntryType::Link, b"a/f".to_vec()));
    assert_eq!(entries["etc/.wh.gone"].0, EntryType::Regular);
    // The layer applies back onto a fresh dir: whiteouts become overlay whiteouts again.
    let again = s.0.join("again");
    receive_tar(out.as_slice(), &again).expect("re-apply");
    assert!(fs::symlink_metadata(again.join("etc/gone"))
        .expect("wh")
        .file_type()
        .is_char_device());
    assert_eq!(
        fs::metadata(again.join("a")).expect("a").mode() & 0o777,
        0o711
    );
}

fn reaper() -> &'static Reaper {
    static R: OnceLock<Reaper> = OnceLock::new();
    R.get_or_init(|| Reaper::start().expect("reaper"))
}

struct RunResult {
    resp: Result<Response, String>,
    stdout: String,
    stderr: String,
}

fn run_in(rootfs: &Path, argv: &[&str], cwd: &str) -> RunResult {
    run_with(rootfs, argv, cwd, |_| {})
}

/// Tests run in parallel threads of one process: a child cloned while another test is still
/// writing an executable (receive_tar) inherits that write fd until it execs, and the other
/// test's exec of that file then fails with ETXTBSY. Writers and runs take this lock apart.
/// (The agent itself serves one request at a time, so it never meets this.)
static EXEC_FILES: std::sync::RwLock<()> = std::sync::RwLock::new(());

/// `receive::receive_tar` for tests, never overlapping a test's clone.
fn receive_tar(tar: &[u8], dest: &Path) -> crate::error::Result<u64> {
    let _writing = EXEC_FILES.write().unwrap_or_else(|e| e.into_inner());
    crate::receive::receive_tar(tar, dest)
}

/// Runs `argv` in `rootfs` as root, with `edit` applied to the spec first.
fn run_with(rootfs: &Path, argv: &[&str], cwd: &str, edit: impl FnOnce(&mut RunSpec)) -> RunResult {
    let _running = EXEC_FILES.read().unwrap_or_else(|e| e.into_inner());
    let (h, a) = UnixStream::pair().expect("pair");
    let host = Mux::host(h.try_clone().expect("clone"), h);
    let (agent, _reqs) = Mux::agent(a.try_clone().expect("clone"), a);
    let mut out = host.open_reader(10);
    let mut err = host.open_reader(11);
    let mut spec = RunSpec {
        rootfs: rootfs.display().to_string(),
        argv: argv.iter().map(|s| s.to_string()).collect(),
        env: vec!["PATH=/bin".into(), "HOME=/root".into()],
        cwd: cwd.into(),
        uid: 0,
        gid: 0,
        additional_gids: vec![],
        hostname: "kiln-test".into(),
        stdout_stream: 10,
        stderr_stream: 11,
        stdin_stream: None,
        tty: None,
        run_id: None,
        join: None,
        readonly_root: false,
        init: false,
        mounts: vec![],
        files: vec![],
        network: kiln_protocol::Network::Guest,
    };
    edit(&mut spec);
    let resp = crate::run::run(&agent, reaper(), &spec).map_err(|e| e.to_string());
    let (mut stdout, mut stderr) = (String::new(), String::new());
    out.read_to_string(&mut stdout).expect("stdout");
    err.read_to_string(&mut stderr).expect("stderr");
    RunResult {
        resp,
        stdout,
        stderr,
    }
}

#[test]
fn run_streams_output_and_cleans_mount_points() {
    let Some(s) = Scratch::new("run") else { return };
    let Some(rootfs) = busybox_tar() else { return };
    let root = s.0.join("root");
    receive_tar(rootfs.as_slice(), &root).expect("receive");
    let r = run_in(&root, &["sh", "-c", "echo hi; echo err >&2; mkdir /a; echo x > /a/f; hostname; echo $$; pwd; ls /proc/self >/dev/null && exit 3"], "/work/dir");
    assert_eq!(
        r.resp,
        Ok(Response::Exited {
            code: Some(3),
            signal: None
        }),
        "stderr: {}",
        r.stderr
    );
    assert_eq!(r.stdout, "hi\nkiln-test\n1\n/work/dir\n");
    assert_eq!(r.stderr, "err\n");
    assert_eq!(fs::read(root.join("a/f")).expect("a/f"), b"x\n");
    for gone in ["proc", "dev", "sys"] {
        assert!(!root.join(gone).exists(), "{gone} left behind");
    }
    assert!(root.join("work/dir").is_dir(), "cwd stays");

    let r = run_in(&root, &["no-such-cmd"], "/");
    assert_eq!(
        r.resp,
        Ok(Response::Exited {
            code: Some(127),
            signal: None
        })
    );
    assert!(
        r.stderr.contains("no-such-cmd") && r.stderr.contains("not found"),
        "{}",
        r.stderr
    );
    let r = run_in(&root, &["/etc/gone"], "/");
    assert_eq!(
        r.resp,
        Ok(Response::Exited {
            code: Some(126),
            signal: None
        }),
        "{}",
        r.stderr
    );
    // (A signal death cannot be provoked from inside: the step is PID 1 of its namespace.)
    let r = run_in(
        &root,
        &["sh", "-c", "yes | head -c 3 >/dev/null; echo piped"],
        "/",
    );
    assert_eq!(
        r.stdout, "piped\n",
        "SIGPIPE must be default in the child: {}",
        r.stderr
    );
}
