//! Running the lab's programs (`ip`, `iptables`, `iptables-restore`) and answering their output
//! or a typed error naming the command line.

use std::io::Write as _;
use std::process::{Command, Stdio};

use crate::NetnsError;

/// `program args` as a line, for error messages.
pub(crate) fn command_line(program: &str, args: &[&str]) -> String {
    let mut line = program.to_owned();
    for arg in args {
        line.push(' ');
        line.push_str(arg);
    }
    line
}

/// Runs `program args`, feeding it `input` on stdin when given (stdin is empty otherwise);
/// answers its stdout, or its stderr in the error when it fails.
pub fn run(program: &str, args: &[&str], input: Option<&str>) -> Result<String, NetnsError> {
    let command = command_line(program, args);
    let mut child = Command::new(program)
        .args(args)
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| NetnsError::Spawn {
            command: command.clone(),
            source,
        })?;
    // The handle is dropped at the end of the arm, which closes the child's stdin before the
    // wait. A program that exits without reading it is reported by its status below rather
    // than by the broken pipe.
    let written = match (input, child.stdin.take()) {
        (Some(input), Some(mut stdin)) => stdin.write_all(input.as_bytes()),
        _ => Ok(()),
    };
    let output = child
        .wait_with_output()
        .map_err(|source| NetnsError::Spawn {
            command: command.clone(),
            source,
        })?;
    if !output.status.success() {
        return Err(NetnsError::Failed {
            command,
            status: output.status,
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        });
    }
    written.map_err(|source| NetnsError::Stdin {
        command: command.clone(),
        source,
    })?;
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Runs `ip args` (iproute2) with an empty stdin.
pub fn ip(args: &[&str]) -> Result<String, NetnsError> {
    run("ip", args, None)
}

/// Runs `iptables-restore` inside namespace `ns` with `rules` on stdin.
pub(crate) fn iptables_restore(ns: &str, rules: &str) -> Result<(), NetnsError> {
    run(
        "ip",
        &["netns", "exec", ns, "iptables-restore", "-w"],
        Some(rules),
    )
    .map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failing_command_answers_its_status_and_stderr() {
        match run("sh", &["-c", "echo no >&2; exit 3"], None) {
            Err(NetnsError::Failed {
                command, stderr, ..
            }) => {
                assert_eq!(command, "sh -c echo no >&2; exit 3");
                assert_eq!(stderr, "no");
            }
            other => panic!("expected a failure, got {other:?}"),
        }
    }

    #[test]
    fn input_reaches_stdin() {
        assert_eq!(run("cat", &[], Some("in\n")).unwrap(), "in\n");
        assert_eq!(run("cat", &[], None).unwrap(), "");
    }
}
