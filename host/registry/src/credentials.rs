//! Credentials in files of Docker's `config.json` format: `auths` entries with a base64 `auth`
//! (`user:password`) or `username`/`password`, and credential helpers (`credHelpers` per
//! registry, `credsStore` for all) run as `docker-credential-NAME get|store|erase` with
//! Docker's JSON protocol.
//!
//! Which files ([`AuthFiles`]), following podman and buildah: kiln's own auth file first —
//! `--authfile FILE`, else `$REGISTRY_AUTH_FILE`, else `$XDG_CONFIG_HOME/kiln/auth.json`
//! (`~/.config/kiln/auth.json`) — then Docker's (`$DOCKER_CONFIG/config.json`, else
//! `~/.docker/config.json`). The first file that has credentials for a registry (an entry, or a
//! helper that knows it) wins. `kiln login` saves to kiln's file when one is named or exists,
//! else to Docker's, so that a plain `kiln login` is seen by docker, podman and skopeo too;
//! `kiln logout` removes from that same file.
//!
//! Docker Hub's key is `https://index.docker.io/v1/`; other registries are keyed by host
//! (`host:port`), and keys written with a scheme or path (`https://host/v1/`) still match.
//! Writing keeps every other field of the file as it was, and the file private (0600).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use base64::Engine as _;
use serde_json::{json, Map, Value};

use crate::RegistryError;

/// The key Docker uses for Docker Hub in `config.json` and with credential helpers.
pub const DOCKER_HUB_KEY: &str = "https://index.docker.io/v1/";

/// A user name and password (or token) for one registry.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credentials({}, ***)", self.username)
    }
}

impl Credentials {
    /// The `Authorization: Basic` value.
    pub fn basic_header(&self) -> String {
        let raw = format!("{}:{}", self.username, self.password);
        format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(raw))
    }
}

/// Where Docker's config lives: `$DOCKER_CONFIG/config.json`, else `$HOME/.docker/config.json`.
pub fn default_config_path() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("DOCKER_CONFIG").filter(|v| !v.is_empty()) {
        return Some(PathBuf::from(d).join("config.json"));
    }
    std::env::var_os("HOME").filter(|v| !v.is_empty()).map(|h| PathBuf::from(h).join(".docker/config.json"))
}

/// kiln's own auth file when none is named: `$XDG_CONFIG_HOME/kiln/auth.json`, else
/// `~/.config/kiln/auth.json`.
pub fn default_kiln_auth_path() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("XDG_CONFIG_HOME").filter(|v| !v.is_empty()) {
        return Some(PathBuf::from(d).join("kiln/auth.json"));
    }
    std::env::var_os("HOME").filter(|v| !v.is_empty()).map(|h| PathBuf::from(h).join(".config/kiln/auth.json"))
}

/// The credential files kiln reads, in order, and the one `kiln login` writes (module docs).
#[derive(Debug, Clone, Default)]
pub struct AuthFiles {
    /// kiln's own auth file.
    own: Option<PathBuf>,
    /// Whether `own` was named (`--authfile`, `$REGISTRY_AUTH_FILE`) rather than the default.
    named: bool,
    /// Docker's `config.json`.
    docker: Option<PathBuf>,
}

impl AuthFiles {
    /// The files for `authfile` (a `--authfile` argument) and the environment.
    pub fn locate(authfile: Option<&Path>) -> Self {
        let named = authfile.map(Path::to_path_buf).or_else(|| std::env::var_os("REGISTRY_AUTH_FILE").filter(|v| !v.is_empty()).map(PathBuf::from));
        Self { named: named.is_some(), own: named.or_else(default_kiln_auth_path), docker: default_config_path() }
    }

    /// Exactly these files (tests, callers with their own rules).
    pub fn new(own: Option<PathBuf>, docker: Option<PathBuf>) -> Self {
        Self { named: own.is_some(), own, docker }
    }

    /// The files in lookup order (a file named twice, once).
    pub fn files(&self) -> Vec<&Path> {
        let mut out: Vec<&Path> = Vec::new();
        for p in [&self.own, &self.docker].into_iter().flatten() {
            if !out.contains(&p.as_path()) {
                out.push(p);
            }
        }
        out
    }

    /// Credentials for `domain` from the first file that has some; `None`: anonymous.
    pub fn credentials(&self, domain: &str) -> Result<Option<Credentials>, RegistryError> {
        for path in self.files() {
            if let Some(c) = DockerConfig::load(path)?.credentials(domain)? {
                return Ok(Some(c));
            }
        }
        Ok(None)
    }

    /// The file `kiln login` saves to and `kiln logout` removes from: kiln's own when it is
    /// named or exists, else Docker's.
    pub fn login_file(&self) -> Result<PathBuf, RegistryError> {
        if let Some(own) = self.own.as_ref().filter(|p| self.named || p.exists()) {
            return Ok(own.clone());
        }
        self.docker
            .clone()
            .or_else(|| self.own.clone())
            .ok_or_else(|| RegistryError::config("finding a credentials file", "set --authfile, REGISTRY_AUTH_FILE, DOCKER_CONFIG or HOME"))
    }
}

/// The `config.json` key of a registry domain (`docker.io` -> Docker Hub's v1 URL).
pub fn config_key(domain: &str) -> String {
    match domain {
        "docker.io" | "index.docker.io" | "registry-1.docker.io" => DOCKER_HUB_KEY.to_string(),
        other => other.to_string(),
    }
}

/// A key reduced to its host: `https://host:5000/v1/` -> `host:5000`.
fn key_host(key: &str) -> &str {
    let k = key.strip_prefix("https://").or_else(|| key.strip_prefix("http://")).unwrap_or(key);
    k.split('/').next().unwrap_or(k)
}

fn same_registry(key: &str, domain: &str) -> bool {
    let want = key_host(&config_key(domain)).to_string();
    let have = key_host(key);
    have == want || key_host(&config_key(have)) == want
}

/// Docker's `config.json`, read as loose JSON so that writing it back loses nothing.
pub struct DockerConfig {
    path: PathBuf,
    doc: Map<String, Value>,
}

impl DockerConfig {
    /// Reads the config at `path`; a missing file is an empty config.
    pub fn load(path: &Path) -> Result<Self, RegistryError> {
        let doc = match std::fs::read(path) {
            Ok(bytes) if bytes.iter().all(u8::is_ascii_whitespace) => Map::new(),
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| RegistryError::config(format!("reading {}", path.display()), e))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Map::new(),
            Err(e) => return Err(RegistryError::io(format!("reading {}", path.display()), e)),
        };
        Ok(Self { path: path.to_path_buf(), doc })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The credential helper for `domain`, if one is configured.
    fn helper(&self, domain: &str) -> Option<String> {
        if let Some(Value::Object(h)) = self.doc.get("credHelpers") {
            for (k, v) in h {
                if same_registry(k, domain) {
                    return v.as_str().map(str::to_string);
                }
            }
        }
        self.doc.get("credsStore").and_then(Value::as_str).filter(|s| !s.is_empty()).map(str::to_string)
    }

    /// Credentials for `domain`: from its credential helper when one is configured, else from
    /// `auths`. `None` when there are none (anonymous access).
    pub fn credentials(&self, domain: &str) -> Result<Option<Credentials>, RegistryError> {
        if let Some(helper) = self.helper(domain) {
            if let Some(c) = helper_get(&helper, &config_key(domain))? {
                return Ok(Some(c));
            }
        }
        let Some(Value::Object(auths)) = self.doc.get("auths") else { return Ok(None) };
        for (key, entry) in auths {
            if !same_registry(key, domain) {
                continue;
            }
            return decode_entry(entry).map_err(|why| RegistryError::config(format!("{}: auths.{key}", self.path.display()), why));
        }
        Ok(None)
    }

    /// Stores credentials for `domain` (through its helper if one is configured) and writes
    /// the file.
    pub fn store(&mut self, domain: &str, creds: &Credentials) -> Result<(), RegistryError> {
        let key = config_key(domain);
        let auths = self.auths_mut();
        auths.retain(|k, _| !same_registry(k, domain));
        if let Some(helper) = self.helper(domain) {
            helper_run(&helper, "store", &json!({"ServerURL": key, "Username": creds.username, "Secret": creds.password}).to_string())?;
            self.auths_mut().insert(key, json!({}));
        } else {
            let raw = format!("{}:{}", creds.username, creds.password);
            self.auths_mut().insert(key, json!({ "auth": base64::engine::general_purpose::STANDARD.encode(raw) }));
        }
        self.save()
    }

    /// Removes credentials for `domain`; false if there were none.
    pub fn erase(&mut self, domain: &str) -> Result<bool, RegistryError> {
        let key = config_key(domain);
        let auths = self.auths_mut();
        let before = auths.len();
        auths.retain(|k, _| !same_registry(k, domain));
        let mut removed = auths.len() != before;
        if let Some(helper) = self.helper(domain) {
            removed |= helper_run(&helper, "erase", &key).is_ok();
        }
        if removed {
            self.save()?;
        }
        Ok(removed)
    }

    fn auths_mut(&mut self) -> &mut Map<String, Value> {
        let slot = self.doc.entry("auths").or_insert_with(|| Value::Object(Map::new()));
        if !slot.is_object() {
            *slot = Value::Object(Map::new());
        }
        match slot {
            Value::Object(m) => m,
            _ => unreachable!("set to an object just above"),
        }
    }

    fn save(&self) -> Result<(), RegistryError> {
        let ctx = || format!("writing {}", self.path.display());
        let dir = self.path.parent().ok_or_else(|| RegistryError::config(ctx(), "no parent directory"))?;
        std::fs::create_dir_all(dir).map_err(|e| RegistryError::io(ctx(), e))?;
        let mut bytes = serde_json::to_vec_pretty(&self.doc).map_err(|e| RegistryError::config(ctx(), e))?;
        bytes.push(b'\n');
        let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(|e| RegistryError::io(ctx(), e))?;
        tmp.write_all(&bytes).map_err(|e| RegistryError::io(ctx(), e))?;
        tmp.as_file().sync_all().map_err(|e| RegistryError::io(ctx(), e))?;
        tmp.persist(&self.path).map_err(|e| RegistryError::io(ctx(), e.error))?;
        Ok(())
    }
}

fn decode_entry(entry: &Value) -> Result<Option<Credentials>, String> {
    if let Some(auth) = entry.get("auth").and_then(Value::as_str).filter(|a| !a.is_empty()) {
        let raw = base64::engine::general_purpose::STANDARD
            .decode(auth.trim())
            // Not the decoder's error: it names the offending byte of the secret.
            .map_err(|_| "auth is not valid base64".to_string())?;
        let text = String::from_utf8(raw).map_err(|_| "auth is not UTF-8".to_string())?;
        let (user, pass) = text.split_once(':').ok_or_else(|| "auth is not user:password".to_string())?;
        return Ok(Some(Credentials { username: user.into(), password: pass.into() }));
    }
    let user = entry.get("username").and_then(Value::as_str);
    let pass = entry.get("password").and_then(Value::as_str);
    match (user, pass) {
        (Some(u), Some(p)) if !u.is_empty() => Ok(Some(Credentials { username: u.into(), password: p.into() })),
        _ => Ok(None),
    }
}

/// `docker-credential-NAME get`, with the server URL on stdin. A helper that does not know the
/// server ("credentials not found") means no credentials.
fn helper_get(helper: &str, server: &str) -> Result<Option<Credentials>, RegistryError> {
    let out = match helper_run(helper, "get", server) {
        Ok(out) => out,
        Err(RegistryError::Config { why, .. }) if why.contains("credentials not found") => return Ok(None),
        Err(e) => return Err(e),
    };
    let v: Value = serde_json::from_slice(&out).map_err(|e| RegistryError::config(format!("docker-credential-{helper} get"), e))?;
    let user = v.get("Username").and_then(Value::as_str).unwrap_or_default();
    let secret = v.get("Secret").and_then(Value::as_str).unwrap_or_default();
    if secret.is_empty() {
        return Ok(None);
    }
    Ok(Some(Credentials { username: user.into(), password: secret.into() }))
}

fn helper_run(helper: &str, verb: &str, input: &str) -> Result<Vec<u8>, RegistryError> {
    let program = format!("docker-credential-{helper}");
    let ctx = format!("{program} {verb}");
    let mut child = Command::new(&program)
        .arg(verb)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| RegistryError::config(&ctx, e))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(input.as_bytes()).map_err(|e| RegistryError::io(&ctx, e))?;
    }
    let out = child.wait_with_output().map_err(|e| RegistryError::io(&ctx, e))?;
    if !out.status.success() {
        // A helper's own message, but never for `store` (whose input is the secret, which a
        // helper may echo), and only its first line, bounded.
        let msg = String::from_utf8_lossy(if out.stdout.is_empty() { &out.stderr } else { &out.stdout }).lines().next().unwrap_or_default().trim().chars().take(200).collect::<String>();
        let msg = if msg.is_empty() || verb == "store" { format!("exited with {}", out.status) } else { msg };
        return Err(RegistryError::config(ctx, msg));
    }
    Ok(out.stdout)
}

// The tests check unix file modes and run a shell-script credential helper.
#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn reads_auth_entries_by_host_and_docker_hub_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("config.json");
        std::fs::write(
            &path,
            r#"{"auths":{"https://index.docker.io/v1/":{"auth":"dTpw"},"https://reg.example:5000/v1/":{"username":"a","password":"b"}},"other":1}"#,
        )
        .expect("write");
        let cfg = DockerConfig::load(&path).expect("load");
        let hub = cfg.credentials("docker.io").expect("read").expect("creds");
        assert_eq!((hub.username.as_str(), hub.password.as_str()), ("u", "p"));
        let r = cfg.credentials("reg.example:5000").expect("read").expect("creds");
        assert_eq!(r.username, "a");
        assert!(cfg.credentials("reg.example").expect("read").is_none());
    }

    #[test]
    fn store_and_erase_keep_other_fields() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("d/config.json");
        std::fs::create_dir_all(dir.path().join("d")).expect("mkdir");
        std::fs::write(&path, r#"{"psFormat":"x"}"#).expect("write");
        let mut cfg = DockerConfig::load(&path).expect("load");
        let creds = Credentials { username: "me".into(), password: "s:cret".into() };
        cfg.store("127.0.0.1:5000", &creds).expect("store");
        let again = DockerConfig::load(&path).expect("load");
        assert_eq!(again.credentials("127.0.0.1:5000").expect("read"), Some(creds));
        let text = std::fs::read_to_string(&path).expect("read");
        assert!(text.contains("psFormat") && text.contains("bWU6czpjcmV0"), "{text}");
        // Credentials are the user's alone, even where the file was readable by others before
        // (it is replaced whole by a 0600 temp file, never rewritten in place).
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&path).expect("stat").permissions().mode() & 0o777, 0o600);
        assert!(std::fs::read_dir(dir.path().join("d")).expect("ls").count() == 1, "no temp file is left");
        let mut cfg = again;
        assert!(cfg.erase("127.0.0.1:5000").expect("erase"));
        assert!(!cfg.erase("127.0.0.1:5000").expect("erase"));
        assert!(DockerConfig::load(&path).expect("load").credentials("127.0.0.1:5000").expect("read").is_none());
    }

    #[test]
    fn kilns_file_is_read_first_then_dockers_and_login_writes_the_right_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        let own = dir.path().join("kiln/auth.json");
        let docker = dir.path().join("docker/config.json");
        let files = AuthFiles { own: Some(own.clone()), named: false, docker: Some(docker.clone()) };
        assert_eq!(files.login_file().expect("target"), docker, "the default kiln file does not exist: Docker's");
        let theirs = Credentials { username: "d".into(), password: "dp".into() };
        DockerConfig::load(&docker).expect("load").store("reg.test", &theirs).expect("store");
        assert_eq!(files.credentials("reg.test").expect("read"), Some(theirs.clone()));
        let ours = Credentials { username: "k".into(), password: "kp".into() };
        DockerConfig::load(&own).expect("load").store("other.test", &ours).expect("store");
        assert_eq!(files.login_file().expect("target"), own, "the kiln file exists now");
        assert_eq!(files.credentials("reg.test").expect("read"), Some(theirs), "no entry in kiln's file: Docker's");
        DockerConfig::load(&own).expect("load").store("reg.test", &ours).expect("store");
        assert_eq!(files.credentials("reg.test").expect("read"), Some(ours), "kiln's file first");
        let named = AuthFiles::new(Some(dir.path().join("absent.json")), Some(docker.clone()));
        assert_eq!(named.login_file().expect("target"), dir.path().join("absent.json"), "a named file, even absent");
        assert_eq!(AuthFiles::new(Some(docker.clone()), Some(docker)).files().len(), 1);
    }

    #[test]
    fn credential_helpers_are_run() {
        let dir = tempfile::tempdir().expect("tempdir");
        let bin = dir.path().join("docker-credential-kilntest");
        std::fs::write(
            &bin,
            "#!/bin/sh\nread server\n[ \"$1\" = get ] && [ \"$server\" = reg.test ] && echo '{\"ServerURL\":\"reg.test\",\"Username\":\"hu\",\"Secret\":\"hs\"}' && exit 0\necho 'credentials not found in native keychain'; exit 1\n",
        )
        .expect("write");
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let path = dir.path().join("config.json");
        std::fs::write(&path, r#"{"credHelpers":{"reg.test":"kilntest"}}"#).expect("write");
        let old = std::env::var_os("PATH").unwrap_or_default();
        let mut paths = vec![dir.path().to_path_buf()];
        paths.extend(std::env::split_paths(&old));
        // SAFETY-free: set_var is safe in edition 2021; this test is the only one touching PATH.
        std::env::set_var("PATH", std::env::join_paths(paths).expect("join"));
        let cfg = DockerConfig::load(&path).expect("load");
        let c = cfg.credentials("reg.test").expect("helper").expect("creds");
        assert_eq!((c.username.as_str(), c.password.as_str()), ("hu", "hs"));
        assert!(cfg.credentials("other.test").expect("no helper").is_none());
    }
}
