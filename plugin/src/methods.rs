//! The methods, and the shapes of their parameters and results.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// `initialize`: the handshake, tend's first request.
pub const INITIALIZE: &str = "initialize";
/// `provider.validate`: checks the plugin's settings.
pub const VALIDATE: &str = "provider.validate";
/// `instance.provision`: makes one instance.
pub const PROVISION: &str = "instance.provision";
/// `instance.destroy`: removes one.
pub const DESTROY: &str = "instance.destroy";
/// `instance.describe`: every instance carrying some tags.
pub const DESCRIBE: &str = "instance.describe";
/// `$/ping`: answers `{}`.
pub const PING: &str = "$/ping";
/// `shutdown`: finish what is running, answer, then wait for `exit`.
pub const SHUTDOWN: &str = "shutdown";
/// `exit` (notification): exit now.
pub const EXIT: &str = "exit";
/// `$/cancel` (notification, tend → plugin): give up request `id`.
pub const CANCEL: &str = "$/cancel";
/// `instance.changed` (notification, plugin → tend): something changed; a hint.
pub const CHANGED: &str = "instance.changed";

/// Tags: key/value labels on an instance.
pub type Tags = BTreeMap<String, String>;

/// `initialize` parameters.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InitializeParams {
    /// The versions tend speaks.
    pub protocol_versions: Vec<u32>,
    /// Who is asking.
    pub tend: TendInfo,
    /// The spec's `plugin(config = {...})`.
    #[serde(default)]
    pub config: Value,
}

/// tend, as a plugin sees it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TendInfo {
    /// tend's version.
    pub version: String,
}

/// `initialize` result.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InitializeResult {
    /// The version chosen, one of those offered.
    pub protocol_version: u32,
    /// The plugin.
    pub plugin: PluginInfo,
    /// What it can do.
    #[serde(default)]
    pub capabilities: Capabilities,
    /// How long its calls may take.
    #[serde(default)]
    pub timeouts: Timeouts,
}

/// A plugin's name and version.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PluginInfo {
    /// Its name.
    pub name: String,
    /// Its version.
    #[serde(default)]
    pub version: String,
}

/// What a plugin can do.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Capabilities {
    /// It sends `instance.changed`.
    #[serde(default)]
    pub watch: bool,
    /// It refuses calls with an older epoch than one it saw (`StaleEpoch`).
    #[serde(default)]
    pub fencing: bool,
    /// Requests it takes at once (0: no limit tend must keep).
    #[serde(default)]
    pub max_concurrency: u32,
}

/// Deadlines a plugin asks for; tend's defaults where absent.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Timeouts {
    /// For `instance.provision`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provision_ms: Option<u64>,
    /// For `instance.destroy`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destroy_ms: Option<u64>,
}

/// `provider.validate` parameters.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ValidateParams {
    /// The settings to check.
    pub properties: Value,
}

/// What to make.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct InstanceSpec {
    /// The rendered instance: `command`, `env`, `files`, `workdir`, `address`,
    /// `stopTimeoutMs`, `labels`.
    pub properties: Value,
    /// Every tag to set at creation.
    pub tags: Tags,
}

/// `instance.provision` parameters.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProvisionParams {
    /// What to make.
    pub spec: InstanceSpec,
    /// The same key gives the same instance.
    pub idempotency_key: String,
    /// The controller's fencing token (0 without a replicated store).
    pub epoch: i64,
    /// How long the call may take.
    pub deadline_ms: u64,
}

/// `instance.provision` result.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProvisionResult {
    /// The new (or already made) instance.
    pub id: String,
}

/// `instance.destroy` parameters.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DestroyParams {
    /// The instance; an unknown one is success.
    pub id: String,
    /// Why, for logs.
    pub reason: String,
    /// The controller's fencing token.
    pub epoch: i64,
    /// How long the call may take.
    pub deadline_ms: u64,
}

/// `instance.describe` parameters.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct DescribeParams {
    /// Every instance carrying all of these tags.
    pub tags: Tags,
}

/// `instance.describe` result.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct DescribeResult {
    /// The instances.
    pub instances: Vec<Instance>,
}

/// One instance, as a plugin reports it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Instance {
    /// Its id.
    pub id: String,
    /// Its tags.
    #[serde(default)]
    pub tags: Tags,
    /// `running`, `starting`, `unhealthy` or `dead`.
    pub state: String,
    /// Where it is reached, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// When it started, in milliseconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<u64>,
}

/// `$/cancel` parameters.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CancelParams {
    /// The request to give up.
    pub id: crate::message::Id,
}
