//! `kiln build --output`: where a built image goes besides the store.
//!
//! `type=image` (the default: the store only), `type=oci,dest=FILE` and `type=docker,dest=FILE`
//! (archives, as `kiln save --format`), `type=tar,dest=FILE|-` (the flattened root filesystem),
//! `type=local,dest=DIR` (that filesystem unpacked). A bare `-o DIR` means `type=local,dest=DIR`.
//! Files are written through [`fileout::write`] (temp file beside the destination, renamed),
//! so a failed export leaves no partial file; `local` unpacks with the tar crate's `unpack_in`, which refuses
//! paths that leave the destination (`..`, absolute paths, writes through symlinks).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use kiln_store::{archive, flatten, ImageRecord, Reference, Store};

use crate::fileout;

const TERMINAL_HINT: &str = "refusing to write a tar to a terminal: give dest=FILE or redirect stdout";

/// A parsed `--output` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    Image,
    Archive { format: archive::Format, dest: PathBuf },
    Tar { dest: PathBuf },
    Local { dest: PathBuf },
}

impl Output {
    pub fn parse(spec: &str) -> Result<Self> {
        if !spec.contains('=') {
            return Ok(Self::Local { dest: PathBuf::from(spec) });
        }
        let mut kind = None;
        let mut dest = None;
        for part in spec.split(',') {
            match part.split_once('=') {
                Some(("type", v)) => kind = Some(v),
                Some(("dest", v)) if !v.is_empty() => dest = Some(PathBuf::from(v)),
                _ => bail!("invalid --output {spec:?}: unknown or malformed attribute {part:?} (expected type=...,dest=...)"),
            }
        }
        let need_dest = |t: &str| dest.clone().with_context(|| format!("--output type={t} needs dest=PATH"));
        Ok(match kind {
            Some("image") | None if dest.is_none() => Self::Image,
            Some("oci") => Self::Archive { format: archive::Format::Oci, dest: need_dest("oci")? },
            Some("docker") => Self::Archive { format: archive::Format::Docker, dest: need_dest("docker")? },
            Some("tar") => Self::Tar { dest: need_dest("tar")? },
            Some("local") => Self::Local { dest: need_dest("local")? },
            Some(other) => bail!("invalid --output type {other:?}: expected image, oci, docker, tar or local"),
            None => bail!("invalid --output {spec:?}: missing type="),
        })
    }
}

/// Exports the built image as asked.
pub fn export(store: &Store, output: &Output, name: Option<&Reference>, image: &ImageRecord) -> Result<()> {
    match output {
        Output::Image => Ok(()),
        Output::Archive { format, dest } => {
            let name = match name {
                Some(n) => n.clone(),
                None => bail!("--output type=oci|docker needs a name for the image: add -t NAME"),
            };
            let images = [(name, image.clone())];
            fileout::write(Some(dest), TERMINAL_HINT, |w| {
                archive::write_archive_as(store, &images, *format, w)?;
                Ok(())
            })
        }
        Output::Tar { dest } => fileout::write(Some(dest), TERMINAL_HINT, |w| {
            flatten::flatten_image(store, image, w)?;
            Ok(())
        }),
        Output::Local { dest } => unpack_local(store, image, dest),
    }
}

fn unpack_local(store: &Store, image: &ImageRecord, dest: &Path) -> Result<()> {
    std::fs::create_dir_all(dest).with_context(|| format!("creating {}", dest.display()))?;
    // Flatten to a temp file first: unpacking straight from layers would let a lower layer's
    // entry land under a path a higher layer replaced.
    let mut tmp = tempfile::tempfile().context("creating a temp file")?;
    flatten::flatten_image(store, image, std::io::BufWriter::new(&mut tmp))?;
    use std::io::Seek;
    tmp.rewind().context("rewinding the rootfs tar")?;
    let mut archive = tar::Archive::new(std::io::BufReader::new(tmp));
    // Modes without setuid, setgid and sticky bits: an image's setuid binary must not become
    // one on the host.
    archive.set_preserve_permissions(false);
    archive.set_overwrite(true);
    for entry in archive.entries().context("reading the rootfs tar")? {
        let mut entry = entry.context("reading the rootfs tar")?;
        let kind = entry.header().entry_type();
        if kind.is_character_special() || kind.is_block_special() {
            // Device nodes cannot be made without privileges; the rest of the tree still can.
            let path = entry.path().map(|p| p.display().to_string()).unwrap_or_default();
            eprintln!("kiln: warning: skipping device node {path} in --output type=local");
            continue;
        }
        let path = entry.path().map(|p| p.display().to_string()).unwrap_or_default();
        let inside = entry.unpack_in(dest).with_context(|| format!("unpacking {path} into {}", dest.display()))?;
        if !inside {
            bail!("refusing to unpack {path}: it would land outside {}", dest.display());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_specs() {
        assert_eq!(Output::parse("out").expect("ok"), Output::Local { dest: "out".into() });
        assert_eq!(Output::parse("type=image").expect("ok"), Output::Image);
        assert_eq!(Output::parse("type=tar,dest=-").expect("ok"), Output::Tar { dest: "-".into() });
        assert_eq!(
            Output::parse("type=oci,dest=a.tar").expect("ok"),
            Output::Archive { format: archive::Format::Oci, dest: "a.tar".into() }
        );
        for bad in ["type=oci", "type=local", "type=zip,dest=x", "dest=x", "type=tar,dest=x,foo=1"] {
            assert!(Output::parse(bad).is_err(), "{bad}");
        }
    }
}
