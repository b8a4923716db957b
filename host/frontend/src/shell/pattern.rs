//! Shell patterns for `${V#p}`, `${V%p}` and `${V/p/r}`: `*`, `?`, `[...]` (with `!`/`^`
//! negation and ranges) and `\x` for a literal `x`. Matching is on whole strings; the callers
//! pick the shortest or longest candidate the way the shell does.

#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    Lit(char),
    Any,
    Star,
    Class { negated: bool, items: Vec<(char, char)> },
}

/// A compiled pattern.
#[derive(Debug, Clone)]
pub struct Pattern(Vec<Tok>);

impl Pattern {
    /// Compiles a shell pattern (`[!...]` and `[^...]` negate); an unterminated `[` is an error.
    pub fn new(src: &str) -> Result<Self, String> {
        Self::compile(src, true)
    }

    /// Compiles a Go `filepath.Match` pattern: only `[^...]` negates.
    pub fn new_go(src: &str) -> Result<Self, String> {
        Self::compile(src, false)
    }

    fn compile(src: &str, bang_negates: bool) -> Result<Self, String> {
        let chars: Vec<char> = src.chars().collect();
        let mut toks = Vec::new();
        let mut i = 0;
        while i < chars.len() {
            match chars[i] {
                '*' => toks.push(Tok::Star),
                '?' => toks.push(Tok::Any),
                '\\' if i + 1 < chars.len() => {
                    i += 1;
                    toks.push(Tok::Lit(chars[i]));
                }
                '[' => {
                    let (tok, next) =
                        class(&chars, i + 1, bang_negates).ok_or_else(|| format!("unterminated character class in {src:?}"))?;
                    toks.push(tok);
                    i = next;
                    continue;
                }
                c => toks.push(Tok::Lit(c)),
            }
            i += 1;
        }
        Ok(Self(toks))
    }

    /// Whether the pattern matches all of `s`.
    pub fn matches(&self, s: &[char]) -> bool {
        matches_from(&self.0, s)
    }
}

fn class(chars: &[char], mut i: usize, bang_negates: bool) -> Option<(Tok, usize)> {
    let negated = chars.get(i) == Some(&'^') || (bang_negates && chars.get(i) == Some(&'!'));
    if negated {
        i += 1;
    }
    let mut items = Vec::new();
    let mut first = true;
    loop {
        let mut c = *chars.get(i)?;
        if c == ']' && !first {
            return Some((Tok::Class { negated, items }, i + 1));
        }
        first = false;
        if c == '\\' {
            i += 1;
            c = *chars.get(i)?;
        }
        if chars.get(i + 1) == Some(&'-') && chars.get(i + 2).is_some_and(|e| *e != ']') {
            let mut end = *chars.get(i + 2)?;
            i += 2;
            if end == '\\' {
                i += 1;
                end = *chars.get(i)?;
            }
            items.push((c, end));
        } else {
            items.push((c, c));
        }
        i += 1;
    }
}

/// Wildcard matching with single-star backtracking: O(pattern x text), no recursion, so
/// hostile patterns (`*a*a*a*...`) stay cheap.
fn matches_from(toks: &[Tok], s: &[char]) -> bool {
    let (mut ti, mut si) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while si < s.len() {
        match toks.get(ti) {
            Some(Tok::Star) => {
                star = Some((ti + 1, si));
                ti += 1;
            }
            Some(t) if one(t, s[si]) => {
                ti += 1;
                si += 1;
            }
            _ => match star {
                Some((after, at)) => {
                    ti = after;
                    si = at + 1;
                    star = Some((after, at + 1));
                }
                None => return false,
            },
        }
    }
    toks[ti.min(toks.len())..].iter().all(|t| *t == Tok::Star)
}

fn one(tok: &Tok, c: char) -> bool {
    match tok {
        Tok::Lit(l) => *l == c,
        Tok::Any => true,
        Tok::Class { negated, items } => items.iter().any(|(a, b)| *a <= c && c <= *b) != *negated,
        Tok::Star => true,
    }
}

/// `${V#p}` (shortest) and `${V##p}` (longest): remove a matching prefix.
pub fn trim_prefix(pattern: &str, value: &str, longest: bool) -> Result<String, String> {
    let p = Pattern::new(pattern)?;
    let v: Vec<char> = value.chars().collect();
    let mut ends: Box<dyn Iterator<Item = usize>> = if longest { Box::new((0..=v.len()).rev()) } else { Box::new(0..=v.len()) };
    Ok(match ends.find(|&k| p.matches(&v[..k])) {
        Some(k) => v[k..].iter().collect(),
        None => value.to_string(),
    })
}

/// `${V%p}` (shortest) and `${V%%p}` (longest): remove a matching suffix.
pub fn trim_suffix(pattern: &str, value: &str, longest: bool) -> Result<String, String> {
    let p = Pattern::new(pattern)?;
    let v: Vec<char> = value.chars().collect();
    let mut starts: Box<dyn Iterator<Item = usize>> = if longest { Box::new(0..=v.len()) } else { Box::new((0..=v.len()).rev()) };
    Ok(match starts.find(|&k| p.matches(&v[k..])) {
        Some(k) => v[..k].iter().collect(),
        None => value.to_string(),
    })
}

/// `${V/p/r}` and `${V//p/r}`: replace the leftmost-longest match (or every match).
pub fn replace(pattern: &str, value: &str, replacement: &str, all: bool) -> Result<String, String> {
    let p = Pattern::new(pattern)?;
    let v: Vec<char> = value.chars().collect();
    let mut out = String::new();
    let mut i = 0;
    let mut replaced = false;
    while i <= v.len() {
        let found = if replaced && !all { None } else { (i..=v.len()).rev().find(|&e| e > i && p.matches(&v[i..e])) };
        match found {
            Some(e) => {
                out.push_str(replacement);
                replaced = true;
                i = e;
            }
            None => {
                if let Some(c) = v.get(i) {
                    out.push(*c);
                }
                i += 1;
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(p: &str, s: &str) -> bool {
        Pattern::new(p).expect("pattern").matches(&s.chars().collect::<Vec<_>>())
    }

    #[test]
    fn globbing() {
        assert!(m("*", "") && m("*", "abc") && m("a*c", "abbbc") && m("a*c", "ac") && !m("a*c", "acb"));
        assert!(m("*.tar.gz", "x.tar.gz") && !m("*.tar.gz", "x.tar.gzz"));
        assert!(m("?b*", "abxyz") && !m("?b*", "b"));
        assert!(m("*a*b*c*", "xxaxxbxxcxx") && !m("*a*b*c*", "xxcxxbxxa"));
        let long = "a".repeat(2000);
        assert!(!m("*a*a*a*a*a*a*a*a*a*a*b", &long), "no exponential blow-up");
    }
}
