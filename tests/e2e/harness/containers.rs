//! Helpers for the container tests: a busybox image to run, assertions on kiln's output and
//! exit codes, waiting for a container's log, and a plain HTTP GET for published ports.

use std::fs;
use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

use super::{text, TestEnv};

pub fn ok(out: &Output) -> String {
    assert!(out.status.success(), "kiln failed ({:?}):\nstdout:\n{}\nstderr:\n{}", out.status, text(&out.stdout), text(&out.stderr));
    text(&out.stdout)
}

pub fn p(path: &Path) -> &str {
    path.to_str().expect("utf8 path")
}

/// An image `bb` of busybox with every applet linked, a passwd with an `app` user (in group
/// `extra` too), `Env`, `WorkingDir` and `Cmd` set.
pub fn busybox_image(env: &TestEnv) {
    let dir = env.dir.path().join("bb-rootfs");
    fs::create_dir_all(dir.join("bin")).expect("mkdir");
    fs::create_dir_all(dir.join("etc")).expect("mkdir");
    fs::create_dir_all(dir.join("srv")).expect("mkdir");
    fs::copy("/bin/busybox", dir.join("bin/busybox")).expect("busybox");
    let list = std::process::Command::new("/bin/busybox").arg("--list").output().expect("busybox --list");
    for applet in text(&list.stdout).lines().filter(|a| *a != "busybox") {
        let _ = std::os::unix::fs::symlink("busybox", dir.join("bin").join(applet));
    }
    fs::write(dir.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/srv:/bin/sh\n").expect("passwd");
    fs::write(dir.join("etc/group"), "root:x:0:\napp:x:1000:\nextra:x:2000:app\n").expect("group");
    fs::write(dir.join("etc/motd"), "original\n").expect("motd");
    let tar = env.dir.path().join("bb.tar");
    let st = std::process::Command::new("tar").args(["-C", p(&dir), "--owner=0", "--group=0", "-cf", p(&tar), "."]).status().expect("tar");
    assert!(st.success());
    env.give_to_user(&tar);
    ok(&env.kiln(&["import", "-c", "ENV FROM_IMAGE=yes", "-c", "WORKDIR /srv", "-c", "CMD [\"sh\", \"-c\", \"echo default cmd\"]", p(&tar), "bb"]));
}

pub fn no_vm_left(env: &TestEnv) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !env.vm_processes().is_empty() {
        assert!(Instant::now() < deadline, "VMs left running: {:?}", env.vm_processes());
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Asserts a `kiln run` failed as kiln's own error: exit 125, one error line.
pub fn assert_run_error(out: &Output, needle: &str) {
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(125), "exit code; stderr:\n{stderr}");
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("kiln: error:")).collect();
    assert_eq!(errors.len(), 1, "one error line expected:\n{stderr}");
    assert!(errors[0].contains(needle), "error should mention {needle:?}: {}", errors[0]);
}

pub fn state_of(env: &TestEnv, name: &str) -> serde_json::Value {
    let all = ok(&env.kiln(&["ps", "-a", "--no-trunc", "--format", "json"]));
    all.lines().map(|l| serde_json::from_str::<serde_json::Value>(l).expect("json")).find(|v| v["Names"] == name).unwrap_or_else(|| panic!("no container {name} in:\n{all}"))
}

/// Waits until `name`'s log holds `line` `times` times.
pub fn wait_for_log(env: &TestEnv, name: &str, line: &str, times: usize) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let logs = ok(&env.kiln(&["logs", name]));
        if logs.lines().filter(|l| *l == line).count() >= times {
            return;
        }
        assert!(Instant::now() < deadline, "{name}'s log never had {line:?} {times} times:\n{logs}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

pub fn http_get(port: u16, path: &str) -> String {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else { return String::new() };
    let _ = s.set_read_timeout(Some(Duration::from_secs(20)));
    let _ = s.write_all(format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").as_bytes());
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}
