//! Declaring a group from its parts, the same for every front end.
//!
//! A front end reads a group's parts into the shapes the Starlark builtins build (JSON
//! structs tagged with `kind`); [`group`] checks them and assembles the [`Group`]. So a
//! Starlark `group()` call and a Nickel `groups.X` record go through one set of rules, and
//! give the same model, byte for byte.

use serde_json::Value as Json;

use super::convert;
use crate::diagnostic::SourceLocation;
use crate::spec::{validate, Allocation, Group, Probe};

/// A group's parts as a front end read them.
#[derive(Debug, Default)]
pub struct GroupParts {
    /// The group's name.
    pub name: String,
    /// `size = N`, if given.
    pub size: Option<i64>,
    /// `ids = [...]`, if given.
    pub ids: Option<Vec<String>>,
    /// The provider struct (`{"kind": "provider", "type": ...}`).
    pub provider: Json,
    /// The flavor struct (`{"kind": "flavor", ...}`).
    pub flavor: Json,
    /// The names of the groups it waits for.
    pub depends_on: Vec<String>,
    /// The update policy struct, if given.
    pub update: Option<Json>,
    /// The group's own balancer struct, if given.
    pub expose: Option<Json>,
    /// Where the group was declared.
    pub origin: Option<SourceLocation>,
}

/// Which part of a group a problem is in, so a front end can point at it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    /// The name.
    Name,
    /// `size` or `ids`.
    Allocation,
    /// The provider.
    Provider,
    /// The flavor.
    Flavor,
    /// The update policy.
    Update,
    /// The balancer (the group's own, or its flavor's).
    Expose,
}

/// A problem with one part of a group.
#[derive(Debug, thiserror::Error)]
#[error("{error}")]
pub struct PartError {
    /// Where it is.
    pub part: Part,
    /// What is wrong.
    pub error: anyhow::Error,
}

fn at<E: Into<anyhow::Error>>(part: Part) -> impl FnOnce(E) -> PartError {
    move |error| PartError {
        part,
        error: error.into(),
    }
}

/// Checks a group's parts and assembles the group.
pub fn group(parts: GroupParts) -> Result<Group, PartError> {
    let GroupParts {
        name,
        size,
        ids,
        provider,
        flavor,
        depends_on,
        update,
        expose,
        origin,
    } = parts;
    validate::group_name(&name).map_err(at(Part::Name))?;
    let allocation = validate::allocation(&name, size, ids).map_err(at(Part::Allocation))?;
    let provider = convert::provider(provider).map_err(at(Part::Provider))?;
    let suggested = flavor.get("expose").cloned().filter(|e| !e.is_null());
    let (flavor, templates) = convert::flavor(flavor).map_err(at(Part::Flavor))?;
    convert::declared_ports(&flavor, &templates).map_err(at(Part::Flavor))?;
    let update = match update.filter(|u| !u.is_null()) {
        Some(u) => convert::update(u).map_err(at(Part::Update))?,
        None => Default::default(),
    };
    // The group's own `expose`, else the one its flavor suggests.
    let expose = match expose.filter(|e| !e.is_null()) {
        Some(e) => Some(convert::expose(e).map_err(at(Part::Expose))?),
        None => suggested
            .map(convert::expose)
            .transpose()
            .map_err(at(Part::Flavor))?,
    };
    let has_address = !flavor.port_names().is_empty()
        || matches!(
            flavor.health.as_ref().map(|h| &h.probe),
            Some(Probe::Http { .. }) | Some(Probe::Tcp { .. })
        );
    if expose.is_some() && !has_address {
        return Err(at(Part::Expose)(anyhow::anyhow!(
            "the balancer has nowhere to send connections: give the flavor a port of its own (ports = [\"http\"]) or a health check on its port (http(port = ...) or tcp(port = ...))"
        )));
    }
    if let Some(target) = expose.as_ref().and_then(|e| e.target.as_ref()) {
        if !flavor.port_names().contains(target) {
            return Err(at(Part::Expose)(anyhow::anyhow!(
                "the balancer forwards to port {target:?}, but the flavor declares no such port: add ports = [\"{target}\"] to the flavor"
            )));
        }
    }
    Ok(Group {
        name,
        allocation,
        provider,
        flavor,
        depends_on,
        reads_groups: templates.reads_groups.into_iter().collect(),
        update,
        expose,
        origin,
    })
}

/// The ids a group handle carries: its `ids`, or none for a sized group.
pub fn handle_ids(allocation: &Allocation) -> Vec<String> {
    match allocation {
        Allocation::Ids(ids) => ids.clone(),
        Allocation::Size(_) => Vec::new(),
    }
}
