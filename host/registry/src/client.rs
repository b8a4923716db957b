//! One registry's HTTP client: URLs, authentication and retries. Everything above it (pull,
//! push, login) asks for a request with a scope and gets a response that is not a 401/429/5xx.
//!
//! Auth: requests go out anonymously (or with a token already cached for their scope); a 401's
//! `WWW-Authenticate` says what to do next: `Basic` -> resend with the stored credentials,
//! `Bearer` -> fetch a token from the realm (with the credentials as Basic, if any), cache it
//! per scope, resend. Redirects (blob storage) are followed by the HTTP library, which keeps
//! the `Authorization` header only on the same host. 429 and 5xx answers and dropped or
//! timed-out connections are retried with exponential backoff, a bounded number of times. A
//! registry that cannot be reached at all (connection refused, host name not found, no route)
//! is not waited for: one quick retry, then [`RegistryError::Unreachable`].

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use ureq::http::{self, Response};
use ureq::Body;

use crate::challenge::{self, Challenge};
use crate::credentials::Credentials;
use crate::settings::Settings;
use crate::RegistryError;

/// How many times a request is sent at most when it keeps failing with 429/5xx or I/O errors.
const MAX_ATTEMPTS: u32 = 5;
/// How many times a request is sent at most when the registry cannot be reached at all.
const UNREACHABLE_ATTEMPTS: u32 = 2;
/// The pause before retrying an unreachable registry.
const QUICK_RETRY: Duration = Duration::from_millis(150);
/// Largest error or token document read from a registry.
const MAX_SMALL_BODY: u64 = 1024 * 1024;

/// What a request sends.
pub(crate) enum Payload<'a> {
    Empty,
    Bytes(&'a [u8]),
    /// `len` bytes of a file from `offset` (a whole blob, or a chunk of an upload), reread for
    /// every attempt; `sent` hears how many of them went out so far (0 at every new attempt).
    FileRange { path: &'a Path, offset: u64, len: u64, sent: Option<&'a (dyn Fn(u64) + Sync)> },
}

/// A reader that reports how many bytes were read through it, every [`SENT_STEP`] bytes.
struct Counting<'a, R> {
    inner: R,
    done: u64,
    report: Option<&'a (dyn Fn(u64) + Sync)>,
}

/// How many bytes of an upload go out between two progress reports.
const SENT_STEP: u64 = 256 * 1024;

impl<R: Read> Read for Counting<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        let before = self.done;
        self.done += n as u64;
        if let Some(report) = self.report {
            if before / SENT_STEP != self.done / SENT_STEP {
                report(self.done);
            }
        }
        Ok(n)
    }
}

/// A client for one registry.
pub struct Client {
    domain: String,
    base: String,
    agent: ureq::Agent,
    creds: Option<Credentials>,
    /// Bearer tokens by scope.
    tokens: Mutex<HashMap<String, String>>,
    /// Set once the registry asked for Basic auth.
    basic: Mutex<bool>,
    backoff: Duration,
}

impl Client {
    /// A client for `domain` (a reference's domain: `docker.io` is reached at
    /// `registry-1.docker.io`), with the registry's settings and credentials.
    pub fn new(domain: &str, settings: &Settings, creds: Option<Credentials>) -> Result<Self, RegistryError> {
        let host = if domain == "docker.io" { "registry-1.docker.io" } else { domain };
        let scheme = if settings.plain_http(domain) { "http" } else { "https" };
        let registry = settings.get(domain);
        let mut tls = ureq::tls::TlsConfig::builder().disable_verification(registry.tls_verify == Some(false));
        if let Some(ca) = registry.ca {
            let pem = std::fs::read(&ca).map_err(|e| RegistryError::io(format!("reading CA file {}", ca.display()), e))?;
            let certs = ureq::tls::parse_pem(&pem)
                .filter_map(|item| match item {
                    Ok(ureq::tls::PemItem::Certificate(c)) => Some(Ok(c)),
                    Ok(_) => None,
                    Err(e) => Some(Err(e)),
                })
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| RegistryError::config(format!("reading CA file {}", ca.display()), e))?;
            if certs.is_empty() {
                return Err(RegistryError::config(format!("reading CA file {}", ca.display()), "no certificate in it"));
            }
            tls = tls.root_certs(ureq::tls::RootCerts::new_with_certs(&certs));
        }
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .redirect_auth_headers(ureq::config::RedirectAuthHeaders::SameHost)
            .max_redirects(10)
            .user_agent(concat!("kiln/", env!("CARGO_PKG_VERSION")))
            .timeout_connect(Some(Duration::from_secs(30)))
            .timeout_recv_response(Some(Duration::from_secs(120)))
            .timeout_per_read(Some(Duration::from_secs(120)))
            .tls_config(tls.build())
            .build()
            .new_agent();
        Ok(Self {
            domain: domain.to_string(),
            base: format!("{scheme}://{host}"),
            agent,
            creds,
            tokens: Mutex::new(HashMap::new()),
            basic: Mutex::new(false),
            backoff: Duration::from_millis(250),
        })
    }

    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// `scheme://host` of the registry's API.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// `base/v2/<rest>`.
    pub(crate) fn url(&self, rest: &str) -> String {
        format!("{}/v2/{rest}", self.base)
    }

    /// An absolute URL for a `Location` header (which may be relative).
    pub(crate) fn absolute(&self, location: &str) -> String {
        if location.starts_with("http://") || location.starts_with("https://") {
            location.to_string()
        } else if location.starts_with('/') {
            format!("{}{location}", self.base)
        } else {
            format!("{}/{location}", self.base)
        }
    }

    fn auth_header(&self, scope: &str) -> Option<String> {
        if let Some(t) = self.tokens.lock().ok().and_then(|t| t.get(scope).cloned()) {
            return Some(format!("Bearer {t}"));
        }
        let basic = self.basic.lock().map(|b| *b).unwrap_or(false);
        match (&self.creds, basic) {
            (Some(c), true) => Some(c.basic_header()),
            _ => None,
        }
    }

    /// Sends a request, authenticating and retrying as the module docs say. `scope` is the
    /// token scope(s) the request needs, space-separated (`repository:a/b:pull`).
    pub(crate) fn send(
        &self,
        method: http::Method,
        url: &str,
        headers: &[(&str, &str)],
        payload: &Payload<'_>,
        scope: &str,
        what: &str,
    ) -> Result<Response<Body>, RegistryError> {
        let mut authenticated = false;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut builder = http::Request::builder().method(method.clone()).uri(url);
            for (k, v) in headers {
                builder = builder.header(*k, *v);
            }
            if let Some(auth) = self.auth_header(scope) {
                builder = builder.header("Authorization", auth);
            }
            let bad_request = |e: http::Error| RegistryError::invalid(format!("{what}: bad request to {url}: {e}"));
            let result = match payload {
                Payload::Empty => self.agent.run(builder.body(()).map_err(bad_request)?),
                Payload::Bytes(b) => self.agent.run(builder.body(*b).map_err(bad_request)?),
                Payload::FileRange { path, offset, len, sent } => {
                    let mut f = File::open(path).map_err(|e| RegistryError::io(format!("{what}: opening {}", path.display()), e))?;
                    f.seek(SeekFrom::Start(*offset)).map_err(|e| RegistryError::io(format!("{what}: reading {}", path.display()), e))?;
                    if let Some(report) = sent {
                        report(0);
                    }
                    let mut reader = Counting { inner: f.take(*len), done: 0, report: *sent };
                    let body = ureq::SendBody::from_reader(&mut reader);
                    self.agent.run(builder.header("Content-Length", len.to_string()).body(body).map_err(bad_request)?)
                }
            };
            let resp = match result {
                Ok(r) => r,
                Err(e) => match self.after_failure(e, attempt, url, what) {
                    Ok(()) => continue,
                    Err(e) => return Err(e),
                },
            };
            let status = resp.status().as_u16();
            if status == 401 && !authenticated {
                authenticated = true;
                let header = resp.headers().get("www-authenticate").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
                self.authenticate(&header, scope)?;
                attempt -= 1; // Authenticating is not a failed attempt.
                continue;
            }
            if status == 401 {
                let why = error_detail(resp).trim_start_matches(": ").to_string();
                let why = if why.is_empty() { "authentication required".to_string() } else { why };
                let why = if self.creds.is_none() { format!("{why} (no credentials: run kiln login {})", self.domain) } else { why };
                return Err(RegistryError::Unauthorized { registry: self.domain.clone(), why });
            }
            if (status == 429 || (500..600).contains(&status)) && attempt < MAX_ATTEMPTS {
                let retry_after = resp.headers().get("retry-after").and_then(|v| v.to_str().ok()).and_then(|s| s.trim().parse::<u64>().ok());
                self.pause(attempt, retry_after.map(|s| Duration::from_secs(s.min(30))));
                continue;
            }
            return Ok(resp);
        }
    }

    /// Decides what a failed connection means: `Ok` after pausing when it is worth another
    /// attempt, else the error to report.
    fn after_failure(&self, e: ureq::Error, attempt: u32, url: &str, what: &str) -> Result<(), RegistryError> {
        match classify(&e) {
            Failure::Transient if attempt < MAX_ATTEMPTS => {
                self.pause(attempt, None);
                Ok(())
            }
            Failure::Unreachable(_) if attempt < UNREACHABLE_ATTEMPTS => {
                std::thread::sleep(QUICK_RETRY);
                Ok(())
            }
            Failure::Unreachable(why) => Err(RegistryError::Unreachable { target: origin(url), why }),
            Failure::Transient | Failure::Fatal => Err(RegistryError::Http { context: format!("{what} ({url})"), cause: Box::new(e) }),
        }
    }

    fn pause(&self, attempt: u32, hint: Option<Duration>) {
        let exp = self.backoff.saturating_mul(1 << attempt.min(6));
        std::thread::sleep(hint.unwrap_or(exp).min(Duration::from_secs(30)));
    }

    /// Answers a 401 challenge: remembers Basic, or fetches and caches a bearer token.
    fn authenticate(&self, header: &str, scope: &str) -> Result<(), RegistryError> {
        let unauthorized = |why: String| RegistryError::Unauthorized { registry: self.domain.clone(), why };
        match challenge::parse(header) {
            Some(Challenge::Basic) => {
                if self.creds.is_none() {
                    return Err(unauthorized(format!("authentication required (no credentials: run kiln login {})", self.domain)));
                }
                if let Ok(mut b) = self.basic.lock() {
                    *b = true;
                }
                Ok(())
            }
            Some(Challenge::Bearer { realm, service, scope: asked }) => {
                let scope = if scope.is_empty() { asked.unwrap_or_default() } else { scope.to_string() };
                let token = self.fetch_token(&realm, service.as_deref(), &scope)?;
                if let Ok(mut t) = self.tokens.lock() {
                    t.insert(scope, token);
                }
                Ok(())
            }
            None => Err(unauthorized(format!("unsupported authentication challenge {header:?}"))),
        }
    }

    fn fetch_token(&self, realm: &str, service: Option<&str>, scope: &str) -> Result<String, RegistryError> {
        if !realm.starts_with("https://") && !realm.starts_with("http://") {
            return Err(RegistryError::invalid(format!("{}: token realm {realm:?} is not an http(s) URL", self.domain)));
        }
        if realm.starts_with("http://") && self.base.starts_with("https://") && self.creds.is_some() {
            return Err(RegistryError::invalid(format!("{}: refusing to send credentials to the plain-HTTP token realm {realm}", self.domain)));
        }
        let mut params = Vec::new();
        if let Some(s) = service {
            params.push(format!("service={}", encode(s)));
        }
        for s in scope.split_whitespace() {
            params.push(format!("scope={}", encode(s)));
        }
        let sep = if realm.contains('?') { '&' } else { '?' };
        let url = if params.is_empty() { realm.to_string() } else { format!("{realm}{sep}{}", params.join("&")) };
        let mut attempt = 0;
        let resp = loop {
            attempt += 1;
            let mut req = self.agent.get(&url);
            if let Some(c) = &self.creds {
                req = req.header("Authorization", c.basic_header());
            }
            match req.call() {
                Ok(r) if (r.status().as_u16() == 429 || r.status().is_server_error()) && attempt < MAX_ATTEMPTS => self.pause(attempt, None),
                Ok(r) => break r,
                Err(e) => self.after_failure(e, attempt, &url, &format!("{}: fetching a token from {realm}", self.domain))?,
            }
        };
        let status = resp.status().as_u16();
        if status == 401 || status == 403 {
            let detail = error_detail(resp);
            let why = if self.creds.is_some() { format!("the token server refused the credentials{detail}") } else { format!("authentication required{detail}") };
            return Err(RegistryError::Unauthorized { registry: self.domain.clone(), why });
        }
        if status != 200 {
            return Err(RegistryError::Status { context: format!("{}: fetching a token from {realm}", self.domain), status, detail: error_detail(resp) });
        }
        let bytes = read_small(resp).map_err(|e| RegistryError::io(format!("{}: reading a token", self.domain), e))?;
        let v: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| RegistryError::invalid(format!("{}: token answer is not JSON: {e}", self.domain)))?;
        v.get("token")
            .or_else(|| v.get("access_token"))
            .and_then(|t| t.as_str())
            .filter(|t| !t.is_empty())
            .map(str::to_string)
            .ok_or_else(|| RegistryError::invalid(format!("{}: token answer has no token", self.domain)))
    }
}

/// What a failed request says about the registry.
#[derive(Debug, PartialEq, Eq)]
enum Failure {
    /// Worth retrying with backoff: a dropped or reset connection, a timeout.
    Transient,
    /// Nothing to wait for (refused, no such host, no route), with a short reason.
    Unreachable(String),
    /// Retrying cannot help (TLS, protocol, too many redirects, ...).
    Fatal,
}

fn classify(e: &ureq::Error) -> Failure {
    use std::io::ErrorKind;
    match e {
        ureq::Error::HostNotFound => Failure::Unreachable("host name not found".into()),
        ureq::Error::Io(io) => match io.kind() {
            ErrorKind::ConnectionRefused => Failure::Unreachable("connection refused (is the registry running?)".into()),
            ErrorKind::HostUnreachable | ErrorKind::NetworkUnreachable | ErrorKind::AddrNotAvailable => Failure::Unreachable(io.to_string()),
            // std reports resolver failures as uncategorised errors with this message.
            _ if io.raw_os_error().is_none() && io.to_string().starts_with("failed to lookup address") => {
                Failure::Unreachable(format!("host name not found ({io})"))
            }
            _ => Failure::Transient,
        },
        ureq::Error::ConnectionFailed | ureq::Error::Timeout(_) => Failure::Transient,
        _ => Failure::Fatal,
    }
}

/// `scheme://host[:port]` of a URL, for messages.
fn origin(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let authority = rest.split(['/', '?']).next().unwrap_or(rest);
    if scheme.is_empty() { authority.to_string() } else { format!("{scheme}://{authority}") }
}

/// Percent-encodes a query parameter value.
pub(crate) fn encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Reads at most [`MAX_SMALL_BODY`] bytes of a response.
pub(crate) fn read_small(resp: Response<Body>) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    resp.into_body().into_reader().take(MAX_SMALL_BODY).read_to_end(&mut out)?;
    Ok(out)
}

/// `": CODE: message"` from a registry's JSON error body, or `""`.
pub(crate) fn error_detail(resp: Response<Body>) -> String {
    let Ok(bytes) = read_small(resp) else { return String::new() };
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(&bytes) else { return String::new() };
    let Some(errors) = v.get("errors").and_then(|e| e.as_array()) else { return String::new() };
    let parts: Vec<String> = errors
        .iter()
        .map(|e| {
            let code = e.get("code").and_then(|c| c.as_str()).unwrap_or_default().to_ascii_lowercase().replace('_', " ");
            let msg = e.get("message").and_then(|c| c.as_str()).unwrap_or_default();
            if msg.is_empty() || msg.eq_ignore_ascii_case(&code) { code } else { msg.to_string() }
        })
        .collect();
    if parts.is_empty() { String::new() } else { format!(": {}", parts.join("; ")) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_encoding() {
        let c = Client::new("127.0.0.1:5000", &Settings::default(), None).expect("client");
        assert_eq!(c.url("a/b/manifests/v1"), "http://127.0.0.1:5000/v2/a/b/manifests/v1");
        assert_eq!(c.absolute("/v2/a/blobs/uploads/x?y=1"), "http://127.0.0.1:5000/v2/a/blobs/uploads/x?y=1");
        assert_eq!(c.absolute("https://s3.test/x"), "https://s3.test/x");
        let hub = Client::new("docker.io", &Settings::default(), None).expect("client");
        assert_eq!(hub.base(), "https://registry-1.docker.io");
        assert_eq!(encode("repository:a/b:pull,push"), "repository%3Aa%2Fb%3Apull%2Cpush");
        assert_eq!(origin("http://127.0.0.1:5000/v2/a?b=1"), "http://127.0.0.1:5000");
    }

    #[test]
    fn refused_and_unknown_hosts_are_not_transient() {
        use std::io::{Error, ErrorKind};
        assert!(matches!(classify(&ureq::Error::Io(Error::from(ErrorKind::ConnectionRefused))), Failure::Unreachable(_)));
        assert!(matches!(classify(&ureq::Error::HostNotFound), Failure::Unreachable(_)));
        assert_eq!(classify(&ureq::Error::Io(Error::from(ErrorKind::ConnectionReset))), Failure::Transient);
        assert_eq!(classify(&ureq::Error::Io(Error::from(ErrorKind::UnexpectedEof))), Failure::Transient);
        assert_eq!(classify(&ureq::Error::TooManyRedirects), Failure::Fatal);
    }

    /// A closed loopback port fails at once (one quick retry), naming the refusal.
    #[test]
    fn a_refused_connection_fails_fast() {
        let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("free port").port();
        let c = Client::new(&format!("127.0.0.1:{port}"), &Settings::default(), None).expect("client");
        let start = std::time::Instant::now();
        let err = c.send(http::Method::GET, &c.url(""), &[], &Payload::Empty, "", "probing").expect_err("refused");
        assert!(start.elapsed() < Duration::from_secs(1), "took {:?}", start.elapsed());
        let text = err.to_string();
        assert!(text.contains(&format!("cannot connect to http://127.0.0.1:{port}: connection refused")), "{text}");
    }

    /// A name that does not resolve fails at once too.
    #[test]
    fn an_unknown_host_fails_fast() {
        let c = Client::new("kiln-no-such-host.invalid", &Settings::default(), None).expect("client");
        let start = std::time::Instant::now();
        let err = c.send(http::Method::GET, &c.url(""), &[], &Payload::Empty, "", "probing").expect_err("no such host");
        assert!(start.elapsed() < Duration::from_secs(3), "took {:?}", start.elapsed());
        assert!(err.to_string().contains("host name not found"), "{err}");
    }
}
