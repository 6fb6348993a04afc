//! From the records a Nickel spec writes (`provider = { docker = {...} }`,
//! `health = { http = {...} }`, `update = { rolling = {...} }`) to the structs the Starlark
//! builtins build, checked with the same functions those builtins call. The shipped
//! contract has already checked field names and types, and filled in defaults.

use serde_json::{json, Map, Value as Json};

use crate::lang::convert;
use crate::spec::validate;

/// A problem, with the path (under the value being read) of the field it is in.
#[derive(Debug)]
pub struct Located {
    /// The field's path, such as `docker.image` or `command[2]`.
    pub path: String,
    /// What is wrong.
    pub error: anyhow::Error,
}

impl Located {
    /// The same problem, seen from the record holding `field`.
    pub fn under(self, field: &str) -> Located {
        let path = if self.path.is_empty() {
            field.to_owned()
        } else if self.path.starts_with('[') {
            format!("{field}{}", self.path)
        } else {
            format!("{field}.{}", self.path)
        };
        Located {
            path,
            error: self.error,
        }
    }
}

fn at<E: Into<anyhow::Error>>(path: &str) -> impl FnOnce(E) -> Located + '_ {
    move |error| Located {
        path: path.to_owned(),
        error: error.into(),
    }
}

/// A field that must be a whole number (Nickel numbers may be fractions), if present.
pub fn whole(record: &Json, field: &str) -> Result<Option<i64>, Located> {
    match record.get(field) {
        None | Some(Json::Null) => Ok(None),
        Some(n) => n
            .as_i64()
            .map(Some)
            .ok_or_else(|| at(field)(anyhow::anyhow!("`{field}` must be a whole number, got {n}"))),
    }
}

fn text<'a>(record: &'a Json, field: &str) -> Option<&'a str> {
    record.get(field).and_then(Json::as_str)
}

fn strings(value: &Json) -> Vec<String> {
    value
        .as_array()
        .map(|items| {
            items
                .iter()
                .map(|i| i.as_str().unwrap_or_default().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// The one field of a `{ choice = {...} }` record (the contract allows only known ones).
fn choice<'a>(
    value: &'a Json,
    what: &str,
    choices: &[&str],
) -> Result<(&'a str, &'a Json), Located> {
    let given: Vec<(&String, &Json)> = value.as_object().into_iter().flatten().collect();
    match given.as_slice() {
        [(name, args)] => Ok((name.as_str(), args)),
        _ => Err(at("")(anyhow::anyhow!(
            "{what} needs exactly one of {}, got {}",
            choices.join(", "),
            given.len()
        ))),
    }
}

fn published(ports: Option<&Json>) -> Result<Json, Located> {
    let entries = ports
        .and_then(Json::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| (Json::String(k.clone()), v.clone()))
                .collect()
        })
        .unwrap_or_default();
    convert::published_ports(entries)
        .map(Json::Object)
        .map_err(at("ports"))
}

/// A provider record as the struct `process()`, `docker()`, ... build.
pub fn provider(value: &Json) -> Result<Json, Located> {
    let (kind, args) = choice(
        value,
        "a provider",
        &["process", "docker", "sim", "terraform", "vagrant", "plugin"],
    )?;
    let inside = |e: Located| e.under(kind);
    let mut fields = Map::new();
    fields.insert("kind".into(), json!("provider"));
    fields.insert("type".into(), json!(kind));
    match kind {
        "process" => {
            if args.get("cgroups") == Some(&json!(false)) {
                fields.insert("cgroups".into(), json!(false));
            }
            if let Some(machine) = text(args, "machine") {
                if machine.trim().is_empty() {
                    return Err(inside(at("machine")(anyhow::anyhow!(
                        "process(machine = ...) needs a machine's name"
                    ))));
                }
                fields.insert("machine".into(), json!(machine));
            }
        }
        "docker" => {
            let image = text(args, "image").unwrap_or_default();
            convert::provider_image("docker", image).map_err(|e| inside(at("image")(e)))?;
            if let Some(host) = text(args, "host") {
                convert::docker_host(host).map_err(|e| inside(at("host")(e)))?;
            }
            fields.insert("image".into(), json!(image));
            fields.insert(
                "ports".into(),
                published(args.get("ports")).map_err(inside)?,
            );
            fields.insert(
                "pull".into(),
                args.get("pull").cloned().unwrap_or(json!(false)),
            );
            for optional in ["network", "host"] {
                if let Some(v) = args.get(optional) {
                    fields.insert(optional.into(), v.clone());
                }
            }
        }
        "sim" => {
            for delay in ["visible_after", "ready_after"] {
                if let Some(v) = text(args, delay) {
                    convert::duration_param(delay, v).map_err(|e| inside(at(delay)(e)))?;
                    fields.insert(delay.into(), json!(v));
                }
            }
        }
        "terraform" => {
            let resource = text(args, "resource").unwrap_or("terraform_data");
            convert::terraform_resource(resource).map_err(|e| inside(at("resource")(e)))?;
            fields.insert("resource".into(), json!(resource));
        }
        "vagrant" => {
            let image = text(args, "image").unwrap_or_default();
            convert::provider_image("vagrant", image).map_err(|e| inside(at("image")(e)))?;
            fields.insert("image".into(), json!(image));
            fields.insert(
                "ports".into(),
                published(args.get("ports")).map_err(inside)?,
            );
        }
        "plugin" => {
            let command = strings(&args["command"]);
            let config = args.get("config").cloned().unwrap_or(json!({}));
            let name = convert::plugin_parts(&command, text(args, "name"), &mark_secrets(&config))
                .map_err(|e| inside(at("")(e)))?;
            fields.insert("name".into(), json!(name));
            fields.insert("command".into(), json!(command));
            fields.insert("config".into(), config);
        }
        // The contract names every provider; anything else is refused by `convert`.
        _ => {}
    }
    Ok(Json::Object(fields))
}

/// A `tend.secret "NAME"` as the struct `secret()` builds, its name checked as there.
fn secret(value: &Json, path: &str) -> Result<Json, Located> {
    let name = value["secret"].as_str().unwrap_or_default();
    validate::env_name(name).map_err(at(path))?;
    Ok(json!({"kind": "secret", "secret": name}))
}

/// A plugin's config with every `tend.secret` in it marked as `secret()` marks its
/// structs, so the check every front end makes finds it.
fn mark_secrets(value: &Json) -> Json {
    match value {
        Json::Object(map) if map.len() == 1 && map.get("secret").is_some_and(Json::is_string) => {
            json!({"kind": "secret", "secret": map["secret"]})
        }
        Json::Object(map) => Json::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), mark_secrets(v)))
                .collect(),
        ),
        Json::Array(items) => Json::Array(items.iter().map(mark_secrets).collect()),
        other => other.clone(),
    }
}

/// A flavor record as the struct `flavor()` builds.
pub fn flavor(value: &Json) -> Result<Json, Located> {
    let map = |field: &str| value.get(field).and_then(Json::as_object).cloned();
    let mut env = Map::new();
    for (name, value) in map("env").unwrap_or_default() {
        let value = match value {
            Json::Object(_) => secret(&value, &format!("env.{name}"))?,
            plain => plain,
        };
        env.insert(name, value);
    }
    let files = map("files").unwrap_or_default();
    let mut secret_files = Map::new();
    for (path, value) in map("secret_files").unwrap_or_default() {
        let value = secret(&value, &format!("secret_files.{path}"))?;
        secret_files.insert(path, value);
    }
    for (field, paths) in [("files", &files), ("secret_files", &secret_files)] {
        for path in paths.keys() {
            convert::instance_path(path).map_err(at(field))?;
        }
    }
    let mut ports: Vec<String> = Vec::new();
    for (i, name) in strings(&value["ports"]).into_iter().enumerate() {
        let here = format!("ports[{i}]");
        validate::port_name(&name).map_err(at(&here))?;
        if ports.contains(&name) {
            return Err(at(&here)(anyhow::anyhow!("`ports` names {name:?} twice")));
        }
        ports.push(name);
    }
    let drain_timeout = text(value, "drain_timeout").unwrap_or("10s");
    convert::duration_param("drain_timeout", drain_timeout).map_err(at("drain_timeout"))?;
    let drain_command = value.get("drain_command").map(strings);
    let health = match value.get("health") {
        Some(h) => health(h).map_err(|e| e.under("health"))?,
        None => Json::Null,
    };
    let resources = match value.get("resources") {
        Some(r) => resources(r).map_err(|e| e.under("resources"))?,
        None => Json::Null,
    };
    let expose = match value.get("expose") {
        Some(b) => balancer(b).map_err(|e| e.under("expose"))?,
        None => Json::Null,
    };
    Ok(json!({
        "kind": "flavor",
        "command": strings(&value["command"]),
        "env": env,
        "files": files,
        "secret_files": secret_files,
        "labels": map("labels").unwrap_or_default(),
        "workdir": value.get("workdir").cloned().unwrap_or(Json::Null),
        "health": health,
        "drain": {"command": drain_command, "timeout": drain_timeout},
        "resources": resources,
        "ports": ports,
        "expose": expose,
    }))
}

/// A health record as the struct `http()`, `tcp()` or `exec()` build.
pub fn health(value: &Json) -> Result<Json, Located> {
    let probes: Map<String, Json> = ["http", "tcp", "exec"]
        .into_iter()
        .filter_map(|k| value.get(k).map(|args| (k.to_owned(), args.clone())))
        .collect();
    let probes = Json::Object(probes);
    let (kind, args) = choice(&probes, "a health check", &["http", "tcp", "exec"])?;
    let timing = |field: &str| text(value, field).unwrap_or_default().to_owned();
    let (grace_period, interval, timeout) = (
        timing("grace_period"),
        timing("interval"),
        timing("timeout"),
    );
    let failures = whole(value, "failures")?.unwrap_or(0);
    for (field, written) in [
        ("grace_period", &grace_period),
        ("interval", &interval),
        ("timeout", &timeout),
    ] {
        convert::duration_param(field, written).map_err(at(field))?;
    }
    convert::health_timings(&grace_period, &interval, &timeout, failures)
        .map_err(at("failures"))?;
    let probe = match kind {
        "exec" => {
            let command = strings(&args["command"]);
            if command.is_empty() {
                return Err(at("exec.command")(anyhow::anyhow!(
                    "exec() needs a command with at least a program"
                )));
            }
            json!({"kind": "exec", "command": command})
        }
        _ => {
            let port = convert::port_value(&args["port"]).map_err(|e| Located {
                path: format!("{kind}.port"),
                error: e,
            })?;
            match kind {
                "http" => {
                    json!({"kind": "http", "port": port, "path": text(args, "path").unwrap_or("/")})
                }
                _ => json!({"kind": "tcp", "port": port}),
            }
        }
    };
    Ok(json!({
        "kind": "health",
        "probe": probe,
        "grace_period": grace_period,
        "interval": interval,
        "timeout": timeout,
        "failures": failures,
    }))
}

/// A resources record as the struct `resources()` builds.
fn resources(value: &Json) -> Result<Json, Located> {
    let memory = text(value, "memory");
    let pids = whole(value, "pids")?;
    let cpu = convert::resources(memory, value.get("cpu").and_then(Json::as_f64), pids)
        .map_err(at(""))?;
    Ok(json!({"kind": "resources", "memory": memory, "cpu": cpu, "pids": pids}))
}

/// A balancer record as the struct `balancer()` builds.
pub fn balancer(value: &Json) -> Result<Json, Located> {
    let port = whole(value, "port")?;
    let listen = convert::balancer_listen(port, text(value, "listen")).map_err(at(""))?;
    let drain_timeout = text(value, "drain_timeout").unwrap_or("5s");
    convert::duration_param("drain_timeout", drain_timeout).map_err(at("drain_timeout"))?;
    let target = match text(value, "target") {
        Some(name) => {
            validate::port_name(name).map_err(at("target"))?;
            json!(name)
        }
        None => Json::Null,
    };
    Ok(json!({
        "kind": "balancer",
        "listen": listen,
        "target": target,
        "strategy": text(value, "strategy").unwrap_or("round_robin"),
        "drain_timeout": drain_timeout,
    }))
}

/// An update record as the struct `rolling()` or `recreate()` builds.
pub fn update(value: &Json) -> Result<Json, Located> {
    let (kind, args) = choice(value, "an update policy", &["rolling", "recreate"])?;
    if kind == "recreate" {
        return Ok(json!({"kind": "update", "strategy": "recreate"}));
    }
    let number = |field: &str| {
        whole(args, field)
            .map(|n| n.unwrap_or(-1))
            .map_err(|e| e.under("rolling"))
    };
    let (max_unavailable, max_surge) = (number("max_unavailable")?, number("max_surge")?);
    let word = |field: &str| text(args, field).unwrap_or_default().to_owned();
    let (min_ready, health_timeout, on_failure) = (
        word("min_ready"),
        word("health_timeout"),
        word("on_failure"),
    );
    convert::rolling_parts(
        max_unavailable,
        max_surge,
        &min_ready,
        &health_timeout,
        &on_failure,
    )
    .map_err(at("rolling"))?;
    Ok(json!({
        "kind": "update",
        "strategy": "rolling",
        "max_unavailable": max_unavailable,
        "max_surge": max_surge,
        "min_ready": min_ready,
        "health_timeout": health_timeout,
        "on_failure": on_failure,
    }))
}
