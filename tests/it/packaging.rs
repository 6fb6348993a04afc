//! What an installed tend gives besides its commands: a version naming its commit, shell
//! completions that complete, and man pages.

use std::process::Command;

use crate::harness::{repo, tend_ok, text};

fn ok(args: &[&str]) -> String {
    tend_ok(&repo(), args)
}

#[test]
fn the_version_names_the_release_and_the_commit_it_was_built_from() {
    let version = ok(&["--version"]);
    let prefix = format!("tend {} (commit ", env!("CARGO_PKG_VERSION"));
    let commit = version
        .trim()
        .strip_prefix(&prefix)
        .and_then(|rest| rest.strip_suffix(')'))
        .unwrap_or_else(|| panic!("not `{prefix}...)`: {version}"));
    if let Some(given) = std::env::var("TEND_COMMIT").ok().filter(|c| !c.is_empty()) {
        assert_eq!(commit, given);
        return;
    }
    assert_eq!(commit.len(), 12, "{version}");
    let git = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .current_dir(repo())
            .output()
            .unwrap_or_else(|e| panic!("git: {e}"))
    };
    let head = text(&git(&["rev-parse", "--short=12", "HEAD"]).stdout);
    if commit == head.trim() {
        return;
    }
    // Only a commit made after the binary was built (while the tests ran) may differ, and
    // then the binary's commit is one of HEAD's ancestors.
    let committed: u64 = text(&git(&["log", "-1", "--format=%ct", "HEAD"]).stdout)
        .trim()
        .parse()
        .unwrap_or(0);
    let built = std::fs::metadata(env!("CARGO_BIN_EXE_tend"))
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(u64::MAX, |d| d.as_secs());
    assert!(
        committed > built,
        "the binary, built after HEAD ({}), names {commit}",
        head.trim()
    );
    let known = git(&["merge-base", "--is-ancestor", commit, "HEAD"]);
    assert!(
        known.status.success(),
        "{commit} is not an ancestor of HEAD"
    );
}

/// What bash's completion offers for `words`, the last one being completed.
fn bash_completes(script: &str, words: &[&str]) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let path = dir.path().join("tend.bash");
    std::fs::write(&path, script).unwrap_or_else(|e| panic!("write: {e}"));
    let quoted: Vec<String> = words.iter().map(|w| format!("'{w}'")).collect();
    let program = format!(
        "source '{}'; COMP_WORDS=({}); COMP_CWORD={}; COMP_LINE='{}'; COMP_POINT=${{#COMP_LINE}}; \
         _tend tend '{}' '{}'; printf '%s\\n' \"${{COMPREPLY[@]}}\"",
        path.display(),
        quoted.join(" "),
        words.len() - 1,
        words.join(" "),
        words[words.len() - 1],
        words[words.len() - 2],
    );
    let out = Command::new("bash")
        .args(["--norc", "-c", &program])
        .output()
        .unwrap_or_else(|e| panic!("bash: {e}"));
    assert!(out.status.success(), "bash: {}", text(&out.stderr));
    text(&out.stdout)
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

#[test]
fn bash_completion_completes_commands_flags_and_values() {
    let script = ok(&["completions", "bash"]);
    assert_eq!(bash_completes(&script, &["tend", "pl"]), ["plan", "plugin"]);
    assert_eq!(
        bash_completes(&script, &["tend", "plan", "--detailed"]),
        ["--detailed-exitcode"]
    );
    assert_eq!(
        bash_completes(&script, &["tend", "graph", "--format", ""]),
        ["dot", "mermaid"]
    );
    assert_eq!(
        bash_completes(&script, &["tend", "completions", "f"]),
        ["fish"]
    );
}

#[test]
fn zsh_and_fish_completions_know_every_command() {
    let zsh = ok(&["completions", "zsh"]);
    let fish = ok(&["completions", "fish"]);
    assert!(zsh.starts_with("#compdef tend"), "{zsh}");
    for command in [
        "validate", "plan", "apply", "destroy", "run", "status", "test", "graph",
    ] {
        assert!(zsh.contains(&format!("'{command}:")), "zsh lacks {command}");
        assert!(
            fish.contains(&format!("-a \"{command}\"")),
            "fish lacks {command}"
        );
    }
    assert!(fish.contains("-l detailed-exitcode"), "{fish}");
}

#[test]
fn the_man_page_describes_every_command_with_its_examples() {
    let page = ok(&["man"]);
    assert!(page.contains(".TH tend 1"), "{page}");
    for command in [
        "validate", "plan", "apply", "destroy", "run", "status", "test", "man",
    ] {
        assert!(
            page.contains(&format!("tend\\-{command}(1)")),
            "tend(1) lacks {command}"
        );
    }
    assert!(page.contains("tend plan"), "no examples: {page}");

    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let folder = dir.path().join("man1");
    let said = ok(&["man", "--dir", &folder.to_string_lossy()]);
    assert!(said.contains("man1"), "{said}");
    for page in [
        "tend.1",
        "tend-plan.1",
        "tend-run.1",
        "tend-plugin-conformance.1",
    ] {
        let text = std::fs::read_to_string(folder.join(page))
            .unwrap_or_else(|e| panic!("{page} was not written: {e}"));
        assert!(text.contains(".SH SYNOPSIS"), "{page}: {text}");
    }
    let plan = std::fs::read_to_string(folder.join("tend-plan.1")).unwrap_or_default();
    assert!(plan.contains("detailed\\-exitcode"), "{plan}");
    assert!(
        plan.contains("release.plan"),
        "tend-plan(1) has no example: {plan}"
    );
}

#[test]
fn a_completion_script_or_man_page_that_cannot_be_written_fails_the_command() {
    for args in [&["completions", "bash"][..], &["man"]] {
        let full = std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .unwrap_or_else(|e| panic!("/dev/full: {e}"));
        let out = Command::new(env!("CARGO_BIN_EXE_tend"))
            .args(args)
            .stdout(full)
            .output()
            .unwrap_or_else(|e| panic!("tend: {e}"));
        assert_eq!(out.status.code(), Some(1), "tend {args:?}");
        assert!(
            text(&out.stderr).contains("No space left on device"),
            "tend {args:?}: {}",
            text(&out.stderr)
        );
    }
}
