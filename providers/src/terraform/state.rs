//! Reading a group's instances back from Terraform: `terraform show -json`.

use serde_json::Value;

use super::config::{resource_name, RESOURCE_TYPE};

/// One instance as Terraform's state holds it.
#[derive(Clone, Debug, PartialEq)]
pub struct Resource {
    /// Its `for_each` key.
    pub key: String,
    /// Terraform's id for it: the instance's id in tend.
    pub id: String,
    /// A provisioner failed on it: the next apply replaces it.
    pub tainted: bool,
    /// Its value as tend wrote it (tags, run folder, command).
    pub input: Value,
}

impl Resource {
    /// A string field of its value.
    pub fn field(&self, name: &str) -> Option<&str> {
        self.input.get(name)?.as_str()
    }
}

/// The instances of `group` in the output of `terraform show -json`.
pub fn parse(show: &[u8], group: &str) -> Result<Vec<Resource>, String> {
    let doc: Value = serde_json::from_slice(show)
        .map_err(|e| format!("`terraform show -json` answered what is not JSON: {e}"))?;
    let name = resource_name(group);
    let Some(resources) = doc.pointer("/values/root_module/resources") else {
        // An empty state has no values at all.
        return Ok(Vec::new());
    };
    let resources = resources
        .as_array()
        .ok_or("`terraform show -json`: resources is not a list")?;
    Ok(resources
        .iter()
        .filter(|r| {
            r.get("type").and_then(Value::as_str) == Some(RESOURCE_TYPE)
                && r.get("name").and_then(Value::as_str) == Some(name.as_str())
                && r.get("mode").and_then(Value::as_str) == Some("managed")
        })
        .filter_map(|r| {
            Some(Resource {
                key: r.get("index")?.as_str()?.to_owned(),
                id: r.pointer("/values/id")?.as_str()?.to_owned(),
                tainted: r.get("tainted").and_then(Value::as_bool).unwrap_or(false),
                input: r.pointer("/values/input").cloned().unwrap_or(Value::Null),
            })
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_keys_ids_and_taint_of_the_groups_resource_only() {
        let show = br#"{"format_version":"1.0","values":{"root_module":{"resources":[
          {"address":"terraform_data.web[\"0-aa\"]","mode":"managed","type":"terraform_data","name":"web","index":"0-aa",
           "values":{"id":"u1","input":{"run":"/r/0-aa"}}},
          {"address":"terraform_data.web[\"1-bb\"]","mode":"managed","type":"terraform_data","name":"web","index":"1-bb",
           "tainted":true,"values":{"id":"u2","input":{"run":"/r/1-bb"}}},
          {"address":"terraform_data.db[\"0-cc\"]","mode":"managed","type":"terraform_data","name":"db","index":"0-cc",
           "values":{"id":"u3","input":{}}}]}}}"#;
        let found = parse(show, "web").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(found.len(), 2);
        assert_eq!(
            (
                found[0].key.as_str(),
                found[0].id.as_str(),
                found[0].tainted
            ),
            ("0-aa", "u1", false)
        );
        assert!(found[1].tainted);
        assert_eq!(found[1].field("run"), Some("/r/1-bb"));
        assert_eq!(parse(br#"{"format_version":"1.0"}"#, "web"), Ok(Vec::new()));
        assert!(parse(b"{\"format", "web").is_err());
    }
}
