//! Containers through the real binary, each in its own QEMU guest, as the unprivileged test
//! user: `kiln run` in the foreground (output, exit codes, stdin, flags, Docker's rules for
//! the image config), `-it` on a real pseudo-terminal, detached containers and their
//! lifecycle (ps, logs, kill, stop, start, wait, rm), commit, a killed supervisor, several at
//! once; bad input gets one error line and leaves nothing behind.

mod harness;

use std::fs;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use harness::containers::{assert_run_error, busybox_image, free_port, http_get, no_vm_left, ok, p, state_of, wait_for_log};
use harness::pty::Pty;
use harness::{text, TestEnv};

#[test]
fn foreground_runs_honour_the_image_flags_and_exit_codes() {
    let env = TestEnv::new("ctr-fg");
    busybox_image(&env);
    // The image's Cmd, Env and WorkingDir.
    let out = env.kiln(&["run", "--rm", "bb"]);
    assert_eq!(ok(&out), "default cmd\n");
    let out = env.kiln(&["run", "--rm", "bb", "sh", "-c", "pwd; echo $FROM_IMAGE $PATH; hostname; echo out; echo err >&2; exit 3"]);
    assert_eq!(out.status.code(), Some(3), "the container's exit code is kiln's: {}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines[0], "/srv");
    assert!(lines[1].starts_with("yes /usr/local/sbin:"), "{stdout}");
    assert_eq!(lines[2].len(), 12, "the default hostname is the short id: {stdout}");
    assert_eq!(lines[3], "out");
    assert_eq!(text(&out.stderr), "err\n");
    // Flags override the image.
    let env_file = env.dir.path().join("vars");
    fs::write(&env_file, "# a comment\nFROM_FILE=1\nFROM_IMAGE=file\n").expect("env file");
    env.give_to_user(&env_file);
    let out = env.kiln(&[
        "run", "--rm", "-e", "FROM_IMAGE=flag", "--env-file", p(&env_file), "-w", "/tmp/work", "-u", "app", "--hostname", "web",
        "--entrypoint", "sh", "bb", "-c", "echo $FROM_IMAGE $FROM_FILE; pwd; id -u; id -g; id -G; hostname",
    ]);
    assert_eq!(ok(&out), "flag 1\n/tmp/work\n1000\n1000\n1000 2000\nweb\n");
    // --read-only: the root is read-only, a --tmpfs below it is not.
    let out = ok(&env.kiln(&["run", "--rm", "--read-only", "--tmpfs", "/scratch", "bb", "sh", "-c", "touch /nope 2>/dev/null || echo root-ro; touch /scratch/yes && echo tmpfs-rw"]));
    assert_eq!(out, "root-ro\ntmpfs-rw\n");
    // Exit codes as Docker's: 127 not found, 126 not executable.
    let out = env.kiln(&["run", "--rm", "bb", "no-such-command"]);
    assert_eq!(out.status.code(), Some(127), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("no-such-command"), "{}", text(&out.stderr));
    assert_eq!(env.kiln(&["run", "--rm", "bb", "/etc/motd"]).status.code(), Some(126));
    // -i forwards stdin as a stream.
    let mut child = env.command(&["run", "--rm", "-i", "bb", "sh", "-c", "tr a-z A-Z; echo done"]).stdin(std::process::Stdio::piped()).stdout(std::process::Stdio::piped()).spawn().expect("spawn");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().expect("stdin");
        stdin.write_all(b"hello from stdin\n").expect("write");
    }
    let out = child.wait_with_output().expect("wait");
    assert_eq!(text(&out.stdout), "HELLO FROM STDIN\ndone\n");
    // Stdin in bulk arrives whole; a process that never reads it does not hang the run.
    let feed = |args: &[&str], bytes: usize| {
        let mut child = env.command(args).stdin(std::process::Stdio::piped()).stdout(std::process::Stdio::piped()).spawn().expect("spawn");
        let mut stdin = child.stdin.take().expect("stdin");
        let writer = std::thread::spawn(move || {
            use std::io::Write;
            let chunk = vec![b'x'; 64 * 1024];
            let mut left = bytes;
            while left > 0 {
                let n = left.min(chunk.len());
                if stdin.write_all(&chunk[..n]).is_err() {
                    break;
                }
                left -= n;
            }
        });
        let out = child.wait_with_output().expect("wait");
        let _ = writer.join();
        out
    };
    let out = feed(&["run", "--rm", "-i", "bb", "wc", "-c"], 3 << 20);
    assert_eq!(text(&out.stdout).trim(), (3u32 << 20).to_string(), "3 MiB of stdin, byte for byte");
    let started = Instant::now();
    let out = feed(&["run", "--rm", "-i", "bb", "sh", "-c", "sleep 1; echo ignored-stdin"], 40 << 20);
    assert_eq!(text(&out.stdout), "ignored-stdin\n");
    assert!(started.elapsed() < Duration::from_secs(60), "took {:?}", started.elapsed());
    // Bad input: exit 125, one line, nothing left behind.
    assert_run_error(&env.kiln(&["run", "--rm", "--pull", "never", "nope:latest"]), "no such image");
    assert_run_error(&env.kiln(&["run", "--rm", "-e", "=x", "bb"]), "invalid environment variable");
    assert_run_error(&env.kiln(&["run", "--rm", "--network", "bridge", "bb"]), "--network");
    assert_run_error(&env.kiln(&["run", "--rm", "-u", "ghost", "bb"]), "unable to find user ghost");
    assert_run_error(&env.kiln(&["run", "--rm", "--name", "bad/name", "bb"]), "invalid container name");
    ok(&env.kiln(&["run", "--name", "taken", "bb", "true"]));
    assert_run_error(&env.kiln(&["run", "--name", "taken", "bb", "true"]), "already in use");
    // --rm leaves nothing; a plain run stays as an exited container.
    let all = ok(&env.kiln(&["ps", "-a", "--format", "json"]));
    assert_eq!(all.lines().count(), 1, "only the named container stays:\n{all}");
    assert!(all.contains("\"Names\":\"taken\"") && all.contains("\"State\":\"exited\""), "{all}");
    no_vm_left(&env);
}

#[test]
fn interactive_terminal() {
    let env = TestEnv::new("ctr-tty");
    busybox_image(&env);
    let mut tty = Pty::spawn(env.command(&["run", "-it", "--rm", "bb", "sh"]), 30, 100);
    let before = tty.local_flags();
    assert!(tty.expect("# ", Duration::from_secs(60)), "no prompt:\n{}", tty.seen);
    assert_eq!(tty.local_flags() & libc::ICANON, 0, "the host terminal is raw while attached");
    tty.send(b"stty size\r");
    assert!(tty.expect("30 100", Duration::from_secs(20)), "stty size should match the terminal:\n{}", tty.seen);
    tty.resize(40, 120);
    std::thread::sleep(Duration::from_millis(500));
    tty.send(b"stty size\r");
    assert!(tty.expect("40 120", Duration::from_secs(20)), "the size follows a resize:\n{}", tty.seen);
    tty.send(b"tty; echo typed-$((6*7))\r");
    assert!(tty.expect("typed-42", Duration::from_secs(20)), "{}", tty.seen);
    // Ctrl-C reaches the container's foreground job.
    tty.send(b"sleep 60; echo after-sleep\r");
    std::thread::sleep(Duration::from_millis(800));
    let started = Instant::now();
    tty.send(b"\x03");
    tty.send(b"echo interrupted-$?\r");
    assert!(tty.expect("interrupted-130", Duration::from_secs(20)), "Ctrl-C should end the sleep:\n{}", tty.seen);
    assert!(started.elapsed() < Duration::from_secs(20));
    assert!(!tty.seen.contains("\nafter-sleep"), "the sleep was interrupted, not finished:\n{}", tty.seen);
    tty.send(b"exit 3\r");
    let status = tty.wait(Duration::from_secs(30)).expect("kiln exits");
    assert_eq!(status.code(), Some(3), "exit 3 makes kiln exit 3:\n{}", tty.seen);
    assert_eq!(tty.local_flags(), before, "the terminal's settings are restored");
    no_vm_left(&env);
}

fn container_dir(env: &TestEnv, name: &str) -> PathBuf {
    env.root.join("containers").join(state_of(env, name)["ID"].as_str().expect("id"))
}

#[test]
fn detached_lifecycle_logs_stop_start_and_commit() {
    let env = TestEnv::new("ctr-detached");
    busybox_image(&env);
    let script = "mkdir -p /data; n=$(cat /data/count 2>/dev/null || echo 0); echo $((n + 1)) > /data/count; \
                  trap 'echo got-usr1; exit 7' USR1; trap 'echo got-hup' HUP; echo started; \
                  while true; do sleep 0.2; done";
    let id = ok(&env.kiln(&["run", "-d", "--name", "web", "--stop-signal", "USR1", "bb", "sh", "-c", script]));
    assert_eq!(id.trim().len(), 64, "run -d prints the id: {id}");
    let ps = ok(&env.kiln(&["ps"]));
    assert!(ps.lines().nth(1).is_some_and(|l| l.starts_with(&id[..12]) && l.contains("Up ") && l.ends_with("web")), "{ps}");
    assert_eq!(ok(&env.kiln(&["ps", "-q"])).trim(), &id[..12]);
    // kill -s: the signal reaches the process (which handles it and goes on).
    wait_for_log(&env, "web", "started", 1);
    ok(&env.kiln(&["kill", "-s", "HUP", "web"]));
    let deadline = Instant::now() + Duration::from_secs(20);
    while !ok(&env.kiln(&["logs", "web"])).contains("got-hup") {
        assert!(Instant::now() < deadline, "the HUP handler should have logged");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(ok(&env.kiln(&["logs", "--tail", "1", "web"])).trim() == "got-hup");
    // stop sends the stop signal (USR1 here) and returns once it exited.
    let started = Instant::now();
    assert_eq!(ok(&env.kiln(&["stop", "web"])).trim(), "web");
    assert!(started.elapsed() < Duration::from_secs(8), "USR1 ended it; no 10 s wait for SIGKILL");
    assert_eq!(ok(&env.kiln(&["wait", "web"])).trim(), "7");
    assert_eq!(state_of(&env, "web")["State"], "exited");
    assert!(ok(&env.kiln(&["logs", "web"])).contains("got-usr1"), "logs outlive the VM");
    assert_eq!(ok(&env.kiln(&["ps", "-q"])), "", "nothing running");
    no_vm_left(&env);
    // start: the same container again, its files kept.
    ok(&env.kiln(&["start", "web"]));
    assert_eq!(state_of(&env, "web")["State"], "running");
    wait_for_log(&env, "web", "started", 2);
    ok(&env.kiln(&["stop", "-t", "1", "web"]));
    let rw = container_dir(&env, "web").join("rw.tar");
    let mut archive = tar::Archive::new(fs::File::open(&rw).expect("rw.tar"));
    let mut count = String::new();
    for e in archive.entries().expect("entries") {
        let mut e = e.expect("entry");
        if e.path().expect("path").to_string_lossy().trim_start_matches("./") == "data/count" {
            use std::io::Read;
            e.read_to_string(&mut count).expect("read");
        }
    }
    assert_eq!(count.trim(), "2", "the second run saw the first run's file");
    // rm of a running container needs -f.
    ok(&env.kiln(&["start", "web"]));
    wait_for_log(&env, "web", "started", 3);
    let out = env.kiln(&["rm", "web"]);
    assert!(!out.status.success() && text(&out.stderr).contains("container is running"), "{}", text(&out.stderr));
    // commit of a running container saves its layer as it is now.
    let image_id = ok(&env.kiln(&["commit", "-m", "counted", "-c", "CMD [\"cat\", \"/data/count\"]", "web", "bb:counted"]));
    assert!(image_id.starts_with("sha256:"), "{image_id}");
    assert_eq!(ok(&env.kiln(&["run", "--rm", "bb:counted"])).trim(), "3");
    let history = ok(&env.kiln(&["history", "bb:counted"]));
    assert!(history.lines().nth(1).is_some_and(|l| l.contains("counted")), "{history}");
    ok(&env.kiln(&["rm", "-f", "web"]));
    assert!(!ok(&env.kiln(&["ps", "-a"])).contains("web"));
    assert!(env.kiln(&["logs", "web"]).status.code() == Some(1), "a removed container is gone");
    no_vm_left(&env);
}

#[test]
fn commit_keeps_deletions_and_a_killed_supervisor_leaves_no_vm() {
    let env = TestEnv::new("ctr-commit");
    busybox_image(&env);
    ok(&env.kiln(&["run", "--name", "edit", "bb", "sh", "-c", "echo changed > /etc/motd; rm /bin/ls; mkdir -p /new/dir"]));
    let diff = ok(&env.kiln(&["diff", "edit"]));
    for line in ["C /etc", "C /etc/motd", "C /bin", "D /bin/ls", "A /new", "A /new/dir"] {
        assert!(diff.lines().any(|l| l == line), "kiln diff should list {line:?}:\n{diff}");
    }
    ok(&env.kiln(&["rename", "edit", "edited"]));
    let info: serde_json::Value = serde_json::from_str(&ok(&env.kiln(&["inspect", "edited"]))).expect("json");
    assert_eq!(info[0]["Name"], "/edited");
    assert_eq!(info[0]["State"]["Status"], "exited");
    assert_eq!(info[0]["State"]["ExitCode"], 0);
    assert_eq!(info[0]["Config"]["WorkingDir"], "/srv");
    assert!(info[0]["Config"]["Env"].as_array().is_some_and(|e| e.contains(&serde_json::json!("FROM_IMAGE=yes"))));
    // The image a container uses is not removed without -f, nor pruned.
    let out = env.kiln(&["rmi", "bb"]);
    assert!(!out.status.success() && text(&out.stderr).contains("must force"), "{}", text(&out.stderr));
    ok(&env.kiln(&["image", "prune", "-a", "-f"]));
    assert!(ok(&env.kiln(&["images"])).contains("bb "), "prune spares an image in use");
    ok(&env.kiln(&["commit", "-a", "tester", "edited", "bb:edited"]));
    let out = ok(&env.kiln(&["run", "--rm", "bb:edited", "sh", "-c", "cat /etc/motd; [ -e /bin/ls ] || echo ls-gone; [ -d /new/dir ] && echo dir-kept"]));
    assert_eq!(out, "changed\nls-gone\ndir-kept\n");
    let inspect: serde_json::Value = serde_json::from_str(&ok(&env.kiln(&["inspect", "bb:edited"]))).expect("json");
    assert_eq!(inspect[0]["Author"], "tester");
    // SIGKILL of the supervisor: its VM dies with it, the container reads as exited.
    ok(&env.kiln(&["run", "-d", "--name", "victim", "bb", "sh", "-c", "while true; do sleep 1; done"]));
    let state: serde_json::Value = serde_json::from_slice(&fs::read(container_dir(&env, "victim").join("state.json")).expect("state")).expect("json");
    let pid = state["owner_pid"].as_i64().expect("owner pid") as i32;
    // SAFETY: kill(2) on a pid we read from the container's state; no memory is involved.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
    no_vm_left(&env);
    let victim = state_of(&env, "victim");
    assert_eq!(victim["State"], "exited");
    assert_eq!(victim["ExitCode"], 137);
    // Several at once, then all removed.
    for i in 0..5 {
        ok(&env.kiln(&["run", "-d", "--name", &format!("many{i}"), "bb", "sleep", "300"]));
    }
    assert_eq!(ok(&env.kiln(&["ps", "-q"])).lines().count(), 5);
    let ids: Vec<String> = ok(&env.kiln(&["ps", "-aq"])).lines().map(str::to_string).collect();
    let mut args = vec!["rm", "-f"];
    args.extend(ids.iter().map(String::as_str));
    ok(&env.kiln(&args));
    assert_eq!(ok(&env.kiln(&["ps", "-aq"])), "");
    no_vm_left(&env);
    let check = ok(&env.kiln(&["system", "check"]));
    assert!(check.contains("0 problems"), "{check}");
}

/// Sends a plain HTTP GET to `127.0.0.1:port` and returns the whole answer ("" when the
/// connection fails).

#[test]
fn exec_top_and_published_ports() {
    let env = TestEnv::new("ctr-exec");
    busybox_image(&env);
    let port = free_port();
    let publish = format!("127.0.0.1:{port}:80");
    ok(&env.kiln(&["run", "-d", "--name", "web", "-p", &publish, "-P", "bb", "sh", "-c", "mkdir -p /www; echo hello-from-the-container > /www/index.html; echo ready; exec httpd -f -p 80 -h /www"]));
    wait_for_log(&env, "web", "ready", 1);
    // A real HTTP request from the host reaches busybox httpd in the guest.
    let deadline = Instant::now() + Duration::from_secs(30);
    let answer = loop {
        let a = http_get(port, "/index.html");
        if a.contains("hello-from-the-container") || Instant::now() > deadline {
            break a;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(answer.starts_with("HTTP/1.") && answer.contains("hello-from-the-container"), "{answer:?}");
    assert_eq!(ok(&env.kiln(&["port", "web", "80"])).trim(), format!("80/tcp -> 127.0.0.1:{port}"));
    assert!(ok(&env.kiln(&["ps"])).contains(&format!("127.0.0.1:{port}->80/tcp")));
    // A second container asking for the same host port fails cleanly and leaves nothing.
    let out = env.kiln(&["run", "-d", "--name", "clash", "-p", &publish, "bb", "true"]);
    assert_run_error(&out, "already allocated");
    assert!(!ok(&env.kiln(&["ps", "-a"])).contains("clash"), "the refused container is gone");
    // exec: the same filesystem and processes as the main process.
    assert_eq!(ok(&env.kiln(&["exec", "web", "cat", "/www/index.html"])), "hello-from-the-container\n");
    let out = env.kiln(&["exec", "-e", "X=1", "-w", "/tmp", "-u", "app", "web", "sh", "-c", "echo $X $(pwd) $(id -u); exit 5"]);
    assert_eq!(out.status.code(), Some(5), "the exec's exit code is kiln's: {}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "1 /tmp 1000\n");
    let mut child = env.command(&["exec", "-i", "web", "sh", "-c", "cat > /www/typed.html"]).stdin(std::process::Stdio::piped()).spawn().expect("spawn");
    {
        use std::io::Write;
        child.stdin.take().expect("stdin").write_all(b"typed-through-exec\n").expect("write");
    }
    assert!(child.wait().expect("wait").success());
    assert!(http_get(port, "/typed.html").contains("typed-through-exec"), "what exec wrote is served");
    // 8 MiB of random bytes arrive byte for byte through the port and through exec's output
    // (both spliced into the agent connection).
    let sum = ok(&env.kiln(&["exec", "web", "sh", "-c", "dd if=/dev/urandom of=/www/rnd bs=1M count=8 2>/dev/null; sha256sum /www/rnd | cut -d' ' -f1"]));
    let body = {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
        s.write_all(b"GET /rnd HTTP/1.0\r\n\r\n").expect("request");
        let mut all = Vec::new();
        s.read_to_end(&mut all).expect("response");
        let at = all.windows(4).position(|w| w == b"\r\n\r\n").expect("headers end") + 4;
        all.split_off(at)
    };
    assert_eq!(body.len(), 8 << 20);
    let catted = env.kiln(&["exec", "web", "cat", "/www/rnd"]).stdout;
    assert!(catted == body, "exec's output and the download are the same bytes");
    let hashed = std::process::Command::new("sha256sum").stdin(std::process::Stdio::piped()).stdout(std::process::Stdio::piped()).spawn().and_then(|mut c| {
        use std::io::Write;
        c.stdin.take().expect("stdin").write_all(&body)?;
        c.wait_with_output()
    }).expect("sha256sum");
    assert_eq!(text(&hashed.stdout).split_whitespace().next(), Some(sum.trim()), "the download is the file in the container");
    let top = ok(&env.kiln(&["top", "web"]));
    assert!(top.contains("httpd -f -p 80"), "top lists the main process:\n{top}");
    assert_eq!(env.kiln(&["exec", "web", "no-such-tool"]).status.code(), Some(127));
    // rm -f: no container, no VM, no listening port.
    ok(&env.kiln(&["rm", "-f", "web"]));
    no_vm_left(&env);
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err(), "the published port is closed");
    let out = env.kiln(&["exec", "web", "true"]);
    assert!(!out.status.success() && text(&out.stderr).contains("no such container"), "{}", text(&out.stderr));
    // exec into a stopped container is refused.
    ok(&env.kiln(&["run", "--name", "done", "bb", "true"]));
    let out = env.kiln(&["exec", "done", "true"]);
    assert!(!out.status.success() && text(&out.stderr).contains("is not running"), "{}", text(&out.stderr));
}

#[test]
fn volumes_host_directories_and_tmpfs() {
    let env = TestEnv::new("ctr-volumes");
    busybox_image(&env);
    let host = env.dir.path().join("shared");
    fs::create_dir_all(&host).expect("mkdir");
    fs::write(host.join("from-host"), "written on the host\n").expect("write");
    env.give_to_user(&host);
    let rw = format!("{}:/data", p(&host));
    let ro = format!("{}:/ro:ro", p(&host));
    let out = ok(&env.kiln(&["run", "--rm", "-v", &rw, "-v", &ro, "--tmpfs", "/scratch", "bb", "sh", "-c",
        "cat /data/from-host; echo from the container > /data/from-container; echo x > /ro/nope 2>/dev/null || echo ro-refused; \
         echo t > /scratch/t && grep -q ' /scratch tmpfs' /proc/mounts && echo tmpfs-ok"]));
    assert_eq!(out, "written on the host\nro-refused\ntmpfs-ok\n");
    // Host directories go over virtiofs when virtiofsd is there (tests/run.sh hands the
    // setup's to kiln), else over 9p: both work alike.
    let fs_of_data = |cmd: &mut std::process::Command| text(&cmd.output().expect("run kiln").stdout).trim().to_string();
    let with = fs_of_data(&mut env.command(&["run", "--rm", "-v", &rw, "bb", "sh", "-c", "echo via > /data/via; grep ' /data ' /proc/mounts | cut -d' ' -f3"]));
    if std::env::var_os("KILN_VIRTIOFSD").is_some() {
        assert_eq!(with, "virtiofs");
    } else {
        eprintln!("prerequisite missing: no KILN_VIRTIOFSD (examples/setup-and-build.sh builds virtiofsd): virtiofs untested");
        assert!(std::env::var("CI").as_deref() != Ok("true"), "under CI, virtiofsd must be there");
    }
    let without = fs_of_data(env.command(&["run", "--rm", "-v", &rw, "bb", "sh", "-c", "cat /data/via; grep ' /data ' /proc/mounts | cut -d' ' -f3"]).env_remove("KILN_VIRTIOFSD"));
    assert_eq!(without, "via\n9p", "without virtiofsd, 9p");
    let written = host.join("from-container");
    assert_eq!(fs::read_to_string(&written).expect("the container's write reaches the host"), "from the container\n");
    if let Some((uid, _)) = env.user {
        use std::os::unix::fs::MetadataExt;
        assert_eq!(fs::metadata(&written).expect("stat").uid(), uid, "files the container writes are the user's on the host");
    }
    // Named volumes outlive their containers; a volume in use is not removed.
    ok(&env.kiln(&["run", "--name", "writer", "-v", "cache:/cache", "bb", "sh", "-c", "echo kept > /cache/k"]));
    assert!(ok(&env.kiln(&["volume", "ls", "-q"])).lines().any(|l| l == "cache"));
    let out = env.kiln(&["volume", "rm", "cache"]);
    assert!(!out.status.success() && text(&out.stderr).contains("in use by container writer"), "{}", text(&out.stderr));
    ok(&env.kiln(&["rm", "writer"]));
    assert_eq!(ok(&env.kiln(&["run", "--rm", "-v", "cache:/c:ro", "bb", "cat", "/c/k"])), "kept\n");
    // What goes to a volume or a tmpfs is not part of the container's writable layer.
    ok(&env.kiln(&["run", "--name", "layered", "-v", "cache:/cache", "--tmpfs", "/scratch", "bb", "sh", "-c", "echo v > /cache/v; echo s > /scratch/s; echo l > /layer"]));
    let diff = ok(&env.kiln(&["diff", "layered"]));
    assert!(diff.contains("A /layer") && !diff.contains("/cache/v") && !diff.contains("/scratch/s"), "{diff}");
    ok(&env.kiln(&["rm", "layered"]));
    assert_eq!(ok(&env.kiln(&["volume", "rm", "cache"])).trim(), "cache");
    // kiln cp both ways; the host never follows the container's symlinks, no setuid bit lands.
    let victim = env.dir.path().join("victim");
    fs::create_dir_all(&victim).expect("mkdir");
    env.give_to_user(&victim);
    let script = format!("mkdir -p /out/sub; echo one > /out/sub/f; chmod 4755 /out/sub/f; ln -s {} /out/esc; ln -s / /out/root", p(&victim));
    ok(&env.kiln(&["run", "--name", "cpc", "bb", "sh", "-c", &script]));
    let dest = env.dir.path().join("copied");
    fs::create_dir_all(&dest).expect("mkdir");
    env.give_to_user(&dest);
    ok(&env.kiln(&["cp", "cpc:/out", p(&dest)]));
    assert_eq!(fs::read_to_string(dest.join("out/sub/f")).expect("copied file"), "one\n");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(fs::metadata(dest.join("out/sub/f")).expect("stat").permissions().mode() & 0o7000, 0, "no setuid on the host");
    assert_eq!(fs::read_link(dest.join("out/esc")).expect("symlink kept as a symlink"), victim);
    let out = env.kiln(&["cp", "cpc:/out/root/etc/passwd", p(&dest)]);
    assert!(!out.status.success(), "a path through the container's symlink is not followed");
    assert_eq!(fs::read_dir(&victim).expect("ls").count(), 0, "nothing written through the container's symlink");
    let infile = env.dir.path().join("infile");
    fs::write(&infile, "from the host\n").expect("write");
    env.give_to_user(&infile);
    ok(&env.kiln(&["cp", p(&infile), "cpc:/out/"]));
    assert!(ok(&env.kiln(&["diff", "cpc"])).lines().any(|l| l == "A /out/infile"), "copied into the stopped container's layer");
    let back = env.dir.path().join("back");
    ok(&env.kiln(&["cp", "cpc:/out/infile", p(&back)]));
    assert_eq!(fs::read_to_string(&back).expect("round trip"), "from the host\n");
    ok(&env.kiln(&["run", "-d", "--name", "cpr", "bb", "sleep", "300"]));
    ok(&env.kiln(&["cp", p(&infile), "cpr:/tmp/copied"]));
    assert_eq!(ok(&env.kiln(&["exec", "cpr", "cat", "/tmp/copied"])), "from the host\n");
    ok(&env.kiln(&["rm", "-f", "cpr", "cpc"]));
    // Bad input: one error line, exit 125.
    assert_run_error(&env.kiln(&["run", "--rm", "-v", "/no/such/dir:/x", "bb", "true"]), "invalid -v");
    assert_run_error(&env.kiln(&["run", "--rm", "-v", "cache:relative", "bb", "true"]), "absolute");
    assert_run_error(&env.kiln(&["run", "--rm", "--tmpfs", "rel", "bb", "true"]), "--tmpfs");
    no_vm_left(&env);
}

#[test]
fn attach_and_detach_keys() {
    let env = TestEnv::new("ctr-attach");
    busybox_image(&env);
    ok(&env.kiln(&["run", "-d", "-i", "-t", "--name", "shell", "bb", "sh"]));
    let mut tty = Pty::spawn(env.command(&["attach", "shell"]), 25, 90);
    tty.send(b"stty size; echo in-$((40+2))\r");
    assert!(tty.expect("25 90", Duration::from_secs(30)), "the attaching terminal's size reaches the container:\n{}", tty.seen);
    assert!(tty.expect("in-42", Duration::from_secs(30)), "typed input reaches the shell:\n{}", tty.seen);
    tty.send(b"\x10\x11");
    let status = tty.wait(Duration::from_secs(30)).expect("Ctrl-P Ctrl-Q detaches");
    assert_eq!(status.code(), Some(0), "{}", tty.seen);
    assert_eq!(state_of(&env, "shell")["State"], "running", "detaching leaves the container running");
    // Attached without a terminal: input as a stream, the container's exit code is kiln's.
    let mut child = env.command(&["attach", "shell"]).stdin(std::process::Stdio::piped()).stdout(std::process::Stdio::piped()).spawn().expect("spawn");
    {
        use std::io::Write;
        child.stdin.take().expect("stdin").write_all(b"echo second-attach\nexit 4\n").expect("write");
    }
    let out = child.wait_with_output().expect("wait");
    assert_eq!(out.status.code(), Some(4));
    assert!(text(&out.stdout).contains("second-attach"), "{}", text(&out.stdout));
    assert_eq!(ok(&env.kiln(&["wait", "shell"])).trim(), "4");
    let out = env.kiln(&["attach", "shell"]);
    assert!(!out.status.success() && text(&out.stderr).contains("stopped container"), "{}", text(&out.stderr));
    no_vm_left(&env);
}
