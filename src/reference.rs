//! The generated pages under `docs/reference/` and the test that keeps them current:
//! `cli.md` from the command-line definition in `cli.rs`, `starlark.md` and `nickel.md` from
//! the engine ([`engine::reference`]). `TEND_UPDATE_DOCS=1 cargo test --bin tend reference`
//! writes them.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use clap::CommandFactory;

use crate::cli::Cli;

/// The command-line reference page, in Markdown: every command, its arguments, flags,
/// defaults and examples.
fn cli_markdown() -> String {
    let mut command = Cli::command();
    command.build();
    let mut page = engine::reference::generated_header("src/cli.rs");
    page.push_str("\n# Command-line reference\n\n");
    if let Some(about) = command.get_about() {
        let _ = writeln!(page, "{about}\n");
    }
    page.push_str("Every command also takes the global flags of [`tend`](#tend).\n\n");
    let mut commands = Vec::new();
    collect(&command, &mut commands);
    for (name, _) in &commands {
        let _ = writeln!(page, "- [`{name}`](#{})", name.replace(' ', "-"));
    }
    for (name, command) in &commands {
        render(&mut page, name, command);
    }
    page
}

/// Every command, depth first, with its full name (`tend plugin conformance`).
fn collect(command: &clap::Command, into: &mut Vec<(String, clap::Command)>) {
    let name = command
        .get_display_name()
        .unwrap_or(command.get_name())
        .replace('-', " ");
    into.push((name, command.clone()));
    for sub in command.get_subcommands().filter(|s| s.get_name() != "help") {
        collect(sub, into);
    }
}

fn render(page: &mut String, name: &str, command: &clap::Command) {
    let _ = write!(page, "\n## {name}\n\n");
    if let Some(about) = command.get_long_about().or(command.get_about()) {
        let _ = writeln!(page, "{about}\n");
    }
    let usage = command.clone().render_usage().to_string();
    let usage = usage.trim_start_matches("Usage: ");
    let _ = writeln!(page, "```text\n{usage}\n```\n");
    let arguments: Vec<&clap::Arg> = command
        .get_arguments()
        .filter(|a| !a.is_hide_set() && (name == "tend" || !a.is_global_set()))
        .filter(|a| {
            !matches!(
                a.get_action(),
                clap::ArgAction::Help
                    | clap::ArgAction::HelpShort
                    | clap::ArgAction::HelpLong
                    | clap::ArgAction::Version
            )
        })
        .collect();
    if !arguments.is_empty() {
        page.push_str("| Argument | Default | What it does |\n|---|---|---|\n");
        for argument in arguments {
            let _ = writeln!(
                page,
                "| {} | {} | {} |",
                argument_name(argument),
                defaults(argument),
                help(argument)
            );
        }
    }
    if let Some(after) = command.get_after_help() {
        let _ = write!(page, "\n```text\n{after}\n```\n");
    }
    let subcommands: Vec<&clap::Command> = command
        .get_subcommands()
        .filter(|s| s.get_name() != "help")
        .collect();
    if !subcommands.is_empty() {
        page.push_str("\nCommands:\n\n");
        for sub in subcommands {
            let full = format!("{name} {}", sub.get_name());
            let about = sub.get_about().map(|a| a.to_string()).unwrap_or_default();
            let _ = writeln!(page, "- [`{full}`](#{}): {about}", full.replace(' ', "-"));
        }
    }
}

/// `--out, -o <OUT>`, or `<SPEC>` for a positional argument.
fn argument_name(argument: &clap::Arg) -> String {
    let value = argument
        .get_value_names()
        .and_then(|names| names.first())
        .map(|n| format!("<{n}>"))
        .unwrap_or_else(|| format!("<{}>", argument.get_id().as_str().to_uppercase()));
    let takes_value = argument.get_action().takes_values();
    let mut names = Vec::new();
    if let Some(long) = argument.get_long() {
        names.push(format!("--{long}"));
    }
    if let Some(short) = argument.get_short() {
        names.push(format!("-{short}"));
    }
    if names.is_empty() {
        return format!("`{value}`");
    }
    if takes_value {
        format!("`{} {value}`", names.join(", "))
    } else {
        format!("`{}`", names.join(", "))
    }
}

/// The default, the values it may take, and its environment variable.
fn defaults(argument: &clap::Arg) -> String {
    let mut parts = Vec::new();
    let values: Vec<String> = argument
        .get_default_values()
        .iter()
        .map(|v| v.to_string_lossy().into_owned())
        .collect();
    // The spec's default depends on the folder it runs in; say so rather than print a path.
    if !values.is_empty() && argument.get_id() != "spec" && argument.get_action().takes_values() {
        parts.push(format!("`{}`", values.join(",")));
    }
    if let Some(env) = argument.get_env() {
        parts.push(format!("env `{}`", env.to_string_lossy()));
    }
    parts.join(", ")
}

/// The long help on one line, with the values a choice may take.
fn help(argument: &clap::Arg) -> String {
    let text = argument
        .get_long_help()
        .or(argument.get_help())
        .map(|h| h.to_string())
        .unwrap_or_default();
    let mut text = text.split_whitespace().collect::<Vec<_>>().join(" ");
    let choices: Vec<String> = argument
        .get_possible_values()
        .iter()
        .filter(|v| !v.is_hide_set())
        .map(|v| format!("`{}`", v.get_name()))
        .collect();
    if !choices.is_empty() {
        if !text.ends_with('.') {
            text.push('.');
        }
        let _ = write!(text, " One of {}.", choices.join(", "));
    }
    text.replace('|', "\\|")
}

/// The folder of the generated pages.
fn folder() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/reference")
}

/// Each generated page: its file name and its content from the code.
fn pages() -> Vec<(&'static str, String)> {
    let mut pages = vec![
        ("cli.md", cli_markdown()),
        ("starlark.md", engine::reference::starlark_markdown()),
    ];
    #[cfg(feature = "nickel")]
    pages.push(("nickel.md", engine::reference::nickel_markdown()));
    pages
}

#[test]
fn the_generated_reference_pages_match_the_code() {
    let update = std::env::var_os("TEND_UPDATE_DOCS").is_some_and(|v| v == "1");
    let mut stale = Vec::new();
    for (name, content) in pages() {
        let path = folder().join(name);
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        if committed == content {
            continue;
        }
        if update {
            std::fs::create_dir_all(folder())
                .unwrap_or_else(|e| panic!("cannot make docs/reference: {e}"));
            std::fs::write(&path, &content)
                .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
        } else {
            stale.push(name);
        }
    }
    assert!(
        stale.is_empty(),
        "docs/reference/{{{}}} differ from the code: run `TEND_UPDATE_DOCS=1 cargo test --bin tend reference` and commit them",
        stale.join(",")
    );
}

#[test]
fn every_command_has_an_example_in_its_help() {
    let mut command = Cli::command();
    command.build();
    let mut commands = Vec::new();
    collect(&command, &mut commands);
    for (name, command) in commands {
        let after = command
            .get_after_help()
            .map(|a| a.to_string())
            .unwrap_or_default();
        assert!(
            after.starts_with("Examples:\n  tend"),
            "`{name} --help` has no example"
        );
    }
}
