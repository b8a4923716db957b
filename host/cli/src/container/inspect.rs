//! `kiln inspect CONTAINER` (Docker-shaped JSON: State, Config, HostConfig, NetworkSettings,
//! Mounts), `kiln diff CONTAINER` (A/C/D lines of its writable layer) and `kiln rename`.

use std::path::Path;

use anyhow::{Context, Result};
use clap::Args;
use kiln_runtime::container::control::{request, ControlRequest};
use kiln_runtime::container::volumes::VolumeMount;
use kiln_runtime::container::{Container, Containers, Status};
use kiln_store::rootfs::RootFs;
use kiln_store::{Digest, Store};
use serde_json::{json, Value};

/// One entry of `Mounts`, as Docker shows it.
fn mount_json(m: &VolumeMount) -> Value {
    match m {
        VolumeMount::Bind { source, target, readonly } => json!({"Type": "bind", "Source": source, "Destination": target, "Mode": if *readonly { "ro" } else { "" }, "RW": !readonly, "Propagation": "rprivate"}),
        VolumeMount::Volume { name, source, target, readonly, .. } => json!({"Type": "volume", "Name": name, "Source": source, "Destination": target, "Driver": "local", "Mode": if *readonly { "ro" } else { "z" }, "RW": !readonly, "Propagation": ""}),
        VolumeMount::Tmpfs { target } => json!({"Type": "tmpfs", "Source": "", "Destination": target, "Mode": "", "RW": true, "Propagation": ""}),
    }
}

/// The JSON `docker container inspect` prints for one container.
pub fn describe(c: &Container) -> Value {
    let (cfg, st) = (&c.config, &c.state);
    let status = match st.status {
        Status::Created => "created",
        Status::Running => "running",
        Status::Exited => "exited",
    };
    let mut ports = serde_json::Map::new();
    for p in cfg.ports.iter() {
        let bound: Vec<Value> = st
            .ports
            .iter()
            .filter(|b| b.container_port == p.container_port && b.proto == p.proto)
            .map(|b| json!({"HostIp": b.host_ip, "HostPort": b.host_port.to_string()}))
            .collect();
        ports.insert(format!("{}/{}", p.container_port, p.proto), if bound.is_empty() { Value::Null } else { Value::Array(bound) });
    }
    json!({
        "Id": cfg.id,
        "Created": cfg.created,
        "Path": cfg.argv.first().cloned().unwrap_or_default(),
        "Args": cfg.argv.iter().skip(1).collect::<Vec<_>>(),
        "State": {
            "Status": status,
            "Running": st.status == Status::Running,
            "Paused": false,
            "Restarting": false,
            "OOMKilled": false,
            "Dead": false,
            "Pid": st.owner_pid.unwrap_or(0),
            "ExitCode": st.exit_code.unwrap_or(0),
            "Error": st.error.clone().unwrap_or_default(),
            "StartedAt": st.started_at.clone().unwrap_or_else(|| "0001-01-01T00:00:00Z".into()),
            "FinishedAt": st.finished_at.clone().unwrap_or_else(|| "0001-01-01T00:00:00Z".into()),
        },
        "Image": cfg.image_digest,
        "Name": format!("/{}", cfg.name),
        "LogPath": c.log_path(),
        "Driver": "kiln-microvm",
        "Platform": "linux",
        "HostConfig": {
            "AutoRemove": cfg.auto_remove,
            "ReadonlyRootfs": cfg.read_only,
            "Init": cfg.init,
            "NetworkMode": cfg.network,
            "Memory": u64::from(cfg.memory_mib) << 20,
            "NanoCpus": u64::from(cfg.cpus) * 1_000_000_000,
            "PortBindings": cfg.ports.iter().map(|p| (format!("{}/{}", p.container_port, p.proto), json!([{"HostIp": p.host_ip, "HostPort": if p.host_port == 0 { String::new() } else { p.host_port.to_string() }}]))).collect::<serde_json::Map<_, _>>(),
        },
        "Mounts": cfg.mounts.iter().map(mount_json).collect::<Vec<_>>(),
        "Config": {
            "Hostname": cfg.hostname,
            "User": cfg.user,
            "Tty": cfg.tty,
            "OpenStdin": cfg.interactive,
            "Env": cfg.env,
            "Cmd": cfg.argv,
            "Image": cfg.image,
            "WorkingDir": cfg.cwd,
            "StopSignal": cfg.stop_signal.to_string(),
            "StopTimeout": cfg.stop_timeout,
        },
        "NetworkSettings": { "Ports": ports },
    })
}

#[derive(Args)]
pub struct DiffArgs {
    container: String,
}

/// `kiln diff`: `A /path` added, `C /path` changed, `D /path` deleted, from the writable layer.
pub fn diff(root: &Path, args: DiffArgs) -> Result<()> {
    let containers = Containers::new(root);
    let c = containers.get(&args.container)?;
    if c.is_running() {
        request(&c.dir, &ControlRequest::Save).context("saving the running container's changes")?;
    }
    let rw = c.rw_layer();
    if !rw.is_file() {
        return Ok(()); // never ran: no changes
    }
    let store = Store::open(root).with_context(|| format!("opening the store at {}", root.display()))?;
    let layers: Vec<Digest> = c.config.layers.iter().map(|l| l.digest.parse()).collect::<Result<_, _>>()?;
    let open = |d: &Digest| store.open_blob(d);
    let image = RootFs::from_layers_in(&open, &layers, &store.root().join("ingest"))?;
    let mut archive = tar::Archive::new(std::fs::File::open(&rw).context("opening the writable layer")?);
    let mut lines = Vec::new();
    for entry in archive.entries().context("reading the writable layer")? {
        let entry = entry.context("reading the writable layer")?;
        let path = entry.path().context("reading the writable layer")?.into_owned();
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let parent = path.parent().map(|p| p.to_string_lossy().trim_end_matches('/').to_string()).unwrap_or_default();
        let slash = |rel: &str| format!("/{}", rel.trim_start_matches("./").trim_end_matches('/'));
        if name == ".wh..wh..opq" {
            continue;
        }
        if let Some(gone) = name.strip_prefix(".wh.") {
            let p = if parent.is_empty() || parent == "." { format!("/{gone}") } else { format!("{}/{gone}", slash(&parent)) };
            lines.push(format!("D {p}"));
            continue;
        }
        let p = slash(&path.to_string_lossy());
        let existed = image.resolve(&p, false).ok().flatten().is_some_and(|r| image.node(&r).is_some());
        lines.push(format!("{} {p}", if existed { "C" } else { "A" }));
    }
    for l in lines {
        println!("{l}");
    }
    Ok(())
}

#[derive(Args)]
pub struct RenameArgs {
    container: String,
    new_name: String,
}

pub fn rename(root: &Path, args: RenameArgs) -> Result<()> {
    let containers = Containers::new(root);
    let c = containers.get(&args.container)?;
    containers.rename(&c.config.id, &args.new_name)?;
    Ok(())
}
