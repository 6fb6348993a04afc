//! Writing a flavor's files into an instance's folder, without ever leaving it; and its
//! secret files into memory (a tmpfs folder of the instance's own), never onto disk.

use std::collections::BTreeMap;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};

use engine::provider::ProviderError;

/// A relative path that stays inside its folder.
fn safe_relative(path: &str) -> Option<&Path> {
    let p = Path::new(path);
    let inside = p
        .components()
        .all(|c| matches!(c, Component::Normal(_) | Component::CurDir));
    (inside && !path.is_empty()).then_some(p)
}

/// Writes `files` (relative path to content) under `dir` for `provider`. A path that is
/// absolute or climbs out with `..` is refused as an invalid setting.
pub fn write_into(
    provider: &str,
    dir: &Path,
    files: &BTreeMap<String, String>,
) -> Result<(), ProviderError> {
    let failed = |detail: String| ProviderError::Backend {
        provider: provider.to_owned(),
        detail,
        source: None,
    };
    for (path, content) in files {
        let relative = safe_relative(path).ok_or_else(|| ProviderError::InvalidProps {
            provider: provider.to_owned(),
            detail: format!("file path {path:?} must be relative and stay in the working folder"),
        })?;
        let full = dir.join(relative);
        if let Some(parent) = full.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| failed(format!("cannot create {}: {e}", parent.display())))?;
        }
        std::fs::write(&full, content)
            .map_err(|e| failed(format!("cannot write {}: {e}", full.display())))?;
    }
    Ok(())
}

/// Where secret files live: a tmpfs, so they are in memory only (`/dev/shm`, else the
/// user's runtime folder).
fn secrets_root() -> Option<PathBuf> {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        return Some(shm.join("tend"));
    }
    std::env::var_os("XDG_RUNTIME_DIR").map(|d| PathBuf::from(d).join("tend"))
}

/// Writes `files` (relative path to secret content) into a folder of their own in memory,
/// named `name`: the folder is readable by its owner only, each file read-only. Returns
/// the folder, to mount or link from, and to remove with the instance.
pub fn write_secrets(
    provider: &str,
    name: &str,
    files: &BTreeMap<String, String>,
) -> Result<PathBuf, ProviderError> {
    let failed = |detail: String| ProviderError::Backend {
        provider: provider.to_owned(),
        detail,
        source: None,
    };
    let root = secrets_root().ok_or_else(|| {
        failed("secret_files need a tmpfs: neither /dev/shm nor $XDG_RUNTIME_DIR exists".into())
    })?;
    let dir = root.join(name);
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .map_err(|e| failed(format!("cannot create {}: {e}", dir.display())))?;
    for (path, content) in files {
        let relative = safe_relative(path).ok_or_else(|| ProviderError::InvalidProps {
            provider: provider.to_owned(),
            detail: format!(
                "secret file path {path:?} must be relative and stay in the working folder"
            ),
        })?;
        let full = dir.join(relative);
        if let Some(parent) = full.parent() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(parent)
                .map_err(|e| failed(format!("cannot create {}: {e}", parent.display())))?;
        }
        let _ = std::fs::remove_file(&full);
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o400)
            .open(&full)
            .and_then(|mut f| std::io::Write::write_all(&mut f, content.as_bytes()))
            .map_err(|e| failed(format!("cannot write secret file {}: {e}", full.display())))?;
    }
    Ok(dir)
}

/// Links each of `paths` in `workdir` to the file of the same path under `from` (where
/// `write_secrets` put them), making folders as needed.
pub fn link_secrets<'a>(
    provider: &str,
    workdir: &Path,
    from: &Path,
    paths: impl Iterator<Item = &'a String>,
) -> Result<(), ProviderError> {
    let failed = |detail: String| ProviderError::backend(provider, detail);
    for path in paths {
        let link = workdir.join(path);
        if let Some(parent) = link.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| failed(format!("cannot create {}: {e}", parent.display())))?;
        }
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(from.join(path), &link)
            .map_err(|e| failed(format!("cannot link {}: {e}", link.display())))?;
    }
    Ok(())
}

/// Removes the secret files of instance `name` (nothing when it has none).
pub fn remove_secrets(name: &str) {
    if let Some(root) = secrets_root() {
        let _ = std::fs::remove_dir_all(root.join(name));
    }
}

/// An exclusive kernel lock (`flock`) on the file at `path`, made if missing: held until
/// the returned file is dropped, or its holder dies. Waits for a holder to let go.
pub async fn exclusive(path: PathBuf) -> Result<std::fs::File, String> {
    use std::os::unix::io::AsRawFd;
    tokio::task::spawn_blocking(move || {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
        // SAFETY: flock on a descriptor this function owns; it blocks until the lock is had.
        let locked = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
        if locked == 0 {
            Ok(file)
        } else {
            Err(format!(
                "cannot lock {}: {}",
                path.display(),
                std::io::Error::last_os_error()
            ))
        }
    })
    .await
    .map_err(|e| format!("the lock on a file: {e}"))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_must_stay_inside() {
        assert!(safe_relative("conf/app.ini").is_some());
        assert!(safe_relative("../etc/passwd").is_none());
        assert!(safe_relative("/etc/passwd").is_none());
        assert!(safe_relative("").is_none());
    }

    #[test]
    fn secret_files_live_in_memory_readable_by_their_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let name = format!("unit-test-{}", std::process::id());
        let mut files = BTreeMap::new();
        files.insert("keys/token".to_owned(), "s3cr3t".to_owned());
        let dir = write_secrets("process", &name, &files).unwrap_or_else(|e| panic!("{e}"));
        assert!(dir.starts_with("/dev/shm") || std::env::var_os("XDG_RUNTIME_DIR").is_some());
        let file = dir.join("keys/token");
        assert_eq!(
            std::fs::read_to_string(&file).ok().as_deref(),
            Some("s3cr3t")
        );
        let mode = |p: &Path| {
            std::fs::metadata(p)
                .map(|m| m.permissions().mode() & 0o777)
                .unwrap_or(0)
        };
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&file), 0o400);
        remove_secrets(&name);
        assert!(!dir.exists());
    }

    #[test]
    fn writes_nested_files_and_refuses_escapes() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let mut files = BTreeMap::new();
        files.insert("conf/app.ini".to_owned(), "x=1".to_owned());
        assert!(write_into("process", dir.path(), &files).is_ok());
        assert_eq!(
            std::fs::read_to_string(dir.path().join("conf/app.ini"))
                .ok()
                .as_deref(),
            Some("x=1")
        );
        files.insert("../escape".to_owned(), "no".to_owned());
        assert!(matches!(
            write_into("process", dir.path(), &files),
            Err(ProviderError::InvalidProps { .. })
        ));
    }
}
