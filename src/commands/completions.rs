//! `tend completions SHELL`

use clap::CommandFactory;

use crate::cli::Cli;
use crate::failure::Failure;

/// Prints the completion script of `shell` for every command, flag and value tend knows.
pub fn run(shell: clap_complete::Shell) -> Result<i32, Failure> {
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "tend", &mut script);
    super::man::write_all_to_stdout(&script, "the completion script")
}
