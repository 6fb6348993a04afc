//! Checks on single fields and on a whole spec, shared by every front end.

use std::collections::BTreeSet;

use super::{
    Allocation, Group, PortValue, Probe, ProviderSpec, Spec, SpecError, UpdatePolicy,
    MAX_GROUP_SIZE,
};

/// True when `name` is a DNS label: 1–63 of `[a-z0-9-]`, starting with a letter, not ending with `-`.
pub fn is_dns_label(name: &str) -> bool {
    let bytes = name.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 63
        && bytes[0].is_ascii_lowercase()
        && bytes[bytes.len() - 1] != b'-'
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
}

/// Checks a group name.
pub fn group_name(name: &str) -> Result<(), SpecError> {
    if is_dns_label(name) {
        Ok(())
    } else {
        Err(SpecError::BadGroupName(name.to_owned()))
    }
}

/// Checks a project name.
pub fn project_name(name: &str) -> Result<(), SpecError> {
    if is_dns_label(name) {
        Ok(())
    } else {
        Err(SpecError::BadProjectName(name.to_owned()))
    }
}

/// Turns a folder name into a project name: lowercase, other characters as `-`.
pub fn project_name_from_folder(folder: &str) -> String {
    let mut name: String = folder
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    while name.ends_with('-') {
        name.pop();
    }
    let name = name.trim_start_matches(|c: char| !c.is_ascii_lowercase());
    let name: String = name.chars().take(63).collect();
    if name.is_empty() {
        "default".to_owned()
    } else {
        name.trim_end_matches('-').to_owned()
    }
}

/// Builds an allocation from the `size` and `ids` a user gave, checking both.
pub fn allocation(
    group: &str,
    size: Option<i64>,
    ids: Option<Vec<String>>,
) -> Result<Allocation, SpecError> {
    match (size, ids) {
        (Some(size), None) => {
            if size < 0 {
                Err(SpecError::NegativeSize(size))
            } else if size > MAX_GROUP_SIZE {
                Err(SpecError::SizeTooLarge(size))
            } else {
                Ok(Allocation::Size(size as u32))
            }
        }
        (None, Some(ids)) => {
            let mut seen = BTreeSet::new();
            for id in &ids {
                let valid = !id.is_empty()
                    && id.len() <= 63
                    && id
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
                if !valid {
                    return Err(SpecError::BadId(id.clone()));
                }
                if !seen.insert(id.as_str()) {
                    return Err(SpecError::DuplicateId(id.clone()));
                }
            }
            Ok(Allocation::Ids(ids))
        }
        _ => Err(SpecError::AllocationChoice(group.to_owned())),
    }
}

/// Checks a port number.
pub fn port(port: i64) -> Result<u16, SpecError> {
    u16::try_from(port)
        .ok()
        .filter(|p| *p > 0)
        .ok_or(SpecError::BadPort(port))
}

/// Checks a port name: 1 to 32 of `[a-z0-9_]`, starting with a letter (it is read as
/// `instance.ports.<name>`).
pub fn port_name(name: &str) -> Result<(), SpecError> {
    let bytes = name.as_bytes();
    let valid = !bytes.is_empty()
        && bytes.len() <= 32
        && bytes[0].is_ascii_lowercase()
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'_');
    if valid {
        Ok(())
    } else {
        Err(SpecError::BadPortName(name.to_owned()))
    }
}

/// Checks a balancer address: `HOST:PORT` with a port in range.
pub fn listen(address: &str) -> Result<(), SpecError> {
    match address.parse::<std::net::SocketAddr>() {
        Ok(a) if a.port() != 0 => Ok(()),
        _ => Err(SpecError::BadListen(address.to_owned())),
    }
}

/// What a surge instance could not have for itself: a health port or a published host port
/// that depends on the slot alone. `None` when every address is the instance's own.
pub fn slot_bound_address(group: &Group) -> Option<String> {
    let UpdatePolicy::Rolling(rolling) = &group.update else {
        return None;
    };
    if rolling.max_surge == 0 {
        return None;
    }
    let port = match group.flavor.health.as_ref().map(|h| &h.probe) {
        Some(Probe::Http { port, .. }) | Some(Probe::Tcp { port }) => Some(port),
        _ => None,
    };
    match port {
        Some(PortValue::Number(n)) => return Some(format!("port {n}")),
        Some(PortValue::Template(t)) if !t.contains("instance.ports") => {
            return Some(format!("port {t:?}"))
        }
        _ => {}
    }
    let published = group
        .provider
        .props
        .get("ports")
        .and_then(|p| p.as_object());
    published
        .into_iter()
        .flatten()
        .find_map(|(inside, outside)| {
            let own = outside.as_u64() == Some(0)
                || outside
                    .as_str()
                    .is_some_and(|t| t.contains("instance.ports"));
            (!own).then(|| format!("host port {outside} for container port {inside}"))
        })
}

/// True when two balancer addresses cannot both be listened on: the same address, or the
/// same port where one of them is every address (`0.0.0.0`, `[::]`).
fn overlap(a: &str, b: &str) -> bool {
    match (
        a.parse::<std::net::SocketAddr>(),
        b.parse::<std::net::SocketAddr>(),
    ) {
        (Ok(a), Ok(b)) => {
            a.port() == b.port()
                && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
        }
        _ => a == b,
    }
}

/// Checks an environment variable name: letters, digits and `_`, not starting with a digit.
pub fn env_name(name: &str) -> Result<(), SpecError> {
    let valid = !name.is_empty()
        && !name.as_bytes()[0].is_ascii_digit()
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if valid {
        Ok(())
    } else {
        Err(SpecError::BadEnvName(name.to_owned()))
    }
}

/// The built-in providers' names, which no plugin may take.
pub const BUILT_IN_PROVIDERS: [&str; 5] = ["docker", "process", "sim", "terraform", "vagrant"];

/// Checks a plugin's name: a DNS label that is not a built-in provider's.
pub fn plugin_name(name: &str) -> Result<(), SpecError> {
    if BUILT_IN_PROVIDERS.contains(&name) || name == "plugin" {
        return Err(SpecError::PluginNameTaken(name.to_owned()));
    }
    if is_dns_label(name) {
        Ok(())
    } else {
        Err(SpecError::BadPluginName(name.to_owned()))
    }
}

/// A spec-level problem, with the group it belongs to so a front end can point at it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupProblem {
    /// Index of the offending group in `Spec::groups`.
    pub group_index: usize,
    /// What is wrong.
    pub error: SpecError,
}

/// Checks what needs every group at once: unique names and dependencies that exist.
/// Returns the problems in declaration order.
pub fn spec(spec: &Spec) -> Vec<GroupProblem> {
    let mut problems = Vec::new();
    let mut seen = BTreeSet::new();
    for (index, group) in spec.groups.iter().enumerate() {
        if !seen.insert(group.name.as_str()) {
            problems.push(GroupProblem {
                group_index: index,
                error: SpecError::DuplicateGroup(group.name.clone()),
            });
        }
    }
    let mut plugins: Vec<(&str, &ProviderSpec, &str)> = Vec::new();
    for (index, group) in spec.groups.iter().enumerate() {
        if !group.provider.props.contains_key("plugin") {
            continue;
        }
        let name = group.provider.kind.as_str();
        match plugins.iter().find(|(n, _, _)| *n == name) {
            Some((_, first, owner)) if **first != group.provider => {
                problems.push(GroupProblem {
                    group_index: index,
                    error: SpecError::PluginTwice {
                        name: name.to_owned(),
                        first: (*owner).to_owned(),
                        second: group.name.clone(),
                    },
                });
            }
            Some(_) => {}
            None => plugins.push((name, &group.provider, &group.name)),
        }
    }
    let mut listens: Vec<(&str, &str)> = Vec::new();
    for (index, group) in spec.groups.iter().enumerate() {
        if let Some(what) = slot_bound_address(group) {
            let surge = match &group.update {
                UpdatePolicy::Rolling(r) => r.max_surge,
                UpdatePolicy::Recreate => 0,
            };
            problems.push(GroupProblem {
                group_index: index,
                error: SpecError::SurgeOnSlotPort {
                    group: group.name.clone(),
                    surge,
                    what,
                },
            });
        }
        if let Some(expose) = &group.expose {
            if let Some((first, _)) = listens.iter().find(|(_, l)| overlap(l, &expose.listen)) {
                problems.push(GroupProblem {
                    group_index: index,
                    error: SpecError::SharedListen {
                        first: (*first).to_owned(),
                        second: group.name.clone(),
                        listen: expose.listen.clone(),
                    },
                });
            }
            listens.push((&group.name, &expose.listen));
        }
    }
    for (index, group) in spec.groups.iter().enumerate() {
        for dep in &group.depends_on {
            if let Some(error) = dependency(group, dep, &seen) {
                problems.push(GroupProblem {
                    group_index: index,
                    error,
                });
            }
        }
        for read in &group.reads_groups {
            let error = match dependency(group, read, &seen) {
                Some(SpecError::UnknownDependency { group, missing }) => {
                    Some(SpecError::UnknownGroupRead { group, missing })
                }
                other => other,
            };
            if let Some(error) = error {
                problems.push(GroupProblem {
                    group_index: index,
                    error,
                });
            }
        }
    }
    problems
}

fn dependency(group: &Group, dep: &str, names: &BTreeSet<&str>) -> Option<SpecError> {
    if dep == group.name {
        Some(SpecError::SelfDependency(group.name.clone()))
    } else if !names.contains(dep) {
        Some(SpecError::UnknownDependency {
            group: group.name.clone(),
            missing: dep.to_owned(),
        })
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_labels() {
        for good in ["web", "a", "db-1", "x9"] {
            assert!(is_dns_label(good), "{good}");
        }
        for bad in ["", "Web", "1web", "web-", "we_b", &"a".repeat(64)] {
            assert!(!is_dns_label(bad), "{bad}");
        }
    }

    #[test]
    fn allocation_needs_exactly_one_choice() {
        assert_eq!(allocation("g", Some(3), None), Ok(Allocation::Size(3)));
        assert_eq!(
            allocation("g", None, None),
            Err(SpecError::AllocationChoice("g".into()))
        );
        assert_eq!(
            allocation("g", Some(1), Some(vec![])),
            Err(SpecError::AllocationChoice("g".into()))
        );
        assert_eq!(
            allocation("g", Some(-2), None),
            Err(SpecError::NegativeSize(-2))
        );
        assert_eq!(
            allocation("g", None, Some(vec!["a".into(), "a".into()])),
            Err(SpecError::DuplicateId("a".into()))
        );
    }

    #[test]
    fn folder_names_become_project_names() {
        assert_eq!(project_name_from_folder("My App_2"), "my-app-2");
        assert_eq!(project_name_from_folder("2fast"), "fast");
        assert_eq!(project_name_from_folder("..."), "default");
    }
}
