//! Platforms (`linux/arm64/v8`) and the predefined build arguments derived from them.

use std::fmt;

/// An OCI platform.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Platform {
    pub os: String,
    pub arch: String,
    pub variant: Option<String>,
}

impl Platform {
    /// Parses `os/arch[/variant]`, normalising the usual aliases (`x86_64` → `amd64`, `aarch64` → `arm64`).
    pub fn parse(s: &str) -> Result<Self, String> {
        let parts: Vec<&str> = s.split('/').collect();
        let bad = || format!("invalid platform {s:?}: expected os/arch[/variant]");
        let (os, arch, variant) = match parts.as_slice() {
            [os, arch] => (*os, *arch, None),
            [os, arch, v] => (*os, *arch, Some(v.to_string())),
            _ => return Err(bad()),
        };
        if os.is_empty() || arch.is_empty() || variant.as_deref() == Some("") {
            return Err(bad());
        }
        let arch = match arch.to_ascii_lowercase().as_str() {
            "x86_64" | "x86-64" => "amd64".to_string(),
            "aarch64" => "arm64".to_string(),
            "i386" | "i686" => "386".to_string(),
            a => a.to_string(),
        };
        Ok(Self { os: os.to_ascii_lowercase(), arch, variant })
    }

    /// linux/amd64.
    pub fn linux_amd64() -> Self {
        Self { os: "linux".into(), arch: "amd64".into(), variant: None }
    }

    /// `TARGETPLATFORM`-style args: `{prefix}PLATFORM`, `{prefix}OS`, `{prefix}ARCH`, `{prefix}VARIANT`.
    pub fn args(&self, prefix: &str) -> Vec<(String, String)> {
        vec![
            (format!("{prefix}PLATFORM"), self.to_string()),
            (format!("{prefix}OS"), self.os.clone()),
            (format!("{prefix}ARCH"), self.arch.clone()),
            (format!("{prefix}VARIANT"), self.variant.clone().unwrap_or_default()),
        ]
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.arch)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

/// Build args every Dockerfile may use without declaring them in RUN (not recorded in history),
/// and that are never reported as unused.
pub const PROXY_ARGS: &[&str] =
    &["HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "FTP_PROXY", "ftp_proxy", "NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy"];

/// Names of the automatic platform args (global scope; a stage must declare them with ARG).
pub fn is_platform_arg(name: &str) -> bool {
    ["TARGET", "BUILD"].iter().any(|p| name.strip_prefix(p).is_some_and(|rest| matches!(rest, "PLATFORM" | "OS" | "ARCH" | "VARIANT")))
        || name == "TARGETSTAGE"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn platforms() {
        let p = Platform::parse("linux/aarch64/v8").expect("p");
        assert_eq!(p.to_string(), "linux/arm64/v8");
        assert_eq!(p.args("TARGET")[2], ("TARGETARCH".to_string(), "arm64".to_string()));
        assert!(Platform::parse("linux").is_err());
        assert!(Platform::parse("linux//v7").is_err());
        assert!(is_platform_arg("BUILDOS") && is_platform_arg("TARGETVARIANT") && !is_platform_arg("TARGET"));
    }
}
