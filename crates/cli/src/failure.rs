//! How a subcommand fails, and the exit status and message that follow.

use std::io::Write;
use std::process::ExitCode;

/// How a command failed.
pub enum Failure {
    /// Bad arguments: exit status 2.
    Usage(String),
    /// The operation failed or found a problem: exit status 1.
    Failed(String),
    /// Failed, and the command already said why.
    Quiet,
}

impl From<String> for Failure {
    fn from(s: String) -> Failure {
        Failure::Failed(s)
    }
}

impl From<blobcache_core::Error> for Failure {
    fn from(e: blobcache_core::Error) -> Failure {
        Failure::Failed(e.to_string())
    }
}

pub type Outcome = Result<(), Failure>;

/// Flushes stdout, prints the failure's message (without secrets) on
/// stderr, and gives the exit status: 0, 1, or 2 for a usage error.
pub fn exit(outcome: Outcome) -> ExitCode {
    let _ = std::io::stdout().flush();
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Quiet) => ExitCode::FAILURE,
        Err(Failure::Failed(m)) => {
            eprintln!("blobcache: {}", blobcache_core::redact::redact(&m));
            ExitCode::FAILURE
        }
        Err(Failure::Usage(m)) => {
            eprintln!(
                "blobcache: {}\n\nFor more information, try '--help'.",
                blobcache_core::redact::redact(&m)
            );
            ExitCode::from(2)
        }
    }
}
