//! `kiln import FILE|URL|- [NAME]`: a root filesystem tarball (plain, gzip or zstd) becomes a
//! one-layer image, with `--change` instructions applied to its config and `-m` as comment.

use std::io::{IsTerminal, Read};
use std::path::Path;

use anyhow::{bail, Context, Result};
use clap::Args;
use kiln_store::image::{History, RunConfig};
use kiln_store::{layer_read, NewImage, Reference, Store};

#[derive(Args)]
pub struct ImportArgs {
    /// Apply a Dockerfile instruction to the image (CMD, ENTRYPOINT, ENV, WORKDIR); repeatable
    #[arg(short = 'c', long = "change")]
    changes: Vec<String>,
    /// Commit message recorded in the image history
    #[arg(short = 'm', long = "message")]
    message: Option<String>,
    /// Platform of the image: os/arch (default linux and this machine's architecture)
    #[arg(long)]
    platform: Option<String>,
    /// Tarball to import: a file, an http(s) URL, or "-" for stdin
    file: String,
    /// Name for the image: [host/]repository[:tag]
    name: Option<String>,
}

/// Applies `--change` lines with the Dockerfile frontend's config semantics (the
/// instructions `docker import --change` accepts).
pub(crate) fn apply_changes(config: &mut RunConfig, changes: &[String]) -> Result<()> {
    let (mut image, extra) = kiln_solver::convert::from_store(config);
    for change in changes {
        let fail = |e: String| anyhow::anyhow!("--change {change:?}: {}", e.replace("Dockerfile:2: ", ""));
        let df = kiln_frontend::parse_full(&format!("FROM scratch\n{change}\n")).map_err(|e| fail(e.to_string()))?;
        let lexer = kiln_frontend::shell::Lexer::new(df.escape);
        for located in df.stages.iter().flat_map(|s| &s.commands) {
            use kiln_frontend::command::Command as C;
            if !matches!(
                located.command,
                C::Cmd(_) | C::Entrypoint(_) | C::Env(_) | C::Expose(_) | C::Label(_) | C::Onbuild { .. } | C::User(_) | C::Volume(_) | C::Workdir(_)
            ) {
                bail!("--change {change:?}: only CMD, ENTRYPOINT, ENV, EXPOSE, LABEL, ONBUILD, USER, VOLUME and WORKDIR can be changed");
            }
            let expanded = located.expand(&lexer, &image.env_pairs()).map_err(|e| fail(e.to_string()))?;
            let mut stage = kiln_frontend::config::StageConfig::from_base(image);
            stage.apply(&expanded.command).map_err(fail)?;
            image = stage.config;
        }
    }
    *config = kiln_solver::convert::to_store(&image, &extra);
    Ok(())
}

pub fn run(root: &Path, args: ImportArgs) -> Result<()> {
    let name = match &args.name {
        Some(n) => {
            let r: Reference = n.parse().with_context(|| format!("image name {n:?}"))?;
            if r.digest.is_some() {
                bail!("image name {n:?}: an imported image cannot be named by digest");
            }
            Some(r)
        }
        None => None,
    };
    let (os, architecture, variant) = match args.platform.as_deref() {
        None => ("linux".to_string(), kiln_runtime::emulate::host_arch().to_string(), None),
        Some(p) => {
            let p = kiln_store::Platform::parse(p).map_err(|e| anyhow::anyhow!("--platform: {e}"))?;
            (p.os, p.architecture, p.variant)
        }
    };
    let mut config = RunConfig {
        env: Some(vec!["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into()]),
        ..Default::default()
    };
    apply_changes(&mut config, &args.changes)?;
    let created = kiln_solver::time::rfc3339(kiln_solver::time::created_seconds().map_err(anyhow::Error::msg)?);

    let store = Store::open(root).with_context(|| format!("opening the store at {}", root.display()))?;
    let input: Box<dyn Read> = if args.file.contains("://") {
        kiln_registry::download::open_url(&args.file)?
    } else if args.file == "-" {
        if std::io::stdin().is_terminal() {
            bail!("requested import from stdin, but stdin is a terminal");
        }
        Box::new(std::io::stdin().lock())
    } else {
        Box::new(std::fs::File::open(&args.file).with_context(|| format!("opening {}", args.file))?)
    };
    let staging = store.staging()?;
    let (plain, _) = layer_read::open_tar(input).with_context(|| format!("importing {}", args.file))?;
    let layer = staging.store().ingest_layer(plain).with_context(|| format!("importing {}", args.file))?;
    let source = if args.file == "-" { "-".to_string() } else { args.file.clone() };
    let history = vec![History {
        created: Some(created.clone()),
        created_by: Some(format!("kiln import {source}")),
        comment: Some(args.message.clone().unwrap_or_else(|| format!("Imported from {source}"))),
        empty_layer: false,
    }];
    let image = NewImage { layers: vec![layer], config, history, created, architecture, os, author: None, variant };
    let names: Vec<Reference> = name.into_iter().collect();
    let manifest = staging.commit(image, &names)?;
    println!("{}", store.image(&manifest)?.config_digest);
    Ok(())
}
