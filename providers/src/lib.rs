//! tend's instance providers, each behind the engine's `Provider` trait.

pub mod docker;
mod files;
mod journal;
pub mod plugin;
pub mod process;
pub mod sim;

use std::path::Path;
use std::sync::Arc;

use engine::provider::ProviderSet;
use engine::spec::Spec;

/// Every provider of this build, keeping their state under `state_dir` (the spec's `.tend/`).
pub fn all(state_dir: &Path) -> ProviderSet {
    let mut set = ProviderSet::default();
    set.insert(Arc::new(docker::DockerProvider::new(state_dir)));
    set.insert(Arc::new(process::ProcessProvider::new(state_dir)));
    set.insert(Arc::new(sim::SimProvider::new(state_dir)));
    set
}

/// Every provider of this build, and one for each plugin that `specs` name, started in
/// `dir` (the spec's folder) when first used. Where two specs name one plugin, the first
/// one's command and config are used: give the spec to reach first.
pub fn for_specs(state_dir: &Path, dir: &Path, specs: &[&Spec]) -> ProviderSet {
    let mut set = all(state_dir);
    let mut named = std::collections::BTreeSet::new();
    for spec in specs {
        for group in &spec.groups {
            let Some(plugin) =
                plugin::PluginSpec::from_props(&group.provider.kind, &group.provider.props)
            else {
                continue;
            };
            if named.insert(plugin.name.clone()) {
                set.insert(Arc::new(plugin::PluginProvider::new(
                    &plugin,
                    dir,
                    plugin::logs::to_stderr(),
                )));
            }
        }
    }
    set
}
