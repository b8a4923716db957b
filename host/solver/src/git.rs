//! `ADD <git url>[#ref[:subdir]] /dst`: a Git repository's tree, as BuildKit adds it.
//!
//! The reference (branch, tag or commit; the remote's HEAD when absent) is resolved with
//! `git ls-remote` first, so the step's cache key is the commit and an unchanged repository
//! costs no clone. On a miss the repository is cloned on the host into a temp dir and the
//! commit checked out; `.git` is dropped unless `--keep-git-dir`. The copy then reads the
//! checkout like a build context (paths resolve inside it; symlinks are copied, not followed),
//! so a repository cannot make the copy read outside its own tree.
//!
//! `git` runs with prompts disabled and a time limit on its network operations, with the
//! URL after `--`, so nothing in a Dockerfile can become an option of the git command line.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::BuildError;

/// A parsed `URL#ref:subdir`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GitSource {
    pub url: String,
    pub reference: Option<String>,
    pub subdir: Option<String>,
}

fn invalid(src: &str, why: impl std::fmt::Display) -> BuildError {
    BuildError::Invalid(format!("ADD {}: {why}", redact_userinfo(src)))
}

/// `url` with any `user:password@` (a token, often) replaced by `***@`, for messages.
pub(crate) fn redact_userinfo(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_string() };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{scheme}://***@{}", &rest[at + 1..]),
        None => url.to_string(),
    }
}

impl GitSource {
    pub fn parse(src: &str) -> Result<Self, BuildError> {
        let (url, fragment) = match src.split_once('#') {
            Some((u, f)) => (u, Some(f)),
            None => (src, None),
        };
        if url.is_empty() || url.starts_with('-') || url.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return Err(invalid(src, "not a usable git URL"));
        }
        let (reference, subdir) = match fragment {
            None => (None, None),
            Some(f) => match f.split_once(':') {
                Some((r, d)) => (Some(r), Some(d)),
                None => (Some(f), None),
            },
        };
        let reference = reference.filter(|r| !r.is_empty()).map(str::to_string);
        if reference.as_deref().is_some_and(|r| r.starts_with('-') || r.contains("..") || r.chars().any(|c| c.is_control() || c.is_whitespace())) {
            return Err(invalid(src, "not a usable git reference"));
        }
        let subdir = subdir.map(|d| d.trim_matches('/').to_string()).filter(|d| !d.is_empty());
        if subdir.as_deref().is_some_and(|d| d.split('/').any(|c| c == "..")) {
            return Err(invalid(src, "the subdirectory must stay inside the repository"));
        }
        Ok(Self { url: url.to_string(), reference, subdir })
    }

    /// The commit the reference names now (a full commit id is taken as it is).
    pub fn resolve(&self, src: &str) -> Result<String, BuildError> {
        if let Some(r) = &self.reference {
            if r.len() == 40 && r.chars().all(|c| c.is_ascii_hexdigit()) {
                return Ok(r.to_ascii_lowercase());
            }
        }
        let wanted = self.reference.clone().unwrap_or_else(|| "HEAD".into());
        let out = git(src, None, &["ls-remote", "--", &self.url, &wanted])?;
        // Prefer an exact ref: `v1` matches refs/tags/v1 and refs/heads/v1; an annotated tag's
        // peeled line (`^{}`) is the commit.
        let lines: Vec<(&str, &str)> = out.lines().filter_map(|l| l.split_once('\t')).collect();
        let pick = |name: &str| lines.iter().find(|(_, r)| *r == name).map(|(sha, _)| sha.to_string());
        let found = if wanted == "HEAD" {
            pick("HEAD")
        } else {
            pick(&format!("refs/tags/{wanted}^{{}}"))
                .or_else(|| pick(&format!("refs/tags/{wanted}")))
                .or_else(|| pick(&format!("refs/heads/{wanted}")))
                .or_else(|| pick(&wanted))
        };
        found.ok_or_else(|| invalid(src, format!("no branch or tag {wanted:?} in {}", redact_userinfo(&self.url))))
    }

    /// Clones and checks out `commit`; returns the checkout and the directory to copy from.
    pub fn checkout(&self, src: &str, commit: &str, keep_git_dir: bool) -> Result<Checkout, BuildError> {
        let dir = tempfile::Builder::new().prefix("kiln-git-").tempdir().map_err(|e| invalid(src, format!("temp dir: {e}")))?;
        let repo = dir.path().join("repo");
        let repo_str = repo.to_str().ok_or_else(|| invalid(src, "temp dir path is not UTF-8"))?;
        git(src, None, &["clone", "--quiet", "--no-checkout", "--", &self.url, repo_str])?;
        git(src, Some(&repo), &["-c", "advice.detachedHead=false", "checkout", "--quiet", "--detach", commit])?;
        if !keep_git_dir {
            std::fs::remove_dir_all(repo.join(".git")).map_err(|e| invalid(src, format!("removing .git: {e}")))?;
        }
        Ok(Checkout { _dir: dir, root: repo })
    }
}

/// A checked-out repository, removed on drop.
pub struct Checkout {
    _dir: tempfile::TempDir,
    pub root: PathBuf,
}

/// Runs git (no prompts, a time limit for stalled transfers); returns its stdout.
fn git(src: &str, cwd: Option<&Path>, args: &[&str]) -> Result<String, BuildError> {
    let mut cmd = Command::new("git");
    if let Some(d) = cwd {
        cmd.current_dir(d);
    }
    cmd.args(["-c", "http.lowSpeedLimit=1", "-c", "http.lowSpeedTime=60", "-c", "protocol.file.allow=never"])
        .args(args)
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_ASKPASS", "/bin/false")
        .env("GIT_SSH_COMMAND", "ssh -o BatchMode=yes -o ConnectTimeout=30")
        .stdin(Stdio::null());
    let out = cmd.output().map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => invalid(src, "git is not installed on this machine"),
        _ => invalid(src, format!("running git: {e}")),
    })?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let last = err.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("").trim();
        return Err(invalid(src, format!("git {}: {last}", args.iter().find(|a| !a.starts_with('-')).unwrap_or(&""))));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[cfg(test)]
mod tests {

    #[test]
    fn tokens_in_urls_never_reach_messages() {
        assert_eq!(super::redact_userinfo("https://user:ghp_tok@github.com/o/r.git#main"), "https://***@github.com/o/r.git#main");
        assert_eq!(super::redact_userinfo("https://github.com/o/r.git"), "https://github.com/o/r.git");
        assert_eq!(super::redact_userinfo("https://h/p@x"), "https://h/p@x", "an @ in the path is not userinfo");
        assert_eq!(super::redact_userinfo("git@github.com:o/r.git"), "git@github.com:o/r.git");
    }
    use super::*;

    #[test]
    fn parses_url_reference_and_subdir() {
        let g = GitSource::parse("https://example.org/r.git#v1.2:docs/sub/").expect("parse");
        assert_eq!((g.url.as_str(), g.reference.as_deref(), g.subdir.as_deref()), ("https://example.org/r.git", Some("v1.2"), Some("docs/sub")));
        let g = GitSource::parse("git@example.org:me/r.git").expect("parse");
        assert_eq!((g.reference, g.subdir), (None, None));
        let g = GitSource::parse("https://example.org/r.git#:sub").expect("parse");
        assert_eq!((g.reference, g.subdir.as_deref()), (None, Some("sub")));
        for bad in ["-uhttps://x.git", "https://x.git#--upload-pack=evil", "https://x.git#main:../etc", "https://x y.git", "https://x.git#a..b"] {
            assert!(GitSource::parse(bad).is_err(), "{bad}");
        }
    }
}
