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
            "help: do as the error says; `{} --help` shows what the command takes, with examples",
            command_name()
        ),
        Fault::Version => format!(
            "help: install a tend at least as new as the one that wrote it (this is tend {}); \
             nothing was changed",
            env!("TEND_VERSION")
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
    command_of(&arguments())
}

/// `tend` and the first of `arguments` that is neither a flag nor the value of the one
/// global flag that takes its value apart (`--log-format json`).
fn command_of(arguments: &[String]) -> String {
    let mut words = vec!["tend".to_owned()];
    let command = arguments
        .iter()
        .enumerate()
        .find(|(at, a)| !a.starts_with('-') && (*at == 0 || arguments[at - 1] != "--log-format"))
        .map(|(_, a)| a.clone());
    words.extend(command.filter(|a| a.chars().all(|c| c.is_ascii_lowercase() || c == '-')));
    words.join(" ")
}

/// The process's arguments after the program, readable even when not UTF-8 (this runs
/// in the panic hook, which must not panic).
fn arguments() -> Vec<String> {
    std::env::args_os()
        .skip(1)
        .map(|a| a.to_string_lossy().into_owned())
        .collect()
}

/// The command line for a bug report, without what may be secret: a password in a store
/// address (`etcd://user:pw@...`), a plugin's `--config` and the plugin command after `--`.
fn command_line() -> String {
    redact(&arguments())
}

/// `tend` and `args`, with what may be secret replaced by `<hidden>`.
fn redact(args: &[String]) -> String {
    let mut words = vec!["tend".to_owned()];
    let mut hide_next = false;
    for (at, arg) in args.iter().enumerate() {
        if hide_next {
            words.push("<hidden>".to_owned());
            hide_next = false;
        } else if arg == "--" {
            words.push("--".to_owned());
            if at + 1 < args.len() {
                words.push("<hidden>".to_owned());
            }
            break;
        } else if arg == "--config" {
            words.push(arg.clone());
            hide_next = true;
        } else if arg.starts_with("--config=") {
            words.push("--config=<hidden>".to_owned());
        } else {
            words.push(hide_credentials(arg));
        }
    }
    words.join(" ")
}

/// `etcd://user:secret@host` as `etcd://***@host` (up to the last `@`); anything else as
/// it is.
fn hide_credentials(arg: &str) -> String {
    let Some((scheme, rest)) = arg.split_once("://") else {
        return arg.to_owned();
    };
    match rest.rsplit_once('@') {
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
            SavedPlanError::OtherFormat { .. } => match e.newer() {
                Some(newer) => newer.fault(),
                None => Fault::Usage,
            },
            SavedPlanError::NotAPlan { .. }
            | SavedPlanError::Damaged { .. }
            | SavedPlanError::Io { .. } => Fault::Environment,
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

impl From<engine::controller::ControllerError> for Failure {
    fn from(e: engine::controller::ControllerError) -> Self {
        use engine::controller::ControllerError;
        match e {
            ControllerError::Store(s) => s.into(),
            ControllerError::Reconcile(r) => r.into(),
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
        assert_eq!(
            hide_credentials("etcd://u:p@ss@127.0.0.1:2379"),
            "etcd://***@127.0.0.1:2379"
        );
    }

    #[test]
    fn the_usage_help_names_the_command_not_a_flag_value() {
        let words =
            |args: &[&str]| command_of(&args.iter().map(|a| a.to_string()).collect::<Vec<_>>());
        assert_eq!(words(&["--log-format", "text", "destroy"]), "tend destroy");
        assert_eq!(words(&["-v", "plan", "x.star"]), "tend plan");
        assert_eq!(words(&["./main.star"]), "tend");
    }

    #[test]
    fn a_bug_report_hides_plugin_configs_and_commands() {
        let args: Vec<String> = [
            "plugin",
            "conformance",
            "--config",
            "{\"token\": \"s3cret\"}",
            "--",
            "./p",
            "--api-key",
            "X",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert_eq!(
            redact(&args),
            "tend plugin conformance --config <hidden> -- <hidden>"
        );
        let args = vec!["apply".to_owned(), "--config={\"k\":1}".to_owned()];
        assert_eq!(redact(&args), "tend apply --config=<hidden>");
    }

    #[test]
    fn every_class_of_error_ends_with_what_to_do_next() {
        for fault in [
            Fault::Spec,
            Fault::Usage,
            Fault::Version,
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
