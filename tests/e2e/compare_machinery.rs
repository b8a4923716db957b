//! The machinery of the kiln vs buildah comparison (tests/e2e/compare.rs): a private buildah
//! store, building one case with both builders, reading configs and root filesystems, and
//! comparing them under the allow-list that compare.rs states.

use super::*;

/// buildah with a private store; emptied and removed on drop (also when a test panics).
pub(crate) struct Buildah {
    dir: PathBuf,
}

impl Buildah {
    pub(crate) fn cmd(&self) -> Command {
        let mut c = Command::new("buildah");
        c.arg("--root")
            .arg(self.dir.join("root"))
            .arg("--runroot")
            .arg(self.dir.join("run"))
            .args(["--storage-driver", "vfs"])
            .stdin(std::process::Stdio::null());
        c
    }
}

impl Drop for Buildah {
    fn drop(&mut self) {
        let _ = self.cmd().args(["rmi", "-a", "-f"]).output();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// The two builders side by side, with a base image built in each, and the differences found
/// so far.
pub(crate) struct Pair {
    // Dropped in this order: buildah's store before the test's directory.
    buildah: Buildah,
    env: TestEnv,
    name: &'static str,
    problems: Vec<String>,
    allowed: BTreeSet<String>,
    /// What was compared, for the summary.
    compared: Vec<String>,
    seq: usize,
}

pub(crate) fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?} failed:\n{}\n{}", text(&out.stdout), text(&out.stderr));
    out
}

impl Pair {
    /// None (after saying why) when the tests do not run as root.
    pub(crate) fn new(name: &'static str) -> Option<Self> {
        assert!(
            which("buildah"),
            "buildah is required by the kiln-vs-buildah comparison tests: run the README's setup command \
             (bash examples/setup-and-build.sh installs it)"
        );
        require_tool("skopeo");
        require_tool("umoci");
        require_tool("gzip");
        let env = TestEnv::new(&format!("cmp-{name}"));
        if env.user.is_none() {
            println!("skipped: the kiln-vs-buildah comparison needs root (buildah and umoci must keep file ownership); run tests/run.sh as root");
            return None;
        }
        let buildah = Buildah { dir: env.dir.path().join("buildah") };
        let mut p = Pair { buildah, env, name, problems: Vec::new(), allowed: BTreeSet::new(), compared: Vec::new(), seq: 0 };
        let ctx = p.context("base", BASE, &[file("passwd", PASSWD, 0o644), file("group", GROUP, 0o644)], true);
        p.buildah_build("cmp/base", &ctx, None, &[], None);
        p.kiln_build("cmp/base", &ctx, &[], None);
        Some(p)
    }

    /// A build context owned by kiln's user: the Dockerfile, the files, busybox if asked.
    pub(crate) fn context(&mut self, name: &str, dockerfile: &str, files: &[CtxFile], busybox: bool) -> PathBuf {
        self.seq += 1;
        let ctx = self.env.dir.path().join(format!("ctx-{}-{name}", self.seq));
        fs::create_dir_all(&ctx).expect("ctx");
        fs::write(ctx.join("Dockerfile"), dockerfile).expect("Dockerfile");
        for f in files {
            let p = ctx.join(f.path);
            fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
            fs::write(&p, &f.data).expect("write");
            fs::set_permissions(&p, fs::Permissions::from_mode(f.mode)).expect("chmod");
        }
        for dir in walk_dirs(&ctx) {
            fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).expect("chmod dir");
        }
        if busybox {
            let bb = Path::new("/bin/busybox");
            assert!(bb.is_file(), "/bin/busybox is required (Debian package busybox-static)");
            fs::copy(bb, ctx.join("busybox")).expect("copy busybox");
            fs::set_permissions(ctx.join("busybox"), fs::Permissions::from_mode(0o755)).expect("chmod");
        }
        self.env.give_to_user(&ctx);
        ctx
    }

    pub(crate) fn kiln_build(&self, tag: &str, ctx: &Path, args: &[&str], target: Option<&str>) {
        let mut argv = vec!["build".to_string(), "-t".into(), tag.into()];
        for a in args {
            argv.extend(["--build-arg".into(), (*a).to_string()]);
        }
        if let Some(t) = target {
            argv.extend(["--target".into(), t.to_string()]);
        }
        argv.push(ctx.display().to_string());
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        let t0 = Instant::now();
        let out = self.env.kiln(&argv);
        assert!(
            out.status.success(),
            "[{}] kiln build -t {tag} failed (`kiln {}`):\n{}",
            self.name,
            argv.join(" "),
            text(&out.stderr)
        );
        println!("[{}] kiln build {tag}: {:.1} s", self.name, t0.elapsed().as_secs_f64());
    }

    pub(crate) fn buildah_build(&self, tag: &str, ctx: &Path, dockerfile: Option<&Path>, args: &[&str], target: Option<&str>) {
        let mut cmd = self.buildah.cmd();
        cmd.args(["bud", "--isolation", "chroot", "--layers=false", "--format", "docker", "--pull=never", "-q", "-t", tag]);
        if let Some(f) = dockerfile {
            cmd.arg("-f").arg(f);
        }
        for a in args {
            cmd.args(["--build-arg", a]);
        }
        if let Some(t) = target {
            cmd.args(["--target", t]);
        }
        cmd.arg(ctx);
        let t0 = Instant::now();
        let out = cmd.output().expect("run buildah");
        assert!(
            out.status.success(),
            "[{}] buildah bud -t {tag} failed (a bug in this test, not in kiln):\n{}\n{}",
            self.name,
            text(&out.stdout),
            text(&out.stderr)
        );
        println!("[{}] buildah bud {tag}: {:.1} s", self.name, t0.elapsed().as_secs_f64());
    }

    /// Builds `b` with both builders and reads both results.
    pub(crate) fn build_both(&mut self, b: &Build) -> (Image, Image) {
        let slug = b.tag.replace(['/', ':'], "-");
        let ctx = self.context(&slug, b.dockerfile, &b.files, false);

        // The reference first: when buildah fails, the case itself is wrong.
        let (bctx, bfile) = match &b.buildah_equivalent {
            None => (ctx.clone(), None),
            Some((dockerfile, extra)) => {
                let mut files = b.files.clone();
                files.extend(extra.iter().cloned());
                let note = format!("# buildah builds this context with -f ../{slug}.buildah.Dockerfile\n");
                let bctx = self.context(&format!("{slug}-buildah"), &note, &files, false);
                let f = self.env.dir.path().join(format!("{slug}.buildah.Dockerfile"));
                fs::write(&f, dockerfile).expect("write");
                (bctx, Some(f))
            }
        };
        self.buildah_build(b.tag, &bctx, bfile.as_deref(), &b.build_args, b.target);
        let buildah_archive = self.env.dir.path().join(format!("buildah-{slug}.tar"));
        run(self.buildah.cmd().args(["push", "-q", "--format", "docker", b.tag]).arg(format!("oci-archive:{}", buildah_archive.display())));
        let buildah = self.unpack("buildah", &buildah_archive, b.tag);

        self.kiln_build(b.tag, &ctx, &b.build_args, b.target);
        let kiln_archive = self.env.dir.path().join(format!("kiln-{slug}.tar"));
        let out = self.env.kiln(&["save", "--format", "oci", "-o", kiln_archive.to_str().expect("utf8"), b.tag]);
        assert!(out.status.success(), "[{}] kiln save {} failed:\n{}", self.name, b.tag, text(&out.stderr));
        let kiln = self.unpack("kiln", &kiln_archive, b.tag);
        (kiln, buildah)
    }

    /// The raw config and the unpacked root filesystem of an OCI archive.
    pub(crate) fn unpack(&self, builder: &'static str, archive: &Path, tag: &str) -> Image {
        let slug = tag.replace(['/', ':'], "-");
        let raw = run(Command::new("skopeo").args(["inspect", "--config", "--raw"]).arg(format!("oci-archive:{}", archive.display())));
        let config: Value = serde_json::from_slice(&raw.stdout).expect("config json");
        let layout = self.env.dir.path().join(format!("{builder}-{slug}-layout"));
        let bundle = self.env.dir.path().join(format!("{builder}-{slug}-bundle"));
        run(Command::new("skopeo")
            .args(["copy", "-q"])
            .arg(format!("oci-archive:{}", archive.display()))
            .arg(format!("oci:{}:t", layout.display())));
        run(Command::new("umoci").args(["unpack", "--image"]).arg(format!("{}:t", layout.display())).arg(&bundle));
        Image { builder, tag: tag.to_string(), config, rootfs: bundle.join("rootfs") }
    }

    /// The tarball ADD extracts: owners, modes, a symlink and a 0750 app:staff directory.
    pub(crate) fn tarball(&self) -> Vec<u8> {
        let mut t = tar::Builder::new(Vec::new());
        let mut add = |path: &str, kind: tar::EntryType, mode: u32, uid: u64, gid: u64, data: &[u8], link: Option<&str>| {
            let mut h = tar::Header::new_ustar();
            h.set_path(path).expect("path");
            h.set_entry_type(kind);
            h.set_mode(mode);
            h.set_uid(uid);
            h.set_gid(gid);
            h.set_mtime(1_700_000_000);
            h.set_size(data.len() as u64);
            if let Some(l) = link {
                h.set_link_name(l).expect("link");
            }
            h.set_cksum();
            t.append(&h, data).expect("append");
        };
        add("tree/", tar::EntryType::Directory, 0o755, 0, 0, b"", None);
        add("tree/one", tar::EntryType::Regular, 0o644, 0, 0, b"one\n", None);
        add("tree/exec", tar::EntryType::Regular, 0o755, 0, 0, b"#!/bin/sh\necho exec\n", None);
        add("tree/owned", tar::EntryType::Regular, 0o600, 1000, 50, b"owned\n", None);
        add("tree/link", tar::EntryType::Symlink, 0o777, 1000, 50, b"", Some("one"));
        add("tree/sub/", tar::EntryType::Directory, 0o750, 1000, 50, b"", None);
        add("tree/sub/deep", tar::EntryType::Regular, 0o644, 0, 0, b"deep\n", None);
        let tar = t.into_inner().expect("tar");
        let raw = self.env.dir.path().join("bundle.tar");
        fs::write(&raw, tar).expect("write tar");
        run(Command::new("gzip").args(["-n", "-9", "-f"]).arg(&raw));
        fs::read(self.env.dir.path().join("bundle.tar.gz")).expect("read tar.gz")
    }

    // --- expectations (checked on both sides: they also guard the reference) ---

    pub(crate) fn expect_file(&mut self, img: &Image, path: &str, want: &str) {
        match img.read(path) {
            Some(got) if got == want => {}
            Some(got) => self.problems.push(format!("{} by {}: {path} holds {got:?}, expected {want:?}", img.tag, img.builder)),
            None => self.problems.push(format!("{} by {}: {path} is missing or unreadable (expected {want:?})", img.tag, img.builder)),
        }
    }

    pub(crate) fn expect_owner(&mut self, img: &Image, path: &str, uid: u32, gid: u32, mode: u32) {
        match img.meta(path) {
            Some(m) if (m.uid(), m.gid(), m.mode() & 0o7777) == (uid, gid, mode) => {}
            Some(m) => self.problems.push(format!(
                "{} by {}: {path} is {:04o} {}:{}, expected {mode:04o} {uid}:{gid}",
                img.tag,
                img.builder,
                m.mode() & 0o7777,
                m.uid(),
                m.gid()
            )),
            None => self.problems.push(format!("{} by {}: {path} is missing (expected {mode:04o} {uid}:{gid})", img.tag, img.builder)),
        }
    }

    pub(crate) fn expect_absent(&mut self, img: &Image, path: &str) {
        if img.meta(path).is_some() {
            self.problems.push(format!("{} by {}: {path} exists, expected none", img.tag, img.builder));
        }
    }

    pub(crate) fn expect_config(&mut self, img: &Image, field: &str, want: Value) {
        let got = img.cfg(field);
        let want = normalise(field, want, "expected");
        if got != want {
            self.problems.push(format!("{} by {}: config.{field} is {got}, expected {want}", img.tag, img.builder));
        }
    }

    // --- the comparison ---

    pub(crate) fn compare(&mut self, kiln: &Image, buildah: &Image) {
        let tag = &kiln.tag;
        for top in ["os", "architecture"] {
            if kiln.config[top] != buildah.config[top] {
                self.problems.push(format!("{tag}, kiln vs buildah: {top}: kiln {} | buildah {}", kiln.config[top], buildah.config[top]));
            }
        }
        for field in CONFIG_FIELDS {
            let (k, b) = (kiln.cfg(field), buildah.cfg(field));
            if k != b {
                self.problems.push(format!("{tag}, kiln vs buildah: config.{field}: kiln {k} | buildah {b}"));
            }
        }
        let k = tree(&kiln.rootfs);
        let b = tree(&buildah.rootfs);
        let volumes: BTreeSet<&str> =
            buildah.config["config"]["Volumes"].as_object().map(|o| o.keys().map(String::as_str).collect()).unwrap_or_default();
        let paths: BTreeSet<&String> = k.keys().chain(b.keys()).collect();
        self.compared.push(format!("{tag}: {} paths", paths.len()));
        for path in paths {
            match (k.get(path), b.get(path)) {
                (Some(ke), Some(be)) => {
                    let diffs = ke.differences(be);
                    if !diffs.is_empty() {
                        self.problems.push(format!("{tag}, kiln vs buildah: {path}: {} differs (kiln: {ke} | buildah: {be})", diffs.join(", ")));
                    }
                }
                (Some(ke), None) => self.problems.push(format!("{tag}, kiln vs buildah: {path}: only in kiln ({ke})")),
                (None, Some(be)) => {
                    if is_buildah_stub(path, be) {
                        self.allowed.insert(format!("{path} ({be}; mount-point stub)"));
                    } else if be.kind == "dir" && be.children == 0 && (be.uid, be.gid) == (0, 0) && volumes.contains(path.as_str()) {
                        self.allowed.insert(format!("{path} ({be}; VOLUME mount point)"));
                    } else {
                        self.problems.push(format!("{tag}, kiln vs buildah: {path}: only in buildah ({be})"));
                    }
                }
                (None, None) => unreachable!(),
            }
        }
    }

    /// Fails the test with every difference found, or prints what was allowed.
    pub(crate) fn finish(&mut self) {
        let mut allowed = String::new();
        if !self.allowed.is_empty() {
            let _ = write!(
                allowed,
                "\nignored, buildah-only (see BUILDAH_RUN_STUBS, BUILDAH_VOLUME_DIRS: {BUILDAH_VOLUME_DIRS}): {}",
                self.allowed.iter().cloned().collect::<Vec<_>>().join(", ")
            );
        }
        let _ = write!(allowed, "\nconfig normalisation: {CONFIG_NORMALISATION}; buildah labels dropped: {BUILDAH_LABELS:?}");
        let _ = write!(allowed, "\ncompared: {}", self.compared.join("; "));
        if self.problems.is_empty() {
            println!("[{}] kiln and buildah agree{allowed}", self.name);
            return;
        }
        let list = self.problems.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n");
        panic!("[{}] kiln and buildah disagree ({} differences):\n{list}{allowed}", self.name, self.problems.len());
    }
}

pub(crate) fn which(tool: &str) -> bool {
    std::env::var_os("PATH").map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file())).unwrap_or(false)
}

pub(crate) fn walk_dirs(dir: &Path) -> Vec<PathBuf> {
    let mut out = vec![dir.to_path_buf()];
    for e in fs::read_dir(dir).expect("readdir").flatten() {
        if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            out.extend(walk_dirs(&e.path()));
        }
    }
    out
}

/// Normalises a config value (see CONFIG_NORMALISATION).
pub(crate) fn normalise(field: &str, v: Value, builder: &str) -> Value {
    let mut v = match v {
        Value::String(s) if s.is_empty() => Value::Null,
        Value::Array(a) if a.is_empty() => Value::Null,
        Value::Object(o) if o.is_empty() => Value::Null,
        other => other,
    };
    if field == "WorkingDir" && v == "/" {
        v = Value::Null;
    }
    if field == "Labels" && builder == "buildah" {
        if let Value::Object(o) = &mut v {
            for l in BUILDAH_LABELS {
                o.remove(*l);
            }
            if o.is_empty() {
                v = Value::Null;
            }
        }
    }
    if field == "Healthcheck" {
        if let Value::Object(o) = &mut v {
            o.retain(|_, x| x.as_u64() != Some(0) && !x.is_null());
        }
    }
    v
}

// --- root filesystem trees ---

pub(crate) struct Entry {
    kind: &'static str,
    mode: u32,
    uid: u32,
    gid: u32,
    /// Symlink target, device number, or size + content hash.
    what: String,
    /// The content when it is short text (for readable diffs).
    preview: Option<String>,
    /// Number of entries below a directory.
    children: usize,
}

impl Entry {
    pub(crate) fn differences(&self, o: &Entry) -> Vec<String> {
        let mut d = Vec::new();
        if self.kind != o.kind {
            d.push("type".to_string());
        }
        if self.mode != o.mode {
            d.push("mode".to_string());
        }
        if (self.uid, self.gid) != (o.uid, o.gid) {
            d.push("owner".to_string());
        }
        if self.what != o.what {
            d.push(match self.kind {
                "symlink" => "target",
                "file" => "content",
                _ => "device",
            }
            .to_string());
        }
        d
    }
}

impl std::fmt::Display for Entry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {:04o} {}:{}", self.kind, self.mode, self.uid, self.gid)?;
        if !self.what.is_empty() {
            write!(f, " {}", self.what)?;
        }
        if let Some(p) = &self.preview {
            write!(f, " {p:?}")?;
        }
        Ok(())
    }
}

/// Every path under `root` ("/" included), keyed by its absolute path in the image.
pub(crate) fn tree(root: &Path) -> BTreeMap<String, Entry> {
    pub(crate) fn walk(dir: &Path, root: &Path, out: &mut BTreeMap<String, Entry>) -> usize {
        let mut count = 0;
        let mut names: Vec<_> = fs::read_dir(dir).expect("readdir").map(|e| e.expect("entry").path()).collect();
        names.sort();
        for p in names {
            count += 1 + add(&p, root, out);
        }
        count
    }
    pub(crate) fn add(p: &Path, root: &Path, out: &mut BTreeMap<String, Entry>) -> usize {
        let m = fs::symlink_metadata(p).expect("lstat");
        let ft = m.file_type();
        use std::os::unix::fs::FileTypeExt;
        let (kind, what, preview) = if ft.is_dir() {
            ("dir", String::new(), None)
        } else if ft.is_symlink() {
            ("symlink", format!("-> {}", fs::read_link(p).expect("readlink").display()), None)
        } else if ft.is_file() {
            let data = fs::read(p).expect("read");
            let mut h = std::collections::hash_map::DefaultHasher::new();
            data.hash(&mut h);
            let preview = if data.len() <= 120 { String::from_utf8(data.clone()).ok() } else { None };
            ("file", format!("{} B #{:016x}", data.len(), h.finish()), preview)
        } else if ft.is_char_device() || ft.is_block_device() {
            (if ft.is_char_device() { "chardev" } else { "blockdev" }, format!("rdev {:#x}", m.rdev()), None)
        } else if ft.is_fifo() {
            ("fifo", String::new(), None)
        } else {
            ("socket", String::new(), None)
        };
        let children = if ft.is_dir() { walk(p, root, out) } else { 0 };
        let rel = p.strip_prefix(root).expect("under root");
        let key = format!("/{}", rel.display());
        out.insert(key, Entry { kind, mode: m.mode() & 0o7777, uid: m.uid(), gid: m.gid(), what, preview, children });
        children
    }
    let mut out = BTreeMap::new();
    let m = fs::symlink_metadata(root).expect("rootfs");
    let children = walk(root, root, &mut out);
    out.insert(
        "/".to_string(),
        Entry { kind: "dir", mode: m.mode() & 0o7777, uid: m.uid(), gid: m.gid(), what: String::new(), preview: None, children },
    );
    out
}

pub(crate) fn is_buildah_stub(path: &str, e: &Entry) -> bool {
    BUILDAH_RUN_STUBS.iter().any(|(p, kind)| {
        *p == path
            && match kind {
                StubKind::EmptyDir => e.kind == "dir" && e.children == 0 && (e.uid, e.gid) == (0, 0),
                StubKind::EmptyFile => e.kind == "file" && e.what.starts_with("0 B ") && (e.uid, e.gid) == (0, 0),
            }
    })
}
