//! Reading a plugin's describe answer as observed instances, trusting nothing tend can
//! check: the tags asked for, the four `tend.*` tags, a known state, one entry per id.

use std::collections::{BTreeMap, BTreeSet};

use engine::provider::{InstanceState, InstanceTags, ObservedInstance};
use tend_plugin::methods::DescribeResult;

/// `k=v, k=v`
pub fn shown_tags(tags: &BTreeMap<String, String>) -> String {
    tags.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The instances of a describe answer to `filter`, sorted by id; `Err` says what makes the
/// answer untrustworthy, in which case nothing of it may be used.
pub fn instances(
    answer: serde_json::Value,
    filter: &BTreeMap<String, String>,
) -> Result<Vec<ObservedInstance>, String> {
    let answer: DescribeResult =
        serde_json::from_value(answer).map_err(|e| format!("instance.describe answered {e}"))?;
    let mut seen = BTreeSet::new();
    let mut found = Vec::with_capacity(answer.instances.len());
    for instance in answer.instances {
        if instance.id.is_empty() {
            return Err("instance.describe answered an instance with an empty id".to_owned());
        }
        if !seen.insert(instance.id.clone()) {
            return Err(format!(
                "instance.describe answered instance {:?} twice: one id is one instance",
                instance.id
            ));
        }
        if filter.iter().any(|(k, v)| instance.tags.get(k) != Some(v)) {
            return Err(format!(
                "instance.describe answered instance {:?}, which lacks the tags asked for ({})",
                instance.id,
                shown_tags(filter)
            ));
        }
        let state = match instance.state.as_str() {
            "running" => InstanceState::Running,
            "starting" => InstanceState::Starting,
            "unhealthy" => InstanceState::Unhealthy,
            "dead" => InstanceState::Dead,
            other => {
                return Err(format!(
                    "instance {:?} has state {other:?}; a state is running, starting, unhealthy or dead",
                    instance.id
                ))
            }
        };
        let typed = InstanceTags::from_map(&instance.tags);
        if let Some(missing) = typed.missing() {
            return Err(format!(
                "instance {:?} has no tag {missing}: every instance must carry the tags it was made with",
                instance.id
            ));
        }
        let own = typed.to_map();
        let labels = instance
            .tags
            .into_iter()
            .filter(|(k, _)| !own.contains_key(k))
            .collect();
        found.push(ObservedInstance {
            id: instance.id,
            ports: typed.port_map(),
            tags: typed,
            labels,
            address: instance.address,
            state,
            started_at: instance.started_at.unwrap_or(0),
            ended: None,
            remains: 0,
        });
    }
    found.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn filter() -> BTreeMap<String, String> {
        [("tend.project".to_owned(), "shop".to_owned())]
            .into_iter()
            .collect()
    }

    fn tagged(id: &str) -> serde_json::Value {
        json!({"id": id, "state": "running", "tags": {
            "tend.project": "shop", "tend.group": "web", "tend.slot": "0", "tend.hash": "h",
            "tend.key": "k1"}})
    }

    #[test]
    fn a_whole_answer_reads_as_instances_with_their_labels() {
        let found = instances(json!({"instances": [tagged("b"), tagged("a")]}), &filter()).unwrap();
        assert_eq!(
            found.iter().map(|i| i.id.as_str()).collect::<Vec<_>>(),
            ["a", "b"]
        );
        assert_eq!(found[0].tags.group, "web");
        assert_eq!(
            found[0].labels.get("tend.key").map(String::as_str),
            Some("k1")
        );
    }

    #[test]
    fn an_answer_tend_cannot_trust_is_refused_whole() {
        let mut other = tagged("c");
        other["tags"]["tend.project"] = json!("elsewhere");
        let mut untagged = tagged("d");
        untagged["tags"]
            .as_object_mut()
            .unwrap()
            .remove("tend.slot");
        let mut odd = tagged("e");
        odd["state"] = json!("sleeping");
        for (answer, why) in [
            (json!({"instances": [tagged("a"), tagged("a")]}), "twice"),
            (
                json!({"instances": [tagged("a"), other]}),
                "lacks the tags asked for",
            ),
            (json!({"instances": [untagged]}), "has no tag tend.slot"),
            (json!({"instances": [odd]}), "state \"sleeping\""),
            (json!({"instances": [tagged("")]}), "empty id"),
            (json!(null), "instance.describe answered"),
        ] {
            let error = instances(answer, &filter()).unwrap_err();
            assert!(error.contains(why), "{error}");
        }
    }
}
