//! Helpers shared by the integration tests: running the binary, paths, insta settings.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

/// Held for writing by the tests that time a failover against a lease (etcd's and tend's
/// clocks keep running while the machine is busy), and for reading by each seed of the
/// simulation, which keeps both cores busy: the two never overlap.
pub static QUIET: std::sync::RwLock<()> = std::sync::RwLock::new(());

/// The repository root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Runs tend in `cwd`, insists on exit status 0, and returns its stdout.
pub fn tend_ok(cwd: &Path, args: &[&str]) -> String {
    let out = tend(cwd, args);
    assert_eq!(
        out.status.code(),
        Some(0),
        "tend {args:?}: {}",
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// Runs the built `tend` binary in `cwd` with `args`.
pub fn tend(cwd: &Path, args: &[&str]) -> Output {
    match Command::new(env!("CARGO_BIN_EXE_tend"))
        .args(args)
        .current_dir(cwd)
        .env_remove("RUST_BACKTRACE")
        .output()
    {
        Ok(output) => output,
        Err(e) => panic!("cannot run tend: {e}"),
    }
}

/// Starts the built `tend` binary in `cwd` with `args`, its output going to `output()`
/// (`Stdio::piped` to read it, `Stdio::null` for a long-running one nobody reads).
pub fn spawn_tend(cwd: &Path, args: &[&str], output: fn() -> Stdio) -> Child {
    Command::new(env!("CARGO_BIN_EXE_tend"))
        .args(args)
        .current_dir(cwd)
        .stdout(output())
        .stderr(output())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start tend: {e}"))
}

/// Sends `signal` (such as "-9" or "-TERM") to process `pid`, through kill(1).
pub fn signal(pid: impl ToString, signal: &str) {
    let _ = Command::new("kill")
        .args([signal, &pid.to_string()])
        .status();
}

/// Text of a process stream.
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Insta settings that keep snapshots in `dir`, named without the module prefix.
pub fn snapshots_in(dir: &Path) -> insta::Settings {
    let mut settings = insta::Settings::clone_current();
    settings.set_snapshot_path(dir);
    settings.set_prepend_module_to_snapshot(false);
    settings.set_omit_expression(true);
    settings
}

/// Files with extension `ext` directly in `dir`, sorted.
pub fn files_with_extension(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == ext))
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
}

/// True when running in CI: `CI` is `true` or `1` (and nothing else counts).
pub fn in_ci() -> bool {
    matches!(std::env::var("CI").as_deref(), Ok("true") | Ok("1"))
}

/// Says that a test cannot run here, where a person sees it: straight to the test run's
/// stderr (not the captured output), as a line `.ci/run` looks for. In CI a missing
/// requirement fails the test instead.
pub fn skip(test: &str, why: &str) {
    use std::io::Write;
    assert!(
        !in_ci(),
        "{test}: {why}; CI requires it (.ci/run installs it)"
    );
    let _ = writeln!(std::io::stderr(), "SKIPPED {test}: {why}");
}

/// True when `program ARGS` runs and succeeds; otherwise says `test` cannot run here
/// (`how`: how to get the program), which in CI fails it.
pub fn have_tool(test: &str, program: &str, args: &[&str], how: &str) -> bool {
    let runs = Command::new(program)
        .args(args)
        .env("TF_CLI_CONFIG_FILE", "/dev/null")
        .env("VAGRANT_CHECKPOINT_DISABLE", "1")
        .output()
        .is_ok_and(|o| o.status.success());
    if !runs {
        skip(test, &format!("no `{program}` on PATH ({how})"));
    }
    runs
}
