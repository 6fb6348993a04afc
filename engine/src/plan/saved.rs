//! Saved plans (`tend plan -o FILE`): a plan bound to the spec and observed state it came from.

use serde::{Deserialize, Serialize};

use super::model::Plan;
use crate::format::{Kind, NewerFormat};
use crate::spec::Spec;

/// The version of the saved-plan format this tend writes and reads:
/// [`crate::format::SAVED_PLAN`], which says why an older one is made again rather than
/// migrated.
pub const FORMAT: u32 = crate::format::SAVED_PLAN;

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
    /// The file is a saved plan, written by a tend that uses another format: an older one
    /// is made again (`tend plan -o`), a newer one needs a newer tend
    /// ([`SavedPlanError::newer`]). The two messages differ.
    #[error("{}", other_format(.path, *.format, .tend_version))]
    OtherFormat {
        /// The file.
        path: String,
        /// Its format.
        format: u64,
        /// The tend that wrote it.
        tend_version: String,
    },
    /// The file is a saved plan (a JSON object with a `format`) of this format that does
    /// not read as one: refused, never taken for a spec.
    #[error(
        "{path} is a tend plan file, but it is damaged: {detail}; run `tend plan -o {path}` again"
    )]
    Damaged {
        /// The file.
        path: String,
        /// What is wrong.
        detail: String,
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

impl SavedPlanError {
    /// The refusal of a plan saved by a newer tend, when this is one.
    pub fn newer(&self) -> Option<NewerFormat> {
        match self {
            SavedPlanError::OtherFormat {
                path,
                format,
                tend_version,
            } => crate::format::check(Kind::SavedPlan, *format, || {
                format!("{path} (plan of tend {tend_version})")
            })
            .err(),
            _ => None,
        }
    }
}

/// The message of [`SavedPlanError::OtherFormat`]: to upgrade tend for a newer plan, to
/// plan again for an older one.
fn other_format(path: &str, format: u64, tend_version: &str) -> String {
    let error = SavedPlanError::OtherFormat {
        path: path.to_owned(),
        format,
        tend_version: tend_version.to_owned(),
    };
    match error.newer() {
        Some(newer) => newer.to_string(),
        None => format!(
            "{path} was saved by tend {tend_version} in plan format {format}, and this tend \
             reads format {FORMAT} only: run `tend plan -o {path}` again"
        ),
    }
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
    /// [`SavedPlanError::OtherFormat`], whatever else it holds (the shared
    /// [`NewerFormat`] refusal when it is newer).
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
        // A JSON object with a `format` is a plan, whatever else it holds: it is read as
        // one or refused, never taken for a spec (a JSON object also evaluates as Starlark,
        // to an empty spec that would destroy everything). A format that is not a whole
        // number is one this tend cannot read: a newer one.
        let Some(format) = value.get("format") else {
            return serde_json::from_value(value).map_err(not_a_plan);
        };
        let format = format
            .as_u64()
            .or_else(|| format.as_str().and_then(|t| t.trim().parse().ok()))
            .unwrap_or(u64::MAX);
        if format != u64::from(FORMAT) {
            let tend_version = value
                .get("tend_version")
                .and_then(serde_json::Value::as_str)
                .unwrap_or("unknown");
            return Err(SavedPlanError::OtherFormat {
                path: shown,
                format,
                tend_version: tend_version.to_owned(),
            });
        }
        serde_json::from_value(value).map_err(|e| SavedPlanError::Damaged {
            path: shown,
            detail: e.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture() -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../testdata/formats/tend-0.1.0/plan/plan.json")
    }

    /// The fixture with its `format` set to `format`, in a file of its own.
    fn with_format(format: u64) -> (tempfile::TempDir, std::path::PathBuf) {
        let text = std::fs::read_to_string(fixture()).unwrap_or_else(|e| panic!("{e}"));
        let mut value: serde_json::Value =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}"));
        value["format"] = format.into();
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("plan.json");
        std::fs::write(&path, value.to_string()).unwrap_or_else(|e| panic!("{e}"));
        (dir, path)
    }

    #[test]
    fn a_plan_saved_by_tend_0_1_0_is_read() {
        let saved = SavedPlan::read(&fixture()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((saved.format, saved.tend_version.as_str()), (2, "0.1.0"));
        assert_eq!(saved.spec.project, "formats");
        assert_eq!(saved.plan.actions.len(), 1);
        assert_eq!(saved.plan.actions[0].group, "web");
    }

    /// The fixture with `edit` applied to its JSON.
    fn edited(
        edit: impl FnOnce(&mut serde_json::Value),
    ) -> (tempfile::TempDir, std::path::PathBuf) {
        let (dir, path) = with_format(u64::from(FORMAT));
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{e}"));
        let mut value: serde_json::Value =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}"));
        edit(&mut value);
        std::fs::write(&path, value.to_string()).unwrap_or_else(|e| panic!("{e}"));
        (dir, path)
    }

    #[test]
    fn a_plan_in_a_shape_this_tend_cannot_read_is_refused_never_taken_for_something_else() {
        for format in [
            serde_json::json!({"major": 3}),
            serde_json::json!("3"),
            serde_json::json!(2.5),
        ] {
            let (_dir, path) = edited(|v| {
                v["format"] = format.clone();
                if let Some(o) = v.as_object_mut() {
                    o.remove("tend_version");
                }
            });
            let refused = SavedPlan::read(&path).err();
            assert!(
                refused.as_ref().and_then(SavedPlanError::newer).is_some(),
                "{format}: {refused:?}"
            );
        }
        let (_dir, path) = edited(|v| {
            if let Some(o) = v.as_object_mut() {
                o.remove("plan");
            }
        });
        let refused = SavedPlan::read(&path).err();
        assert!(
            matches!(refused, Some(SavedPlanError::Damaged { .. })),
            "{refused:?}"
        );
    }

    #[test]
    fn an_older_plan_is_made_again_and_a_newer_one_needs_a_newer_tend() {
        let (_dir, older) = with_format(1);
        let refused = SavedPlan::read(&older).err();
        assert!(refused.as_ref().and_then(SavedPlanError::newer).is_none());
        let text = refused.map(|e| e.to_string()).unwrap_or_default();
        assert!(text.contains("run `tend plan -o "), "{text}");
        assert!(!text.contains("upgrade"), "{text}");

        let (_dir, newer) = with_format(u64::from(FORMAT) + 1);
        let refused = SavedPlan::read(&newer).err();
        let found = refused
            .as_ref()
            .and_then(SavedPlanError::newer)
            .map(|n| n.found);
        assert_eq!(found, Some(u64::from(FORMAT) + 1));
        let text = refused.map(|e| e.to_string()).unwrap_or_default();
        assert!(
            text.contains("was saved by a newer tend (plan format 3; this tend reads up to 2)"),
            "{text}"
        );
        assert!(text.contains("upgrade tend"), "{text}");
        assert!(!text.contains("tend plan -o"), "{text}");
    }
}
