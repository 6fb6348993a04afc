//! Whose fault an error is: the spec's, the environment's, or tend's own.

use std::fmt;

/// The class of an error, so the CLI can say who should act on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// The spec (or the command line) is wrong: the user fixes it.
    Spec,
    /// A provider, service or file outside tend failed.
    Environment,
    /// tend itself is wrong: a bug to report.
    Internal,
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Fault::Spec => "spec error",
            Fault::Environment => "environment error",
            Fault::Internal => "internal error (a bug in tend)",
        })
    }
}
