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
            Failure::Spec(text) => f.write_str(text),
            Failure::Other { fault, message } => write!(f, "error: {fault}: {message}"),
        }
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
        crate::errln!("error: {}: {what}{place}", Fault::Internal);
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
