//! Reading the observed state of a project from every provider it may use.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::{ObservedInstance, Provider, ProviderError, Selector};
use crate::spec::{canonical_json, sha256_hex, Spec};

/// The providers compiled into this tend, by name.
#[derive(Clone, Default)]
pub struct ProviderSet {
    providers: BTreeMap<String, Arc<dyn Provider>>,
}

impl ProviderSet {
    /// Adds a provider under its own name.
    pub fn insert(&mut self, provider: Arc<dyn Provider>) {
        self.providers.insert(provider.name().to_owned(), provider);
    }

    /// The provider called `name`.
    pub fn get(&self, name: &str) -> Result<&Arc<dyn Provider>, ProviderError> {
        self.providers
            .get(name)
            .ok_or_else(|| ProviderError::Unknown(name.to_owned()))
    }

    /// Every provider, by name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Arc<dyn Provider>)> {
        self.providers.iter().map(|(n, p)| (n.as_str(), p))
    }
}

/// What is really there for one project: every instance tagged with it, from every
/// provider, by provider name, each list sorted by id.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Observed {
    /// The project; instances of other projects are never added.
    pub project: String,
    /// Instances by provider name.
    pub by_provider: BTreeMap<String, Vec<ObservedInstance>>,
}

impl Observed {
    /// A fingerprint of the observed state, used to refuse a stale saved plan.
    pub fn fingerprint(&self) -> String {
        let value = serde_json::to_value(&self.by_provider).unwrap_or(serde_json::Value::Null);
        sha256_hex(canonical_json(&value).as_bytes())
    }

    /// An empty observed state of `project`.
    pub fn new(project: &str) -> Observed {
        Observed {
            project: project.to_owned(),
            by_provider: BTreeMap::new(),
        }
    }

    /// Builds the observed state of `project` from instances of one provider.
    pub fn from_instances(
        project: &str,
        provider: &str,
        instances: Vec<ObservedInstance>,
    ) -> Observed {
        let mut observed = Observed::new(project);
        observed.add(provider, instances);
        observed
    }

    /// Adds the instances of `provider` that are tagged with this project, keeping each list
    /// sorted by id.
    pub fn add(&mut self, provider: &str, instances: Vec<ObservedInstance>) {
        let list = self.by_provider.entry(provider.to_owned()).or_default();
        list.extend(
            instances
                .into_iter()
                .filter(|i| i.tags.project == self.project),
        );
        list.sort_by(|a, b| a.id.cmp(&b.id));
    }

    /// Every instance with its provider's name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &ObservedInstance)> {
        self.by_provider
            .iter()
            .flat_map(|(p, list)| list.iter().map(move |i| (p.as_str(), i)))
    }

    /// How many instances there are.
    pub fn len(&self) -> usize {
        self.by_provider.values().map(Vec::len).sum()
    }

    /// True when no provider reports an instance.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Checks every group's provider settings, then describes the project in every provider.
/// Providers the spec does not use are asked too, so instances of removed groups are found,
/// but their failures are not errors.
pub async fn observe(spec: &Spec, providers: &ProviderSet) -> Result<Observed, ProviderError> {
    for group in &spec.groups {
        providers
            .get(&group.provider.kind)?
            .validate(&group.provider.props)?;
    }
    let selector = Selector {
        project: spec.project.clone(),
    };
    let mut observed = Observed::new(&spec.project);
    for (name, provider) in providers.iter() {
        let used = spec.groups.iter().any(|g| g.provider.kind == name);
        match provider.describe(&selector).await {
            Ok(instances) => observed.add(name, instances),
            Err(e) if used => return Err(e),
            // A provider the spec does not use is asked only to find instances of removed
            // groups; if it is not there (no Docker engine, say), there are none to find.
            Err(_) => {}
        }
    }
    Ok(observed)
}
