//! Saved plans (`tend plan -o FILE`): a plan bound to the spec and observed state it came from.

use serde::{Deserialize, Serialize};

use super::model::Plan;
use crate::spec::Spec;

/// The version of the saved-plan format this tend writes and reads. Format 2 writes the
/// sets of actions that many actions wait for once, as barriers; format 1 listed them in
/// every action's `after`.
pub const FORMAT: u32 = 2;

/// Why a saved plan cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SavedPlanError {
    /// The file is not a saved plan of this format.
    #[error("{path} is not a tend plan file: {detail}")]
    NotAPlan {
        /// The file.
        path: String,
        /// What is wrong.
        detail: String,
    },
    /// The file is a saved plan, written by a tend that uses another format.
    #[error(
        "{path} was saved by tend {tend_version} in plan format {format}, and this tend reads \
         format {FORMAT} only: run `tend plan -o {path}` again"
    )]
    OtherFormat {
        /// The file.
        path: String,
        /// Its format.
        format: u64,
        /// The tend that wrote it.
        tend_version: String,
    },
    /// The file could not be read or written.
    #[error("cannot access plan file {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// A plan with what it was made from, so `apply` can refuse it once the world moved on.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SavedPlan {
    /// Always [`FORMAT`].
    pub format: u32,
    /// The tend version that made it.
    pub tend_version: String,
    /// The spec file it was made from, as given.
    pub spec_path: String,
    /// `Spec::fingerprint` of that spec.
    pub spec_fingerprint: String,
    /// `Observed::fingerprint` of the observed state it was planned against.
    pub observed_fingerprint: String,
    /// The spec itself (secrets appear by name only).
    pub spec: Spec,
    /// The plan.
    pub plan: Plan,
}

impl SavedPlan {
    /// Writes the plan to `path` atomically (a temporary file, then a rename).
    pub fn write(&self, path: &std::path::Path) -> Result<(), SavedPlanError> {
        let io = |source| SavedPlanError::Io {
            path: path.display().to_string(),
            source,
        };
        let text = serde_json::to_string_pretty(self).map_err(|e| io(std::io::Error::other(e)))?;
        let mut temp = path.as_os_str().to_owned();
        temp.push(".tmp");
        let temp = std::path::PathBuf::from(temp);
        std::fs::write(&temp, text + "\n").map_err(io)?;
        std::fs::rename(&temp, path).map_err(io)
    }

    /// Reads a saved plan, checking its format first: a plan of another format is
    /// [`SavedPlanError::OtherFormat`], whatever else it holds.
    pub fn read(path: &std::path::Path) -> Result<SavedPlan, SavedPlanError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| SavedPlanError::Io {
            path: shown.clone(),
            source,
        })?;
        let not_a_plan = |e: serde_json::Error| SavedPlanError::NotAPlan {
            path: shown.clone(),
            detail: e.to_string(),
        };
        let value: serde_json::Value = serde_json::from_str(&text).map_err(not_a_plan)?;
        if let (Some(format), Some(tend_version)) = (
            value.get("format").and_then(serde_json::Value::as_u64),
            value
                .get("tend_version")
                .and_then(serde_json::Value::as_str),
        ) {
            if format != u64::from(FORMAT) {
                return Err(SavedPlanError::OtherFormat {
                    path: shown,
                    format,
                    tend_version: tend_version.to_owned(),
                });
            }
        }
        serde_json::from_value(value).map_err(not_a_plan)
    }
}
