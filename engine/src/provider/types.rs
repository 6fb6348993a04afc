//! The data that crosses the provider boundary.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::spec::Slot;

/// Key/value labels carried by every instance in its provider.
pub type Tags = BTreeMap<String, String>;

/// The tag keys every instance carries.
pub mod tags {
    /// The project the instance belongs to.
    pub const PROJECT: &str = "tend.project";
    /// Its group.
    pub const GROUP: &str = "tend.group";
    /// Its slot in the group's allocation.
    pub const SLOT: &str = "tend.slot";
    /// The spec hash it was created from.
    pub const HASH: &str = "tend.hash";
    /// Its own ports, `name=port` separated by `,`, the address port first.
    pub const PORTS: &str = "tend.ports";
    /// A label, not a tag: the idempotency key of the provision that made it. A provider
    /// asked to make an instance with a key it already made one for returns that one.
    pub const KEY: &str = "tend.key";
}

/// The `tend.*` tags of an instance, typed. Every instance carries all four in its
/// provider (docker labels, process environment, sim records).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct InstanceTags {
    /// `tend.project`
    pub project: String,
    /// `tend.group`
    pub group: String,
    /// `tend.slot`
    pub slot: String,
    /// `tend.hash`
    pub hash: String,
    /// `tend.ports`: the instance's own ports by name, the address port first (empty when
    /// its flavor names none).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<(String, u16)>,
}

impl InstanceTags {
    /// The tags as key/value pairs, for providers that store labels.
    pub fn to_map(&self) -> Tags {
        let mut map: Tags = [
            (tags::PROJECT, &self.project),
            (tags::GROUP, &self.group),
            (tags::SLOT, &self.slot),
            (tags::HASH, &self.hash),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.clone()))
        .collect();
        if !self.ports.is_empty() {
            map.insert(tags::PORTS.to_owned(), self.ports_text());
        }
        map
    }

    /// The `tend.ports` tag value: `http=20001,metrics=20002`.
    pub fn ports_text(&self) -> String {
        self.ports
            .iter()
            .map(|(name, port)| format!("{name}={port}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Reads a `tend.ports` tag value; what does not parse is left out.
    pub fn parse_ports(text: &str) -> Vec<(String, u16)> {
        text.split(',')
            .filter_map(|pair| {
                let (name, port) = pair.split_once('=')?;
                Some((name.trim().to_owned(), port.trim().parse().ok()?))
            })
            .collect()
    }

    /// The instance's own ports by name, as a map.
    pub fn port_map(&self) -> BTreeMap<String, u16> {
        self.ports.iter().cloned().collect()
    }

    /// The first tag that is empty, if any: no instance may be created without all four.
    pub fn missing(&self) -> Option<&'static str> {
        [
            (tags::PROJECT, &self.project),
            (tags::GROUP, &self.group),
            (tags::SLOT, &self.slot),
            (tags::HASH, &self.hash),
        ]
        .into_iter()
        .find(|(_, v)| v.is_empty())
        .map(|(k, _)| k)
    }

    /// Reads the tags back from key/value pairs; a missing tag reads as empty.
    pub fn from_map(map: &Tags) -> InstanceTags {
        let get = |key: &str| map.get(key).cloned().unwrap_or_default();
        InstanceTags {
            project: get(tags::PROJECT),
            group: get(tags::GROUP),
            slot: get(tags::SLOT),
            hash: get(tags::HASH),
            ports: map
                .get(tags::PORTS)
                .map(|t| InstanceTags::parse_ports(t))
                .unwrap_or_default(),
        }
    }
}

/// Which instances to describe: those tagged with one project.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Selector {
    /// The `tend.project` tag value.
    pub project: String,
}

/// How an observed instance is doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InstanceState {
    /// Running, and healthy or not yet judged.
    Running,
    /// Started, within its grace period.
    Starting,
    /// Running, but failed its health check past the failure threshold.
    Unhealthy,
    /// Exited or gone; only its record remains.
    Dead,
}

impl InstanceState {
    /// True when the instance still exists as a running thing.
    pub fn is_live(self) -> bool {
        !matches!(self, InstanceState::Dead)
    }
}

/// One instance as a provider reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObservedInstance {
    /// The provider's id for it.
    pub id: String,
    /// Its `tend.*` tags.
    pub tags: InstanceTags,
    /// Any other labels it carries.
    #[serde(default, skip_serializing_if = "Tags::is_empty")]
    pub labels: Tags,
    /// Where it is reached, such as `127.0.0.1:8000`, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// Its own ports as reached on 127.0.0.1, by name: the ports of its tags, or, for a
    /// container, the host ports they are published on.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub ports: BTreeMap<String, u16>,
    /// How it is doing.
    pub state: InstanceState,
    /// When it started, in milliseconds since the Unix epoch.
    pub started_at: u64,
    /// Why a dead instance ended, when the provider knows: `oom` for one killed for going
    /// over its memory limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended: Option<String>,
    /// Processes of a dead instance that still run: what it left behind, which the next
    /// heal or destroy stops.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub remains: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// Everything a provider needs to create one instance, already rendered.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProvisionRequest {
    /// The group the instance belongs to.
    pub group: String,
    /// Its slot.
    pub slot: Slot,
    /// Tags to set atomically at creation.
    pub tags: InstanceTags,
    /// Extra labels from the flavor.
    pub labels: Tags,
    /// The group's provider settings.
    pub props: BTreeMap<String, serde_json::Value>,
    /// The program and its arguments.
    pub command: Vec<String>,
    /// Environment variables (secrets resolved; never persisted by tend).
    pub env: BTreeMap<String, String>,
    /// Files to write for the instance: path to content.
    pub files: BTreeMap<String, String>,
    /// Files whose content is a secret: path to content. Never serialized: providers keep
    /// them in memory (tmpfs) and mount them read-only.
    #[serde(skip)]
    pub secret_files: BTreeMap<String, String>,
    /// The working folder, if any.
    pub workdir: Option<String>,
    /// Where the instance will be reached, when the flavor says (from its health port).
    pub address: Option<String>,
    /// How long a stop may take before the instance is killed.
    pub stop_timeout: crate::spec::Duration,
    /// Limits on what the instance may use; a provider that cannot enforce one refuses
    /// the request rather than run without it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<crate::spec::Resources>,
}

impl ProvisionRequest {
    /// A request for an instance with its identity and nothing else (no command, files or
    /// settings; a one-second stop timeout), for providers that need no more, such as `sim`.
    pub fn bare(slot: Slot, tags: InstanceTags) -> ProvisionRequest {
        ProvisionRequest {
            group: tags.group.clone(),
            slot,
            tags,
            labels: BTreeMap::new(),
            props: BTreeMap::new(),
            command: Vec::new(),
            env: BTreeMap::new(),
            files: BTreeMap::new(),
            secret_files: BTreeMap::new(),
            workdir: None,
            address: None,
            stop_timeout: crate::spec::Duration::from_secs(1),
            resources: None,
        }
    }
}

/// A change a provider noticed on its own.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ProviderEvent {
    /// The instance exited or was removed.
    Gone {
        /// Its id.
        id: String,
        /// Why, when the provider knows: `oom` for one killed by its memory limit.
        why: Option<String>,
    },
    /// Something changed; describe again.
    Changed,
    /// Something an operator should know once, such as a feature the machine lacks.
    Note {
        /// What to say.
        message: String,
    },
}
