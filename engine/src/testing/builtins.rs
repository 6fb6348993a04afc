//! The builtins of `*_test.star` files: `assert_eq`, `assert_ne`, `assert_true`,
//! `assert_fails`, `spec` (a Starlark or Nickel spec), `plan`, `simulate`, `render` and
//! `snapshot`. They find their settings in the evaluation's harness slot, which only
//! `tend test` fills.

use std::collections::HashMap;
use std::path::Path;

use starlark::environment::GlobalsBuilder;
use starlark::eval::Evaluator;
use starlark::starlark_module;
use starlark::values::list_or_tuple::UnpackListOrTuple;
use starlark::values::none::NoneType;
use starlark::values::{Heap, Value};

use super::runner::TestSettings;
use super::{diff, observed_from_json, observed_to_json, simulate};
use crate::graph::GroupGraph;
use crate::lang::{evaluate_file, EvalContext, EvalOptions};
use crate::plan::{plan, PlanInput};
use crate::provider::Observed;
use crate::spec::{EnvValue, Spec};

fn settings<'a>(eval: &Evaluator<'_, 'a, '_>) -> anyhow::Result<&'a TestSettings> {
    eval.extra
        .and_then(|e| e.downcast_ref::<EvalContext>())
        .and_then(|c| c.harness.as_ref())
        .and_then(|h| h.downcast_ref::<TestSettings>())
        .ok_or_else(|| {
            anyhow::anyhow!("test builtins only work in *_test.star files run by `tend test`")
        })
}

/// A value as text for messages and snapshots: strings as they are, the rest as pretty JSON
/// (sorted keys), or Starlark's repr when it has no JSON form.
fn show(value: Value<'_>) -> String {
    if let Some(s) = value.unpack_str() {
        return s.to_owned();
    }
    match value.to_json_value() {
        Ok(json) => serde_json::to_string_pretty(&json).unwrap_or_else(|_| value.to_repr()),
        Err(_) => value.to_repr(),
    }
}

fn spec_of(value: Value<'_>) -> anyhow::Result<Spec> {
    let json = value.to_json_value()?;
    serde_json::from_value(json).map_err(|e| anyhow::anyhow!("not a spec from spec(): {e}"))
}

fn strings(list: Option<UnpackListOrTuple<String>>) -> Vec<String> {
    list.map(|l| l.items).unwrap_or_default()
}

#[starlark_module]
pub(crate) fn test_builtins(builder: &mut GlobalsBuilder) {
    /// Fails unless `actual == expected`, showing a diff.
    fn assert_eq<'v>(
        #[starlark(require = pos)] expected: Value<'v>,
        #[starlark(require = pos)] actual: Value<'v>,
        msg: Option<&str>,
    ) -> anyhow::Result<NoneType> {
        if expected
            .equals(actual)
            .map_err(starlark::Error::into_anyhow)?
        {
            return Ok(NoneType);
        }
        let prefix = msg.map(|m| format!("{m}: ")).unwrap_or_default();
        anyhow::bail!(
            "{prefix}values differ (- expected, + actual):\n{}",
            diff(&show(expected), &show(actual))
        )
    }

    /// Fails when `actual == unexpected`.
    fn assert_ne<'v>(
        #[starlark(require = pos)] unexpected: Value<'v>,
        #[starlark(require = pos)] actual: Value<'v>,
        msg: Option<&str>,
    ) -> anyhow::Result<NoneType> {
        if !unexpected
            .equals(actual)
            .map_err(starlark::Error::into_anyhow)?
        {
            return Ok(NoneType);
        }
        let prefix = msg.map(|m| format!("{m}: ")).unwrap_or_default();
        anyhow::bail!("{prefix}both values are {}", show(actual))
    }

    /// Fails unless `condition` is true.
    fn assert_true<'v>(
        #[starlark(require = pos)] condition: Value<'v>,
        msg: Option<&str>,
    ) -> anyhow::Result<NoneType> {
        if condition.to_bool() {
            return Ok(NoneType);
        }
        anyhow::bail!(
            "{}",
            msg.unwrap_or("assertion failed: the value is not true")
        )
    }

    /// Calls `function` and fails unless it fails with a message containing `pattern`.
    fn assert_fails<'v>(
        #[starlark(require = pos)] function: Value<'v>,
        #[starlark(require = pos)] pattern: &str,
        eval: &mut Evaluator<'v, '_, '_>,
    ) -> anyhow::Result<NoneType> {
        match eval.eval_function(function, &[], &[]) {
            Ok(_) => {
                anyhow::bail!("expected a failure containing {pattern:?}, but the call succeeded")
            }
            Err(e) => {
                let message = e.without_diagnostic().to_string();
                if message.contains(pattern) {
                    Ok(NoneType)
                } else {
                    anyhow::bail!(
                        "the call failed with {message:?}, which does not contain {pattern:?}"
                    )
                }
            }
        }
    }

    /// Evaluates the spec at `path` (relative to the test file) into a value.
    fn spec<'v>(
        #[starlark(require = pos)] path: &str,
        eval: &mut Evaluator<'v, '_, '_>,
    ) -> anyhow::Result<Value<'v>> {
        let settings = settings(eval)?;
        let options = EvalOptions {
            root: None,
            ..settings.options.clone()
        };
        // Confined like load(): a test file reads specs in its own folder only.
        if Path::new(path).is_absolute() {
            anyhow::bail!(
                "spec({path:?}): absolute paths are refused; give a path relative to the test file"
            );
        }
        let full = settings.dir.join(path);
        let resolved = full
            .canonicalize()
            .map_err(|e| anyhow::anyhow!("spec({path:?}): cannot read {}: {e}", full.display()))?;
        if !resolved.starts_with(&settings.root) {
            anyhow::bail!(
                "spec({path:?}): it resolves outside the test file's folder {}",
                settings.dir.display()
            );
        }
        let spec =
            evaluate_file(&full, &options).map_err(|e| anyhow::anyhow!("spec({path:?}):\n{e}"))?;
        Ok(eval.heap().alloc(serde_json::to_value(&spec)?))
    }

    /// The plan for `spec` against `observed` (default: nothing runs): as `tend plan --json`
    /// gives it (`summary`, `actions`, `barriers`, `unchanged`), with `text` (as `tend plan`
    /// prints it) and, on each action, `waits_for`: every action it waits for, directly or
    /// through a barrier.
    fn plan<'v>(
        #[starlark(require = pos)] spec: Value<'v>,
        #[starlark(require = named)] observed: Option<Value<'v>>,
        heap: Heap<'v>,
    ) -> anyhow::Result<Value<'v>> {
        let spec = spec_of(spec)?;
        let observed = match observed {
            Some(v) if !v.is_none() => observed_from_json(&spec.project, &v.to_json_value()?)
                .map_err(anyhow::Error::msg)?,
            _ => Observed::new(&spec.project),
        };
        let graph = GroupGraph::build(&spec)?;
        let planned = plan(PlanInput::new(&spec, &graph, &observed));
        let mut json = serde_json::to_value(&planned)?;
        if let Some(actions) = json["actions"].as_array_mut() {
            for (index, action) in actions.iter_mut().enumerate() {
                action["waits_for"] = serde_json::to_value(planned.waits_for(index))?;
            }
        }
        json["text"] = serde_json::Value::String(planned.to_text());
        Ok(heap.alloc(json))
    }

    /// The observed state of `spec` converged, with failures injected: slots (`"web/2"`)
    /// that are dead, unhealthy, or on an old hash.
    fn simulate<'v>(
        #[starlark(require = pos)] spec: Value<'v>,
        #[starlark(require = named)] kill: Option<UnpackListOrTuple<String>>,
        #[starlark(require = named)] unhealthy: Option<UnpackListOrTuple<String>>,
        #[starlark(require = named)] outdated: Option<UnpackListOrTuple<String>>,
        heap: Heap<'v>,
    ) -> anyhow::Result<Value<'v>> {
        let spec = spec_of(spec)?;
        let observed = simulate(
            &spec,
            &strings(kill),
            &strings(unhealthy),
            &strings(outdated),
        )
        .map_err(anyhow::Error::msg)?;
        Ok(heap.alloc(observed_to_json(&observed)))
    }

    /// What the instance in slot `target` (`"web/2"`) would run: `command`, `env` (secrets
    /// shown by name only), `files`, `workdir`, `address`.
    fn render<'v>(
        #[starlark(require = pos)] spec: Value<'v>,
        #[starlark(require = pos)] target: &str,
        heap: Heap<'v>,
    ) -> anyhow::Result<Value<'v>> {
        let spec = spec_of(spec)?;
        let (group_name, slot_text) = target
            .split_once('/')
            .ok_or_else(|| anyhow::anyhow!("{target:?} is not a slot: write \"group/slot\""))?;
        let group = spec
            .group(group_name)
            .ok_or_else(|| anyhow::anyhow!("no group {group_name:?}"))?;
        let slot = group.allocation.parse_slot(slot_text);
        if !group.allocation.contains(&slot) {
            anyhow::bail!("{target:?} is not a slot of group {group_name:?}");
        }
        let observed = simulate(&spec, &[], &[], &[]).map_err(anyhow::Error::msg)?;
        let secrets: HashMap<String, String> = group
            .flavor
            .env
            .values()
            .filter_map(|v| match v {
                EnvValue::Secret { secret } => Some(secret.clone()),
                EnvValue::Plain(_) => None,
            })
            .chain(group.flavor.secret_files.values().map(|s| s.secret.clone()))
            .map(|name| (name.clone(), format!("<secret {name}>")))
            .collect();
        // Ports as tend would allocate them on an empty machine: in turn from the range.
        let names = group.flavor.port_names();
        let first = spec.ports.unwrap_or_default().first;
        let index = group.slots().iter().position(|s| *s == slot).unwrap_or(0);
        let ports: Vec<(String, u16)> = names
            .iter()
            .enumerate()
            .map(|(k, name)| {
                let offset = (index * names.len() + k) as u16;
                (name.clone(), first.saturating_add(offset))
            })
            .collect();
        let rendered = crate::exec::render_instance(
            &spec.project,
            group,
            &crate::spec::SpecHash::of(group),
            &slot,
            &ports,
            &observed,
            &|name: &str| secrets.get(name).cloned(),
        )?;
        let r = rendered.request;
        let mut shown = serde_json::json!({
            "command": r.command, "env": r.env, "files": r.files,
            "workdir": r.workdir, "address": r.address,
        });
        // Only specs with ports show them, so older snapshots stay true.
        if !ports.is_empty() {
            shown["ports"] = serde_json::json!(ports
                .iter()
                .cloned()
                .collect::<std::collections::BTreeMap<_, _>>());
        }
        // Only specs that have secret files show them, so older snapshots stay true.
        if !r.secret_files.is_empty() {
            shown["secret_files"] = serde_json::json!(r.secret_files);
        }
        Ok(heap.alloc(shown))
    }

    /// Compares `value` with snapshot `name` under `__snapshots__/` beside the test: written
    /// on the first run, rewritten with `--update`, and a failure when missing or changed
    /// under `CI=true`.
    fn snapshot<'v>(
        #[starlark(require = pos)] name: &str,
        #[starlark(require = pos)] value: Value<'v>,
        eval: &mut Evaluator<'v, '_, '_>,
    ) -> anyhow::Result<NoneType> {
        let settings = settings(eval)?;
        settings
            .snapshots
            .check(&settings.stem, name, &show(value))
            .map_err(anyhow::Error::msg)?;
        Ok(NoneType)
    }
}
