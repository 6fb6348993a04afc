//! Keeping the process provider's folder from growing with time: logs are rotated when
//! they get large, and the working folders of a slot's older versions are removed when a
//! new version starts in it.

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::path::{Path, PathBuf};

use super::records::Record;

/// A log is rotated when it grows past this many bytes: its content moves to `<log>.1`
/// (replacing the one before) and the log starts again empty, so a slot's logs take at most
/// about twice this.
pub const LOG_ROTATE_BYTES: u64 = 8 * 1024 * 1024;

/// Rotates every log of `records` that grew past [`LOG_ROTATE_BYTES`].
pub fn rotate_logs(records: &BTreeMap<String, Record>) {
    let mut logs: Vec<&Path> = records.values().map(|r| r.log.as_path()).collect();
    logs.sort_unstable();
    logs.dedup();
    for log in logs {
        rotate_if_large(log, LOG_ROTATE_BYTES);
    }
}

/// Copies `log` to `<log>.1` and empties it when it holds more than `limit` bytes. The
/// processes writing it keep it open in append mode, so their next line lands at the start
/// of the emptied file; a line written between the copy and the emptying is lost.
fn rotate_if_large(log: &Path, limit: u64) {
    if std::fs::metadata(log).map_or(true, |m| m.len() <= limit) {
        return;
    }
    let mut old = log.as_os_str().to_owned();
    old.push(".1");
    if std::fs::copy(log, PathBuf::from(old)).is_ok() {
        let _ = OpenOptions::new()
            .write(true)
            .open(log)
            .and_then(|f| f.set_len(0));
    }
}

/// Removes the working folders under `run` that slot `group`/`slot` had for versions other
/// than `hash`, unless a recorded instance still has that version. Folders are named
/// `<group>-<slot>-<hash>`; only names whose rest is a hash as long as `hash` are touched.
pub fn sweep_workdirs(
    run: &Path,
    group: &str,
    slot: &str,
    hash: &str,
    records: &BTreeMap<String, Record>,
) {
    let prefix = format!("{group}-{slot}-");
    let Ok(entries) = std::fs::read_dir(run) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(other) = name.to_str().and_then(|n| n.strip_prefix(&prefix)) else {
            continue;
        };
        let a_hash = other.len() == hash.len() && other.bytes().all(|b| b.is_ascii_hexdigit());
        // Any recorded instance whose folder has this very name keeps it: slot ids may
        // hold `-`, so group `api` slot `eu-1` and group `api-eu` slot `1` share a prefix.
        let in_use = records.values().any(|r| {
            name.to_str() == Some(&format!("{}-{}-{}", r.tags.group, r.tags.slot, r.tags.hash))
        });
        if a_hash && other != hash && !in_use {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_large_log_is_rotated_and_a_small_one_left_alone() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let log = dir.path().join("web-0.log");
        std::fs::write(&log, "x".repeat(100)).unwrap_or_else(|e| panic!("{e}"));
        rotate_if_large(&log, 100);
        assert_eq!(std::fs::metadata(&log).map(|m| m.len()).ok(), Some(100));
        std::fs::write(&log, "y".repeat(101)).unwrap_or_else(|e| panic!("{e}"));
        rotate_if_large(&log, 100);
        assert_eq!(std::fs::metadata(&log).map(|m| m.len()).ok(), Some(0));
        assert_eq!(
            std::fs::read_to_string(dir.path().join("web-0.log.1")).ok(),
            Some("y".repeat(101))
        );
    }

    #[test]
    fn only_older_unused_versions_of_the_slot_are_swept() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let run = dir.path();
        let (old, live, new) = ("aaaa1111", "bbbb2222", "cccc3333");
        for name in [
            format!("web-0-{old}"),
            format!("web-0-{live}"),
            format!("web-0-{new}"),
            format!("web-1-{old}"),
            "web-0-notahash".to_owned(),
        ] {
            std::fs::create_dir_all(run.join(name)).unwrap_or_else(|e| panic!("{e}"));
        }
        let record: Record = serde_json::from_value(serde_json::json!({
            "id": "1-1",
            "tags": {"project": "p", "group": "web", "slot": "0", "hash": live},
            "address": null,
            "started_at": 0,
            "log": "web-0.log",
        }))
        .unwrap_or_else(|e| panic!("{e}"));
        let records = BTreeMap::from([("1-1".to_owned(), record)]);
        sweep_workdirs(run, "web", "0", new, &records);
        let mut left: Vec<String> = std::fs::read_dir(run)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(
            left,
            [
                format!("web-0-{live}"),
                format!("web-0-{new}"),
                "web-0-notahash".to_owned(),
                format!("web-1-{old}"),
            ]
        );
    }

    #[test]
    fn a_folder_of_another_group_sharing_the_prefix_is_kept() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        // Group `api-eu` slot `1` lives in `api-eu-1-<hash>`, which also starts like the
        // folders of group `api` slot `eu-1`.
        let theirs = dir.path().join("api-eu-1-dddd4444");
        std::fs::create_dir_all(&theirs).unwrap_or_else(|e| panic!("{e}"));
        let record: Record = serde_json::from_value(serde_json::json!({
            "id": "2-2",
            "tags": {"project": "p", "group": "api-eu", "slot": "1", "hash": "dddd4444"},
            "address": null,
            "started_at": 0,
            "log": "api-eu-1.log",
        }))
        .unwrap_or_else(|e| panic!("{e}"));
        let records = BTreeMap::from([("2-2".to_owned(), record)]);
        sweep_workdirs(dir.path(), "api", "eu-1", "cccc3333", &records);
        assert!(theirs.exists());
    }
}
