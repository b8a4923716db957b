//! RUN --mount=type=bind through the real CLI and a real guest, with BuildKit's semantics: a
//! context directory or file, a stage's directory or file (owners kept), `.dockerignore`
//! honoured, read-only unless `rw`, a read-write bind's writes gone after its step, the target
//! and the source in no layer, the cache keyed by the content under the source only, and a
//! missing source a `Dockerfile:LINE:` error. Also RUN --mount=type=ssh: the host's real
//! `ssh-agent`, reached from the guest by a real `ssh-add` through `kiln build --ssh`.

mod harness;

use std::fs;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use harness::{text, TestEnv};

/// In `src/a` only: the image must not hold it anywhere (the RUNs record its hash).
const MARKER: &str = "bind-source-MARKER-5521";

const DOCKERFILE: &str = r#"FROM scratch AS tools
COPY busybox /bin/busybox
RUN ["/bin/busybox", "--install", "-s", "/bin"]

FROM tools AS gen
RUN mkdir -p /x/deep && echo from-stage > /x/deep/f && echo one > /x/file && chown 1234:1234 /x/file

FROM tools
RUN --mount=type=bind,source=src,target=/src sha256sum /src/a | cut -d" " -f1 > /out-a && ls -a /src | tr "\n" " " > /out-ls && cat /proc/sys/kernel/random/uuid > /id-src
RUN --mount=type=bind,from=gen,source=/x,target=/y cat /y/deep/f > /out-stage && stat -c %u:%g /y/file > /out-owner
RUN --mount=type=bind,from=gen,source=/x/file,target=/etc/one.txt cat /etc/one.txt > /out-file
RUN --mount=type=bind,source=src,target=/src,rw echo scribble > /src/a && echo new > /src/new && cat /src/a > /out-rw
RUN --mount=type=bind,source=src,target=/src sha256sum /src/a | cut -d" " -f1 > /out-after && if test -e /src/new; then echo leaked; else echo clean; fi > /out-after-new
RUN --mount=type=bind,source=src,target=/src if touch /src/denied 2>/out-ro-err; then echo writable; else echo read-only; fi > /out-ro
WORKDIR /w
RUN --mount=type=bind,target=ctx cat ctx/other.txt > /out-ctx && cat /proc/sys/kernel/random/uuid > /id-ctx
"#;

const SRC_RUN: &str = "RUN --mount=type=bind,source=src,target=/src sha256sum";
const CTX_RUN: &str = "RUN --mount=type=bind,target=ctx";

fn build(env: &TestEnv, ctx: &Path, dest: &Path) -> String {
    let out_arg = format!("type=local,dest={}", dest.display());
    let out = env.kiln(&["build", "-t", "binds", "-o", &out_arg, ctx.to_str().expect("utf8")]);
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "build failed:\n{stderr}");
    stderr
}

fn read(dir: &Path, name: &str) -> String {
    fs::read_to_string(dir.join(name)).unwrap_or_else(|e| panic!("{name}: {e}")).trim().to_string()
}

/// Whether the progress line of the step whose text starts with `run` says CACHED.
fn cached(stderr: &str, run: &str) -> bool {
    let line = stderr.lines().find(|l| l.contains(run)).unwrap_or_else(|| panic!("no {run:?} step in:\n{stderr}"));
    line.contains("CACHED")
}

#[test]
fn bind_mounts_from_the_context_and_stages() {
    let env = TestEnv::new("binds");
    let files = [
        ("src/a", MARKER),
        ("src/sub/b", "b"),
        ("src/skip.log", "ignored"),
        ("other.txt", "other-1"),
        (".dockerignore", "**/*.log\n"),
    ];
    let ctx = env.context("ctx", DOCKERFILE, &files, true);
    let first = env.dir.path().join("first");
    build(&env, &ctx, &first);

    // The context's directory, as .dockerignore leaves it, read-only.
    let sum = Command::new("sha256sum").arg(ctx.join("src/a")).output().expect("sha256sum");
    let sum = text(&sum.stdout).split_whitespace().next().expect("sum").to_string();
    assert_eq!(read(&first, "out-a"), sum);
    assert_eq!(read(&first, "out-ls"), ". .. a sub");
    assert_eq!(read(&first, "out-ro"), "read-only");
    assert!(read(&first, "out-ro-err").contains("Read-only file system"), "{}", read(&first, "out-ro-err"));
    // A stage's directory and file, owners kept.
    assert_eq!(read(&first, "out-stage"), "from-stage");
    assert_eq!(read(&first, "out-owner"), "1234:1234");
    assert_eq!(read(&first, "out-file"), "one");
    // A read-write bind: its step sees its writes, the next one does not.
    assert_eq!(read(&first, "out-rw"), "scribble");
    assert_eq!(read(&first, "out-after"), sum);
    assert_eq!(read(&first, "out-after-new"), "clean");
    // The whole context at a target relative to WORKDIR.
    assert_eq!(read(&first, "out-ctx"), "other-1");
    // Targets (and the missing parents made for them: /etc) are not left in the image.
    for gone in ["src", "y", "etc", "w/ctx"] {
        assert!(!first.join(gone).exists(), "/{gone} must not be left in the image");
    }
    assert!(first.join("w").is_dir(), "WORKDIR's directory stays");

    // The bind source is in no layer of the saved image.
    let files = harness::saved_image(&env, "binds");
    for (name, plain) in &files {
        assert!(!String::from_utf8_lossy(plain).contains(MARKER), "the bind source is in {name}");
    }
    assert!(files.len() > 5, "the archive should hold the image's blobs");

    // A context change outside the source keeps the RUN cached (the whole-context one reruns)...
    fs::write(ctx.join("other.txt"), "other-2").expect("other");
    let second = env.dir.path().join("second");
    let stderr = build(&env, &ctx, &second);
    assert!(cached(&stderr, SRC_RUN), "an unrelated change invalidated the bind's RUN:\n{stderr}");
    assert_eq!(read(&second, "id-src"), read(&first, "id-src"));
    assert!(!cached(&stderr, CTX_RUN), "the whole-context bind must rerun:\n{stderr}");
    assert_eq!(read(&second, "out-ctx"), "other-2");
    // ... and a change under it reruns it.
    fs::write(ctx.join("src/sub/b"), "b2").expect("b");
    let third = env.dir.path().join("third");
    let stderr = build(&env, &ctx, &third);
    assert!(!cached(&stderr, SRC_RUN), "a change under the source must rerun the RUN:\n{stderr}");
    assert_ne!(read(&third, "id-src"), read(&second, "id-src"));
    assert!(env.vm_processes().is_empty(), "left-over VMs: {:?}", env.vm_processes());
}

#[test]
fn a_missing_bind_source_names_the_line() {
    let env = TestEnv::new("binds-missing");
    let from_ctx = env.context("ctx", "FROM scratch\nCOPY busybox /bin/busybox\nRUN --mount=type=bind,source=nope,target=/n /bin/busybox true\n", &[], true);
    let out = env.kiln(&["build", from_ctx.to_str().expect("utf8")]);
    harness::assert_clean_error(&out, "Dockerfile:3: ");
    harness::assert_clean_error(&out, "nope: not found in the build context");
    let from_stage = env.context(
        "stage",
        "FROM scratch AS s\nCOPY busybox /bin/busybox\nFROM s\nRUN --mount=type=bind,from=s,source=/nope,target=/n /bin/busybox true\n",
        &[],
        true,
    );
    let out = env.kiln(&["build", from_stage.to_str().expect("utf8")]);
    harness::assert_clean_error(&out, "Dockerfile:4: ");
    harness::assert_clean_error(&out, "/nope: not found in s");
    // An ignored source is as missing.
    let ignored = env.context("ignored", "FROM scratch\nRUN --mount=type=bind,source=secret.txt,target=/s true\n", &[("secret.txt", "x"), (".dockerignore", "secret.txt\n")], false);
    harness::assert_clean_error(&env.kiln(&["build", ignored.to_str().expect("utf8")]), "secret.txt: not found in the build context");
    let images = env.kiln(&["images", "-a", "-q"]);
    assert!(images.status.success() && text(&images.stdout).trim().is_empty(), "failed builds made images: {}", text(&images.stdout));
    assert!(env.vm_processes().is_empty(), "left-over VMs: {:?}", env.vm_processes());
}

/// Runs a host tool as the user kiln runs as (the agent only answers its own user).
fn as_user(env: &TestEnv, tool: &str) -> Command {
    match env.user {
        Some((uid, gid)) => {
            let mut c = Command::new("setpriv");
            c.args([format!("--reuid={uid}"), format!("--regid={gid}"), "--clear-groups".into(), "--".into(), tool.into()]);
            c
        }
        None => Command::new(tool),
    }
}

/// Kills the ssh-agent this test started.
struct AgentProcess(Child);

impl Drop for AgentProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Copies `binary` and the shared libraries `ldd` lists into `root`, at their own paths.
fn copy_with_libs(binary: &str, root: &Path) {
    let ldd = Command::new("ldd").arg(binary).output().expect("ldd");
    assert!(ldd.status.success(), "ldd {binary}: {}", text(&ldd.stderr));
    let mut files = vec![binary.to_string()];
    for line in text(&ldd.stdout).lines() {
        let path = match line.split_once("=>") {
            Some((_, rest)) => rest.split_whitespace().next().unwrap_or_default(),
            None => line.split_whitespace().next().unwrap_or_default(),
        };
        if path.starts_with('/') {
            files.push(path.to_string());
        }
    }
    for f in files {
        let dest = root.join(f.trim_start_matches('/'));
        fs::create_dir_all(dest.parent().expect("parent")).expect("mkdir");
        fs::copy(&f, &dest).unwrap_or_else(|e| panic!("copy {f}: {e}"));
    }
}

const SSH_DOCKERFILE: &str = r#"FROM scratch
COPY busybox /bin/busybox
RUN ["/bin/busybox", "--install", "-s", "/bin"]
COPY root/ /
RUN --mount=type=ssh ssh-add -l > /keys-default && echo "$SSH_AUTH_SOCK" > /sock-env
RUN --mount=type=ssh,id=deploy,target=/tmp/agent,uid=1000,mode=0660 stat -c "%u %a %F" /tmp/agent > /sock-stat && ssh-add -l > /keys-deploy
RUN --mount=type=ssh,id=absent echo "${SSH_AUTH_SOCK:-unset}" > /optional
"#;

#[test]
fn ssh_mounts_reach_the_host_agent() {
    for tool in ["ssh-agent", "ssh-add", "ssh-keygen", "ldd", "setpriv"] {
        harness::require_tool(tool);
    }
    let env = TestEnv::new("ssh");
    let ctx = env.context("ctx", SSH_DOCKERFILE, &[], true);
    copy_with_libs("/usr/bin/ssh-add", &ctx.join("root"));
    env.give_to_user(&ctx);

    // A real agent holding one key, as the user kiln runs as.
    let sock = env.dir.path().join("agent.sock");
    let key = env.dir.path().join("id_ed25519");
    let keygen = Command::new("ssh-keygen").args(["-q", "-t", "ed25519", "-N", "", "-C", "kiln-e2e-key", "-f"]).arg(&key).output().expect("keygen");
    assert!(keygen.status.success(), "{}", text(&keygen.stderr));
    env.give_to_user(&key);
    let agent = as_user(&env, "ssh-agent").arg("-D").arg("-a").arg(&sock).stdout(Stdio::null()).stderr(Stdio::null()).spawn().expect("ssh-agent");
    let _agent = AgentProcess(agent);
    for _ in 0..100 {
        if sock.exists() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let add = as_user(&env, "ssh-add").arg(&key).env("SSH_AUTH_SOCK", &sock).output().expect("ssh-add");
    assert!(add.status.success(), "ssh-add: {}", text(&add.stderr));
    let listed = as_user(&env, "ssh-add").arg("-l").env("SSH_AUTH_SOCK", &sock).output().expect("ssh-add -l");
    let host_keys = text(&listed.stdout).trim().to_string();
    assert!(host_keys.contains("kiln-e2e-key"), "{host_keys}");

    let dest = env.dir.path().join("out");
    let out_arg = format!("type=local,dest={}", dest.display());
    let deploy = format!("deploy={}", sock.display());
    let sock_s = sock.to_str().expect("utf8");
    let args = ["build", "--ssh", "default", "--ssh", &deploy, "-o", &out_arg, ctx.to_str().expect("utf8")];
    let out = env.kiln_with(&args, &[("SSH_AUTH_SOCK", sock_s)]);
    assert!(out.status.success(), "build failed:\n{}", text(&out.stderr));
    assert_eq!(read(&dest, "keys-default"), host_keys, "the guest lists the host agent's keys");
    assert_eq!(read(&dest, "sock-env"), "/run/buildkit/ssh_agent.0");
    assert_eq!(read(&dest, "keys-deploy"), host_keys);
    assert_eq!(read(&dest, "sock-stat"), "1000 660 socket");
    assert_eq!(read(&dest, "optional"), "unset", "an optional ssh mount whose id was not given is left out");
    for gone in ["run", "tmp"] {
        assert!(!dest.join(gone).exists(), "/{gone} (made for a socket) must not be left in the image");
    }

    // A required id that was not given names the line; --ssh without an agent is refused.
    let req = env.context("req", "FROM scratch\nRUN --mount=type=ssh,id=nope,required true\n", &[], false);
    let out = env.kiln_with(&["build", "--ssh", "default", req.to_str().expect("utf8")], &[("SSH_AUTH_SOCK", sock_s)]);
    harness::assert_clean_error(&out, "Dockerfile:2: ");
    harness::assert_clean_error(&out, "ssh agent nope is required");
    let mut cmd = env.command(&["build", "--ssh", "default", req.to_str().expect("utf8")]);
    let out = cmd.env_remove("SSH_AUTH_SOCK").output().expect("kiln");
    harness::assert_clean_error(&out, "SSH_AUTH_SOCK is not set");
    assert!(env.vm_processes().is_empty(), "left-over VMs: {:?}", env.vm_processes());
}
