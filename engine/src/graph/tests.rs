use super::*;
use crate::spec::{Allocation, Flavor, Group, ProviderSpec, UpdatePolicy};

fn group(name: &str, depends_on: &[&str], reads: &[&str]) -> Group {
    Group {
        name: name.to_owned(),
        allocation: Allocation::Size(1),
        provider: ProviderSpec {
            kind: "sim".to_owned(),
            props: Default::default(),
        },
        flavor: Flavor::default(),
        depends_on: depends_on.iter().map(|s| s.to_string()).collect(),
        reads_groups: reads.iter().map(|s| s.to_string()).collect(),
        update: UpdatePolicy::default(),
        origin: None,
        expose: None,
    }
}

fn spec(groups: Vec<Group>) -> Spec {
    Spec {
        project: "p".to_owned(),
        groups,
        ports: Default::default(),
    }
}

#[test]
fn order_puts_dependencies_first_and_keeps_declaration_order_for_ties() {
    let s = spec(vec![
        group("web", &["api"], &[]),
        group("zeta", &[], &[]),
        group("api", &[], &["db"]),
        group("db", &[], &[]),
        group("alpha", &[], &[]),
    ]);
    let g = GroupGraph::build(&s).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(g.order(), ["zeta", "db", "api", "web", "alpha"]);
    assert_eq!(g.dependencies("api"), ["db"]);
    assert_eq!(g.dependents("api"), ["web"]);
    assert_eq!(g.edges()[0], ("api", "web", EdgeKind::DependsOn));
    assert_eq!(g.edges()[1], ("db", "api", EdgeKind::ReadsAddresses));
}

#[test]
fn a_cycle_names_every_group_on_it_in_order() {
    let s = spec(vec![
        group("ok", &[], &[]),
        group("a", &["c"], &[]),
        group("b", &["a"], &[]),
        group("c", &[], &["b"]),
    ]);
    assert_eq!(
        GroupGraph::build(&s).err(),
        Some(GraphError::Cycle {
            groups: vec!["a".into(), "b".into(), "c".into()]
        })
    );
}

#[test]
fn an_unknown_dependency_is_an_error() {
    let s = spec(vec![group("web", &["cache"], &[])]);
    assert!(matches!(
        GroupGraph::build(&s),
        Err(GraphError::Unknown { missing, .. }) if missing == "cache"
    ));
}
