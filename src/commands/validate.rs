//! `tend validate`

use crate::cli::SpecArgs;
use crate::failure::Failure;

use super::setup::load;

/// Checks the spec and says what it holds.
pub fn run(args: &SpecArgs, json: bool) -> Result<i32, Failure> {
    let (spec, graph) = load(args)?;
    if json {
        crate::outln!(
            "{}",
            serde_json::to_string_pretty(&spec).unwrap_or_default()
        );
    } else {
        let instances: usize = spec.groups.iter().map(|g| g.allocation.len()).sum();
        crate::outln!(
            "{} is valid: project {:?}, {} groups, {} instances; order: {}",
            args.spec.display(),
            spec.project,
            spec.groups.len(),
            instances,
            graph.order().join(", ")
        );
    }
    Ok(0)
}
