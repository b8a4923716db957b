//! The QEMU backend: `qemu-system-x86_64 -M microvm` (or `qemu-system-aarch64 -M virt` for the
//! arm64 guest, see [`crate::machine`]) with the agent on a virtio-serial port.
//!
//! kiln listens on a Unix socket in a private temp dir and QEMU connects to it as a chardev
//! client, so the host side of the port is connected before the guest boots. Acceleration
//! ([`crate::accel`]): the host's hypervisor (KVM, HVF, WHPX) for a guest of the host's
//! architecture when one real boot under it answers (tried once per kernel and host kernel,
//! result cached in the cache dir), TCG otherwise; `KILN_QEMU_ACCEL=kvm|hvf|whpx|tcg` forces
//! one.
//! The QEMU process is killed and reaped whenever the [`QemuVm`] is dropped.

use std::fs::{self, File};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kiln_protocol::Mux;

use kiln_sys::net::{UnixListener, UnixStream};

use crate::accel::{self, Accel, HostOs};
use crate::agent::{AgentClient, GuestInfo};
use crate::snapshot::{self, Snapshot};
use crate::{children, Backend, GuestImage, SandboxError, Vm, VmConfig};

/// How long a TCG guest may take from QEMU start to the agent's hello (CI machines are slow).
const TCG_READY_TIMEOUT: Duration = Duration::from_secs(90);
/// A KVM guest boots in well under a second; past this, KVM is deemed unusable here.
const KVM_PROBE_TIMEOUT: Duration = Duration::from_secs(6);

/// Starts guests with QEMU.
#[derive(Debug, Clone)]
pub struct QemuBackend {
    /// The QEMU binary (`KILN_QEMU`); `None`: the one for the guest's architecture.
    pub qemu: Option<String>,
}

impl Default for QemuBackend {
    fn default() -> Self {
        Self { qemu: std::env::var("KILN_QEMU").ok().filter(|q| !q.is_empty()) }
    }
}

/// A running QEMU guest.
pub struct QemuVm {
    child: Option<Child>,
    agent: AgentClient,
    accel: Accel,
    pub info: GuestInfo,
    pub boot_time: Duration,
    /// Started from a snapshot rather than booted.
    pub restored: bool,
    /// The virtiofsd of each virtiofs share (they go with the VM).
    _daemons: Vec<crate::virtiofs::Daemon>,
    dir: tempfile::TempDir,
}

/// How a QEMU process starts: a boot (with a QMP socket when a snapshot is to be made of
/// it), or a restore from a snapshot.
#[derive(Debug, Default)]
struct Launch {
    qmp: bool,
    incoming: Option<String>,
}

/// Why `-v` and volumes fail on Windows hosts.
pub const NO_SHARES_ON_WINDOWS: &str =
    "not supported on Windows hosts yet: QEMU for Windows has neither virtio-9p nor virtiofs (run containers without -v or volumes)";

/// How long a restored guest may take to answer before kiln boots instead.
const RESTORE_TIMEOUT: Duration = Duration::from_secs(20);

/// `prog` as a path (when it has a directory part), else the first `prog` (or, on Windows,
/// `prog.exe`) in a `PATH` directory.
pub(crate) fn find_on_path(prog: &str) -> Option<PathBuf> {
    if Path::new(prog).components().count() > 1 {
        return Path::new(prog).is_file().then(|| PathBuf::from(prog));
    }
    let path = std::env::var_os("PATH")?;
    let names = [prog.to_string(), format!("{prog}{}", std::env::consts::EXE_SUFFIX)];
    std::env::split_paths(&path).flat_map(|d| names.iter().map(move |n| d.join(n))).find(|p| p.is_file())
}

fn tail_of(path: &Path, max: usize) -> String {
    let mut text = String::new();
    if let Ok(mut f) = File::open(path) {
        let _ = f.read_to_string(&mut text);
    }
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let start = lines.len().saturating_sub(max);
    lines[start..].join("\n")
}

/// RUN steps reach the network through QEMU's user-mode NAT (slirp): no root, no tap device.
/// The host is 10.0.2.2 in the guest (its loopback services included, as Docker Desktop's
/// `host.docker.internal`), 10.0.2.3 forwards DNS to the host's resolver.
const SLIRP_NETDEV: &str = "user,id=net0,ipv6=off,net=10.0.2.0/24,host=10.0.2.2,dns=10.0.2.3";
/// The guest's side of [`SLIRP_NETDEV`] for the agent (`kiln.net=ADDR/PREFIX,GATEWAY,DNS`).
const SLIRP_GUEST: &str = "10.0.2.15/24,10.0.2.2,10.0.2.3";

impl QemuBackend {
    /// The QEMU binary for guests of `image`'s architecture. `KILN_QEMU` names the one for
    /// the build's own guest; the other architecture's guest always uses its standard binary.
    fn binary(&self, image: &GuestImage) -> String {
        match &self.qemu {
            Some(q) if crate::GuestArch::wanted().ok() == Some(image.arch) => q.clone(),
            _ => crate::machine::qemu_binary(image.arch).to_string(),
        }
    }

    /// QEMU's arguments for a VM of `config` whose per-VM files live in `dir`.
    fn args(&self, image: &GuestImage, config: &VmConfig, accel: Accel, dir: &Path, sock: &Path) -> Result<Vec<String>, SandboxError> {
        let utf8 = |p: &Path| p.to_str().map(str::to_string).ok_or_else(|| SandboxError::BadPath(p.to_path_buf(), "the path must be UTF-8".into()));
        let tty = crate::machine::console(image.arch);
        let console = if config.debug { format!("console={tty}") } else { format!("console={tty} quiet") };
        // kiln.poweroff=reboot: on microvm without ACPI a power-off only halts the guest, while a
        // reboot makes QEMU (started with -no-reboot) exit by itself.
        // KILN_GUEST_NET=dhcp: the guest leases its address from slirp's DHCP server instead
        // (the path Virtualization.framework's NAT needs, tested here under QEMU).
        // Its leases start at .20, so a lease is told apart from the static .15.
        let (net, netdev) = match std::env::var("KILN_GUEST_NET").as_deref() {
            Ok("dhcp") => ("dhcp", format!("{SLIRP_NETDEV},dhcpstart=10.0.2.20")),
            Ok("") | Err(_) => (SLIRP_GUEST, SLIRP_NETDEV.to_string()),
            Ok(other) => return Err(SandboxError::BadSetting { name: "KILN_GUEST_NET", value: other.into(), why: "expected dhcp (or nothing)" }),
        };
        let mut append = format!("{console} panic=-1 reboot=t kiln.poweroff=reboot kiln.transport=virtio-serial:/dev/vport0p1 kiln.net={net}");
        append.push_str(&crate::machine::kernel_args(image.arch, accel, host_tsc_khz()));
        if !config.shares.is_empty() && HostOs::current() == HostOs::Windows {
            return Err(SandboxError::BackendUnusable(format!("shared directories and volumes are {NO_SHARES_ON_WINDOWS}")));
        }
        let mut args: Vec<String> = crate::machine::board(image.arch, accel);
        #[rustfmt::skip]
        args.extend::<Vec<String>>(vec![
            "-m".into(), config.memory_mib.to_string(), "-smp".into(), config.cpus.to_string(),
            "-nodefaults".into(), "-no-user-config".into(), "-nographic".into(), "-no-reboot".into(), "-monitor".into(), "none".into(),
            "-serial".into(), if config.debug { "stdio".to_string() } else { format!("file:{}", utf8(&dir.join("console.log"))?) },
            "-kernel".into(), utf8(&image.kernel)?,
            "-initrd".into(), utf8(&image.initrd)?,
            "-append".into(), append,
            "-chardev".into(), format!("socket,id=agent,path={}", utf8(sock)?),
            "-device".into(), "virtio-serial-device".into(), "-device".into(), "virtserialport,chardev=agent,name=kiln.agent".into(),
            "-netdev".into(), netdev, "-device".into(), "virtio-net-device,netdev=net0".into(),
        ]);
        if config.shares.iter().any(|s| s.virtiofs) {
            // vhost-user: virtiofsd reads and writes the guest's memory, which must be shared.
            args.extend(["-object".into(), format!("memory-backend-memfd,id=mem,size={}M,share=on", config.memory_mib), "-machine".into(), "memory-backend=mem".into()]);
        }
        for (i, share) in config.shares.iter().enumerate() {
            if share.virtiofs {
                args.extend(["-chardev".into(), format!("socket,id=vfs{i},path={}", utf8(&dir.join(format!("vfs{i}.sock")))?)]);
                args.extend(["-device".into(), format!("vhost-user-fs-device,chardev=vfs{i},tag={}", share.tag)]);
                continue;
            }
            // security_model=none: files are the user's on the host (rootless), as with a bind
            // mount; ownership changes the host refuses are not reported to the guest.
            // mapped-xattr (volumes): owners, modes, devices and symlinks live in `user.virtfs.*`
            // xattrs, so a container's `chown` works and nothing it makes is special on the host.
            let path = share.host_path.to_str().filter(|p| !p.contains(',')).ok_or_else(|| {
                SandboxError::BadPath(share.host_path.clone(), "a shared directory's path must be UTF-8 without ','".into())
            })?;
            let ro = if share.readonly { ",readonly=on" } else { "" };
            let model = if share.keep_owners { "mapped-xattr" } else { "none" };
            args.extend(["-fsdev".into(), format!("local,id=fs{i},path={path},security_model={model}{ro}")]);
            args.extend(["-device".into(), format!("virtio-9p-device,fsdev=fs{i},mount_tag={}", share.tag)]);
        }
        Ok(args)
    }

    /// The snapshot for VMs like this one: `args` (made with placeholder per-VM paths) with the
    /// shares' paths and the TSC rate (which only a boot reads) taken out.
    fn snapshot_for(&self, image: &GuestImage, config: &VmConfig, args: &[String]) -> Option<Snapshot> {
        let qemu = find_on_path(&self.binary(image))?;
        let shares: Vec<&str> = config.shares.iter().filter_map(|s| s.host_path.to_str()).collect();
        let mut shape: Vec<String> = args
            .iter()
            .map(|a| {
                let mut a = a.clone();
                for p in &shares {
                    a = a.replace(&format!("path={p},"), "path=@SHARE,");
                }
                a.split(' ').filter(|w| !w.starts_with("tsc_early_khz=")).collect::<Vec<_>>().join(" ")
            })
            .collect();
        if args.windows(2).any(|w| w[0] == "-accel" && w[1] != "tcg") {
            // `-cpu host`: a snapshot is only good for a host CPU like the one it was made on.
            let info = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
            let field = |name: &str| info.lines().find(|l| l.starts_with(name)).unwrap_or_default().to_string();
            shape.push(format!("@cpu {} {}", field("model name"), field("flags")));
        }
        Some(Snapshot::for_vm(&config.cache_dir, &qemu, &image.kernel, &image.initrd, &shape))
    }

    fn command(&self, qemu: &str, args: &[String], config: &VmConfig, dir: &Path, launch: &Launch) -> Result<Command, SandboxError> {
        let mut cmd = Command::new(qemu);
        cmd.args(args);
        if launch.qmp {
            cmd.arg("-qmp").arg(format!("unix:{},server=on,wait=off", dir.join("qmp.sock").display()));
        }
        if let Some(uri) = &launch.incoming {
            cmd.arg("-incoming").arg(uri);
        }
        cmd.stdin(Stdio::null());
        if config.debug {
            // The serial console goes to kiln's stderr.
            cmd.stdout(kiln_sys::process::console().map_err(|e| SandboxError::io("duplicating stderr", e))?);
        } else {
            cmd.stdout(Stdio::null());
        }
        let errlog = dir.join("qemu.stderr");
        cmd.stderr(File::create(&errlog).map_err(|e| SandboxError::io(format!("creating {}", errlog.display()), e))?);
        children::harden(&mut cmd);
        Ok(cmd)
    }

    fn boot(&self, image: &GuestImage, config: &VmConfig, accel: Accel, timeout: Duration, launch: &Launch) -> Result<QemuVm, SandboxError> {
        let started = Instant::now();
        let dir = tempfile::Builder::new()
            .prefix("kiln-vm-")
            .tempdir()
            .map_err(|e| SandboxError::io("creating the VM's temp dir", e))?;
        let sock = dir.path().join("agent.sock");
        let listener = UnixListener::bind(&sock).map_err(|e| SandboxError::io(format!("listening on {}", sock.display()), e))?;
        listener.set_nonblocking(true).map_err(|e| SandboxError::io("configuring the agent socket", e))?;
        let args = self.args(image, config, accel, dir.path(), &sock)?;
        let mut daemons = Vec::new();
        if config.shares.iter().any(|s| s.virtiofs) {
            let binary = crate::virtiofs::find(&config.cache_dir)?.ok_or_else(|| SandboxError::BackendUnusable("virtiofsd not found (set KILN_VIRTIOFSD)".into()))?;
            for (i, share) in config.shares.iter().enumerate().filter(|(_, s)| s.virtiofs) {
                let sock = dir.path().join(format!("vfs{i}.sock"));
                let log = dir.path().join(format!("virtiofsd{i}.log"));
                daemons.push(crate::virtiofs::Daemon::start(&binary, &share.host_path, share.readonly, &sock, &log)?);
            }
        }
        let qemu = self.binary(image);
        let cmd = self.command(&qemu, &args, config, dir.path(), launch)?;
        let child = children::spawn(cmd).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => SandboxError::QemuMissing(qemu.clone()),
            _ => SandboxError::io(format!("starting {qemu}"), e),
        })?;
        children::register(child.id());
        let mut vm = PartialVm { child: Some(child), dir: dir.path().to_path_buf() };
        let stream = vm.accept(&listener, started + timeout)?;
        let reader = stream.try_clone().map_err(|e| SandboxError::io("cloning the agent socket", e))?;
        let cut = stream.try_clone().map_err(|e| SandboxError::io("cloning the agent socket", e))?;
        let agent = AgentClient::new(Mux::host(reader, stream));
        let left = (started + timeout).saturating_duration_since(Instant::now());
        let info = match agent.hello(left.max(Duration::from_millis(1))) {
            Ok(info) => info,
            Err(e) => {
                agent.close();
                return Err(vm.explain(e, timeout));
            }
        };
        agent.watch(Some(Box::new(move || {
            let _ = cut.shutdown(std::net::Shutdown::Both);
        })));
        Ok(QemuVm { child: vm.child.take(), agent, accel, info, boot_time: started.elapsed(), restored: launch.incoming.is_some(), _daemons: daemons, dir })
    }

    /// The host's hypervisor or TCG ([`accel::plan`]): a cached answer, or a real probe boot
    /// under the hypervisor.
    fn choose_accel(&self, image: &GuestImage, config: &VmConfig) -> Result<(Accel, Option<QemuVm>), SandboxError> {
        let forced = match std::env::var("KILN_QEMU_ACCEL").as_deref() {
            Ok("") | Err(_) => None,
            Ok(name) => Some(Accel::parse(name).ok_or_else(|| SandboxError::BadSetting {
                name: "KILN_QEMU_ACCEL",
                value: name.into(),
                why: "expected kvm, hvf, whpx or tcg",
            })?),
        };
        let plan = accel::plan(HostOs::current(), crate::GuestArch::of_host(), &kiln_sys::hv::native(), image.arch, forced);
        if !plan.confirm {
            return Ok((plan.accel, None));
        }
        let key = format!("{}-{}", image.fingerprint(), host_kernel());
        let cache = config.cache_dir.join("qemu-accel").join(key);
        if let Ok(text) = fs::read_to_string(&cache) {
            return Ok((Accel::parse(text.trim()).unwrap_or(Accel::Tcg), None));
        }
        // An experimental accelerator's first boot gets longer: it has never been timed.
        let probe_timeout = if plan.accel.is_experimental() { KVM_PROBE_TIMEOUT * 4 } else { KVM_PROBE_TIMEOUT };
        let probe = self.boot(image, config, plan.accel, probe_timeout, &Launch::default());
        let accel = match &probe {
            Ok(_) => plan.accel,
            Err(e) => {
                if plan.accel.is_experimental() {
                    eprintln!(
                        "kiln: notice: QEMU with -accel {} failed ({e}); using TCG for this guest from now on (remembered in {}; delete it to try again, or set KILN_QEMU_ACCEL)",
                        plan.accel.name(),
                        cache.display()
                    );
                }
                Accel::Tcg
            }
        };
        if let Some(parent) = cache.parent() {
            let _ = fs::create_dir_all(parent);
            let _ = fs::write(&cache, accel.name());
        }
        Ok((accel, probe.ok()))
    }
}

impl QemuBackend {
    /// A VM restored from the snapshot of its kind, else booted (and, when snapshots are on,
    /// saved as that kind's snapshot for the next VM). A snapshot that cannot be used is
    /// discarded with a one-line notice; the VM is booted instead.
    fn start_from_snapshot(&self, image: &GuestImage, config: &VmConfig, accel: Accel, timeout: Duration) -> Result<QemuVm, SandboxError> {
        let snapshot = if snapshot::enabled()? && !config.debug {
            let shape = self.args(image, config, accel, Path::new("/@VM"), Path::new("/@VM/agent.sock"))?;
            self.snapshot_for(image, config, &shape)
        } else {
            None
        };
        // A VM with virtiofs shares cannot be migrated (vhost-user devices, shared memory).
        let snapshot = snapshot.filter(|_| !config.shares.iter().any(|s| s.virtiofs));
        let Some(snap) = snapshot else { return self.boot(image, config, accel, timeout, &Launch::default()) };
        match snap.check() {
            Ok(Some(len)) => match self.boot(image, config, accel, RESTORE_TIMEOUT, &Launch { qmp: false, incoming: Some(snap.incoming_uri(len)?) }) {
                Ok(vm) => return Ok(vm),
                Err(e) => {
                    eprintln!("kiln: notice: the VM snapshot could not be restored ({e}); booting and making a new one");
                    snap.discard();
                }
            },
            Ok(None) => {}
            Err(e) => eprintln!("kiln: notice: {e}; booting and making a new one"),
        }
        if snap.failed_recently() {
            return self.boot(image, config, accel, timeout, &Launch::default());
        }
        let vm = self.boot(image, config, accel, timeout, &Launch { qmp: true, incoming: None })?;
        let qmp = vm.dir.path().join("qmp.sock");
        match snap.save(&qmp) {
            Ok(_) => Ok(vm),
            Err(e) => {
                eprintln!("kiln: notice: could not save a VM snapshot ({e}); going on without one for an hour");
                snap.mark_failed();
                if snapshot::vm_running(&qmp) {
                    return Ok(vm);
                }
                // Left paused by a migration that went wrong: start another.
                drop(vm);
                self.boot(image, config, accel, timeout, &Launch::default())
            }
        }
    }
}

/// The host's TSC rate in kHz, from /proc/cpuinfo's "cpu MHz" (TCG's guest TSC follows it).
fn host_tsc_khz() -> Option<u64> {
    let info = fs::read_to_string("/proc/cpuinfo").ok()?;
    let mhz: f64 = info.lines().find(|l| l.starts_with("cpu MHz"))?.split(':').nth(1)?.trim().parse().ok()?;
    (mhz > 100.0).then(|| (mhz * 1000.0).round() as u64)
}

fn host_kernel() -> String {
    kiln_sys::process::os_release()
}

/// A QEMU process that has not yet produced a ready agent; killed on drop.
struct PartialVm {
    child: Option<Child>,
    dir: PathBuf,
}

impl PartialVm {
    fn accept(&mut self, listener: &UnixListener, deadline: Instant) -> Result<UnixStream, SandboxError> {
        loop {
            match listener.accept() {
                Ok((stream, _)) => {
                    stream.set_nonblocking(false).map_err(|e| SandboxError::io("configuring the agent socket", e))?;
                    return Ok(stream);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(SandboxError::io("accepting QEMU's connection", e)),
            }
            self.check_alive()?;
            if Instant::now() >= deadline {
                return Err(SandboxError::AgentTimeout { secs: 0, detail: self.detail() });
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn check_alive(&mut self) -> Result<(), SandboxError> {
        if let Some(child) = self.child.as_mut() {
            if let Ok(Some(status)) = child.try_wait() {
                children::unregister(child.id());
                self.child = None;
                return Err(SandboxError::QemuDied { status: status.to_string(), detail: self.detail() });
            }
        }
        Ok(())
    }

    fn detail(&self) -> String {
        let qemu = tail_of(&self.dir.join("qemu.stderr"), 5);
        let console = tail_of(&self.dir.join("console.log"), 15);
        let mut out = String::new();
        if !qemu.is_empty() {
            out.push_str(&format!("\nQEMU said:\n{qemu}"));
        }
        if !console.is_empty() {
            out.push_str(&format!("\nguest console (last lines):\n{console}"));
        }
        out
    }

    fn explain(&mut self, e: SandboxError, timeout: Duration) -> SandboxError {
        std::thread::sleep(Duration::from_millis(50));
        if let Err(died) = self.check_alive() {
            return died;
        }
        match e {
            SandboxError::Connection(kiln_protocol::MuxError::Timeout(_)) => {
                SandboxError::AgentTimeout { secs: timeout.as_secs(), detail: self.detail() }
            }
            other => other,
        }
    }
}

impl Drop for PartialVm {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            stop(child);
        }
    }
}

fn stop(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
    children::unregister(child.id());
}

impl Backend for QemuBackend {
    fn start(&self, image: &GuestImage, config: &VmConfig) -> Result<Box<dyn Vm>, SandboxError> {
        let qemu = self.binary(image);
        if find_on_path(&qemu).is_none() {
            return Err(SandboxError::QemuMissing(qemu));
        }
        let (accel, probed) = self.choose_accel(image, config)?;
        if let Some(vm) = probed {
            return Ok(Box::new(vm));
        }
        match self.start_from_snapshot(image, config, accel, if accel.is_native() { KVM_PROBE_TIMEOUT * 5 } else { TCG_READY_TIMEOUT }) {
            Ok(vm) => Ok(Box::new(vm)),
            Err(e) if accel.is_native() && std::env::var_os("KILN_QEMU_ACCEL").is_none() => {
                // A cached hypervisor answer that no longer holds: fall back rather than fail.
                eprintln!("kiln: QEMU boot with -accel {} failed ({e}); falling back to TCG", accel.name());
                Ok(Box::new(self.start_from_snapshot(image, config, Accel::Tcg, TCG_READY_TIMEOUT)?))
            }
            Err(e) => Err(e),
        }
    }
}

impl Vm for QemuVm {
    fn agent(&self) -> &AgentClient {
        &self.agent
    }

    fn shutdown(mut self: Box<Self>) -> Result<(), SandboxError> {
        // The guest's power-off does not always make QEMU exit; the agent's answer means the
        // guest has synced, after which killing QEMU loses nothing.
        let result = self.agent.power_off(Duration::from_secs(10));
        self.agent.close();
        if let Some(mut child) = self.child.take() {
            stop(&mut child);
        }
        result
    }

    fn describe(&self) -> String {
        let how = if self.restored { "restored from a snapshot" } else { "booted" };
        format!("qemu/{} (guest kernel {}, {how} in {:.2} s)", self.accel.name(), self.info.kernel, self.boot_time.as_secs_f64())
    }
}

impl Drop for QemuVm {
    fn drop(&mut self) {
        self.agent.close();
        if let Some(mut child) = self.child.take() {
            stop(&mut child);
        }
    }
}
