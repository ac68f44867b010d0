//! The operator command line `trustpool`: a client of the `Admin` gRPC
//! service (mutual TLS with an operator certificate, or the local UNIX
//! socket) plus the offline `policy check` and `eventlog show|replay`.
//!
//! Modules, one job each:
//! - [`args`]: the command line (clap);
//! - [`connect`]: where to connect and how (pure resolution, then I/O);
//! - [`timefmt`]: times on the command line and in output (pure);
//! - [`policyfmt`]: the captured `[[allow]]` entry and the PCR diff (pure);
//! - [`eventlogfmt`]: event logs as tables and JSON (pure);
//! - [`render`]: tables and JSON of every answer (pure);
//! - [`commands`]: running one command (the only module with RPCs).

pub mod args;
pub mod commands;
pub mod connect;
pub mod eventlogfmt;
pub mod eventpolicy;
pub mod policyfmt;
pub mod render;
pub mod timefmt;

use std::fmt;

/// The exit codes of `trustpool`, as documented in `--help` and docs/operating.md.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// 0: success, or a "yes" answer (trusted, identical, valid).
    Ok,
    /// 1: a negative answer: not trusted at that time, PCRs differ, the
    /// policy has errors, a dry-run is invalid or would remove hosts.
    No,
    /// 2: usage, connection, permission or server error.
    Error,
    /// 3: the host, pool or pending enrolment named does not exist.
    NotFound,
}

impl Exit {
    /// The process exit status.
    pub fn code(self) -> u8 {
        match self {
            Exit::Ok => 0,
            Exit::No => 1,
            Exit::Error => 2,
            Exit::NotFound => 3,
        }
    }
}

/// What a command printed and how it ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// Text for standard output (a table or JSON), ending with a newline.
    pub stdout: String,
    /// Exit code.
    pub code: Exit,
}

impl Outcome {
    /// A successful outcome with this output.
    pub fn ok(stdout: String) -> Outcome {
        Outcome {
            stdout,
            code: Exit::Ok,
        }
    }

    /// This output with the given exit code.
    pub fn with(stdout: String, code: Exit) -> Outcome {
        Outcome { stdout, code }
    }
}

/// A failed command: a one-line message for standard error and its exit code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CliError {
    /// Exit code (2 or 3).
    pub code: Exit,
    /// One line, without the `trustpool: error:` prefix.
    pub message: String,
}

impl CliError {
    /// A usage, connection or server error (exit 2).
    pub fn error(message: impl Into<String>) -> CliError {
        CliError {
            code: Exit::Error,
            message: message.into(),
        }
    }

    /// A "not found" error (exit 3).
    pub fn not_found(message: impl Into<String>) -> CliError {
        CliError {
            code: Exit::NotFound,
            message: message.into(),
        }
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for CliError {}

/// Makes a message fit on one line: newlines and tabs become spaces, other
/// control characters are dropped, runs of spaces are kept as they are.
pub fn one_line(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.trim().chars() {
        match c {
            '\n' | '\r' | '\t' => {
                if !out.ends_with(' ') {
                    out.push(' ');
                }
            }
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_are_the_documented_ones() {
        assert_eq!(
            [Exit::Ok, Exit::No, Exit::Error, Exit::NotFound].map(Exit::code),
            [0, 1, 2, 3]
        );
    }

    #[test]
    fn one_line_flattens_messages() {
        assert_eq!(one_line(" a\nb\r\n\tc\u{7}d "), "a b cd");
    }
}
