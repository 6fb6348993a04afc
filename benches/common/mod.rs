//! What the benches that drive the real binary share.

use std::path::Path;
use std::process::{Child, Command, Stdio};

/// Stops a `tend run` with SIGTERM, waits for it, then destroys what its project left.
pub fn stop_and_destroy(child: &mut Child, dir: &Path) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
    let _ = Command::new(env!("CARGO_BIN_EXE_tend"))
        .args(["destroy", "--yes", "--parallelism", "50"])
        .current_dir(dir)
        .stdout(Stdio::null())
        .status();
}
