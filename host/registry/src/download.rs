//! Plain HTTP(S) downloads that are not registry calls (`kiln import URL`), kept here so the
//! HTTP client stays inside this crate.

use std::io::Read;
use std::time::Duration;

use crate::RegistryError;

/// Opens `url` (http or https) for reading its body. A non-2xx answer is an error naming the
/// status; TLS is verified against the system's usual roots.
pub fn open_url(url: &str) -> Result<Box<dyn Read + Send>, RegistryError> {
    let response = get(url)?;
    Ok(Box::new(response.into_body().into_reader()))
}


/// Downloads `url` into an anonymous temp file (`ADD <url>`); returns it, rewound, with the
/// answer's Last-Modified time (seconds since the epoch) when it has a valid one.
pub fn fetch_to_file(url: &str) -> Result<(std::fs::File, Option<i64>), RegistryError> {
    use std::io::Seek;
    let response = get(url)?;
    let modified = response.headers().get("last-modified").and_then(|v| v.to_str().ok()).and_then(parse_http_date);
    let mut body = response.into_body().into_reader();
    let io = |e: std::io::Error| RegistryError::Io { context: format!("downloading {url}"), cause: e };
    let mut file = tempfile::tempfile().map_err(io)?;
    std::io::copy(&mut body, &mut file).map_err(io)?;
    file.rewind().map_err(io)?;
    Ok((file, modified))
}

/// An HTTP date (`Sun, 06 Nov 1994 08:49:37 GMT`, RFC 9110's preferred form) as seconds.
fn parse_http_date(s: &str) -> Option<i64> {
    let parts: Vec<&str> = s.split_whitespace().collect();
    let [_, day, month, year, time, "GMT"] = parts[..] else { return None };
    let month = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"].iter().position(|m| *m == month)? as i64 + 1;
    let (day, year): (i64, i64) = (day.parse().ok()?, year.parse().ok()?);
    let t: Vec<i64> = time.split(':').map(|x| x.parse().ok()).collect::<Option<_>>()?;
    let [h, m, sec] = t[..] else { return None };
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + h * 3600 + m * 60 + sec)
}

fn get(url: &str) -> Result<ureq::http::Response<ureq::Body>, RegistryError> {
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
    Ok(response)
}

#[cfg(test)]
mod tests {
    #[test]
    fn http_dates() {
        assert_eq!(super::parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT"), Some(784_111_777));
        assert_eq!(super::parse_http_date("Thu, 01 Jan 1970 00:00:00 GMT"), Some(0));
        assert_eq!(super::parse_http_date("yesterday"), None);
    }
}
