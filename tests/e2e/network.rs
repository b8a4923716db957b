//! RUN steps and the network, through the real CLI and a real guest: a RUN reaches an HTTP
//! server the test runs on the host (at 10.0.2.2, QEMU's user-mode NAT; named
//! `host.docker.internal` in the step's own /etc/hosts), `--network=none` isolates it, and the
//! per-step /etc/hosts and /etc/resolv.conf never reach a layer, not even as an unchanged /etc;
//! `kiln build --network none` isolates every RUN that does not say otherwise.

mod harness;

use std::fs;
use std::io::{Read, Write};
use std::net::TcpListener;

use harness::{text, TestEnv};

const BODY: &str = "hello from the host 4711\n";

/// Serves BODY to every connection until the test ends.
fn serve() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let mut buf = [0u8; 4096];
            let _ = conn.read(&mut buf);
            let reply = format!("HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n{BODY}", BODY.len());
            let _ = conn.write_all(reply.as_bytes());
        }
    });
    port
}

const DOCKERFILE: &str = r#"FROM scratch
COPY busybox /bin/busybox
RUN ["/bin/busybox", "--install", "-s", "/bin"]
RUN mkdir -p /etc && echo kept > /etc/kept
ARG PORT
RUN wget -q -O /by-ip http://10.0.2.2:$PORT/hello
RUN --network=none wget -q -T 3 -O /none http://10.0.2.2:$PORT/hello; echo $? > /none-status; rm -f /none; tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d " " > /none-devs
RUN --network=host grep -h host.docker.internal /etc/hosts > /hosts-line; cat /etc/resolv.conf > /resolv-seen
"#;

/// Entry names of each layer of a saved image, in order.
fn layer_entries(env: &TestEnv, image: &str) -> Vec<Vec<String>> {
    let files = harness::saved_image(env, image);
    let manifest: serde_json::Value = serde_json::from_slice(&files["manifest.json"]).expect("manifest.json");
    let layers = manifest[0]["Layers"].as_array().expect("Layers");
    layers
        .iter()
        .map(|l| {
            let mut ar = tar::Archive::new(files[l.as_str().expect("layer path")].as_slice());
            ar.entries().expect("entries").map(|e| e.expect("entry").path().expect("path").display().to_string()).collect()
        })
        .collect()
}

#[test]
fn run_reaches_the_host_and_network_none_isolates() {
    let env = TestEnv::new("network");
    let port = serve().to_string();
    let ctx = env.context("ctx", DOCKERFILE, &[], true);
    let dest = env.dir.path().join("rootfs");
    env.give_to_user(env.dir.path());
    let out_arg = format!("type=local,dest={}", dest.display());
    let port_arg = format!("PORT={port}");
    let out = env.kiln(&["build", "--build-arg", &port_arg, "-o", &out_arg, "-t", "net", ctx.to_str().expect("utf8")]);
    assert!(out.status.success(), "build failed:\n{}", text(&out.stderr));

    let read = |name: &str| fs::read_to_string(dest.join(name)).unwrap_or_else(|e| panic!("/{name}: {e}"));
    assert_eq!(read("by-ip"), BODY, "the default network reaches the host");
    assert_ne!(read("none-status").trim(), "0", "--network=none must not reach the host");
    // Only loopback (and the kernel's per-namespace sit0 tunnel stub, always down) with none.
    let devs = read("none-devs");
    let devs: Vec<_> = devs.split_whitespace().filter(|d| *d != "sit0").collect();
    assert_eq!(devs, ["lo"], "only loopback with --network=none");
    assert_eq!(read("hosts-line").trim(), "10.0.2.2\thost.docker.internal host.kiln.internal");
    assert_eq!(read("resolv-seen"), "nameserver 10.0.2.3\n");
    // The step's hosts/resolv.conf were mounts: the image keeps its own /etc as it was.
    let etc: Vec<_> = fs::read_dir(dest.join("etc")).expect("etc").map(|e| e.expect("entry").file_name()).collect();
    assert_eq!(etc, ["kept"], "no hosts/resolv.conf stubs left in /etc");

    let layers = layer_entries(&env, "net");
    let last3: Vec<_> = layers.iter().rev().take(3).rev().cloned().collect();
    assert_eq!(
        last3,
        [vec!["by-ip".to_string()], vec!["none-devs".into(), "none-status".into()], vec!["hosts-line".into(), "resolv-seen".into()]],
        "RUN layers carry only what the step wrote (no copied-up etc/): {layers:?}"
    );
    // `kiln build --network none`: RUN steps that do not say are isolated too.
    let isolated = "FROM scratch\nCOPY busybox /bin/busybox\nRUN [\"/bin/busybox\", \"--install\", \"-s\", \"/bin\"]\nARG PORT\n\
        RUN wget -q -T 3 -O /x http://10.0.2.2:$PORT/hello; echo $? > /status; rm -f /x\n";
    let ctx2 = env.context("ctx2", isolated, &[], true);
    let dest2 = env.dir.path().join("rootfs2");
    let out_arg2 = format!("type=local,dest={}", dest2.display());
    let out = env.kiln(&["build", "--network", "none", "--build-arg", &port_arg, "-o", &out_arg2, ctx2.to_str().expect("utf8")]);
    assert!(out.status.success(), "build failed:\n{}", text(&out.stderr));
    assert_ne!(fs::read_to_string(dest2.join("status")).expect("status").trim(), "0", "--network none isolates every RUN");
    assert!(env.vm_processes().is_empty(), "left-over VMs: {:?}", env.vm_processes());
}

/// `KILN_HOST_LOOPBACK=0` cuts RUN steps and containers off from the host's loopback services
/// (10.0.2.2), while the rest of the network stays; by default they reach them.
#[test]
fn host_loopback_can_be_cut_off_for_untrusted_builds_and_containers() {
    let env = TestEnv::new("hostloop");
    let port = serve();
    let port_arg = format!("PORT={port}");
    let dockerfile = "FROM scratch\nCOPY busybox /bin/busybox\nRUN [\"/bin/busybox\", \"--install\", \"-s\", \"/bin\"]\nARG PORT\n\
        RUN timeout 10 wget -q -O /x http://10.0.2.2:$PORT/hello; echo $? > /status; rm -f /x\n";
    let ctx = env.context("ctx", dockerfile, &[], true);
    let status = |vars: &[(&str, &str)], tag: &str| -> String {
        let dest = env.dir.path().join(format!("out-{tag}"));
        let out_arg = format!("type=local,dest={}", dest.display());
        let out = env.kiln_with(&["build", "--no-cache", "--build-arg", &port_arg, "-o", &out_arg, ctx.to_str().expect("utf8")], vars);
        assert!(out.status.success(), "build failed:\n{}", text(&out.stderr));
        fs::read_to_string(dest.join("status")).expect("status").trim().to_string()
    };
    assert_eq!(status(&[], "default"), "0", "by default a RUN reaches the host's loopback");
    assert_ne!(status(&[("KILN_HOST_LOOPBACK", "0")], "cut"), "0", "KILN_HOST_LOOPBACK=0 cuts it off");
    // A container too. (busybox wget's -T crashes on a connection that succeeds: `timeout`.)
    harness::containers::busybox_image(&env);
    let url = format!("http://10.0.2.2:{port}/hello");
    let reach = |vars: &[(&str, &str)]| {
        let out = env.kiln_with(&["run", "--rm", "bb", "timeout", "10", "wget", "-q", "-O", "-", &url], vars);
        text(&out.stdout)
    };
    assert_eq!(reach(&[]), BODY);
    assert_eq!(reach(&[("KILN_HOST_LOOPBACK", "0")]), "", "the container cannot reach it either");
    // Not even as root by taking the route away: it has no CAP_NET_ADMIN (nor CAP_NET_RAW).
    let script = format!("ip route del unreachable 10.0.2.2 2>/dev/null; ip route del 10.0.2.2 2>/dev/null; timeout 10 wget -q -O - {url}");
    let out = env.kiln_with(&["run", "--rm", "bb", "sh", "-c", &script], &[("KILN_HOST_LOOPBACK", "0")]);
    assert!(!text(&out.stdout).contains(BODY.trim()), "a root process undid the cut: {}", text(&out.stdout));
    harness::assert_clean_error(&env.kiln_with(&["build", ctx.to_str().expect("utf8")], &[("KILN_HOST_LOOPBACK", "maybe")]), "KILN_HOST_LOOPBACK");
    assert!(env.vm_processes().is_empty(), "left-over VMs: {:?}", env.vm_processes());
}

/// `KILN_GUEST_NET=dhcp`: the agent leases the guest's address from the NAT's DHCP server
/// (slirp's here; Apple's NAT under Virtualization.framework, which hands out addresses no
/// other way) instead of taking it from the kernel command line, and RUN steps reach the host
/// as before. A value kiln does not know is one clear error.
#[test]
fn the_guest_can_lease_its_address_by_dhcp() {
    let env = TestEnv::new("network-dhcp");
    let port = serve().to_string();
    let dockerfile = "FROM scratch\nCOPY busybox /bin/busybox\nRUN [\"/bin/busybox\", \"--install\", \"-s\", \"/bin\"]\nARG PORT\n\
        RUN wget -q -O /by-ip http://10.0.2.2:$PORT/hello; ip -4 addr show > /addr; ip route > /route; cat /etc/resolv.conf > /resolv\n";
    let ctx = env.context("ctx", dockerfile, &[], true);
    let dest = env.dir.path().join("rootfs");
    env.give_to_user(env.dir.path());
    let out_arg = format!("type=local,dest={}", dest.display());
    let port_arg = format!("PORT={port}");
    let args = ["build", "--build-arg", &port_arg, "-o", &out_arg, ctx.to_str().expect("utf8")];
    let out = env.kiln_with(&args, &[("KILN_GUEST_NET", "dhcp")]);
    assert!(out.status.success(), "build failed:\n{}", text(&out.stderr));
    let read = |name: &str| fs::read_to_string(dest.join(name)).unwrap_or_else(|e| panic!("/{name}: {e}"));
    assert_eq!(read("by-ip"), BODY, "a leased address reaches the host");
    // The DHCP path's slirp leases from .20 (the static address is .15).
    assert!(read("addr").contains("inet 10.0.2.20/24"), "slirp's lease: {}", read("addr"));
    assert!(read("route").starts_with("default via 10.0.2.2"), "the lease's router: {}", read("route"));
    assert_eq!(read("resolv"), "nameserver 10.0.2.3\n", "the lease's DNS server");
    let uncached = ["build", "--no-cache", "--build-arg", &port_arg, ctx.to_str().expect("utf8")];
    harness::assert_clean_error(&env.kiln_with(&uncached, &[("KILN_GUEST_NET", "bootp")]), "KILN_GUEST_NET");
    assert!(env.vm_processes().is_empty(), "left-over VMs: {:?}", env.vm_processes());
}
