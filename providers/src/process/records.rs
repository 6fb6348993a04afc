//! The record log of the process provider: a line when an instance starts, a line when it
//! is destroyed. It remembers what `/proc` cannot say once a process is gone (that it was
//! an instance, its cgroups, its secret files); it is never the only copy of anything that
//! runs.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use engine::provider::{InstanceTags, ProviderError};
use serde::{Deserialize, Serialize};

use super::backend;
use crate::journal::{Fold, Journal, JournalError};

/// What the record file keeps of an instance.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Record {
    /// Its id, `<pid>-<start ticks>`.
    pub id: String,
    /// Its tags.
    pub tags: InstanceTags,
    /// Where it is reached.
    pub address: Option<String>,
    /// When it started, in milliseconds since the Unix epoch.
    pub started_at: u64,
    /// Its log file.
    pub log: PathBuf,
    /// The name of its folder of secret files in memory, when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secrets: Option<String>,
    /// Its cgroup folders, when it has them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cgroups: Vec<PathBuf>,
    /// How long a stop may take before its processes are killed, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_timeout_ms: Option<u64>,
    /// Its labels other than its tags (`tend.epoch`, `tend.op`, `tend.key`, the flavor's).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

/// One line of the record log.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum LogLine {
    /// An instance was started.
    Start(Box<Record>),
    /// An instance was destroyed.
    Gone {
        /// Its id.
        id: String,
    },
}

/// The records the log holds now, by instance id: shared, so a look takes them without a
/// copy (a change while a look holds them copies them once).
#[derive(Default)]
pub(crate) struct Started(Arc<BTreeMap<String, Record>>);

impl Fold for Started {
    type Line = LogLine;

    fn apply(&mut self, line: LogLine) {
        match line {
            LogLine::Start(record) => {
                Arc::make_mut(&mut self.0).insert(record.id.clone(), *record);
            }
            LogLine::Gone { id } => {
                if self.0.contains_key(&id) {
                    Arc::make_mut(&mut self.0).remove(&id);
                }
            }
        }
    }

    fn lines(&self) -> Vec<LogLine> {
        self.0
            .values()
            .map(|r| LogLine::Start(Box::new(r.clone())))
            .collect()
    }

    fn len(&self) -> usize {
        self.0.len()
    }
}

/// The record log at one path: a line per start and per destroy, read once and then only
/// what was appended since.
pub struct Records {
    journal: Mutex<Journal<Started>>,
}

impl Records {
    /// The log kept in `file`.
    pub fn new(file: PathBuf) -> Records {
        Records {
            journal: Mutex::new(Journal::new(file)),
        }
    }

    fn journal(&self) -> Result<std::sync::MutexGuard<'_, Journal<Started>>, ProviderError> {
        self.journal
            .lock()
            .map_err(|_| backend("record lock poisoned".into()))
    }

    /// Every record, by instance id.
    pub fn load(&self) -> Result<Arc<BTreeMap<String, Record>>, ProviderError> {
        let mut journal = self.journal()?;
        Ok(journal.state().map_err(unreadable)?.0.clone())
    }

    /// The record of instance `id`, if it has one.
    pub fn find(&self, id: &str) -> Option<Record> {
        let mut journal = self.journal().ok()?;
        journal.state().ok()?.0.get(id).cloned()
    }

    /// Notes that an instance started.
    pub fn started(&self, record: Record) -> Result<(), ProviderError> {
        self.journal()?
            .append(LogLine::Start(Box::new(record)))
            .map_err(unreadable)
    }

    /// Notes that instance `id` is gone.
    pub fn gone(&self, id: &str) -> Result<(), ProviderError> {
        self.journal()?
            .append(LogLine::Gone { id: id.to_owned() })
            .map_err(unreadable)
    }
}

fn unreadable(e: JournalError) -> ProviderError {
    backend(format!("the record log: {e}"))
}
