//! `tend graph`

use crate::cli::{GraphFormat, SpecArgs};
use crate::failure::Failure;

use super::setup::load;

/// Prints the group graph.
pub fn run(args: &SpecArgs, format: GraphFormat) -> Result<i32, Failure> {
    let (_, graph) = load(args)?;
    match format {
        GraphFormat::Dot => crate::out!("{}", graph.to_dot()),
        GraphFormat::Mermaid => crate::out!("{}", graph.to_mermaid()),
    }
    Ok(0)
}
