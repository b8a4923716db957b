//! Containers, the rest of Docker's habits, through the real binary and real QEMU guests as
//! the unprivileged test user: an image's `VOLUME`s become anonymous volumes that take the
//! image's content (and `-v NAME:` volumes too), `rm -v` and `--rm` remove them; `--init`
//! makes a process 1 that forwards `kiln stop`'s signal; `-p HOST:PORT/udp` carries
//! datagrams both ways, per client.

mod harness;

use std::fs;
use std::net::UdpSocket;
use std::path::Path;
use std::time::{Duration, Instant};

use harness::containers::{assert_run_error, busybox_image, no_vm_left, ok, p, wait_for_log};
use harness::{text, TestEnv};

/// Image `extras` on top of `bb`: a UDP echo server (built static from the fixture), a
/// `VOLUME /data` that holds a file owned by 1000, `EXPOSE 53/udp`.
fn extras_image(env: &TestEnv) {
    busybox_image(env);
    let ctx = env.context("extras", "FROM bb\nCOPY udp_echo /bin/udp_echo\nRUN mkdir -p /data && echo seeded > /data/seed && chown -R 1000:1000 /data\nVOLUME /data\nEXPOSE 53/udp\n", &[], false);
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/e2e/fixtures/udp_echo.c");
    harness::require_tool("cc");
    let built = std::process::Command::new("cc").args(["-static", "-O2", "-o", p(&ctx.join("udp_echo")), p(&source)]).output().expect("run cc");
    assert!(built.status.success(), "cc -static (libc6-dev) is required: {}", text(&built.stderr));
    env.give_to_user(&ctx);
    ok(&env.kiln(&["build", "-q", "-t", "extras", p(&ctx)]));
}

fn volumes(env: &TestEnv) -> Vec<String> {
    ok(&env.kiln(&["volume", "ls", "-q"])).lines().map(str::to_string).collect()
}

#[test]
fn image_volumes_are_anonymous_volumes_filled_from_the_image() {
    let env = TestEnv::new("ctr-anon");
    extras_image(&env);
    // The image's VOLUME: a new volume holding the image's files, owner included.
    let out = ok(&env.kiln(&["run", "--name", "v1", "extras", "sh", "-c", "cat /data/seed; stat -c %u /data/seed; echo new > /data/new; echo l > /layer"]));
    assert_eq!(out, "seeded\n1000\n");
    let inspect: serde_json::Value = serde_json::from_str(&ok(&env.kiln(&["inspect", "v1"]))).expect("inspect json");
    let mounts = inspect[0]["Mounts"].as_array().expect("Mounts").clone();
    assert_eq!(mounts.len(), 1, "{mounts:?}");
    assert_eq!((mounts[0]["Type"].as_str(), mounts[0]["Destination"].as_str()), (Some("volume"), Some("/data")));
    let name = mounts[0]["Name"].as_str().expect("name").to_string();
    assert!(name.len() == 64 && volumes(&env).contains(&name), "an anonymous volume {name} is listed");
    let data = env.root.join("volumes").join(&name).join("_data");
    assert_eq!(fs::read_to_string(data.join("new")).expect("the container's write is in the volume"), "new\n");
    let diff = ok(&env.kiln(&["diff", "v1"]));
    assert!(diff.contains("A /layer") && !diff.contains("/data/new"), "a volume is not part of the layer:\n{diff}");
    // The volume is the container's from start to start.
    ok(&env.kiln(&["start", "-a", "v1"]));
    assert_eq!(fs::read_to_string(data.join("seed")).expect("seed"), "seeded\n");
    ok(&env.kiln(&["rm", "-v", "v1"]));
    assert!(!volumes(&env).contains(&name) && !data.exists(), "rm -v removes the anonymous volume");
    // Without -v it stays (Docker's rule); --rm and -v /dir volumes go with --rm.
    ok(&env.kiln(&["run", "--name", "v2", "extras", "true"]));
    let before = volumes(&env);
    ok(&env.kiln(&["rm", "v2"]));
    assert_eq!(volumes(&env), before, "rm without -v keeps the volume");
    ok(&env.kiln(&["run", "--rm", "-v", "/anon", "extras", "sh", "-c", "echo x > /anon/x; ls /data"]));
    assert_eq!(volumes(&env), before, "--rm removes the container's anonymous volumes");
    // A named volume over the VOLUME wins; empty, it takes the image's content; not empty, it is left alone.
    assert_eq!(ok(&env.kiln(&["run", "--rm", "-v", "named:/data", "extras", "sh", "-c", "cat /data/seed; echo mine > /data/seed"])), "seeded\n");
    assert_eq!(ok(&env.kiln(&["run", "--rm", "-v", "named:/data", "extras", "cat", "/data/seed"])), "mine\n");
    assert!(volumes(&env).contains(&"named".to_string()), "a named volume outlives --rm");
    // A run that never creates its container leaves no anonymous volume behind.
    assert_run_error(&env.kiln(&["run", "--rm", "-v", "/anon", "--name", "bad name", "extras", "true"]), "invalid container name");
    assert_eq!(volumes(&env), [before.clone(), vec!["named".to_string()]].concat().into_iter().collect::<std::collections::BTreeSet<_>>().into_iter().collect::<Vec<_>>());
    // volume prune: unused anonymous volumes go, named ones only with -a.
    ok(&env.kiln(&["volume", "prune", "-f"]));
    assert_eq!(volumes(&env), ["named"]);
    ok(&env.kiln(&["volume", "prune", "-f", "-a"]));
    assert!(volumes(&env).is_empty());
    no_vm_left(&env);
}

#[test]
fn init_forwards_signals_and_udp_ports_carry_datagrams() {
    let env = TestEnv::new("ctr-init-udp");
    extras_image(&env);
    // --init: the process is not process 1, and `kiln stop`'s SIGTERM reaches a shell.
    assert_eq!(ok(&env.kiln(&["run", "--rm", "bb", "sh", "-c", "echo $$"])), "1\n");
    assert_eq!(ok(&env.kiln(&["run", "--rm", "--init", "bb", "sh", "-c", "echo $$"])), "2\n");
    // The init holds none of the agent's pipes: stdin ends when the host's does.
    let mut child = env.command(&["run", "--rm", "-i", "--init", "bb", "cat"]).stdin(std::process::Stdio::piped()).stdout(std::process::Stdio::piped()).spawn().expect("spawn");
    {
        use std::io::Write;
        child.stdin.take().expect("stdin").write_all(b"through the init\n").expect("write");
    }
    let out = child.wait_with_output().expect("wait");
    assert_eq!(text(&out.stdout), "through the init\n", "{}", text(&out.stderr));
    ok(&env.kiln(&["run", "-d", "--init", "--name", "ini", "bb", "sh", "-c", "echo ready; sleep 300"]));
    wait_for_log(&env, "ini", "ready", 1);
    let started = Instant::now();
    ok(&env.kiln(&["stop", "-t", "60", "ini"]));
    assert!(started.elapsed() < Duration::from_secs(30), "the shell got SIGTERM at once, not SIGKILL after the timeout ({:?})", started.elapsed());
    assert_eq!(ok(&env.kiln(&["wait", "ini"])).trim(), "143", "128 + SIGTERM, as tini reports");
    ok(&env.kiln(&["rm", "ini"]));

    // UDP: datagrams from two clients each get their own answers.
    let probe = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let port = probe.local_addr().expect("addr").port();
    drop(probe);
    let publish = format!("127.0.0.1:{port}:53/udp");
    ok(&env.kiln(&["run", "-d", "--name", "udp", "-p", &publish, "extras", "udp_echo", "53"]));
    wait_for_log(&env, "udp", "ready", 1);
    assert_eq!(ok(&env.kiln(&["port", "udp"])).trim(), format!("53/udp -> 127.0.0.1:{port}"));
    let ask = |sock: &UdpSocket, msg: &[u8]| -> Vec<u8> {
        sock.set_read_timeout(Some(Duration::from_secs(2))).expect("timeout");
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut buf = vec![0u8; 70_000];
        loop {
            sock.send_to(msg, ("127.0.0.1", port)).expect("send");
            if let Ok(n) = sock.recv(&mut buf) {
                return buf[..n].to_vec();
            }
            assert!(Instant::now() < deadline, "no answer to a datagram on the published UDP port");
        }
    };
    let (a, b) = (UdpSocket::bind("127.0.0.1:0").expect("a"), UdpSocket::bind("127.0.0.1:0").expect("b"));
    assert_eq!(ask(&a, b"one"), b"echo:one");
    assert_eq!(ask(&b, b"two"), b"echo:two");
    let big: Vec<u8> = (0..20_000u32).map(|i| (i % 251) as u8).collect();
    assert_eq!(ask(&a, &big), [&b"echo:"[..], &big].concat(), "a 20 kB datagram arrives whole");
    // A second container asking for the same UDP port fails cleanly.
    assert_run_error(&env.kiln(&["run", "-d", "--name", "u2", "-p", &publish, "extras", "true"]), "already allocated");
    ok(&env.kiln(&["rm", "-f", "udp"]));
    no_vm_left(&env);
    UdpSocket::bind(("127.0.0.1", port)).expect("the UDP port is free again after rm -f");
}
