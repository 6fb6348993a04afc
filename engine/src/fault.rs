//! Whose fault an error is: the spec's, the environment's, or tend's own.

use std::fmt;

/// The class of an error, so the CLI can say who should act on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// The spec is wrong: the user fixes it.
    Spec,
    /// The command line asks for something that cannot be done as asked (a question
    /// without a terminal to answer it, a saved plan with a controller running, a plan
    /// saved by an older tend).
    Usage,
    /// A store, saved plan or instance that a newer tend wrote, in a format this tend does
    /// not read (see [`crate::format`]): a newer tend is needed.
    Version,
    /// A provider, service or file outside tend failed.
    Environment,
    /// tend itself is wrong: a bug to report.
    Internal,
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Fault::Spec => "spec error",
            Fault::Usage => "usage error",
            Fault::Version => "version error",
            Fault::Environment => "environment error",
            Fault::Internal => "internal error (a bug in tend)",
        })
    }
}
