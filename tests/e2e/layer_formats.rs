//! Every layer format works everywhere (issue 12). One base image (two layers, the upper one
//! made by a RUN, with a whiteout) arrives in a fresh store with plain, gzip and zstd layers:
//! by `kiln load` (docker-archive old layout as skopeo writes it, docker-archive new layout as
//! `docker save` 25+ writes it, OCI archive), by `kiln pull` (skopeo pushes gzip and zstd,
//! `kiln push` the plain tars of a loaded docker-archive) and by `kiln import` (plain, gzip and
//! zstd rootfs tars). Each copy is used by `FROM` + `RUN`, `COPY --from`, `RUN
//! --mount=type=bind,from=` and `-o type=local`, and the output is compared file by file with the
//! one built on the original base. The image built on each is saved as an OCI archive whose
//! layers' media types must say what each blob holds, and (but for zstd, which Debian's umoci
//! cannot read) unpacked by umoci, which trusts media types.

mod harness;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use harness::registry::Registry;
use harness::{require_tool, text, TestEnv};

fn ok(out: &Output) -> String {
    assert!(out.status.success(), "kiln failed:\nstdout:\n{}\nstderr:\n{}", text(&out.stdout), text(&out.stderr));
    text(&out.stdout)
}

fn p(path: &Path) -> &str {
    path.to_str().expect("utf8 path")
}

fn run(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd).args(args).output().unwrap_or_else(|e| panic!("run {cmd}: {e}"));
    assert!(out.status.success(), "{cmd} {args:?}: {}", text(&out.stderr));
    text(&out.stdout)
}

/// The base's first layer: busybox, a shell, a tree with a symlink, a hardlink, an executable.
fn rootfs_tar(env: &TestEnv) -> PathBuf {
    let dir = env.dir.path().join("rootfs");
    fs::create_dir_all(dir.join("bin")).expect("mkdir");
    fs::create_dir_all(dir.join("tree/deep/er")).expect("mkdir");
    fs::copy("/bin/busybox", dir.join("bin/busybox")).expect("busybox");
    std::os::unix::fs::symlink("busybox", dir.join("bin/sh")).expect("symlink");
    fs::write(dir.join("tree/a.txt"), "alpha\n").expect("write");
    fs::write(dir.join("tree/gone.txt"), "removed by the upper layer\n").expect("write");
    fs::write(dir.join("tree/deep/er/run.sh"), "#!/bin/sh\necho deep\n").expect("write");
    fs::set_permissions(dir.join("tree/deep/er/run.sh"), fs::Permissions::from_mode(0o755)).expect("chmod");
    fs::hard_link(dir.join("tree/a.txt"), dir.join("tree/a-hard.txt")).expect("hardlink");
    std::os::unix::fs::symlink("deep/er/run.sh", dir.join("tree/run-link")).expect("symlink");
    let tar = env.dir.path().join("rootfs.tar");
    run("tar", &["-C", p(&dir), "--owner=0", "--group=0", "-cf", p(&tar), "."]);
    env.give_to_user(&tar);
    tar
}

/// What every variant's build does: RUN on it, COPY from it, bind-mount it.
fn dockerfile(base: &str) -> String {
    format!(
        "FROM {base}\n\
         RUN cat /tree/a.txt /tree/new.txt > /ran && ls -la /tree | wc -l >> /ran && /tree/run-link >> /ran\n\
         COPY --from={base} /tree /copied\n\
         RUN --mount=type=bind,from={base},source=/tree,target=/m cp -a /m /mounted && ls /m > /mounted.ls\n"
    )
}

/// Every path under `dir`: its type, mode bits, content or link target.
fn tree(dir: &Path) -> BTreeMap<String, String> {
    fn walk(dir: &Path, base: &Path, out: &mut BTreeMap<String, String>) {
        let mut entries: Vec<_> = fs::read_dir(dir).expect("readdir").flatten().collect();
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let path = e.path();
            let rel = path.strip_prefix(base).expect("rel").display().to_string();
            let m = fs::symlink_metadata(&path).expect("stat");
            let mode = m.permissions().mode() & 0o7777;
            let what = if m.file_type().is_symlink() {
                format!("link -> {}", fs::read_link(&path).expect("readlink").display())
            } else if m.is_dir() {
                walk(&path, base, out);
                format!("dir {mode:o}")
            } else {
                let bytes = fs::read(&path).expect("read");
                format!("file {mode:o} {} bytes sha {}", bytes.len(), kiln_store::Digest::of(&bytes))
            };
            out.insert(rel, what);
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

/// The media type each layer of an OCI layout's manifest declares, and what its blob holds.
fn layer_media(layout: &Path) -> Vec<(String, &'static str)> {
    let index: serde_json::Value = serde_json::from_slice(&fs::read(layout.join("index.json")).expect("index")).expect("json");
    let blob = |d: &str| layout.join("blobs/sha256").join(d.trim_start_matches("sha256:"));
    let digest = index["manifests"][0]["digest"].as_str().expect("manifest digest");
    let manifest: serde_json::Value = serde_json::from_slice(&fs::read(blob(digest)).expect("manifest")).expect("json");
    manifest["layers"]
        .as_array()
        .expect("layers")
        .iter()
        .map(|l| {
            let head = fs::read(blob(l["digest"].as_str().expect("digest"))).expect("blob");
            let kind = match head.get(..4) {
                Some([0x1f, 0x8b, ..]) => "gzip",
                Some([0x28, 0xb5, 0x2f, 0xfd]) => "zstd",
                _ => "plain",
            };
            (l["mediaType"].as_str().expect("media").to_string(), kind)
        })
        .collect()
}

struct Fixture {
    env: TestEnv,
    /// The base as kiln stored it (gzip), saved as an OCI archive.
    oci_gzip: PathBuf,
    /// `-o type=local` of [`dockerfile`] on the original base.
    reference: BTreeMap<String, String>,
}

const BASE_NAME: &str = "fmt/base:v1";

/// Builds the base (import + a RUN that adds a file and deletes one) and the reference output.
fn fixture(name: &str) -> Fixture {
    require_tool("skopeo");
    require_tool("umoci");
    require_tool("zstd");
    let env = TestEnv::new(name);
    let rootfs = rootfs_tar(&env);
    ok(&env.kiln(&["import", p(&rootfs), "fmt/imported"]));
    let ctx = env.context("base-ctx", "FROM fmt/imported\nRUN echo new > /tree/new.txt && rm /tree/gone.txt\n", &[], false);
    ok(&env.kiln(&["build", "-q", "-t", BASE_NAME, p(&ctx)]));
    let oci_gzip = env.dir.path().join("base.oci.tar");
    ok(&env.kiln(&["save", "--format", "oci", "-o", p(&oci_gzip), BASE_NAME]));
    let out_dir = env.dir.path().join("reference-out");
    let ctx = env.context("reference-ctx", &dockerfile(BASE_NAME), &[], false);
    ok(&env.kiln(&["build", "--no-cache", "-o", &format!("type=local,dest={}", p(&out_dir)), p(&ctx)]));
    let reference = tree(&out_dir);
    for must in ["ran", "copied/a-hard.txt", "copied/new.txt", "mounted/deep/er/run.sh", "mounted.ls", "tree/run-link"] {
        assert!(reference.contains_key(must), "reference output lacks {must}: {reference:#?}");
    }
    assert!(!reference.contains_key("tree/gone.txt") && !reference.contains_key("copied/gone.txt"), "whiteout applied");
    let ran = fs::read_to_string(out_dir.join("ran")).expect("ran");
    assert!(ran.starts_with("alpha\nnew\n") && ran.ends_with("deep\n"), "{ran}");
    Fixture { env, oci_gzip, reference }
}

impl Fixture {
    fn path(&self, name: &str) -> PathBuf {
        self.env.dir.path().join(name)
    }

    /// A directory OCI layout of the base with `flags` given to skopeo (e.g. a compression).
    fn oci_layout(&self, name: &str, source: &str, flags: &[&str]) -> PathBuf {
        let dir = self.path(name);
        let mut args = vec!["copy", "-q"];
        args.extend_from_slice(flags);
        let dest = format!("oci:{}:{BASE_NAME}", p(&dir));
        args.extend_from_slice(&[source, &dest]);
        run("skopeo", &args);
        dir
    }

    /// Tars a directory (an OCI layout, maybe with a `manifest.json`) into an archive.
    fn tar_dir(&self, dir: &Path) -> PathBuf {
        let tar = dir.with_extension("tar");
        run("tar", &["-C", p(dir), "-cf", p(&tar), "."]);
        self.env.give_to_user(&tar);
        tar
    }

    /// Docker 25+'s `docker save` layout: an OCI layout plus a `manifest.json` naming blobs.
    fn docker_new_layout(&self, layout: &Path) -> PathBuf {
        let index: serde_json::Value = serde_json::from_slice(&fs::read(layout.join("index.json")).expect("index")).expect("json");
        let digest = index["manifests"][0]["digest"].as_str().expect("digest");
        let blob = |d: &str| format!("blobs/sha256/{}", d.trim_start_matches("sha256:"));
        let manifest: serde_json::Value = serde_json::from_slice(&fs::read(layout.join(blob(digest))).expect("manifest")).expect("json");
        let layers: Vec<String> = manifest["layers"].as_array().expect("layers").iter().map(|l| blob(l["digest"].as_str().expect("d"))).collect();
        let entry = serde_json::json!([{"Config": blob(manifest["config"]["digest"].as_str().expect("config")), "RepoTags": [BASE_NAME], "Layers": layers}]);
        fs::write(layout.join("manifest.json"), serde_json::to_vec(&entry).expect("json")).expect("manifest.json");
        self.tar_dir(layout)
    }

    /// Builds [`dockerfile`] on `image` in `env` (no cache: every step really runs), checks the
    /// output against the reference, and checks the built image's archive with umoci.
    fn check(&self, env: &TestEnv, label: &str, image: &str, want_kinds: &str) -> Vec<String> {
        let mut failures = Vec::new();
        let out_dir = env.dir.path().join(format!("out-{label}"));
        let ctx = env.context(&format!("ctx-{label}"), &dockerfile(image), &[], false);
        let tag = format!("fmt/built-{label}");
        let out = env.kiln(&["build", "--no-cache", "-t", &tag, "-o", &format!("type=local,dest={}", p(&out_dir)), p(&ctx)]);
        if !out.status.success() {
            return vec![format!("{label}: build failed:\n{}", text(&out.stderr))];
        }
        let got = tree(&out_dir);
        if got != self.reference {
            let diff: Vec<String> = self
                .reference
                .iter()
                .filter(|(k, v)| got.get(*k) != Some(v))
                .map(|(k, v)| format!("  {k}: want {v}, got {:?}", got.get(k)))
                .chain(got.keys().filter(|k| !self.reference.contains_key(*k)).map(|k| format!("  {k}: unexpected")))
                .collect();
            failures.push(format!("{label}: output differs from the reference:\n{}", diff.join("\n")));
        }
        // What the base's layers were stored as.
        let stored = env.dir.path().join(format!("stored-{label}.tar"));
        ok(&env.kiln(&["save", "--format", "oci", "-o", p(&stored), image]));
        let kinds: Vec<&str> = {
            let layout = env.dir.path().join(format!("stored-{label}"));
            fs::create_dir_all(&layout).expect("mkdir");
            run("tar", &["-C", p(&layout), "-xf", p(&stored)]);
            layer_media(&layout).into_iter().map(|(_, k)| k).collect()
        };
        if kinds.join(",") != want_kinds {
            failures.push(format!("{label}: the base's layers are stored as {kinds:?}, expected {want_kinds}"));
        }
        // The image built on it: every layer's media type says what its blob holds, and umoci
        // (which trusts media types) unpacks it.
        let saved = env.dir.path().join(format!("built-{label}.tar"));
        ok(&env.kiln(&["save", "--format", "oci", "-o", p(&saved), &tag]));
        let layout = env.dir.path().join(format!("built-{label}"));
        fs::create_dir_all(&layout).expect("mkdir");
        run("tar", &["-C", p(&layout), "-xf", p(&saved)]);
        for (media, kind) in layer_media(&layout) {
            let fits = match kind {
                "gzip" => media.ends_with("+gzip"),
                "zstd" => media.ends_with("+zstd"),
                _ => media.ends_with(".tar"),
            };
            if !fits {
                failures.push(format!("{label}: built image's layer is {kind} but its media type says {media}"));
            }
        }
        if want_kinds.contains("zstd") {
            return failures; // Debian's umoci 0.4.7 cannot read zstd layers at all.
        }
        let bundle = env.dir.path().join(format!("bundle-{label}"));
        let umoci = Command::new("umoci").args(["unpack", "--rootless", "--image", &format!("{}:latest", p(&layout)), p(&bundle)]).output().expect("umoci");
        if !umoci.status.success() {
            failures.push(format!("{label}: umoci cannot unpack the built image: {}", text(&umoci.stderr)));
        } else if fs::read(bundle.join("rootfs/ran")).ok() != fs::read(env.dir.path().join(format!("out-{label}/ran"))).ok() {
            failures.push(format!("{label}: umoci's rootfs differs from -o type=local"));
        }
        failures
    }
}

fn load(env: &TestEnv, archive: &Path) {
    let out = ok(&env.kiln(&["load", "-i", p(archive)]));
    assert!(out.contains(BASE_NAME), "{out}");
}

#[test]
fn loaded_archives_of_every_layer_format_build() {
    let f = fixture("fmt-load");
    let oci_gzip = format!("oci-archive:{}", p(&f.oci_gzip));
    // skopeo's docker-archive: plain layer.tar members (old layout).
    let docker_old = f.path("docker-old.tar");
    run("skopeo", &["copy", "-q", &oci_gzip, &format!("docker-archive:{}:{BASE_NAME}", p(&docker_old))]);
    f.env.give_to_user(&docker_old);
    let docker_src = format!("docker-archive:{}", p(&docker_old));
    let plain = f.oci_layout("oci-plain", &docker_src, &["--dest-oci-accept-uncompressed-layers"]);
    let gzip = f.oci_layout("oci-gzip", &oci_gzip, &[]);
    let zstd = f.oci_layout("oci-zstd", &oci_gzip, &["--dest-compress-format", "zstd"]);
    let cases = [
        ("docker-old-plain", docker_old.clone(), "plain,plain"),
        ("oci-plain", f.tar_dir(&plain), "plain,plain"),
        ("oci-gzip", f.tar_dir(&gzip), "gzip,gzip"),
        ("oci-zstd", f.tar_dir(&zstd), "zstd,zstd"),
        ("docker-new-plain", f.docker_new_layout(&f.oci_layout("new-plain", &docker_src, &["--dest-oci-accept-uncompressed-layers"])), "plain,plain"),
        ("docker-new-gzip", f.docker_new_layout(&f.oci_layout("new-gzip", &oci_gzip, &[])), "gzip,gzip"),
        ("docker-new-zstd", f.docker_new_layout(&f.oci_layout("new-zstd", &oci_gzip, &["--dest-compress-format", "zstd"])), "zstd,zstd"),
    ];
    let mut failures = Vec::new();
    for (label, archive, kinds) in &cases {
        let env = TestEnv::new(&format!("fmt-{label}"));
        load(&env, archive);
        failures.extend(f.check(&env, label, BASE_NAME, kinds));
        assert!(env.vm_processes().is_empty(), "{label}: a VM was left running");
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn pulled_images_of_every_layer_format_build() {
    let f = fixture("fmt-pull");
    let reg = Registry::start(None);
    let oci_gzip = format!("oci-archive:{}", p(&f.oci_gzip));
    // zstd first: once the registry holds the gzip blobs, skopeo 1.9 reuses them (from its
    // blob info cache) instead of recompressing.
    for (repo, flags) in [("fmt/zstd", vec!["--dest-compress-format", "zstd"]), ("fmt/gzip", vec![])] {
        let mut args = vec!["copy", "-q", "--dest-tls-verify=false"];
        args.extend(flags);
        let dest = format!("docker://{}/{repo}:v1", reg.host);
        args.extend([oci_gzip.as_str(), dest.as_str()]);
        run("skopeo", &args);
    }
    // skopeo compresses whatever it pushes: kiln pushes the plain tars of a docker-archive.
    let pusher = TestEnv::new("fmt-pusher");
    let docker_old = f.path("docker-old.tar");
    run("skopeo", &["copy", "-q", &oci_gzip, &format!("docker-archive:{}:{BASE_NAME}", p(&docker_old))]);
    pusher.give_to_user(&docker_old);
    load(&pusher, &docker_old);
    let plain_ref = format!("{}/fmt/plain:v1", reg.host);
    ok(&pusher.kiln(&["tag", BASE_NAME, &plain_ref]));
    ok(&pusher.kiln(&["push", "-q", &plain_ref]));

    let mut failures = Vec::new();
    for (label, kinds) in [("plain", "plain,plain"), ("gzip", "gzip,gzip"), ("zstd", "zstd,zstd")] {
        let env = TestEnv::new(&format!("fmt-pull-{label}"));
        let name = format!("{}/fmt/{label}:v1", reg.host);
        ok(&env.kiln(&["pull", "-q", &name]));
        failures.extend(f.check(&env, &format!("pull-{label}"), &name, kinds));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn imported_rootfs_of_every_compression_builds() {
    let f = fixture("fmt-import");
    // The base's root filesystem, flattened, in each compression.
    let flat = f.path("flat.tar");
    ok(&f.env.kiln(&["build", "-q", "-o", &format!("type=tar,dest={}", p(&flat)), p(&f.env.context("flat-ctx", &format!("FROM {BASE_NAME}\n"), &[], false))]));
    run("gzip", &["-k", "-f", p(&flat)]);
    run("zstd", &["-q", "-f", p(&flat), "-o", &format!("{}.zst", p(&flat))]);
    let mut failures = Vec::new();
    for (label, file) in [("plain", "flat.tar"), ("gzip", "flat.tar.gz"), ("zstd", "flat.tar.zst")] {
        let env = TestEnv::new(&format!("fmt-import-{label}"));
        let path = f.path(file);
        f.env.give_to_user(&path);
        ok(&env.kiln(&["import", p(&path), BASE_NAME]));
        // kiln import stores what it made as gzip, whatever it read.
        failures.extend(f.check(&env, &format!("import-{label}"), BASE_NAME, "gzip"));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
