//! Root test of `RUN --network=none`: the process gets a network namespace with only `lo`, up.

use kiln_protocol::{Network, Response};

use super::{busybox_tar, receive_tar, run_with, Scratch};

#[test]
fn network_none_leaves_only_loopback() {
    let Some(s) = Scratch::new("netnone") else {
        return;
    };
    let Some(rootfs) = busybox_tar() else { return };
    let root = s.0.join("root");
    receive_tar(rootfs.as_slice(), &root).expect("receive");
    let script = "cat /proc/net/dev; echo flags $(cat /sys/class/net/lo/flags)";
    let r = run_with(&root, &["sh", "-c", script], "/", |spec| {
        spec.network = Network::None
    });
    assert_eq!(
        r.resp,
        Ok(Response::Exited {
            code: Some(0),
            signal: None
        }),
        "{}",
        r.stderr
    );
    let devices: Vec<&str> = r
        .stdout
        .lines()
        .filter_map(|l| l.split_once(':').map(|(name, _)| name.trim()))
        .filter(|name| !name.contains('|'))
        .collect();
    assert_eq!(devices, ["lo"], "{}", r.stdout);
    let flags = r.stdout.lines().last().and_then(|l| l.strip_prefix("flags 0x"));
    let flags = flags.and_then(|f| u32::from_str_radix(f.trim(), 16).ok());
    assert_eq!(flags.map(|f| f & 1), Some(1), "lo is up: {}", r.stdout);
}
