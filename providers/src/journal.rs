//! An append-only file of JSON lines, folded into a state kept in memory.
//!
//! A change costs one line appended with a single `write` (no rewrite of the whole file, no
//! fsync: the providers that use it keep tags on the real resources, or simulate them), so
//! keeping `n` things costs `O(n)` however many changes they go through. The file is
//! rewritten with only what it holds now (a temporary file, fsync, rename) when dead lines
//! outnumber live ones. Before every read or write the file is looked at again: lines
//! another process appended are folded in, and a file another process rewrote is read
//! anew. A line that does not parse (a crash mid-write leaves a torn last line) is skipped.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::Serialize;

/// What a journal folds its lines into.
pub(crate) trait Fold: Default {
    /// One line of the file.
    type Line: Serialize + DeserializeOwned;
    /// Takes in one line.
    fn apply(&mut self, line: Self::Line);
    /// The fewest lines that give this state again, for a rewrite.
    fn lines(&self) -> Vec<Self::Line>;
    /// How many live things it holds (a rewrite happens when the file has far more lines).
    fn len(&self) -> usize;
}

/// A journal at one path.
pub(crate) struct Journal<F: Fold> {
    path: PathBuf,
    state: F,
    /// Bytes of the file folded in so far (up to the end of its last whole line).
    read_to: u64,
    /// The file's inode when it was read, to notice a rewrite by another process.
    inode: Option<u64>,
    /// Lines in the file, to know when to rewrite it.
    lines: usize,
    /// The file opened for appending, with its inode.
    appender: Option<(File, u64)>,
}

/// Why a journal could not be read or written.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {source}")]
pub(crate) struct JournalError {
    path: String,
    source: std::io::Error,
}

impl<F: Fold> Journal<F> {
    /// The journal kept in `path` (read on first use).
    pub fn new(path: PathBuf) -> Journal<F> {
        Journal {
            path,
            state: F::default(),
            read_to: 0,
            inode: None,
            lines: 0,
            appender: None,
        }
    }

    fn error(&self, source: std::io::Error) -> JournalError {
        JournalError {
            path: self.path.display().to_string(),
            source,
        }
    }

    /// The state, with what other processes wrote since the last look folded in.
    pub fn state(&mut self) -> Result<&F, JournalError> {
        self.refresh()?;
        Ok(&self.state)
    }

    /// Folds in what the file gained since the last look (all of it when it was rewritten).
    fn refresh(&mut self) -> Result<(), JournalError> {
        // A stat tells whether anything changed; the file is opened only when it did.
        match std::fs::metadata(&self.path) {
            Ok(meta) if self.inode == Some(meta.ino()) && meta.len() == self.read_to => {
                return Ok(())
            }
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if self.inode.is_some() {
                    *self = Journal::new(std::mem::take(&mut self.path));
                }
                return Ok(());
            }
            Err(e) => return Err(self.error(e)),
        }
        let mut file = match File::open(&self.path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(self.error(e)),
        };
        let meta = file.metadata().map_err(|e| self.error(e))?;
        if self.inode != Some(meta.ino()) || meta.len() < self.read_to {
            self.state = F::default();
            self.read_to = 0;
            self.lines = 0;
            self.inode = Some(meta.ino());
            self.appender = None;
        }
        if meta.len() == self.read_to {
            return Ok(());
        }
        file.seek(SeekFrom::Start(self.read_to))
            .map_err(|e| self.error(e))?;
        let mut tail = Vec::with_capacity((meta.len() - self.read_to) as usize);
        file.read_to_end(&mut tail).map_err(|e| self.error(e))?;
        // Only whole lines: one being written (or torn by a crash) is read once it ends.
        let whole = tail.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
        for line in tail[..whole].split(|b| *b == b'\n') {
            if line.is_empty() {
                continue;
            }
            self.lines += 1;
            if let Ok(line) = serde_json::from_slice::<F::Line>(line) {
                self.state.apply(line);
            }
        }
        self.read_to += whole as u64;
        Ok(())
    }

    /// The state to change in place; the caller then [records](Journal::record) lines that
    /// say what it changed.
    pub fn state_mut(&mut self) -> Result<&mut F, JournalError> {
        self.refresh()?;
        Ok(&mut self.state)
    }

    /// Appends `line` and folds it in; rewrites the file when dead lines pile up.
    pub fn append(&mut self, line: F::Line) -> Result<(), JournalError> {
        self.refresh()?;
        let caught_up = self.write(std::slice::from_ref(&line))?;
        if caught_up {
            self.state.apply(line);
        }
        self.settle(caught_up)
    }

    /// Appends `lines`, which say what a change through [`Journal::state_mut`] did (they
    /// are folded in already); rewrites the file when dead lines pile up.
    pub fn record(&mut self, lines: &[F::Line]) -> Result<(), JournalError> {
        let caught_up = self.write(lines)?;
        self.settle(caught_up)
    }

    /// Appends `lines` with one `write`; true when nothing else was written since the last
    /// look, so the state already holds every line before them.
    fn write(&mut self, lines: &[F::Line]) -> Result<bool, JournalError> {
        let mut text = Vec::new();
        for line in lines {
            serde_json::to_writer(&mut text, line).map_err(|e| self.error(e.into()))?;
            text.push(b'\n');
        }
        let read_to = self.read_to;
        let meta = (|| {
            let file = appender(&self.path, &mut self.appender)?;
            let meta = file.metadata()?;
            if meta.len() != read_to && !ends_a_line(file, meta.len()) {
                // A torn line left by a crash: end it, so these lines stand on their own.
                text.insert(0, b'\n');
            }
            file.write_all(&text)?;
            Ok(meta)
        })()
        .map_err(|e| self.error(e))?;
        let caught_up = self.inode == Some(meta.ino()) && meta.len() == self.read_to;
        if caught_up {
            self.read_to += text.len() as u64;
            self.lines += lines.len();
        }
        Ok(caught_up)
    }

    /// After a write: reads what another process wrote meanwhile (and the lines just
    /// written, in file order), then rewrites the file when dead lines pile up.
    fn settle(&mut self, caught_up: bool) -> Result<(), JournalError> {
        if !caught_up {
            self.refresh()?;
        }
        if self.lines > 64 && self.lines > 2 * self.state.len() {
            self.rewrite()?;
        }
        Ok(())
    }

    /// Writes the file anew with only the lines of what it holds now.
    fn rewrite(&mut self) -> Result<(), JournalError> {
        let mut text = Vec::new();
        let lines = self.state.lines();
        for line in &lines {
            serde_json::to_writer(&mut text, line).map_err(|e| self.error(e.into()))?;
            text.push(b'\n');
        }
        write_atomic(&self.path, &text).map_err(|e| self.error(e))?;
        self.appender = None;
        let meta = std::fs::metadata(&self.path).map_err(|e| self.error(e))?;
        self.inode = Some(meta.ino());
        self.read_to = text.len() as u64;
        self.lines = lines.len();
        Ok(())
    }
}

/// The file at `path` opened for appending: `open` (with its inode) while it is still the
/// file at the path (another process may have rewritten it), else opened anew.
fn appender<'a>(path: &Path, open: &'a mut Option<(File, u64)>) -> std::io::Result<&'a mut File> {
    let at_path = std::fs::metadata(path).ok().map(|m| m.ino());
    if open.as_ref().map(|(_, ino)| *ino) != at_path || at_path.is_none() {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(path)?;
        let ino = file.metadata()?.ino();
        *open = Some((file, ino));
    }
    match open {
        Some((file, _)) => Ok(file),
        None => Err(std::io::Error::other("no file to append to")),
    }
}

/// True when the file's last byte ends a line.
fn ends_a_line(file: &File, len: u64) -> bool {
    use std::os::unix::fs::FileExt;
    let mut last = [0u8; 1];
    len == 0 || (file.read_exact_at(&mut last, len - 1).is_ok() && last[0] == b'\n')
}

/// Writes `bytes` to `path` through a temporary file, fsync and rename.
fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    engine::store::write_atomic(path, bytes).map_err(std::io::Error::other)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[derive(Default)]
    struct Names(BTreeMap<String, u32>);

    #[derive(serde::Serialize, serde::Deserialize)]
    #[serde(rename_all = "snake_case")]
    enum NameLine {
        Put(String, u32),
        Drop(String),
    }

    impl Fold for Names {
        type Line = NameLine;
        fn apply(&mut self, line: NameLine) {
            match line {
                NameLine::Put(k, v) => {
                    self.0.insert(k, v);
                }
                NameLine::Drop(k) => {
                    self.0.remove(&k);
                }
            }
        }
        fn lines(&self) -> Vec<NameLine> {
            self.0
                .iter()
                .map(|(k, v)| NameLine::Put(k.clone(), *v))
                .collect()
        }
        fn len(&self) -> usize {
            self.0.len()
        }
    }

    fn line_count(path: &Path) -> usize {
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .count()
    }

    #[test]
    fn another_journal_on_the_file_sees_appends_and_rewrites() -> Result<(), JournalError> {
        let dir = tempfile::tempdir().map_err(|e| JournalError {
            path: "tempdir".into(),
            source: e,
        })?;
        let path = dir.path().join("names.jsonl");
        let mut writer: Journal<Names> = Journal::new(path.clone());
        let mut reader: Journal<Names> = Journal::new(path.clone());
        writer.append(NameLine::Put("a".into(), 1))?;
        writer.append(NameLine::Put("b".into(), 2))?;
        assert_eq!(reader.state()?.0.len(), 2);
        // Churn until the file is rewritten: it holds the live lines only, and the reader
        // (positioned in the old file) reads the new one from its start.
        for i in 0..100 {
            writer.append(NameLine::Put(format!("t{i}"), i))?;
            writer.append(NameLine::Drop(format!("t{i}")))?;
        }
        assert!(line_count(&path) < 70, "{} lines", line_count(&path));
        writer.append(NameLine::Put("a".into(), 3))?;
        let state = reader.state()?;
        assert_eq!(state.0.get("a"), Some(&3));
        assert_eq!(state.0.len(), 2);
        Ok(())
    }

    #[test]
    fn a_torn_last_line_is_skipped_and_ended_by_the_next_append() -> Result<(), JournalError> {
        let dir = tempfile::tempdir().map_err(|e| JournalError {
            path: "tempdir".into(),
            source: e,
        })?;
        let path = dir.path().join("names.jsonl");
        std::fs::write(&path, "{\"put\":[\"a\",1]}\n{\"put\":[\"b\",").map_err(|e| {
            JournalError {
                path: "write".into(),
                source: e,
            }
        })?;
        let mut journal: Journal<Names> = Journal::new(path.clone());
        assert_eq!(journal.state()?.0.keys().collect::<Vec<_>>(), ["a"]);
        journal.append(NameLine::Put("c".into(), 3))?;
        let mut again: Journal<Names> = Journal::new(path);
        assert_eq!(again.state()?.0.keys().collect::<Vec<_>>(), ["a", "c"]);
        Ok(())
    }
}
