use super::*;
use std::fs;
use std::io::Read;
use std::os::unix::fs::symlink;

fn spec<'a>(srcs: &'a [&'a str], dst: &'a str, workdir: &'a str, chmod: Option<&'a Chmod>) -> CopySpec<'a> {
    CopySpec {
        srcs: srcs.iter().map(|s| Src::Path(s)).collect(),
        dst,
        workdir,
        chmod,
        owner: None,
        clamp_mtime: None,
        parents: false,
        exclude: None,
        now: 0,
    }
}

fn copy(ctx: &Path, srcs: &[&str], dst: &str, workdir: &str, chmod: Option<&Chmod>) -> io::Result<Vec<u8>> {
    let fs = ContextFs::new(ctx, None)?;
    write_copy(&fs, &spec(srcs, dst, workdir, chmod), Dest::Literal, Vec::new())
}

fn entries(tar: &[u8]) -> Vec<(String, u32)> {
    let mut a = tar::Archive::new(tar);
    a.entries()
        .expect("entries")
        .map(|e| {
            let mut e = e.expect("entry");
            let mut s = String::new();
            let _ = e.read_to_string(&mut s);
            (e.path().expect("path").display().to_string(), e.header().mode().expect("mode"))
        })
        .collect()
}

fn names(tar: &[u8]) -> Vec<String> {
    entries(tar).into_iter().map(|e| e.0).collect()
}

#[test]
fn files_dirs_and_symlinks() {
    let ctx = tempfile::tempdir().expect("tempdir");
    fs::write(ctx.path().join("a"), "A").expect("write");
    fs::create_dir(ctx.path().join("d")).expect("mkdir");
    fs::write(ctx.path().join("d/f"), "F").expect("write");
    symlink("/etc/passwd", ctx.path().join("d/l")).expect("symlink");
    let tar = copy(ctx.path(), &["a"], "/bin/", "/", None).expect("copy");
    assert_eq!(names(&tar), vec!["bin", "bin/a"]);
    let m = Chmod::Octal(0o700);
    let tar = copy(ctx.path(), &["d"], "/srv", "/", Some(&m)).expect("copy");
    assert_eq!(entries(&tar), vec![("srv".into(), 0o700), ("srv/f".into(), 0o700), ("srv/l".into(), 0o777)]);
    let m = Chmod::Octal(0o750);
    let tar = copy(ctx.path(), &["a"], "renamed", "/w", Some(&m)).expect("copy");
    assert_eq!(entries(&tar), vec![("w/renamed".into(), 0o750)]);
}

#[test]
fn wildcards_match_per_component() {
    let ctx = tempfile::tempdir().expect("tempdir");
    for f in ["x.txt", "y.txt", "z.md", "sub/a.txt", "sub/b.md"] {
        let p = ctx.path().join(f);
        fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        fs::write(&p, "x").expect("write");
    }
    let tar = copy(ctx.path(), &["*.txt"], "/out", "/", None).expect("copy");
    assert_eq!(names(&tar), vec!["out", "out/x.txt", "out/y.txt"], "two matches make the destination a directory");
    let tar = copy(ctx.path(), &["s*/*.md"], "/o/", "/", None).expect("copy");
    assert_eq!(names(&tar), vec!["o", "o/b.md"]);
    let e = copy(ctx.path(), &["*.none"], "/o/", "/", None).expect_err("no match");
    assert!(e.to_string().contains("no source files"), "{e}");
}

#[test]
fn dockerignore_hides_paths_and_exceptions_reinclude() {
    let ctx = tempfile::tempdir().expect("tempdir");
    for f in ["app/main.c", "app/notes.md", "app/README.md", "app/build/out.o", "app/logs/x.log", "secret.key"] {
        let p = ctx.path().join(f);
        fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        fs::write(&p, "x").expect("write");
    }
    let ig = Dockerignore::parse("*.key\napp/**/*.md\n!app/README.md\napp/build\napp/logs\n!app/logs/x.log\n").expect("ignore");
    let src = ContextFs::new(ctx.path(), Some(&ig)).expect("ctx");
    let tar = write_copy(&src, &spec(&["app"], "/src", "/", None), Dest::Literal, Vec::new()).expect("copy");
    assert_eq!(names(&tar), vec!["src", "src/README.md", "src/logs", "src/logs/x.log", "src/main.c"]);
    let e = write_copy(&src, &spec(&["secret.key"], "/", "/", None), Dest::Literal, Vec::new()).expect_err("excluded");
    assert!(e.to_string().contains("excluded by .dockerignore"), "{e}");
    // --exclude, relative to the copied directory.
    let ex = Dockerignore::parse("*.md\n").expect("exclude");
    let src = ContextFs::new(ctx.path(), None).expect("ctx");
    let mut s = spec(&["app"], "/src", "/", None);
    s.exclude = Some(&ex);
    let tar = write_copy(&src, &s, Dest::Literal, Vec::new()).expect("copy");
    assert_eq!(names(&tar), vec!["src", "src/build", "src/build/out.o", "src/logs", "src/logs/x.log", "src/main.c"]);
}

#[test]
fn parents_and_inline_files() {
    let ctx = tempfile::tempdir().expect("tempdir");
    fs::create_dir_all(ctx.path().join("a/b")).expect("mkdir");
    fs::write(ctx.path().join("a/b/f"), "F").expect("write");
    let src = ContextFs::new(ctx.path(), None).expect("ctx");
    let mut s = spec(&["a/b/f"], "/dst/", "/", None);
    s.parents = true;
    let tar = write_copy(&src, &s, Dest::Literal, Vec::new()).expect("copy");
    assert_eq!(names(&tar), vec!["dst", "dst/a", "dst/a/b", "dst/a/b/f"]);
    let s = CopySpec { srcs: vec![Src::Inline { name: "EOF", data: b"hello\n" }], ..spec(&[], "/etc/conf", "/", None) };
    let tar = write_copy(&src, &s, Dest::Literal, Vec::new()).expect("copy");
    assert_eq!(entries(&tar), vec![("etc/conf".into(), 0o644)]);
}

#[test]
fn escapes_and_bad_sources_are_refused() {
    let outer = tempfile::tempdir().expect("tempdir");
    let ctx = outer.path().join("ctx");
    fs::create_dir(&ctx).expect("mkdir");
    fs::write(outer.path().join("secret"), "s").expect("write");
    symlink("../secret", ctx.join("link")).expect("symlink");
    fs::write(ctx.join("a"), "A").expect("write");
    assert!(copy(&ctx, &["link"], "/x", "/", None).is_err());
    // `..` is clamped at the context root: ../secret means <context>/secret, which is absent.
    assert!(copy(&ctx, &["../secret"], "/x", "/", None).is_err());
    assert!(copy(&ctx, &["missing"], "/x", "/", None).is_err());
    assert!(copy(&ctx, &["a", "a"], "/x", "/", None).is_err());
    assert!(copy(&ctx, &["a"], "/", "/", None).is_ok(), "a file into / by trailing slash");
    // SOURCE_DATE_EPOCH: entries are dated no later than the clamp.
    let src = ContextFs::new(&ctx, None).expect("ctx");
    let mut s = spec(&["a"], "/x", "/", None);
    s.clamp_mtime = Some(1000);
    let tar = write_copy(&src, &s, Dest::Literal, Vec::new()).expect("copy");
    let mut a = tar::Archive::new(tar.as_slice());
    let mtimes: Vec<u64> = a.entries().expect("entries").map(|e| e.expect("entry").header().mtime().expect("mtime")).collect();
    assert_eq!(mtimes, vec![1000]);
}
