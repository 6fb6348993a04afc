//! `tend plugin conformance`

use std::path::PathBuf;
use std::sync::Arc;

use engine::fault::Fault;
use providers::plugin::conformance;
use providers::plugin::conn::Launch;
use providers::plugin::logs::{self, LogSink};

use crate::failure::Failure;

use super::setup::runtime;

/// Runs every conformance check on the plugin `command` starts; prints a line per check.
/// Exit status 1 when one failed. With `verbose` (`-v`), the plugin's stderr is logged.
pub fn conformance(
    command: Vec<String>,
    config: &str,
    dir: Option<PathBuf>,
    verbose: bool,
) -> Result<i32, Failure> {
    let config: serde_json::Value = serde_json::from_str(config).map_err(|e| Failure::Other {
        fault: Fault::Usage,
        message: format!("--config: not JSON: {e}"),
    })?;
    let dir = dir.unwrap_or_else(|| PathBuf::from("."));
    let sink: LogSink = if verbose {
        logs::to_log()
    } else {
        // Its stderr is still kept: a failed check quotes its last lines.
        Arc::new(|_: &str, _: &str| {})
    };
    crate::outln!("tend plugin conformance: {}", command.join(" "));
    let launch = Launch::new("conformance", command, dir);
    let rt = runtime()?;
    let report = rt.block_on(conformance::check_plugin(&launch, &config, &sink));
    crate::out!("{}", report.to_text());
    Ok(if report.passed() { 0 } else { 1 })
}
