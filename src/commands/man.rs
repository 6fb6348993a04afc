//! `tend man`

use std::path::Path;

use clap::CommandFactory;
use engine::fault::Fault;

use crate::cli::Cli;
use crate::failure::Failure;

/// Prints tend(1), or writes tend.1 and one `tend-<command>.1` per command into `dir`.
pub fn run(dir: Option<&Path>) -> Result<i32, Failure> {
    let command = Cli::command();
    let Some(dir) = dir else {
        let mut page = Vec::new();
        clap_mangen::Man::new(command)
            .render(&mut page)
            .map_err(|e| environment(format!("cannot render the man page: {e}")))?;
        return write_all_to_stdout(&page, "the man page");
    };
    std::fs::create_dir_all(dir)
        .map_err(|e| environment(format!("cannot make {}: {e}", dir.display())))?;
    clap_mangen::generate_to(command, dir).map_err(|e| {
        environment(format!(
            "cannot write man pages into {}: {e}",
            dir.display()
        ))
    })?;
    crate::outln!("wrote tend.1 and a page per command into {}", dir.display());
    Ok(0)
}

/// Writes a generated file to stdout whole. A failed write (a full disk under `>`) is an
/// error, so a truncated script or page is never taken for a good one; a reader that stops
/// early (`| head`) is not.
pub fn write_all_to_stdout(bytes: &[u8], what: &str) -> Result<i32, Failure> {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(bytes).and_then(|()| stdout.flush()) {
        Ok(()) => Ok(0),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(0),
        Err(e) => Err(environment(format!("cannot write {what}: {e}"))),
    }
}

fn environment(message: String) -> Failure {
    Failure::Other {
        fault: Fault::Environment,
        message,
    }
}
