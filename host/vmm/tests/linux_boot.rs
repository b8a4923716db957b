//! Full boot of kiln's guest (images/out/kernel + initramfs.cpio) under the built-in VMM, and
//! the probe that decides whether that can work on this host.
//!
//! The boot test runs only when the probe says Linux guests can boot here; otherwise it prints
//! "skipped: <reason>" (never a silent pass). On kiln's CI machines (nested PVM KVM) it skips.
#![cfg(all(target_os = "linux", target_arch = "x86_64"))] // the VMM runs on x86_64 Linux only
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::time::{Duration, Instant};

use kiln_vmm::hypervisor;
use kiln_vmm::machine::{Machine, MachineConfig, MachineExit, VsockConfig};
use kiln_vmm::probe::probe;
use kiln_vmm::serial::SharedBuffer;

const AGENT_PORT: u32 = 1024;

fn guest_dir() -> PathBuf {
    std::env::var_os("KILN_GUEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../images/out"))
}

fn config(dir: &std::path::Path, console: SharedBuffer) -> MachineConfig {
    MachineConfig {
        mem_size: 512 << 20,
        vcpus: 2,
        kernel: guest_dir().join("kernel"),
        initrd: Some(guest_dir().join("initramfs.cpio")),
        cmdline: format!("console=ttyS0 panic=-1 reboot=t kiln.poweroff=reboot kiln.transport=vsock:{AGENT_PORT}"),
        console: Box::new(console),
        vsock: Some(VsockConfig { guest_cid: 3, uds_path: dir.join("vsock") }),
        disks: vec![],
    }
}

#[test]
fn probe_gives_a_reason_and_a_start_figure() {
    let report = probe();
    eprintln!("probe: {report:?}");
    if std::path::Path::new("/sys/module/kvm_pvm").exists() {
        let reason = report.linux_boot.as_ref().expect_err("PVM cannot boot Linux");
        assert!(reason.contains("emulated") || reason.contains("PVM"), "{reason}");
    }
    if let Some(t) = report.start_to_first_instruction {
        eprintln!("VMM start (open /dev/kvm) to first guest instruction: {t:?}");
        assert!(t < Duration::from_secs(1));
    }
}

#[test]
fn guest_boots_and_its_agent_answers_over_vsock() {
    if !guest_dir().join("kernel").exists() {
        eprintln!("skipped: no guest kernel at {} (run images/build.sh)", guest_dir().display());
        return;
    }
    if let Err(reason) = probe().linux_boot {
        eprintln!("skipped: {reason}");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let console = SharedBuffer::default();
    let hv = hypervisor::open_default().unwrap();
    let start = Instant::now();
    let machine = Machine::start(hv.as_ref(), config(dir.path(), console.clone())).expect("start");
    let path = machine.vsock_path.clone().unwrap();
    // The agent listens on AGENT_PORT once it runs; the client retries until it accepts.
    let connected = kiln_vmm::virtio::vsock::client::connect_guest_port(&path, AGENT_PORT, Duration::from_secs(30), &|| true)
        .unwrap_or_else(|e| panic!("{e}; console:\n{}", String::from_utf8_lossy(&console.contents())));
    eprintln!("VMM start to agent connection: {:?}", start.elapsed());
    drop(connected);
    let out = String::from_utf8_lossy(&console.contents()).into_owned();
    assert!(out.contains("Linux version"), "{out}");
    let exit = machine.stop();
    assert!(matches!(exit, MachineExit::Stopped | MachineExit::GuestReset), "{exit:?}");
}

#[test]
fn a_guest_that_cannot_run_is_reported_not_hung() {
    // Wherever Linux cannot boot (here: nested PVM), the attempt must end in a report.
    if probe().linux_boot.is_ok() {
        eprintln!("skipped: this host boots Linux guests, so there is no failure to report");
        return;
    }
    if !guest_dir().join("kernel").exists() {
        eprintln!("skipped: no guest kernel at {}", guest_dir().display());
        return;
    }
    let Ok(hv) = hypervisor::open_default() else {
        eprintln!("skipped: no usable /dev/kvm");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let console = SharedBuffer::default();
    let machine = Machine::start(hv.as_ref(), config(dir.path(), console.clone())).expect("start");
    let exit = machine.wait(Duration::from_secs(60));
    eprintln!("boot attempt ended: {exit:?}");
    eprintln!("console: {}", String::from_utf8_lossy(&console.contents()));
    let exit = match exit {
        Some(e) => e,
        None => machine.stop(),
    };
    // The guest failed and that is reported (on nested PVM: a KVM emulation failure), or it
    // was still running and we stopped it: never a hang or a crash.
    assert!(matches!(exit, MachineExit::Failed(_) | MachineExit::Stopped), "{exit:?}");
}

#[test]
fn a_running_machine_stops_cleanly_and_quickly() {
    if !guest_dir().join("kernel").exists() {
        eprintln!("skipped: no guest kernel at {}", guest_dir().display());
        return;
    }
    let Ok(hv) = hypervisor::open_default() else {
        eprintln!("skipped: no usable /dev/kvm");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let machine = Machine::start(hv.as_ref(), config(dir.path(), SharedBuffer::default())).expect("start");
    eprintln!("Machine::start (memory, irqchip, devices, kernel load, vCPU thread): {:?}", machine.started.elapsed());
    let sock = machine.vsock_path.clone().unwrap();
    assert!(sock.exists(), "vsock socket is listening while the VM runs");
    std::thread::sleep(Duration::from_millis(50));
    let t = Instant::now();
    let exit = machine.stop();
    eprintln!("stop: {exit:?} in {:?}", t.elapsed());
    assert!(t.elapsed() < Duration::from_secs(2));
    assert!(!sock.exists(), "socket removed with the VM");

    let mut bad = config(dir.path(), SharedBuffer::default());
    bad.vcpus = 0;
    let err = Machine::start(hv.as_ref(), bad).err().expect("0 vCPUs refused");
    assert!(err.to_string().contains("between 1 and 32"), "{err}");
    let mut bad = config(dir.path(), SharedBuffer::default());
    bad.mem_size = 32 << 20;
    let err = Machine::start(hv.as_ref(), bad).err().expect("too little memory refused");
    assert_eq!(err.to_string(), "guest memory of 32 MiB is too little: kiln needs at least 64 MiB");
    let mut bad = config(dir.path(), SharedBuffer::default());
    bad.kernel = dir.path().join("no-kernel");
    let err = Machine::start(hv.as_ref(), bad).err().expect("missing kernel refused");
    assert!(err.to_string().starts_with("cannot read guest kernel"), "{err}");
}
