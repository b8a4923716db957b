//! `ADD <git url>` through the real CLI, against a repository served on loopback over Git's
//! "dumb" HTTP protocol by a small static file server in this test: a tag, a branch with a
//! subdirectory, `--keep-git-dir`, the commit as the cache key (a new commit on the branch
//! reruns only that step), and a missing reference as a clean error. No VM is needed.

mod harness;

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::Command;

use harness::{text, TestEnv};

fn git(dir: &Path, args: &[&str]) {
    let out = Command::new("git")
        .args(["-c", "user.name=kiln", "-c", "user.email=kiln@example.org", "-c", "init.defaultBranch=main", "-c", "safe.directory=*"])
        .args(args)
        .current_dir(dir)
        .output()
        .expect("git");
    assert!(out.status.success(), "git {args:?}: {}", text(&out.stderr));
}

/// Serves files under `root` (GET only, query strings ignored, 404 for the rest).
fn serve(root: PathBuf) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let mut first = String::new();
            let mut reader = BufReader::new(conn.try_clone().expect("clone"));
            if reader.read_line(&mut first).is_err() {
                continue;
            }
            loop {
                let mut h = String::new();
                if reader.read_line(&mut h).map_or(true, |n| n == 0) || h == "\r\n" {
                    break;
                }
            }
            let path = first.split_whitespace().nth(1).unwrap_or("/").split('?').next().unwrap_or("/").to_string();
            let file = root.join(path.trim_start_matches('/'));
            let reply = match (path.contains(".."), fs::read(&file)) {
                (false, Ok(body)) if file.is_file() => {
                    let mut r = format!("HTTP/1.0 200 OK\r\nContent-Length: {}\r\nContent-Type: application/octet-stream\r\n\r\n", body.len()).into_bytes();
                    r.extend(body);
                    r
                }
                _ => b"HTTP/1.0 404 Not Found\r\nContent-Length: 0\r\n\r\n".to_vec(),
            };
            let _ = conn.write_all(&reply);
        }
    });
    port
}

#[test]
fn add_git_sources_by_tag_branch_and_subdir() {
    harness::require_tool("git");
    let env = TestEnv::new("addgit");
    let work = env.dir.path().join("work");
    fs::create_dir_all(work.join("sub")).expect("mkdir");
    git(&work, &["init", "-q"]);
    fs::write(work.join("a.txt"), "A1").expect("write");
    fs::write(work.join("sub/b.txt"), "B1").expect("write");
    symlink("a.txt", work.join("link")).expect("symlink");
    git(&work, &["add", "-A"]);
    git(&work, &["commit", "-q", "-m", "one"]);
    git(&work, &["tag", "-a", "v1", "-m", "v1"]);
    fs::write(work.join("a.txt"), "A2").expect("write");
    git(&work, &["commit", "-q", "-am", "two"]);
    let served = env.dir.path().join("served");
    fs::create_dir_all(&served).expect("mkdir");
    let bare = served.join("repo.git");
    git(env.dir.path(), &["clone", "-q", "--bare", work.to_str().expect("utf8"), bare.to_str().expect("utf8")]);
    git(&bare, &["update-server-info"]);
    let port = serve(served);

    let dockerfile = "FROM scratch\nARG PORT\n\
        ADD http://127.0.0.1:$PORT/repo.git#v1 /src/\n\
        ADD http://127.0.0.1:$PORT/repo.git#main:sub /sub/\n\
        ADD --keep-git-dir=true http://127.0.0.1:$PORT/repo.git /kept/\n";
    let ctx = env.context("ctx", dockerfile, &[], false);
    let dest = env.dir.path().join("out");
    fs::create_dir(&dest).expect("mkdir");
    env.give_to_user(&dest);
    let out_arg = format!("type=local,dest={}", dest.display());
    let port_arg = format!("PORT={port}");
    let build = || {
        let out = env.kiln(&["build", "--progress", "plain", "--build-arg", &port_arg, "-o", &out_arg, ctx.to_str().expect("utf8")]);
        let stderr = text(&out.stderr);
        assert!(out.status.success(), "{stderr}");
        stderr
    };
    let first = build();
    assert!(first.contains("no VM needed"), "{first}");
    let read = |p: &str| fs::read_to_string(dest.join(p)).unwrap_or_else(|e| panic!("{p}: {e}"));
    assert_eq!(read("src/a.txt"), "A1", "the tag's tree");
    assert_eq!(read("src/sub/b.txt"), "B1");
    assert_eq!(fs::read_link(dest.join("src/link")).expect("symlink"), Path::new("a.txt"));
    assert!(!dest.join("src/.git").exists(), ".git is dropped by default");
    assert_eq!(read("sub/b.txt"), "B1", "the subdirectory's contents");
    assert!(!dest.join("sub/a.txt").exists());
    assert_eq!(read("kept/a.txt"), "A2", "the remote's HEAD (main)");
    assert!(dest.join("kept/.git").is_dir(), "--keep-git-dir keeps .git");

    // Same commits: every ADD comes from the cache.
    let again = build();
    let adds: Vec<&str> = again.lines().filter(|l| l.contains("] ADD ")).collect();
    assert!(adds.len() == 3 && adds.iter().all(|l| l.ends_with("CACHED")), "{again}");

    // A new commit on main: the steps that follow main rerun, the tag's does not.
    fs::write(work.join("sub/b.txt"), "B2").expect("write");
    git(&work, &["commit", "-q", "-am", "three"]);
    git(&work, &["push", "-q", bare.to_str().expect("utf8"), "main"]);
    git(&bare, &["update-server-info"]);
    let third = build();
    let line = |needle: &str| third.lines().find(|l| l.contains(needle)).unwrap_or_else(|| panic!("no {needle:?}:\n{third}")).to_string();
    assert!(line("repo.git#v1 /src/").ends_with("CACHED"), "{third}");
    assert!(!line("repo.git#main:sub /sub/").ends_with("CACHED"), "{third}");
    assert_eq!(read("sub/b.txt"), "B2");

    let bad = env.context("bad", "FROM scratch\nARG PORT\nADD http://127.0.0.1:$PORT/repo.git#nope /x/\n", &[], false);
    let out = env.kiln(&["build", "--build-arg", &port_arg, bad.to_str().expect("utf8")]);
    harness::assert_clean_error(&out, "no branch or tag \"nope\"");
}
