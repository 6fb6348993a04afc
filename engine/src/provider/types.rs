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
    /// The format of its tags ([`crate::format::INSTANCE`]); none on an instance tend
    /// 0.1.0 made, read as format 1.
    pub const FORMAT: &str = "tend.format";
    /// A label, not a tag: the idempotency key of the provision that made it. A provider
    /// asked to make an instance with a key it already made one for returns that one.
    pub const KEY: &str = "tend.key";
}

/// The `tend.*` tags of an instance, typed. Every instance carries all four in its
/// provider (docker labels, process environment, sim records), and the format of its tags
/// when it is newer than format 1. These are built ([`InstanceTags::to_map`]) and read
/// back ([`InstanceTags::from_map`]) here, for every provider that keeps tags as labels.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
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
    /// `tend.format`: the format of these tags. Instances tend makes carry
    /// [`crate::format::INSTANCE`]; without the tag (tend 0.1.0's) it is
    /// [`crate::format::UNMARKED`], and serialized without it, as before. A tag that is not
    /// a number reads as `u32::MAX`: a format this tend does not know.
    #[serde(
        default = "crate::format::unmarked",
        skip_serializing_if = "crate::format::is_unmarked",
        deserialize_with = "any_format"
    )]
    pub format: u32,
}

/// A record's `format` as whatever a newer tend may write there (a number past `u32`, a
/// string, ...): never a reason to drop the record, which would hide the instance and let
/// its slot be filled twice. What is not a format this tend knows reads as `u32::MAX`, so
/// the instance is refused, not misread.
fn any_format<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<u32, D::Error> {
    let value = serde_json::Value::deserialize(deserializer)?;
    Ok(match value {
        serde_json::Value::Null => crate::format::UNMARKED,
        serde_json::Value::Number(n) => n
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .unwrap_or(u32::MAX),
        serde_json::Value::String(text) => InstanceTags::parse_format(Some(&text)),
        _ => u32::MAX,
    })
}

impl Default for InstanceTags {
    /// Empty tags of the format this tend writes.
    fn default() -> Self {
        InstanceTags {
            project: String::new(),
            group: String::new(),
            slot: String::new(),
            hash: String::new(),
            ports: Vec::new(),
            format: crate::format::INSTANCE,
        }
    }
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
        if !crate::format::is_unmarked(&self.format) {
            map.insert(tags::FORMAT.to_owned(), self.format.to_string());
        }
        map
    }

    /// Reads a `tend.format` tag value: [`crate::format::UNMARKED`] without one, `u32::MAX`
    /// (a format this tend does not know) for one that is not a number.
    pub fn parse_format(text: Option<&str>) -> u32 {
        match text {
            None => crate::format::UNMARKED,
            Some(text) => text.trim().parse().unwrap_or(u32::MAX),
        }
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
            format: InstanceTags::parse_format(map.get(tags::FORMAT).map(String::as_str)),
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

#[cfg(test)]
mod tests {

    #[test]
    fn a_record_whose_format_a_newer_tend_wrote_differently_is_kept_and_refused() {
        let record = |format: &str| {
            serde_json::from_str::<InstanceTags>(&format!(
                r#"{{"project":"p","group":"g","slot":"0","hash":"h","format":{format}}}"#
            ))
            .map(|t| t.format)
            .map_err(|e| e.to_string())
        };
        assert_eq!(record("2"), Ok(2));
        assert_eq!(record("null"), Ok(crate::format::UNMARKED));
        assert_eq!(record("\"3\""), Ok(3));
        for newer in ["\"three\"", "99999999999", "-1", "2.5", "{\"major\":3}"] {
            assert_eq!(record(newer), Ok(u32::MAX), "{newer}");
        }
    }
    use super::*;
    use crate::format::{INSTANCE, UNMARKED};

    fn tags(format: u32) -> InstanceTags {
        InstanceTags {
            project: "p".into(),
            group: "web".into(),
            slot: "0".into(),
            hash: "047354763ec3".into(),
            ports: vec![("http".into(), 20001)],
            format,
        }
    }

    #[test]
    fn tags_of_tend_0_1_0_read_as_format_1_and_are_written_back_unchanged() {
        // As tend 0.1.0 kept them: labels (docker, terraform, plugins) and JSON (sim, process).
        let map: Tags = [
            ("tend.project", "p"),
            ("tend.group", "web"),
            ("tend.slot", "0"),
            ("tend.hash", "047354763ec3"),
            ("tend.ports", "http=20001"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        assert_eq!(InstanceTags::from_map(&map), tags(UNMARKED));
        assert_eq!(tags(UNMARKED).to_map(), map);
        let json = r#"{"project":"p","group":"web","slot":"0","hash":"047354763ec3","ports":[["http",20001]]}"#;
        let read: InstanceTags = serde_json::from_str(json).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(read, tags(UNMARKED));
        assert_eq!(serde_json::to_string(&read).ok().as_deref(), Some(json));
    }

    #[test]
    fn tags_tend_makes_now_carry_their_format_through_labels_and_json() {
        let now = tags(INSTANCE);
        assert_eq!(
            now.to_map().get(tags::FORMAT).map(String::as_str),
            Some(INSTANCE.to_string().as_str())
        );
        assert_eq!(InstanceTags::from_map(&now.to_map()), now);
        let json = serde_json::to_string(&now).unwrap_or_default();
        assert!(json.contains(&format!("\"format\":{INSTANCE}")), "{json}");
        assert_eq!(serde_json::from_str::<InstanceTags>(&json).ok(), Some(now));
        assert_eq!(InstanceTags::default().format, INSTANCE);
    }

    #[test]
    fn a_format_tag_that_is_not_a_number_is_a_format_this_tend_does_not_know() {
        let mut map = tags(INSTANCE).to_map();
        map.insert(tags::FORMAT.to_owned(), "3.0".to_owned());
        assert_eq!(InstanceTags::from_map(&map).format, u32::MAX);
        map.insert(tags::FORMAT.to_owned(), "7".to_owned());
        assert_eq!(InstanceTags::from_map(&map).format, 7);
    }
}
