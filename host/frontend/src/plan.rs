//! The build plan: the base to start from and the steps to apply, in order.
//!
//! For now one stage; a second FROM is an error until multi-stage builds land.

use crate::instructions::{parse_instruction, Instruction, ShellOrExec};
use crate::parser::logical_lines;
use crate::ParseError;

/// Where the image starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Base {
    Scratch,
    /// An image name, resolved by the caller.
    Image(String),
}

/// One step after FROM, with its Dockerfile line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub line: usize,
    pub instruction: Instruction,
    /// The instruction's text as written (for history and progress lines).
    pub text: String,
}

/// What to build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildPlan {
    pub base: Base,
    pub steps: Vec<Step>,
}

/// Parses a Dockerfile into a plan.
pub fn parse_dockerfile(text: &str) -> Result<BuildPlan, ParseError> {
    let lines = logical_lines(text)?;
    let Some(first) = lines.first() else {
        return Err(ParseError::new(1, "the Dockerfile has no instructions"));
    };
    let base = match parse_instruction(first)? {
        Instruction::From { image, .. } if image == "scratch" => Base::Scratch,
        Instruction::From { image, .. } => Base::Image(image),
        _ => return Err(ParseError::new(first.line, "no build stage in current context: the first instruction must be FROM")),
    };
    let mut steps = Vec::new();
    for l in &lines[1..] {
        let instruction = parse_instruction(l)?;
        if matches!(instruction, Instruction::From { .. }) {
            return Err(ParseError::new(l.line, "multi-stage builds are not supported by kiln yet"));
        }
        let mut text = l.keyword.clone();
        for f in &l.flags {
            text.push_str(" --");
            text.push_str(f);
        }
        if !l.rest.is_empty() {
            text.push(' ');
            text.push_str(&l.rest);
        }
        steps.push(Step { line: l.line, instruction, text });
    }
    Ok(BuildPlan { base, steps })
}

impl Step {
    /// Whether the step runs a process (and so needs a guest).
    pub fn needs_guest(&self) -> bool {
        matches!(self.instruction, Instruction::Run(_))
    }
}

/// Convenience for callers that only care about a RUN's argv.
pub fn run_argv(cmd: &ShellOrExec) -> Vec<String> {
    cmd.argv(&["/bin/sh".to_string(), "-c".to_string()])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_of_a_small_dockerfile() {
        let plan = parse_dockerfile("FROM scratch\nCOPY bb /bin/\nRUN [\"/bin/busybox\", \"true\"]\n").expect("plan");
        assert_eq!(plan.base, Base::Scratch);
        assert_eq!(plan.steps.len(), 2);
        assert_eq!(plan.steps[1].line, 3);
        assert!(plan.steps[1].needs_guest());
        assert_eq!(plan.steps[0].text, "COPY bb /bin/");
    }

    #[test]
    fn plan_errors() {
        assert_eq!(parse_dockerfile("# nothing\n").expect_err("empty").line, 1);
        assert!(parse_dockerfile("RUN true\n").expect_err("no from").message.contains("FROM"));
        assert_eq!(parse_dockerfile("FROM scratch\nFROM scratch\n").expect_err("multi").line, 2);
    }
}
