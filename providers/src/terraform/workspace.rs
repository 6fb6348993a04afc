//! One group's working folder, `.tend/terraform/<group>/`, and the applies that change it.
//!
//! Changes (add an instance's key, remove one) queue up; one apply at a time takes every
//! change queued so far, so instances asked for together are made by one `terraform apply`.
//! Applies of one group never overlap (a lock in tend, a file lock between tends, and
//! Terraform's own state lock); different groups apply in parallel. An apply runs in a task
//! of its own: a caller that stops waiting does not cut it short.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde_json::{Map, Value};
use tokio::sync::oneshot;

use super::config;
use super::scripts;
use super::state::{self, Resource};
use super::tool::{self, Tool};

/// Where progress lines go: `(group, line)`.
pub type Progress = Arc<dyn Fn(&str, &str) + Send + Sync>;

/// One change to a group's instances.
#[derive(Clone, Debug)]
pub enum Change {
    /// Make instance `key` from `value` (tags and rendered flavor); `replace` when Terraform
    /// already holds a dead instance under that key.
    Add {
        /// The `for_each` key.
        key: String,
        /// Its value.
        value: Value,
        /// Replace what the state holds under `key`.
        replace: bool,
    },
    /// Remove instance `id`, held under `key`: its destroy provisioner stops its program.
    /// Nothing is removed when the key holds another instance by then.
    Remove {
        /// The `for_each` key.
        key: String,
        /// The instance's id.
        id: String,
    },
}

/// The outcome of one change: the instance's id when it was made or removed; `None` for a
/// removal that found its key holding another instance (the one named was gone already).
pub type Answer = Result<Option<String>, String>;

type Queued = (Change, oneshot::Sender<Answer>);

/// The batch with one add per key: a second add of a key (two provisions under one
/// idempotency key, or of one tainted key) waits for the first's answer, and its own
/// folders, never used, are removed.
fn one_per_key(batch: Vec<Queued>) -> (Vec<Change>, Vec<Vec<oneshot::Sender<Answer>>>) {
    let mut changes: Vec<Change> = Vec::new();
    let mut tells: Vec<Vec<oneshot::Sender<Answer>>> = Vec::new();
    for (change, tell) in batch {
        if let Change::Add { key, value, .. } = &change {
            let first = changes
                .iter()
                .position(|c| matches!(c, Change::Add { key: k, .. } if k == key));
            if let Some(first) = first {
                if let Some((run, memory)) = folders_of(value) {
                    scripts::clean_up(run, memory, None);
                }
                tells[first].push(tell);
                continue;
            }
        }
        changes.push(change);
        tells.push(vec![tell]);
    }
    (changes, tells)
}

/// An attempt's run folder and memory folder, from its value.
pub fn folders_of(value: &Value) -> Option<(&Path, Option<&Path>)> {
    let run = Path::new(value.get("run")?.as_str()?);
    Some((
        run,
        value.get("memory").and_then(Value::as_str).map(Path::new),
    ))
}

/// What an apply reported, by resource address.
struct Applied {
    /// Its errors (`""` for those that name no resource).
    errors: BTreeMap<String, Vec<String>>,
    /// What it finished: the id of what it made, `None` for what it removed.
    done: BTreeMap<String, Option<String>>,
}

/// A group's working folder.
pub struct Workspace {
    group: String,
    dir: PathBuf,
    tool: Tool,
    rc: PathBuf,
    progress: Progress,
    queue: Mutex<Vec<Queued>>,
    /// Held by the apply under way; says whether `terraform init` ran.
    turn: tokio::sync::Mutex<bool>,
}

impl Workspace {
    /// The folder `dir` of `group`, driven by `tool` with CLI configuration `rc`.
    pub fn new(group: &str, dir: PathBuf, tool: Tool, rc: PathBuf, progress: Progress) -> Self {
        Workspace {
            group: group.to_owned(),
            dir,
            tool,
            rc,
            progress,
            queue: Mutex::new(Vec::new()),
            turn: tokio::sync::Mutex::new(false),
        }
    }

    /// Queues `change` and waits for the apply that makes it.
    pub async fn submit(self: &Arc<Self>, change: Change) -> Answer {
        let (tell, told) = oneshot::channel();
        self.queue
            .lock()
            .map_err(|_| "the apply queue is poisoned".to_owned())?
            .push((change, tell));
        let workspace = self.clone();
        tokio::spawn(async move { workspace.take_turn().await });
        told.await
            .unwrap_or_else(|_| Err("the apply ended without an answer".to_owned()))
    }

    async fn take_turn(&self) {
        let mut initialised = self.turn.lock().await;
        // `terraform init` first, once: what is asked for meanwhile joins this apply.
        if !*initialised {
            if let Err(e) = self.init().await {
                self.answer_all(Err(e));
                return;
            }
            *initialised = true;
        }
        let batch: Vec<Queued> = match self.queue.lock() {
            Ok(mut queue) => std::mem::take(&mut *queue),
            Err(_) => return,
        };
        if batch.is_empty() {
            return;
        }
        let (changes, tells) = one_per_key(batch);
        let answers = match self.apply(&changes).await {
            Ok(answers) => answers,
            Err(e) => vec![Err(e); changes.len()],
        };
        for (waiting, answer) in tells.into_iter().zip(answers) {
            for tell in waiting {
                let _ = tell.send(answer.clone());
            }
        }
    }

    /// Gives every queued change the same answer.
    fn answer_all(&self, answer: Answer) {
        let batch = self
            .queue
            .lock()
            .map(|mut q| std::mem::take(&mut *q))
            .unwrap_or_default();
        for (_, tell) in batch {
            let _ = tell.send(answer.clone());
        }
    }

    /// Writes `changes` into `main.tf.json`, applies them (and nothing else of the group),
    /// and reads the outcome of each. What was asked for and never made is taken back out
    /// of the file, and its folders removed, before the lock is let go: no later apply
    /// makes it unasked.
    async fn apply(&self, changes: &[Change]) -> Result<Vec<Answer>, String> {
        std::fs::create_dir_all(&self.dir)
            .map_err(|e| format!("cannot create {}: {e}", self.dir.display()))?;
        // Between tends on one machine: one apply of the group at a time.
        let _lock = crate::files::exclusive(self.dir.join(".tend.lock")).await?;
        let file = self.dir.join(config::FILE);
        let mut instances: Map<String, Value> = config::instances(&file, &self.group)?;
        let needs_state = changes
            .iter()
            .any(|c| matches!(c, Change::Remove { .. } | Change::Add { replace: true, .. }));
        let held: Vec<Resource> = if needs_state {
            self.show().await?
        } else {
            Vec::new()
        };
        let address = |key: &str| config::address(&self.group, key);
        // Only the resources of these changes are applied: another key's tainted resource
        // waits for its own heal.
        let mut targets = Vec::new();
        // A key may hold a newer instance than the one a removal names (a tainted one
        // replaced in place): then nothing is removed.
        let newer = |key: &String, id: &String| held.iter().any(|r| &r.key == key && &r.id != id);
        for change in changes {
            if let Change::Remove { key, id } = change {
                if newer(key, id) {
                    continue;
                }
                instances.remove(key);
                if held.iter().any(|r| &r.key == key) {
                    targets.push(format!("-target={}", address(key)));
                }
            }
        }
        // Adds after removals: an add of a key wins over a removal of what it held.
        for change in changes {
            if let Change::Add {
                key,
                value,
                replace,
            } = change
            {
                instances.insert(key.clone(), config::literal(value));
                targets.push(format!("-target={}", address(key)));
                // A dead instance still held under the key is made again; a tainted one
                // Terraform replaces by itself, and a key no longer held needs nothing.
                if *replace && held.iter().any(|h| &h.key == key && !h.tainted) {
                    targets.push(format!("-replace={}", address(key)));
                }
            }
        }
        config::write(&self.dir, &self.group, &instances)?;
        let applied = if targets.is_empty() {
            Applied {
                errors: BTreeMap::new(),
                done: BTreeMap::new(),
            }
        } else {
            match self.run_apply(&targets).await {
                Ok(applied) => applied,
                Err(e) => {
                    self.take_back(changes, &mut instances, None);
                    return Err(e);
                }
            }
        };
        // Terraform's events say what it made and removed; its state is read only when
        // they leave an outcome open (an error, or a key it had already).
        let open = !applied.errors.is_empty()
            || changes.iter().any(|c| {
                matches!(c, Change::Add { key, .. }
                    if !matches!(applied.done.get(&address(key)), Some(Some(_))))
            });
        let now = if open { Some(self.show().await?) } else { None };
        let answers: Vec<Answer> = changes
            .iter()
            .map(|change| match change {
                Change::Remove { key, id } if newer(key, id) => Ok(None),
                _ => answer(&self.group, change, &applied, now.as_deref()),
            })
            .collect();
        if let Some(now) = &now {
            let unmade: Vec<Change> = changes
                .iter()
                .zip(&answers)
                .filter(|(c, a)| {
                    a.is_err()
                        && matches!(c, Change::Add { key, .. } if !now.iter().any(|r| &r.key == key))
                })
                .map(|(c, _)| c.clone())
                .collect();
            self.take_back(&unmade, &mut instances, Some(now));
        }
        Ok(answers)
    }

    /// Takes the adds among `changes` that Terraform does not hold (per `now`; none of
    /// them when `None`) back out of `main.tf.json`, and removes their folders.
    fn take_back(
        &self,
        changes: &[Change],
        instances: &mut Map<String, Value>,
        now: Option<&Vec<Resource>>,
    ) {
        let mut taken = false;
        for change in changes {
            let Change::Add { key, value, .. } = change else {
                continue;
            };
            if now.is_some_and(|now| now.iter().any(|r| &r.key == key)) {
                continue;
            }
            instances.remove(key);
            taken = true;
            if let Some((run, memory)) = folders_of(value) {
                scripts::clean_up(run, memory, scripts::recorded(run));
            }
        }
        if taken {
            let _ = config::write(&self.dir, &self.group, instances);
        }
    }

    async fn init(&self) -> Result<(), String> {
        let out = tool::command(&self.tool.path, &self.dir, &self.rc)
            .kill_on_drop(true)
            .args(["init", "-input=false", "-no-color"])
            .output()
            .await
            .map_err(|e| format!("cannot run {}: {e}", self.tool.path.display()))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "`terraform init` in {} failed: {} {}",
                self.dir.display(),
                String::from_utf8_lossy(&out.stderr).trim(),
                String::from_utf8_lossy(&out.stdout).trim()
            ))
        }
    }

    /// Runs `terraform apply -json`, showing its events as progress; returns what it
    /// reported done and failed.
    ///
    /// Its output goes to files in the folder, read as they grow: if tend ends meanwhile,
    /// Terraform still finishes and records what it made (a pipe would close under it).
    async fn run_apply(&self, targets: &[String]) -> Result<Applied, String> {
        // Files of this apply's own: one that outlived an earlier tend may still write to its.
        let word = crate::random_word();
        let events_file = self.dir.join(format!(".apply-{word}.json"));
        let errors_file = self.dir.join(format!(".apply-{word}.stderr"));
        let open = |path: &Path| {
            std::fs::File::create(path).map_err(|e| format!("cannot write {}: {e}", path.display()))
        };
        let (out, err) = (open(&events_file)?, open(&errors_file)?);
        let mut events = std::fs::File::open(&events_file)
            .map_err(|e| format!("cannot read {}: {e}", events_file.display()))?;
        let mut child = tool::command(&self.tool.path, &self.dir, &self.rc)
            .args([
                "apply",
                "-auto-approve",
                "-input=false",
                "-json",
                "-lock-timeout=300s",
            ])
            .args(targets)
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", self.tool.path.display()))?;
        let mut errors: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let mut done: BTreeMap<String, Option<String>> = BTreeMap::new();
        let mut pending = Vec::new();
        let status = loop {
            // A child that cannot be asked is waited for: never left to run unread.
            let finished = match child.try_wait() {
                Ok(finished) => finished,
                Err(_) => Some(
                    child
                        .wait()
                        .await
                        .map_err(|e| format!("terraform apply: {e}"))?,
                ),
            };
            // Every whole line written so far (after the exit: every line).
            let _ = std::io::Read::read_to_end(&mut events, &mut pending);
            while let Some(end) = pending.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = pending.drain(..=end).collect();
                let Some(event) = read_event(&line) else {
                    continue;
                };
                if let Some(shown) = event.progress {
                    (self.progress)(&self.group, &shown);
                }
                if let Some((address, message)) = event.error {
                    errors.entry(address).or_default().push(message);
                }
                if let Some((address, made)) = event.completed {
                    done.insert(address, made);
                }
            }
            if let Some(status) = finished {
                break status;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        };
        if !status.success() && errors.is_empty() {
            let stderr = std::fs::read_to_string(&errors_file).unwrap_or_default();
            errors.entry(String::new()).or_default().push(format!(
                "terraform apply exited with {status}: {}",
                stderr.trim()
            ));
        }
        let _ = std::fs::remove_file(&events_file);
        let _ = std::fs::remove_file(&errors_file);
        Ok(Applied { errors, done })
    }

    /// The group's instances as Terraform's state holds them now.
    pub async fn show(&self) -> Result<Vec<Resource>, String> {
        show(&self.tool, &self.dir, &self.rc, &self.group).await
    }
}

/// The state file's size and time, when there is one.
fn stamp(dir: &Path) -> Option<(u64, std::time::SystemTime)> {
    let meta = std::fs::metadata(dir.join("terraform.tfstate")).ok()?;
    Some((meta.len(), meta.modified().ok()?))
}

/// True while the state file is being written: Terraform truncates it and writes it in
/// place, so it can be empty or half there. (No file at all is a state with nothing.)
fn being_written(dir: &Path) -> bool {
    match std::fs::read(dir.join("terraform.tfstate")) {
        Ok(bytes) => serde_json::from_slice::<serde::de::IgnoredAny>(&bytes).is_err(),
        Err(_) => false,
    }
}

/// The instances of `group` in the folder `dir`, by `terraform show -json`. A state file
/// being written, or written meanwhile, is read again: an empty answer from half a file
/// would be a partial view.
pub async fn show(
    tool: &Tool,
    dir: &Path,
    rc: &Path,
    group: &str,
) -> Result<Vec<Resource>, String> {
    let mut last = String::new();
    for _ in 0..40 {
        if being_written(dir) {
            last = format!("{}/terraform.tfstate is being written", dir.display());
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            continue;
        }
        let before = stamp(dir);
        let out = tool::command(&tool.path, dir, rc)
            .kill_on_drop(true)
            .args(["show", "-json", "-no-color"])
            .output()
            .await
            .map_err(|e| format!("cannot run {}: {e}", tool.path.display()))?;
        if stamp(dir) != before || being_written(dir) {
            last = format!("{}/terraform.tfstate changed as it was read", dir.display());
            continue;
        }
        if out.status.success() {
            match state::parse(&out.stdout, group) {
                Ok(found) => return Ok(found),
                Err(e) => last = e,
            }
        } else {
            last = format!(
                "`terraform show -json` in {} failed: {}",
                dir.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        tokio::time::sleep(std::time::Duration::from_millis(150)).await;
    }
    Err(last)
}

/// What one change came to: from what the apply reported, and from the state after it
/// (`now`) when that was read.
fn answer(group: &str, change: &Change, applied: &Applied, now: Option<&[Resource]>) -> Answer {
    let key = match change {
        Change::Add { key, .. } | Change::Remove { key, .. } => key,
    };
    let address = config::address(group, key);
    let why = || {
        applied
            .errors
            .get(&address)
            .or_else(|| applied.errors.get(""))
            .map(|m| m.join("; "))
            .unwrap_or_else(|| "terraform apply left it undone".to_owned())
    };
    let reported = applied.done.get(&address);
    let held = now.and_then(|now| now.iter().find(|r| &r.key == key));
    match change {
        Change::Add { value, .. } => match (reported, held) {
            (Some(Some(id)), _) => Ok(Some(id.clone())),
            // What the key holds is this attempt's (not a dead one it was to replace).
            (_, Some(r))
                if !r.tainted
                    && !applied.errors.contains_key(&address)
                    && r.input.get("run") == value.get("run") =>
            {
                Ok(Some(r.id.clone()))
            }
            (_, Some(_)) => Err(format!("{address} is tainted: {}", why())),
            (_, None) => Err(format!("{address} was not made: {}", why())),
        },
        Change::Remove { id, .. } => match (now, held) {
            // A clean apply leaves the state as the file says: the key is gone.
            (None, _) => Ok(Some(id.clone())),
            (Some(_), None) => Ok(Some(id.clone())),
            // The key holds another instance now: the one named is gone.
            (Some(_), Some(r)) if &r.id != id => Ok(None),
            (Some(_), Some(_)) => Err(format!("{address} was not destroyed: {}", why())),
        },
    }
}

/// What one line of `terraform apply -json` says, as far as tend reads it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ApplyEvent {
    /// A line worth showing as progress.
    pub progress: Option<String>,
    /// An error: the address it names (or `""`) and its text.
    pub error: Option<(String, String)>,
    /// A finished change: the address, and the id made (`None` for a removal).
    pub completed: Option<(String, Option<String>)>,
}

/// Reads one line of `terraform apply -json`; `None` for a line that is not JSON.
pub fn read_event(line: &[u8]) -> Option<ApplyEvent> {
    let event = serde_json::from_slice::<Value>(line).ok()?;
    Some(ApplyEvent {
        progress: progress_line(&event),
        error: error_of(&event),
        completed: completed(&event),
    })
}

/// A finished change: the resource's address, and the id it made (`None` when it
/// removed it).
fn completed(event: &Value) -> Option<(String, Option<String>)> {
    if event.get("type")?.as_str()? != "apply_complete" {
        return None;
    }
    let hook = event.get("hook")?;
    let address = hook.pointer("/resource/addr")?.as_str()?.to_owned();
    match hook.get("action")?.as_str()? {
        "delete" => Some((address, None)),
        _ => Some((address, Some(hook.get("id_value")?.as_str()?.to_owned()))),
    }
}

/// The apply events worth showing, as Terraform words them.
fn progress_line(event: &Value) -> Option<String> {
    let kind = event.get("type")?.as_str()?;
    matches!(
        kind,
        "apply_start" | "apply_complete" | "apply_errored" | "provision_errored" | "change_summary"
    )
    .then(|| event.get("@message")?.as_str().map(str::to_owned))
    .flatten()
}

/// An error diagnostic: the address it names (or `""`) and its text.
fn error_of(event: &Value) -> Option<(String, String)> {
    if event.get("@level")?.as_str()? != "error" {
        return None;
    }
    let diagnostic = event.get("diagnostic")?;
    let summary = diagnostic
        .get("summary")
        .and_then(Value::as_str)
        .unwrap_or("error");
    let detail = diagnostic
        .get("detail")
        .and_then(Value::as_str)
        .unwrap_or("");
    let address = diagnostic
        .get("address")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    let text = if detail.is_empty() {
        summary.to_owned()
    } else {
        format!("{summary}: {}", detail.trim())
    };
    Some((address, text))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn errors_are_told_by_the_address_they_name() {
        let event = json!({"@level":"error","diagnostic":{"summary":"local-exec provisioner error",
            "detail":"Error running command: exit status 127. Output: tend: cannot start './app'\n",
            "address":"terraform_data.web[\"0-aa\"]"}});
        let (address, text) = error_of(&event).unwrap_or_else(|| panic!("not an error"));
        assert_eq!(address, "terraform_data.web[\"0-aa\"]");
        assert!(
            text.starts_with("local-exec provisioner error: Error running command"),
            "{text}"
        );
        assert_eq!(error_of(&json!({"@level":"info"})), None);
    }

    #[test]
    fn answers_follow_the_events_and_else_the_state() {
        let held = [
            Resource {
                key: "0-aa".into(),
                id: "u1".into(),
                tainted: false,
                input: Value::Null,
            },
            Resource {
                key: "1-bb".into(),
                id: "u2".into(),
                tainted: true,
                input: Value::Null,
            },
        ];
        let failed = Applied {
            errors: [(
                "terraform_data.web[\"1-bb\"]".to_owned(),
                vec!["boom".to_owned()],
            )]
            .into(),
            done: [(
                "terraform_data.web[\"2-cc\"]".to_owned(),
                Some("u3".to_owned()),
            )]
            .into(),
        };
        let add = |key: &str| Change::Add {
            key: key.into(),
            value: Value::Null,
            replace: false,
        };
        let now = Some(&held[..]);
        assert_eq!(
            answer("web", &add("2-cc"), &failed, now),
            Ok(Some("u3".into()))
        );
        assert_eq!(
            answer("web", &add("0-aa"), &failed, now),
            Ok(Some("u1".into()))
        );
        assert_eq!(
            answer("web", &add("1-bb"), &failed, now),
            Err("terraform_data.web[\"1-bb\"] is tainted: boom".into())
        );
        let remove = |key: &str, id: &str| Change::Remove {
            key: key.into(),
            id: id.into(),
        };
        assert_eq!(
            answer("web", &remove("3-dd", "u9"), &failed, now),
            Ok(Some("u9".into()))
        );
        assert!(answer("web", &remove("0-aa", "u1"), &failed, now).is_err());
        // A key that holds a newer instance than the one removed: that one is gone.
        assert_eq!(answer("web", &remove("0-aa", "u0"), &failed, now), Ok(None));
        // After a clean apply, a removed key is gone without reading the state.
        let clean = Applied {
            errors: BTreeMap::new(),
            done: BTreeMap::new(),
        };
        assert_eq!(
            answer("web", &remove("0-aa", "u1"), &clean, None),
            Ok(Some("u1".into()))
        );
    }

    #[test]
    fn a_state_file_half_written_is_told_from_none_and_from_a_whole_one() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        assert!(
            !being_written(dir.path()),
            "no file is a state with nothing"
        );
        let file = dir.path().join("terraform.tfstate");
        for (text, writing) in [
            ("", true),
            ("{\"version\": 4, \"reso", true),
            ("{\"version\": 4}", false),
        ] {
            std::fs::write(&file, text).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(being_written(dir.path()), writing, "{text:?}");
        }
    }

    #[test]
    fn a_key_added_twice_in_one_batch_is_made_once_and_the_second_attempt_removed() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let second = dir.path().join("0-aa.second");
        std::fs::create_dir_all(&second).unwrap_or_else(|e| panic!("{e}"));
        let add = |run: &Path| Change::Add {
            key: "0-aa".into(),
            value: json!({"run": run.to_string_lossy()}),
            replace: false,
        };
        let (a, _) = oneshot::channel();
        let (b, _) = oneshot::channel();
        let (c, _) = oneshot::channel();
        let removal = Change::Remove {
            key: "1-bb".into(),
            id: "u2".into(),
        };
        let (changes, tells) = one_per_key(vec![
            (add(&dir.path().join("0-aa.first")), a),
            (removal, b),
            (add(&second), c),
        ]);
        assert_eq!(changes.len(), 2);
        assert_eq!(tells.iter().map(Vec::len).collect::<Vec<_>>(), [2, 1]);
        assert!(!second.exists(), "the second attempt's folder is removed");
    }

    #[test]
    fn completed_changes_carry_their_id() {
        let made = json!({"type": "apply_complete", "hook": {"resource": {"addr": "terraform_data.web[\"0-aa\"]"},
            "action": "create", "id_key": "id", "id_value": "u1"}});
        assert_eq!(
            completed(&made),
            Some(("terraform_data.web[\"0-aa\"]".into(), Some("u1".into())))
        );
        let removed = json!({"type": "apply_complete", "hook": {"resource": {"addr": "terraform_data.web[\"0-aa\"]"},
            "action": "delete"}});
        assert_eq!(
            completed(&removed),
            Some(("terraform_data.web[\"0-aa\"]".into(), None))
        );
        assert_eq!(completed(&json!({"type": "apply_start"})), None);
    }
}
