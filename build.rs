//! Names the commit tend is built from, for `tend --version` and bug reports: `TEND_COMMIT`
//! when set (a packager's build), else `git rev-parse` of the checkout, else "unknown".

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=TEND_COMMIT");
    let commit = std::env::var("TEND_COMMIT")
        .ok()
        .filter(|c| !c.trim().is_empty())
        .or_else(git_commit)
        .unwrap_or_else(|| "unknown".to_owned());
    let version = env!("CARGO_PKG_VERSION");
    println!("cargo:rustc-env=TEND_VERSION={version} (commit {commit})");
}

/// The checkout's commit, twelve digits, when this crate is the top of a git checkout (a
/// tarball unpacked inside another repository is not that repository's commit). Asks cargo
/// to run this again when HEAD moves: HEAD itself, its reflog (written by every commit,
/// checkout and reset, even when the branch lives only in packed-refs), and the branch's
/// ref, in the repository's common folder (shared by worktrees).
fn git_commit() -> Option<String> {
    let git = |args: &[&str]| -> Option<String> {
        let out = Command::new("git").args(args).output().ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
    };
    let top = git(&["rev-parse", "--show-toplevel"])?;
    let here = std::env::var("CARGO_MANIFEST_DIR").ok()?;
    let same = |a: &str, b: &str| match (Path::new(a).canonicalize(), Path::new(b).canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    };
    if !same(&top, &here) {
        return None;
    }
    let git_dir = PathBuf::from(git(&["rev-parse", "--absolute-git-dir"])?);
    let common = git(&["rev-parse", "--path-format=absolute", "--git-common-dir"])
        .map(PathBuf::from)
        .unwrap_or_else(|| git_dir.clone());
    let head = git_dir.join("HEAD");
    let mut watched = vec![
        head.clone(),
        git_dir.join("logs").join("HEAD"),
        common.join("packed-refs"),
    ];
    if let Some(reference) = std::fs::read_to_string(&head)
        .ok()
        .and_then(|h| h.strip_prefix("ref: ").map(|r| common.join(r.trim())))
    {
        watched.push(reference);
    }
    // A path that does not exist would make cargo run this on every build.
    for path in watched.iter().filter(|p| p.exists()) {
        println!("cargo:rerun-if-changed={}", path.display());
    }
    git(&["rev-parse", "--short=12", "HEAD"])
}
