//! One module per command: read the spec, call the engine, print.

mod apply;
mod completions;
mod destroy;
mod graph;
mod handover;
mod man;
mod plan;
mod plugin;
mod run;
mod setup;
mod status;
mod stdlib;
mod test;
mod validate;

use crate::cli::{Cli, Command, PluginCommand};
use crate::failure::Failure;

/// Runs a command; returns the exit status.
pub fn run(cli: Cli) -> Result<i32, Failure> {
    let verbose = cli.verbose > 0;
    match cli.command {
        Command::Validate { spec, json } => validate::run(&spec, json),
        Command::Plan {
            spec,
            json,
            out,
            detailed_exitcode,
            store,
        } => plan::run(&spec, json, out.as_deref(), detailed_exitcode, &store),
        Command::Graph { spec, format } => graph::run(&spec, format),
        Command::Apply(args) => apply::run(args),
        Command::Destroy(args) => destroy::run(args),
        Command::Run(args) => run::run(args),
        Command::Test {
            paths,
            update,
            max_steps,
        } => test::run(paths, update, max_steps),
        Command::Stdlib => stdlib::run(),
        Command::Plugin {
            command:
                PluginCommand::Conformance {
                    config,
                    dir,
                    command,
                },
        } => plugin::conformance(command, &config, dir, verbose),
        Command::Status {
            spec,
            json,
            watch,
            store,
        } => status::run(&spec, json, watch.as_deref(), &store),
        Command::Completions { shell } => completions::run(shell),
        Command::Man { dir } => man::run(dir.as_deref()),
    }
}
