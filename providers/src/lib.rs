//! tend's instance providers, each behind the engine's `Provider` trait.

pub mod docker;
mod files;
mod journal;
pub mod plugin;
pub mod process;
mod shell;
pub mod sim;
pub mod terraform;
pub mod vagrant;

use std::path::Path;
use std::sync::Arc;

use engine::provider::ProviderSet;
use engine::spec::Spec;

/// A short word for a new instance's name: six hex digits from its idempotency key (so a
/// provision made again under that key names the same instance), else random ones.
pub(crate) fn word_for(idempotency: Option<&str>) -> String {
    match idempotency {
        Some(key) => engine::spec::sha256_hex(key.as_bytes())[..6].to_owned(),
        None => random_word(),
    }
}

/// Six random hex digits, from the clock and the process id.
pub(crate) fn random_word() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let mixed = (nanos as u64) ^ (u64::from(std::process::id()) << 24);
    format!("{:06x}", mixed.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 40)
}

/// Every provider of this build, keeping their state under `state_dir` (the spec's `.tend/`).
pub fn all(state_dir: &Path) -> ProviderSet {
    let mut set = ProviderSet::default();
    set.insert(Arc::new(docker::DockerProvider::new(state_dir)));
    set.insert(Arc::new(process::ProcessProvider::new(state_dir)));
    set.insert(Arc::new(sim::SimProvider::new(state_dir)));
    set.insert(Arc::new(terraform::TerraformProvider::new(
        state_dir,
        terraform::progress_to_log(),
    )));
    set.insert(Arc::new(vagrant::VagrantProvider::new(state_dir)));
    set
}

/// Every provider of this build, and one for each plugin that `specs` name, or that a spec
/// the set learns later names, started in `dir` (the spec's folder) when first used. Where
/// specs give one plugin different commands or configs, each runs: instances made under an
/// old config are seen, and removed, through it.
pub fn for_specs(state_dir: &Path, dir: &Path, specs: &[&Spec]) -> ProviderSet {
    let set = all(state_dir).with_factory(Arc::new(plugin::Plugins {
        dir: dir.to_path_buf(),
        logs: plugin::logs::to_log(),
    }));
    for spec in specs {
        set.learn(spec);
    }
    set
}
