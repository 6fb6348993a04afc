//! The record log of the process provider: a line when an instance starts, a line when it
//! is destroyed. It remembers what `/proc` cannot say once a process is gone (that it was
//! an instance, its cgroups, its secret files); it is never the only copy of anything that
//! runs.

use std::path::PathBuf;
use std::sync::Mutex;

use engine::provider::{InstanceTags, ProviderError};
use serde::{Deserialize, Serialize};

use super::backend;

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
}

/// One line of the record log.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum LogLine {
    /// An instance was started.
    Start(Box<Record>),
    /// An instance was destroyed.
    Gone {
        /// Its id.
        id: String,
    },
}

/// The record log at one path.
pub struct Records {
    file: PathBuf,
    /// Held while the log is appended to or rewritten.
    lock: Mutex<()>,
}

impl Records {
    /// The log kept in `file`.
    pub fn new(file: PathBuf) -> Records {
        Records {
            file,
            lock: Mutex::new(()),
        }
    }

    /// Folds the log: `start` lines add an instance, `gone` lines remove it.
    pub fn load(&self) -> Vec<Record> {
        let text = std::fs::read_to_string(&self.file).unwrap_or_default();
        let mut records: Vec<Record> = Vec::new();
        for line in text.lines() {
            match serde_json::from_str::<LogLine>(line) {
                Ok(LogLine::Start(record)) => records.push(*record),
                Ok(LogLine::Gone { id }) => records.retain(|r| r.id != id),
                // A torn last line (a crash mid-write) is skipped, never fatal.
                Err(_) => {}
            }
        }
        records
    }

    /// The record of instance `id`, if it has one.
    pub fn find(&self, id: &str) -> Option<Record> {
        self.load().into_iter().find(|r| r.id == id)
    }

    /// Notes that an instance started.
    pub fn started(&self, record: Record) -> Result<(), ProviderError> {
        self.append(&LogLine::Start(Box::new(record)))
    }

    /// Notes that instance `id` is gone, and compacts the log when gone lines pile up.
    pub fn gone(&self, id: &str) -> Result<(), ProviderError> {
        self.append(&LogLine::Gone { id: id.to_owned() })?;
        self.compact()
    }

    fn io(&self, e: std::io::Error) -> ProviderError {
        backend(format!("cannot write {}: {e}", self.file.display()))
    }

    /// Appends one line with a single write.
    fn append(&self, line: &LogLine) -> Result<(), ProviderError> {
        use std::io::Write;
        let _guard = self
            .lock
            .lock()
            .map_err(|_| backend("record lock poisoned".into()))?;
        if let Some(dir) = self.file.parent() {
            std::fs::create_dir_all(dir).map_err(|e| self.io(e))?;
        }
        let mut text =
            serde_json::to_string(line).map_err(|e| self.io(std::io::Error::other(e)))?;
        text.push('\n');
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.file)
            .map_err(|e| self.io(e))?;
        file.write_all(text.as_bytes()).map_err(|e| self.io(e))
    }

    /// Rewrites the log with only the records still wanted, when gone lines pile up.
    fn compact(&self) -> Result<(), ProviderError> {
        let _guard = self
            .lock
            .lock()
            .map_err(|_| backend("record lock poisoned".into()))?;
        let text = std::fs::read_to_string(&self.file).unwrap_or_default();
        let lines = text.lines().count();
        let records = self.load();
        if lines < 64 || lines < records.len() * 2 {
            return Ok(());
        }
        let mut out = String::new();
        for record in records {
            let line = serde_json::to_string(&LogLine::Start(Box::new(record)))
                .map_err(|e| self.io(std::io::Error::other(e)))?;
            out.push_str(&line);
            out.push('\n');
        }
        let temp = self.file.with_extension("jsonl.tmp");
        std::fs::write(&temp, out).map_err(|e| self.io(e))?;
        std::fs::rename(&temp, &self.file).map_err(|e| self.io(e))
    }
}
