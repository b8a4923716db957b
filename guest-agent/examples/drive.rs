//! Drives a real guest end to end: boots `images/boot.sh --agent-socket SOCK` under QEMU,
//! accepts the agent's virtio-serial connection and runs a two-step build by hand.
//!
//! Usage: `cargo run -p kiln-guest-agent --example drive [-- EXTRA_KERNEL_ARGS]`
//! (needs images/out/ from images/build.sh and /bin/busybox on the host). Prints timings;
//! exits non-zero on the first failed check. Always kills the QEMU it started.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::unix::net::UnixListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kiln_protocol::{Mux, Request, Response, RunFile, RunMount, RunSpec, PROTOCOL_VERSION};
use tar::{Builder, EntryType, Header};

type R<T> = Result<T, String>;

struct Qemu(Child);

impl Drop for Qemu {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn rootfs_tar() -> R<Vec<u8>> {
    let busybox = std::fs::read("/bin/busybox").map_err(|e| format!("read /bin/busybox: {e}"))?;
    let mut b = Builder::new(Vec::new());
    let h = |kind: EntryType, mode: u32, size: u64| {
        let mut h = Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_size(size);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_700_000_000);
        h
    };
    let e = |e: std::io::Error| e.to_string();
    b.append_data(
        &mut h(EntryType::Directory, 0o755, 0),
        "bin/",
        std::io::empty(),
    )
    .map_err(e)?;
    b.append_data(
        &mut h(EntryType::Regular, 0o755, busybox.len() as u64),
        "bin/busybox",
        busybox.as_slice(),
    )
    .map_err(e)?;
    for applet in ["sh", "echo", "mkdir", "rm", "cat", "ls", "sleep"] {
        b.append_link(
            &mut h(EntryType::Symlink, 0o777, 0),
            format!("bin/{applet}"),
            "busybox",
        )
        .map_err(e)?;
    }
    b.append_data(
        &mut h(EntryType::Directory, 0o755, 0),
        "etc/",
        std::io::empty(),
    )
    .map_err(e)?;
    b.append_data(
        &mut h(EntryType::Regular, 0o644, 4),
        "etc/gone",
        &b"bye\n"[..],
    )
    .map_err(e)?;
    b.into_inner().map_err(e)
}

fn call(mux: &Mux, req: &Request) -> R<Response> {
    mux.call(req, Some(Duration::from_secs(300)))
        .map_err(|e| format!("{req:?}: {e}"))
}

fn expect_done(mux: &Mux, req: &Request) -> R<()> {
    match call(mux, req)? {
        Response::Done => Ok(()),
        other => Err(format!("{req:?}: unexpected {other:?}")),
    }
}

fn send_tar(mux: &Mux, dest: &str, data: &[u8]) -> R<u64> {
    let stream = mux.next_id();
    let m2 = mux.clone();
    let dest2 = dest.to_string();
    let caller = std::thread::spawn(move || {
        call(
            &m2,
            &Request::ReceiveTar {
                dest: dest2,
                stream,
            },
        )
    });
    let mut w = mux.open_writer(stream);
    w.write_all(data).map_err(|e| format!("send tar: {e}"))?;
    w.finish().map_err(|e| format!("finish tar: {e}"))?;
    match caller.join().map_err(|_| "tar caller panicked")?? {
        Response::TarReceived { entries } => Ok(entries),
        other => Err(format!("receive_tar {dest}: {other:?}")),
    }
}

fn run(mux: &Mux, rootfs: &str, script: &str) -> R<(Response, String, String, Duration)> {
    let argv = vec!["/bin/sh".into(), "-c".into(), script.into()];
    run_with(mux, rootfs, argv, vec![], vec![])
}

fn run_with(
    mux: &Mux,
    rootfs: &str,
    argv: Vec<String>,
    mounts: Vec<RunMount>,
    files: Vec<RunFile>,
) -> R<(Response, String, String, Duration)> {
    let (so, se) = (mux.next_id(), mux.next_id());
    let (mut out, mut err) = (mux.open_reader(so), mux.open_reader(se));
    let spec = RunSpec {
        rootfs: rootfs.into(),
        argv,
        env: vec!["PATH=/bin".into()],
        cwd: "/".into(),
        uid: 0,
        gid: 0,
        additional_gids: vec![],
        hostname: "kiln".into(),
        stdout_stream: so,
        stderr_stream: se,
        stdin_stream: None,
        tty: None,
        run_id: None,
        join: None,
        readonly_root: false,
        init: false,
        mounts,
        files,
        network: Default::default(),
    };
    let t = Instant::now();
    let resp = call(mux, &Request::Run(spec))?;
    let elapsed = t.elapsed();
    let (mut o, mut e) = (String::new(), String::new());
    out.read_to_string(&mut o)
        .map_err(|x| format!("stdout: {x}"))?;
    err.read_to_string(&mut e)
        .map_err(|x| format!("stderr: {x}"))?;
    Ok((resp, o, e, elapsed))
}

fn diff(mux: &Mux, upper: &str) -> R<(Vec<u8>, BTreeMap<String, EntryType>)> {
    let stream = mux.next_id();
    let mut r = mux.open_reader(stream);
    let m2 = mux.clone();
    let up = upper.to_string();
    let caller = std::thread::spawn(move || call(&m2, &Request::Diff { upper: up, stream, clamp_mtime: None, lowers: vec![] }));
    let mut data = Vec::new();
    r.read_to_end(&mut data)
        .map_err(|e| format!("diff stream: {e}"))?;
    let resp = caller.join().map_err(|_| "diff caller panicked")??;
    let mut names = BTreeMap::new();
    let mut ar = tar::Archive::new(data.as_slice());
    for entry in ar.entries().map_err(|e| e.to_string())? {
        let entry = entry.map_err(|e| e.to_string())?;
        names.insert(
            String::from_utf8_lossy(&entry.path_bytes()).into_owned(),
            entry.header().entry_type(),
        );
    }
    match resp {
        Response::Diffed { entries } if entries as usize == names.len() => Ok((data, names)),
        other => Err(format!(
            "diff {upper}: {other:?} (tar has {} entries)",
            names.len()
        )),
    }
}

fn check(cond: bool, what: &str) -> R<()> {
    if cond {
        println!("ok: {what}");
        Ok(())
    } else {
        Err(format!("check failed: {what}"))
    }
}

fn main() {
    match drive() {
        Ok(()) => println!("ALL CHECKS PASSED"),
        Err(e) => {
            eprintln!("FAILED: {e}");
            std::process::exit(1);
        }
    }
}

fn drive() -> R<()> {
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let sock = std::env::temp_dir().join(format!("kiln-drive-{}.sock", std::process::id()));
    let _ = std::fs::remove_file(&sock);
    let listener =
        UnixListener::bind(&sock).map_err(|e| format!("bind {}: {e}", sock.display()))?;
    let extra: Vec<String> = std::env::args().skip(1).collect();
    let console =
        std::fs::File::create("/tmp/kiln-drive-console.log").map_err(|e| e.to_string())?;
    let t0 = Instant::now();
    let child = Command::new(repo.join("images/boot.sh"))
        .arg("--agent-socket")
        .arg(&sock)
        .env("KILN_GUEST_APPEND", extra.join(" "))
        .stdin(Stdio::null())
        .stdout(console.try_clone().map_err(|e| e.to_string())?)
        .stderr(console)
        .spawn()
        .map_err(|e| format!("start images/boot.sh: {e}"))?;
    let mut qemu = Qemu(child);
    let (conn, _) = listener.accept().map_err(|e| format!("accept: {e}"))?;
    let _ = std::fs::remove_file(&sock);
    let mux = Mux::host(conn.try_clone().map_err(|e| e.to_string())?, conn);

    match call(
        &mux,
        &Request::Hello {
            versions: vec![PROTOCOL_VERSION],
            entropy: None,
            now_ns: None,
        },
    )? {
        Response::Hello {
            version,
            kernel,
            agent_build_id,
        } => {
            println!(
                "hello after {:?}: v{version}, kernel {kernel}, agent {agent_build_id}",
                t0.elapsed()
            )
        }
        other => return Err(format!("hello: {other:?}")),
    }
    let tar = rootfs_tar()?;
    let t = Instant::now();
    let n = send_tar(&mux, "/run/kiln/l0", &tar)?;
    println!(
        "receive_tar {} KiB, {n} entries: {:?}",
        tar.len() / 1024,
        t.elapsed()
    );

    // Step 1: a RUN on top of the busybox layer.
    let mount = |lowers: Vec<String>, n: u32| Request::MountOverlay {
        lowers,
        upper: format!("/run/kiln/u{n}"),
        work: format!("/run/kiln/w{n}"),
        target: format!("/run/kiln/m{n}"),
    };
    expect_done(&mux, &mount(vec!["/run/kiln/l0".into()], 1))?;
    let (resp, out, err, took) = run(
        &mux,
        "/run/kiln/m1",
        "echo hi; echo err >&2; mkdir /a; echo x > /a/f; exit 3",
    )?;
    println!("run round trip: {took:?}");
    check(
        resp == Response::Exited {
            code: Some(3),
            signal: None,
        },
        &format!("exit code 3 ({resp:?})"),
    )?;
    check(
        out == "hi\n" && err == "err\n",
        &format!("stdout {out:?} / stderr {err:?}"),
    )?;
    let t = Instant::now();
    let (layer1, names) = diff(&mux, "/run/kiln/u1")?;
    println!("diff: {:?} {names:?}", t.elapsed());
    check(
        names.keys().map(String::as_str).eq(["a/", "a/f"]),
        "layer 1 is exactly a/, a/f (no proc/dev/sys)",
    )?;
    expect_done(
        &mux,
        &Request::Unmount {
            target: "/run/kiln/m1".into(),
        },
    )?;

    // Step 2: delete a file of a lower layer -> whiteout.
    send_tar(&mux, "/run/kiln/l1", &layer1)?;
    expect_done(
        &mux,
        &mount(vec!["/run/kiln/l1".into(), "/run/kiln/l0".into()], 2),
    )?;
    let (resp, out, _, _) = run(&mux, "/run/kiln/m2", "cat /a/f; rm /etc/gone; ls /etc")?;
    check(
        resp == Response::Exited {
            code: Some(0),
            signal: None,
        } && out == "x\n",
        &format!("step 2 sees layer 1 ({resp:?}, {out:?})"),
    )?;
    let (_, names) = diff(&mux, "/run/kiln/u2")?;
    check(
        names.get("etc/.wh.gone") == Some(&EntryType::Regular),
        &format!("whiteout entry in {names:?}"),
    )?;
    expect_done(
        &mux,
        &Request::Unmount {
            target: "/run/kiln/m2".into(),
        },
    )?;

    // FROM scratch + RUN: exec failure is 127 with a message, and nothing is left behind.
    expect_done(&mux, &mount(vec![], 3))?;
    let (resp, _, err, _) = run(&mux, "/run/kiln/m3", "true")?;
    check(
        resp == Response::Exited {
            code: Some(127),
            signal: None,
        } && err.contains("not found"),
        &format!("scratch exec failure ({resp:?}, {err:?})"),
    )?;
    let (_, names) = diff(&mux, "/run/kiln/u3")?;
    check(
        names.is_empty(),
        &format!("scratch layer is empty ({names:?})"),
    )?;

    // RUN --mount and a heredoc script in /dev/pipes: nothing of them reaches the layer.
    expect_done(&mux, &mount(vec!["/run/kiln/l0".into()], 4))?;
    expect_done(&mux, &Request::MakeDirs { paths: vec!["/run/kiln/cache/0".into()] })?;
    let bind = |target: &str, source: &str, readonly| RunMount::Bind {
        target: target.into(),
        source: source.into(),
        readonly,
    };
    let mounts = vec![
        RunMount::Tmpfs { target: "/tmp/t".into(), size_bytes: Some(1 << 20) },
        RunMount::Secret {
            target: "/run/secrets/x".into(),
            data: b"s3cret".to_vec(),
            mode: 0o400,
            uid: 0,
            gid: 0,
        },
        bind("/cache", "/run/kiln/cache/0", false),
        bind("/stage", "/run/kiln/l0", true),
    ];
    let script = "#!/bin/sh\ncat /run/secrets/x; echo; echo t > /tmp/t/f; cat /tmp/t/in; echo c > /cache/c\nls /stage/etc; echo no > /stage/x 2>/dev/null || echo ro\n";
    let files = vec![
        RunFile { path: "/dev/pipes/EOF".into(), data: script.into(), mode: 0o755, uid: 0, gid: 0 },
        RunFile { path: "/tmp/t/in".into(), data: b"in\n".to_vec(), mode: 0o644, uid: 0, gid: 0 },
    ];
    let (resp, out, err, took) =
        run_with(&mux, "/run/kiln/m4", vec!["/dev/pipes/EOF".into()], mounts, files)?;
    println!("run with mounts: {took:?}");
    check(
        resp == Response::Exited { code: Some(0), signal: None } && out == "s3cret\nin\ngone\nro\n",
        &format!("mounts and files seen by the step ({resp:?}, {out:?}, {err:?})"),
    )?;
    let (_, names) = diff(&mux, "/run/kiln/u4")?;
    check(names.is_empty(), &format!("RUN --mount layer is empty ({names:?})"))?;
    let (_, out, _, _) = run_with(
        &mux,
        "/run/kiln/m4",
        vec!["/bin/cat".into(), "/c/c".into()],
        vec![bind("/c", "/run/kiln/cache/0", true)],
        vec![],
    )?;
    check(out == "c\n", &format!("cache writes land in the cache dir ({out:?})"))?;
    expect_done(&mux, &Request::Unmount { target: "/run/kiln/m4".into() })?;

    // Errors are answers, not crashes.
    let bad = call(
        &mux,
        &Request::Unmount {
            target: "/nope".into(),
        },
    )?;
    check(
        matches!(bad, Response::Error { .. }),
        &format!("bad unmount is an Error ({bad:?})"),
    )?;

    let t = Instant::now();
    expect_done(&mux, &Request::PowerOff)?;
    for _ in 0..100 {
        if let Ok(Some(status)) = qemu.0.try_wait() {
            println!("qemu exited {:?} after power_off ({status})", t.elapsed());
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    println!("qemu still running 10 s after power_off; killing it");
    Ok(())
}
