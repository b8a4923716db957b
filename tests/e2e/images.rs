//! Image management through the real CLI, without a guest: tag, rmi, images, inspect, history,
//! prune, load, save, import and `system check`, with skopeo as the outside reader and writer.
//! Images come from COPY-only builds (which run on the host) and from `kiln import`.

mod harness;

use std::path::{Path, PathBuf};

use harness::tars::{tar_of, M};
use harness::{assert_clean_error, text, TestEnv};

fn ok(out: &std::process::Output) -> String {
    assert!(out.status.success(), "kiln failed:\nstdout:\n{}\nstderr:\n{}", text(&out.stdout), text(&out.stderr));
    text(&out.stdout)
}

/// Builds a COPY-only image (no guest needed) named `tag` with busybox and `extra` files.
fn build_copy_image(env: &TestEnv, tag: &str, dockerfile: &str) -> String {
    let ctx = env.context(&format!("ctx-{}", tag.replace([':', '/'], "-")), dockerfile, &[("note.txt", tag)], true);
    ok(&env.kiln(&["build", "-q", "-t", tag, ctx.to_str().expect("utf8")])).trim().to_string()
}

const BASE: &str = "FROM scratch\nCOPY busybox /bin/busybox\nCMD [\"/bin/busybox\", \"sh\"]\n";

fn inspect(env: &TestEnv, image: &str) -> serde_json::Value {
    let out = ok(&env.kiln(&["inspect", image]));
    let v: serde_json::Value = serde_json::from_str(&out).expect("inspect prints JSON");
    v[0].clone()
}

#[test]
fn tag_rmi_images_inspect_history_prune() {
    let env = TestEnv::new("imgmgmt");
    let id = build_copy_image(&env, "base:1", BASE);
    let child = build_copy_image(&env, "child", "FROM base:1\nCOPY note.txt /note.txt\nENV A=b\n");
    ok(&env.kiln(&["tag", "base:1", "registry.example:5000/team/base:v1"]));

    let listing = ok(&env.kiln(&["images"]));
    assert!(listing.starts_with("REPOSITORY"), "{listing}");
    for needle in ["base ", "registry.example:5000/team/base ", "child ", &id[7..19]] {
        assert!(listing.contains(needle), "{needle:?} missing from:\n{listing}");
    }
    let quiet = ok(&env.kiln(&["image", "ls", "-q"]));
    assert_eq!(quiet.lines().count(), 2, "one line per image id:\n{quiet}");
    let filtered = ok(&env.kiln(&["images", "--filter", "reference=registry.example*"]));
    assert_eq!(filtered.lines().count(), 2, "{filtered}");
    let json = ok(&env.kiln(&["images", "--format", "json", "--digests"]));
    for line in json.lines() {
        let v: serde_json::Value = serde_json::from_str(line).expect("json line");
        assert!(v["ID"].is_string() && v["Repository"].is_string() && v["Digest"].as_str().is_some_and(|d| d.starts_with("sha256:")));
    }

    let base = inspect(&env, "base:1");
    assert_eq!(base["Id"], id.as_str());
    assert_eq!(base["RepoTags"], serde_json::json!(["base:1", "registry.example:5000/team/base:v1"]));
    assert_eq!(base["Os"], "linux");
    assert_eq!(base["Config"]["Cmd"], serde_json::json!(["/bin/busybox", "sh"]));
    assert_eq!(base["RootFS"]["Layers"].as_array().map(Vec::len), Some(1));
    assert!(base["Size"].as_u64().is_some_and(|s| s > 100_000));
    let by_id = inspect(&env, &child[7..19]);
    assert_eq!(by_id["RepoTags"], serde_json::json!(["child:latest"]));

    let history = ok(&env.kiln(&["history", "child"]));
    let rows: Vec<&str> = history.lines().collect();
    assert!(rows[0].contains("CREATED BY"), "{history}");
    assert!(rows[1].starts_with(&child[7..19]) && rows[1].contains("ENV A=b") && rows[1].contains(" 0B "), "{history}");
    assert!(history.contains("<missing>"), "{history}");
    assert_eq!(ok(&env.kiln(&["history", "-q", "--no-trunc", "child"])).lines().next(), Some(child.as_str()));

    // By id with names in two repositories: refused without -f; a parent cannot go at all.
    assert_clean_error(&env.kiln(&["rmi", &id[7..19]]), "referenced in multiple repositories");
    assert_clean_error(&env.kiln(&["rmi", "-f", &id[7..19]]), "dependent child images");
    assert_clean_error(&env.kiln(&["rmi", "ghost"]), "no such image: ghost");
    // By name: untag only while other names or children remain.
    let out = ok(&env.kiln(&["rmi", "registry.example:5000/team/base:v1"]));
    assert_eq!(out.trim(), "Untagged: registry.example:5000/team/base:v1");
    let out = ok(&env.kiln(&["image", "rm", "base:1"]));
    assert_eq!(out.trim(), "Untagged: base:1", "the parent of child stays as an intermediate image");
    assert!(!ok(&env.kiln(&["images"])).contains(&id[7..19]), "intermediate images are hidden");
    assert!(ok(&env.kiln(&["images", "-a"])).contains(&id[7..19]), "-a shows them");

    // Deleting the child leaves the former parent dangling; prune takes it and its blobs.
    let out = ok(&env.kiln(&["rmi", "child"]));
    assert!(out.contains("Untagged: child:latest") && out.contains(&format!("Deleted: {child}")), "{out}");
    assert!(ok(&env.kiln(&["images", "--filter", "dangling=true", "-q"])).contains(&id[7..19]));
    let out = ok(&env.kiln(&["image", "prune", "-f"]));
    assert!(out.contains(&format!("deleted: {id}")), "{out}");
    assert_eq!(ok(&env.kiln(&["images", "-a", "-q"])), "");
    // The images came from builds: their layers stay pinned by the build cache (as Docker
    // keeps build cache apart from images) until `builder prune` drops it.
    let out = ok(&env.kiln(&["builder", "prune", "-a", "-f"]));
    assert!(out.contains("Total reclaimed space: 1."), "the busybox layer is freed now: {out}");
    let blobs = std::fs::read_dir(env.root.join("blobs/sha256")).expect("blobs").count();
    assert_eq!(blobs, 0, "every blob was unreferenced");
}

/// A rootfs tarball with busybox and a `sh` symlink, as `tar -C rootfs -c .` makes it.
fn rootfs_tar(env: &TestEnv) -> PathBuf {
    let dir = env.dir.path().join("rootfs");
    std::fs::create_dir_all(dir.join("bin")).expect("mkdir");
    std::fs::copy("/bin/busybox", dir.join("bin/busybox")).expect("busybox");
    let _ = std::os::unix::fs::symlink("busybox", dir.join("bin/sh"));
    let tar = env.dir.path().join("rootfs.tar");
    let st = std::process::Command::new("tar").arg("-C").arg(&dir).arg("-cf").arg(&tar).arg(".").status().expect("tar");
    assert!(st.success());
    env.give_to_user(&tar);
    tar
}

fn skopeo(args: &[&str]) -> String {
    let out = std::process::Command::new("skopeo").args(args).output().expect("run skopeo");
    assert!(out.status.success(), "skopeo {args:?}: {}", text(&out.stderr));
    text(&out.stdout)
}

fn p(path: &Path) -> &str {
    path.to_str().expect("utf8 path")
}

#[test]
fn import_save_load_round_trips_with_skopeo() {
    harness::require_tool("skopeo");
    let env = TestEnv::new("imgrt");
    let rootfs = rootfs_tar(&env);
    let id = ok(&env.kiln(&["import", "-c", "CMD [\"/bin/sh\"]", "-c", "ENV A=1", "-m", "from busybox", p(&rootfs), "bb:imported"]));
    let id = id.trim();
    let info = inspect(&env, "bb:imported");
    assert_eq!(info["Id"], id);
    assert_eq!(info["Config"]["Cmd"], serde_json::json!(["/bin/sh"]));
    assert!(info["Config"]["Env"].as_array().is_some_and(|e| e.contains(&serde_json::json!("A=1"))));
    assert_eq!(info["Comment"], "from busybox");
    let diff_ids = info["RootFS"]["Layers"].clone();

    // kiln save (docker format by default, then oci) is read by skopeo both ways.
    let docker_tar = env.dir.path().join("docker.tar");
    let oci_tar = env.dir.path().join("oci.tar");
    ok(&env.kiln(&["save", "-o", p(&docker_tar), "bb:imported"]));
    ok(&env.kiln(&["save", "--format", "oci", "-o", p(&oci_tar), "bb:imported"]));
    let sk: serde_json::Value = serde_json::from_str(&skopeo(&["inspect", &format!("docker-archive:{}", p(&docker_tar))])).expect("json");
    assert_eq!(sk["Layers"], diff_ids, "skopeo reads the docker-archive's layers");
    let sk_oci: serde_json::Value = serde_json::from_str(&skopeo(&["inspect", &format!("oci-archive:{}", p(&oci_tar))])).expect("json");
    assert_eq!(sk_oci["Digest"], info["Descriptor"]["digest"], "the manifest digest survives the archive");
    assert!(skopeo_fails(&["inspect", &format!("docker-archive:{}", p(&oci_tar))]), "--format oci has no manifest.json");
    // umoci unpacks the OCI archive's layout.
    harness::require_tool("umoci");
    let layout = env.dir.path().join("layout");
    std::fs::create_dir(&layout).expect("mkdir");
    let st = std::process::Command::new("tar").arg("-C").arg(&layout).arg("-xf").arg(&oci_tar).status().expect("tar");
    assert!(st.success());
    let bundle = env.dir.path().join("bundle");
    let out = std::process::Command::new("umoci")
        .args(["unpack", "--rootless", "--image", &format!("{}:imported", p(&layout)), p(&bundle)])
        .output()
        .expect("umoci");
    assert!(out.status.success(), "umoci: {}", text(&out.stderr));
    assert!(bundle.join("rootfs/bin/busybox").is_file());
    // -o - streams.
    let out = env.kiln(&["save", "-o", "-", "bb:imported"]);
    assert!(out.status.success() && out.stdout.len() as u64 == std::fs::metadata(&docker_tar).expect("stat").len());

    // skopeo-written archives load with identical digests: docker-archive (old layout, layers
    // as uncompressed tars behind symlinks), OCI (gzip), OCI (zstd), and through stdin.
    let from_docker = env.dir.path().join("sk-docker.tar");
    let from_oci = env.dir.path().join("sk-oci.tar");
    let from_zstd = env.dir.path().join("sk-zstd.tar");
    skopeo(&["copy", "-q", &format!("oci-archive:{}", p(&oci_tar)), &format!("docker-archive:{}:sk/docker:v1", p(&from_docker))]);
    skopeo(&["copy", "-q", &format!("oci-archive:{}", p(&oci_tar)), &format!("oci-archive:{}:sk/oci:v1", p(&from_oci))]);
    skopeo(&["copy", "-q", "--dest-compress-format", "zstd", &format!("oci-archive:{}", p(&oci_tar)), &format!("oci-archive:{}:sk/zstd:v1", p(&from_zstd))]);
    for f in [&from_docker, &from_oci, &from_zstd] {
        env.give_to_user(f);
    }
    let other = TestEnv::new("imgrt2");
    assert_eq!(ok(&other.kiln(&["load", "-i", p(&from_docker)])).trim(), "Loaded image: sk/docker:v1");
    assert_eq!(ok(&other.kiln(&["image", "load", "-i", p(&from_oci)])).trim(), "Loaded image: sk/oci:v1");
    let stdin = std::fs::File::open(&from_zstd).expect("open");
    let out = other.command(&["load"]).stdin(stdin).output().expect("kiln load <");
    assert_eq!(ok(&out).trim(), "Loaded image: sk/zstd:v1");
    for (name, archive) in [("sk/docker:v1", &from_docker), ("sk/oci:v1", &from_oci), ("sk/zstd:v1", &from_zstd)] {
        let loaded = inspect(&other, name);
        assert_eq!(loaded["Id"], id, "{name}: same config");
        assert_eq!(loaded["RootFS"]["Layers"], diff_ids, "{name}: same diff ids");
        let kind = if archive == &from_docker { "docker-archive" } else { "oci-archive" };
        let sk: serde_json::Value = serde_json::from_str(&skopeo(&["inspect", &format!("{kind}:{}", p(archive))])).expect("json");
        let theirs: serde_json::Value = serde_json::from_str(&skopeo(&["inspect", "--raw", &format!("{kind}:{}", p(archive))])).expect("raw manifest");
        let layer_digests: Vec<&serde_json::Value> = theirs["layers"].as_array().map(|l| l.iter().map(|d| &d["digest"]).collect()).unwrap_or_default();
        let ours = inspect_manifest_layers(&other, name);
        assert_eq!(ours.iter().collect::<Vec<_>>(), layer_digests, "{name}: layer blobs stored byte-identical");
        if kind == "oci-archive" {
            assert_eq!(loaded["Descriptor"]["digest"], sk["Digest"], "{name}: manifest digest as skopeo wrote it");
        }
    }
    // A second load of the same archive changes nothing but is fine.
    assert_eq!(ok(&other.kiln(&["load", "-i", p(&from_oci)])).trim(), "Loaded image: sk/oci:v1");
    // Loading a name another image has moves it, saying so.
    ok(&other.kiln(&["tag", "sk/docker:v1", "sk/oci:v1"]));
    let out = ok(&other.kiln(&["load", "-i", p(&from_oci)]));
    assert!(out.starts_with("The image sk/oci:v1 already exists, renaming the old one with ID"), "{out}");
    // import reads stdin and gzip-compressed tarballs too.
    let gz = env.dir.path().join("rootfs.tar.gz");
    let st = std::process::Command::new("sh").arg("-c").arg(format!("gzip -c {} > {}", p(&rootfs), p(&gz))).status().expect("gzip");
    assert!(st.success());
    env.give_to_user(&gz);
    let out = other.command(&["import", "-", "from/stdin:gz"]).stdin(std::fs::File::open(&gz).expect("open")).output().expect("import -");
    ok(&out);
    assert_eq!(inspect(&other, "from/stdin:gz")["RootFS"]["Layers"], diff_ids, "same tar, same diff id");
    // Three manifests (docker-archive, gzip OCI, zstd OCI) of one config are one image id.
    assert_eq!(inspect(&other, &id[7..19])["Id"], id);
    assert_clean_error(&other.kiln(&["rmi", &id[7..19]]), "referenced in multiple repositories");
    let out = ok(&other.kiln(&["rmi", "-f", &id[7..19]]));
    assert_eq!(out.matches("Untagged:").count(), 3, "{out}");
    assert_eq!(ok(&other.kiln(&["images", "--format", "json"])).lines().count(), 1, "only the stdin import is left");
    assert!(ok(&other.kiln(&["system", "check"])).contains("0 problems"));
    // kiln's own archive loads back with the same manifest digest.
    let third = TestEnv::new("imgrt3");
    assert_eq!(ok(&third.kiln(&["load", "-i", p(&docker_tar)])).trim(), "Loaded image: bb:imported");
    assert_eq!(inspect(&third, "bb:imported")["Descriptor"], info["Descriptor"]);
}

fn skopeo_fails(args: &[&str]) -> bool {
    !std::process::Command::new("skopeo").args(args).output().expect("run skopeo").status.success()
}

/// The layer digests of an image's stored manifest, read from the store directly.
fn inspect_manifest_layers(env: &TestEnv, name: &str) -> Vec<serde_json::Value> {
    let manifest = inspect(env, name)["Descriptor"]["digest"].as_str().expect("digest").to_string();
    let path = env.root.join("blobs/sha256").join(manifest.trim_start_matches("sha256:"));
    let m: serde_json::Value = serde_json::from_slice(&std::fs::read(path).expect("manifest blob")).expect("json");
    m["layers"].as_array().expect("layers").iter().map(|l| l["digest"].clone()).collect()
}

fn sha(bytes: &[u8]) -> String {
    kiln_store::Digest::of(bytes).to_string()
}

fn config_for(diff_ids: &[String]) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64", "os": "linux", "config": {},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }))
    .expect("json")
}

/// A docker-archive (old layout) holding `layer`, with `config` and `manifest` overridable.
fn docker_archive(layer: &[u8], extra: Vec<M>, manifest: Option<&str>) -> Vec<u8> {
    let config = config_for(&[sha(layer)]);
    let default_manifest = r#"[{"Config":"config.json","RepoTags":["evil:latest"],"Layers":["l1/layer.tar"]}]"#;
    let mut members = vec![
        M::File("config.json", config),
        M::File("l1/layer.tar", layer.to_vec()),
        M::File("manifest.json", manifest.unwrap_or(default_manifest).as_bytes().to_vec()),
    ];
    members.extend(extra);
    tar_of(&members)
}

#[test]
fn hostile_and_broken_archives_are_rejected_and_leave_the_store_alone() {
    let env = TestEnv::new("imghostile");
    let good_layer = tar_of(&[M::File("etc/motd", b"hi".to_vec())]);
    // The well-formed archive loads (so the cases below fail for their one defect).
    let probe = TestEnv::new("imghostile-ok");
    let good = env.dir.path().join("good.tar");
    std::fs::write(&good, docker_archive(&good_layer, vec![], None)).expect("write");
    env.give_to_user(&good);
    assert_eq!(ok(&probe.kiln(&["load", "-i", p(&good)])).trim(), "Loaded image: evil:latest");

    ok(&env.kiln(&["import", p(&rootfs_tar(&env)), "keep:me"]));
    let before = env.store_snapshot();
    let saved = env.dir.path().join("saved.tar");
    ok(&env.kiln(&["save", "--format", "oci", "-o", p(&saved), "keep:me"]));
    let saved_bytes = std::fs::read(&saved).expect("read");

    let wrong_blob = {
        // An OCI layout whose layer blob's content does not match its name.
        let layer = good_layer.clone();
        let config = config_for(&[sha(&layer)]);
        let fake = "0".repeat(64);
        let manifest = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha(&config), "size": config.len()},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": format!("sha256:{fake}"), "size": layer.len()}],
        }))
        .expect("json");
        let index = serde_json::to_vec(&serde_json::json!({"schemaVersion": 2, "manifests": [
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": sha(&manifest), "size": manifest.len()}]}))
        .expect("json");
        let c = format!("blobs/sha256/{}", &sha(&config)[7..]);
        let m = format!("blobs/sha256/{}", &sha(&manifest)[7..]);
        let l = format!("blobs/sha256/{fake}");
        tar_of(&[M::File(&c, config.clone()), M::File(&m, manifest.clone()), M::File(&l, layer), M::File("index.json", index)])
    };
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("dotdot member", docker_archive(&good_layer, vec![M::File("../escape", b"x".to_vec())], None), "contains '..'"),
        ("absolute member", docker_archive(&good_layer, vec![M::File("/etc/x", b"x".to_vec())], None), "absolute path"),
        (
            "symlink member escaping",
            docker_archive(&good_layer, vec![M::Symlink("l2/layer.tar", "../../../etc/passwd")], Some(r#"[{"Config":"config.json","Layers":["l2/layer.tar"]}]"#)),
            "points outside the archive",
        ),
        ("dotdot in a layer", docker_archive(&tar_of(&[M::File("a/../../x", b"x".to_vec())]), vec![], None), "contains '..'"),
        ("absolute path in a layer", docker_archive(&tar_of(&[M::File("/etc/passwd", b"x".to_vec())]), vec![], None), "absolute path"),
        ("hardlink escape in a layer", docker_archive(&tar_of(&[M::Hardlink("x", "../../etc/shadow")]), vec![], None), "hardlink x"),
        (
            "write through a symlink in a layer",
            docker_archive(&tar_of(&[M::Symlink("a", "/etc"), M::File("a/passwd", b"x".to_vec())]), vec![], None),
            "goes through the symlink",
        ),
        (
            "absent config",
            docker_archive(&good_layer, vec![], Some(r#"[{"Config":"missing.json","Layers":["l1/layer.tar"]}]"#)),
            "missing.json is missing from the archive",
        ),
        (
            "diff id mismatch",
            tar_of(&[
                M::File("config.json", config_for(&[sha(b"something else")])),
                M::File("l.tar", good_layer.clone()),
                M::File("manifest.json", br#"[{"Config":"config.json","Layers":["l.tar"]}]"#.to_vec()),
            ]),
            "the config says",
        ),
        ("wrong blob digest", wrong_blob, "digest mismatch"),
        ("truncated", saved_bytes[..saved_bytes.len() / 2].to_vec(), "truncated"),
        ("not an archive", b"hello, world".to_vec(), "invalid archive"),
        ("device node in a layer", docker_archive(&tar_of(&[M::Claim("dev/sda", tar::EntryType::Block, 0)]), vec![], None), "device node"),
        ("10 GB sparse file in a layer", docker_archive(&tar_of(&[M::Claim("big", tar::EntryType::GNUSparse, 0)]), vec![], None), "rejected layer"),
        ("10 GB claim", tar_of(&[M::File("config.json", b"{}".to_vec()), M::Claim("l.tar", tar::EntryType::Regular, 10 << 30)]), "truncated"),
        ("duplicate member", docker_archive(&good_layer, vec![M::File("./config.json", b"{}".to_vec())], None), "appears twice"),
    ];
    for (what, bytes, needle) in cases {
        let path = env.dir.path().join("hostile.tar");
        std::fs::write(&path, &bytes).expect("write");
        env.give_to_user(&path);
        let out = env.kiln(&["load", "-i", p(&path)]);
        eprintln!("{what}: {}", text(&out.stderr).trim());
        assert_clean_error(&out, needle);
        assert_eq!(env.store_snapshot(), before, "{what}: the store changed");
    }
    // Bad import input, too.
    let junk = env.dir.path().join("junk.tar");
    std::fs::write(&junk, tar_of(&[M::File("../../x", b"x".to_vec())])).expect("write");
    env.give_to_user(&junk);
    assert_clean_error(&env.kiln(&["import", p(&junk), "junk"]), "contains '..'");
    assert_clean_error(&env.kiln(&["import", "-c", "RUN true", p(&junk), "junk"]), "can be changed");
    assert_eq!(env.store_snapshot(), before, "failed imports changed the store");
}

#[test]
fn system_check_finds_and_repairs_corruption() {
    let env = TestEnv::new("imgfsck");
    let rootfs = rootfs_tar(&env);
    ok(&env.kiln(&["import", p(&rootfs), "victim:1"]));
    let other = env.dir.path().join("other.tar");
    std::fs::write(&other, tar_of(&[M::File("hello", b"hello".to_vec())])).expect("write");
    env.give_to_user(&other);
    ok(&env.kiln(&["import", p(&other), "healthy:1"]));
    let out = ok(&env.kiln(&["system", "check"]));
    assert!(out.contains("0 problems"), "{out}");

    let info = inspect(&env, "victim:1");
    let manifest = info["Descriptor"]["digest"].as_str().expect("digest").trim_start_matches("sha256:").to_string();
    let layer = inspect_manifest_layers(&env, "victim:1")[0].as_str().expect("layer").trim_start_matches("sha256:").to_string();
    let blob = env.root.join("blobs/sha256").join(&layer);
    std::fs::write(&blob, b"bit rot").expect("corrupt a layer");
    env.give_to_user(&blob);
    let before = env.store_snapshot();
    let out = env.kiln(&["system", "check"]);
    assert_clean_error(&out, "run `kiln system check --repair`");
    assert!(text(&out.stdout).contains(&format!("blob sha256:{layer} is corrupt")), "{}", text(&out.stdout));
    assert!(text(&out.stdout).contains(&format!("image sha256:{manifest} (docker.io/library/victim:1) is broken")));
    assert_eq!(env.store_snapshot(), before, "a check without --repair changes nothing");

    let out = ok(&env.kiln(&["system", "check", "--repair"]));
    assert!(out.contains("(repaired)"), "{out}");
    assert!(ok(&env.kiln(&["system", "check"])).contains("0 problems"));
    assert_clean_error(&env.kiln(&["inspect", "victim:1"]), "no such image");
    ok(&env.kiln(&["inspect", "healthy:1"]));
}

#[test]
fn concurrent_imports_and_prunes_keep_the_store_consistent() {
    let env = TestEnv::new("imgconc");
    let rootfs = rootfs_tar(&env);
    ok(&env.kiln(&["import", p(&rootfs), "seed"]));
    ok(&env.kiln(&["rmi", "seed"]));
    let mut children = Vec::new();
    for i in 0..4 {
        children.push(env.spawn(&["import", p(&rootfs), &format!("app:{i}")]));
        children.push(env.spawn(&["image", "prune", "-f"]));
    }
    for c in children {
        let out = c.wait_with_output().expect("wait");
        ok(&out);
    }
    assert!(ok(&env.kiln(&["system", "check"])).contains("0 problems"));
    let listing = ok(&env.kiln(&["images", "--format", "json"]));
    assert_eq!(listing.lines().count(), 4, "{listing}");
    for i in 0..4 {
        let layers = inspect_manifest_layers(&env, &format!("app:{i}"));
        assert!(env.root.join("blobs/sha256").join(layers[0].as_str().expect("d").trim_start_matches("sha256:")).is_file());
    }
}

#[test]
fn a_load_killed_midway_leaves_nothing_half_imported() {
    let env = TestEnv::new("imgkill");
    let rootfs = rootfs_tar(&env);
    ok(&env.kiln(&["import", p(&rootfs), "keep:1"]));
    let archive = env.dir.path().join("a.tar");
    ok(&env.kiln(&["save", "-o", p(&archive), "keep:1"]));
    let bytes = std::fs::read(&archive).expect("read");
    let other = TestEnv::new("imgkill2");
    ok(&other.kiln(&["images"]));
    let outside_ingest = |env: &TestEnv| -> Vec<String> {
        env.store_snapshot().into_keys().filter(|k| !k.starts_with("ingest/")).collect()
    };
    let before = outside_ingest(&other);
    let mut child = other.command(&["load"]).stdin(std::process::Stdio::piped()).spawn().expect("spawn");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().expect("stdin");
        stdin.write_all(&bytes[..bytes.len() * 3 / 4]).expect("feed");
        std::thread::sleep(std::time::Duration::from_millis(500));
        child.kill().expect("kill -9");
        drop(stdin);
    }
    let _ = child.wait();
    assert_eq!(outside_ingest(&other), before, "a killed load must not change blobs, images or names");
    assert!(ok(&other.kiln(&["system", "check"])).contains("0 problems"));
    assert_eq!(ok(&other.kiln(&["load", "-i", p(&archive)])).trim(), "Loaded image: keep:1");
}

#[test]
fn images_filters_by_label_and_time() {
    let env = TestEnv::new("imgfilter");
    let rootfs = rootfs_tar(&env);
    for (name, epoch) in [("old:1", "1000"), ("mid:1", "2000"), ("new:1", "3000")] {
        ok(&env.kiln_with(&["import", p(&rootfs), name], &[("SOURCE_DATE_EPOCH", epoch)]));
    }
    let repos = |filter: &str| -> Vec<String> {
        let out = ok(&env.kiln(&["images", "--format", "json", "--filter", filter]));
        out.lines().map(|l| serde_json::from_str::<serde_json::Value>(l).expect("json")["Repository"].as_str().unwrap_or("").to_string()).collect()
    };
    assert_eq!(repos("before=mid:1"), vec!["old"]);
    assert_eq!(repos("since=mid:1"), vec!["new"]);
    // An archive whose config carries labels.
    let layer = tar_of(&[M::File("f", b"x".to_vec())]);
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64", "os": "linux", "config": {"Labels": {"team": "store", "tier": "1"}},
        "rootfs": {"type": "layers", "diff_ids": [sha(&layer)]},
    }))
    .expect("json");
    let archive = tar_of(&[
        M::File("c.json", config),
        M::File("l.tar", layer),
        M::File("manifest.json", br#"[{"Config":"c.json","RepoTags":["labelled:1"],"Layers":["l.tar"]}]"#.to_vec()),
    ]);
    let path = env.dir.path().join("labelled.tar");
    std::fs::write(&path, archive).expect("write");
    env.give_to_user(&path);
    ok(&env.kiln(&["load", "-i", p(&path)]));
    assert_eq!(repos("label=team"), vec!["labelled"]);
    assert_eq!(repos("label=team=store"), vec!["labelled"]);
    assert!(repos("label=team=other").is_empty());
    assert_eq!(inspect(&env, "labelled:1")["Config"]["Labels"]["tier"], "1");
    assert_clean_error(&env.kiln(&["images", "--filter", "colour=blue"]), "invalid filter");
}

#[test]
fn import_from_an_http_url() {
    let env = TestEnv::new("importurl");
    let tar = rootfs_tar(&env);
    let dir = tar.parent().expect("dir").to_path_buf();
    let port = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
    let mut server = std::process::Command::new("python3")
        .args(["-m", "http.server", "--bind", "127.0.0.1", &port.to_string(), "--directory"])
        .arg(&dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("python3 http.server");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(std::time::Instant::now() < deadline, "http.server did not start");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let name = tar.file_name().expect("name").to_string_lossy().into_owned();
    let url = format!("http://127.0.0.1:{port}/{name}");
    let imported = env.kiln(&["import", &url, "fromurl:v1"]);
    let missing = env.kiln(&["import", &format!("http://127.0.0.1:{port}/nope.tar"), "nope"]);
    let _ = server.kill();
    let _ = server.wait();
    ok(&imported);
    let listing = ok(&env.kiln(&["images"]));
    assert!(listing.contains("fromurl") && listing.contains("v1"), "{listing}");
    assert_clean_error(&missing, "answered 404");
}

/// `-o type=local` of a hostile image (made of layers that each pass verification): a symlink
/// to a host directory and to `/` in one layer, a file under that name in the next, a file
/// replacing a directory, a setuid file. Nothing lands outside the destination, no setuid
/// bit on the host.
#[test]
fn exporting_a_hostile_image_writes_nothing_outside_the_destination() {
    let env = TestEnv::new("imgexport");
    let victim = env.dir.path().join("victim");
    std::fs::create_dir_all(&victim).expect("mkdir");
    env.give_to_user(&victim);
    let victim_s = p(&victim).to_string();
    let mut setuid = tar::Header::new_gnu();
    setuid.set_path("su").expect("path");
    setuid.set_size(4);
    setuid.set_mode(0o4755);
    setuid.set_cksum();
    let mut l1 = tar::Builder::new(Vec::new());
    l1.append(&setuid, &b"#!x\n"[..]).expect("setuid");
    let mut l1 = l1.into_inner().expect("tar");
    // tar_of's end blocks would end the layer: strip them and append the rest.
    l1.truncate(l1.len() - 1024);
    l1.extend(tar_of(&[M::Symlink("esc", &victim_s), M::Symlink("root", "/"), M::File("d/inside", b"x".to_vec())]));
    let l2 = tar_of(&[M::File("esc/pwned", b"pwned".to_vec()), M::File("root/tmp/pwned-by-kiln-test", b"pwned".to_vec()), M::File("d", b"file now".to_vec())]);
    let config = config_for(&[sha(&l1), sha(&l2)]);
    let archive = tar_of(&[
        M::File("config.json", config),
        M::File("l1/layer.tar", l1),
        M::File("l2/layer.tar", l2),
        M::File("manifest.json", br#"[{"Config":"config.json","RepoTags":["hostile:1"],"Layers":["l1/layer.tar","l2/layer.tar"]}]"#.to_vec()),
    ]);
    let path = env.dir.path().join("hostile.tar");
    std::fs::write(&path, archive).expect("write");
    env.give_to_user(&path);
    ok(&env.kiln(&["load", "-i", p(&path)]));
    let ctx = env.context("ctx", "FROM hostile:1\n", &[], false);
    let dest = env.dir.path().join("out");
    let out = env.kiln(&["build", "-o", &format!("type=local,dest={}", p(&dest)), p(&ctx)]);
    eprintln!("export: {}", text(&out.stderr).trim());
    assert_eq!(std::fs::read_dir(&victim).expect("ls").count(), 0, "nothing written into the host directory a symlink named");
    assert!(!Path::new("/tmp/pwned-by-kiln-test").exists(), "nothing written through a symlink to /");
    if out.status.success() {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dest.join("su")).expect("su").permissions().mode();
        assert_eq!(mode & 0o7000, 0, "no setuid bit on the host ({mode:o})");
        assert_eq!(std::fs::read_to_string(dest.join("d")).expect("d"), "file now", "the file replaced the directory");
    } else {
        assert_clean_error(&out, "outside");
    }
}
