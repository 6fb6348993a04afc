//! tend's instance providers, each behind the engine's `Provider` trait.

pub mod docker;
mod files;
mod journal;
pub mod process;
pub mod sim;

use std::path::Path;
use std::sync::Arc;

use engine::provider::ProviderSet;

/// Every provider of this build, keeping their state under `state_dir` (the spec's `.tend/`).
pub fn all(state_dir: &Path) -> ProviderSet {
    let mut set = ProviderSet::default();
    set.insert(Arc::new(docker::DockerProvider::new(state_dir)));
    set.insert(Arc::new(process::ProcessProvider::new(state_dir)));
    set.insert(Arc::new(sim::SimProvider::new(state_dir)));
    set
}
