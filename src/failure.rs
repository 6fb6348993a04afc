//! How the binary reports failures: one message, classed by whose fault it is, exit 1.

use std::fmt;

use engine::fault::Fault;
use engine::lang::LangError;
use engine::plan::SavedPlanError;
use engine::provider::ProviderError;

/// A failed command, ready to print.
#[derive(Debug)]
pub enum Failure {
    /// Spec diagnostics, printed as they are (they carry file:line:col).
    Spec(String),
    /// Anything else, with its class.
    Other {
        /// Whose fault.
        fault: Fault,
        /// The message.
        message: String,
    },
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Spec(text) => {
                write!(f, "{}\n{}", text.trim_end(), next_step(Fault::Spec))
            }
            Failure::Other { fault, message } => {
                write!(f, "error: {fault}: {message}\n{}", next_step(*fault))
            }
        }
    }
}

/// The last line of every error: what to do next, by whose fault it is.
pub fn next_step(fault: Fault) -> String {
    match fault {
        Fault::Spec => {
            "help: change the spec as the error says, then check it with `tend validate`".to_owned()
        }
        Fault::Usage => format!(
            "help: `{} --help` shows what the command takes, with examples",
            command_name()
        ),
        Fault::Environment => "help: fix what failed outside tend, named above, then run the \
             command again; tend starts from what is really running (`tend status` shows it)"
            .to_owned(),
        Fault::Internal => format!(
            "help: this is a bug in tend, not in your spec or machine: please report it with \
             this message, the version (tend {}) and the command: {}",
            env!("TEND_VERSION"),
            command_line()
        ),
    }
}

/// `tend plan`: the program and its command, from the process's arguments.
fn command_name() -> String {
    let mut words = vec!["tend".to_owned()];
    words.extend(
        std::env::args()
            .skip(1)
            .find(|a| !a.starts_with('-'))
            .filter(|a| a.chars().all(|c| c.is_ascii_lowercase() || c == '-')),
    );
    words.join(" ")
}

/// The command line as typed, with any password in a store address (`etcd://user:pw@...`)
/// hidden, for a bug report.
fn command_line() -> String {
    let mut words = vec!["tend".to_owned()];
    words.extend(std::env::args().skip(1).map(|arg| hide_credentials(&arg)));
    words.join(" ")
}

/// `etcd://user:secret@host` as `etcd://***@host`; anything else as it is.
fn hide_credentials(arg: &str) -> String {
    let Some((scheme, rest)) = arg.split_once("://") else {
        return arg.to_owned();
    };
    match rest.split_once('@') {
        Some((_, host)) => format!("{scheme}://***@{host}"),
        None => arg.to_owned(),
    }
}

impl From<LangError> for Failure {
    fn from(e: LangError) -> Self {
        match e {
            LangError::Spec(d) => Failure::Spec(d.to_string()),
            read @ LangError::Read { .. } => Failure::Other {
                fault: Fault::Spec,
                message: read.to_string(),
            },
        }
    }
}

impl From<ProviderError> for Failure {
    fn from(e: ProviderError) -> Self {
        let mut message = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(inner) = source {
            message.push_str(&format!(": {inner}"));
            source = inner.source();
        }
        Failure::Other {
            fault: e.fault(),
            message,
        }
    }
}

impl From<SavedPlanError> for Failure {
    fn from(e: SavedPlanError) -> Self {
        // A plan from another tend is not broken: it asks to be made again.
        let fault = match e {
            SavedPlanError::OtherFormat { .. } => Fault::Usage,
            SavedPlanError::NotAPlan { .. } | SavedPlanError::Io { .. } => Fault::Environment,
        };
        Failure::Other {
            fault,
            message: e.to_string(),
        }
    }
}

/// Turns a panic into one line naming it a bug, with no backtrace. The process goes on:
/// a panic inside one action fails that action (the reconciler reports it), and one on the
/// main thread ends the command with exit status 1.
pub fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let place = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        let what = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_default();
        crate::errln!(
            "error: {}: {what}{place}\n{}",
            Fault::Internal,
            next_step(Fault::Internal)
        );
    }));
}

impl From<engine::reconcile::PreviewError> for Failure {
    fn from(e: engine::reconcile::PreviewError) -> Self {
        use engine::reconcile::PreviewError;
        match e {
            PreviewError::Provider(p) => p.into(),
            PreviewError::Partial(partial) => Failure::Other {
                fault: Fault::Environment,
                message: format!(
                    "{partial}; nothing was planned from a partial view: bring the provider back, then run the command again"
                ),
            },
            PreviewError::Graph(text) => Failure::Other {
                fault: Fault::Spec,
                message: text,
            },
        }
    }
}

impl From<engine::reconcile::ReconcileError> for Failure {
    fn from(e: engine::reconcile::ReconcileError) -> Self {
        use engine::reconcile::ReconcileError;
        match e {
            ReconcileError::Provider(p) => p.into(),
            ReconcileError::Store(s) => s.into(),
            ReconcileError::Graph(text) => Failure::Other {
                fault: Fault::Spec,
                message: text,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_store_password_never_reaches_a_bug_report() {
        assert_eq!(
            hide_credentials("etcd://root:hunter2@127.0.0.1:2379"),
            "etcd://***@127.0.0.1:2379"
        );
        assert_eq!(
            hide_credentials("etcd://127.0.0.1:2379"),
            "etcd://127.0.0.1:2379"
        );
        assert_eq!(hide_credentials("--yes"), "--yes");
    }

    #[test]
    fn every_class_of_error_ends_with_what_to_do_next() {
        for fault in [
            Fault::Spec,
            Fault::Usage,
            Fault::Environment,
            Fault::Internal,
        ] {
            let failure = Failure::Other {
                fault,
                message: "something".to_owned(),
            };
            let text = failure.to_string();
            let last = text.lines().last().unwrap_or_default();
            assert!(last.starts_with("help: "), "{fault:?}: {text}");
        }
        let internal = next_step(Fault::Internal);
        assert!(internal.contains(env!("TEND_VERSION")), "{internal}");
        assert!(internal.contains("report"), "{internal}");
    }
}
