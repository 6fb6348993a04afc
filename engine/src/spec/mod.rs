//! The data model of a spec: groups, allocations, flavors, health checks and update policies.
//!
//! Everything here is plain serde data. Front ends (`lang`) build it; the graph, the planner
//! and the providers read it. Per-field checks live in [`validate`], so every front end
//! rejects the same things with the same words.

mod duration;
mod hash;
mod resources;
mod slot;
pub mod validate;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::diagnostic::SourceLocation;

pub use duration::Duration;
pub use hash::{canonical_json, sha256_hex, SpecHash};
pub use resources::{check_cpu, check_pids, parse_memory, ResourceError, Resources};
pub use slot::Slot;

/// Errors in the model itself: values that no spec may hold.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    /// A duration string that does not parse.
    #[error("invalid duration {0:?}: write a whole number and a unit, such as \"2s\", \"5m\", \"1m30s\" or \"250ms\"")]
    BadDuration(String),
    /// A group name that is not a DNS label.
    #[error("invalid group name {0:?}: use 1 to 63 lowercase letters, digits and '-', starting with a letter and not ending with '-'")]
    BadGroupName(String),
    /// A project name that is not a DNS label.
    #[error("invalid project name {0:?}: use 1 to 63 lowercase letters, digits and '-', starting with a letter and not ending with '-'")]
    BadProjectName(String),
    /// Both or neither of `size` and `ids`.
    #[error("group {0:?} needs exactly one of `size` or `ids`")]
    AllocationChoice(String),
    /// A negative size.
    #[error("size must not be negative, got {0}")]
    NegativeSize(i64),
    /// A size beyond what tend manages in one group.
    #[error("size {0} is too large: a group holds at most {max} instances", max = MAX_GROUP_SIZE)]
    SizeTooLarge(i64),
    /// An `ids` entry that repeats.
    #[error("duplicate id {0:?} in `ids`")]
    DuplicateId(String),
    /// An `ids` entry that is not a usable identity.
    #[error("invalid id {0:?}: use 1 to 63 letters, digits, '-' or '_'")]
    BadId(String),
    /// A plugin named like a built-in provider.
    #[error("plugin name {0:?} is taken by a built-in provider; name the plugin otherwise")]
    PluginNameTaken(String),
    /// A plugin name that is not a DNS label.
    #[error("plugin name {0:?} must be lowercase letters, digits and '-' (at most 63), starting with a letter or digit")]
    BadPluginName(String),
    /// Two groups naming one plugin differently.
    #[error("groups {first:?} and {second:?} both use plugin {name:?}, with different commands or configs: give one of them another name")]
    PluginTwice {
        /// The plugin's name.
        name: String,
        /// The group that named it first.
        first: String,
        /// The other group.
        second: String,
    },
    /// Two groups with one name.
    #[error("duplicate group {0:?}: group names must be unique in a project")]
    DuplicateGroup(String),
    /// A `depends_on` entry naming no group.
    #[error("group {group:?} depends on {missing:?}, which is not a group in this spec")]
    UnknownDependency {
        /// The group that has the dependency.
        group: String,
        /// The name it refers to.
        missing: String,
    },
    /// A template that reads `groups.X` when there is no group X.
    #[error(
        "group {group:?} reads groups.{missing} in a template, but there is no group {missing:?}"
    )]
    UnknownGroupRead {
        /// The group whose template reads it.
        group: String,
        /// The name read.
        missing: String,
    },
    /// A group that depends on itself.
    #[error("group {0:?} depends on itself")]
    SelfDependency(String),
    /// A rolling policy that could never make progress.
    #[error("rolling update needs max_unavailable or max_surge above 0")]
    RollingStuck,
    /// A port outside 1..=65535.
    #[error("port {0} is out of range 1..65535")]
    BadPort(i64),
    /// A health failure threshold of zero.
    #[error("health `failures` must be at least 1")]
    ZeroFailures,
    /// An `on_failure` value that is not known.
    #[error("on_failure must be \"pause\" or \"rollback\", got {0:?}")]
    BadOnFailure(String),
    /// An environment variable name that is not one.
    #[error("invalid environment variable name {0:?}")]
    BadEnvName(String),
    /// A port name that is not a short lowercase word.
    #[error("invalid port name {0:?}: use 1 to 32 lowercase letters, digits and '_', starting with a letter")]
    BadPortName(String),
    /// A template reads a port the flavor does not declare.
    #[error("a template reads instance.ports.{0}, but the flavor declares no port {0:?}: add ports = [\"{0}\"] to the flavor")]
    UndeclaredPort(String),
    /// A port range that is empty or outside the unprivileged ports.
    #[error("invalid port range {0:?}: write \"FIRST-LAST\" with 1024 <= FIRST <= LAST <= 65535, such as \"20000-32767\"")]
    BadPortRange(String),
    /// Surge with an address that depends on the slot alone.
    #[error("group {group:?} has max_surge = {surge}, but its health check reaches {what}, which depends only on the slot: a surge instance and the one it replaces would need the same port at once. Give each instance a port of its own: ports = [\"http\"] in the flavor, {{{{ instance.ports.http }}}} where the program takes its port, and http(port = \"http\")")]
    SurgeOnSlotPort {
        /// The group.
        group: String,
        /// Its max_surge.
        surge: u32,
        /// What the check reaches, such as `port 8000`.
        what: String,
    },
    /// A balancer address that is not `127.0.0.1:PORT` or `[::1]:PORT` style.
    #[error("invalid balancer address {0:?}: write HOST:PORT, such as \"127.0.0.1:8000\"")]
    BadListen(String),
    /// Two groups exposed on one address.
    #[error("groups {first:?} and {second:?} are both exposed on {listen}")]
    SharedListen {
        /// The first group.
        first: String,
        /// The second group.
        second: String,
        /// The address.
        listen: String,
    },
}

/// The largest `size` of one group.
pub const MAX_GROUP_SIZE: i64 = 100_000;

/// A whole spec: one project and its groups, in the order they were declared.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Spec {
    /// The project every instance is tagged with; projects never touch each other.
    pub project: String,
    /// Where instance ports are allocated from, when the spec says (`project(ports = ...)`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ports: Option<PortRange>,
    /// The groups, in declaration order.
    pub groups: Vec<Group>,
}

impl Spec {
    /// The group called `name`, if any.
    pub fn group(&self, name: &str) -> Option<&Group> {
        self.groups.iter().find(|g| g.name == name)
    }

    /// A fingerprint of the whole spec (everything but source locations), used to bind
    /// saved plans to the spec they were made from.
    pub fn fingerprint(&self) -> String {
        let value = serde_json::to_value(self).unwrap_or(serde_json::Value::Null);
        sha256_hex(canonical_json(&value).as_bytes())
    }
}

/// A named set of instances kept at an allocation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Group {
    /// The group's name, a DNS label unique in the project.
    pub name: String,
    /// How many instances, or which identities.
    pub allocation: Allocation,
    /// How an instance comes to exist.
    pub provider: ProviderSpec,
    /// What an instance runs and how it is judged.
    pub flavor: Flavor,
    /// Groups that must be healthy before this one's instances are created.
    #[serde(default)]
    pub depends_on: Vec<String>,
    /// Groups whose addresses this group's templates read (`groups.X`): implicit dependencies.
    #[serde(default)]
    pub reads_groups: Vec<String>,
    /// How outdated instances are replaced.
    pub update: UpdatePolicy,
    /// A balancer in front of the group, under `tend run`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expose: Option<Expose>,
    /// Where the group was declared, for error messages; not part of any hash.
    #[serde(skip)]
    pub origin: Option<SourceLocation>,
}

impl Group {
    /// The slots this group's allocation asks for, in order.
    pub fn slots(&self) -> Vec<Slot> {
        self.allocation.slots()
    }

    /// Every group this one waits for: explicit `depends_on` and implicit `groups.X` reads.
    pub fn dependencies(&self) -> impl Iterator<Item = &str> {
        self.depends_on
            .iter()
            .chain(self.reads_groups.iter())
            .map(String::as_str)
    }

    /// What the group's instances are made from: the part of the group its spec hash covers.
    pub fn template(&self) -> Template {
        Template {
            provider: self.provider.clone(),
            flavor: self.flavor.clone(),
            reads_groups: self.reads_groups.clone(),
        }
    }

    /// The group with its instances made from `template` instead (a rollback, or healing
    /// an instance at the hash it had).
    pub fn with_template(&self, template: &Template) -> Group {
        Group {
            provider: template.provider.clone(),
            flavor: template.flavor.clone(),
            reads_groups: template.reads_groups.clone(),
            ..self.clone()
        }
    }
}

/// A group's instance template: provider and flavor (what the spec hash covers), and the
/// groups its templates read.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Template {
    /// How an instance comes to exist.
    pub provider: ProviderSpec,
    /// What an instance runs and how it is judged.
    pub flavor: Flavor,
    /// Groups the flavor's templates read.
    #[serde(default)]
    pub reads_groups: Vec<String>,
}

/// A group's allocation: interchangeable numbered slots, or fixed identities.
///
/// Read back (from the store, a saved plan), a size is held to [`MAX_GROUP_SIZE`] as a
/// spec's is: a damaged file naming four billion slots is an error, not four billion slots.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", try_from = "StoredAllocation")]
pub enum Allocation {
    /// `size = N`: slots `0..N-1`.
    Size(u32),
    /// `ids = [...]`: one slot per identity, for quorum members.
    Ids(Vec<String>),
}

/// An [`Allocation`] as written, before its size is checked.
#[derive(Deserialize)]
#[serde(rename_all = "snake_case")]
enum StoredAllocation {
    Size(u32),
    Ids(Vec<String>),
}

impl TryFrom<StoredAllocation> for Allocation {
    type Error = SpecError;

    fn try_from(stored: StoredAllocation) -> Result<Self, Self::Error> {
        match stored {
            StoredAllocation::Size(n) if i64::from(n) > MAX_GROUP_SIZE => {
                Err(SpecError::SizeTooLarge(i64::from(n)))
            }
            StoredAllocation::Size(n) => Ok(Allocation::Size(n)),
            StoredAllocation::Ids(ids) => Ok(Allocation::Ids(ids)),
        }
    }
}

impl Allocation {
    /// The allocated slots, in order.
    pub fn slots(&self) -> Vec<Slot> {
        match self {
            Allocation::Size(n) => (0..*n).map(Slot::Index).collect(),
            Allocation::Ids(ids) => ids.iter().cloned().map(Slot::Id).collect(),
        }
    }

    /// How many instances the allocation asks for.
    pub fn len(&self) -> usize {
        match self {
            Allocation::Size(n) => *n as usize,
            Allocation::Ids(ids) => ids.len(),
        }
    }

    /// True when the allocation asks for no instance.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether `slot` is one of the allocated slots.
    pub fn contains(&self, slot: &Slot) -> bool {
        match (self, slot) {
            (Allocation::Size(n), Slot::Index(i)) => i < n,
            (Allocation::Ids(ids), Slot::Id(id)) => ids.iter().any(|x| x == id),
            _ => false,
        }
    }

    /// Reads a slot as written in a `tend.slot` tag, in this allocation's kind.
    pub fn parse_slot(&self, text: &str) -> Slot {
        match self {
            Allocation::Size(_) => text
                .parse()
                .map(Slot::Index)
                .unwrap_or_else(|_| Slot::Id(text.to_owned())),
            Allocation::Ids(_) => Slot::Id(text.to_owned()),
        }
    }
}

/// Which provider makes a group's instances, and its settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProviderSpec {
    /// The provider's name: `process`, `docker`, `sim`, ...
    pub kind: String,
    /// Provider-specific settings, checked by the provider's `validate`.
    #[serde(default)]
    pub props: BTreeMap<String, serde_json::Value>,
}

/// What an instance runs and how to judge it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Flavor {
    /// The program and its arguments (templates).
    #[serde(default)]
    pub command: Vec<String>,
    /// Environment variables (templates, or secrets read at apply time).
    #[serde(default)]
    pub env: BTreeMap<String, EnvValue>,
    /// Files written for the instance: path to content (templates).
    #[serde(default)]
    pub files: BTreeMap<String, String>,
    /// Files whose content is a secret, by path: written to memory (tmpfs) and mounted
    /// read-only, never onto disk nor into a container's configuration.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub secret_files: BTreeMap<String, SecretRef>,
    /// Extra labels carried by the instance in its provider.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// The working folder (template).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workdir: Option<String>,
    /// How to tell a healthy instance from a sick one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<Health>,
    /// What to run before an instance is stopped, and how long to wait.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drain: Option<Drain>,
    /// Limits on what the instance may use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<Resources>,
    /// Named ports: each instance gets a free port of its own for each.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<String>,
}

impl Flavor {
    /// Every port an instance of this flavor gets, the address port first: the health
    /// check's named port, then the declared ones.
    pub fn port_names(&self) -> Vec<String> {
        let mut names: Vec<String> = Vec::new();
        if let Some(Probe::Http {
            port: PortValue::Named(p),
            ..
        })
        | Some(Probe::Tcp {
            port: PortValue::Named(p),
        }) = self.health.as_ref().map(|h| &h.probe)
        {
            names.push(p.name.clone());
        }
        for name in &self.ports {
            if !names.contains(name) {
                names.push(name.clone());
            }
        }
        names
    }
}

/// The value of an environment variable.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum EnvValue {
    /// A template rendered per instance.
    Plain(String),
    /// A secret read from tend's own environment at apply time; only its name is stored.
    Secret {
        /// The environment variable that holds the secret.
        secret: String,
    },
}

/// A secret by name: read from tend's environment at apply time, never stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretRef {
    /// The environment variable that holds it.
    pub secret: String,
}

/// A health check and its timing.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Health {
    /// What is probed.
    pub probe: Probe,
    /// How long after start failures are not counted.
    pub grace_period: Duration,
    /// Time between probes.
    pub interval: Duration,
    /// How long one probe may take.
    pub timeout: Duration,
    /// Consecutive failures that make an instance unhealthy.
    pub failures: u32,
}

/// One kind of health probe.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Probe {
    /// An HTTP GET on 127.0.0.1 that must answer 2xx or 3xx.
    Http {
        /// The port (a number or a template).
        port: PortValue,
        /// The path requested.
        path: String,
    },
    /// A TCP connect that must succeed.
    Tcp {
        /// The port (a number or a template).
        port: PortValue,
    },
    /// A command that must exit 0.
    Exec {
        /// The program and its arguments (templates).
        command: Vec<String>,
    },
}

/// A port: a number, or a template rendered per instance such as `"{{ 8000 + instance.index }}"`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum PortValue {
    /// A fixed port.
    Number(u16),
    /// One of the instance's own ports, by name (`port("http")`).
    Named(NamedPort),
    /// A template that renders to a port.
    Template(String),
}

/// A port of the instance's own, by name.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NamedPort {
    /// The port's name, as in `instance.ports.<name>`.
    pub name: String,
}

/// A range of ports instance ports are allocated from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortRange {
    /// The first port of the range.
    pub first: u16,
    /// The last port of the range (included).
    pub last: u16,
}

impl Default for PortRange {
    fn default() -> Self {
        PortRange {
            first: 20000,
            last: 32767,
        }
    }
}

impl std::str::FromStr for PortRange {
    type Err = SpecError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = || SpecError::BadPortRange(text.to_owned());
        let (first, last) = text.split_once('-').ok_or_else(bad)?;
        let first: u16 = first.trim().parse().map_err(|_| bad())?;
        let last: u16 = last.trim().parse().map_err(|_| bad())?;
        if first < 1024 || first > last {
            return Err(bad());
        }
        Ok(PortRange { first, last })
    }
}

impl std::fmt::Display for PortRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.first, self.last)
    }
}

/// A TCP balancer in front of a group (`expose = balancer(...)`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Expose {
    /// Where it accepts connections, such as `127.0.0.1:8000`.
    pub listen: String,
    /// Which of the instance's ports it forwards to; the instance's address when `None`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// How it picks an instance for a new connection.
    pub strategy: Strategy,
    /// How long an instance leaving the group keeps its open connections before it stops.
    pub drain_timeout: Duration,
}

/// How a balancer picks an instance for a new connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// In turn.
    RoundRobin,
    /// The one with the fewest open connections.
    LeastConnections,
}

/// How an instance is drained before it is stopped.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Drain {
    /// A command run before the stop signal, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    /// How long to wait after the stop signal before killing.
    pub timeout: Duration,
}

/// How a group's outdated instances are replaced.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum UpdatePolicy {
    /// Replace in batches, keeping most instances serving.
    Rolling(Rolling),
    /// Destroy every outdated instance, then create the new ones.
    Recreate,
}

impl Default for UpdatePolicy {
    fn default() -> Self {
        UpdatePolicy::Rolling(Rolling::default())
    }
}

/// Settings of a rolling update.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Rolling {
    /// How many instances may be down at once during the update.
    pub max_unavailable: u32,
    /// How many extra instances may exist at once during the update.
    pub max_surge: u32,
    /// How long a new instance must stay healthy before the next batch starts.
    pub min_ready: Duration,
    /// How long a new instance may take to turn healthy before the batch fails.
    pub health_timeout: Duration,
    /// What a failed batch does: stop there, or put the old instances back.
    pub on_failure: OnFailure,
}

impl Default for Rolling {
    fn default() -> Self {
        Rolling {
            max_unavailable: 1,
            max_surge: 0,
            min_ready: Duration::from_secs(0),
            health_timeout: Duration::from_secs(300),
            on_failure: OnFailure::Pause,
        }
    }
}

/// What a rolling update does when a batch fails.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnFailure {
    /// Stop the rollout where it is.
    Pause,
    /// Put the previous version back.
    Rollback,
}

impl std::str::FromStr for OnFailure {
    type Err = SpecError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "pause" => Ok(OnFailure::Pause),
            "rollback" => Ok(OnFailure::Rollback),
            other => Err(SpecError::BadOnFailure(other.to_owned())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stored_size_is_held_to_what_a_spec_may_ask() {
        let read = |text: &str| serde_json::from_str::<Allocation>(text).map_err(|e| e.to_string());
        assert_eq!(read(r#"{"size": 3}"#), Ok(Allocation::Size(3)));
        assert_eq!(
            read(r#"{"ids": ["a"]}"#),
            Ok(Allocation::Ids(vec!["a".into()]))
        );
        let huge = read(r#"{"size": 4294967295}"#).err().unwrap_or_default();
        assert!(huge.contains("too large"), "{huge}");
        let text = serde_json::to_string(&Allocation::Size(100_000)).unwrap_or_default();
        assert_eq!(read(&text), Ok(Allocation::Size(100_000)));
    }
}
