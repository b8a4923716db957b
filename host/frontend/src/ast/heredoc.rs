//! Finding heredoc words (`<<EOF`, `<<-EOF`, `3<<"EOF"`) in an instruction line.
//!
//! Like BuildKit, the line is split into shell words with quotes and escapes kept raw; a word
//! that is entirely `[fd]<<[-]DELIM` opens a heredoc. `cat<<EOF` (no space) is not one, as in
//! BuildKit. A delimiter with any quoted part disables expansion of the body.

use super::Heredoc;

/// Shell-like words with quotes and escapes kept as written.
fn raw_words(line: &str) -> Vec<String> {
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
            None if c == '\\' => {
                word.push(c);
                if let Some(n) = chars.next() {
                    word.push(n);
                }
            }
            None if c == '"' || c == '\'' => {
                quote = Some(c);
                word.push(c);
            }
            Some('"') if c == '\\' => {
                word.push(c);
                if let Some(n) = chars.next() {
                    word.push(n);
                }
            }
            Some(q) if c == q => {
                quote = None;
                word.push(c);
            }
            _ => word.push(c),
        }
    }
    if !word.is_empty() {
        out.push(word);
    }
    out
}

/// Removes quotes and backslash escapes from a delimiter word.
fn unquote(word: &str) -> String {
    let mut out = String::new();
    let mut quote: Option<char> = None;
    let mut chars = word.chars();
    while let Some(c) = chars.next() {
        match (quote, c) {
            (None, '"' | '\'') => quote = Some(c),
            (Some(q), c) if c == q => quote = None,
            (None | Some('"'), '\\') => {
                if let Some(n) = chars.next() {
                    out.push(n);
                }
            }
            (_, c) => out.push(c),
        }
    }
    out
}

/// Parses one word as a heredoc opener, if it is one.
pub fn parse_heredoc_word(word: &str) -> Option<Heredoc> {
    let digits = word.chars().take_while(char::is_ascii_digit).count();
    let after = word[digits..].strip_prefix("<<")?;
    let (chomp, rest) = match after.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, after),
    };
    if rest.is_empty() || rest.contains('<') {
        return None;
    }
    let name = unquote(rest);
    if name.is_empty() || raw_words(&name).len() != 1 {
        return None;
    }
    let fd = if digits == 0 { 0 } else { word[..digits].parse().ok()? };
    let expand = !rest.contains(['"', '\'', '\\']);
    Some(Heredoc { name, fd, expand, chomp, content: String::new() })
}

/// Every heredoc opened on this line, in order.
pub(super) fn heredocs_in_line(line: &str) -> Vec<Heredoc> {
    raw_words(line).iter().filter_map(|w| parse_heredoc_word(w)).collect()
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
        assert_eq!(h("RUN <<'EOF' <<\"E2\" 3<<E3"), vec![("EOF".into(), 0, false, false), ("E2".into(), 0, false, false), ("E3".into(), 3, true, false)]);
        assert_eq!(h("COPY <<a <<b /dst/"), vec![("a".into(), 0, true, false), ("b".into(), 0, true, false)]);
        assert!(h("RUN echo \"<<EOF\"").is_empty());
        assert!(h("RUN cat<<EOF").is_empty());
        assert!(h("RUN echo <<").is_empty());
        assert!(h("RUN echo a <<<b").is_empty());
    }

    #[test]
    fn chomping() {
        assert_eq!(chomp_heredoc_content("\t\ta\n\tb\n c\n"), "a\nb\n c\n");
    }
}
