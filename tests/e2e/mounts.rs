//! RUN --mount and heredoc scripts through the real CLI and a real guest: a secret is usable
//! by the RUN that asks for it and found nowhere in the saved image, the store, a cache export,
//! `--progress plain` or `KILN_DEBUG` output (guest console included), a cache mount's contents
//! survive into the next build, a tmpfs vanishes, a `#!` heredoc runs as a script file.

mod harness;

use std::fs;
use std::io::Read;
use std::path::Path;
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

/// Whether `bytes`, or what they gunzip to, hold the secret.
fn holds_secret(bytes: &[u8]) -> bool {
    let plain = |b: &[u8]| b.windows(SECRET.len()).any(|w| w == SECRET.as_bytes());
    if plain(bytes) {
        return true;
    }
    let mut unzipped = Vec::new();
    bytes.starts_with(&[0x1f, 0x8b]) && flate2::read::MultiGzDecoder::new(bytes).read_to_end(&mut unzipped).is_ok() && plain(&unzipped)
}

/// Every file under `dir` that holds the secret.
fn files_holding_secret(dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = fs::read_dir(&d) else { continue };
        for e in entries.flatten() {
            let path = e.path();
            match e.file_type() {
                Ok(t) if t.is_dir() => stack.push(path),
                Ok(t) if t.is_file() && fs::read(&path).is_ok_and(|b| holds_secret(&b)) => found.push(path.display().to_string()),
                _ => {}
            }
        }
    }
    found
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
    // Nor anywhere kiln writes with everything turned up: plain progress, KILN_DEBUG (the
    // guest's console too) and a max-mode cache export.
    let cache = env.dir.path().join("cache-export");
    let third = env.dir.path().join("third");
    let (secret_arg, out_arg, cache_arg) =
        (format!("id=tok,src={secret_s}"), format!("type=local,dest={}", third.display()), format!("type=local,dest={},mode=max", cache.display()));
    let args = ["build", "--no-cache", "--progress", "plain", "--secret", &secret_arg, "-o", &out_arg, "--cache-to", &cache_arg, "-t", "mounts", ctx_s];
    let out = env.kiln_with(&args, &[("KILN_DEBUG", "1")]);
    assert!(out.status.success(), "build failed:\n{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("secret-sum"), "the plain progress shows the steps:\n{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("kiln guest agent"), "KILN_DEBUG shows the guest's console:\n{}", text(&out.stderr));
    assert!(!holds_secret(&out.stderr) && !holds_secret(&out.stdout), "the secret is in the debug output:\n{}", text(&out.stderr));
    assert!(cache.join("index.json").is_file(), "the cache was exported");
    assert_eq!(files_holding_secret(&cache), Vec::<String>::new(), "the secret is in the cache export");
    assert_eq!(files_holding_secret(&env.root), Vec::<String>::new(), "the secret is in the store");
    // A required secret that is not given is a clear error.
    let req = env.context("req", "FROM scratch\nRUN --mount=type=secret,id=missing,required true\n", &[], false);
    harness::assert_clean_error(&env.kiln(&["build", req.to_str().expect("utf8")]), "secret missing is required");
    assert!(env.vm_processes().is_empty(), "left-over VMs: {:?}", env.vm_processes());
}
