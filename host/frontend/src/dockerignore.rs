//! `.dockerignore`: which context paths a build may see. Pure: text and paths in, answers out.
//!
//! Rules (moby's `patternmatcher`, as BuildKit applies them): one pattern per line; blank
//! lines and lines starting with `#` are skipped; surrounding whitespace is trimmed; a leading
//! `!` makes an exception; patterns are cleaned like Go's `filepath.Clean` and a leading `/`
//! is dropped; Go `filepath.Match` syntax (`*` and `?` never cross `/`, `[...]` classes, `\`
//! escapes; only `[^...]` negates) plus `**`, which matches any number of directories, none included. The last
//! matching pattern decides; a pattern that matches a parent directory matches everything
//! below it. The caller chooses the file (`<Dockerfile>.dockerignore` next to the Dockerfile
//! first, else `.dockerignore` at the context root: see [`ignore_file_candidates`]).

use crate::shell::Pattern;

/// One pattern line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IgnorePattern {
    /// The cleaned pattern.
    pub pattern: String,
    /// A `!` line: re-include what earlier lines excluded.
    pub exception: bool,
    segments: Vec<Segment>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    /// `**`: any number of path segments.
    Any,
    /// One segment, a `filepath.Match` pattern.
    Glob(String),
}

/// A parsed `.dockerignore`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Dockerignore {
    pub patterns: Vec<IgnorePattern>,
}

/// Go's `filepath.Clean` on slash-separated paths.
pub fn clean_path(p: &str) -> String {
    let rooted = p.starts_with('/');
    let mut out: Vec<&str> = Vec::new();
    for seg in p.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                if out.last().is_some_and(|l| *l != "..") {
                    out.pop();
                } else if !rooted {
                    out.push("..");
                }
            }
            s => out.push(s),
        }
    }
    let joined = out.join("/");
    match (rooted, joined.is_empty()) {
        (true, _) => format!("/{joined}"),
        (false, true) => ".".to_string(),
        (false, false) => joined,
    }
}

impl Dockerignore {
    /// Parses the file's text; a lone `!` is an error (line number, message).
    pub fn parse(text: &str) -> Result<Self, (usize, String)> {
        let mut patterns = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (exception, body) = match line.strip_prefix('!') {
                Some(rest) => (true, rest.trim()),
                None => (false, line),
            };
            if body.is_empty() {
                return Err((i + 1, "illegal exclusion pattern: \"!\"".to_string()));
            }
            let mut pattern = clean_path(body);
            if pattern.len() > 1 && pattern.starts_with('/') {
                pattern.remove(0);
            }
            let segments =
                pattern.split('/').map(|s| if s == "**" { Segment::Any } else { Segment::Glob(s.to_string()) }).collect::<Vec<_>>();
            for s in &segments {
                if let Segment::Glob(g) = s {
                    Pattern::new_go(g).map_err(|e| (i + 1, format!("invalid pattern {pattern:?}: {e}")))?;
                }
            }
            patterns.push(IgnorePattern { pattern, exception, segments });
        }
        Ok(Self { patterns })
    }

    /// Whether `path` (relative to the context, `/`-separated) is excluded from the build.
    pub fn excludes(&self, path: &str) -> bool {
        let cleaned = clean_path(path);
        let path = cleaned.trim_start_matches('/');
        let parts: Vec<&str> = path.split('/').collect();
        let mut excluded = false;
        for p in &self.patterns {
            let hit = (1..=parts.len()).any(|n| match_segments(&p.segments, &parts[..n]));
            if hit {
                excluded = !p.exception;
            }
        }
        excluded
    }

    /// Whether some exception could re-include something below an excluded directory (then
    /// the directory must still be walked).
    pub fn has_exceptions(&self) -> bool {
        self.patterns.iter().any(|p| p.exception)
    }
}

fn match_segments(pat: &[Segment], path: &[&str]) -> bool {
    match pat.split_first() {
        None => path.is_empty(),
        Some((Segment::Any, rest)) => (0..=path.len()).any(|k| match_segments(rest, &path[k..])),
        Some((Segment::Glob(g), rest)) => match path.split_first() {
            Some((seg, prest)) => glob_segment(g, seg) && match_segments(rest, prest),
            None => false,
        },
    }
}

/// `filepath.Match` on one segment, with `**` inside a segment acting like `*`.
fn glob_segment(glob: &str, seg: &str) -> bool {
    let chars: Vec<char> = seg.chars().collect();
    Pattern::new_go(&glob.replace("**", "*")).is_ok_and(|p| p.matches(&chars))
}

/// Whether a COPY/ADD source uses wildcards (`*`, `?`, `[`), which Go's `filepath.Match`
/// would expand.
pub fn has_wildcards(src: &str) -> bool {
    let mut escaped = false;
    for c in src.chars() {
        match c {
            '\\' if !escaped => escaped = true,
            '*' | '?' | '[' if !escaped => return true,
            _ => escaped = false,
        }
    }
    false
}

/// Go's `filepath.Match` on `/`-separated paths: `*` and `?` never match `/`; the pattern
/// must match the whole path (as BuildKit matches COPY sources against context paths).
pub fn path_match(pattern: &str, path: &str) -> Result<bool, String> {
    let pat: Vec<&str> = pattern.split('/').collect();
    let segs: Vec<&str> = path.split('/').collect();
    if pat.len() != segs.len() {
        for p in &pat {
            Pattern::new_go(p)?;
        }
        return Ok(false);
    }
    for (p, s) in pat.iter().zip(&segs) {
        let chars: Vec<char> = s.chars().collect();
        if !Pattern::new_go(p)?.matches(&chars) {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Ignore files to try, in order, for a Dockerfile at `dockerfile_path` and a context dir.
pub fn ignore_file_candidates(dockerfile_path: &str, context_dir: &str) -> Vec<String> {
    let ctx = context_dir.trim_end_matches('/');
    vec![format!("{dockerfile_path}.dockerignore"), format!("{}/.dockerignore", if ctx.is_empty() { "." } else { ctx })]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cleaning() {
        for (i, o) in [("a/./b/", "a/b"), ("/a/../b", "/b"), ("../a", "../a"), ("", "."), ("a//b", "a/b"), ("/..", "/")] {
            assert_eq!(clean_path(i), o, "{i}");
        }
    }

    #[test]
    fn matching_table() {
        let ig = Dockerignore::parse(
            "# comment\n\n*.md\n!README.md\n/build\nnode_modules\n**/*.log\ntemp?\ndocs/**/draft*\n[ab]x.txt\nsecret\\*\n  spaced  \n",
        )
        .expect("parse");
        let cases = [
            ("notes.md", true),
            ("README.md", false),
            ("sub/notes.md", false),
            ("build", true),
            ("build/out/bin", true),
            ("src/build", false),
            ("node_modules/x/index.js", true),
            ("a/node_modules", false),
            ("x.log", true),
            ("a/b/c.log", true),
            ("temp1", true),
            ("temp12", false),
            ("docs/draft1", true),
            ("docs/a/b/draft.txt", true),
            ("docs/final", false),
            ("ax.txt", true),
            ("cx.txt", false),
            ("secret*", true),
            ("secrets", false),
            ("spaced", true),
            ("./notes.md", true),
            ("main.go", false),
        ];
        for (path, want) in cases {
            assert_eq!(ig.excludes(path), want, "{path}");
        }
        assert!(ig.has_exceptions());
    }

    #[test]
    fn copy_source_globs() {
        assert!(
            has_wildcards("src/*.go")
                && has_wildcards("a?c")
                && has_wildcards("[ab]")
                && !has_wildcards("a\\*b")
                && !has_wildcards("plain")
        );
        let m = |p: &str, s: &str| path_match(p, s).expect("pattern");
        assert!(m("src/*.go", "src/main.go"));
        assert!(!m("src/*.go", "src/sub/main.go"));
        assert!(!m("*.go", "src/main.go"));
        assert!(m("*/*.go", "src/main.go"));
        assert!(m("file?.txt", "file1.txt") && !m("file?.txt", "file10.txt"));
        assert!(m("[a-c]x", "bx") && !m("[^a-c]x", "bx") && m("[!a-c]x", "!x"));
        assert!(m("a\\*", "a*") && !m("a\\*", "ab"));
        assert!(path_match("[", "x").is_err());
    }

    #[test]
    fn order_and_errors() {
        let ig = Dockerignore::parse("*\n!src\nsrc/*.tmp\n").expect("parse");
        assert!(ig.excludes("Dockerfile"));
        assert!(!ig.excludes("src/main.rs"));
        assert!(ig.excludes("src/x.tmp"));
        assert_eq!(Dockerignore::parse("a\n!\n").expect_err("bang"), (2, "illegal exclusion pattern: \"!\"".to_string()));
        assert!(Dockerignore::parse("[a\n").is_err());
        assert_eq!(ignore_file_candidates("sub/Dockerfile.dev", "ctx/"), vec!["sub/Dockerfile.dev.dockerignore", "ctx/.dockerignore"]);
    }
}
