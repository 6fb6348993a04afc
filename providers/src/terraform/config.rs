//! A group's `main.tf.json`: one `for_each` resource for the whole group, its keys the
//! instances (each named by its slot), its values their tags and rendered flavor.
//!
//! The block itself is never removed, not even for an empty group: Terraform skips the
//! destroy-time provisioners of a removed block, so instances are removed by removing their
//! keys, which runs the provisioner that stops their program.

use std::path::Path;

use serde_json::{json, Map, Value};

/// The one resource type that works offline: Terraform's builtin `terraform_data`.
pub const RESOURCE_TYPE: &str = "terraform_data";
/// The file tend writes in each group's folder.
pub const FILE: &str = "main.tf.json";

/// Terraform's JSON syntax reads every string as a template: `${` and `%{` are doubled so
/// values reach the resource exactly as tend wrote them.
pub fn literal(value: &Value) -> Value {
    match value {
        Value::String(s) => Value::String(s.replace("${", "$${").replace("%{", "%%{")),
        Value::Array(items) => Value::Array(items.iter().map(literal).collect()),
        Value::Object(map) => {
            Value::Object(map.iter().map(|(k, v)| (k.clone(), literal(v))).collect())
        }
        other => other.clone(),
    }
}

/// The resource's name in Terraform for `group`: the group's name where Terraform allows
/// it, led by `g_` when it starts with a digit.
pub fn resource_name(group: &str) -> String {
    let name: String = group
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_') {
        name
    } else {
        format!("g_{name}")
    }
}

/// The address of instance `key` of `group`: `terraform_data.web["0-4f2a1c"]`.
pub fn address(group: &str, key: &str) -> String {
    format!(
        "{RESOURCE_TYPE}.{}[{}]",
        resource_name(group),
        Value::String(key.to_owned())
    )
}

/// The whole `main.tf.json` for `group` with `instances` (key to value, already literal).
pub fn render(group: &str, instances: &Map<String, Value>) -> Value {
    let run = json!({"TEND_RUN": "${self.input.run}"});
    let block = json!({
        "for_each": instances,
        "input": "${each.value}",
        "triggers_replace": "${each.value}",
        "provisioner": [
            {"local-exec": {
                "command": "sh \"$TEND_RUN/start.sh\"",
                "environment": run,
            }},
            {"local-exec": {
                "when": "destroy",
                "command": "[ ! -f \"$TEND_RUN/stop.sh\" ] || sh \"$TEND_RUN/stop.sh\"",
                "environment": run,
            }},
        ],
    });
    json!({
        "//": format!("Made by tend for group {group}: one key per instance. tend adds and removes keys; the block stays, even empty, so removing a key runs its destroy provisioner."),
        "resource": {RESOURCE_TYPE: {resource_name(group): block}},
    })
}

/// The instances in the `main.tf.json` at `path`: empty when there is none yet.
pub fn instances(path: &Path, group: &str) -> Result<Map<String, Value>, String> {
    let text = match std::fs::read(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Map::new()),
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    };
    let doc: Value = serde_json::from_slice(&text)
        .map_err(|e| format!("{} is not JSON tend can read: {e}", path.display()))?;
    match doc
        .pointer(&format!("/resource/{RESOURCE_TYPE}/{}/for_each", resource_name(group)))
    {
        Some(Value::Object(map)) => Ok(map.clone()),
        _ => Err(format!(
            "{} has no {RESOURCE_TYPE}.{} resource with a for_each map: it was changed by hand; tend writes it whole",
            path.display(),
            resource_name(group)
        )),
    }
}

/// Writes `main.tf.json` into `dir` whole, through a temporary file, so a reader never
/// sees half of it.
pub fn write(dir: &Path, group: &str, instances: &Map<String, Value>) -> Result<(), String> {
    let text = serde_json::to_vec_pretty(&render(group, instances))
        .map_err(|e| format!("cannot render {FILE}: {e}"))?;
    let temporary = dir.join(format!(".{FILE}.tmp"));
    std::fs::write(&temporary, text)
        .and_then(|()| std::fs::rename(&temporary, dir.join(FILE)))
        .map_err(|e| format!("cannot write {}: {e}", dir.join(FILE).display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_in_values_are_kept_literal() {
        let value = json!({"command": ["echo", "${HOME} %{if}", "$PATH"], "n": 1});
        assert_eq!(
            literal(&value),
            json!({"command": ["echo", "$${HOME} %%{if}", "$PATH"], "n": 1})
        );
    }

    #[test]
    fn names_and_addresses_are_terraforms() {
        assert_eq!(resource_name("web"), "web");
        assert_eq!(resource_name("9lives"), "g_9lives");
        assert_eq!(
            address("web", "0-4f2a1c"),
            "terraform_data.web[\"0-4f2a1c\"]"
        );
    }

    #[test]
    fn a_written_file_reads_back_and_keeps_its_block_when_empty() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let mut map = Map::new();
        map.insert("0-aa".into(), json!({"tags": {"tend.slot": "0"}}));
        write(dir.path(), "web", &map).unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join(FILE);
        assert_eq!(instances(&path, "web"), Ok(map));
        write(dir.path(), "web", &Map::new()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(instances(&path, "web"), Ok(Map::new()));
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{e}"));
        assert!(text.contains("\"when\": \"destroy\""), "{text}");
        std::fs::write(&path, "{}").unwrap_or_else(|e| panic!("{e}"));
        assert!(instances(&path, "web").is_err_and(|e| e.contains("changed by hand")));
    }
}
