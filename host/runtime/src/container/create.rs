//! Making a container's record from an image and `kiln run`'s flags: its id and name, its
//! main process ([`crate::spec`]), its user's numeric ids (from the image's own
//! `/etc/passwd` and `/etc/group`, read from its layers, never from the host), its stop signal
//! and its layers. Nothing runs here.


use kiln_store::rootfs::RootFs;
use kiln_store::{Digest, ImageRecord, Store};

use super::names::{random_hex, valid_name};
use super::record::{Container, ContainerConfig, Containers, LayerRef};
use crate::spec::{process_spec, RunOptions};
use crate::RuntimeError;

/// `kiln run`'s flags beyond the main process.
#[derive(Debug, Clone, Default)]
pub struct CreateOptions {
    pub name: Option<String>,
    pub run: RunOptions,
    pub interactive: bool,
    /// `default` or `none`.
    pub network: String,
    pub memory_mib: u32,
    pub cpus: u32,
    pub stop_signal: Option<String>,
    pub stop_timeout: Option<u64>,
    pub auto_remove: bool,
    /// `-p` mappings, and `-P` (every EXPOSEd port on a free host port).
    pub publish: Vec<super::ports::PortMapping>,
    pub publish_all: bool,
    /// `-v` and `--tmpfs`, parsed.
    pub mounts: Vec<super::volumes::VolumeMount>,
    pub read_only: bool,
    /// `--init`.
    pub init: bool,
}

/// A signal's number from `SIGTERM`, `TERM` or `15`.
pub fn signal_number(s: &str) -> Result<i32, RuntimeError> {
    kiln_protocol::signal::number(s).ok_or_else(|| RuntimeError::Invalid(format!("invalid signal: {s}")))
}

/// A Docker-style name (`adjective_noun`) for a container not given one.
fn generated_name(id: &str) -> String {
    const ADJECTIVES: &[&str] = &["amber", "brave", "calm", "deft", "eager", "fond", "glad", "hardy", "keen", "lucid", "merry", "nimble", "quiet", "rapid", "sober", "tidy"];
    const NOUNS: &[&str] = &["anvil", "bellows", "crucible", "ember", "flux", "forge", "glaze", "hearth", "ingot", "kiln", "ladle", "mold", "oven", "slag", "tongs", "vent"];
    let n = |i: usize| usize::from_str_radix(&id[i..i + 1], 16).unwrap_or(0);
    format!("{}_{}_{}", ADJECTIVES[n(0)], NOUNS[n(1)], &id[2..6])
}

/// Numeric ids for `user` inside the image (empty: root).
pub fn user_ids(store: &Store, image: &ImageRecord, user: &str) -> Result<(u32, u32, Vec<u32>), RuntimeError> {
    if user.is_empty() {
        return Ok((0, 0, vec![]));
    }
    let open = |d: &Digest| store.open_blob(d);
    let root = RootFs::from_layers_in(&open, &image.layers, &store.root().join("ingest"))?;
    let read = |path: &str| -> Result<String, RuntimeError> {
        Ok(root.read_file(path, 4 << 20)?.map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default())
    };
    kiln_frontend::command::chown::resolve_user(user, &read("/etc/passwd")?, &read("/etc/group")?).map_err(RuntimeError::Invalid)
}

/// Records a new container of `image` (named `image_name` by the user).
pub fn create(store: &Store, containers: &Containers, image_name: &str, image: &ImageRecord, opts: &CreateOptions) -> Result<Container, RuntimeError> {
    let id = random_hex(32)?;
    let name = match &opts.name {
        Some(n) if valid_name(n.trim_start_matches('/')) => n.trim_start_matches('/').to_string(),
        Some(n) => return Err(RuntimeError::Invalid(format!("invalid container name ({n}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed"))),
        None => generated_name(&id),
    };
    // An image for another architecture needs its emulator: known now, not at the first start.
    crate::emulate::find(&crate::emulate::image_platform(image))?;
    let spec = process_spec(&image.config.config, &opts.run, &id)?;
    let (uid, gid, groups) = user_ids(store, image, &spec.user)?;
    let stop_signal = match opts.stop_signal.as_deref().or(image.config.config.stop_signal.as_deref()) {
        Some(s) => signal_number(s)?,
        None => kiln_protocol::signal::SIGTERM,
    };
    let mut ports = opts.publish.clone();
    if opts.publish_all {
        let exposed: Vec<String> = image.config.config.exposed_ports.iter().flat_map(|m| m.keys().cloned()).collect();
        ports.extend(super::ports::exposed(&exposed)?);
    }
    if !ports.is_empty() && opts.network == "none" {
        return Err(RuntimeError::Invalid("ports cannot be published with --network none".into()));
    }
    let mut mounts = opts.mounts.clone();
    let declared: Vec<String> = image.config.config.volumes.iter().flat_map(|m| m.keys().cloned()).collect();
    mounts.extend(super::volumes::image_volumes(store.root(), &declared, &opts.mounts)?);
    let layers = image.layer_infos().into_iter().map(|l| LayerRef { digest: l.digest.to_string(), diff_id: l.diff_id.to_string(), size: l.size }).collect();
    let config = ContainerConfig {
        id,
        name,
        image: image_name.to_string(),
        image_digest: image.manifest_digest.to_string(),
        created: kiln_store::time::now_rfc3339_nanos(),
        argv: spec.argv,
        env: spec.env,
        cwd: spec.cwd,
        user: spec.user,
        hostname: spec.hostname,
        uid,
        gid,
        groups,
        tty: opts.run.tty,
        interactive: opts.interactive,
        network: opts.network.clone(),
        memory_mib: opts.memory_mib,
        cpus: opts.cpus,
        stop_signal,
        stop_timeout: opts.stop_timeout.unwrap_or(10),
        auto_remove: opts.auto_remove,
        layers,
        ports,
        mounts,
        read_only: opts.read_only,
        init: opts.init,
        platform: crate::emulate::image_platform(image).to_string(),
    };
    let mut pinned = vec![image.manifest_digest.to_string(), image.config_digest.to_string()];
    pinned.extend(image.layers.iter().map(|d| d.to_string()));
    // Nothing is left of a container that could not be recorded: its pin, the volumes made.
    let undo = || {
        let _ = std::fs::remove_file(containers.pin_path(&config.id));
        let _ = super::volumes::remove_anonymous(store.root(), &config.mounts);
    };
    containers.pin(&config.id, &pinned).inspect_err(|_| undo())?;
    containers.create(&config).inspect_err(|_| undo())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_by_name_and_number() {
        assert_eq!(signal_number("SIGTERM").expect("term"), kiln_protocol::signal::SIGTERM);
        assert_eq!(signal_number("kill").expect("kill"), kiln_protocol::signal::SIGKILL);
        assert_eq!(signal_number("2").expect("2"), 2);
        assert!(signal_number("SIGNOPE").is_err() && signal_number("0").is_err() && signal_number("99").is_err());
    }

    #[test]
    fn generated_names_are_valid() {
        let name = generated_name("0f3a9c0000000000");
        assert_eq!(name, "amber_vent_3a9c");
        assert!(valid_name(&name));
    }
}
