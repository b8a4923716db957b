//! `kiln build`.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Args;
use kiln_sandbox::{BackendKind, ChosenLater, VmConfig};
use kiln_solver::{BuildOptions, ProgressMode, Reporter};
use kiln_store::{Reference, Store};

use crate::builder::cache_transfer;

#[derive(Args)]
pub struct BuildArgs {
    /// Name and optionally a tag (name:tag); may be given several times
    #[arg(short = 't', long = "tag")]
    tags: Vec<String>,
    /// Path of the Dockerfile (default: CONTEXT/Dockerfile)
    #[arg(short = 'f', long = "file")]
    file: Option<PathBuf>,
    /// Print only the image id
    #[arg(short = 'q', long)]
    quiet: bool,
    /// Progress output: auto (tty on a terminal, else plain), tty, plain, quiet
    #[arg(long, default_value = "auto", env = "KILN_PROGRESS")]
    progress: String,
    /// Do not use the build cache: run every step
    #[arg(long)]
    no_cache: bool,
    /// Do not use the build cache for these stages (names or indexes; repeatable or comma-separated)
    #[arg(long = "no-cache-filter", value_delimiter = ',')]
    no_cache_filter: Vec<String>,
    /// Network of RUN steps that do not say (default: the guest's NAT; none: loopback only;
    /// host is the guest's network too)
    #[arg(long, default_value = "default", value_parser = ["default", "none", "host"])]
    network: String,
    /// How many independent stages may run at once (default: the number of CPUs)
    #[arg(long, env = "KILN_JOBS")]
    jobs: Option<usize>,
    /// Write the image id to this file
    #[arg(long)]
    iidfile: Option<PathBuf>,
    /// Also export the result: type=oci|docker|tar,dest=FILE or type=local,dest=DIR (or just DIR)
    #[arg(short = 'o', long = "output")]
    output: Option<String>,
    /// Set a label on the image (KEY=VALUE); may be given several times
    #[arg(long = "label")]
    labels: Vec<String>,
    /// Set a build-time variable (KEY=VALUE, or KEY to take it from the environment)
    #[arg(long = "build-arg")]
    build_args: Vec<String>,
    /// A secret for RUN --mount=type=secret: id=ID[,src=FILE|,env=VAR] (neither: env var ID)
    #[arg(long = "secret")]
    secrets: Vec<String>,
    /// An SSH agent socket for RUN --mount=type=ssh: default (= $SSH_AUTH_SOCK) or
    /// ID[=SOCKET] (may be given several times)
    #[arg(long = "ssh")]
    ssh: Vec<String>,
    /// Export the build cache: type=local,dest=DIR or type=registry,ref=REF, [,mode=min|max]
    /// [,ignore-error=true] (may be given several times)
    #[arg(long = "cache-to")]
    cache_to: Vec<String>,
    /// Use an exported build cache: type=local,src=DIR or type=registry,ref=REF (may be given
    /// several times; a missing or broken one is a warning)
    #[arg(long = "cache-from")]
    cache_from: Vec<String>,
    /// Build this stage (and what it needs) instead of the last one
    #[arg(long)]
    target: Option<String>,
    /// Target platform (os/arch[/variant], e.g. linux/arm64): RUN steps of another
    /// architecture run under QEMU user-mode emulation in the guest
    #[arg(long)]
    platform: Option<String>,
    /// Guest memory in MiB
    #[arg(long, default_value_t = 2048, env = "KILN_VM_MEMORY")]
    memory: u32,
    /// Guest vCPUs
    #[arg(long, default_value_t = 2, env = "KILN_VM_CPUS")]
    cpus: u32,
    /// Show the guest's console
    #[arg(long, env = "KILN_DEBUG", action = clap::ArgAction::SetTrue, value_parser = clap::builder::BoolishValueParser::new())]
    debug: bool,
    /// Where RUN steps execute: auto (built-in VMM when KVM can boot Linux here, else QEMU; on a Mac without QEMU, vz), vm, qemu, vz (macOS Virtualization.framework, experimental)
    #[arg(long, env = "KILN_BACKEND", default_value = "auto")]
    backend: String,
    /// Build context directory
    context: PathBuf,
}

pub fn run(root: &Path, args: BuildArgs) -> Result<()> {
    if !args.context.is_dir() {
        bail!("build context {} is not a directory", args.context.display());
    }
    let file = args.file.clone().unwrap_or_else(|| args.context.join("Dockerfile"));
    // `-f -`: the Dockerfile comes on stdin (then only the context's .dockerignore applies).
    let from_stdin = file.as_os_str() == "-";
    let text = if from_stdin {
        use std::io::{IsTerminal, Read};
        if std::io::stdin().is_terminal() {
            bail!("-f -: the Dockerfile is read from stdin, but stdin is a terminal");
        }
        let mut bytes = Vec::new();
        std::io::stdin().lock().read_to_end(&mut bytes).context("reading the Dockerfile from stdin")?;
        bytes
    } else {
        std::fs::read(&file).with_context(|| format!("reading Dockerfile {}", file.display()))?
    };
    let text = String::from_utf8(text).with_context(|| format!("Dockerfile {} is not UTF-8", file.display()))?;
    let dockerfile = kiln_frontend::parse_full(&text)?;
    let mut build_args = std::collections::BTreeMap::new();
    for a in &args.build_args {
        match a.split_once('=') {
            Some((k, v)) if !k.is_empty() => {
                build_args.insert(k.to_string(), v.to_string());
            }
            None if !a.is_empty() => {
                // Docker: `--build-arg NAME` takes the value from the environment, if set.
                if let Ok(v) = std::env::var(a) {
                    build_args.insert(a.clone(), v);
                }
            }
            _ => bail!("invalid --build-arg {a:?}: expected KEY=VALUE"),
        }
    }
    let secrets = args.secrets.iter().map(|s| parse_secret(s)).collect::<Result<_>>()?;
    let ssh = parse_ssh_all(&args.ssh, std::env::var_os("SSH_AUTH_SOCK").map(PathBuf::from))?;
    // BUILDPLATFORM is this machine; the target defaults to it too (as with BuildKit).
    let host = frontend_platform(kiln_registry::manifest::Platform::host());
    let mut frontend = kiln_frontend::graph::BuildOptions {
        build_args,
        target: args.target.clone(),
        target_platform: host.clone(),
        build_platform: host,
    };
    let platforms = match &args.platform {
        Some(list) => target_platforms(list)?,
        None => Vec::new(),
    };
    if let Some(first) = platforms.first() {
        frontend.target_platform = first.clone();
    }
    let tags = args
        .tags
        .iter()
        .map(|t| t.parse::<Reference>().with_context(|| format!("tag {t:?}")))
        .collect::<Result<Vec<_>>>()?;
    if args.memory < 128 {
        bail!("--memory {} MiB is too little for the guest (at least 128)", args.memory);
    }
    if args.cpus == 0 || args.cpus > 64 {
        bail!("--cpus must be between 1 and 64");
    }
    let labels = args
        .labels
        .iter()
        .map(|l| match l.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
            _ => bail!("invalid --label {l:?}: expected KEY=VALUE"),
        })
        .collect::<Result<Vec<_>>>()?;
    let ignore = read_dockerignore(if from_stdin { None } else { Some(&file) }, &args.context)?;
    let output = args.output.as_deref().map(crate::output::Output::parse).transpose()?.unwrap_or(crate::output::Output::Image);
    let cache_to = args.cache_to.iter().map(|s| cache_transfer::CacheTo::parse(s)).collect::<Result<Vec<_>>>()?;
    let cache_from = args.cache_from.iter().map(|s| cache_transfer::CacheFrom::parse(s)).collect::<Result<Vec<_>>>()?;
    let cache_max = cache_transfer::cache_max_from_env()?;
    let jobs = match args.jobs {
        Some(0) => bail!("--jobs must be at least 1"),
        Some(n) => n,
        None => std::thread::available_parallelism().map_or(1, |n| n.get()),
    };
    for f in &args.no_cache_filter {
        let known = f.parse::<usize>().is_ok_and(|i| i < dockerfile.stages.len()) || dockerfile.stage(&f.to_ascii_lowercase()).is_some();
        if !known {
            bail!("--no-cache-filter {f:?}: no such stage in the Dockerfile");
        }
    }
    let store = Store::open(root).with_context(|| format!("opening the store at {}", root.display()))?;
    let opts = BuildOptions {
        context: args.context.clone(),
        dockerfile,
        frontend,
        tags,
        vm: VmConfig { memory_mib: args.memory, cpus: args.cpus, cache_dir: crate::paths::cache_dir()?, debug: args.debug, shares: vec![] },
        no_cache: args.no_cache,
        ignore,
        labels,
        pull: Some(Box::new(pull_base(store.clone()))),
        fetch: Some(Box::new(fetch_url)),
        secrets,
        ssh,
        jobs,
        network_none: args.network == "none",
        no_cache_filter: args.no_cache_filter.clone(),
        platforms: if platforms.len() > 1 { platforms } else { Vec::new() },
    };
    let mode = if args.quiet { ProgressMode::Quiet } else { ProgressMode::parse(&args.progress).map_err(anyhow::Error::msg)? };
    let quiet = mode == ProgressMode::Quiet;
    let reporter = Reporter::with_mode(mode);
    let backend = ChosenLater { kind: args.backend.parse::<BackendKind>()?, cache_dir: opts.vm.cache_dir.clone() };
    cache_transfer::import_all(&store, &cache_from, quiet);
    let outcome = kiln_solver::build(&store, &backend, &opts, &reporter);
    let elapsed = reporter.elapsed();
    drop(reporter); // Clears the live progress region before anything else is printed.
    if let Err(kiln_solver::BuildError::StepFailed { state: Some(id), .. }) = &outcome {
        let short = id.hex().get(..12).unwrap_or(id.hex());
        eprintln!("kiln: the state before the failed step is kept as image {short}: look around with `kiln run -it --rm --entrypoint sh {short}`");
    }
    let outcome = outcome?;
    cache_transfer::export_all(&store, &cache_to, &outcome, quiet)?;
    cache_transfer::enforce_bound(&store, cache_max, quiet);
    if output != crate::output::Output::Image {
        let image = store.entry(&outcome.manifest)?;
        crate::output::export(&store, &output, opts.tags.first(), &image).context("exporting the build result")?;
    }
    if let Some(path) = &args.iidfile {
        std::fs::write(path, outcome.config.to_string()).with_context(|| format!("writing --iidfile {}", path.display()))?;
    }
    if args.quiet {
        println!("{}", outcome.config);
    } else if !quiet {
        let guest = outcome.guest.as_deref().unwrap_or("no VM needed");
        for p in &outcome.platforms {
            eprintln!("#done writing image {} for {} (manifest {})", p.config, p.platform, p.manifest);
        }
        let what = if outcome.platforms.is_empty() { "image" } else { "image index" };
        eprintln!("#done writing {what} {} ({} layers, {} steps cached; {guest})", outcome.config, outcome.layers, outcome.cached_steps);
        for t in &opts.tags {
            eprintln!("#done naming to {t}");
        }
        eprintln!("#done stored in {}", root.display());
        eprintln!("#done built in {elapsed:.1}s");
    }
    Ok(())
}

/// A platform as BuildKit normalises it for the build args: arm64's implied `v8` is dropped
/// (`TARGETPLATFORM=linux/arm64`, `TARGETVARIANT` empty).
fn frontend_platform(p: kiln_store::Platform) -> kiln_frontend::graph::Platform {
    let variant = p.variant.filter(|v| !(p.architecture == "arm64" && v == "v8"));
    kiln_frontend::graph::Platform { os: p.os, arch: p.architecture, variant }
}

/// `--platform a,b,...`: each parsed, checked to be buildable here (a linux platform whose
/// foreign architecture has a user-mode emulator), duplicates refused, before anything runs.
fn target_platforms(list: &str) -> Result<Vec<kiln_frontend::graph::Platform>> {
    let mut out: Vec<kiln_frontend::graph::Platform> = Vec::new();
    for item in list.split(',').map(str::trim) {
        // The store's parser validates each component; the frontend's type carries it on.
        let p = frontend_platform(kiln_store::Platform::parse(item).map_err(|e| anyhow::anyhow!("--platform: {e}"))?);
        kiln_runtime::emulate::find(&p).map_err(|e| anyhow::anyhow!("--platform {p}: cannot build here: {e}"))?;
        if out.iter().any(|o| o.os == p.os && o.arch == p.arch && o.variant == p.variant) {
            bail!("--platform: {p} is given twice");
        }
        out.push(p);
    }
    Ok(out)
}

/// The `.dockerignore` that applies: `<Dockerfile>.dockerignore` next to the Dockerfile, else
/// `.dockerignore` at the context root.
fn read_dockerignore(dockerfile: Option<&Path>, context: &Path) -> Result<Option<kiln_frontend::dockerignore::Dockerignore>> {
    let beside = dockerfile.map(|d| PathBuf::from(format!("{}.dockerignore", d.display())));
    for candidate in beside.into_iter().chain(std::iter::once(context.join(".dockerignore"))) {
        match std::fs::read_to_string(&candidate) {
            Ok(text) => {
                let ig = kiln_frontend::dockerignore::Dockerignore::parse(&text)
                    .map_err(|(line, why)| anyhow::anyhow!("{}:{line}: {why}", candidate.display()))?;
                return Ok(Some(ig));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("reading {}", candidate.display())),
        }
    }
    Ok(None)
}

/// FROM of an image the store lacks: pull it as `kiln pull` would (mirrors first).
fn pull_base(store: Store) -> impl Fn(&str, &str) -> std::result::Result<kiln_store::Digest, String> + Sync {
    move |name: &str, platform: &str| {
        let reference: Reference = name.parse().map_err(|e| format!("{e}"))?;
        let events = |_: kiln_registry::PullEvent| {};
        let platform = kiln_registry::manifest::Platform::parse(platform).map_err(|e| e.to_string())?;
        let opts = kiln_registry::PullOptions { platform: Some(platform), ..Default::default() };
        kiln_registry::pull_image(&store, &reference, &opts, &events)
            .map(|p| p.image)
            .map_err(|e| e.to_string())
    }
}

/// `ADD <url>`: the body in an anonymous temp file, and its Last-Modified time.
fn fetch_url(url: &str) -> std::result::Result<(std::fs::File, Option<i64>), String> {
    kiln_registry::download::fetch_to_file(url).map_err(|e| e.to_string())
}

/// `--ssh` values by id: `default` or `ID` alone take `auth_sock` ($SSH_AUTH_SOCK), `ID=SOCKET`
/// names the socket. Each must be a unix socket (an agent: key files are not supported).
fn parse_ssh_all(specs: &[String], auth_sock: Option<PathBuf>) -> Result<std::collections::BTreeMap<String, PathBuf>> {
    let mut out = std::collections::BTreeMap::new();
    for spec in specs {
        let (id, socket) = match spec.split_once('=') {
            Some((id, path)) if !id.is_empty() && !path.is_empty() && !path.contains(',') => (id, PathBuf::from(path)),
            Some(_) => bail!("invalid --ssh {spec:?}: expected default, ID or ID=SOCKET (one socket)"),
            None if spec.is_empty() => bail!("invalid --ssh \"\": expected default, ID or ID=SOCKET"),
            None => match &auth_sock {
                Some(sock) => (spec.as_str(), sock.clone()),
                None => bail!("--ssh {spec}: SSH_AUTH_SOCK is not set (start an agent, or give {spec}=SOCKET)"),
            },
        };
        let meta = std::fs::metadata(&socket).with_context(|| format!("--ssh {id}: {}", socket.display()))?;
        if !kiln_sys::fs::is_socket(&meta.file_type()) {
            bail!("--ssh {id}: {} is not a socket (kiln forwards an SSH agent's socket; key files are not supported)", socket.display());
        }
        if out.insert(id.to_string(), socket).is_some() {
            bail!("--ssh {id} is given twice");
        }
    }
    Ok(out)
}

/// `--secret id=ID[,src=FILE|,env=VAR]` (also `source=`, and `type=file|env`).
fn parse_secret(spec: &str) -> Result<(String, Vec<u8>)> {
    let (mut id, mut src, mut env) = (None, None, None);
    for field in spec.split(',') {
        match field.split_once('=') {
            Some(("id", v)) => id = Some(v.to_string()),
            Some(("src" | "source", v)) => src = Some(v.to_string()),
            Some(("env", v)) => env = Some(v.to_string()),
            Some(("type", "file" | "env")) => {}
            _ => bail!("invalid --secret {spec:?}: expected id=ID[,src=FILE|,env=VAR]"),
        }
    }
    let id = id.filter(|i| !i.is_empty()).with_context(|| format!("invalid --secret {spec:?}: id= is required"))?;
    let value = match (src, env) {
        (Some(_), Some(_)) => bail!("invalid --secret {spec:?}: give src= or env=, not both"),
        (Some(path), None) => std::fs::read(&path).with_context(|| format!("--secret {id}: reading {path}"))?,
        (None, var) => {
            let var = var.unwrap_or_else(|| id.clone());
            std::env::var(&var).with_context(|| format!("--secret {id}: environment variable {var} is not set"))?.into_bytes()
        }
    };
    Ok((id, value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ssh_specs_name_agent_sockets() {
        let dir = tempfile::tempdir().expect("tempdir");
        let sock = dir.path().join("agent.sock");
        let _listener = std::os::unix::net::UnixListener::bind(&sock).expect("bind");
        let file = dir.path().join("id_ed25519");
        std::fs::write(&file, "key").expect("file");
        let specs = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let got = parse_ssh_all(&specs(&["default", &format!("git={}", sock.display())]), Some(sock.clone())).expect("ok");
        assert_eq!(got.get("default"), Some(&sock));
        assert_eq!(got.get("git"), Some(&sock));
        let err = |v: &[&str], auth: Option<PathBuf>| parse_ssh_all(&specs(v), auth).expect_err("error").to_string();
        assert!(err(&["default"], None).contains("SSH_AUTH_SOCK is not set"));
        assert!(err(&[&format!("k={}", file.display())], None).contains("is not a socket"));
        assert!(err(&["k=/nonexistent/agent.sock"], None).contains("--ssh k: /nonexistent/agent.sock"));
        assert!(err(&["default", "default"], Some(sock.clone())).contains("given twice"));
        assert!(err(&["=x"], None).contains("invalid --ssh"));
    }
}
