//! The `tend` binary: parse flags, call the engine, render. Nothing else lives here.

mod cli;
mod commands;
mod failure;
mod logging;
mod output;
mod progress;
#[cfg(test)]
mod reference;

use clap::Parser;

fn main() {
    failure::install_panic_hook();
    let cli = cli::Cli::parse();
    logging::init(cli.verbose, cli.quiet, cli.log_format);
    // A panic on this thread is a bug: the hook has said so; exit 1 like any error. A panic
    // inside one action is caught where the action runs and fails that action alone.
    let code = match std::panic::catch_unwind(|| commands::run(cli)) {
        Ok(Ok(code)) => code,
        Ok(Err(failure)) => {
            crate::errln!("{failure}");
            1
        }
        Err(_) => 1,
    };
    std::process::exit(code);
}
