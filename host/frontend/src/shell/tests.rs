//! Table-driven expansion tests, after the cases of BuildKit's `shell/envVarTest`.

use super::{Env, Lexer};

fn env() -> Vec<(String, String)> {
    [
        ("PWD", "/home"),
        ("SHELL", "bash"),
        ("KOREAN", "한국어"),
        ("EMPTY", ""),
        ("SPACED", "a  b c"),
        ("PATHV", "/usr/local/bin/app.tar.gz"),
        ("X", "x"),
        ("AB", "aXbXc"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// (input, expected word) for the default `\` lexer.
const WORD_CASES: &[(&str, &str)] = &[
    ("hello", "hello"),
    ("he'll'o", "hello"),
    ("he'llo", "error"),
    ("he\\'llo", "he'llo"),
    ("he\\\\'llo", "error"),
    ("abc\\\\def", "abc\\def"),
    ("\"abc\\\\def\"", "abc\\def"),
    ("\"abc\\ndef\"", "abc\\ndef"),
    ("'abc\\ndef'", "abc\\ndef"),
    ("\"abc\\\"def\"", "abc\"def"),
    ("'abc\"def'", "abc\"def"),
    ("\"a'b\"", "a'b"),
    ("'$PWD'", "$PWD"),
    ("\"$PWD\"", "/home"),
    ("\\$PWD", "$PWD"),
    ("\"\\$PWD\"", "$PWD"),
    ("$PWD", "/home"),
    ("${PWD}", "/home"),
    ("${PWD}x", "/homex"),
    ("$PWDx", ""),
    ("$PWD/x", "/home/x"),
    ("$", "$"),
    ("a$", "a$"),
    ("$.x", "$.x"),
    ("$1", ""),
    ("$12x", "x"),
    ("$$", ""),
    ("$KOREAN", "한국어"),
    ("안녕$KOREAN", "안녕한국어"),
    ("${UNSET}", ""),
    ("${", "error"),
    ("${}", "error"),
    ("${:}", "error"),
    ("${{}", "error"),
    ("${PWD", "error"),
    ("${PWD:-x", "error"),
    ("${PWD:=x}", "error"),
    ("${PWD!x}", "error"),
    ("${UNSET:-default}", "default"),
    ("${UNSET-default}", "default"),
    ("${EMPTY:-default}", "default"),
    ("${EMPTY-default}", ""),
    ("${PWD:-default}", "/home"),
    ("${UNSET:-$PWD/x}", "/home/x"),
    ("${UNSET:-\"a b\"}", "a b"),
    ("${UNSET:-'$PWD'}", "$PWD"),
    ("${UNSET:+alt}", ""),
    ("${UNSET+alt}", ""),
    ("${EMPTY:+alt}", ""),
    ("${EMPTY+alt}", "alt"),
    ("${PWD:+alt}", "alt"),
    ("${PWD+$SHELL}", "bash"),
    ("${PWD:?msg}", "/home"),
    ("${EMPTY?msg}", ""),
    ("${UNSET:?}", "error"),
    ("${UNSET?must be set}", "error"),
    ("${EMPTY:?}", "error"),
    ("${PATHV#*/}", "usr/local/bin/app.tar.gz"),
    ("${PATHV##*/}", "app.tar.gz"),
    ("${PATHV%.*}", "/usr/local/bin/app.tar"),
    ("${PATHV%%.*}", "/usr/local/bin/app"),
    ("${PATHV#/usr}", "/local/bin/app.tar.gz"),
    ("${PATHV#nomatch}", "/usr/local/bin/app.tar.gz"),
    ("${PATHV%\\.gz}", "/usr/local/bin/app.tar"),
    ("${PATHV%.[gt]z}", "/usr/local/bin/app.tar"),
    ("${PATHV##*[!a-z.]}", "app.tar.gz"),
    ("${PATHV%?}", "/usr/local/bin/app.tar.g"),
    ("${UNSET#x}", ""),
    ("${PWD:#x}", "error"),
    ("${PWD:%x}", "error"),
    ("${PATHV%[}", "error"),
    ("${AB/X/-}", "a-bXc"),
    ("${AB//X/-}", "a-b-c"),
    ("${AB//X}", "abc"),
    ("${AB/X*/}", "a"),
    ("${AB//[Xb]/_}", "a___c"),
    ("${AB/nomatch/y}", "aXbXc"),
    ("${AB/X/$PWD}", "a/homebXc"),
    ("${UNSET/a/b}", ""),
    ("${AB/X/-", "error"),
    ("'unterminated", "error"),
    ("\"unterminated", "error"),
    ("foo\\", "foo"),
    ("${SPACED}", "a  b c"),
];

#[test]
fn word_table() {
    let lx = Lexer::new('\\');
    let env = env();
    for (input, want) in WORD_CASES {
        match lx.process_word(input, &env) {
            Ok(got) => assert_eq!(&got, want, "process_word({input:?})"),
            Err(e) => assert_eq!(*want, "error", "process_word({input:?}) failed: {e}"),
        }
    }
}

#[test]
fn words_split_only_unquoted_expansions() {
    let lx = Lexer::new('\\');
    let env = env();
    let cases: &[(&str, &[&str])] = &[
        ("a b  c", &["a", "b", "c"]),
        ("$SPACED", &["a", "b", "c"]),
        ("\"$SPACED\"", &["a  b c"]),
        ("x$SPACED", &["xa", "b", "c"]),
        ("a\\ b", &["a b"]),
        ("'a b' c", &["a b", "c"]),
        ("\"\" x", &["x"]),
        ("${UNSET}", &[]),
    ];
    for (input, want) in cases {
        let got = lx.process_words(input, &env).expect("words");
        assert_eq!(got, *want, "process_words({input:?})");
    }
}

#[test]
fn backtick_escape() {
    let lx = Lexer::new('`');
    let env = env();
    assert_eq!(lx.process_word("c:\\dir\\$X", &env).expect("ok"), "c:\\dir\\x");
    assert_eq!(lx.process_word("`$X", &env).expect("ok"), "$X");
    assert_eq!(lx.process_word("\"a`\"b\"", &env).expect("ok"), "a\"b");
}

#[test]
fn options_and_matches() {
    let env = env();
    let mut lx = Lexer::new('\\');
    lx.skip_unset = true;
    assert_eq!(lx.process_word("$UNSET ${UNSET} ${UNSET:-d} $X", &env).expect("ok"), "$UNSET ${UNSET} ${UNSET:-d} x");
    let mut lx = Lexer::new('\\');
    lx.raw_quotes = true;
    assert_eq!(lx.process_word("'a' \"$X\"", &env).expect("ok"), "'a' \"x\"");
    let (_, used) = Lexer::new('\\').process_word_with_matches("$X ${PWD:-a} $UNSET", &env).expect("ok");
    assert_eq!(used.into_iter().collect::<Vec<_>>(), vec!["PWD".to_string(), "X".to_string()]);
}

#[test]
fn error_messages() {
    let env = env();
    let lx = Lexer::new('\\');
    let e = |w: &str| lx.process_word(w, &env).expect_err(w).to_string();
    assert_eq!(e("${UNSET:?}"), "failed to process \"${UNSET:?}\": UNSET: is not allowed to be unset");
    assert_eq!(e("${EMPTY:?}"), "failed to process \"${EMPTY:?}\": EMPTY: is not allowed to be empty");
    assert_eq!(e("${UNSET?set it}"), "failed to process \"${UNSET?set it}\": UNSET: set it");
    assert!(e("${PWD").ends_with("syntax error: missing '}'"));
    assert!(e("${}").ends_with("syntax error: bad substitution"));
    assert!(e("${PWD:#x}").ends_with("unsupported modifier (:#) in substitution"));
    assert!(e("'x").ends_with("unexpected end of statement while looking for matching single-quote"));
}

#[test]
fn env_lookup_last_wins() {
    let env: Vec<(String, String)> = vec![("A".into(), "1".into()), ("A".into(), "2".into())];
    assert_eq!(env.lookup("A").as_deref(), Some("2"));
    assert!(super::expands("copy") && !super::expands("RUN") && !super::expands("CMD"));
}
