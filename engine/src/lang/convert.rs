//! Reading builtin values (flavors, health checks, providers, policies) back into the model.
//!
//! Builtins return plain Starlark structs tagged with a `kind` field, so users can read and
//! combine them like any value. Whatever reaches `group()` is converted here, so a struct
//! built by hand is checked exactly like one built by a builtin.

use std::collections::BTreeMap;

use serde_json::{Map, Value as Json};

use crate::spec::{
    validate, Duration, EnvValue, Expose, Flavor, Health, OnFailure, PortValue, Probe,
    ProviderSpec, Rolling, SpecError, Strategy, UpdatePolicy,
};
use crate::template::{analyze, TemplateInfo};

/// The providers this build of tend knows.
pub const PROVIDERS: [&str; 5] = crate::spec::validate::BUILT_IN_PROVIDERS;

/// A value that is not what a builtin parameter needs, said in the user's terms.
#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    /// The value is of the wrong kind, such as a health check where a flavor belongs.
    #[error("`{param}` must be {expected}, got {got}")]
    WrongKind {
        /// The parameter.
        param: String,
        /// What it takes.
        expected: String,
        /// What was given.
        got: String,
    },
    /// A model rule was broken.
    #[error("{0}")]
    Spec(#[from] SpecError),
    /// A template in a field is wrong.
    #[error("in {field}: {error}")]
    Template {
        /// The field holding the template, such as `flavor.command[2]`.
        field: String,
        /// What is wrong with it.
        #[source]
        error: crate::template::TemplateError,
    },
    /// A provider no build of tend has.
    #[error("unknown provider {0:?}: tend has {list}", list = PROVIDERS.join(", "))]
    UnknownProvider(String),
    /// The struct has the right kind but fields of the wrong shape.
    #[error("invalid {what}: {detail}")]
    Shape {
        /// Which concept.
        what: String,
        /// serde's description of the problem.
        detail: String,
    },
}

/// Where in `json` a builtin struct of `kind` is, as `["key"][0]...`, if anywhere.
pub fn find_kind(json: &Json, kind: &str) -> Option<String> {
    match json {
        // A builtin struct has its kind and one field named after it (`secret("X")` is
        // `{"kind": "secret", "secret": "X"}`); a plain dict with a `kind` key is not one.
        Json::Object(map)
            if map.len() == 2
                && map.get("kind").and_then(Json::as_str) == Some(kind)
                && map.contains_key(kind) =>
        {
            Some(String::new())
        }
        Json::Object(map) => map
            .iter()
            .find_map(|(k, v)| find_kind(v, kind).map(|rest| format!("[{k:?}]{rest}"))),
        Json::Array(items) => items
            .iter()
            .enumerate()
            .find_map(|(i, v)| find_kind(v, kind).map(|rest| format!("[{i}]{rest}"))),
        _ => None,
    }
}

/// The `kind` field of a builtin struct, or a description of what the value is.
pub fn describe_kind(json: &Json) -> String {
    match json {
        Json::Object(map) => match map.get("kind").and_then(Json::as_str) {
            Some("flavor") => "a flavor".to_owned(),
            Some("health") => "a health check".to_owned(),
            Some("provider") => "a provider".to_owned(),
            Some("update") => "an update policy".to_owned(),
            Some("group") => "a group".to_owned(),
            Some("secret") => "a secret".to_owned(),
            Some("resources") => "resource limits".to_owned(),
            Some(other) => format!("a struct of kind {other:?}"),
            None => "a struct".to_owned(),
        },
        Json::Null => "None".to_owned(),
        Json::String(s) => format!("the string {s:?}"),
        Json::Array(_) => "a list".to_owned(),
        Json::Bool(_) => "a bool".to_owned(),
        Json::Number(_) => "a number".to_owned(),
    }
}

/// Takes the object of a struct with the given `kind`, or says what was given instead.
fn expect_kind(
    json: Json,
    kind: &str,
    param: &str,
    expected: &str,
) -> Result<Map<String, Json>, ConvertError> {
    match json {
        Json::Object(map) if map.get("kind").and_then(Json::as_str) == Some(kind) => Ok(map),
        other => Err(ConvertError::WrongKind {
            param: param.to_owned(),
            expected: expected.to_owned(),
            got: describe_kind(&other),
        }),
    }
}

fn shape<T: serde::de::DeserializeOwned>(
    what: &str,
    map: Map<String, Json>,
) -> Result<T, ConvertError> {
    let cleaned: Map<String, Json> = map
        .into_iter()
        .filter(|(k, v)| k != "kind" && !v.is_null())
        .collect();
    serde_json::from_value(Json::Object(cleaned)).map_err(|e| ConvertError::Shape {
        what: what.to_owned(),
        detail: e.to_string(),
    })
}

/// Converts a `flavor()` struct and checks every template in it. Returns the flavor and the
/// groups its templates read.
pub fn flavor(json: Json) -> Result<(Flavor, TemplateInfo), ConvertError> {
    let map = expect_kind(
        json,
        "flavor",
        "flavor",
        "a flavor (from flavor() or combo())",
    )?;
    let mut map = map;
    // A balancer the flavor suggests for its groups: read by `group()`, not part of the
    // flavor (nor of its hash).
    map.remove("expose");
    let flavor: Flavor = shape("flavor", map)?;
    for name in flavor.env.keys() {
        validate::env_name(name)?;
    }
    for name in &flavor.ports {
        validate::port_name(name)?;
    }
    let info = flavor_templates(&flavor)?;
    Ok((flavor, info))
}

/// Checks that every port a group's flavor templates read is one the flavor declares
/// (checked on the whole flavor a group gets, after `combo()`).
pub fn declared_ports(flavor: &Flavor, info: &TemplateInfo) -> Result<(), ConvertError> {
    let declared = flavor.port_names();
    match info.reads_ports.iter().find(|p| !declared.contains(p)) {
        Some(missing) => Err(SpecError::UndeclaredPort(missing.clone()).into()),
        None => Ok(()),
    }
}

/// Checks every template of a flavor, naming the field of the first bad one.
fn flavor_templates(flavor: &Flavor) -> Result<TemplateInfo, ConvertError> {
    let mut fields: Vec<(String, &str)> = Vec::new();
    for (i, arg) in flavor.command.iter().enumerate() {
        fields.push((format!("command[{i}]"), arg));
    }
    for (name, value) in &flavor.env {
        if let EnvValue::Plain(text) = value {
            fields.push((format!("env[{name:?}]"), text));
        }
    }
    for (path, content) in &flavor.files {
        fields.push((format!("files key {path:?}"), path));
        fields.push((format!("files[{path:?}]"), content));
    }
    for (name, value) in &flavor.labels {
        fields.push((format!("labels[{name:?}]"), value));
    }
    if let Some(workdir) = &flavor.workdir {
        fields.push(("workdir".to_owned(), workdir));
    }
    if let Some(health) = &flavor.health {
        probe_fields(&health.probe, "health", &mut fields);
    }
    if let Some(command) = flavor.drain.as_ref().and_then(|d| d.command.as_ref()) {
        for (i, arg) in command.iter().enumerate() {
            fields.push((format!("drain_command[{i}]"), arg));
        }
    }
    let mut info = TemplateInfo::default();
    for (field, text) in fields {
        let found = analyze(text).map_err(|error| ConvertError::Template {
            field: format!("flavor.{field}"),
            error,
        })?;
        info.reads_groups.extend(found.reads_groups);
        info.reads_ports.extend(found.reads_ports);
    }
    Ok(info)
}

fn probe_fields<'a>(probe: &'a Probe, prefix: &str, fields: &mut Vec<(String, &'a str)>) {
    match probe {
        Probe::Http { port, path } => {
            if let PortValue::Template(t) = port {
                fields.push((format!("{prefix}.port"), t));
            }
            fields.push((format!("{prefix}.path"), path));
        }
        Probe::Tcp { port } => {
            if let PortValue::Template(t) = port {
                fields.push((format!("{prefix}.port"), t));
            }
        }
        Probe::Exec { command } => {
            for (i, arg) in command.iter().enumerate() {
                fields.push((format!("{prefix}.command[{i}]"), arg));
            }
        }
    }
}

/// Converts a `balancer()` struct.
pub fn expose(json: Json) -> Result<Expose, ConvertError> {
    let mut map = expect_kind(json, "balancer", "expose", "a balancer (from balancer())")?;
    let strategy = match map.get("strategy").and_then(|s| s.as_str()) {
        Some("round_robin") => Strategy::RoundRobin,
        Some("least_connections") => Strategy::LeastConnections,
        other => {
            return Err(ConvertError::Shape {
                what: "balancer".to_owned(),
                detail: format!(
                    "strategy must be \"round_robin\" or \"least_connections\", got {}",
                    other.unwrap_or("nothing")
                ),
            })
        }
    };
    map.remove("strategy");
    let drain = map
        .remove("drain_timeout")
        .and_then(|d| d.as_str().map(str::to_owned))
        .unwrap_or_else(|| "5s".to_owned());
    let listen = map
        .get("listen")
        .and_then(|l| l.as_str())
        .unwrap_or_default()
        .to_owned();
    validate::listen(&listen)?;
    Ok(Expose {
        listen,
        target: map
            .get("target")
            .and_then(|t| t.as_str())
            .map(str::to_owned),
        strategy,
        drain_timeout: duration(&drain)?,
    })
}

/// Converts a health check struct (`http()`, `tcp()`, `exec()`).
pub fn health(json: Json) -> Result<Health, ConvertError> {
    let map = expect_kind(
        json,
        "health",
        "health",
        "a health check (http(), tcp() or exec())",
    )?;
    let health: Health = shape("health check", map)?;
    if health.failures == 0 {
        return Err(SpecError::ZeroFailures.into());
    }
    let mut fields = Vec::new();
    probe_fields(&health.probe, "health", &mut fields);
    for (field, text) in fields {
        analyze(text).map_err(|error| ConvertError::Template {
            field: field.clone(),
            error,
        })?;
    }
    Ok(health)
}

/// Converts a provider struct (`process()`, `sim()`).
pub fn provider(json: Json) -> Result<ProviderSpec, ConvertError> {
    let mut map = expect_kind(
        json,
        "provider",
        "provider",
        "a provider (process(), docker(), sim(), terraform(), vagrant() or plugin())",
    )?;
    let kind = match map.remove("type") {
        Some(Json::String(kind)) => kind,
        other => {
            return Err(ConvertError::Shape {
                what: "provider".to_owned(),
                detail: format!(
                    "`type` must be a string, got {}",
                    describe_kind(&other.unwrap_or(Json::Null))
                ),
            })
        }
    };
    map.remove("kind");
    if kind == "plugin" {
        return Ok(plugin(map));
    }
    if !PROVIDERS.contains(&kind.as_str()) {
        return Err(ConvertError::UnknownProvider(kind));
    }
    let props: BTreeMap<String, Json> = map.into_iter().filter(|(_, v)| !v.is_null()).collect();
    for (key, value) in &props {
        check_templates(&format!("provider.{key}"), value)?;
    }
    Ok(ProviderSpec { kind, props })
}

/// A `plugin()` provider: named by its name, its command and config under `plugin` (not
/// templates: they reach the plugin as they are).
fn plugin(mut map: Map<String, Json>) -> ProviderSpec {
    let name = match map.remove("name") {
        Some(Json::String(name)) => name,
        _ => String::new(),
    };
    let plugin = serde_json::json!({
        "command": map.remove("command").unwrap_or(Json::Null),
        "config": map.remove("config").unwrap_or(Json::Null),
    });
    ProviderSpec {
        kind: name,
        props: [("plugin".to_owned(), plugin)].into_iter().collect(),
    }
}

/// Checks every string inside a provider setting as a template (ports are often per slot).
fn check_templates(field: &str, value: &Json) -> Result<(), ConvertError> {
    match value {
        Json::String(text) => analyze(text)
            .map(|_| ())
            .map_err(|error| ConvertError::Template {
                field: field.to_owned(),
                error,
            }),
        Json::Array(items) => items
            .iter()
            .enumerate()
            .try_for_each(|(i, v)| check_templates(&format!("{field}[{i}]"), v)),
        Json::Object(map) => map
            .iter()
            .try_for_each(|(k, v)| check_templates(&format!("{field}[{k:?}]"), v)),
        _ => Ok(()),
    }
}

/// Converts an update policy struct (`rolling()`, `recreate()`).
pub fn update(json: Json) -> Result<UpdatePolicy, ConvertError> {
    let mut map = expect_kind(
        json,
        "update",
        "update",
        "an update policy (rolling() or recreate())",
    )?;
    match map.remove("strategy").as_ref().and_then(Json::as_str) {
        Some("recreate") => Ok(UpdatePolicy::Recreate),
        Some("rolling") => {
            let rolling: Rolling = shape("rolling policy", map)?;
            if rolling.max_unavailable == 0 && rolling.max_surge == 0 {
                return Err(SpecError::RollingStuck.into());
            }
            Ok(UpdatePolicy::Rolling(rolling))
        }
        other => Err(ConvertError::Shape {
            what: "update policy".to_owned(),
            detail: format!("unknown strategy {other:?}: use rolling() or recreate()"),
        }),
    }
}

/// Parses a duration argument, naming the parameter on error.
pub fn duration(text: &str) -> Result<Duration, SpecError> {
    text.parse()
}

/// Parses an `on_failure` argument.
pub fn on_failure(text: &str) -> Result<OnFailure, SpecError> {
    text.parse()
}
