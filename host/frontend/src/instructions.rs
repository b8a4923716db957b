//! The exec (JSON array) and shell forms of RUN, CMD and ENTRYPOINT.

/// The exec (JSON array) or shell form of RUN, CMD and ENTRYPOINT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShellOrExec {
    Shell(String),
    Exec(Vec<String>),
}

impl ShellOrExec {
    /// The argv this runs, given the image's shell (`["/bin/sh", "-c"]` by default).
    pub fn argv(&self, shell: &[String]) -> Vec<String> {
        match self {
            Self::Exec(v) => v.clone(),
            Self::Shell(s) => shell.iter().cloned().chain(std::iter::once(s.clone())).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argv_of_both_forms() {
        let sh = vec!["/bin/sh".to_string(), "-c".to_string()];
        assert_eq!(ShellOrExec::Shell("x".into()).argv(&sh), vec!["/bin/sh", "-c", "x"]);
        assert_eq!(ShellOrExec::Exec(vec!["a".into()]).argv(&sh), vec!["a"]);
    }
}
