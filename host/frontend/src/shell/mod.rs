//! Word and variable expansion with the semantics of BuildKit's `shell` lexer.
//!
//! Used on the arguments of ADD COPY ENV EXPOSE FROM LABEL STOPSIGNAL USER VOLUME WORKDIR
//! (and ARG defaults, flag values such as `COPY --from=$X`, and ONBUILD triggers when they
//! run); never on RUN, CMD or ENTRYPOINT, which the shell in the image expands. See
//! [`expands`].
//!
//! Supported: `$V`, `${V}`, `${V:-d}`, `${V-d}`, `${V:+a}`, `${V+a}`, `${V:?msg}`, `${V?msg}`,
//! `${V#p}`, `${V##p}`, `${V%p}`, `${V%%p}`, `${V/p/r}`, `${V//p/r}`; single quotes (literal),
//! double quotes (only `$`, `"` and the escape character are special), the escape character
//! (`\` or `` ` ``) outside quotes. [`Lexer::process_words`] also splits the result into words
//! the way BuildKit does: expanded text splits on whitespace, quoted text never does.
//! Pure: the environment is passed in, nothing is read from the process.

mod pattern;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet, HashMap};

pub use pattern::Pattern;

/// Instructions whose arguments kiln expands before use (RUN/CMD/ENTRYPOINT: the shell does).
pub fn expands(keyword: &str) -> bool {
    matches!(
        keyword.to_ascii_uppercase().as_str(),
        "ADD" | "ARG" | "COPY" | "ENV" | "EXPOSE" | "FROM" | "LABEL" | "STOPSIGNAL" | "USER" | "VOLUME" | "WORKDIR" | "ONBUILD"
    )
}

/// A failed expansion, worded as BuildKit words it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ExpandError(pub String);

/// Where variables come from.
pub trait Env {
    fn lookup(&self, name: &str) -> Option<String>;
}

impl Env for [(String, String)] {
    /// The last definition wins, as when ENV/ARG are applied in order.
    fn lookup(&self, name: &str) -> Option<String> {
        self.iter().rev().find(|(k, _)| k == name).map(|(_, v)| v.clone())
    }
}
impl Env for Vec<(String, String)> {
    fn lookup(&self, name: &str) -> Option<String> {
        self.as_slice().lookup(name)
    }
}
impl Env for BTreeMap<String, String> {
    fn lookup(&self, name: &str) -> Option<String> {
        self.get(name).cloned()
    }
}
impl Env for HashMap<String, String> {
    fn lookup(&self, name: &str) -> Option<String> {
        self.get(name).cloned()
    }
}

/// Lexer options (BuildKit's `shell.Lex` fields).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lexer {
    pub escape: char,
    /// Keep quote characters in the output.
    pub raw_quotes: bool,
    /// Keep escape characters in the output.
    pub raw_escapes: bool,
    /// Leave `$UNSET` as written instead of expanding it to "".
    pub skip_unset: bool,
    /// Treat quotes as ordinary characters.
    pub skip_quotes: bool,
}

impl Lexer {
    pub fn new(escape: char) -> Self {
        Self { escape, raw_quotes: false, raw_escapes: false, skip_unset: false, skip_quotes: false }
    }

    /// Expands `word` into one string.
    pub fn process_word(&self, word: &str, env: &dyn Env) -> Result<String, ExpandError> {
        Ok(self.run(word, env)?.0)
    }

    /// Expands `word` and splits it into words.
    pub fn process_words(&self, word: &str, env: &dyn Env) -> Result<Vec<String>, ExpandError> {
        Ok(self.run(word, env)?.1)
    }

    /// Expands `word`, also returning the names of the variables that were set and used.
    pub fn process_word_with_matches(&self, word: &str, env: &dyn Env) -> Result<(String, BTreeSet<String>), ExpandError> {
        let mut st = State { lx: *self, env, chars: word.chars().collect(), pos: 0, matches: BTreeSet::new() };
        let (s, _, _) = st.until(&[], self.raw_escapes).map_err(|e| wrap(word, e))?;
        Ok((s, st.matches))
    }

    fn run(&self, word: &str, env: &dyn Env) -> Result<(String, Vec<String>), ExpandError> {
        let mut st = State { lx: *self, env, chars: word.chars().collect(), pos: 0, matches: BTreeSet::new() };
        let (s, words, _) = st.until(&[], self.raw_escapes).map_err(|e| wrap(word, e))?;
        Ok((s, words))
    }
}

fn wrap(word: &str, e: String) -> ExpandError {
    ExpandError(format!("failed to process {}: {e}", crate::ast::go_quote(word)))
}

/// Word splitting: expanded text splits on whitespace, quoted or escaped text does not.
#[derive(Default)]
struct Words {
    word: String,
    words: Vec<String>,
    in_word: bool,
}

impl Words {
    fn add_char(&mut self, c: char) {
        if c.is_whitespace() {
            if self.in_word && !self.word.is_empty() {
                self.words.push(std::mem::take(&mut self.word));
                self.in_word = false;
            }
        } else {
            self.add_raw_char(c);
        }
    }
    fn add_raw_char(&mut self, c: char) {
        self.word.push(c);
        self.in_word = true;
    }
    fn add_string(&mut self, s: &str) {
        s.chars().for_each(|c| self.add_char(c));
    }
    fn add_raw_string(&mut self, s: &str) {
        self.word.push_str(s);
        self.in_word = true;
    }
    fn finish(mut self) -> Vec<String> {
        if !self.word.is_empty() {
            self.words.push(self.word);
        }
        self.words
    }
}

struct State<'a> {
    lx: Lexer,
    env: &'a dyn Env,
    chars: Vec<char>,
    pos: usize,
    matches: BTreeSet<String>,
}

type R<T> = Result<T, String>;

impl State<'_> {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }
    fn next(&mut self) -> Option<char> {
        let c = self.peek();
        if c.is_some() {
            self.pos += 1;
        }
        c
    }

    fn get_env(&mut self, name: &str) -> Option<String> {
        let v = self.env.lookup(name);
        if v.is_some() {
            self.matches.insert(name.to_string());
        }
        v
    }

    /// Processes up to one of `stops` (consumed and returned) or the end (`stops` empty).
    fn until(&mut self, stops: &[char], raw_escapes: bool) -> R<(String, Vec<String>, Option<char>)> {
        let mut out = String::new();
        let mut words = Words::default();
        while let Some(c) = self.peek() {
            if stops.contains(&c) {
                self.pos += 1;
                return Ok((out, words.finish(), Some(c)));
            }
            if c == '$' {
                let v = self.dollar()?;
                out.push_str(&v);
                words.add_string(&v);
            } else if !self.lx.skip_quotes && c == '\'' {
                let v = self.single_quote()?;
                out.push_str(&v);
                words.add_raw_string(&v);
            } else if !self.lx.skip_quotes && c == '"' {
                let v = self.double_quote(raw_escapes)?;
                out.push_str(&v);
                words.add_raw_string(&v);
            } else {
                self.pos += 1;
                if c == self.lx.escape {
                    if raw_escapes {
                        words.add_raw_char(c);
                        out.push(c);
                    }
                    let Some(n) = self.next() else { break };
                    words.add_raw_char(n);
                    out.push(n);
                } else {
                    words.add_char(c);
                    out.push(c);
                }
            }
        }
        if let Some(s) = stops.first() {
            return Err(format!("unexpected end of statement while looking for matching {s}"));
        }
        Ok((out, words.finish(), None))
    }

    fn single_quote(&mut self) -> R<String> {
        let mut out = String::new();
        let q = self.next();
        if self.lx.raw_quotes {
            out.extend(q);
        }
        loop {
            match self.next() {
                None => return Err("unexpected end of statement while looking for matching single-quote".into()),
                Some('\'') => {
                    if self.lx.raw_quotes {
                        out.push('\'');
                    }
                    return Ok(out);
                }
                Some(c) => out.push(c),
            }
        }
    }

    fn double_quote(&mut self, raw_escapes: bool) -> R<String> {
        let mut out = String::new();
        let q = self.next();
        if self.lx.raw_quotes {
            out.extend(q);
        }
        loop {
            match self.peek() {
                None => return Err("unexpected end of statement while looking for matching double-quote".into()),
                Some('"') => {
                    self.pos += 1;
                    if self.lx.raw_quotes {
                        out.push('"');
                    }
                    return Ok(out);
                }
                Some('$') => out.push_str(&self.dollar()?),
                Some(c) => {
                    self.pos += 1;
                    if c == self.lx.escape {
                        if raw_escapes {
                            out.push(c);
                        }
                        match self.peek() {
                            None => continue,
                            Some(n) if n == '"' || n == '$' || n == self.lx.escape => {
                                self.pos += 1;
                                out.push(n);
                            }
                            Some(_) => out.push(c),
                        }
                    } else {
                        out.push(c);
                    }
                }
            }
        }
    }

    /// A variable name: letters, digits and `_`; or digits only; or one special parameter.
    fn name(&mut self) -> String {
        let mut name = String::new();
        if let Some(c) = self.peek() {
            if c.is_ascii_digit() {
                while let Some(d) = self.peek().filter(char::is_ascii_digit) {
                    self.pos += 1;
                    name.push(d);
                }
                return name;
            }
            if matches!(c, '@' | '*' | '#' | '?' | '-' | '$' | '!' | '0') {
                self.pos += 1;
                return c.to_string();
            }
        }
        while let Some(c) = self.peek().filter(|c| c.is_alphanumeric() || *c == '_') {
            self.pos += 1;
            name.push(c);
        }
        name
    }

    fn dollar(&mut self) -> R<String> {
        self.pos += 1; // the '$'
        if self.peek() != Some('{') {
            let name = self.name();
            if name.is_empty() {
                return Ok("$".into());
            }
            return Ok(match self.get_env(&name) {
                Some(v) => v,
                None if self.lx.skip_unset => format!("${name}"),
                None => String::new(),
            });
        }
        self.pos += 1; // '{'
        match self.peek() {
            None => return Err("syntax error: missing '}'".into()),
            Some('{' | '}' | ':') => return Err("syntax error: bad substitution".into()),
            _ => {}
        }
        let name = self.name();
        let Some(op) = self.next() else { return Err("syntax error: missing '}'".into()) };
        match op {
            '}' => Ok(match self.get_env(&name) {
                Some(v) => v,
                None if self.lx.skip_unset => format!("${{{name}}}"),
                None => String::new(),
            }),
            ':' | '+' | '-' | '?' | '#' | '%' => self.modifier(&name, op),
            '/' => self.substitute(&name),
            other => {
                if self.peek().is_none() {
                    return Err("syntax error: missing '}'".into());
                }
                Err(format!("unsupported modifier ({other}) in substitution"))
            }
        }
    }

    fn modifier(&mut self, name: &str, first: char) -> R<String> {
        let mut ops = first.to_string();
        let null_is_unset = first == ':';
        let op = if null_is_unset {
            let c = self.next().ok_or("syntax error: missing '}'")?;
            ops.push(c);
            c
        } else {
            first
        };
        let pattern_op = op == '#' || op == '%';
        if null_is_unset && pattern_op {
            return Err(format!("unsupported modifier ({ops}) in substitution"));
        }
        let (mut word, _, stop) =
            self.until(&['}'], pattern_op).map_err(|e| if self.peek().is_none() { "syntax error: missing '}'".to_string() } else { e })?;
        if stop.is_none() {
            return Err("syntax error: missing '}'".into());
        }
        let value = self.get_env(name);
        if self.lx.skip_unset && value.is_none() {
            return Ok(format!("${{{name}{ops}{word}}}"));
        }
        let unset_or_null = value.is_none() || (null_is_unset && value.as_deref() == Some(""));
        match op {
            '-' => Ok(if unset_or_null { word } else { value.unwrap_or_default() }),
            '+' => Ok(if unset_or_null { String::new() } else { word }),
            '?' => {
                if value.is_none() || unset_or_null {
                    let default = if value.is_none() { "is not allowed to be unset" } else { "is not allowed to be empty" };
                    let msg = if word.is_empty() { default.to_string() } else { word };
                    return Err(format!("{name}: {msg}"));
                }
                Ok(value.unwrap_or_default())
            }
            '#' | '%' => {
                let longest = word.starts_with(op);
                if longest {
                    word.remove(0);
                }
                let value = value.unwrap_or_default();
                let r = if op == '#' { pattern::trim_prefix(&word, &value, longest) } else { pattern::trim_suffix(&word, &value, longest) };
                r.map_err(|e| format!("invalid pattern ({word}) in substitution: {e}"))
            }
            other => Err(format!("unsupported modifier (:{other}) in substitution")),
        }
    }

    fn substitute(&mut self, name: &str) -> R<String> {
        let all = self.peek() == Some('/');
        if all {
            self.pos += 1;
        }
        let missing = |s: &Self, e: String| if s.peek().is_none() { "syntax error: missing '}'".to_string() } else { e };
        let (pattern, _, stop) = self.until(&['/', '}'], true).map_err(|e| missing(self, e))?;
        let replacement = match stop {
            Some('/') => {
                let (r, _, stop) = self.until(&['}'], false).map_err(|e| missing(self, e))?;
                if stop.is_none() {
                    return Err("syntax error: missing '}'".into());
                }
                r
            }
            Some(_) => String::new(),
            None => return Err("syntax error: missing '}'".into()),
        };
        let value = self.get_env(name);
        if self.lx.skip_unset && value.is_none() {
            let slash = if all { "//" } else { "/" };
            return Ok(format!("${{{name}{slash}{pattern}/{replacement}}}"));
        }
        pattern::replace(&pattern, &value.unwrap_or_default(), &replacement, all)
            .map_err(|e| format!("invalid pattern ({pattern}) in substitution: {e}"))
    }
}
