//! Checking credentials against a registry (`kiln login`) and naming registries the way
//! `docker login` accepts them (`https://host:5000/v1/`, `index.docker.io`, …).

use ureq::http::Method;

use crate::client::{error_detail, Client, Payload};
use crate::{Credentials, RegistryError, Settings};

/// The registry domain a `kiln login` argument names: scheme and path dropped, Docker Hub's
/// aliases folded into `docker.io`.
pub fn registry_domain(arg: Option<&str>) -> Result<String, RegistryError> {
    let Some(arg) = arg.map(str::trim).filter(|a| !a.is_empty()) else { return Ok("docker.io".into()) };
    let rest = arg.strip_prefix("https://").or_else(|| arg.strip_prefix("http://")).unwrap_or(arg);
    let host = rest.split('/').next().unwrap_or(rest).to_ascii_lowercase();
    if host.is_empty() || host.contains(|c: char| c.is_whitespace() || c == '@') {
        return Err(RegistryError::invalid(format!("invalid registry {arg:?}")));
    }
    Ok(match host.as_str() {
        "index.docker.io" | "registry-1.docker.io" => "docker.io".into(),
        _ => host,
    })
}

/// Checks that `creds` open `domain`'s `/v2/` (answering its Basic or bearer challenge).
pub fn check_credentials(domain: &str, settings: &Settings, creds: Credentials) -> Result<(), RegistryError> {
    let client = Client::new(domain, settings, Some(creds))?;
    let what = format!("logging in to {domain}");
    let resp = client.send(Method::GET, &client.url(""), &[], &Payload::Empty, "", &what)?;
    let status = resp.status().as_u16();
    if status != 200 {
        return Err(RegistryError::Status { context: what, status, detail: error_detail(resp) });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_arguments_are_normalised() {
        assert_eq!(registry_domain(None).expect("default"), "docker.io");
        assert_eq!(registry_domain(Some("https://index.docker.io/v1/")).expect("hub"), "docker.io");
        assert_eq!(registry_domain(Some("127.0.0.1:5000")).expect("host"), "127.0.0.1:5000");
        assert_eq!(registry_domain(Some("http://Reg.Example:5000/v2/")).expect("url"), "reg.example:5000");
        assert!(registry_domain(Some("a b")).is_err());
    }
}
