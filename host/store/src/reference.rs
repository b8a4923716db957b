//! Image references with Docker's rules: `app` means `docker.io/library/app:latest`.
//!
//! Grammar (from the distribution reference spec): a name is `[domain/]path`, path components
//! are `[a-z0-9]+(([._]|__|-+)[a-z0-9]+)*`, a domain is the first component when it contains
//! `.` or `:` or is `localhost`; a tag is `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`; a digest is
//! `@sha256:<hex>`. Names are at most 255 characters.

use std::fmt;
use std::str::FromStr;

use crate::digest::Digest;
use crate::StoreError;

const DEFAULT_DOMAIN: &str = "docker.io";
const DEFAULT_TAG: &str = "latest";
const MAX_NAME_LEN: usize = 255;

/// A fully qualified reference.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Reference {
    pub domain: String,
    pub path: String,
    pub tag: Option<String>,
    pub digest: Option<Digest>,
}

fn bad(reference: &str, why: &str) -> StoreError {
    StoreError::BadReference { reference: reference.into(), why: why.into() }
}

fn valid_component(c: &str) -> bool {
    let b = c.as_bytes();
    if b.is_empty() || !is_alnum(b[0]) || !is_alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if is_alnum(b[i]) {
            i += 1;
            continue;
        }
        // A separator run: ".", "_", "__", or one or more "-".
        let start = i;
        while i < b.len() && !is_alnum(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-');
        if !ok {
            return false;
        }
    }
    true
}

fn is_alnum(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit()
}

fn valid_domain(d: &str) -> bool {
    let (host, port) = match d.rsplit_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (d, None),
    };
    let host_ok = !host.is_empty()
        && host.split('.').all(|l| {
            !l.is_empty()
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        });
    let port_ok = port.is_none_or(|p| !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()));
    host_ok && port_ok
}

fn valid_tag(t: &str) -> bool {
    let b = t.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b.iter().all(|&c| c.is_ascii_alphanumeric() || c == b'_' || c == b'.' || c == b'-')
}

impl FromStr for Reference {
    type Err = StoreError;

    fn from_str(s: &str) -> Result<Self, StoreError> {
        if s.is_empty() {
            return Err(bad(s, "empty reference"));
        }
        let (rest, digest) = match s.split_once('@') {
            Some((r, d)) => (r, Some(d.parse::<Digest>().map_err(|_| bad(s, "invalid digest"))?)),
            None => (s, None),
        };
        // A tag follows the last ':' that comes after the last '/'.
        let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => (&rest[..last_slash + i], Some(&rest[last_slash + i + 1..])),
            None => (rest, None),
        };
        if let Some(t) = tag {
            if !valid_tag(t) {
                return Err(bad(s, "invalid tag (allowed: letters, digits, _ . -, at most 128, not starting with . or -)"));
            }
        }
        if name.len() > MAX_NAME_LEN {
            return Err(bad(s, "repository name must not be longer than 255 characters"));
        }
        let (domain, path) = match name.split_once('/') {
            Some((first, rest)) if first.contains('.') || first.contains(':') || first == "localhost" => {
                if !valid_domain(first) {
                    return Err(bad(s, "invalid registry host"));
                }
                (first.to_string(), rest.to_string())
            }
            _ => (DEFAULT_DOMAIN.to_string(), name.to_string()),
        };
        if name.bytes().any(|b| b.is_ascii_uppercase()) && path.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(bad(s, "repository name must be lowercase"));
        }
        if path.is_empty() || !path.split('/').all(valid_component) {
            return Err(bad(s, "invalid repository name (lowercase letters, digits and separators . _ __ - between them)"));
        }
        let path = if domain == DEFAULT_DOMAIN && !path.contains('/') { format!("library/{path}") } else { path };
        let tag = match (tag, &digest) {
            (Some(t), _) => Some(t.to_string()),
            (None, None) => Some(DEFAULT_TAG.to_string()),
            (None, Some(_)) => None,
        };
        Ok(Self { domain, path, tag, digest })
    }
}

impl Reference {
    /// `domain/path` without tag or digest.
    pub fn repository(&self) -> String {
        format!("{}/{}", self.domain, self.path)
    }

    /// The short form Docker prints: `app:latest` for `docker.io/library/app:latest`.
    pub fn familiar(&self) -> String {
        let repo = if self.domain == DEFAULT_DOMAIN {
            self.path.strip_prefix("library/").unwrap_or(&self.path).to_string()
        } else {
            self.repository()
        };
        let mut out = repo;
        if let Some(t) = &self.tag {
            out.push(':');
            out.push_str(t);
        }
        if let Some(d) = &self.digest {
            out.push('@');
            out.push_str(&d.to_string());
        }
        out
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.repository())?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full(s: &str) -> String {
        s.parse::<Reference>().map(|r| r.to_string()).unwrap_or_else(|e| format!("ERR {e}"))
    }

    #[test]
    fn normalises_like_docker() {
        assert_eq!(full("nginx"), "docker.io/library/nginx:latest");
        assert_eq!(full("user/app:v1"), "docker.io/user/app:v1");
        assert_eq!(full("localhost:5000/ns/app:v1"), "localhost:5000/ns/app:v1");
        assert_eq!(full("localhost/app"), "localhost/app:latest");
        assert_eq!(full("quay.io/a/b_c__d-e--f.g"), "quay.io/a/b_c__d-e--f.g:latest");
        let d = format!("sha256:{}", "a".repeat(64));
        assert_eq!(full(&format!("app@{d}")), format!("docker.io/library/app@{d}"));
        assert_eq!(full(&format!("app:1@{d}")), format!("docker.io/library/app:1@{d}"));
        let r: Reference = "app:1.0".parse().expect("valid");
        assert_eq!(r.familiar(), "app:1.0");
    }

    #[test]
    fn rejects_what_docker_rejects() {
        for bad in ["", "App", "app:", ":tag", "a//b", "-app", "app-", "a..b", "a___b", "app:-x",
            "app@sha256:abc", "host:port/app", "app:t/x"] {
            assert!(bad.parse::<Reference>().is_err(), "{bad:?} should be rejected");
        }
        let long_tag = format!("app:{}", "t".repeat(129));
        assert!(long_tag.parse::<Reference>().is_err());
        let long_name = "a".repeat(256);
        assert!(long_name.parse::<Reference>().is_err());
    }
}
