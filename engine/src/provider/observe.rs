//! Reading the observed state of a project from every provider it may use.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use serde::{Deserialize, Serialize};

use super::{ObservedInstance, Provider, ProviderError, Selector};
use crate::spec::{canonical_json, sha256_hex, Spec};

/// Puts a provider inside another (a fence, say).
pub type Wrap = Arc<dyn Fn(Arc<dyn Provider>) -> Arc<dyn Provider> + Send + Sync>;

/// Makes the providers a spec names that are not built in (plugins), when a set meets a
/// spec it did not start with: one that `tend run` adopts, say.
pub trait ProviderFactory: Send + Sync {
    /// A provider for groups of `kind` with these settings, when this factory makes one.
    fn make(
        &self,
        kind: &str,
        props: &BTreeMap<String, serde_json::Value>,
    ) -> Option<Arc<dyn Provider>>;
}

/// The providers of this tend, by name: those it was made with, and those its factory made
/// for the specs it learned since (shared by every clone of the set).
#[derive(Clone, Default)]
pub struct ProviderSet {
    providers: BTreeMap<String, Arc<dyn Provider>>,
    learned: Option<Arc<Learned>>,
}

/// What a set's factory made.
struct Learned {
    factory: Arc<dyn ProviderFactory>,
    made: RwLock<BTreeMap<String, Arc<dyn Provider>>>,
}

impl ProviderSet {
    /// Adds a provider under its own name.
    pub fn insert(&mut self, provider: Arc<dyn Provider>) {
        self.providers.insert(provider.name().to_owned(), provider);
    }

    /// The set, making the providers of specs it learns with `factory`.
    pub fn with_factory(mut self, factory: Arc<dyn ProviderFactory>) -> ProviderSet {
        self.learned = Some(Arc::new(Learned {
            factory,
            made: RwLock::default(),
        }));
        self
    }

    /// Makes, with the set's factory, a provider for each group of `spec` whose provider
    /// the set does not have yet.
    pub fn learn(&self, spec: &Spec) {
        for group in &spec.groups {
            self.learn_one(&group.provider.kind, &group.provider.props);
        }
    }

    fn learn_one(&self, kind: &str, props: &BTreeMap<String, serde_json::Value>) {
        let Some(learned) = &self.learned else {
            return;
        };
        if self.get(kind).is_ok() {
            return;
        }
        if let Some(made) = learned.factory.make(kind, props) {
            if let Ok(mut all) = learned.made.write() {
                all.entry(kind.to_owned()).or_insert(made);
            }
        }
    }

    /// The provider called `name`.
    pub fn get(&self, name: &str) -> Result<Arc<dyn Provider>, ProviderError> {
        if let Some(provider) = self.providers.get(name) {
            return Ok(provider.clone());
        }
        self.learned
            .as_ref()
            .and_then(|l| l.made.read().ok()?.get(name).cloned())
            .ok_or_else(|| ProviderError::Unknown(name.to_owned()))
    }

    /// Every provider, by name.
    pub fn all(&self) -> Vec<(String, Arc<dyn Provider>)> {
        let mut all: Vec<(String, Arc<dyn Provider>)> = self
            .providers
            .iter()
            .map(|(n, p)| (n.clone(), p.clone()))
            .collect();
        if let Some(made) = self.learned.as_ref().and_then(|l| l.made.read().ok()) {
            all.extend(made.iter().map(|(n, p)| (n.clone(), p.clone())));
        }
        all
    }

    /// `wrap` around every provider, those made later by the factory too; what they wrap
    /// is shared with this set (a plugin learned through either runs once).
    pub fn wrapped(&self, wrap: Wrap) -> ProviderSet {
        let mut set = ProviderSet::default();
        for (_, provider) in self.all() {
            set.insert(wrap(provider));
        }
        if self.learned.is_some() {
            set = set.with_factory(Arc::new(Wrapping {
                inner: self.clone(),
                wrap,
            }));
        }
        set
    }

    /// Closes every provider (a plugin's process ends by its shutdown sequence), one
    /// after another; instances stay as they are.
    pub async fn close(&self) {
        for (_, provider) in self.all() {
            provider.close().await;
        }
    }
}

/// The factory of a wrapped set: learns through the set it wraps, then wraps.
struct Wrapping {
    inner: ProviderSet,
    wrap: Wrap,
}

impl ProviderFactory for Wrapping {
    fn make(
        &self,
        kind: &str,
        props: &BTreeMap<String, serde_json::Value>,
    ) -> Option<Arc<dyn Provider>> {
        self.inner.learn_one(kind, props);
        self.inner.get(kind).ok().map(|p| (self.wrap)(p))
    }
}

/// What is really there for one project: every instance tagged with it, from every
/// provider, by provider name, each list sorted by id; and the providers that could not be
/// asked, with why.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Observed {
    /// The project; instances of other projects are never added.
    pub project: String,
    /// Instances by provider name.
    pub by_provider: BTreeMap<String, Vec<ObservedInstance>>,
    /// Providers that may hold instances of the project but did not answer, with the error.
    /// Nothing may be concluded about their instances: none of them is in `by_provider`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub unobserved: BTreeMap<String, String>,
}

/// A view that misses a provider which may hold instances of the project.
#[derive(Debug, thiserror::Error)]
#[error("cannot observe the {provider} provider, which may hold instances of project {project:?}: {detail}")]
pub struct PartialView {
    /// The provider that did not answer.
    pub provider: String,
    /// The project.
    pub project: String,
    /// Its error.
    pub detail: String,
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
            unobserved: BTreeMap::new(),
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

    /// Every instance, mutably.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = &mut ObservedInstance> {
        self.by_provider
            .values_mut()
            .flat_map(|list| list.iter_mut())
    }

    /// How many instances there are.
    pub fn len(&self) -> usize {
        self.by_provider.values().map(Vec::len).sum()
    }

    /// True when no provider reports an instance.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The view, when every provider that may hold instances answered; otherwise the
    /// first that did not. Commands that print or act on a whole project use this: a
    /// partial view must never read as "no changes".
    pub fn complete(self) -> Result<Observed, PartialView> {
        match self.unobserved.iter().next() {
            None => Ok(self),
            Some((provider, detail)) => Err(PartialView {
                provider: provider.clone(),
                project: self.project.clone(),
                detail: detail.clone(),
            }),
        }
    }
}

/// Checks every group's provider settings, then describes the project in every provider.
///
/// A provider that `spec` or one of the `previous` specs (the last applied ones) uses may
/// hold instances of the project: when it does not answer, it is named in
/// [`Observed::unobserved`]. Other providers are asked too, so instances of long-removed
/// groups are found, but their failures mean nothing (no Docker engine on a machine that
/// never used one, say).
///
/// An instance of the project whose tags a newer tend made ([`crate::format::INSTANCE`])
/// is refused, naming it: nothing may be planned for a project that holds instances this
/// tend cannot read.
pub async fn observe(
    spec: &Spec,
    previous: &[Spec],
    providers: &ProviderSet,
) -> Result<Observed, ProviderError> {
    for group in &spec.groups {
        // A spec may name a provider this set was not made with (a plugin first named by
        // a spec `tend run` adopts): its factory makes it now.
        providers.learn_one(&group.provider.kind, &group.provider.props);
        providers
            .get(&group.provider.kind)?
            .validate(&group.provider.props)?;
    }
    // The settings of the last applied spec name where its instances may be (a Docker
    // engine by its host, say); a provider that no longer exists has nothing to say.
    for group in previous.iter().flat_map(|p| &p.groups) {
        providers.learn_one(&group.provider.kind, &group.provider.props);
        if let Ok(provider) = providers.get(&group.provider.kind) {
            let _ = provider.validate(&group.provider.props);
        }
    }
    let selector = Selector {
        project: spec.project.clone(),
    };
    let mut observed = Observed::new(&spec.project);
    let used = |name: &str| {
        spec.groups
            .iter()
            .chain(previous.iter().flat_map(|p| &p.groups))
            .any(|g| g.provider.kind == name)
    };
    for (name, provider) in providers.all() {
        let name = name.as_str();
        match provider.describe(&selector).await {
            Ok(instances) => match twice(&instances) {
                None => observed.add(name, instances),
                Some(id) if used(name) => {
                    observed.unobserved.insert(
                        name.to_owned(),
                        format!("{name} answered instance {id} twice: one id is one instance"),
                    );
                }
                Some(_) => {}
            },
            // Settings the provider refuses (a plugin's config) are the spec's to fix.
            Err(e) if used(name) && e.fault() == crate::fault::Fault::Spec => return Err(e),
            Err(e) if used(name) => {
                observed.unobserved.insert(name.to_owned(), error_chain(&e));
            }
            Err(_) => {}
        }
    }
    let current: std::collections::BTreeSet<&str> = spec
        .groups
        .iter()
        .map(|g| g.provider.kind.as_str())
        .collect();
    refuse_shared_instances(&mut observed, &current);
    refuse_newer_instances(&observed)?;
    Ok(observed)
}

/// The first instance whose tags are of a format newer than this tend reads, as an error.
fn refuse_newer_instances(observed: &Observed) -> Result<(), ProviderError> {
    for (provider, i) in observed.iter() {
        crate::format::check(
            crate::format::Kind::Instance,
            u64::from(i.tags.format),
            || {
                format!(
                    "instance {} ({}/{} of project {:?}, in the {provider} provider)",
                    i.id, i.tags.group, i.tags.slot, observed.project
                )
            },
        )?;
    }
    Ok(())
}

/// An id listed twice, if one is.
fn twice(instances: &[ObservedInstance]) -> Option<&str> {
    let mut seen = std::collections::BTreeSet::new();
    instances
        .iter()
        .find(|i| !seen.insert(i.id.as_str()))
        .map(|i| i.id.as_str())
}

/// One instance reported by two providers (one backend seen through two plugin names, say)
/// would be planned twice, and destroyed as its own duplicate. When only one of the two is
/// the spec's (the other only a former spec's: a plugin renamed), the instance is the
/// spec's provider's, and the other's report of it is dropped; otherwise neither
/// provider's view is used.
fn refuse_shared_instances(observed: &mut Observed, current: &std::collections::BTreeSet<&str>) {
    let mut owner: BTreeMap<String, String> = BTreeMap::new();
    let mut shared: BTreeMap<String, String> = BTreeMap::new();
    let mut dropped: Vec<(String, String)> = Vec::new();
    for (provider, instance) in observed.iter() {
        let Some(first) = owner.get(&instance.id) else {
            owner.insert(instance.id.clone(), provider.to_owned());
            continue;
        };
        if first == provider {
            continue;
        }
        match (current.contains(first.as_str()), current.contains(provider)) {
            (true, false) => dropped.push((provider.to_owned(), instance.id.clone())),
            (false, true) => dropped.push((first.clone(), instance.id.clone())),
            _ => {
                let why = format!(
                    "providers {first} and {provider} both report instance {}: one backend seen through two providers; keep one name for it",
                    instance.id
                );
                shared.insert(first.clone(), why.clone());
                shared.insert(provider.to_owned(), why);
            }
        }
    }
    for (provider, id) in dropped {
        if let Some(list) = observed.by_provider.get_mut(&provider) {
            list.retain(|i| i.id != id);
        }
    }
    for (provider, why) in shared {
        observed.by_provider.remove(&provider);
        observed.unobserved.entry(provider).or_insert(why);
    }
}

/// An error and its sources on one line.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        let more = inner.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = inner.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use async_trait::async_trait;

    use super::*;
    use crate::provider::{InstanceState, InstanceTags, ProvisionRequest};

    /// A provider that always reports the same instances.
    struct Fixed {
        name: &'static str,
        ids: Vec<&'static str>,
    }

    #[async_trait]
    impl Provider for Fixed {
        fn name(&self) -> &str {
            self.name
        }
        fn validate(&self, _: &BTreeMap<String, serde_json::Value>) -> Result<(), ProviderError> {
            Ok(())
        }
        async fn provision(&self, _: ProvisionRequest) -> Result<String, ProviderError> {
            Ok(String::new())
        }
        async fn destroy(&self, _: &str) -> Result<(), ProviderError> {
            Ok(())
        }
        async fn describe(&self, _: &Selector) -> Result<Vec<ObservedInstance>, ProviderError> {
            Ok(self
                .ids
                .iter()
                .map(|id| ObservedInstance {
                    id: (*id).to_owned(),
                    tags: InstanceTags {
                        project: "p".into(),
                        group: "web".into(),
                        slot: "0".into(),
                        hash: "h".into(),
                        ports: Vec::new(),
                        // An id says the format: `unmarked-*` (tend 0.1.0), `newer-*`.
                        format: if id.starts_with("unmarked") {
                            crate::format::UNMARKED
                        } else if id.starts_with("newer") {
                            crate::format::INSTANCE + 1
                        } else {
                            crate::format::INSTANCE
                        },
                    },
                    labels: BTreeMap::new(),
                    address: None,
                    ports: BTreeMap::new(),
                    state: InstanceState::Running,
                    started_at: 0,
                    ended: None,
                    remains: 0,
                })
                .collect())
        }
    }

    fn spec(source: &str) -> Spec {
        let dir = std::env::temp_dir();
        crate::lang::evaluate_source("main.star", source, &dir, &Default::default()).unwrap()
    }

    fn set(providers: Vec<Fixed>) -> ProviderSet {
        let mut set = ProviderSet::default();
        for p in providers {
            set.insert(Arc::new(p));
        }
        set
    }

    #[tokio::test]
    async fn one_id_listed_twice_leaves_its_provider_unobserved() {
        let spec = spec(
            "project(name = \"p\")\ngroup(name = \"web\", size = 1, provider = sim(), flavor = flavor(command = [\"x\"]))\n",
        );
        let providers = set(vec![Fixed {
            name: "sim",
            ids: vec!["a", "a"],
        }]);
        let observed = observe(&spec, &[], &providers).await.unwrap();
        assert!(observed.by_provider.is_empty());
        assert!(observed.unobserved["sim"].contains("instance a twice"));
    }

    #[tokio::test]
    async fn an_instance_a_former_providers_name_also_reports_is_the_current_ones() {
        // The spec's groups use `process`; the last applied spec used `sim` (renamed).
        let current = spec(
            "project(name = \"p\")\ngroup(name = \"web\", size = 1, provider = process(), flavor = flavor(command = [\"x\"]))\n",
        );
        let former = spec(
            "project(name = \"p\")\ngroup(name = \"web\", size = 1, provider = sim(), flavor = flavor(command = [\"x\"]))\n",
        );
        let providers = set(vec![
            Fixed {
                name: "sim",
                ids: vec!["a", "b"],
            },
            Fixed {
                name: "process",
                ids: vec!["b"],
            },
        ]);
        let observed = observe(&current, &[former], &providers).await.unwrap();
        assert!(observed.unobserved.is_empty(), "{:?}", observed.unobserved);
        let ids = |p: &str| -> Vec<String> {
            observed.by_provider[p]
                .iter()
                .map(|i| i.id.clone())
                .collect()
        };
        assert_eq!(ids("process"), ["b"]);
        assert_eq!(ids("sim"), ["a"]);
    }

    #[tokio::test]
    async fn one_instance_reported_by_two_providers_leaves_both_unobserved() {
        let spec = spec(
            "project(name = \"p\")\ngroup(name = \"web\", size = 1, provider = sim(), flavor = flavor(command = [\"x\"]))\ngroup(name = \"db\", size = 1, provider = process(), flavor = flavor(command = [\"x\"]))\n",
        );
        let providers = set(vec![
            Fixed {
                name: "sim",
                ids: vec!["a", "b"],
            },
            Fixed {
                name: "process",
                ids: vec!["b"],
            },
        ]);
        let observed = observe(&spec, &[], &providers).await.unwrap();
        assert!(
            observed.by_provider.is_empty(),
            "{:?}",
            observed.by_provider
        );
        for provider in ["sim", "process"] {
            assert!(
                observed.unobserved[provider].contains("both report instance b"),
                "{:?}",
                observed.unobserved
            );
        }
    }

    #[tokio::test]
    async fn instances_without_a_format_are_kept_and_one_of_a_newer_format_refuses_the_project() {
        let spec = spec(
            "project(name = \"p\")\ngroup(name = \"web\", size = 1, provider = sim(), flavor = flavor(command = [\"x\"]))\n",
        );
        let providers = set(vec![Fixed {
            name: "sim",
            ids: vec!["unmarked-a", "b"],
        }]);
        let observed = observe(&spec, &[], &providers).await.unwrap();
        let formats: Vec<u32> = observed.iter().map(|(_, i)| i.tags.format).collect();
        assert_eq!(formats, [crate::format::INSTANCE, crate::format::UNMARKED]);
        // Even from a provider no spec uses, and in a group no spec has: never an orphan.
        let providers = set(vec![
            Fixed {
                name: "sim",
                ids: vec!["b"],
            },
            Fixed {
                name: "docker",
                ids: vec!["unmarked-a", "newer-c"],
            },
        ]);
        let refused = observe(&spec, &[], &providers).await.err();
        let Some(ProviderError::NewerFormat(newer)) = &refused else {
            panic!("not refused: {refused:?}");
        };
        assert_eq!(newer.found, u64::from(crate::format::INSTANCE + 1));
        assert!(
            newer
                .to_string()
                .starts_with("instance newer-c (web/0 of project \"p\", in the docker provider) was made by a newer tend"),
            "{newer}"
        );
    }
}
