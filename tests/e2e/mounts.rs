//! RUN --mount and heredoc scripts through the real CLI and a real guest: a secret is usable
//! by the RUN that asks for it and found nowhere in the saved image, a cache mount's contents
//! survive into the next build, a tmpfs vanishes, a `#!` heredoc runs as a script file.

mod harness;

use std::fs;
use std::process::Command;

use harness::{text, TestEnv};

const SECRET: &str = "s3cr3t-VALUE-8431";

const DOCKERFILE: &str = r#"FROM scratch
COPY busybox /bin/busybox
RUN ["/bin/busybox", "--install", "-s", "/bin"]
RUN --mount=type=secret,id=tok sha256sum /run/secrets/tok | cut -d" " -f1 > /secret-sum
RUN --mount=type=secret,id=tok,env=TOKEN printf %s "$TOKEN" | sha256sum | cut -d" " -f1 > /secret-env
RUN --mount=type=cache,target=/cache echo run >> /cache/log && wc -l < /cache/log > /cache-count
RUN --mount=type=tmpfs,target=/scratch echo x > /scratch/f && test -f /scratch/f
RUN <<EOF
#!/bin/sh
echo "script ran as $0" > /script-out
EOF
"#;

fn build(env: &TestEnv, ctx: &str, secret: &str, dest: &str) -> String {
    let secret_arg = format!("id=tok,src={secret}");
    let out_arg = format!("type=local,dest={dest}");
    let out = env.kiln(&["build", "--no-cache", "--secret", &secret_arg, "-o", &out_arg, "-t", "mounts", ctx]);
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "build failed:\n{stderr}");
    stderr
}

#[test]
fn secrets_caches_tmpfs_and_scripts() {
    let env = TestEnv::new("mounts");
    let ctx = env.context("ctx", DOCKERFILE, &[], true);
    let secret = env.dir.path().join("secret.txt");
    fs::write(&secret, SECRET).expect("secret");
    env.give_to_user(&secret);
    let (ctx_s, secret_s) = (ctx.to_str().expect("utf8"), secret.to_str().expect("utf8"));

    let first = env.dir.path().join("first");
    let stderr = build(&env, ctx_s, secret_s, first.to_str().expect("utf8"));
    assert!(!stderr.contains(SECRET), "the secret leaked into the build output:\n{stderr}");
    // The RUNs saw the secret (its hash; the value itself is never in the Dockerfile).
    let sum = Command::new("sha256sum").arg(&secret).output().expect("sha256sum");
    let sum = text(&sum.stdout).split_whitespace().next().expect("sum").to_string();
    assert_eq!(fs::read_to_string(first.join("secret-sum")).expect("secret-sum").trim(), sum);
    assert_eq!(fs::read_to_string(first.join("secret-env")).expect("secret-env").trim(), sum);
    assert_eq!(fs::read_to_string(first.join("cache-count")).expect("cache-count").trim(), "1");
    assert_eq!(fs::read_to_string(first.join("script-out")).expect("script-out").trim(), "script ran as /dev/pipes/EOF");
    for gone in ["run/secrets", "cache", "scratch", "dev/pipes"] {
        assert!(!first.join(gone).exists(), "/{gone} must not be left in the image");
    }

    // The cache mount keeps what the first build wrote (every step reruns: --no-cache).
    let second = env.dir.path().join("second");
    build(&env, ctx_s, secret_s, second.to_str().expect("utf8"));
    assert_eq!(fs::read_to_string(second.join("cache-count")).expect("cache-count").trim(), "2");

    // The secret is nowhere in the saved image: not in a layer, the config or the history.
    let files = harness::saved_image(&env, "mounts");
    for (name, plain) in &files {
        assert!(!String::from_utf8_lossy(plain).contains(SECRET), "the secret is in {name}");
    }
    assert!(files.len() > 5, "the archive should hold the image's blobs");
    // A required secret that is not given is a clear error.
    let req = env.context("req", "FROM scratch\nRUN --mount=type=secret,id=missing,required true\n", &[], false);
    harness::assert_clean_error(&env.kiln(&["build", req.to_str().expect("utf8")]), "secret missing is required");
    assert!(env.vm_processes().is_empty(), "left-over VMs: {:?}", env.vm_processes());
}
