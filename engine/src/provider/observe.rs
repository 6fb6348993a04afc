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

/// What is really there for one project: every instance, from every provider, with its
/// provider's name.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Observed {
    /// Instances, sorted by provider and id.
    pub instances: Vec<(String, ObservedInstance)>,
}

impl Observed {
    /// A fingerprint of the observed state, used to refuse a stale saved plan.
    pub fn fingerprint(&self) -> String {
        let value = serde_json::to_value(&self.instances).unwrap_or(serde_json::Value::Null);
        sha256_hex(canonical_json(&value).as_bytes())
    }

    /// Builds an observed state from instances of one provider.
    pub fn from_instances(provider: &str, instances: Vec<ObservedInstance>) -> Observed {
        let mut all: Vec<(String, ObservedInstance)> = instances
            .into_iter()
            .map(|i| (provider.to_owned(), i))
            .collect();
        all.sort_by(|a, b| (&a.0, &a.1.id).cmp(&(&b.0, &b.1.id)));
        Observed { instances: all }
    }
}

/// Checks every group's provider settings, then describes the project in every provider.
/// Providers the spec does not use are asked too, so instances of removed groups are found.
pub async fn observe(spec: &Spec, providers: &ProviderSet) -> Result<Observed, ProviderError> {
    for group in &spec.groups {
        providers
            .get(&group.provider.kind)?
            .validate(&group.provider.props)?;
    }
    let selector = Selector {
        project: spec.project.clone(),
    };
    let mut instances = Vec::new();
    for (name, provider) in providers.iter() {
        for instance in provider.describe(&selector).await? {
            instances.push((name.to_owned(), instance));
        }
    }
    instances.sort_by(|a, b| (&a.0, &a.1.id).cmp(&(&b.0, &b.1.id)));
    Ok(Observed { instances })
}
