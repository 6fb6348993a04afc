//! The Starlark builtins of a spec: `group`, `flavor`, `combo`, providers, health checks,
//! update policies, `secret` and `project`.
//!
//! Each builtin checks its arguments where it is called, so an error points at the call.

// Builtins mirror their Starlark signatures keyword for keyword, so some take many.
#![allow(clippy::too_many_arguments)]

use starlark::environment::GlobalsBuilder;
use starlark::eval::Evaluator;
use starlark::starlark_module;
use starlark::values::dict::{AllocDict, UnpackDictEntries};
use starlark::values::list_or_tuple::UnpackListOrTuple;
use starlark::values::none::NoneType;
use starlark::values::structs::{AllocStruct, StructRef};
use starlark::values::tuple::UnpackTuple;
use starlark::values::{Heap, Value};

use super::convert;
use super::declare::{self, GroupParts};
use super::diagnostics::location;
use super::recorder::{EvalContext, SpecRecorder};
use crate::spec::validate;

fn recorder<'a>(eval: &Evaluator<'_, 'a, '_>) -> anyhow::Result<&'a SpecRecorder> {
    eval.extra
        .and_then(|extra| extra.downcast_ref::<EvalContext>())
        .map(|context| &context.recorder)
        .ok_or_else(|| anyhow::anyhow!("internal error: builtin called outside a spec evaluation"))
}

fn alloc_struct<'v>(heap: Heap<'v>, fields: Vec<(&str, Value<'v>)>) -> Value<'v> {
    heap.alloc(AllocStruct(fields))
}

/// A struct with just its `kind` and one field naming which one: `process()`, `sim()`,
/// `recreate()`.
fn marker<'v>(heap: Heap<'v>, kind: &str, key: &str, value: &str) -> Value<'v> {
    alloc_struct(
        heap,
        vec![("kind", heap.alloc(kind)), (key, heap.alloc(value))],
    )
}

fn opt_str<'v>(heap: Heap<'v>, value: Option<&str>) -> Value<'v> {
    value.map_or_else(Value::new_none, |s| heap.alloc(s))
}

fn check_duration(param: &str, text: &str) -> anyhow::Result<()> {
    convert::duration_param(param, text)
}

/// A `port("name")` value.
fn named_port<'v>(heap: Heap<'v>, name: &str) -> anyhow::Result<Value<'v>> {
    convert::named_port(name)?;
    Ok(alloc_struct(
        heap,
        vec![("kind", heap.alloc("port")), ("name", heap.alloc(name))],
    ))
}

/// The name of a `port("name")` value, or of a plain port name string.
fn port_name_of(value: Value<'_>) -> Option<String> {
    if let Some(text) = value.unpack_str() {
        return (!crate::template::is_template(text)).then(|| text.to_owned());
    }
    let json = value.to_json_value().ok()?;
    (json.get("kind")?.as_str()? == "port")
        .then(|| json.get("name")?.as_str().map(str::to_owned))
        .flatten()
}

/// A port argument: a number in range, one of the instance's own ports (`port("http")` or
/// `"http"`), or a template string.
fn port_value<'v>(heap: Heap<'v>, port: Value<'v>) -> anyhow::Result<Value<'v>> {
    let json = port.to_json_value().map_err(|_| {
        anyhow::anyhow!(
            "`port` must be a number, port(\"name\") or a template string, got {}",
            port.get_type()
        )
    })?;
    match convert::port_value(&json)? {
        serde_json::Value::Object(port) => named_port(
            heap,
            port.get("name")
                .and_then(|n| n.as_str())
                .unwrap_or_default(),
        ),
        other => Ok(heap.alloc(other)),
    }
}

fn health_struct<'v>(
    heap: Heap<'v>,
    probe: Value<'v>,
    grace_period: &str,
    interval: &str,
    timeout: &str,
    failures: i32,
) -> anyhow::Result<Value<'v>> {
    convert::health_timings(grace_period, interval, timeout, i64::from(failures))?;
    let value = alloc_struct(
        heap,
        vec![
            ("kind", heap.alloc("health")),
            ("probe", probe),
            ("grace_period", heap.alloc(grace_period)),
            ("interval", heap.alloc(interval)),
            ("timeout", heap.alloc(timeout)),
            ("failures", heap.alloc(failures)),
        ],
    );
    convert::health(value.to_json_value()?)?;
    Ok(value)
}

/// A provider's `ports = {container port: host port}`, checked as every front end checks it.
fn published_ports<'v>(
    heap: Heap<'v>,
    ports: Option<starlark::values::dict::UnpackDictEntries<Value<'v>, Value<'v>>>,
) -> anyhow::Result<Value<'v>> {
    let mut entries = Vec::new();
    for (inside, outside) in ports.map(|p| p.entries).unwrap_or_default() {
        let json = |v: Value<'v>| match v.unpack_i32() {
            Some(n) => serde_json::Value::from(n),
            None => v.to_json_value().unwrap_or(serde_json::Value::Null),
        };
        entries.push((json(inside), json(outside)));
    }
    Ok(
        heap.alloc(serde_json::Value::Object(convert::published_ports(
            entries,
        )?)),
    )
}

/// A list of strings such as a command; says which item is wrong, and that secrets
/// belong in `env`.
fn string_list(param: &str, items: UnpackListOrTuple<Value<'_>>) -> anyhow::Result<Vec<String>> {
    items
        .items
        .into_iter()
        .enumerate()
        .map(|(i, item)| match item.unpack_str() {
            Some(text) => Ok(text.to_owned()),
            None => {
                let json = item.to_json_value().unwrap_or(serde_json::Value::Null);
                let what = convert::describe_kind(&json);
                if what == "a secret" {
                    anyhow::bail!("`{param}[{i}]` is a secret: secrets can only be `env` values, so they never show in a process list")
                }
                anyhow::bail!("`{param}[{i}]` must be a string, got {}", item.get_type())
            }
        })
        .collect()
}

/// Names of the fields of a flavor struct, in the order `flavor()` writes them.
const FLAVOR_FIELDS: [&str; 11] = [
    "command",
    "env",
    "files",
    "secret_files",
    "labels",
    "workdir",
    "health",
    "drain",
    "resources",
    "ports",
    "expose",
];

/// The flavor fields that are dicts, merged key by key by `combo()`.
const FLAVOR_DICTS: [&str; 4] = ["env", "files", "secret_files", "labels"];

/// The builtins of a spec, as Starlark globals.
#[starlark_module]
pub(crate) fn tend_builtins(builder: &mut GlobalsBuilder) {
    /// Declares a group of instances kept at an allocation (`size = N` or `ids = [...]`).
    /// Returns a handle usable in `depends_on`.
    fn group<'v>(
        #[starlark(require = named)] name: &str,
        #[starlark(require = named)] provider: Value<'v>,
        #[starlark(require = named)] flavor: Value<'v>,
        #[starlark(require = named)] size: Option<i32>,
        #[starlark(require = named)] ids: Option<UnpackListOrTuple<String>>,
        #[starlark(require = named)] depends_on: Option<UnpackListOrTuple<Value<'v>>>,
        #[starlark(require = named)] update: Option<Value<'v>>,
        #[starlark(require = named)] expose: Option<Value<'v>>,
        eval: &mut Evaluator<'v, '_, '_>,
    ) -> anyhow::Result<Value<'v>> {
        let mut deps = Vec::new();
        for dep in depends_on.map(|d| d.items).unwrap_or_default() {
            deps.push(dependency_name(dep)?);
        }
        let json_of = |value: Option<Value<'v>>| -> anyhow::Result<Option<serde_json::Value>> {
            value
                .filter(|v| !v.is_none())
                .map(|v| v.to_json_value())
                .transpose()
        };
        let group = declare::group(GroupParts {
            name: name.to_owned(),
            size: size.map(i64::from),
            ids: ids.map(|i| i.items),
            provider: provider.to_json_value()?,
            flavor: flavor.to_json_value()?,
            depends_on: deps,
            update: json_of(update)?,
            expose: json_of(expose)?,
            origin: eval.call_stack_top_location().map(|span| location(&span)),
        })?;
        let heap = eval.heap();
        let handle = alloc_struct(
            heap,
            vec![
                ("kind", heap.alloc("group")),
                ("name", heap.alloc(name)),
                ("size", heap.alloc(group.allocation.len() as i32)),
                ("ids", heap.alloc(declare::handle_ids(&group.allocation))),
            ],
        );
        recorder(eval)?.add_group(group)?;
        Ok(handle)
    }

    /// What an instance runs and how to judge it. Strings are templates rendered per instance.
    /// `files` are written into the instance's working folder; `secret_files` maps paths
    /// there to `secret("NAME")` values, written to memory (tmpfs) and mounted read-only;
    /// `resources` (from `resources()`) limits what it may use; `ports` names the ports
    /// each instance gets for itself (`{{ instance.ports.<name> }}`); `expose` (from
    /// `balancer()`) is the balancer its groups get unless they say otherwise.
    fn flavor<'v>(
        #[starlark(require = named)] command: Option<UnpackListOrTuple<Value<'v>>>,
        #[starlark(require = named)] env: Option<UnpackDictEntries<String, Value<'v>>>,
        #[starlark(require = named)] files: Option<UnpackDictEntries<String, String>>,
        #[starlark(require = named)] secret_files: Option<UnpackDictEntries<String, Value<'v>>>,
        #[starlark(require = named)] labels: Option<UnpackDictEntries<String, String>>,
        #[starlark(require = named)] workdir: Option<&str>,
        #[starlark(require = named)] health: Option<Value<'v>>,
        #[starlark(require = named)] drain_command: Option<UnpackListOrTuple<Value<'v>>>,
        #[starlark(require = named, default = "10s")] drain_timeout: &str,
        #[starlark(require = named)] resources: Option<Value<'v>>,
        #[starlark(require = named)] ports: Option<UnpackListOrTuple<Value<'v>>>,
        #[starlark(require = named)] expose: Option<Value<'v>>,
        heap: Heap<'v>,
    ) -> anyhow::Result<Value<'v>> {
        check_duration("drain_timeout", drain_timeout)?;
        let expose = expose.filter(|e| !e.is_none());
        if let Some(e) = expose {
            convert::expose(e.to_json_value()?)?;
        }
        let mut port_names: Vec<String> = Vec::new();
        for (i, item) in ports
            .map(|p| p.items)
            .unwrap_or_default()
            .into_iter()
            .enumerate()
        {
            let name = port_name_of(item).ok_or_else(|| {
                anyhow::anyhow!(
                    "`ports[{i}]` must be a port name such as \"http\" or port(\"http\"), got {}",
                    item.get_type()
                )
            })?;
            validate::port_name(&name)?;
            if port_names.contains(&name) {
                anyhow::bail!("`ports` names {name:?} twice");
            }
            port_names.push(name);
        }
        let command = command.map(|c| string_list("command", c)).transpose()?;
        let drain_command = drain_command
            .map(|c| string_list("drain_command", c))
            .transpose()?;
        let files = files.map(|f| f.entries).unwrap_or_default();
        let secret_files = secret_files.map(|f| f.entries).unwrap_or_default();
        for path in files
            .iter()
            .map(|f| &f.0)
            .chain(secret_files.iter().map(|f| &f.0))
        {
            convert::instance_path(path)?;
        }
        for (path, value) in &secret_files {
            let is_secret = value
                .to_json_value()
                .ok()
                .is_some_and(|j| j.get("kind").and_then(|k| k.as_str()) == Some("secret"));
            if !is_secret {
                anyhow::bail!(
                    "`secret_files[{path:?}]` must be secret(\"NAME\"); plain content goes in `files`"
                );
            }
        }
        if let Some(given) = resources {
            let json = given.to_json_value().unwrap_or(serde_json::Value::Null);
            if json.get("kind").and_then(|k| k.as_str()) != Some("resources") {
                anyhow::bail!(
                    "`resources` must be resources(...), got {}",
                    convert::describe_kind(&json)
                );
            }
        }
        let health = health.unwrap_or_else(Value::new_none);
        let drain = alloc_struct(
            heap,
            vec![
                (
                    "command",
                    drain_command.map_or_else(Value::new_none, |c| heap.alloc(c)),
                ),
                ("timeout", heap.alloc(drain_timeout)),
            ],
        );
        let value = alloc_struct(
            heap,
            vec![
                ("kind", heap.alloc("flavor")),
                ("command", heap.alloc(command.unwrap_or_default())),
                (
                    "env",
                    heap.alloc(AllocDict(env.map(|e| e.entries).unwrap_or_default())),
                ),
                ("files", heap.alloc(AllocDict(files))),
                ("secret_files", heap.alloc(AllocDict(secret_files))),
                (
                    "labels",
                    heap.alloc(AllocDict(labels.map(|l| l.entries).unwrap_or_default())),
                ),
                ("workdir", opt_str(heap, workdir)),
                ("health", health),
                ("drain", drain),
                ("resources", resources.unwrap_or_else(Value::new_none)),
                ("ports", heap.alloc(port_names)),
                ("expose", expose.unwrap_or_else(Value::new_none)),
            ],
        );
        convert::flavor(value.to_json_value()?)?;
        Ok(value)
    }

    /// Merges flavors left to right: later commands, health checks and drains win;
    /// env, files, secret_files and labels are merged key by key.
    fn combo<'v>(
        #[starlark(args)] flavors: UnpackTuple<Value<'v>>,
        heap: Heap<'v>,
    ) -> anyhow::Result<Value<'v>> {
        let mut merged: Vec<(String, Value<'v>)> = Vec::new();
        let mut dicts: [Vec<(Value<'v>, Value<'v>)>; 4] = Default::default();
        let mut ports: Vec<Value<'v>> = Vec::new();
        for (position, flavor) in flavors.items.iter().enumerate() {
            convert::flavor(flavor.to_json_value()?)
                .map_err(|e| anyhow::anyhow!("argument {} of combo(): {e}", position + 1))?;
            let Some(fields) = StructRef::from_value(*flavor) else {
                anyhow::bail!("argument {} of combo() is not a flavor", position + 1);
            };
            for (key, value) in fields.iter() {
                let key = key.as_str();
                if let Some(slot) = FLAVOR_DICTS.iter().position(|k| *k == key) {
                    let entries = starlark::values::dict::DictRef::from_value(value)
                        .map(|d| d.iter().collect::<Vec<_>>())
                        .unwrap_or_default();
                    for (k, v) in entries {
                        dicts[slot].retain(|(old, _)| old.equals(k).ok() != Some(true));
                        dicts[slot].push((k, v));
                    }
                    continue;
                }
                if key == "ports" {
                    for name in value.iterate(heap).into_iter().flatten() {
                        if !ports.iter().any(|p| p.equals(name).ok() == Some(true)) {
                            ports.push(name);
                        }
                    }
                    continue;
                }
                let empty = value.is_none() || (key == "command" && value.length().ok() == Some(0));
                if empty && merged.iter().any(|(k, _)| k == key) {
                    continue;
                }
                merged.retain(|(k, _)| k != key);
                merged.push((key.to_owned(), value));
            }
        }
        let mut fields: Vec<(String, Value<'v>)> = vec![("kind".to_owned(), heap.alloc("flavor"))];
        for name in FLAVOR_FIELDS {
            let value = match FLAVOR_DICTS.iter().position(|k| *k == name) {
                _ if name == "ports" => heap.alloc(std::mem::take(&mut ports)),
                Some(slot) => heap.alloc(AllocDict(std::mem::take(&mut dicts[slot]))),
                None => merged
                    .iter()
                    .find(|(k, _)| k == name)
                    .map(|(_, v)| *v)
                    .unwrap_or_else(Value::new_none),
            };
            fields.push((name.to_owned(), value));
        }
        Ok(heap.alloc(AllocStruct(fields)))
    }

    /// Instances as local OS processes, each in a session of its own and, where tend may
    /// make them, in cgroups of its own (`cgroups = False` keeps to the session alone; then
    /// `resources()` cannot be enforced). `machine` names the machine the instances live on:
    /// only a tend there sees and keeps them; with an etcd store it is required.
    fn process<'v>(
        #[starlark(require = named, default = true)] cgroups: bool,
        #[starlark(require = named)] machine: Option<&str>,
        heap: Heap<'v>,
    ) -> anyhow::Result<Value<'v>> {
        let mut fields = vec![
            ("kind", heap.alloc("provider")),
            ("type", heap.alloc("process")),
        ];
        if !cgroups {
            fields.push(("cgroups", heap.alloc(false)));
        }
        if let Some(machine) = machine {
            if machine.trim().is_empty() {
                anyhow::bail!("process(machine = ...) needs a machine's name");
            }
            fields.push(("machine", heap.alloc(machine)));
        }
        Ok(alloc_struct(heap, fields))
    }

    /// Simulated instances, kept as JSON in the state folder: for spec tests and plans.
    /// `visible_after` makes a new instance show only that long after it was created, as a
    /// slow cloud API would; `ready_after` makes it pass its health checks only that long
    /// after it started, as a slow program would.
    fn sim<'v>(
        #[starlark(require = named)] visible_after: Option<&str>,
        #[starlark(require = named)] ready_after: Option<&str>,
        heap: Heap<'v>,
    ) -> anyhow::Result<Value<'v>> {
        if visible_after.is_none() && ready_after.is_none() {
            return Ok(marker(heap, "provider", "type", "sim"));
        }
        let mut fields = vec![
            ("kind", heap.alloc("provider")),
            ("type", heap.alloc("sim")),
        ];
        for (name, value) in [
            ("visible_after", visible_after),
            ("ready_after", ready_after),
        ] {
            if let Some(delay) = value {
                check_duration(name, delay)?;
                fields.push((name, heap.alloc(delay)));
            }
        }
        Ok(alloc_struct(heap, fields))
    }

    /// Instances made by an external program that speaks tend's plugin protocol
    /// (`docs/plugins.md`): `command` starts it, in the spec's folder; `config` (a dict of
    /// plain values) reaches its `initialize`; groups use it by `name` (by default, the
    /// file name of the command's last argument without its extension).
    fn plugin<'v>(
        #[starlark(require = named)] command: UnpackListOrTuple<Value<'v>>,
        #[starlark(require = named)] config: Option<Value<'v>>,
        #[starlark(require = named)] name: Option<&str>,
        heap: Heap<'v>,
    ) -> anyhow::Result<Value<'v>> {
        let command = string_list("command", command)?;
        let config_json = match config {
            Some(config) if config.get_type() == "dict" => config
                .to_json_value()
                .map_err(|e| anyhow::anyhow!("plugin(config = ...) must hold plain values (strings, numbers, bools, lists, dicts): {e}"))?,
            _ => serde_json::Value::Null,
        };
        let name = convert::plugin_parts(&command, name, &config_json)?;
        let config = match config {
            None => heap.alloc(AllocDict(Vec::<(Value<'v>, Value<'v>)>::new())),
            Some(config) => {
                if config.get_type() != "dict" {
                    anyhow::bail!(
                        "plugin(config = ...) must be a dict, got {}",
                        config.get_type()
                    );
                }
                config
            }
        };
        Ok(alloc_struct(
            heap,
            vec![
                ("kind", heap.alloc("provider")),
                ("type", heap.alloc("plugin")),
                ("name", heap.alloc(name)),
                ("command", heap.alloc(command)),
                ("config", config),
            ],
        ))
    }

    /// Instances as containers on a Docker Engine. `ports` maps a container port to a host
    /// port on 127.0.0.1 (a number, a template such as "{{ 18000 + instance.index }}", or 0
    /// for one the engine picks). tend never pulls `image` unless `pull = True`.
    fn docker<'v>(
        #[starlark(require = pos)] image: &str,
        #[starlark(require = named)] ports: Option<
            starlark::values::dict::UnpackDictEntries<Value<'v>, Value<'v>>,
        >,
        #[starlark(require = named)] network: Option<&str>,
        #[starlark(require = named)] host: Option<&str>,
        #[starlark(require = named, default = false)] pull: bool,
        heap: Heap<'v>,
    ) -> anyhow::Result<Value<'v>> {
        convert::provider_image("docker", image)?;
        let mapped = published_ports(heap, ports)?;
        if let Some(h) = host {
            convert::docker_host(h)?;
        }
        let mut fields = vec![
            ("kind", heap.alloc("provider")),
            ("type", heap.alloc("docker")),
            ("image", heap.alloc(image)),
            ("ports", mapped),
            ("pull", heap.alloc(pull)),
        ];
        if let Some(n) = network {
            fields.push(("network", heap.alloc(n)));
        }
        if let Some(h) = host {
            fields.push(("host", heap.alloc(h)));
        }
        Ok(alloc_struct(heap, fields))
    }

    /// Instances as the keys of one Terraform resource per group (`terraform_data`, the one
    /// that works offline), made by the `terraform` on PATH: the flavor's command runs
    /// through its `local-exec` provisioners.
    fn terraform<'v>(
        #[starlark(require = named, default = "terraform_data")] resource: &str,
        heap: Heap<'v>,
    ) -> anyhow::Result<Value<'v>> {
        convert::terraform_resource(resource)?;
        Ok(alloc_struct(
            heap,
            vec![
                ("kind", heap.alloc("provider")),
                ("type", heap.alloc("terraform")),
                ("resource", heap.alloc(resource)),
            ],
        ))
    }

    /// Containers made by Vagrant's docker provider, one Vagrant machine per instance:
    /// `image` must be on the engine already (tend never pulls it); `ports` maps container
    /// ports to host ports on 127.0.0.1 (0: the engine picks one).
    fn vagrant<'v>(
        #[starlark(require = named)] image: &str,
        #[starlark(require = named)] ports: Option<
            starlark::values::dict::UnpackDictEntries<Value<'v>, Value<'v>>,
        >,
        heap: Heap<'v>,
    ) -> anyhow::Result<Value<'v>> {
        convert::provider_image("vagrant", image)?;
        let mapped = published_ports(heap, ports)?;
        Ok(alloc_struct(
            heap,
            vec![
                ("kind", heap.alloc("provider")),
                ("type", heap.alloc("vagrant")),
                ("image", heap.alloc(image)),
                ("ports", mapped),
            ],
        ))
    }

    /// Health check: an HTTP GET that must answer 2xx or 3xx.
    fn http<'v>(
        #[starlark(require = named)] port: Value<'v>,
        #[starlark(require = named, default = "/")] path: &str,
        #[starlark(require = named, default = "5s")] grace_period: &str,
        #[starlark(require = named, default = "2s")] interval: &str,
        #[starlark(require = named, default = "1s")] timeout: &str,
        #[starlark(require = named, default = 3)] failures: i32,
        heap: Heap<'v>,
    ) -> anyhow::Result<Value<'v>> {
        let probe = alloc_struct(
            heap,
            vec![
                ("kind", heap.alloc("http")),
                ("port", port_value(heap, port)?),
                ("path", heap.alloc(path)),
            ],
        );
        health_struct(heap, probe, grace_period, interval, timeout, failures)
    }

    /// Health check: a TCP connection that must be accepted.
    fn tcp<'v>(
        #[starlark(require = named)] port: Value<'v>,
        #[starlark(require = named, default = "5s")] grace_period: &str,
        #[starlark(require = named, default = "2s")] interval: &str,
        #[starlark(require = named, default = "1s")] timeout: &str,
        #[starlark(require = named, default = 3)] failures: i32,
        heap: Heap<'v>,
    ) -> anyhow::Result<Value<'v>> {
        let probe = alloc_struct(
            heap,
            vec![
                ("kind", heap.alloc("tcp")),
                ("port", port_value(heap, port)?),
            ],
        );
        health_struct(heap, probe, grace_period, interval, timeout, failures)
    }

    /// Health check: a command that must exit 0.
    fn exec<'v>(
        #[starlark(require = named)] command: UnpackListOrTuple<Value<'v>>,
        #[starlark(require = named, default = "5s")] grace_period: &str,
        #[starlark(require = named, default = "2s")] interval: &str,
        #[starlark(require = named, default = "1s")] timeout: &str,
        #[starlark(require = named, default = 3)] failures: i32,
        heap: Heap<'v>,
    ) -> anyhow::Result<Value<'v>> {
        let command = string_list("command", command)?;
        if command.is_empty() {
            anyhow::bail!("exec() needs a command with at least a program");
        }
        let probe = alloc_struct(
            heap,
            vec![
                ("kind", heap.alloc("exec")),
                ("command", heap.alloc(command)),
            ],
        );
        health_struct(heap, probe, grace_period, interval, timeout, failures)
    }

    /// A port of the instance's own, by name: tend allocates a free one per instance, and
    /// templates read it as `{{ instance.ports.<name> }}`. Use it in `flavor(ports = [...])`
    /// and as a health check's `port`.
    fn port<'v>(
        #[starlark(require = pos)] name: &str,
        heap: Heap<'v>,
    ) -> anyhow::Result<Value<'v>> {
        named_port(heap, name)
    }

    /// A TCP balancer in front of a group, served by `tend run`: `port` listens on
    /// 127.0.0.1 (or give the whole `listen` address). New connections go only to live,
    /// healthy instances (`strategy`: "round_robin" or "least_connections"), on the port
    /// named by `target` (default: the instance's address). An instance leaving is taken out
    /// of rotation first, and its open connections get `drain_timeout` to finish.
    fn balancer<'v>(
        #[starlark(require = named)] port: Option<i32>,
        #[starlark(require = named)] listen: Option<&str>,
        #[starlark(require = named)] target: Option<Value<'v>>,
        #[starlark(require = named, default = "round_robin")] strategy: &str,
        #[starlark(require = named, default = "5s")] drain_timeout: &str,
        heap: Heap<'v>,
    ) -> anyhow::Result<Value<'v>> {
        let listen = convert::balancer_listen(port.map(i64::from), listen)?;
        check_duration("drain_timeout", drain_timeout)?;
        let target = match target {
            None => Value::new_none(),
            Some(t) => {
                let name = port_name_of(t).ok_or_else(|| {
                    anyhow::anyhow!(
                        "`target` must be a port name such as \"http\", got {}",
                        t.get_type()
                    )
                })?;
                validate::port_name(&name)?;
                heap.alloc(name)
            }
        };
        let value = alloc_struct(
            heap,
            vec![
                ("kind", heap.alloc("balancer")),
                ("listen", heap.alloc(listen)),
                ("target", target),
                ("strategy", heap.alloc(strategy)),
                ("drain_timeout", heap.alloc(drain_timeout)),
            ],
        );
        convert::expose(value.to_json_value()?)?;
        Ok(value)
    }

    /// Update policy: replace outdated instances in batches behind health gates.
    fn rolling<'v>(
        #[starlark(require = named, default = 1)] max_unavailable: i32,
        #[starlark(require = named, default = 0)] max_surge: i32,
        #[starlark(require = named, default = "0s")] min_ready: &str,
        #[starlark(require = named, default = "5m")] health_timeout: &str,
        #[starlark(require = named, default = "pause")] on_failure: &str,
        heap: Heap<'v>,
    ) -> anyhow::Result<Value<'v>> {
        convert::rolling_parts(
            i64::from(max_unavailable),
            i64::from(max_surge),
            min_ready,
            health_timeout,
            on_failure,
        )?;
        let value = alloc_struct(
            heap,
            vec![
                ("kind", heap.alloc("update")),
                ("strategy", heap.alloc("rolling")),
                ("max_unavailable", heap.alloc(max_unavailable)),
                ("max_surge", heap.alloc(max_surge)),
                ("min_ready", heap.alloc(min_ready)),
                ("health_timeout", heap.alloc(health_timeout)),
                ("on_failure", heap.alloc(on_failure)),
            ],
        );
        convert::update(value.to_json_value()?)?;
        Ok(value)
    }

    /// Update policy: destroy every outdated instance, then create the new ones.
    fn recreate<'v>(heap: Heap<'v>) -> anyhow::Result<Value<'v>> {
        Ok(marker(heap, "update", "strategy", "recreate"))
    }

    /// A secret read from tend's environment variable `name` at apply time.
    /// Only the name is ever stored or printed. Use it as an `env` value, or as a
    /// `secret_files` value. With `docker()`, an env value is part of the container's
    /// configuration, where `docker inspect` shows it: prefer `secret_files`, which reach
    /// the container as a read-only file mounted from memory.
    fn secret<'v>(
        #[starlark(require = pos)] name: &str,
        heap: Heap<'v>,
    ) -> anyhow::Result<Value<'v>> {
        validate::env_name(name)?;
        Ok(alloc_struct(
            heap,
            vec![("kind", heap.alloc("secret")), ("secret", heap.alloc(name))],
        ))
    }

    /// Limits for an instance, the same for every provider: `memory` as `"256M"` or `"1G"`
    /// (powers of 1024), `cpu` in cores (`0.5` is half a core), `pids` the most processes
    /// at once. An instance killed for going over its memory is reported `oom`.
    fn resources<'v>(
        #[starlark(require = named)] memory: Option<&str>,
        #[starlark(require = named)] cpu: Option<Value<'v>>,
        #[starlark(require = named)] pids: Option<i32>,
        heap: Heap<'v>,
    ) -> anyhow::Result<Value<'v>> {
        let cores = match cpu {
            None => None,
            Some(v) => Some(
                v.unpack_i32()
                    .map(f64::from)
                    .or_else(|| v.to_json_value().ok().and_then(|j| j.as_f64()))
                    .ok_or_else(|| {
                        anyhow::anyhow!("`cpu` must be a number of cores, got {}", v.get_type())
                    })?,
            ),
        };
        let cpu = convert::resources(memory, cores, pids.map(i64::from))?;
        Ok(alloc_struct(
            heap,
            vec![
                ("kind", heap.alloc("resources")),
                ("memory", opt_str(heap, memory)),
                ("cpu", cpu.map_or_else(Value::new_none, |c| heap.alloc(c))),
                ("pids", pids.map_or_else(Value::new_none, |p| heap.alloc(p))),
            ],
        ))
    }

    /// Names the project every instance is tagged with (default: the spec's folder name).
    /// `ports = "20000-32767"` is the range instance ports are allocated from (`--ports`
    /// overrides it).
    fn project(
        #[starlark(require = named)] name: &str,
        #[starlark(require = named)] ports: Option<&str>,
        eval: &mut Evaluator<'_, '_, '_>,
    ) -> anyhow::Result<NoneType> {
        validate::project_name(name)?;
        let ports = ports
            .map(str::parse::<crate::spec::PortRange>)
            .transpose()?;
        let at = eval.call_stack_top_location().map(|span| location(&span));
        recorder(eval)?.set_project(name.to_owned(), ports, at)?;
        Ok(NoneType)
    }
}

/// A `depends_on` entry: a group handle or a group name.
fn dependency_name(value: Value<'_>) -> anyhow::Result<String> {
    if let Some(name) = value.unpack_str() {
        return Ok(name.to_owned());
    }
    let json = value.to_json_value()?;
    match json.get("kind").and_then(|k| k.as_str()) {
        Some("group") => json
            .get("name")
            .and_then(|n| n.as_str())
            .map(str::to_owned)
            .ok_or_else(|| anyhow::anyhow!("group handle has no name")),
        _ => anyhow::bail!(
            "`depends_on` takes groups or group names, got {}",
            convert::describe_kind(&json)
        ),
    }
}
