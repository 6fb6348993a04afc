//! Command-line flags.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

/// Declarative, self-healing infrastructure written in Starlark.
#[derive(Debug, Parser)]
#[command(name = "tend", version = env!("TEND_VERSION"), about, after_help = examples(&[
    ("tend plan", "what would change to make ./main.star so"),
    ("tend apply --yes", "make it so"),
    ("tend run", "keep it so: heal dead, unhealthy and drifted instances"),
    ("tend test", "run the spec tests (*_test.star) under this folder"),
]))]
pub struct Cli {
    /// The command to run.
    #[command(subcommand)]
    pub command: Command,
    /// More diagnostics on stderr: -v for debug, -vv for trace (RUST_LOG overrides).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// Fewer diagnostics on stderr: -q for warnings only, -qq for errors only.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub quiet: u8,
    /// How diagnostics are written on stderr: text, or JSON (one object per line).
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,
}

/// Formats of the diagnostics on stderr.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Lines for people.
    Text,
    /// One JSON object per line: time, level, project, group, slot, instance, action,
    /// message.
    Json,
}

/// Options every command that reads a spec shares.
#[derive(Debug, Clone, clap::Args)]
pub struct SpecArgs {
    /// The spec to read: Starlark (`.star`) or Nickel (`.ncl`), by its extension
    /// (default: ./main.star, else ./main.ncl).
    #[arg(default_value_os_t = engine::lang::default_spec_path())]
    pub spec: PathBuf,
    /// The folder no load() or import may leave (default: the spec's folder).
    #[arg(long)]
    pub root: Option<PathBuf>,
    /// The most steps (calls and loop iterations) a spec module may take.
    #[arg(long, default_value_t = 10_000_000)]
    pub max_steps: u64,
}

/// tend's commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check a spec: syntax, types, names, dependencies, templates and cycles.
    #[command(after_help = examples(&[
        ("tend validate", "check ./main.star"),
        ("tend validate prod.ncl --json", "check a Nickel spec and print its model"),
    ]))]
    Validate {
        #[command(flatten)]
        spec: SpecArgs,
        /// Print the evaluated model as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show what would change to make the running instances match the spec.
    #[command(after_help = examples(&[
        ("tend plan", "what apply would do for ./main.star"),
        ("tend plan -o release.plan", "save it; `tend apply release.plan` does exactly that"),
        ("tend plan --detailed-exitcode", "in CI: exit 2 when the project differs from the spec"),
        ("tend plan --json | jq .summary", "the plan as data"),
    ]))]
    Plan {
        #[command(flatten)]
        spec: SpecArgs,
        /// Print the plan as JSON.
        #[arg(long)]
        json: bool,
        /// Save the plan, bound to this spec and observed state, for a later apply.
        #[arg(short = 'o', long = "out")]
        out: Option<PathBuf>,
        /// Exit 2 when the project does not match the spec (the plan has changes, or a group
        /// is held: paused, rolled back or degraded), 0 when it matches.
        #[arg(long)]
        detailed_exitcode: bool,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Make the running instances match the spec (or a saved plan).
    #[command(after_help = examples(&[
        ("tend apply", "show the plan, ask, then make it so"),
        ("tend apply --yes examples/hello/main.star", "without asking"),
        ("tend apply release.plan --yes", "a plan saved by `tend plan -o`, if nothing changed since"),
    ]))]
    Apply(ApplyArgs),
    /// Remove every instance tagged with the project, dependents first.
    #[command(after_help = examples(&[
        ("tend destroy", "show what would go, ask, then remove it"),
        ("tend destroy --yes --store etcd://127.0.0.1:2379", "a project kept on etcd"),
    ]))]
    Destroy(ApplyArgs),
    /// Keep the project matching the spec: heal dead, unhealthy and drifted instances.
    #[command(after_help = examples(&[
        ("tend run", "keep ./main.star; the dashboard is on http://127.0.0.1:9180/"),
        ("tend run --watch --resync 5s", "and follow edits of the spec"),
        ("tend run --store etcd://127.0.0.1:2379 --listen 127.0.0.1:9181", "one replica of several: one leads, the others stand by"),
    ]))]
    Run(RunArgs),
    /// Show groups, slots, instances, health, outdated hashes and orphans.
    #[command(after_help = examples(&[
        ("tend status", "groups, slots, instances and their health"),
        ("tend status --watch", "redrawn every 2s until Ctrl-C"),
        ("tend status --json", "the same as data"),
    ]))]
    Status {
        #[command(flatten)]
        spec: SpecArgs,
        /// Print the status as JSON (with --watch, one object per line).
        #[arg(long)]
        json: bool,
        /// Look again every EVERY (default 2s; `--watch=5s`) until Ctrl-C; on a terminal
        /// the status is redrawn in place.
        #[arg(long, value_name = "EVERY", num_args = 0..=1, default_missing_value = "2s",
              require_equals = true)]
        watch: Option<String>,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Run the `def test_*()` functions of `*_test.star` files.
    #[command(after_help = examples(&[
        ("tend test", "every *_test.star under this folder"),
        ("tend test tests/web_test.star --update", "one file, rewriting changed snapshots"),
    ]))]
    Test {
        /// Files or folders to search (default: the current folder).
        paths: Vec<PathBuf>,
        /// Rewrite snapshots that changed.
        #[arg(long)]
        update: bool,
        /// The most steps (calls and loop iterations) one test may take.
        #[arg(long, default_value_t = 10_000_000)]
        max_steps: u64,
    },
    /// List the stdlib modules (`@tend//...`) and their functions.
    #[command(after_help = examples(&[
        ("tend stdlib", "list the modules loaded as @tend//<module>"),
    ]))]
    Stdlib,
    /// Work with provider plugins.
    #[command(after_help = examples(&[
        ("tend plugin conformance -- ./my-provider", "check a plugin against the contract"),
    ]))]
    Plugin {
        #[command(subcommand)]
        command: PluginCommand,
    },
    /// Print the group dependency graph.
    #[command(after_help = examples(&[
        ("tend graph | dot -Tsvg > groups.svg", "draw the dependencies with Graphviz"),
        ("tend graph --format mermaid", "a Mermaid flowchart, for Markdown"),
    ]))]
    Graph {
        #[command(flatten)]
        spec: SpecArgs,
        /// Output format.
        #[arg(long, value_enum, default_value_t = GraphFormat::Dot)]
        format: GraphFormat,
    },
    /// Print a shell's completion script for tend.
    #[command(after_help = examples(&[
        ("tend completions bash > ~/.local/share/bash-completion/completions/tend", "bash"),
        ("tend completions zsh > ~/.zfunc/_tend", "zsh, with ~/.zfunc on $fpath"),
        ("tend completions fish > ~/.config/fish/completions/tend.fish", "fish"),
    ]))]
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print tend's man page, or write one page per command into a folder.
    #[command(after_help = examples(&[
        ("tend man | man -l -", "read it now"),
        ("tend man --dir /usr/local/share/man/man1", "install tend(1), tend-plan(1), ..."),
    ]))]
    Man {
        /// Write tend.1 and a tend-<command>.1 page per command here instead.
        #[arg(long)]
        dir: Option<PathBuf>,
    },
}

/// Options of `tend apply` and `tend destroy`.
#[derive(Debug, clap::Args)]
pub struct ApplyArgs {
    /// The spec (or, for apply, a plan saved by `tend plan -o`).
    #[command(flatten)]
    pub spec: SpecArgs,
    /// Do not ask for confirmation (needed when not on a terminal).
    #[arg(long, short = 'y')]
    pub yes: bool,
    /// Provider calls that make or remove instances at once (health checks of new
    /// instances are waited for beside them).
    #[arg(long, default_value_t = 10)]
    pub parallelism: usize,
    /// Where instance ports are allocated from, as FIRST-LAST (default: the spec's
    /// project(ports = ...), else 20000-32767).
    #[arg(long, value_name = "FIRST-LAST")]
    pub ports: Option<engine::spec::PortRange>,
    /// Where the state is kept.
    #[command(flatten)]
    pub store: StoreArgs,
}

/// Where a command keeps its state.
#[derive(Debug, Clone, clap::Args)]
pub struct StoreArgs {
    /// Where tend keeps state on this machine (default: .tend beside the spec).
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
    /// Where the desired state lives: `local` (the state folder, the default) or
    /// etcd://HOST:PORT[,HOST:PORT...], shared by replicated `tend run`s.
    #[arg(long, env = "TEND_STORE", value_name = "STORE")]
    pub store: Option<String>,
}

/// Options of `tend run`.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// The spec to keep.
    #[command(flatten)]
    pub spec: SpecArgs,
    /// The longest time between two looks at the instances (events wake it sooner).
    #[arg(long, default_value = "10s")]
    pub resync: String,
    /// Where to serve the dashboard (/), /healthz, /status, /metrics and /events.
    #[arg(long, default_value = "127.0.0.1:9180")]
    pub listen: String,
    /// Connections the endpoint serves at once; more are answered 503 at once. Kept under
    /// the process's open-file limit, with room for the controller's own files.
    #[arg(long, default_value_t = engine::controller::http::MAX_CONNECTIONS as u32,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub max_connections: u32,
    /// Evaluate the spec again when its files change.
    #[arg(long)]
    pub watch: bool,
    /// Provider calls that make or remove instances at once (health checks of new
    /// instances are waited for beside them).
    #[arg(long, default_value_t = 10)]
    pub parallelism: usize,
    /// Where instance ports are allocated from, as FIRST-LAST (default: the spec's
    /// project(ports = ...), else 20000-32767).
    #[arg(long, value_name = "FIRST-LAST")]
    pub ports: Option<engine::spec::PortRange>,
    /// Where the state is kept.
    #[command(flatten)]
    pub store: StoreArgs,
    /// With an etcd store: the TTL of the lease a replica campaigns on.
    #[arg(long, default_value = "10s")]
    pub lease_ttl: String,
    /// With an etcd store: how often the lease is kept alive.
    #[arg(long, default_value = "3s")]
    pub keep_alive: String,
}

/// Formats of `tend graph`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum GraphFormat {
    /// Graphviz DOT.
    Dot,
    /// A Mermaid flowchart.
    Mermaid,
}

/// `tend plugin ...`
#[derive(Debug, clap::Subcommand)]
pub enum PluginCommand {
    /// Check a plugin against the contract (docs/plugins.md): the protocol, then what it
    /// promises about instances. Makes and removes a few instances of a throwaway project.
    #[command(after_help = examples(&[
        ("tend plugin conformance -- ./my-provider --verbose", "a plugin and its arguments"),
        ("tend plugin conformance --config '{\"region\": \"test\"}' -- python3 cloud.py", "with a config"),
    ]))]
    Conformance {
        /// The plugin's config, as JSON (what `plugin(config = ...)` gives it).
        #[arg(long, default_value = "{}")]
        config: String,
        /// The folder the plugin starts in (default: the current one).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// The plugin's program and arguments, after `--`.
        #[arg(last = true, required = true, value_name = "COMMAND")]
        command: Vec<String>,
    },
}

/// The "Examples:" section of a command's `--help`: each command line with what it does.
fn examples(items: &[(&str, &str)]) -> String {
    let width = items.iter().map(|(c, _)| c.len()).max().unwrap_or(0);
    let mut text = String::from("Examples:");
    for (command, what) in items {
        text.push_str(&format!("\n  {command:<width$}  # {what}"));
    }
    text
}
