//! Rendering one instance of a group: templates filled in, secrets read, tags attached.

use std::collections::BTreeMap;

use crate::health::RenderedProbe;
use crate::provider::{InstanceTags, Observed, ProvisionRequest};
use crate::spec::{Allocation, EnvValue, Group, PortValue, Probe, Slot, SpecHash};
use crate::template::{
    render, GroupVars, InstanceAddress, InstanceVars, PeerGroupVars, TemplateContext, TemplateError,
};

/// Why an instance could not be rendered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RenderError {
    /// A template failed for this instance.
    #[error("{group}/{slot}: {field}: {error}")]
    Template {
        /// The group.
        group: String,
        /// The slot.
        slot: String,
        /// Which field.
        field: String,
        /// What failed.
        #[source]
        error: TemplateError,
    },
    /// A `secret()` whose variable is not set.
    #[error("secret {0} is not set in tend's environment")]
    MissingSecret(String),
    /// A port the instance should have and has not.
    #[error("{group}/{slot}: the instance has no port {name:?}")]
    MissingPort {
        /// The group.
        group: String,
        /// The slot.
        slot: String,
        /// The port's name.
        name: String,
    },
    /// A rendered port that is not a port.
    #[error("{group}/{slot}: health port {value:?} is not a port number")]
    BadPort {
        /// The group.
        group: String,
        /// The slot.
        slot: String,
        /// What the template gave.
        value: String,
    },
}

/// An instance ready to provision, with its rendered health probe and drain command.
#[derive(Clone, Debug)]
pub struct RenderedInstance {
    /// What the provider gets.
    pub request: ProvisionRequest,
    /// The health probe, if the flavor has one.
    pub probe: Option<RenderedProbe>,
    /// The drain command, if the flavor has one.
    pub drain: Option<Vec<String>>,
}

impl RenderedInstance {
    /// Points the health probe at the ports the instance is reached on, when they differ from
    /// its own (a container's ports published on host ports the engine picked).
    pub fn reach(&mut self, group: &Group, reachable: &BTreeMap<String, u16>) {
        let named = match group.flavor.health.as_ref().map(|h| &h.probe) {
            Some(Probe::Http {
                port: PortValue::Named(p),
                ..
            })
            | Some(Probe::Tcp {
                port: PortValue::Named(p),
            }) => &p.name,
            _ => return,
        };
        let Some(port) = reachable.get(named) else {
            return;
        };
        let at = format!("127.0.0.1:{port}");
        match &mut self.probe {
            Some(RenderedProbe::Http { address, .. }) | Some(RenderedProbe::Tcp { address }) => {
                address.clone_from(&at);
            }
            _ => {}
        }
        self.request.address = Some(at);
    }
}

/// The template context of one slot. `groups` holds the live addresses of every group the
/// flavor reads, from `observed`.
pub fn context(group: &Group, slot: &Slot, observed: &Observed) -> TemplateContext {
    let index = match (&group.allocation, slot) {
        (_, Slot::Index(i)) => *i,
        (Allocation::Ids(ids), Slot::Id(id)) => {
            ids.iter().position(|x| x == id).unwrap_or(0) as u32
        }
        (Allocation::Size(_), Slot::Id(_)) => 0,
    };
    let id = match slot {
        Slot::Id(id) => id.clone(),
        Slot::Index(i) => format!("{}-{i}", group.name),
    };
    let ids = match &group.allocation {
        Allocation::Ids(ids) => ids.clone(),
        Allocation::Size(_) => Vec::new(),
    };
    let mut groups = BTreeMap::new();
    for peer in &group.reads_groups {
        let mut live: Vec<(Slot, InstanceAddress)> = observed
            .iter()
            .filter(|(_, i)| i.tags.group == *peer && i.state.is_live())
            .filter_map(|(_, i)| {
                let address = i.address.clone()?;
                let slot = Allocation::Size(0).parse_slot(&i.tags.slot);
                Some((
                    slot,
                    InstanceAddress {
                        slot: i.tags.slot.clone(),
                        address,
                    },
                ))
            })
            .collect();
        live.sort_by(|a, b| a.0.cmp(&b.0));
        live.dedup_by(|a, b| a.0 == b.0);
        groups.insert(
            peer.clone(),
            PeerGroupVars::from_instances(live.into_iter().map(|(_, a)| a).collect()),
        );
    }
    TemplateContext {
        instance: InstanceVars {
            id,
            index,
            slot: slot.to_string(),
            group: group.name.clone(),
            ports: BTreeMap::new(),
        },
        group: GroupVars {
            name: group.name.clone(),
            size: group.allocation.len() as u32,
            ids,
        },
        groups,
    }
}

/// Provider settings with every template string rendered for the instance.
fn render_props(
    props: &BTreeMap<String, serde_json::Value>,
    fill: &dyn Fn(&str, &str) -> Result<String, RenderError>,
) -> Result<BTreeMap<String, serde_json::Value>, RenderError> {
    fn walk(
        field: &str,
        value: &serde_json::Value,
        fill: &dyn Fn(&str, &str) -> Result<String, RenderError>,
    ) -> Result<serde_json::Value, RenderError> {
        Ok(match value {
            serde_json::Value::String(text) => serde_json::Value::String(fill(field, text)?),
            serde_json::Value::Array(items) => serde_json::Value::Array(
                items
                    .iter()
                    .map(|v| walk(field, v, fill))
                    .collect::<Result<_, _>>()?,
            ),
            serde_json::Value::Object(map) => serde_json::Value::Object(
                map.iter()
                    .map(|(k, v)| Ok((k.clone(), walk(&format!("{field}.{k}"), v, fill)?)))
                    .collect::<Result<_, RenderError>>()?,
            ),
            other => other.clone(),
        })
    }
    props
        .iter()
        .map(|(k, v)| Ok((k.clone(), walk(&format!("provider.{k}"), v, fill)?)))
        .collect()
}

/// Renders the instance of `group` for `slot` in `project`, with `ports` its own ports by
/// name (allocated for a new instance, read from the tags of one that runs). `hash` is
/// `group`'s spec hash (callers that make many instances compute it once).
pub fn render_instance(
    project: &str,
    group: &Group,
    hash: &SpecHash,
    slot: &Slot,
    ports: &[(String, u16)],
    observed: &Observed,
    secret: &dyn Fn(&str) -> Option<String>,
) -> Result<RenderedInstance, RenderError> {
    let mut ctx = context(group, slot, observed);
    ctx.instance.ports = ports.iter().cloned().collect();
    let own = |name: &str| -> Result<u16, RenderError> {
        ctx.instance
            .ports
            .get(name)
            .copied()
            .ok_or_else(|| RenderError::MissingPort {
                group: group.name.clone(),
                slot: slot.to_string(),
                name: name.to_owned(),
            })
    };
    let fill = |field: &str, text: &str| {
        render(text, &ctx).map_err(|error| RenderError::Template {
            group: group.name.clone(),
            slot: slot.to_string(),
            field: field.to_owned(),
            error,
        })
    };
    let flavor = &group.flavor;
    let command = flavor
        .command
        .iter()
        .enumerate()
        .map(|(i, a)| fill(&format!("command[{i}]"), a))
        .collect::<Result<Vec<_>, _>>()?;
    let mut env = BTreeMap::new();
    for (name, value) in &flavor.env {
        let text = match value {
            EnvValue::Plain(text) => fill(&format!("env[{name:?}]"), text)?,
            EnvValue::Secret { secret: var } => {
                secret(var).ok_or_else(|| RenderError::MissingSecret(var.clone()))?
            }
        };
        env.insert(name.clone(), text);
    }
    let mut files = BTreeMap::new();
    for (path, content) in &flavor.files {
        files.insert(
            fill("files key", path)?,
            fill(&format!("files[{path:?}]"), content)?,
        );
    }
    let mut secret_files = BTreeMap::new();
    for (path, value) in &flavor.secret_files {
        let content = secret(&value.secret)
            .ok_or_else(|| RenderError::MissingSecret(value.secret.clone()))?;
        secret_files.insert(fill("secret_files key", path)?, content);
    }
    let mut labels = BTreeMap::new();
    for (name, value) in &flavor.labels {
        labels.insert(name.clone(), fill(&format!("labels[{name:?}]"), value)?);
    }
    let workdir = flavor
        .workdir
        .as_ref()
        .map(|w| fill("workdir", w))
        .transpose()?;
    let port = |value: &PortValue| -> Result<u16, RenderError> {
        match value {
            PortValue::Number(n) => Ok(*n),
            PortValue::Named(p) => own(&p.name),
            PortValue::Template(t) => {
                let text = fill("health.port", t)?;
                text.trim().parse().map_err(|_| RenderError::BadPort {
                    group: group.name.clone(),
                    slot: slot.to_string(),
                    value: text,
                })
            }
        }
    };
    let probe = match flavor.health.as_ref().map(|h| &h.probe) {
        None => None,
        Some(Probe::Http { port: p, path }) => Some(RenderedProbe::Http {
            address: format!("127.0.0.1:{}", port(p)?),
            path: fill("health.path", path)?,
        }),
        Some(Probe::Tcp { port: p }) => Some(RenderedProbe::Tcp {
            address: format!("127.0.0.1:{}", port(p)?),
        }),
        Some(Probe::Exec { command }) => Some(RenderedProbe::Exec {
            command: command
                .iter()
                .map(|a| fill("health.command", a))
                .collect::<Result<_, _>>()?,
        }),
    };
    let address = match &probe {
        Some(RenderedProbe::Http { address, .. }) | Some(RenderedProbe::Tcp { address }) => {
            Some(address.clone())
        }
        _ => ports.first().map(|(_, p)| format!("127.0.0.1:{p}")),
    };
    let drain = match flavor.drain.as_ref().and_then(|d| d.command.as_ref()) {
        Some(cmd) => Some(
            cmd.iter()
                .map(|a| fill("drain_command", a))
                .collect::<Result<_, _>>()?,
        ),
        None => None,
    };
    let stop_timeout = flavor
        .drain
        .as_ref()
        .map(|d| d.timeout)
        .unwrap_or(crate::spec::Duration::from_secs(10));
    Ok(RenderedInstance {
        request: ProvisionRequest {
            group: group.name.clone(),
            slot: slot.clone(),
            tags: InstanceTags {
                project: project.to_owned(),
                group: group.name.clone(),
                slot: slot.to_string(),
                hash: hash.to_string(),
                ports: ports.to_vec(),
                format: crate::format::INSTANCE,
            },
            labels,
            props: render_props(&group.provider.props, &fill)?,
            command,
            env,
            files,
            secret_files,
            workdir,
            address,
            stop_timeout,
            resources: flavor.resources.clone().filter(|r| !r.is_empty()),
        },
        probe,
        drain,
    })
}
