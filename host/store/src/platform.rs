//! Image platforms (`linux/arm64/v8`) as manifests, indexes and configs record them, and which
//! index entry serves a wanted platform. Pure; the registry and the CLI use this one type.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::StoreError;

/// An OCI platform (`os`, `architecture`, optional `variant`). Read from JSON (indexes of
/// archives and registries), each component is validated as [`Platform::parse`] does.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "RawPlatform")]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

/// A platform as JSON has it, before validation.
#[derive(Deserialize)]
struct RawPlatform {
    os: String,
    architecture: String,
    #[serde(default)]
    variant: Option<String>,
}

impl TryFrom<RawPlatform> for Platform {
    type Error = StoreError;

    fn try_from(raw: RawPlatform) -> Result<Self, StoreError> {
        if [&raw.os, &raw.architecture].into_iter().chain(&raw.variant).any(|c| c.contains('/')) {
            return Err(StoreError::BadPlatform(format!("{:?}/{:?}: a component contains '/'", raw.os, raw.architecture)));
        }
        let text = match &raw.variant {
            Some(v) => format!("{}/{}/{v}", raw.os, raw.architecture),
            None => format!("{}/{}", raw.os, raw.architecture),
        };
        Platform::parse(&text)
    }
}

impl Platform {
    /// Parses `os/arch[/variant]`, normalising the usual aliases (`x86_64` → `amd64`,
    /// `aarch64` → `arm64`).
    pub fn parse(s: &str) -> Result<Self, StoreError> {
        let bad = || StoreError::BadPlatform(format!("{s:?}: expected os/arch[/variant], e.g. linux/amd64"));
        let parts: Vec<&str> = s.trim().split('/').collect();
        let (os, arch, variant) = match parts.as_slice() {
            [os, arch] => (*os, *arch, None),
            [os, arch, v] => (*os, *arch, Some(v.to_ascii_lowercase())),
            _ => return Err(bad()),
        };
        let valid = |p: &str| !p.is_empty() && !p.starts_with('.') && p.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.');
        if !valid(os) || !valid(arch) || variant.as_deref().is_some_and(|v| !valid(v)) {
            return Err(bad());
        }
        let architecture = match arch.to_ascii_lowercase().as_str() {
            "x86_64" | "x86-64" => "amd64".to_string(),
            "aarch64" => "arm64".to_string(),
            "i386" | "i686" => "386".to_string(),
            a => a.to_string(),
        };
        Ok(Self { os: os.to_ascii_lowercase(), architecture, variant })
    }

    /// The platform that runs natively here: `linux/` + [`native_arch`].
    pub fn host() -> Self {
        let architecture = native_arch();
        let variant = (architecture == "arm64").then(|| "v8".to_string());
        Self { os: "linux".into(), architecture: architecture.into(), variant }
    }

    /// The variant with the implied defaults filled in (arm64 is `v8` unless it says otherwise).
    fn normal_variant(&self) -> Option<String> {
        match (self.architecture.as_str(), self.variant.as_deref()) {
            ("arm64", None) => Some("v8".to_string()),
            _ => self.variant.clone(),
        }
    }

    /// Whether an image of platform `other` serves a request for this one: same os and
    /// architecture, and the same variant when this one names a variant.
    pub fn matches(&self, other: &Platform) -> bool {
        self.os == other.os && self.architecture == other.architecture && (self.variant.is_none() || self.normal_variant() == other.normal_variant())
    }

    /// BuildKit's directory name for this platform in a multi-platform local export
    /// (`linux_arm64`, `linux_arm_v7`).
    pub fn dir_name(&self) -> String {
        self.to_string().replace('/', "_")
    }
}

/// The architecture kiln's guest runs natively (OCI naming): the guest's, which is
/// `KILN_GUEST_ARCH` (`x86_64`/`amd64` or `arm64`/`aarch64`) when set, else this machine's.
/// Images of this architecture run without emulation and are what an index offers by default.
pub fn native_arch() -> &'static str {
    match std::env::var("KILN_GUEST_ARCH").as_deref() {
        Ok("x86_64" | "amd64") => return "amd64",
        Ok("arm64" | "aarch64") => return "arm64",
        _ => {}
    }
    machine_arch()
}

/// This machine's own architecture (OCI naming), whatever guest kiln runs: what its binaries
/// (the host's `qemu-*-static` emulators among them) are built for.
pub fn machine_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "arm" => "arm",
        "powerpc64" => "ppc64le",
        "s390x" => "s390x",
        "riscv64" => "riscv64",
        other => other,
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_normalises_and_matches() {
        let p = |s: &str| Platform::parse(s).expect(s);
        assert_eq!(p("linux/aarch64").to_string(), "linux/arm64");
        assert_eq!(p("Linux/x86_64").to_string(), "linux/amd64");
        assert_eq!(p("linux/arm/v7").dir_name(), "linux_arm_v7");
        for bad in ["linux", "linux//v7", "a/b/c/d", "", "linux/amd64/", "linux/../x", "linux/a b"] {
            assert!(Platform::parse(bad).is_err(), "{bad}");
        }
        assert!(p("linux/arm64").matches(&p("linux/arm64/v8")));
        assert!(p("linux/arm64/v8").matches(&p("linux/arm64")));
        assert!(!p("linux/arm/v7").matches(&p("linux/arm/v6")));
        assert!(p("linux/arm").matches(&p("linux/arm/v6")));
        assert!(!p("linux/amd64").matches(&p("linux/arm64")));
    }
}
