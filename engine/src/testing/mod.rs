//! The `tend test` harness: finding test files, running them (`runner`) with the test
//! builtins (`builtins`), simulated observed states with injected failures, snapshot
//! files, diffs and outcomes. `lang` knows nothing of it: a spec's evaluation carries no
//! test settings.

pub(crate) mod builtins;
mod runner;

use std::path::{Path, PathBuf};

use serde_json::{json, Value as Json};

use crate::provider::{InstanceState, InstanceTags, Observed, ObservedInstance};
use crate::spec::{Spec, SpecHash};

pub use runner::{run_test_file, TestRun, TestSettings};

/// How one test ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TestOutcome {
    /// The test file, as shown.
    pub file: String,
    /// The test function (or `<load>` when the file itself failed).
    pub name: String,
    /// Why it failed, if it did.
    pub failure: Option<String>,
}

/// Every `*_test.star` under `paths` (files are taken as given), sorted; hidden folders
/// and `.tend` state folders are skipped.
pub fn discover(paths: &[PathBuf]) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack: Vec<PathBuf> = paths.to_vec();
    while let Some(path) = stack.pop() {
        if path.is_file() {
            found.push(path);
            continue;
        }
        for entry in std::fs::read_dir(&path).into_iter().flatten().flatten() {
            let p = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') {
                continue;
            }
            if p.is_dir() {
                stack.push(p);
            } else if name.ends_with("_test.star") {
                found.push(p);
            }
        }
    }
    found.sort();
    found.dedup();
    found
}

/// Splits `"web/2"` into group and slot.
fn split_target(target: &str) -> Result<(&str, &str), String> {
    target.split_once('/').ok_or_else(|| {
        format!("{target:?} is not a slot: write it as \"group/slot\", such as \"web/2\"")
    })
}

/// The observed state of `spec` fully converged (one running, current instance per slot),
/// then with `kill`ed slots dead, `unhealthy` slots unhealthy and `outdated` slots on an
/// old hash.
pub fn simulate(
    spec: &Spec,
    kill: &[String],
    unhealthy: &[String],
    outdated: &[String],
) -> Result<Observed, String> {
    for target in kill.iter().chain(unhealthy).chain(outdated) {
        let (group, slot) = split_target(target)?;
        let known = spec
            .group(group)
            .is_some_and(|g| g.slots().iter().any(|s| s.to_string() == slot));
        if !known {
            return Err(format!("{target:?} is not a slot of this spec"));
        }
    }
    let mut observed = Observed::new(&spec.project);
    let mut clock = 0;
    for group in &spec.groups {
        let mut instances = Vec::new();
        let hash = SpecHash::of(group).to_string();
        for slot in group.slots() {
            clock += 1;
            let target = format!("{}/{slot}", group.name);
            let state = if kill.contains(&target) {
                InstanceState::Dead
            } else if unhealthy.contains(&target) {
                InstanceState::Unhealthy
            } else {
                InstanceState::Running
            };
            let hash = if outdated.contains(&target) {
                "outdated".to_owned()
            } else {
                hash.clone()
            };
            instances.push(ObservedInstance {
                id: format!("sim-{}-{slot}", group.name),
                tags: InstanceTags {
                    project: spec.project.clone(),
                    group: group.name.clone(),
                    slot: slot.to_string(),
                    hash,
                    ports: Default::default(),
                    format: crate::format::INSTANCE,
                },
                labels: Default::default(),
                address: Some(format!("{}-{slot}.sim:0", group.name)),
                state,
                started_at: clock,
                ended: None,
                remains: 0,
                ports: Default::default(),
            });
        }
        // Each group's instances are where its provider keeps them.
        observed.add(&group.provider.kind, instances);
    }
    Ok(observed)
}

/// An observed state as a list of plain objects: `id`, `group`, `slot`, `hash`, `state`,
/// `address`, `provider`.
pub fn observed_to_json(observed: &Observed) -> Json {
    Json::Array(
        observed
            .iter()
            .map(|(provider, i)| {
                json!({
                    "id": i.id, "group": i.tags.group, "slot": i.tags.slot,
                    "hash": i.tags.hash, "state": i.state, "address": i.address,
                    "provider": provider,
                })
            })
            .collect(),
    )
}

/// Reads back what [`observed_to_json`] wrote (or a hand-written list of the same shape;
/// an instance without `provider` is a `sim` one).
pub fn observed_from_json(project: &str, value: &Json) -> Result<Observed, String> {
    let items = value
        .as_array()
        .ok_or("observed must be a list of instances")?;
    let mut observed = Observed::new(project);
    for (i, item) in items.iter().enumerate() {
        let text = |key: &str| item.get(key).and_then(Json::as_str).map(str::to_owned);
        let need = |key: &str| text(key).ok_or_else(|| format!("observed[{i}] has no {key:?}"));
        let state: InstanceState =
            serde_json::from_value(item.get("state").cloned().unwrap_or(json!("running")))
                .map_err(|e| format!("observed[{i}].state: {e}"))?;
        let provider = text("provider").unwrap_or_else(|| "sim".to_owned());
        let instance = ObservedInstance {
            id: need("id")?,
            tags: InstanceTags {
                project: project.to_owned(),
                group: need("group")?,
                slot: need("slot")?,
                hash: need("hash")?,
                ports: Default::default(),
                format: crate::format::INSTANCE,
            },
            labels: Default::default(),
            address: text("address"),
            state,
            started_at: i as u64 + 1,
            ended: None,
            remains: 0,
            ports: Default::default(),
        };
        observed.add(&provider, vec![instance]);
    }
    Ok(observed)
}

/// Snapshot files under `__snapshots__/` beside a test file.
#[derive(Clone, Debug)]
pub struct Snapshots {
    /// The `__snapshots__` folder.
    pub dir: PathBuf,
    /// `--update`: rewrite snapshots that differ.
    pub update: bool,
    /// `CI=true`: a missing or changed snapshot fails, nothing is written.
    pub ci: bool,
}

impl Snapshots {
    /// The snapshots of the test file at `test_file`.
    pub fn beside(test_file: &Path, update: bool, ci: bool) -> Snapshots {
        Snapshots {
            dir: test_file
                .parent()
                .unwrap_or(Path::new("."))
                .join("__snapshots__"),
            update,
            ci,
        }
    }

    /// Compares `text` with snapshot `stem__name.snap`, writing it when allowed.
    pub fn check(&self, stem: &str, name: &str, text: &str) -> Result<(), String> {
        let valid = !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if !valid {
            return Err(format!(
                "snapshot name {name:?}: use letters, digits, '_' and '-'"
            ));
        }
        let path = self.dir.join(format!("{stem}__{name}.snap"));
        let text = format!("{}\n", text.trim_end());
        match std::fs::read_to_string(&path) {
            Ok(old) if old == text => Ok(()),
            Ok(_) if self.update && !self.ci => self.write(&path, &text),
            Ok(old) => Err(format!(
                "snapshot {} changed (run `tend test --update` to accept):\n{}",
                path.display(),
                diff(&old, &text)
            )),
            Err(_) if self.ci => Err(format!(
                "snapshot {} is missing (CI=true writes none)",
                path.display()
            )),
            Err(_) => self.write(&path, &text),
        }
    }

    fn write(&self, path: &Path, text: &str) -> Result<(), String> {
        std::fs::create_dir_all(&self.dir)
            .map_err(|e| format!("cannot create {}: {e}", self.dir.display()))?;
        std::fs::write(path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))
    }
}

/// A line diff: `-` for expected lines that are not there, `+` for actual lines that are
/// new, two spaces for lines both share (Myers' diff, through `similar`; a diff that takes
/// over a second gives up on finding the shortest one, never on showing the change).
pub fn diff(expected: &str, actual: &str) -> String {
    let old: Vec<&str> = expected.lines().collect();
    let new: Vec<&str> = actual.lines().collect();
    similar::TextDiff::configure()
        .timeout(std::time::Duration::from_secs(1))
        .diff_slices(&old, &new)
        .iter_all_changes()
        .map(|change| {
            let mark = match change.tag() {
                similar::ChangeTag::Delete => "- ",
                similar::ChangeTag::Insert => "+ ",
                similar::ChangeTag::Equal => "  ",
            };
            format!("{mark}{}", change.value())
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diff_marks_removed_and_added_lines() {
        assert_eq!(diff("a\nb\nc", "a\nx\nc"), "  a\n- b\n+ x\n  c");
    }

    #[test]
    fn snapshots_are_written_once_then_compared() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let file = dir.path().join("web_test.star");
        let local = Snapshots::beside(&file, false, false);
        assert_eq!(local.check("web_test", "plan", "one"), Ok(()));
        assert_eq!(local.check("web_test", "plan", "one"), Ok(()));
        let changed = local
            .check("web_test", "plan", "two")
            .err()
            .unwrap_or_default();
        assert!(changed.contains("- one\n+ two"), "{changed}");
        let ci = Snapshots::beside(&file, true, true);
        assert!(ci
            .check("web_test", "other", "x")
            .is_err_and(|e| e.contains("is missing")));
        let update = Snapshots::beside(&file, true, false);
        assert_eq!(update.check("web_test", "plan", "two"), Ok(()));
        assert_eq!(local.check("web_test", "plan", "two"), Ok(()));
    }
}
