use super::*;
use crate::Store;
use tar::EntryType;

/// An entry of a test layer.
enum E<'a> {
    Dir(&'a str),
    File(&'a str, &'a str),
    Sym(&'a str, &'a str),
    Link(&'a str, &'a str),
}

fn tar_of(entries: &[E<'_>]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        let mut h = tar::Header::new_gnu();
        h.set_mode(0o644);
        h.set_uid(7);
        h.set_gid(8);
        h.set_mtime(1_700_000_000);
        let (path, data) = match e {
            E::Dir(p) => {
                h.set_entry_type(EntryType::Directory);
                h.set_mode(0o700);
                (p, "")
            }
            E::File(p, c) => {
                h.set_entry_type(EntryType::Regular);
                (p, *c)
            }
            E::Sym(p, t) | E::Link(p, t) => {
                h.set_entry_type(if matches!(e, E::Sym(..)) { EntryType::Symlink } else { EntryType::Link });
                h.set_size(0);
                b.append_link(&mut h, p, t).expect("link");
                continue;
            }
        };
        h.set_size(data.len() as u64);
        b.append_data(&mut h, path, data.as_bytes()).expect("entry");
    }
    b.into_inner().expect("tar")
}

/// A store holding `layers` (each ingested, so checked as any layer is).
fn stored(layers: &[&[E<'_>]]) -> (tempfile::TempDir, Store, Vec<Digest>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path()).expect("store");
    let digests = layers.iter().map(|l| store.ingest_layer(tar_of(l).as_slice()).expect("layer").digest).collect();
    (dir, store, digests)
}

fn view(layers: &[&[E<'_>]]) -> RootFs {
    let (dir, store, digests) = stored(layers);
    let ingest = dir.path().join("ingest");
    let fs = RootFs::from_layers_in(&|d| store.open_blob(d), &digests, &ingest).expect("rootfs");
    // On unix the flattened tar's temp file is unlinked at once; Windows keeps the name of an
    // open delete-on-close file until it is closed.
    if cfg!(unix) {
        assert_eq!(std::fs::read_dir(&ingest).expect("ls").count(), 0, "the temp file has no name");
    }
    fs
}

fn read(fs: &RootFs, path: &str) -> Option<String> {
    fs.read_file(path, 1024).expect("read").map(|b| String::from_utf8(b).expect("utf-8"))
}

fn names(nodes: Vec<&Node>) -> Vec<String> {
    nodes.iter().map(|n| n.path.display().to_string()).collect()
}

#[test]
fn whiteouts_and_opaque_dirs_across_layers() {
    let fs = view(&[
        &[E::Dir("etc/"), E::File("etc/a", "a0"), E::File("etc/gone", "g"), E::Dir("opq/"), E::File("opq/old", "o"), E::Dir("x/"), E::File("x/y", "y"), E::Sym("s", "/etc")],
        &[E::File("etc/a", "a1"), E::File("etc/.wh.gone", ""), E::Dir("opq/"), E::File("opq/.wh..wh..opq", ""), E::File("opq/new", "n"), E::File("x", "now a file"), E::File("s/f", "under s")],
    ]);
    assert_eq!(read(&fs, "/etc/a").as_deref(), Some("a1"));
    assert_eq!(fs.resolve("/etc/gone", true).expect("resolve"), None);
    assert_eq!(names(fs.children(Path::new("opq"))), ["opq/new"]);
    assert_eq!(read(&fs, "x").as_deref(), Some("now a file"));
    assert_eq!(fs.resolve("x/y", true).expect("resolve"), None);
    // The upper layer's implied directory `s` hides the lower symlink `s`.
    assert_eq!(fs.node(Path::new("s")).map(|n| n.kind), Some(NodeKind::Dir));
    assert_eq!(read(&fs, "s/f").as_deref(), Some("under s"));
    assert_eq!(names(fs.children(Path::new("/"))), ["etc", "opq", "s", "x"]);
}

#[test]
fn implicit_parent_dirs_exist() {
    let fs = view(&[&[E::File("a/b/c", "c"), E::File("z", "z")], &[E::Dir("q/"), E::File("a/b/d", "d"), E::Dir("a/b/")]]);
    let root = fs.node(Path::new("")).expect("root");
    assert_eq!((root.kind, root.mode), (NodeKind::Dir, 0o755));
    let a = fs.node(Path::new("/a")).expect("a");
    assert_eq!((a.kind, a.mode, a.uid, a.gid), (NodeKind::Dir, 0o755, 0, 0));
    // An explicit entry sets a directory's metadata, and it keeps its children.
    let b = fs.node(Path::new("a/b")).expect("b");
    assert_eq!((b.kind, b.mode, b.uid, b.gid, b.mtime), (NodeKind::Dir, 0o700, 7, 8, 1_700_000_000));
    assert_eq!(names(fs.children(Path::new("a"))), ["a/b"]);
    assert_eq!(names(fs.children(Path::new("a/b"))), ["a/b/c", "a/b/d"]);
    assert_eq!(names(fs.children(Path::new(""))), ["a", "q", "z"]);
    assert!(fs.children(Path::new("z")).is_empty());
    let c = fs.node(Path::new("a/b/c")).expect("c");
    assert_eq!((c.kind, c.size, c.mode), (NodeKind::File, 1, 0o644));
}

#[test]
fn symlinks_resolve_inside_the_root() {
    let fs = view(&[&[
        E::Dir("etc/"),
        E::File("etc/passwd", "root:x:0:0"),
        E::Sym("abs", "/etc"),
        E::Sym("rel", "etc"),
        E::Sym("chain", "abs"),
        E::Sym("up", "../../../etc"),
        E::Dir("d/"),
        E::Sym("d/back", "../etc/passwd"),
        E::Sym("d/dots", "./../../rel/./"),
        E::Sym("loop1", "loop2"),
        E::Sym("loop2", "loop1"),
        E::Sym("dangling", "/nowhere"),
    ]]);
    let r = |p: &str, follow: bool| fs.resolve(p, follow).expect(p).map(|p| p.display().to_string());
    for p in ["/abs/passwd", "rel/passwd", "chain/passwd", "up/passwd", "d/back", "/../../etc/passwd", "./d/../etc//passwd", "d/dots/passwd"] {
        assert_eq!(r(p, true).as_deref(), Some("etc/passwd"), "{p}");
    }
    assert_eq!(r("d/back", false).as_deref(), Some("d/back"));
    assert_eq!(r("/abs", false).as_deref(), Some("abs"));
    assert_eq!(r("/abs", true).as_deref(), Some("etc"));
    assert_eq!(r("/abs/", false).as_deref(), Some("etc"), "a trailing slash follows");
    assert_eq!(r("/", true).as_deref(), Some(""));
    assert_eq!(r("..", true).as_deref(), Some(""));
    assert_eq!(r("loop1", false).as_deref(), Some("loop1"));
    assert!(fs.resolve("loop1", true).is_err());
    assert!(fs.resolve("loop1/x", false).is_err());
    assert_eq!(r("dangling", true), None);
    assert_eq!(r("dangling", false).as_deref(), Some("dangling"));
    assert_eq!(r("etc/passwd/x", true), None, "a file used as a directory");
    assert_eq!(r("etc/passwd/", true), None);
    assert_eq!(r("missing/x", true), None);
    assert_eq!(read(&fs, "chain/passwd").as_deref(), Some("root:x:0:0"));
    assert_eq!(fs.node(Path::new("abs")).and_then(|n| n.link.clone()), Some(PathBuf::from("/etc")));
}

#[test]
fn at_most_forty_symlinks_are_followed() {
    let names: Vec<(String, String)> = (0..=MAX_SYMLINK_HOPS).map(|i| (format!("h{i}"), if i == MAX_SYMLINK_HOPS { "f".into() } else { format!("h{}", i + 1) })).collect();
    let mut entries: Vec<E<'_>> = names.iter().map(|(p, t)| E::Sym(p, t)).collect();
    entries.push(E::File("f", "end"));
    let fs = view(&[&entries]);
    assert_eq!(read(&fs, "h1").as_deref(), Some("end"), "40 hops");
    assert!(fs.resolve("h0", true).is_err(), "41 hops");
}

#[test]
fn hardlinks_read_their_targets_bytes() {
    let fs = view(&[
        &[E::Dir("bin/"), E::File("bin/a", "old"), E::Link("bin/b", "bin/a"), E::Link("bin/c", "bin/a"), E::File("d", "dd"), E::Link("e", "d"), E::Sym("s", "d"), E::Link("t", "s")],
        &[E::File("bin/a", "new"), E::File(".wh.d", ""), E::File("x", "xx"), E::Link("y", "x")],
    ]);
    // Same layer, target not replaced: a hardlink to it.
    let y = fs.node(Path::new("y")).expect("y");
    assert_eq!((y.kind, y.link.as_deref(), y.size, y.mode), (NodeKind::Hardlink, Some(Path::new("x")), 2, 0o644));
    assert_eq!(read(&fs, "y").as_deref(), Some("xx"));
    // Targets replaced or deleted by a higher layer: the links keep the old bytes.
    assert_eq!(read(&fs, "bin/a").as_deref(), Some("new"));
    assert_eq!(read(&fs, "bin/b").as_deref(), Some("old"));
    assert_eq!(read(&fs, "bin/c").as_deref(), Some("old"));
    assert_eq!(read(&fs, "e").as_deref(), Some("dd"));
    assert_eq!(fs.resolve("d", true).expect("resolve"), None);
    // A hardlink to a symlink is that symlink.
    let t = fs.node(Path::new("t")).expect("t");
    assert_eq!((t.kind, t.link.as_deref()), (NodeKind::Symlink, Some(Path::new("d"))));
    let mut bytes = String::new();
    fs.open(y).expect("open").read_to_string(&mut bytes).expect("read");
    assert_eq!(bytes, "xx");
    assert!(fs.open(fs.node(Path::new("bin")).expect("bin")).is_err());
}

#[test]
fn read_file_refuses_more_than_the_limit() {
    let fs = view(&[&[E::File("etc/passwd", "0123456789"), E::Sym("p", "etc/passwd"), E::Link("h", "etc/passwd")]]);
    assert!(matches!(fs.read_file("/etc/passwd", 9), Err(StoreError::Unsupported(_))));
    assert_eq!(fs.read_file("/p", 10).expect("read").as_deref(), Some(&b"0123456789"[..]));
    assert_eq!(fs.read_file("h", 10).expect("read").as_deref(), Some(&b"0123456789"[..]));
    assert_eq!(fs.read_file("/etc", 10).expect("read"), None, "a directory");
    assert_eq!(fs.read_file("/nope", 10).expect("read"), None);
}

#[test]
fn hostile_and_truncated_layers_are_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path()).expect("store");
    let open = |d: &Digest| store.open_blob(d);
    // Stored as raw blobs, past ingest's checks, as a corrupt or hostile store would have them.
    let mut truncated = tar_of(&[E::File("a", &"y".repeat(4096))]);
    truncated.truncate(2048);
    let mut h = tar::Header::new_old();
    h.as_old_mut().name[..4].copy_from_slice(b"../a");
    h.set_entry_type(EntryType::Regular);
    h.set_size(0);
    h.set_cksum();
    let mut b = tar::Builder::new(Vec::new());
    b.append(&h, io::empty()).expect("append");
    let dotdot = b.into_inner().expect("tar");
    for (what, bytes) in [("truncated", truncated), ("dotdot", dotdot)] {
        let digest = store.write_blob(&bytes).expect("blob");
        let err = RootFs::from_layers(&open, std::slice::from_ref(&digest)).err().expect(what);
        assert!(matches!(err, StoreError::HostileLayer(_)), "{what}: {err}");
    }
}
