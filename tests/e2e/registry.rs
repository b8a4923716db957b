//! Registry commands (pull, push, login, logout) through the real CLI against real registries
//! on loopback: Debian's `docker-registry`, one instance per test from a generated config on a
//! free port with a temp storage dir, killed at the end; skopeo as the other client.

mod harness;
mod registry_ux;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use harness::registry::{make_certificates, Registry};
use harness::{assert_clean_error, require_tool, text, TestEnv};

fn ok(out: &Output) -> String {
    assert!(out.status.success(), "kiln failed:\nstdout:\n{}\nstderr:\n{}", text(&out.stdout), text(&out.stderr));
    text(&out.stdout)
}

fn p(path: &Path) -> &str {
    path.to_str().expect("utf8 path")
}

fn skopeo(args: &[&str]) -> String {
    let out = Command::new("skopeo").args(args).output().expect("run skopeo");
    assert!(out.status.success(), "skopeo {args:?}: {}", text(&out.stderr));
    text(&out.stdout)
}

/// A rootfs tar with busybox and a file naming `flavour`, so images of different flavours
/// have different layers.
fn rootfs_tar(env: &TestEnv, flavour: &str) -> PathBuf {
    let mut b = tar::Builder::new(Vec::new());
    b.append_path_with_name("/bin/busybox", "bin/busybox").expect("busybox");
    let mut h = tar::Header::new_gnu();
    h.set_size(flavour.len() as u64);
    h.set_mode(0o644);
    h.set_cksum();
    b.append_data(&mut h, "flavour", flavour.as_bytes()).expect("flavour");
    let path = env.dir.path().join(format!("rootfs-{flavour}.tar"));
    std::fs::write(&path, b.into_inner().expect("tar")).expect("write tar");
    env.give_to_user(&path);
    path
}

/// Imports a one-layer image named `name`, saves it as an OCI archive, returns the archive.
fn image_archive(env: &TestEnv, name: &str, flavour: &str, platform: &str) -> PathBuf {
    let rootfs = rootfs_tar(env, flavour);
    ok(&env.kiln(&["import", "--platform", platform, p(&rootfs), name]));
    let out = env.dir.path().join(format!("{flavour}.oci.tar"));
    ok(&env.kiln(&["save", "--format", "oci", "-o", p(&out), name]));
    out
}

fn inspect_remote(reg: &Registry, repo_tag: &str, extra: &[&str]) -> serde_json::Value {
    let mut args = vec!["inspect", "--tls-verify=false"];
    args.extend_from_slice(extra);
    let target = format!("docker://{}/{repo_tag}", reg.host);
    args.push(&target);
    serde_json::from_str(&skopeo(&args)).expect("skopeo inspect JSON")
}

fn line_value<'a>(out: &'a str, prefix: &str) -> &'a str {
    out.lines().find_map(|l| l.strip_prefix(prefix)).unwrap_or_else(|| panic!("no {prefix:?} line in:\n{out}")).trim()
}

#[test]
fn pull_what_skopeo_pushed_then_already_exists() {
    let reg = Registry::start(None);
    let src = TestEnv::new("regsrc");
    let archive = image_archive(&src, "bb:v1", "one", "linux/amd64");
    skopeo(&["copy", "--dest-tls-verify=false", &format!("oci-archive:{}", p(&archive)), &format!("docker://{}/team/bb:v1", reg.host)]);
    let remote = inspect_remote(&reg, "team/bb:v1", &[]);

    let env = TestEnv::new("regpull");
    let name = format!("{}/team/bb:v1", reg.host);
    let out = ok(&env.kiln(&["pull", &name]));
    assert!(out.starts_with("v1: Pulling from "), "{out}");
    assert_eq!(line_value(&out, "Digest: "), remote["Digest"].as_str().expect("digest"), "{out}");
    assert!(out.contains(&format!("Status: Downloaded newer image for {name}")), "{out}");
    assert!(out.contains("Pull complete"), "{out}");
    for layer in remote["Layers"].as_array().expect("layers") {
        let hex = layer.as_str().expect("layer").trim_start_matches("sha256:");
        assert!(env.root.join("blobs/sha256").join(hex).is_file(), "layer {hex} stored");
    }
    // The stored manifest is the registry's, byte for byte: the image's digest matches.
    let images = ok(&env.kiln(&["images", "--digests", "--format", "json"]));
    assert!(images.contains(remote["Digest"].as_str().expect("digest")), "{images}");
    assert!(env.store_files_not_owned_by_user().is_empty());

    let again = ok(&env.kiln(&["pull", &name]));
    assert!(again.contains("Already exists") && again.contains("Status: Image is up to date"), "{again}");
    assert_eq!(ok(&env.kiln(&["pull", "-q", &name])).trim(), name);
    let by_digest = format!("{}/team/bb@{}", reg.host, remote["Digest"].as_str().expect("digest"));
    ok(&env.kiln(&["pull", &by_digest]));
    assert_clean_error(&env.kiln(&["pull", &format!("{}/team/bb:nope", reg.host)]), "not found");
}

#[test]
fn multi_arch_index_pulls_the_right_platform() {
    let reg = Registry::start(None);
    let src = TestEnv::new("regmultisrc");
    let mut entries = Vec::new();
    for (flavour, arch) in [("amd", "amd64"), ("arm", "arm64")] {
        let archive = image_archive(&src, &format!("bb:{flavour}"), flavour, &format!("linux/{arch}"));
        skopeo(&["copy", "--dest-tls-verify=false", &format!("oci-archive:{}", p(&archive)), &format!("docker://{}/multi/bb:{flavour}", reg.host)]);
        let raw = skopeo(&["inspect", "--raw", "--tls-verify=false", &format!("docker://{}/multi/bb:{flavour}", reg.host)]);
        let digest = inspect_remote(&reg, &format!("multi/bb:{flavour}"), &[])["Digest"].as_str().expect("digest").to_string();
        entries.push((digest, raw.len(), arch));
    }
    let manifests: Vec<serde_json::Value> = entries
        .iter()
        .map(|(d, size, arch)| serde_json::json!({"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": d, "size": size, "platform": {"os": "linux", "architecture": arch}}))
        .collect();
    let index = serde_json::to_vec(&serde_json::json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": manifests})).expect("index");
    let status = reg.request("PUT", "/v2/multi/bb/manifests/latest", &[("Content-Type", "application/vnd.oci.image.index.v1+json")], &index);
    assert_eq!(status, 201, "PUT index");

    let env = TestEnv::new("regmulti");
    let name = format!("{}/multi/bb", reg.host);
    let out = ok(&env.kiln(&["pull", "--platform", "linux/arm64", &name]));
    let index_digest = format!("sha256:{}", sha256_hex(&index));
    assert_eq!(line_value(&out, "Digest: "), index_digest, "Docker prints the index digest:\n{out}");
    let info: serde_json::Value = serde_json::from_str(&ok(&env.kiln(&["inspect", &name]))).expect("json");
    assert_eq!(info[0]["Architecture"], "arm64");
    ok(&env.kiln(&["pull", &name]));
    let info: serde_json::Value = serde_json::from_str(&ok(&env.kiln(&["inspect", &name]))).expect("json");
    assert_eq!(info[0]["Architecture"], "amd64", "the default is this machine's platform");
    assert_clean_error(&env.kiln(&["pull", "--platform", "linux/s390x", &name]), "no matching manifest for linux/s390x");
}

fn sha256_hex(bytes: &[u8]) -> String {
    let out = Command::new("sha256sum").stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().and_then(|mut c| {
        c.stdin.take().expect("stdin").write_all(bytes)?;
        c.wait_with_output()
    });
    text(&out.expect("sha256sum").stdout).split_whitespace().next().expect("hash").to_string()
}

#[test]
fn corrupted_blob_is_rejected_and_the_store_unchanged() {
    let reg = Registry::start(None);
    let src = TestEnv::new("regcorruptsrc");
    let archive = image_archive(&src, "bb:v1", "corrupt", "linux/amd64");
    skopeo(&["copy", "--dest-tls-verify=false", &format!("oci-archive:{}", p(&archive)), &format!("docker://{}/c/bb:v1", reg.host)]);
    let remote = inspect_remote(&reg, "c/bb:v1", &[]);
    let layer = remote["Layers"][0].as_str().expect("layer").to_string();
    let file = reg.blob_file(&layer);
    let mut bytes = std::fs::read(&file).expect("blob");
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&file, &bytes).expect("corrupt");

    let env = TestEnv::new("regcorrupt");
    ok(&env.kiln(&["images"]));
    let before = env.store_snapshot();
    let out = env.kiln(&["pull", &format!("{}/c/bb:v1", reg.host)]);
    assert_clean_error(&out, "rejected");
    assert_eq!(env.store_snapshot(), before, "a rejected pull leaves the store as it was");
}

#[test]
fn htpasswd_registry_wants_the_right_password() {
    let reg = Registry::start(Some(("kiln", "s3cret")));
    let src = TestEnv::new("regauthsrc");
    let archive = image_archive(&src, "bb:v1", "auth", "linux/amd64");
    skopeo(&["copy", "--dest-tls-verify=false", "--dest-creds", "kiln:s3cret", &format!("oci-archive:{}", p(&archive)), &format!("docker://{}/a/bb:v1", reg.host)]);
    let name = format!("{}/a/bb:v1", reg.host);

    let env = TestEnv::new("regauth");
    assert_clean_error(&env.kiln(&["pull", &name]), "unauthorized");
    let docker = env.home.join(".docker");
    std::fs::create_dir_all(&docker).expect("mkdir");
    let write_config = |auth: &str| {
        std::fs::write(docker.join("config.json"), format!(r#"{{"auths":{{"{}":{{"auth":"{auth}"}}}}}}"#, reg.host)).expect("config");
        env.give_to_user(&docker);
    };
    write_config("a2lsbjp3cm9uZw=="); // kiln:wrong
    assert_clean_error(&env.kiln(&["pull", &name]), "unauthorized");
    write_config("a2lsbjpzM2NyZXQ="); // kiln:s3cret
    ok(&env.kiln(&["pull", &name]));

    // kiln login checks the password before saving it; logout removes it.
    std::fs::remove_file(docker.join("config.json")).expect("rm config");
    assert_clean_error(&login(&env, &reg.host, "wrong"), "unauthorized");
    assert!(!docker.join("config.json").exists(), "a refused login saves nothing");
    assert_eq!(ok(&login(&env, &reg.host, "s3cret")).trim(), "Login Succeeded");
    let config = std::fs::read_to_string(docker.join("config.json")).expect("config.json");
    assert!(config.contains(&reg.host) && config.contains("a2lsbjpzM2NyZXQ="), "{config}");
    ok(&env.kiln(&["pull", &name]));
    let pushed = format!("{}/a/pushed:v1", reg.host);
    ok(&env.kiln(&["tag", &name, &pushed]));
    let out = ok(&env.kiln(&["push", &pushed]));
    assert!(out.contains("Mounted from a/bb"), "{out}");
    inspect_remote(&reg, "a/pushed:v1", &["--creds", "kiln:s3cret"]);
    assert_eq!(ok(&env.kiln(&["logout", &reg.host])).trim(), format!("Removing login credentials for {}", reg.host));
    assert_eq!(ok(&env.kiln(&["logout", &reg.host])).trim(), format!("Not logged in to {}", reg.host));
    assert_clean_error(&env.kiln(&["push", &pushed]), "unauthorized");
}

fn login(env: &TestEnv, host: &str, password: &str) -> Output {
    let mut child = env.command(&["login", "-u", "kiln", "--password-stdin", host]).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn kiln login");
    child.stdin.take().expect("stdin").write_all(format!("{password}\n").as_bytes()).expect("write password");
    child.wait_with_output().expect("kiln login")
}

#[test]
fn push_round_trips_with_skopeo_and_mounts_across_repositories() {
    let reg = Registry::start(None);
    let env = TestEnv::new("regpush");
    let name = format!("{}/team/app:v1", reg.host);
    let rootfs = rootfs_tar(&env, "push");
    ok(&env.kiln(&["import", p(&rootfs), &name]));
    let out = ok(&env.kiln(&["push", &name]));
    assert!(out.starts_with(&format!("The push refers to repository [{}/team/app]", reg.host)), "{out}");
    assert!(out.contains(": Pushed"), "{out}");
    let digest = line_value(&out, "v1: digest: ").split_whitespace().next().expect("digest").to_string();
    let remote = inspect_remote(&reg, "team/app:v1", &[]);
    assert_eq!(remote["Digest"].as_str(), Some(digest.as_str()), "skopeo sees the manifest kiln pushed");
    // skopeo can read every blob back.
    let copy = env.dir.path().join("copy.oci.tar");
    skopeo(&["copy", "--src-tls-verify=false", &format!("docker://{name}"), &format!("oci-archive:{}", p(&copy))]);

    let again = ok(&env.kiln(&["push", &name]));
    assert!(again.contains("Layer already exists") && !again.contains(": Pushed"), "{again}");
    let other = format!("{}/other/app:v2", reg.host);
    ok(&env.kiln(&["tag", &name, &other]));
    let mounted = ok(&env.kiln(&["push", &other]));
    assert!(mounted.contains("Mounted from team/app"), "{mounted}");
    assert_eq!(ok(&env.kiln(&["push", "-q", &other])).trim(), digest);

    // Chunked upload (PATCH chunks of 100 kB, then PUT): same digest for skopeo.
    let chunked = format!("{}/team/chunked:v1", reg.host);
    let rootfs = rootfs_tar(&env, "chunked");
    ok(&env.kiln(&["import", p(&rootfs), &chunked]));
    let out = ok(&env.kiln_with(&["push", &chunked], &[("KILN_PUSH_CHUNK_SIZE", "100000")]));
    let chunked_digest = line_value(&out, "v1: digest: ").split_whitespace().next().expect("digest").to_string();
    assert_eq!(inspect_remote(&reg, "team/chunked:v1", &[])["Digest"].as_str(), Some(chunked_digest.as_str()));
    let copy = env.dir.path().join("chunked.oci.tar");
    skopeo(&["copy", "--src-tls-verify=false", &format!("docker://{chunked}"), &format!("oci-archive:{}", p(&copy))]);

    let fresh = TestEnv::new("regpushpull");
    let pulled = ok(&fresh.kiln(&["pull", &other]));
    assert_eq!(line_value(&pulled, "Digest: "), digest);
    assert_clean_error(&env.kiln(&["push", &format!("{}/team/absent:v1", reg.host)]), "no such image");
}

/// `fixtures/fake_registry.py` in front of a real registry, killed on drop.
struct Fake {
    child: Child,
    host: String,
    log: PathBuf,
}

impl Fake {
    fn start(upstream: &Registry, mode: &str) -> Self {
        require_tool("python3");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/e2e/fixtures/fake_registry.py");
        let port_file = upstream.dir.path().join(format!("fake-{mode}.port"));
        let log = upstream.dir.path().join(format!("fake-{mode}.log"));
        let child = Command::new("python3")
            .arg(&script)
            .args([upstream.host.as_str(), p(&port_file), p(&log), mode])
            .stdin(Stdio::null())
            .spawn()
            .expect("start the fake registry");
        let deadline = Instant::now() + Duration::from_secs(20);
        let port = loop {
            if let Ok(s) = std::fs::read_to_string(&port_file) {
                break s;
            }
            assert!(Instant::now() < deadline, "the fake registry did not start");
            std::thread::sleep(Duration::from_millis(50));
        };
        Self { child, host: format!("127.0.0.1:{}", port.trim()), log }
    }

    fn events(&self, event: &str) -> usize {
        std::fs::read_to_string(&self.log).unwrap_or_default().lines().filter(|l| *l == event).count()
    }
}

impl Drop for Fake {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn bearer_tokens_retries_and_redirects_without_leaking_credentials() {
    let reg = Registry::start(None);
    let src = TestEnv::new("regbearersrc");
    let archive = image_archive(&src, "bb:v1", "bearer", "linux/amd64");
    skopeo(&["copy", "--dest-tls-verify=false", &format!("oci-archive:{}", p(&archive)), &format!("docker://{}/b/bb:v1", reg.host)]);
    let fake = Fake::start(&reg, "ok");
    let name = format!("{}/b/bb:v1", fake.host);

    let env = TestEnv::new("regbearer");
    assert_clean_error(&env.kiln(&["pull", &name]), "unauthorized");
    assert_clean_error(&login(&env, &fake.host, "wrong"), "unauthorized");
    let mut child = env.command(&["login", "-u", "kiln", "--password-stdin", &fake.host]).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn");
    child.stdin.take().expect("stdin").write_all(b"tok3n\n").expect("password");
    assert_eq!(ok(&child.wait_with_output().expect("login")).trim(), "Login Succeeded");
    let tokens_before = fake.events("token");
    let out = ok(&env.kiln(&["pull", &name]));
    assert!(out.contains("Pull complete"), "{out}");
    assert_eq!(fake.events("token") - tokens_before, 1, "one token per scope, cached for every request of the pull");
    assert!(fake.events("503") >= 2, "config and layer were each answered 503 once, then retried");
    assert!(fake.events("redirect") >= 2 && fake.events("storage") >= 2, "blobs came through the redirect");
    assert_eq!(fake.events("leak"), 0, "Authorization must not follow a redirect to another host");
    assert_eq!(line_value(&out, "Digest: "), inspect_remote(&reg, "b/bb:v1", &[])["Digest"].as_str().expect("digest"));

    let corrupt = Fake::start(&reg, "corrupt");
    let other = TestEnv::new("regbearercorrupt");
    let docker = other.home.join(".docker");
    std::fs::create_dir_all(&docker).expect("mkdir");
    std::fs::write(docker.join("config.json"), format!(r#"{{"auths":{{"{}":{{"auth":"a2lsbjp0b2szbg=="}}}}}}"#, corrupt.host)).expect("config");
    other.give_to_user(&docker);
    ok(&other.kiln(&["images"]));
    let before = other.store_snapshot();
    assert_clean_error(&other.kiln(&["pull", &format!("{}/b/bb:v1", corrupt.host)]), "rejected");
    assert_eq!(other.store_snapshot(), before);

    let big = Fake::start(&reg, "big");
    std::fs::write(docker.join("config.json"), format!(r#"{{"auths":{{"{}":{{"auth":"a2lsbjp0b2szbg=="}}}}}}"#, big.host)).expect("config");
    assert_clean_error(&other.kiln(&["pull", &format!("{}/b/bb:v1", big.host)]), "larger than 4 MiB: refused");
    assert_eq!(other.store_snapshot(), before);
}

#[test]
fn htpasswd_registry_behind_tls_with_a_custom_ca() {
    let reg = Registry::start_with(Some(("kiln", "s3cret")), true);
    let src = TestEnv::new("regtlssrc");
    let archive = image_archive(&src, "bb:v1", "tls", "linux/amd64");
    skopeo(&["copy", "--dest-tls-verify=false", "--dest-creds", "kiln:s3cret", &format!("oci-archive:{}", p(&archive)), &format!("docker://{}/t/bb:v1", reg.host)]);
    let name = format!("{}/t/bb:v1", reg.host);

    let env = TestEnv::new("regtls");
    let settings = env.dir.path().join("registries.json");
    // Without the CA, a loopback registry is spoken to in plain HTTP, which a TLS server refuses.
    assert_eq!(login(&env, &reg.host, "s3cret").status.code(), Some(1));
    let ca = env.dir.path().join("ca.pem");
    std::fs::copy(reg.ca(), &ca).expect("copy ca");
    std::fs::write(&settings, format!(r#"{{"registries":{{"{}":{{"ca":"{}"}}}}}}"#, reg.host, p(&ca))).expect("settings");
    env.give_to_user(env.dir.path());
    let vars = [("KILN_REGISTRIES_CONFIG", p(&settings))];
    let mut child = env.command(&["login", "-u", "kiln", "--password-stdin", &reg.host]).envs(vars).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn");
    child.stdin.take().expect("stdin").write_all(b"s3cret\n").expect("password");
    assert_eq!(ok(&child.wait_with_output().expect("login")).trim(), "Login Succeeded");
    let out = ok(&env.kiln_with(&["pull", &name], &vars));
    assert_eq!(line_value(&out, "Digest: "), inspect_remote(&reg, "t/bb:v1", &["--creds", "kiln:s3cret"])["Digest"].as_str().expect("digest"));
    let pushed = format!("{}/t/again:v1", reg.host);
    ok(&env.kiln(&["tag", &name, &pushed]));
    ok(&env.kiln_with(&["push", &pushed], &vars));
    // A CA that did not sign the certificate is refused.
    let other = TestEnv::new("regtlsother");
    make_certificates(other.dir.path());
    std::fs::write(&settings, format!(r#"{{"registries":{{"{}":{{"ca":"{}"}}}}}}"#, reg.host, p(&other.dir.path().join("ca.pem")))).expect("settings");
    other.give_to_user(other.dir.path());
    let out = env.kiln_with(&["pull", &name], &vars);
    assert_clean_error(&out, "certificate");
    // Unless verification is turned off for that registry (Docker's insecure registries).
    std::fs::write(&settings, format!(r#"{{"registries":{{"{}":{{"tls_verify":false}}}}}}"#, reg.host)).expect("settings");
    ok(&env.kiln_with(&["pull", &name], &vars));
}

#[test]
fn a_pull_killed_mid_blob_leaves_nothing_visible_and_the_next_pull_works() {
    let reg = Registry::start(None);
    let src = TestEnv::new("regkillsrc");
    let archive = image_archive(&src, "bb:v1", "kill", "linux/amd64");
    skopeo(&["copy", "--dest-tls-verify=false", &format!("oci-archive:{}", p(&archive)), &format!("docker://{}/k/bb:v1", reg.host)]);
    let stall = Fake::start(&reg, "stall");
    let env = TestEnv::new("regkill");
    let docker = env.home.join(".docker");
    std::fs::create_dir_all(&docker).expect("mkdir");
    std::fs::write(docker.join("config.json"), format!(r#"{{"auths":{{"{}":{{"auth":"a2lsbjp0b2szbg=="}}}}}}"#, stall.host)).expect("config");
    env.give_to_user(&docker);
    ok(&env.kiln(&["images"]));
    let visible = |env: &TestEnv| env.store_snapshot().into_iter().filter(|(k, _)| !k.starts_with("ingest/")).collect::<Vec<_>>();
    let before = visible(&env);

    let mut child = env.spawn(&["pull", &format!("{}/k/bb:v1", stall.host)]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while stall.events("stalled") == 0 {
        assert!(Instant::now() < deadline, "the pull never reached the layer");
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(300));
    child.kill().expect("SIGKILL kiln");
    let _ = child.wait();
    assert_eq!(visible(&env), before, "a killed pull leaves blobs, images and names as they were");

    let out = ok(&env.kiln(&["pull", &format!("{}/k/bb:v1", reg.host)]));
    assert!(out.contains("Pull complete"), "{out}");
    let check = ok(&env.kiln(&["system", "check"]));
    assert!(check.contains(": 0 problems"), "{check}");
}

#[test]
fn a_dropped_connection_resumes_the_layer_with_a_range_request() {
    let reg = Registry::start(None);
    let src = TestEnv::new("regdropsrc");
    let archive = image_archive(&src, "bb:v1", "drop", "linux/amd64");
    skopeo(&["copy", "--dest-tls-verify=false", &format!("oci-archive:{}", p(&archive)), &format!("docker://{}/d/bb:v1", reg.host)]);
    let fake = Fake::start(&reg, "drop");
    let env = TestEnv::new("regdrop");
    let docker = env.home.join(".docker");
    std::fs::create_dir_all(&docker).expect("mkdir");
    std::fs::write(docker.join("config.json"), format!(r#"{{"auths":{{"{}":{{"auth":"a2lsbjp0b2szbg=="}}}}}}"#, fake.host)).expect("config");
    env.give_to_user(&docker);
    let out = ok(&env.kiln(&["pull", &format!("{}/d/bb:v1", fake.host)]));
    assert!(out.contains("Pull complete"), "{out}");
    assert_eq!(fake.events("dropped"), 1, "the layer's first transfer was cut");
    assert_eq!(fake.events("range"), 1, "and resumed with one Range request");
    assert!(ok(&env.kiln(&["system", "check"])).contains(": 0 problems"));
}

#[test]
fn all_tags_both_ways_and_pulls_through_a_mirror() {
    let origin = Registry::start(None);
    let mirror = Registry::start(None);
    let env = TestEnv::new("regtags");
    let repo = format!("{}/r/app", origin.host);
    let rootfs = rootfs_tar(&env, "tags");
    ok(&env.kiln(&["import", p(&rootfs), &format!("{repo}:1")]));
    ok(&env.kiln(&["tag", &format!("{repo}:1"), &format!("{repo}:2")]));
    let out = ok(&env.kiln(&["push", "-a", &repo]));
    assert_eq!(out.lines().filter(|l| l.contains(": digest: ")).count(), 2, "{out}");
    assert_clean_error(&env.kiln(&["push", "-a", &format!("{repo}:1")]), "tag can't be used with --all-tags");

    let fresh = TestEnv::new("regtagspull");
    let out = ok(&fresh.kiln(&["pull", "-a", &repo]));
    assert_eq!(out.lines().filter(|l| l.starts_with("Digest: ")).count(), 2, "{out}");
    let images = ok(&fresh.kiln(&["images"]));
    assert!(images.contains(&format!("{repo} ")) && images.lines().count() == 3, "{images}");

    // A tag only the mirror has comes from the mirror, under the origin's name; one only the
    // origin has falls back to the origin.
    skopeo(&["copy", "--src-tls-verify=false", "--dest-tls-verify=false", &format!("docker://{repo}:1"), &format!("docker://{}/r/app:mirrored", mirror.host)]);
    let viamirror = TestEnv::new("regmirror");
    let settings = viamirror.dir.path().join("registries.json");
    std::fs::write(&settings, format!(r#"{{"registries":{{"{}":{{"mirrors":["{}"]}}}}}}"#, origin.host, mirror.host)).expect("settings");
    viamirror.give_to_user(&settings);
    let vars = [("KILN_REGISTRIES_CONFIG", p(&settings))];
    ok(&viamirror.kiln_with(&["pull", &format!("{repo}:mirrored")], &vars));
    assert!(ok(&viamirror.kiln(&["images"])).contains("mirrored"));
    ok(&viamirror.kiln_with(&["pull", &format!("{repo}:2")], &vars));
    assert_clean_error(&viamirror.kiln(&["pull", &format!("{repo}:mirrored")]), "not found");
}

#[test]
fn docker_schema2_images_pull_push_and_save_unchanged() {
    let reg = Registry::start(None);
    let src = TestEnv::new("regv2s2src");
    let archive = image_archive(&src, "bb:v1", "v2s2", "linux/amd64");
    skopeo(&["copy", "--format", "v2s2", "--dest-tls-verify=false", &format!("oci-archive:{}", p(&archive)), &format!("docker://{}/s2/bb:v1", reg.host)]);
    let raw = skopeo(&["inspect", "--raw", "--tls-verify=false", &format!("docker://{}/s2/bb:v1", reg.host)]);
    assert!(raw.contains("application/vnd.docker.distribution.manifest.v2+json"), "{raw}");
    let digest = inspect_remote(&reg, "s2/bb:v1", &[])["Digest"].as_str().expect("digest").to_string();

    let env = TestEnv::new("regv2s2");
    let name = format!("{}/s2/bb:v1", reg.host);
    assert_eq!(line_value(&ok(&env.kiln(&["pull", &name])), "Digest: "), digest);
    // Pushed elsewhere, the Docker manifest keeps its bytes, media type and digest.
    let copy = format!("{}/s2/copy:v1", reg.host);
    ok(&env.kiln(&["tag", &name, &copy]));
    let out = ok(&env.kiln(&["push", &copy]));
    assert_eq!(line_value(&out, "v1: digest: ").split_whitespace().next(), Some(digest.as_str()), "{out}");
    let raw_copy = skopeo(&["inspect", "--raw", "--tls-verify=false", &format!("docker://{copy}")]);
    assert_eq!(raw_copy, raw);
    // And the store's other commands read it.
    let saved = env.dir.path().join("saved.tar");
    ok(&env.kiln(&["save", "-o", p(&saved), &name]));
    skopeo(&["inspect", &format!("docker-archive:{}", p(&saved))]);
    let info: serde_json::Value = serde_json::from_str(&ok(&env.kiln(&["inspect", &name]))).expect("json");
    assert_eq!(info[0]["Architecture"], "amd64");
}

#[test]
fn build_from_a_registry_image_pulls_the_base() {
    let reg = Registry::start(None);
    let src = TestEnv::new("regbase");
    let archive = image_archive(&src, "base:v1", "one", "linux/amd64");
    skopeo(&["copy", "--dest-tls-verify=false", &format!("oci-archive:{}", p(&archive)), &format!("docker://{}/team/base:v1", reg.host)]);
    let remote = inspect_remote(&reg, "team/base:v1", &[]);
    let base_layers = remote["Layers"].as_array().expect("layers").len();

    let env = TestEnv::new("regfrom");
    // COPY only: the build needs no VM, only the pulled base.
    let ctx = env.context("ctx", &format!("FROM {}/team/base:v1\nCOPY note.txt /note.txt\n", reg.host), &[("note.txt", "n\n")], false);
    let out = env.kiln(&["build", "-t", "on-top", p(&ctx)]);
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains(&format!("pulling {}/team/base:v1", reg.host)) && stderr.contains("no VM needed"), "{stderr}");
    let saved = env.dir.path().join("on-top.tar");
    ok(&env.kiln(&["save", "--format", "oci", "-o", p(&saved), "on-top"]));
    let built = skopeo(&["inspect", &format!("oci-archive:{}", p(&saved))]);
    let built: serde_json::Value = serde_json::from_str(&built).expect("json");
    let layers = built["Layers"].as_array().expect("layers");
    assert_eq!(layers.len(), base_layers + 1, "{built}");
    assert_eq!(&layers[..base_layers], remote["Layers"].as_array().expect("layers").as_slice(), "base layers kept as pulled");
    // The base is in the store under its name now: a second build does not pull again.
    let out = env.kiln(&["build", "-t", "on-top", p(&ctx)]);
    let stderr = text(&out.stderr);
    assert!(out.status.success() && !stderr.contains("pulling"), "{stderr}");
}

/// An OCI layout at `dir` holding one image whose single layer is `layer` (plain tar), with
/// every digest right: what a registry would serve for a hostile image.
fn oci_layout_with_layer(dir: &Path, layer: &[u8]) {
    let sha = |b: &[u8]| kiln_store::Digest::of(b).to_string();
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64", "os": "linux", "config": {},
        "rootfs": {"type": "layers", "diff_ids": [sha(layer)]},
    }))
    .expect("json");
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha(&config), "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": sha(layer), "size": layer.len()}],
    }))
    .expect("json");
    let index = serde_json::to_vec(&serde_json::json!({"schemaVersion": 2, "manifests": [
        {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": sha(&manifest), "size": manifest.len(),
         "annotations": {"org.opencontainers.image.ref.name": "evil"}}]}))
    .expect("json");
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).expect("mkdir");
    for b in [&config[..], &manifest[..], layer] {
        std::fs::write(blobs.join(&sha(b)[7..]), b).expect("blob");
    }
    std::fs::write(dir.join("index.json"), index).expect("index");
    std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).expect("layout");
}

/// Layers whose digests are right but whose content is hostile, served by a real registry:
/// `kiln pull` refuses each exactly as `kiln load` does, and the store does not change.
#[test]
fn pulled_layers_with_valid_digests_but_hostile_content_are_refused() {
    use harness::tars::{tar_of, M};
    let reg = Registry::start(None);
    let env = TestEnv::new("reghostile");
    assert!(env.kiln(&["images"]).status.success());
    let before = env.store_snapshot();
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("dotdot", tar_of(&[M::File("a/../../x", b"x".to_vec())]), "contains '..'"),
        ("absolute", tar_of(&[M::File("/etc/passwd", b"x".to_vec())]), "absolute path"),
        ("hardlink-escape", tar_of(&[M::Hardlink("x", "../../etc/shadow")]), "hardlink x"),
        ("symlink-write", tar_of(&[M::Symlink("a", "/etc"), M::File("a/passwd", b"x".to_vec())]), "goes through the symlink"),
        ("device", tar_of(&[M::Claim("dev/sda", tar::EntryType::Block, 0)]), "device node"),
        ("sparse", tar_of(&[M::Claim("big", tar::EntryType::GNUSparse, 0)]), "rejected"),
    ];
    for (name, layer, needle) in cases {
        let layout = env.dir.path().join(format!("layout-{name}"));
        oci_layout_with_layer(&layout, &layer);
        let remote = format!("{}/hostile/{name}:1", reg.host);
        skopeo(&["copy", "--dest-tls-verify=false", &format!("oci:{}:evil", p(&layout)), &format!("docker://{remote}")]);
        let out = env.kiln(&["pull", &remote]);
        eprintln!("{name}: {}", text(&out.stderr).trim());
        assert_clean_error(&out, needle);
        assert_eq!(env.store_snapshot(), before, "{name}: the store changed");
    }
}
