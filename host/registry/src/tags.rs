//! Listing a repository's tags (`GET /v2/<name>/tags/list`, following `Link` pagination).

use ureq::http::Method;

use crate::client::{error_detail, read_small, Client, Payload};
use crate::pull::pull_scope;
use crate::RegistryError;

/// Pages followed at most (1,000 tags each).
const MAX_PAGES: usize = 100;

/// Every tag of `path` on `client`'s registry, in the registry's order.
pub fn list_tags(client: &Client, path: &str) -> Result<Vec<String>, RegistryError> {
    let what = format!("listing the tags of {}/{path}", client.domain());
    let mut url = client.url(&format!("{path}/tags/list?n=1000"));
    let mut tags = Vec::new();
    for _ in 0..MAX_PAGES {
        let resp = client.send(Method::GET, &url, &[], &Payload::Empty, &pull_scope(path), &what)?;
        let status = resp.status().as_u16();
        if status == 404 {
            return Err(RegistryError::ManifestUnknown(format!("{}/{path}", client.domain())));
        }
        if status != 200 {
            return Err(RegistryError::Status { context: what, status, detail: error_detail(resp) });
        }
        let next = resp.headers().get("link").and_then(|v| v.to_str().ok()).and_then(next_link);
        let bytes = read_small(resp).map_err(|e| RegistryError::io(what.clone(), e))?;
        let v: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| RegistryError::invalid(format!("{what}: not JSON: {e}")))?;
        for t in v.get("tags").and_then(|t| t.as_array()).into_iter().flatten() {
            if let Some(t) = t.as_str() {
                tags.push(t.to_string());
            }
        }
        match next {
            Some(n) => url = client.absolute(&n),
            None => return Ok(tags),
        }
    }
    Err(RegistryError::invalid(format!("{what}: more than {MAX_PAGES} pages")))
}

/// The target of a `Link: <url>; rel="next"` header.
fn next_link(header: &str) -> Option<String> {
    header.split(',').find_map(|part| {
        let (target, params) = part.split_once(';')?;
        params.contains("rel=\"next\"").then(|| target.trim().trim_start_matches('<').trim_end_matches('>').to_string())
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn next_links() {
        assert_eq!(super::next_link(r#"</v2/a/tags/list?n=2&last=b>; rel="next""#).as_deref(), Some("/v2/a/tags/list?n=2&last=b"));
        assert_eq!(super::next_link(r#"</x>; rel="prev""#), None);
    }
}
