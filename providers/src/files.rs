//! Writing a flavor's files into an instance's folder, without ever leaving it.

use std::collections::BTreeMap;
use std::path::{Component, Path};

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
