//! Go's `strconv.Quote`, so that dumps compare byte for byte with BuildKit's golden files.
//!
//! Printable characters (Go's `unicode.IsPrint`, approximated by "not a control character")
//! are kept; `"` and `\` are escaped; the usual C escapes are used for `\a \b \f \n \r \t \v`;
//! other control characters become `\xNN` (ASCII) or `\uNNNN` / `\UNNNNNNNN`.

/// Quotes `s` exactly as Go's `strconv.Quote` does for valid UTF-8.
pub fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{b}' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => out.push_str(&format!("\\x{:02x}", c as u32)),
            c if is_go_unprintable(c) => {
                if (c as u32) < 0x10000 {
                    out.push_str(&format!("\\u{:04x}", c as u32));
                } else {
                    out.push_str(&format!("\\U{:08x}", c as u32));
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Non-ASCII characters Go refuses to print raw: C1 controls, the non-ASCII spaces
/// (Go's IsPrint accepts only U+0020 as a space), format and separator characters.
fn is_go_unprintable(c: char) -> bool {
    let u = c as u32;
    c.is_control()
        || matches!(u, 0x00a0 | 0x00ad | 0x1680 | 0x2000..=0x200f | 0x2028..=0x202f | 0x205f..=0x206f | 0x3000 | 0xfeff)
        || (0xe000..=0xf8ff).contains(&u)
        || (0xfff9..=0xfffb).contains(&u)
}

#[cfg(test)]
mod tests {
    use super::go_quote;

    #[test]
    fn quotes_like_go() {
        let cases = [
            ("", r#""""#),
            ("a b", r#""a b""#),
            ("say \"hi\"", r#""say \"hi\"""#),
            ("a\\b", r#""a\\b""#),
            ("tab\there\n", r#""tab\there\n""#),
            ("\u{1}\u{7f}", r#""\x01\x7f""#),
            ("héllo ✓", "\"héllo ✓\""),
            ("\u{a0}\u{200b}", r#""\u00a0\u200b""#),
        ];
        for (input, want) in cases {
            assert_eq!(go_quote(input), want, "quoting {input:?}");
        }
    }
}
