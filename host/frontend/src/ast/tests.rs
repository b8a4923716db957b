//! Unit tests of the scanner: directives, continuations, heredocs, errors.

use super::parse;

#[test]
fn directives_are_read_only_at_the_top() {
    let ast = parse("# syntax=docker/dockerfile:1\n# check=skip=all\n#escape=`\nFROM a\n").expect("parse");
    assert_eq!(ast.directives.syntax.as_deref(), Some("docker/dockerfile:1"));
    assert_eq!(ast.directives.check.as_deref(), Some("skip=all"));
    assert_eq!(ast.escape, '`');
    let ast = parse("# comment\n# escape=`\nFROM a\n").expect("parse");
    assert_eq!(ast.escape, '\\');
    let ast = parse("\n# escape=`\nFROM a\n").expect("parse");
    assert_eq!(ast.escape, '\\');
    let e = parse("# escape=`\n# escape=\\\nFROM a\n").expect_err("twice");
    assert_eq!(e.to_string(), "Dockerfile:2: only one escape parser directive can be used");
    let e = parse("# escape=x\nFROM a\n").expect_err("bad");
    assert_eq!(e.line, 1);
}

#[test]
fn continuation_and_lines() {
    let ast = parse("FROM a\nRUN echo \\\n  # comment\n\n  hi \\\n there\nCMD x\n").expect("parse");
    assert_eq!(ast.nodes[1].args, vec!["echo   hi  there"]);
    assert_eq!((ast.nodes[1].start_line, ast.nodes[1].end_line), (2, 6));
    assert_eq!(ast.nodes[2].start_line, 7);
    assert_eq!(ast.warnings.len(), 2);
    // An escaped escape at end of line does not continue.
    let ast = parse("RUN echo \\\\\nCMD x\n").expect("parse");
    assert_eq!(ast.nodes.len(), 2);
    // Continuation at end of file ends the instruction.
    let ast = parse("FROM a\nRUN x \\").expect("parse");
    assert_eq!(ast.nodes[1].args, vec!["x"]);
}

#[test]
fn heredocs_are_attached() {
    let text = "FROM a\nRUN <<EOF\necho $X\nEOF\nCOPY <<-'one' <<two /d/\n\tx\n\tone\ny\ntwo\nRUN [\"<<EOF\"]\nONBUILD RUN <<E\nz\nE\n";
    let ast = parse(text).expect("parse");
    let run = &ast.nodes[1];
    assert_eq!(run.heredocs.len(), 1);
    assert_eq!(run.heredocs[0].content, "echo $X\n");
    assert!(run.heredocs[0].expand);
    assert_eq!((run.start_line, run.end_line), (2, 4));
    let copy = &ast.nodes[2];
    assert_eq!(copy.heredocs.len(), 2);
    assert_eq!(copy.heredocs[0].content, "\tx\n");
    assert!(copy.heredocs[0].chomp && !copy.heredocs[0].expand);
    assert_eq!(copy.heredocs[1].content, "y\n");
    assert!(ast.nodes[3].heredocs.is_empty());
    assert_eq!(ast.nodes[4].heredocs[0].content, "z\n");
    assert_eq!(ast.nodes[4].start_line, 11);
}

#[test]
fn errors_name_the_line() {
    let e = parse("FROM a\n\nRUN <<EOF\necho\n").expect_err("unterminated");
    assert_eq!(e.to_string(), "Dockerfile:3: unterminated heredoc EOF");
    let e = parse("FROM a\nENV X\n").expect_err("env");
    assert_eq!(e.to_string(), "Dockerfile:2: ENV must have two arguments");
    let e = parse("FROM a\nLABEL a=b c\n").expect_err("label");
    assert_eq!(e.line, 2);
    assert!(parse("").is_err());
    assert_eq!(parse("# only a comment\n\n").expect_err("empty").message, "file with no instructions");
}

#[test]
fn crlf_and_bom() {
    let ast = parse("\u{feff}FROM a\r\nRUN x \\\r\n y\r\n").expect("parse");
    assert_eq!(ast.nodes[0].args, vec!["a"]);
    assert_eq!(ast.nodes[1].args, vec!["x  y"]);
}
