//! The fixed context a flavor template is rendered with.

use std::collections::BTreeMap;

use serde::Serialize;

/// Everything a template may read.
#[derive(Clone, Debug, Serialize)]
pub struct TemplateContext {
    /// The instance being rendered.
    pub instance: InstanceVars,
    /// Its group.
    pub group: GroupVars,
    /// The groups it depends on, by name, with their live instances.
    pub groups: BTreeMap<String, PeerGroupVars>,
}

/// `instance.*`
#[derive(Clone, Debug, Serialize)]
pub struct InstanceVars {
    /// The logical identity: the id of an `ids` group, or `<group>-<index>`.
    pub id: String,
    /// The slot's position in the allocation (0-based).
    pub index: u32,
    /// The slot as text.
    pub slot: String,
    /// The group's name.
    pub group: String,
    /// The instance's own ports, by name: what it listens on.
    pub ports: BTreeMap<String, u16>,
}

/// `group.*`
#[derive(Clone, Debug, Serialize)]
pub struct GroupVars {
    /// The group's name.
    pub name: String,
    /// How many instances the allocation asks for.
    pub size: u32,
    /// The ids of an `ids` group (empty for sized groups).
    pub ids: Vec<String>,
}

/// `groups.<name>.*`
#[derive(Clone, Debug, Serialize)]
pub struct PeerGroupVars {
    /// Live instances with their slots and addresses.
    pub instances: Vec<InstanceAddress>,
    /// Just the addresses, in slot order.
    pub addresses: Vec<String>,
}

impl PeerGroupVars {
    /// Builds the variables of a peer group from its live instances.
    pub fn from_instances(instances: Vec<InstanceAddress>) -> Self {
        let addresses = instances.iter().map(|i| i.address.clone()).collect();
        PeerGroupVars {
            instances,
            addresses,
        }
    }
}

/// One live instance of a peer group.
#[derive(Clone, Debug, Serialize)]
pub struct InstanceAddress {
    /// Its slot as text.
    pub slot: String,
    /// Where it is reached, such as `127.0.0.1:8000`.
    pub address: String,
}
