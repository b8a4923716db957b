//! `kiln cp CONTAINER:SRC HOSTDEST` and `kiln cp HOSTSRC CONTAINER:DEST`
//! ([`kiln_runtime::container::copy`]: the host never follows a path the container controls).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Args;
use kiln_runtime::container::control::{request, ControlRequest};
use kiln_runtime::container::copy::{copy_in, copy_out};
use kiln_runtime::container::Containers;
use kiln_store::Store;

#[derive(Args)]
pub struct CpArgs {
    /// CONTAINER:PATH or a host path
    src: String,
    /// CONTAINER:PATH or a host path
    dest: String,
}

/// `NAME:PATH` -> (NAME, PATH); a host path (absolute, or with no ':' before a '/') -> None.
fn container_side(arg: &str) -> Option<(&str, &str)> {
    if arg.starts_with('/') || arg.starts_with('.') {
        return None;
    }
    let (name, path) = arg.split_once(':')?;
    (!name.is_empty() && !name.contains('/')).then_some((name, path))
}

pub fn run(root: &Path, args: CpArgs) -> Result<()> {
    let containers = Containers::new(root);
    match (container_side(&args.src), container_side(&args.dest)) {
        (Some((name, path)), None) => {
            let c = containers.get(name)?;
            if c.is_running() {
                request(&c.dir, &ControlRequest::Save).context("saving the running container's changes")?;
            }
            let store = Store::open(root).with_context(|| format!("opening the store at {}", root.display()))?;
            copy_out(&store, &c, if path.is_empty() { "/" } else { path }, &PathBuf::from(&args.dest))?;
            Ok(())
        }
        (None, Some((name, path))) => {
            let c = containers.get(name)?;
            copy_in(&c, Path::new(&args.src), if path.is_empty() { "/" } else { path })?;
            Ok(())
        }
        (Some(_), Some(_)) => bail!("copying between containers is not supported"),
        (None, None) => bail!("must specify at least one container source: CONTAINER:PATH"),
    }
}
