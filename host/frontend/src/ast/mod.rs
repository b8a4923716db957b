//! The Dockerfile syntax tree, as BuildKit's `parser` package builds it: one [`Node`] per
//! instruction, with its flags, arguments split the way BuildKit splits them for that keyword,
//! heredoc bodies, and line range.
//!
//! This layer only splits text. It never expands variables, never checks what an argument
//! means and never rejects an unknown keyword (that is the job of [`crate::command`]): its
//! output, printed with [`Ast::dump`], must match BuildKit's parser dump line for line.
//!
//! Layout: `scan` walks physical lines (directives, comments, continuations, heredoc bodies),
//! `args` splits one logical line into keyword, flags and arguments, `heredoc` finds
//! `<<EOF` words, `quote` prints strings the way Go's `strconv.Quote` does.

mod args;
mod heredoc;
mod quote;
mod scan;

pub use heredoc::{chomp_heredoc_content, parse_heredoc_word};
pub use quote::go_quote;
pub use scan::parse;

/// Parser directives found at the top of the file (`# syntax=`, `# escape=`, `# check=`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Directives {
    pub syntax: Option<String>,
    pub escape: Option<char>,
    pub check: Option<String>,
}

/// One heredoc attached to an instruction (`<<EOF` ... `EOF`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Heredoc {
    /// The delimiter word, quotes removed (`EOF` for `<<"EOF"`).
    pub name: String,
    /// File descriptor prefix (`3<<EOF`), 0 if absent.
    pub fd: u32,
    /// False when any part of the delimiter was quoted: the body is then taken literally.
    pub expand: bool,
    /// `<<-EOF`: leading tabs are stripped from the body and the delimiter line.
    pub chomp: bool,
    /// The body, each line with its line ending, tabs not yet chomped.
    pub content: String,
}

/// One instruction as BuildKit's parser sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// The keyword as written (`run`, `RUN`, `Run`...).
    pub keyword: String,
    /// Leading `--flag[=value]` words, `--` included, quotes removed.
    pub flags: Vec<String>,
    /// Arguments as split for this keyword (ENV/LABEL: key, value, separator triples).
    pub args: Vec<String>,
    /// The inner instruction of `ONBUILD`.
    pub sub: Option<Box<Node>>,
    /// Arguments were given as a JSON array (exec form).
    pub json: bool,
    /// The logical line (continuations joined, comments removed).
    pub original: String,
    pub start_line: usize,
    pub end_line: usize,
    pub heredocs: Vec<Heredoc>,
}

impl Node {
    /// Upper-cased keyword, for matching.
    pub fn command(&self) -> String {
        self.keyword.to_ascii_uppercase()
    }

    /// The s-expression BuildKit's `Node.Dump` prints: `(copy ["--from=a"] "src" "dst")`.
    pub fn dump(&self) -> String {
        let mut s = self.keyword.to_lowercase();
        if !self.flags.is_empty() {
            let flags: Vec<String> = self.flags.iter().map(|f| go_quote(f)).collect();
            s.push_str(&format!(" [{}]", flags.join(" ")));
        }
        if let Some(sub) = &self.sub {
            s.push_str(&format!(" ({})", sub.dump()));
        }
        for a in &self.args {
            s.push(' ');
            s.push_str(&go_quote(a));
        }
        s
    }
}

/// A parsed Dockerfile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ast {
    pub directives: Directives,
    /// The escape character in effect (`\` or `` ` ``).
    pub escape: char,
    pub nodes: Vec<Node>,
    /// Non-fatal findings (empty continuation lines), in BuildKit's wording.
    pub warnings: Vec<String>,
}

impl Ast {
    /// One `(…)` line per instruction, each ending in a newline: BuildKit's golden format.
    pub fn dump(&self) -> String {
        self.nodes.iter().map(|n| format!("({})\n", n.dump())).collect()
    }
}

#[cfg(test)]
mod golden;
#[cfg(test)]
mod tests;
