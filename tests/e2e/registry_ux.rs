//! Registry commands as a person meets them, against real `docker-registry` instances on
//! loopback: per-layer progress (state lines when stdout is not a terminal, lines redrawn in
//! place in a real pseudo-terminal from `script`), where credentials are read and saved
//! (kiln's auth file, then Docker's config.json; skopeo reads what kiln login wrote), and an
//! unreachable registry failing at once with one clear line.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::harness::terminal::{in_terminal, screen};
use super::harness::{assert_clean_error, text, TestEnv};
use super::harness::registry::Registry;
use super::{image_archive, ok, p, skopeo};

/// A TCP proxy on loopback in front of `upstream` passing at most `rate` bytes a second per
/// connection and direction: a slow link, so that transfers last long enough to be watched.
/// Stops accepting on drop.
struct SlowLink {
    host: String,
    stop: Arc<AtomicBool>,
}

impl SlowLink {
    fn start(upstream: &str, rate: u64) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let host = format!("127.0.0.1:{}", listener.local_addr().expect("addr").port());
        let stop = Arc::new(AtomicBool::new(false));
        let (upstream, halt) = (upstream.to_string(), stop.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if halt.load(Ordering::SeqCst) {
                    return;
                }
                let (Ok(client), Ok(server)) = (conn, TcpStream::connect(&upstream)) else { continue };
                let (Ok(client2), Ok(server2)) = (client.try_clone(), server.try_clone()) else { continue };
                std::thread::spawn(move || pump(client, server, rate));
                std::thread::spawn(move || pump(server2, client2, rate));
            }
        });
        Self { host, stop }
    }
}

impl Drop for SlowLink {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(&self.host); // Wakes the accept loop so that it sees `stop`.
    }
}

fn pump(mut from: TcpStream, mut to: TcpStream, rate: u64) {
    let mut buf = [0u8; 16 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => {
                let _ = to.shutdown(Shutdown::Write);
                return;
            }
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    return;
                }
                std::thread::sleep(Duration::from_micros(n as u64 * 1_000_000 / rate));
            }
        }
    }
}

/// A build context whose Dockerfile copies three files of incompressible bytes: three layers
/// of about 1.2 MB, built on the host without a VM.
fn three_layer_context(env: &TestEnv) -> PathBuf {
    let ctx = env.dir.path().join("ctx3");
    std::fs::create_dir_all(&ctx).expect("ctx");
    std::fs::write(ctx.join("Dockerfile"), "FROM scratch\nCOPY a /a\nCOPY b /b\nCOPY c /c\n").expect("Dockerfile");
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15 ^ std::process::id() as u64;
    for name in ["a", "b", "c"] {
        let bytes: Vec<u8> = (0..1_200_000)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect();
        std::fs::write(ctx.join(name), bytes).expect("file");
    }
    env.give_to_user(&ctx);
    ctx
}

/// The `ID: state` lines of `out`, in order, for one layer.
fn states<'a>(out: &'a str, id: &str) -> Vec<&'a str> {
    out.lines().filter_map(|l| l.strip_prefix(id).and_then(|r| r.strip_prefix(": "))).collect()
}

/// The layer ids (short digests) of an output: the ids of `first_state` lines.
fn layer_ids(out: &str, first_state: &str) -> Vec<String> {
    out.lines().filter_map(|l| l.strip_suffix(&format!(": {first_state}"))).map(str::to_string).collect()
}

#[test]
fn progress_is_a_line_per_layer_redrawn_on_a_terminal_and_state_lines_otherwise() {
    let reg = Registry::start(None);
    let env = TestEnv::new("regprogress");
    let name = format!("{}/p/app:v1", reg.host);
    let build = env.kiln(&["build", "-q", "-t", &name, p(&three_layer_context(&env))]);
    assert!(build.status.success(), "{}", text(&build.stderr));

    // Not a terminal: state changes only, one line each, no byte counts, no escapes.
    let out = ok(&env.kiln(&["push", &name]));
    let ids = layer_ids(&out, "Preparing");
    assert_eq!(ids.len(), 3, "{out}");
    for id in &ids {
        assert_eq!(states(&out, id), ["Preparing", "Pushed"], "{out}");
    }
    assert!(!out.contains('\x1b') && !out.contains("Pushing"), "{out}");
    let again = ok(&env.kiln(&["push", &name]));
    for id in &ids {
        assert_eq!(states(&again, id), ["Preparing", "Layer already exists"], "{again}");
    }

    let plain = TestEnv::new("regprogressplain");
    let out = ok(&plain.kiln(&["pull", &name]));
    assert_eq!(layer_ids(&out, "Pulling fs layer").len(), 3, "{out}");
    for id in &ids {
        assert_eq!(states(&out, id), ["Pulling fs layer", "Verifying Checksum", "Download complete", "Pull complete"], "{out}");
    }
    assert!(!out.contains('\x1b') && !out.contains("Downloading"), "{out}");
    assert_eq!(ok(&plain.kiln(&["pull", "-q", &name])).trim(), name, "-q prints the name only");
    let out = ok(&plain.kiln(&["pull", &name]));
    for id in &ids {
        assert_eq!(states(&out, id), ["Already exists"], "{out}");
    }

    // A terminal, behind a link slow enough (about 1 s a layer) for several redraws: byte
    // counts with bars, drawn over the same line, which ends as the layer's last state.
    let slow = SlowLink::start(&reg.host, 1_200_000);
    let slow_name = format!("{}/p/app:v1", slow.host);
    let tty = TestEnv::new("regprogresstty");
    let started = Instant::now();
    let (success, transcript) = in_terminal(&tty, &["pull", &slow_name]);
    assert!(success, "{transcript}");
    assert!(started.elapsed() > Duration::from_millis(800), "the link should have been slow");
    let bars: Vec<&str> = transcript.split(['\r', '\n']).filter(|l| l.contains(": Downloading [")).collect();
    assert!(bars.len() >= 6 && bars.iter().any(|b| b.contains("=>")), "bars redrawn as bytes arrive:\n{transcript:?}");
    assert!(bars.iter().all(|b| b.contains("B/1.2") && b.ends_with("MB")), "byte counts of 1.2 MB layers: {bars:?}");
    assert!(transcript.contains("\x1b[3A") || transcript.contains("\x1b[2A"), "cursor moved up to redraw:\n{transcript:?}");
    let shown = screen(&transcript);
    let mut want = vec![format!("v1: Pulling from {}/p/app", slow.host)];
    want.extend(ids.iter().rev().map(|id| format!("{id}: Pull complete")));
    assert_eq!(&shown[..4], want.as_slice(), "one line per layer, base first, each in its final state:\n{shown:#?}");
    assert!(shown[4].starts_with("Digest: sha256:") && shown[5].starts_with("Status: Downloaded newer image") && shown[6] == slow_name, "{shown:#?}");
    assert_eq!(shown.len(), 7, "{shown:#?}");

    // Pushing on a terminal through the slow link, to a repository that has none of the
    // blobs (and from a store that knows no other repository there to mount them from):
    // `Pushing` bars, then `Pushed`, top layer first as Docker lists them.
    let up = format!("{}/q/up:v1", slow.host);
    ok(&env.kiln(&["tag", &name, &up]));
    let (success, transcript) = in_terminal(&env, &["push", &up]);
    assert!(success, "{transcript}");
    assert!(transcript.split(['\r', '\n']).filter(|l| l.contains(": Pushing [")).count() >= 3, "{transcript:?}");
    let shown = screen(&transcript);
    let mut want = vec![format!("The push refers to repository [{}/q/up]", slow.host)];
    want.extend(ids.iter().map(|id| format!("{id}: Pushed")));
    assert_eq!(&shown[..4], want.as_slice(), "{shown:#?}");
    assert!(shown[4].starts_with("v1: digest: sha256:") && shown.len() == 5, "{shown:#?}");
}

#[test]
fn an_unreachable_registry_fails_at_once_with_one_clear_line() {
    let env = TestEnv::new("regrefused");
    let port = TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
    let host = format!("127.0.0.1:{port}");
    let refused = format!("cannot connect to http://{host}: connection refused");
    let timed = |args: &[&str]| {
        let start = Instant::now();
        let out = env.kiln(args);
        let took = start.elapsed();
        assert!(took < Duration::from_secs(3), "kiln {args:?} took {took:?}: {}", text(&out.stderr));
        out
    };
    assert_clean_error(&timed(&["pull", &format!("{host}/x/y:v1")]), &refused);
    let rootfs = env.dir.path().join("empty.tar");
    std::fs::write(&rootfs, tar::Builder::new(Vec::new()).into_inner().expect("tar")).expect("tar");
    env.give_to_user(&rootfs);
    ok(&env.kiln(&["import", p(&rootfs), &format!("{host}/x/y:v1")]));
    assert_clean_error(&timed(&["push", &format!("{host}/x/y:v1")]), &refused);
    assert_clean_error(&timed(&["pull", "kiln-no-such-host.invalid/x/y:v1"]), "cannot connect to https://kiln-no-such-host.invalid: host name not found");
}

/// `kiln login -u kiln --password-stdin HOST` with extra arguments and environment.
fn login_with(env: &TestEnv, host: &str, password: &str, extra: &[&str], vars: &[(&str, &str)]) -> std::process::Output {
    let mut args = vec!["login", "-u", "kiln", "--password-stdin"];
    args.extend_from_slice(extra);
    args.push(host);
    let mut cmd = env.command(&args);
    cmd.envs(vars.iter().copied()).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn kiln login");
    child.stdin.take().expect("stdin").write_all(format!("{password}\n").as_bytes()).expect("password");
    child.wait_with_output().expect("kiln login")
}

/// A Docker-format credentials file for `host` with `user:password`.
fn auth_json(host: &str, user_password: &str) -> String {
    let out = Command::new("base64").arg("-w0").stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().and_then(|mut c| {
        c.stdin.take().expect("stdin").write_all(user_password.as_bytes())?;
        c.wait_with_output()
    });
    format!(r#"{{"auths":{{"{host}":{{"auth":"{}"}}}}}}"#, text(&out.expect("base64").stdout).trim())
}

#[test]
fn credentials_come_from_kilns_auth_file_first_then_dockers() {
    let reg = Registry::start(Some(("kiln", "s3cret")));
    let src = TestEnv::new("regauthfilesrc");
    let archive = image_archive(&src, "bb:v1", "authfile", "linux/amd64");
    skopeo(&["copy", "--dest-tls-verify=false", "--dest-creds", "kiln:s3cret", &format!("oci-archive:{}", p(&archive)), &format!("docker://{}/af/bb:v1", reg.host)]);
    let name = format!("{}/af/bb:v1", reg.host);

    let env = TestEnv::new("regauthfile");
    let config_home = env.home.join(".config");
    let home_vars = [("XDG_CONFIG_HOME", p(&config_home)), ("REGISTRY_AUTH_FILE", ""), ("DOCKER_CONFIG", "")];
    let own = config_home.join("kiln/auth.json");
    let docker = env.home.join(".docker/config.json");
    let write = |path: &PathBuf, body: &str| {
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(path, body).expect("write");
        env.give_to_user(env.dir.path());
    };

    // --authfile: login saves there (Docker's format: skopeo reads it), Docker's file untouched;
    // pull and push read it; without it kiln is anonymous.
    let named = env.dir.path().join("named/auth.json");
    assert_clean_error(&login_with(&env, &reg.host, "wrong", &["--authfile", p(&named)], &home_vars), "unauthorized");
    assert!(!named.exists(), "a refused login saves nothing");
    assert_eq!(ok(&login_with(&env, &reg.host, "s3cret", &["--authfile", p(&named)], &home_vars)).trim(), "Login Succeeded");
    assert!(named.is_file() && !docker.exists() && !own.exists());
    skopeo(&["inspect", "--tls-verify=false", "--authfile", p(&named), &format!("docker://{name}")]);
    assert_clean_error(&env.kiln_with(&["pull", &name], &home_vars), "unauthorized");
    ok(&env.kiln_with(&["pull", "--authfile", p(&named), &name], &home_vars));
    let pushed = format!("{}/af/pushed:v1", reg.host);
    ok(&env.kiln(&["tag", &name, &pushed]));
    assert_clean_error(&env.kiln_with(&["push", &pushed], &home_vars), "unauthorized");
    ok(&env.kiln_with(&["push", "--authfile", p(&named), &pushed], &home_vars));
    // $REGISTRY_AUTH_FILE names it too (as for podman, buildah and skopeo).
    ok(&env.kiln_with(&["pull", &name], &[("XDG_CONFIG_HOME", p(&config_home)), ("REGISTRY_AUTH_FILE", p(&named))]));
    assert_eq!(ok(&env.kiln_with(&["logout", "--authfile", p(&named), &reg.host], &home_vars)).trim(), format!("Removing login credentials for {}", reg.host));
    assert!(!std::fs::read_to_string(&named).expect("auth file").contains(&reg.host));

    // Without a kiln file, login saves to Docker's config.json.
    assert_eq!(ok(&login_with(&env, &reg.host, "s3cret", &[], &home_vars)).trim(), "Login Succeeded");
    assert!(docker.is_file() && !own.exists());
    ok(&env.kiln_with(&["pull", &name], &home_vars));
    // kiln's default file is read first: its wrong password wins over Docker's right one...
    write(&own, &auth_json(&reg.host, "kiln:wrong"));
    assert_clean_error(&env.kiln_with(&["pull", &name], &home_vars), "unauthorized");
    // ...and a kiln file without an entry for the registry falls through to Docker's.
    write(&own, &auth_json("other.example:5000", "kiln:wrong"));
    ok(&env.kiln_with(&["pull", &name], &home_vars));
    // Now that kiln's file exists, login and logout use it, and logout says what remains.
    assert_eq!(ok(&login_with(&env, &reg.host, "s3cret", &[], &home_vars)).trim(), "Login Succeeded");
    let saved = std::fs::read_to_string(&own).expect("kiln auth file");
    assert!(saved.contains(&reg.host) && saved.contains("other.example:5000"), "other entries kept: {saved}");
    let out = env.kiln_with(&["logout", &reg.host], &home_vars);
    assert_eq!(ok(&out).trim(), format!("Removing login credentials for {}", reg.host));
    assert!(text(&out.stderr).contains(&format!("{} still has credentials for {}", docker.display(), reg.host)), "{}", text(&out.stderr));
    assert!(!std::fs::read_to_string(&own).expect("kiln auth file").contains(&reg.host));
}

#[test]
fn push_mounts_from_the_repository_that_has_the_blob_when_another_candidate_does_not() {
    let reg = Registry::start(None);
    let env = TestEnv::new("regmountnext");
    let rootfs = env.dir.path().join("one.tar");
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(4);
    h.set_mode(0o644);
    h.set_cksum();
    b.append_data(&mut h, "one", &b"one\n"[..]).expect("entry");
    std::fs::write(&rootfs, b.into_inner().expect("tar")).expect("tar");
    env.give_to_user(&rootfs);
    // Names in the store: a/never (first in order, never pushed) and b/pushed (pushed).
    let never = format!("{}/a/never:v1", reg.host);
    let pushed = format!("{}/b/pushed:v1", reg.host);
    ok(&env.kiln(&["import", p(&rootfs), &never]));
    ok(&env.kiln(&["tag", &never, &pushed]));
    ok(&env.kiln(&["push", &pushed]));
    let new = format!("{}/c/new:v1", reg.host);
    ok(&env.kiln(&["tag", &never, &new]));
    let out = ok(&env.kiln(&["push", &new]));
    assert!(out.contains(": Mounted from b/pushed"), "a/never refuses the mount, b/pushed has it:\n{out}");
}
