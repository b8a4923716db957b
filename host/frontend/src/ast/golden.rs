//! Golden tests: every `testdata/<case>/Dockerfile` must dump exactly as `testdata/<case>/result`
//! (BuildKit's parser dump format). The cases were written for kiln after BuildKit's
//! `frontend/dockerfile/parser/testfiles`; results were checked by hand against BuildKit's rules.

use std::path::Path;

#[test]
fn every_golden_case_dumps_as_expected() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata");
    let mut cases: Vec<_> = std::fs::read_dir(&root).expect("testdata dir").filter_map(Result::ok).map(|e| e.path()).collect();
    cases.sort();
    assert!(cases.len() >= 10, "expected golden cases in {}", root.display());
    let mut failures = Vec::new();
    for case in &cases {
        let dockerfile = std::fs::read_to_string(case.join("Dockerfile")).expect("Dockerfile");
        let want = std::fs::read_to_string(case.join("result")).expect("result");
        let got = match super::parse(&dockerfile) {
            Ok(ast) => ast.dump(),
            Err(e) => format!("error: {e}\n"),
        };
        if got != want {
            failures.push(format!("{}:\n--- want\n{want}--- got\n{got}", case.display()));
        }
    }
    assert!(failures.is_empty(), "{} golden case(s) differ:\n{}", failures.len(), failures.join("\n"));
}
