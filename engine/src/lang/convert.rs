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

/// A health check's or balancer's port, as every front end takes it: a number in range, a
/// port of the instance's own (`{"kind": "port", "name": ...}` or a plain name), a number
/// written as a string, or a template. Returns the value as the model stores it.
pub fn port_value(port: &Json) -> anyhow::Result<Json> {
    match port {
        Json::Number(n) => {
            let number = n
                .as_i64()
                .ok_or_else(|| anyhow::anyhow!("`port` must be a whole number, got {n}"))?;
            Ok(Json::from(validate::port(number)?))
        }
        Json::String(text) if crate::template::is_template(text) => Ok(port.clone()),
        Json::String(text) if text.parse::<i64>().is_ok() => {
            let number = text.parse::<i64>().unwrap_or_default();
            Ok(Json::from(validate::port(number)?))
        }
        Json::String(name) => named_port(name),
        Json::Object(map) if map.get("kind").and_then(Json::as_str) == Some("port") => {
            named_port(map.get("name").and_then(Json::as_str).unwrap_or_default())
        }
        other => anyhow::bail!(
            "`port` must be a number, port(\"name\") or a template string, got {}",
            describe_kind(other)
        ),
    }
}

/// The struct of a port of the instance's own, by name.
pub fn named_port(name: &str) -> anyhow::Result<Json> {
    validate::port_name(name)?;
    Ok(serde_json::json!({"kind": "port", "name": name}))
}

/// A provider's `ports = {container port: host port}`: each container port a port number,
/// each host port a port number, 0 (the engine picks one) or a template.
pub fn published_ports(entries: Vec<(Json, Json)>) -> anyhow::Result<Map<String, Json>> {
    let mut mapped = Map::new();
    for (inside, outside) in entries {
        let inside = match &inside {
            Json::Number(n) => validate::port(whole_port(n, "container port")?)?.to_string(),
            Json::String(text) => validate::port(
                text.parse::<i64>()
                    .map_err(|_| anyhow::anyhow!("container port {text:?} is not a number"))?,
            )?
            .to_string(),
            other => anyhow::bail!("container ports are numbers, got {}", describe_kind(other)),
        };
        let outside = match &outside {
            Json::Number(n) if n.as_i64() == Some(0) => Json::from(0),
            Json::Number(n) => Json::from(validate::port(whole_port(n, "host port")?)?),
            Json::String(_) => outside,
            other => anyhow::bail!(
                "host port for {inside} must be a number or a template, got {}",
                describe_kind(other)
            ),
        };
        mapped.insert(inside, outside);
    }
    Ok(mapped)
}

/// A port written as a number: whole, and small enough to say it is out of range.
fn whole_port(n: &serde_json::Number, what: &str) -> anyhow::Result<i64> {
    n.as_i64()
        .or_else(|| n.as_u64().map(|_| i64::MAX))
        .ok_or_else(|| anyhow::anyhow!("{what} must be a whole number, got {n}"))
}

/// Checks a `docker(host = ...)`: a unix socket or a TCP address every replica reaches.
pub fn docker_host(host: &str) -> anyhow::Result<()> {
    let known = host.strip_prefix("unix:///").is_some()
        || host.strip_prefix("tcp://").is_some_and(|a| {
            a.rsplit_once(':')
                .is_some_and(|(n, p)| !n.is_empty() && p.parse::<u16>().is_ok())
        });
    if !known {
        anyhow::bail!(
            "docker host {host:?}: use unix:///path/to/docker.sock, or tcp://HOST:PORT for an engine every replica reaches"
        );
    }
    Ok(())
}

/// Checks `terraform(resource = ...)`: offline, only `terraform_data` works.
pub fn terraform_resource(resource: &str) -> anyhow::Result<()> {
    if resource != "terraform_data" {
        anyhow::bail!("terraform(resource = {resource:?}): tend runs Terraform offline, where only its builtin \"terraform_data\" resource works");
    }
    Ok(())
}

/// A path of `files` or `secret_files`: inside the instance's working folder, so relative
/// and without `..`.
pub fn instance_path(path: &str) -> anyhow::Result<()> {
    let inside =
        !path.is_empty() && !path.starts_with('/') && path.split('/').all(|part| part != "..");
    if !inside {
        anyhow::bail!(
            "file path {path:?} must stay inside the instance's working folder: relative, without `..`"
        );
    }
    Ok(())
}

/// Checks a plugin's command and name, and that its config holds no secret; returns the
/// name (by default, the file name of the command's last argument that is not an option,
/// without its extension: `["python3", "plugins/files.py"]` gives `files`).
pub fn plugin_parts(
    command: &[String],
    name: Option<&str>,
    config: &Json,
) -> anyhow::Result<String> {
    if command.is_empty() || command.iter().any(|c| c.trim().is_empty()) {
        anyhow::bail!("plugin(command = ...) needs a program and its arguments, none empty");
    }
    let name = match name {
        Some(name) => name.to_owned(),
        None => default_plugin_name(command).ok_or_else(|| {
            anyhow::anyhow!("plugin(): give it a name = \"...\"; none follows from the command")
        })?,
    };
    validate::plugin_name(&name)?;
    if let Some(path) = find_kind(config, "secret") {
        anyhow::bail!("plugin(config = ...) holds a secret() at config{path}: config reaches the plugin as written, never resolved; a plugin reads its secrets from its own environment, which it inherits from tend");
    }
    Ok(name)
}

fn default_plugin_name(command: &[String]) -> Option<String> {
    let last = command.iter().rev().find(|a| !a.starts_with('-'))?;
    let stem = std::path::Path::new(last).file_stem()?.to_str()?;
    Some(stem.to_lowercase().replace('_', "-"))
}

/// Checks resource limits, as `resources()` takes them; returns the cpu cores as stored.
pub fn resources(
    memory: Option<&str>,
    cpu: Option<f64>,
    pids: Option<i64>,
) -> anyhow::Result<Option<f64>> {
    if let Some(memory) = memory {
        crate::spec::parse_memory(memory)?;
    }
    let cpu = cpu.map(crate::spec::check_cpu).transpose()?;
    if let Some(pids) = pids {
        crate::spec::check_pids(pids)?;
    }
    if memory.is_none() && cpu.is_none() && pids.is_none() {
        anyhow::bail!("resources() needs at least one of `memory`, `cpu` or `pids`");
    }
    Ok(cpu)
}

/// Checks a `balancer()`'s address: exactly one of a port on 127.0.0.1 or a whole address.
pub fn balancer_listen(port: Option<i64>, listen: Option<&str>) -> anyhow::Result<String> {
    let listen = match (port, listen) {
        (Some(p), None) => format!("127.0.0.1:{}", validate::port(p)?),
        (None, Some(address)) => address.to_owned(),
        _ => anyhow::bail!("balancer() needs exactly one of `port` or `listen`"),
    };
    validate::listen(&listen)?;
    Ok(listen)
}

/// Checks a `rolling()` policy's numbers and words.
pub fn rolling_parts(
    max_unavailable: i64,
    max_surge: i64,
    min_ready: &str,
    health_timeout: &str,
    on_failure: &str,
) -> anyhow::Result<()> {
    if max_unavailable < 0 || max_surge < 0 {
        anyhow::bail!("max_unavailable and max_surge must not be negative");
    }
    duration_param("min_ready", min_ready)?;
    duration_param("health_timeout", health_timeout)?;
    self::on_failure(on_failure)?;
    Ok(())
}

/// Parses a duration parameter, naming it on error.
pub fn duration_param(param: &str, text: &str) -> anyhow::Result<()> {
    duration(text)
        .map(|_| ())
        .map_err(|e| anyhow::anyhow!("`{param}`: {e}"))
}

/// Checks the image a `docker()` or `vagrant()` provider runs.
pub fn provider_image(provider: &str, image: &str) -> anyhow::Result<()> {
    if image.trim().is_empty() {
        anyhow::bail!("{provider}() needs an image");
    }
    Ok(())
}

/// Checks a health check's timings and its count of failures in a row.
pub fn health_timings(
    grace_period: &str,
    interval: &str,
    timeout: &str,
    failures: i64,
) -> anyhow::Result<()> {
    duration_param("grace_period", grace_period)?;
    duration_param("interval", interval)?;
    duration_param("timeout", timeout)?;
    if failures < 1 {
        return Err(SpecError::ZeroFailures.into());
    }
    Ok(())
}
