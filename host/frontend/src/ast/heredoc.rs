//! Finding heredoc words (`<<EOF`, `<<-EOF`, `3<<"EOF"`) in an instruction line.
//!
//! Like BuildKit, the line is split into shell words with quotes and escapes kept raw; a word
//! that is entirely `[fd]<<[-]DELIM` opens a heredoc. `cat<<EOF` (no space) is not one, as in
//! BuildKit. A delimiter with any quoted part disables expansion of the body.

use super::Heredoc;

/// Shell-like words with quotes and escapes kept as written; None if a quote is unterminated
/// (BuildKit then finds no heredoc on the line).
fn raw_words(line: &str) -> Option<Vec<String>> {
    let mut out = Vec::new();
    let mut word = String::new();
    let mut quote: Option<char> = None;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match quote {
            None if c.is_whitespace() => {
                if !word.is_empty() {
                    out.push(std::mem::take(&mut word));
                }
            }
            None | Some('"') if c == '\\' => {
                word.push(c);
                if let Some(n) = chars.next() {
                    word.push(n);
                }
            }
            None if c == '"' || c == '\'' => {
                quote = Some(c);
                word.push(c);
            }
            Some(q) if c == q => {
                quote = None;
                word.push(c);
            }
            _ => word.push(c),
        }
    }
    if quote.is_some() {
        return None;
    }
    if !word.is_empty() {
        out.push(word);
    }
    Some(out)
}

/// Removes quotes and backslash escapes from a delimiter word; also says whether any part
/// was quoted (escaped quote characters do not count).
fn unquote(word: &str) -> (String, bool) {
    let mut out = String::new();
    let mut quote: Option<char> = None;
    let mut quoted = false;
    let mut chars = word.chars();
    while let Some(c) = chars.next() {
        match (quote, c) {
            (None, '"' | '\'') => {
                quote = Some(c);
                quoted = true;
            }
            (Some(q), c) if c == q => quote = None,
            (None, '\\') => {
                if let Some(n) = chars.next() {
                    out.push(n);
                }
            }
            (Some('"'), '\\') => match chars.next() {
                Some(n @ ('"' | '\\' | '$')) => out.push(n),
                Some(n) => {
                    out.push('\\');
                    out.push(n);
                }
                None => {}
            },
            (_, c) => out.push(c),
        }
    }
    (out, quoted)
}

/// Parses one word as a heredoc opener (`[fd]<<[-][ ]DELIM`), if it is one.
pub fn parse_heredoc_word(word: &str) -> Option<Heredoc> {
    let digits = word.chars().take_while(char::is_ascii_digit).count();
    let after = word[digits..].strip_prefix("<<")?;
    let (chomp, rest) = match after.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, after),
    };
    let rest = rest.trim_start();
    if rest.is_empty() || rest.contains('<') || raw_words(rest)?.len() != 1 {
        return None;
    }
    let (name, quoted) = unquote(rest);
    if name.is_empty() {
        return None;
    }
    let fd = if digits == 0 { 0 } else { word[..digits].parse().ok()? };
    Some(Heredoc { name, fd, expand: !quoted, chomp, content: String::new() })
}

/// Every heredoc opened on this line, in order. A bare `<<` or `<<-` word takes the next
/// word as its delimiter (`RUN <<  EOF`).
pub(super) fn heredocs_in_line(line: &str) -> Vec<Heredoc> {
    let words = raw_words(line).unwrap_or_default();
    let mut out = Vec::new();
    let mut i = 0;
    while i < words.len() {
        let w = &words[i];
        let bare = w.trim_start_matches(|c: char| c.is_ascii_digit());
        if (bare == "<<" || bare == "<<-") && i + 1 < words.len() {
            if let Some(h) = parse_heredoc_word(&format!("{w} {}", words[i + 1])) {
                out.push(h);
                i += 2;
                continue;
            }
        }
        out.extend(parse_heredoc_word(w));
        i += 1;
    }
    out
}

/// Strips leading tabs from every line of a `<<-` heredoc body.
pub fn chomp_heredoc_content(content: &str) -> String {
    content.split_inclusive('\n').map(|l| l.trim_start_matches('\t')).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heredoc_words() {
        let h = |s: &str| heredocs_in_line(s).into_iter().map(|h| (h.name, h.fd, h.expand, h.chomp)).collect::<Vec<_>>();
        assert_eq!(h("RUN <<EOF"), vec![("EOF".into(), 0, true, false)]);
        assert_eq!(h("RUN <<-EOF"), vec![("EOF".into(), 0, true, true)]);
        assert_eq!(
            h("RUN <<'EOF' <<\"E2\" 3<<E3"),
            vec![("EOF".into(), 0, false, false), ("E2".into(), 0, false, false), ("E3".into(), 3, true, false)]
        );
        assert_eq!(h("COPY <<a <<b /dst/"), vec![("a".into(), 0, true, false), ("b".into(), 0, true, false)]);
        assert!(h("RUN echo \"<<EOF\"").is_empty());
        assert!(h("RUN cat<<EOF").is_empty());
        assert!(h("RUN echo <<").is_empty());
        assert!(h("RUN echo a <<<b").is_empty());
        // Spacing, escaped quotes, quoted spaces, unterminated quotes.
        assert_eq!(h("RUN <<  EOF  > out"), vec![("EOF".into(), 0, true, false)]);
        assert_eq!(h("RUN <<- EOF"), vec![("EOF".into(), 0, true, true)]);
        assert_eq!(h("RUN << -EOF"), vec![("-EOF".into(), 0, true, false)]);
        assert_eq!(h("RUN <<ab\\'c"), vec![("ab'c".into(), 0, true, false)]);
        assert_eq!(h("RUN <<'a'b\\'c"), vec![("ab'c".into(), 0, false, false)]);
        assert_eq!(h("RUN <<x'y'"), vec![("xy".into(), 0, false, false)]);
        assert_eq!(h("RUN <<'two words'"), vec![("two words".into(), 0, false, false)]);
        assert_eq!(h("RUN <<$NAME"), vec![("$NAME".into(), 0, true, false)]);
        assert!(h("RUN <<'EOF").is_empty());
        assert!(h("RUN '<<EOF'").is_empty());
        assert!(parse_heredoc_word("<<EOF sh").is_none());
        assert!(parse_heredoc_word("<<-").is_none());
    }

    #[test]
    fn chomping() {
        assert_eq!(chomp_heredoc_content("\t\ta\n\tb\n c\n"), "a\nb\n c\n");
    }
}
