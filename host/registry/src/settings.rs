//! kiln's own registry settings: which registries speak plain HTTP, which CA file verifies a
//! registry's TLS certificate, and which mirrors to try first for pulls.
//!
//! Read from `$KILN_REGISTRIES_CONFIG`, else `$XDG_CONFIG_HOME/kiln/registries.json`, else
//! `~/.config/kiln/registries.json`; a missing file means defaults:
//! ```json
//! { "registries": { "docker.io": { "mirrors": ["mirror.local:5000"] },
//!                   "10.0.0.5:5000": { "insecure": true },
//!                   "127.0.0.1:5443": { "ca": "/path/to/ca.pem" },
//!                   "10.0.0.6:5443": { "tls_verify": false } } }
//! ```
//! Plain HTTP is used only for loopback registries (`localhost`, `127.0.0.0/8`, `::1`) and
//! those marked `insecure`, and never for a registry that has a `ca` or a `tls_verify`
//! setting: everything else is HTTPS, verified unless `tls_verify` is `false` (self-signed
//! certificates, like Docker's insecure registries).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::RegistryError;

/// Settings of one registry.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistrySettings {
    /// Plain HTTP.
    #[serde(default)]
    pub insecure: bool,
    /// PEM file with the CA certificate(s) that verify this registry (HTTPS then, even on
    /// loopback).
    #[serde(default)]
    pub ca: Option<PathBuf>,
    /// `false`: HTTPS without checking the certificate (even on loopback).
    #[serde(default)]
    pub tls_verify: Option<bool>,
    /// Hosts to pull from first (same repository paths), in order.
    #[serde(default)]
    pub mirrors: Vec<String>,
}

/// All registry settings.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    #[serde(default)]
    pub registries: BTreeMap<String, RegistrySettings>,
}

impl Settings {
    /// Reads the settings file from its default place (see the module docs).
    pub fn load_default() -> Result<Self, RegistryError> {
        match default_path() {
            Some(p) => Self::load(&p),
            None => Ok(Self::default()),
        }
    }

    /// Reads a settings file; a missing file is the defaults.
    pub fn load(path: &Path) -> Result<Self, RegistryError> {
        match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| RegistryError::config(format!("reading {}", path.display()), e)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(RegistryError::io(format!("reading {}", path.display()), e)),
        }
    }

    /// Settings of `domain` (defaults when unlisted).
    pub fn get(&self, domain: &str) -> RegistrySettings {
        self.registries.get(domain).cloned().unwrap_or_default()
    }

    /// Whether `domain` is reached over plain HTTP.
    pub fn plain_http(&self, domain: &str) -> bool {
        let s = self.get(domain);
        s.ca.is_none() && s.tls_verify.is_none() && (s.insecure || is_loopback(domain))
    }
}

fn default_path() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("KILN_REGISTRIES_CONFIG").filter(|v| !v.is_empty()) {
        return Some(PathBuf::from(p));
    }
    if let Some(d) = std::env::var_os("XDG_CONFIG_HOME").filter(|v| !v.is_empty()) {
        return Some(PathBuf::from(d).join("kiln/registries.json"));
    }
    std::env::var_os("HOME").filter(|v| !v.is_empty()).map(|h| PathBuf::from(h).join(".config/kiln/registries.json"))
}

/// `localhost`, `127.x.y.z` or `[::1]`, with or without a port.
pub fn is_loopback(domain: &str) -> bool {
    let host = if let Some(rest) = domain.strip_prefix('[') {
        rest.split(']').next().unwrap_or_default()
    } else {
        domain.rsplit_once(':').map_or(domain, |(h, _)| h)
    };
    host == "localhost" || host == "::1" || host.parse::<std::net::Ipv4Addr>().is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_or_insecure_is_plain_http() {
        let s: Settings = serde_json::from_str(r#"{"registries":{"a.test":{"insecure":true},"127.0.0.1:9":{"ca":"/x"}}}"#).expect("parse");
        assert!(s.plain_http("localhost:5000"));
        assert!(s.plain_http("127.0.0.1:5000"));
        assert!(s.plain_http("[::1]:5000"));
        assert!(s.plain_http("a.test"));
        assert!(!s.plain_http("127.0.0.1:9"));
        assert!(!s.plain_http("docker.io"));
        assert!(!s.plain_http("127.example.com"));
    }
}
