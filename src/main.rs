//! The `tend` binary: parse flags, call the engine, render. Nothing else lives here.

mod cli;
mod commands;
mod failure;
mod progress;

use clap::Parser;

fn main() {
    failure::install_panic_hook();
    let cli = cli::Cli::parse();
    let code = match commands::run(cli) {
        Ok(code) => code,
        Err(failure) => {
            eprintln!("{failure}");
            1
        }
    };
    std::process::exit(code);
}
