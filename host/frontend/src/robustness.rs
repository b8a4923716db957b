//! Robustness: every layer must return errors, never panic, on arbitrary input. Inputs are
//! generated deterministically from a token alphabet chosen to hit the tricky paths
//! (escapes, quotes, heredocs, JSON, flags, expansions, multi-byte characters).

use crate::graph::BuildOptions;
use crate::shell::Lexer;

const TOKENS: &[&str] = &[
    "FROM ",
    "RUN ",
    "COPY ",
    "ADD ",
    "ENV ",
    "ARG ",
    "ONBUILD ",
    "HEALTHCHECK ",
    "CMD ",
    "LABEL ",
    "EXPOSE ",
    "SHELL ",
    "AS ",
    "x",
    "é",
    "✓",
    " ",
    "\t",
    "\n",
    "\r\n",
    "\\",
    "`",
    "\\\n",
    "#",
    "# escape=`\n",
    "# syntax=a\n",
    "\"",
    "'",
    "=",
    "$",
    "${",
    "}",
    ":",
    "-",
    "+",
    "?",
    "%",
    "#",
    "/",
    "//",
    "*",
    "[",
    "]",
    "[\"a\"]",
    "<<",
    "<<-",
    "EOF",
    "\nEOF\n",
    "--",
    "--from=",
    "--mount=",
    "type=cache,",
    "target=/t",
    "--chmod=",
    "7",
    "0",
    "{",
    ",",
    "!",
];

struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> usize {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (self.0 >> 33) as usize
    }
}

#[test]
fn no_layer_panics_on_generated_input() {
    let mut rng = Lcg(0x6b696c6e);
    let env: Vec<(String, String)> = vec![("x".into(), "a b".into())];
    for _ in 0..3000 {
        let len = rng.next() % 40;
        let text: String = (0..len).map(|_| TOKENS[rng.next() % TOKENS.len()]).collect();
        let _ = crate::ast::parse(&text).map(|a| a.dump());
        if let Ok(df) = crate::parse_full(&text) {
            let _ = df.resolve(&BuildOptions::default());
            for stage in &df.stages {
                for c in &stage.commands {
                    let _ = c.expand(&Lexer::new(df.escape), &env);
                }
            }
        }
        let _ = Lexer::new('\\').process_words(&text, &env);
        let _ = Lexer::new('`').process_word(&text, &env);
        let _ = crate::dockerignore::Dockerignore::parse(&text).map(|d| d.excludes(&text));
    }
}
