//! Hand-made tars for the tests: members written raw, so hostile names (`..`, absolute
//! paths), links out of the tree, device nodes and size claims with no data get through.

/// One tar member for hand-made (possibly hostile) archives and layers.
pub enum M<'a> {
    File(&'a str, Vec<u8>),
    Symlink(&'a str, &'a str),
    Hardlink(&'a str, &'a str),
    /// A header of the given type claiming `size` bytes, with no data after it.
    Claim(&'a str, tar::EntryType, u64),
}

/// A tar of `members`, names written raw so hostile ones get through.
pub fn tar_of(members: &[M]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for m in members {
        let mut h = tar::Header::new_old();
        let (name, data, kind, link): (&str, &[u8], tar::EntryType, Option<&str>) = match m {
            M::File(n, d) => (n, d, tar::EntryType::Regular, None),
            M::Symlink(n, l) => (n, b"", tar::EntryType::Symlink, Some(l)),
            M::Hardlink(n, l) => (n, b"", tar::EntryType::Link, Some(l)),
            M::Claim(n, kind, size) => {
                let mut h = tar::Header::new_gnu();
                h.set_path(n).expect("path");
                h.set_mode(0o644);
                h.set_entry_type(*kind);
                if *kind == tar::EntryType::GNUSparse {
                    // A sparse file claiming 10 GB of (implicit) zeros in no data at all.
                    let real = format!("{:012o}", 10u64 << 30);
                    h.as_gnu_mut().expect("gnu").realsize.copy_from_slice(real.as_bytes());
                    h.set_size(0);
                } else {
                    h.set_size(*size);
                }
                h.set_cksum();
                // Only the header: the data it claims never comes.
                let mut raw = b.get_ref().clone();
                raw.extend_from_slice(h.as_bytes());
                *b.get_mut() = raw;
                continue;
            }
        };
        h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
        if let Some(l) = link {
            h.as_old_mut().linkname[..l.len()].copy_from_slice(l.as_bytes());
        }
        h.set_entry_type(kind);
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append(&h, data).expect("append");
    }
    b.into_inner().expect("tar")
}

