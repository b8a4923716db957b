//! Plain HTTP(S) downloads that are not registry calls (`kiln import URL`), kept here so the
//! HTTP client stays inside this crate.

use std::io::Read;
use std::time::Duration;

use crate::RegistryError;

/// Opens `url` (http or https) for reading its body. A non-2xx answer is an error naming the
/// status; TLS is verified against the system's usual roots.
pub fn open_url(url: &str) -> Result<Box<dyn Read + Send>, RegistryError> {
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        return Err(RegistryError::Unsupported(format!("{url}: only http:// and https:// URLs can be downloaded")));
    }
    let agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(10)
        .user_agent(concat!("kiln/", env!("CARGO_PKG_VERSION")))
        .timeout_connect(Some(Duration::from_secs(30)))
        .timeout_per_read(Some(Duration::from_secs(120)))
        .build()
        .new_agent();
    let response = agent
        .get(url)
        .call()
        .map_err(|e| RegistryError::Http { context: format!("downloading {url}"), cause: Box::new(e) })?;
    let status = response.status().as_u16();
    if !(200..300).contains(&status) {
        return Err(RegistryError::Status { context: format!("downloading {url}"), status, detail: String::new() });
    }
    Ok(Box::new(response.into_body().into_reader()))
}
