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
            "{} is valid: project {:?}, {}, {}; order: {}",
            args.spec.display(),
            spec.project,
            counted(spec.groups.len(), "group"),
            counted(instances, "instance"),
            graph.order().join(", ")
        );
    }
    Ok(0)
}

/// `1 group`, `3 groups`.
fn counted(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}
