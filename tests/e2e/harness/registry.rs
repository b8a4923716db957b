//! A real registry for the end-to-end tests: Debian's `docker-registry` on a free loopback
//! port with its own config and storage, optionally behind htpasswd auth and TLS from a fresh
//! CA, killed on drop.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{require_tool, text};

/// A `docker-registry` serving on 127.0.0.1, killed on drop.
pub struct Registry {
    child: Child,
    pub host: String,
    /// Its config, storage and log.
    pub dir: tempfile::TempDir,
}

impl Registry {
    /// Starts a registry; with `user`, behind htpasswd auth with that user and password.
    pub fn start(user: Option<(&str, &str)>) -> Self {
        Self::start_with(user, false)
    }

    /// Like [`Registry::start`]; with `tls`, behind HTTPS with a certificate from a fresh CA
    /// (`ca.pem` in [`Registry::ca`]).
    pub fn start_with(user: Option<(&str, &str)>, tls: bool) -> Self {
        require_tool("docker-registry");
        let dir = tempfile::Builder::new().prefix("kiln-registry-").tempdir().expect("tempdir");
        let port = TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
        let mut config = format!(
            "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n",
            dir.path().join("storage").display()
        );
        if tls {
            make_certificates(dir.path());
            config.push_str(&format!("  tls:\n    certificate: {}\n    key: {}\n", dir.path().join("reg.pem").display(), dir.path().join("reg.key").display()));
        }
        if let Some((u, pw)) = user {
            require_tool("htpasswd");
            let out = Command::new("htpasswd").args(["-Bbn", u, pw]).output().expect("htpasswd");
            assert!(out.status.success());
            std::fs::write(dir.path().join("htpasswd"), &out.stdout).expect("htpasswd file");
            config.push_str(&format!("auth:\n  htpasswd:\n    realm: kiln-test\n    path: {}\n", dir.path().join("htpasswd").display()));
        }
        std::fs::write(dir.path().join("config.yml"), config).expect("config");
        let log = std::fs::File::create(dir.path().join("registry.log")).expect("log");
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(dir.path().join("config.yml"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start docker-registry");
        let reg = Self { child, host: format!("127.0.0.1:{port}"), dir };
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(&reg.host).is_err() {
            assert!(Instant::now() < deadline, "docker-registry did not start: {}", std::fs::read_to_string(reg.dir.path().join("registry.log")).unwrap_or_default());
            std::thread::sleep(Duration::from_millis(50));
        }
        reg
    }

    /// The CA that signed a TLS registry's certificate.
    pub fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// Raw HTTP/1.1 request; returns the status (0 when the connection failed).
    pub fn request(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> u16 {
        let Ok(mut s) = TcpStream::connect(&self.host) else { return 0 };
        let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nContent-Length: {}\r\n", self.host, body.len());
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("\r\n");
        if s.write_all(req.as_bytes()).and_then(|_| s.write_all(body)).is_err() {
            return 0;
        }
        let mut resp = String::new();
        let _ = s.read_to_string(&mut resp);
        resp.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0)
    }


    /// The blob file of `digest` in the registry's storage.
    pub fn blob_file(&self, digest: &str) -> PathBuf {
        let hex = digest.trim_start_matches("sha256:");
        self.dir.path().join(format!("storage/docker/registry/v2/blobs/sha256/{}/{hex}/data", &hex[..2]))
    }
}

/// A CA (`ca.pem`) and a certificate for 127.0.0.1 signed by it (`reg.pem`, `reg.key`).
pub fn make_certificates(dir: &Path) {
    require_tool("openssl");
    let run = |args: &[&str]| {
        let out = Command::new("openssl").args(args).current_dir(dir).output().expect("run openssl");
        assert!(out.status.success(), "openssl {args:?}: {}", text(&out.stderr));
    };
    std::fs::write(dir.join("ext.cnf"), "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n").expect("ext");
    run(&["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=kiln-test-ca"]);
    run(&["req", "-newkey", "rsa:2048", "-nodes", "-keyout", "reg.key", "-out", "reg.csr", "-subj", "/CN=127.0.0.1"]);
    run(&["x509", "-req", "-in", "reg.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-out", "reg.pem", "-days", "2", "-extfile", "ext.cnf"]);
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

