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
use kiln_store::{archive, flatten, ImageEntry, ImageRecord, Reference, Store};

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

/// Exports the built image as asked. A multi-platform image goes whole into `oci` and
/// `docker` archives (they hold its index); `tar` and `local` hold one root filesystem per
/// platform under BuildKit's `linux_amd64/` directories.
pub fn export(store: &Store, output: &Output, name: Option<&Reference>, image: &ImageEntry) -> Result<()> {
    let parts = match image {
        ImageEntry::Image(img) => vec![(None, (**img).clone())],
        ImageEntry::Index(index) => index
            .entries
            .iter()
            .map(|e| Ok((Some(e.platform.dir_name()), store.image(&e.manifest)?)))
            .collect::<Result<Vec<_>>>()?,
    };
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
        Output::Tar { dest } => fileout::write(Some(dest), TERMINAL_HINT, |w| match parts.as_slice() {
            [(None, img)] => {
                flatten::flatten_image(store, img, w)?;
                Ok(())
            }
            _ => {
                let mut out = tar::Builder::new(w);
                for (dir, img) in &parts {
                    append_prefixed(store, img, dir.as_deref().unwrap_or("."), &mut out)?;
                }
                out.into_inner().context("finishing the tar")?;
                Ok(())
            }
        }),
        Output::Local { dest } => {
            for (dir, img) in &parts {
                let target = match dir {
                    Some(d) => dest.join(d),
                    None => dest.clone(),
                };
                unpack_local(store, img, &target)?;
            }
            Ok(())
        }
    }
}

/// Appends `img`'s flattened root filesystem to `out`, every path (and hard link target)
/// under `dir/`.
fn append_prefixed<W: std::io::Write>(store: &Store, img: &ImageRecord, dir: &str, out: &mut tar::Builder<W>) -> Result<()> {
    use std::io::Seek;
    let mut tmp = tempfile::tempfile().context("creating a temp file")?;
    flatten::flatten_image(store, img, std::io::BufWriter::new(&mut tmp))?;
    tmp.rewind().context("rewinding the rootfs tar")?;
    let mut archive = tar::Archive::new(std::io::BufReader::new(tmp));
    let mut top = tar::Header::new_ustar();
    top.set_entry_type(tar::EntryType::Directory);
    top.set_mode(0o755);
    top.set_size(0);
    out.append_data(&mut top, format!("{dir}/"), std::io::empty()).context("writing the tar")?;
    for entry in archive.entries().context("reading the rootfs tar")? {
        let mut entry = entry.context("reading the rootfs tar")?;
        let path = format!("{dir}/{}", entry.path().context("an entry's path")?.display());
        let mut header = entry.header().clone();
        if header.entry_type().is_hard_link() {
            let target = entry.link_name().context("a link's target")?.map(|t| format!("{dir}/{}", t.display())).unwrap_or_default();
            out.append_link(&mut header, &path, &target).context("writing the tar")?;
        } else if header.entry_type().is_symlink() {
            let target = entry.link_name().context("a link's target")?.map(|t| t.into_owned()).unwrap_or_default();
            out.append_link(&mut header, &path, &target).context("writing the tar")?;
        } else {
            out.append_data(&mut header, &path, &mut entry).context("writing the tar")?;
        }
    }
    Ok(())
}

fn unpack_local(store: &Store, image: &ImageRecord, dest: &Path) -> Result<()> {
    std::fs::create_dir_all(dest).with_context(|| format!("creating {}", dest.display()))?;
    // Flatten to a temp file first: unpacking straight from layers would let a lower layer's
    // entry land under a path a higher layer replaced.
    let mut tmp = tempfile::tempfile().context("creating a temp file")?;
    flatten::flatten_image(store, image, std::io::BufWriter::new(&mut tmp))?;
    use std::io::Seek;
    tmp.rewind().context("rewinding the rootfs tar")?;
    // On a host that refuses some names (Windows: `a\..`, `C:`, `CON`...), a path it would
    // read differently refuses the whole export before anything is written.
    if kiln_sys::fs::RESTRICTED_NAMES {
        for entry in tar::Archive::new(std::io::BufReader::new(&mut tmp)).entries().context("reading the rootfs tar")? {
            let entry = entry.context("reading the rootfs tar")?;
            if let Some(why) = kiln_sys::fs::host_path_problem(&String::from_utf8_lossy(&entry.path_bytes())) {
                bail!("cannot export the image to {} on this host: {why}", dest.display());
            }
        }
        tmp.rewind().context("rewinding the rootfs tar")?;
    }
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
