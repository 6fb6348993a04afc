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
        crate::out!("{}", String::from_utf8_lossy(&page));
        return Ok(0);
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

fn environment(message: String) -> Failure {
    Failure::Other {
        fault: Fault::Environment,
        message,
    }
}
