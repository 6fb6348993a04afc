//! The group dependency graph: explicit `depends_on` plus implicit `groups.X` template reads.
//!
//! Edges point from a dependency to its dependent (`db -> web`), so a topological order
//! creates dependencies first. Ties are broken by declaration order, so the order is stable.

mod render;

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap, HashMap};

use petgraph::algo::tarjan_scc;
use petgraph::graph::{DiGraph, NodeIndex};
use petgraph::Direction;

use crate::spec::Spec;

/// Why a group graph cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GraphError {
    /// Groups that wait for each other; listed in the order of the cycle.
    #[error("dependency cycle: {}", groups.join(" -> "))]
    Cycle {
        /// Every group on the cycle, starting at the first declared.
        groups: Vec<String>,
    },
    /// A dependency on a group that does not exist.
    #[error("group {group:?} depends on unknown group {missing:?}")]
    Unknown {
        /// The group with the dependency.
        group: String,
        /// The name that is not a group.
        missing: String,
    },
}

/// Why one group waits for another.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EdgeKind {
    /// Named in `depends_on`.
    DependsOn,
    /// Read by a template as `groups.X`.
    ReadsAddresses,
}

/// The dependency graph of a spec's groups, with a stable topological order.
#[derive(Debug, Clone)]
pub struct GroupGraph {
    graph: DiGraph<String, EdgeKind>,
    index: HashMap<String, NodeIndex>,
    order: Vec<String>,
}

impl GroupGraph {
    /// Builds the graph and its order; fails on unknown dependencies and cycles.
    pub fn build(spec: &Spec) -> Result<GroupGraph, GraphError> {
        let mut graph = DiGraph::new();
        let mut index: HashMap<&str, NodeIndex> = HashMap::new();
        for group in &spec.groups {
            let node = graph.add_node(group.name.clone());
            index.insert(group.name.as_str(), node);
        }
        for group in &spec.groups {
            let to = index[group.name.as_str()];
            let explicit = group.depends_on.iter().map(|d| (d, EdgeKind::DependsOn));
            let implicit = group
                .reads_groups
                .iter()
                .map(|d| (d, EdgeKind::ReadsAddresses));
            let mut seen = BTreeSet::new();
            for (dep, kind) in explicit.chain(implicit) {
                let from = *index.get(dep.as_str()).ok_or_else(|| GraphError::Unknown {
                    group: group.name.clone(),
                    missing: dep.clone(),
                })?;
                if seen.insert(dep.as_str()) {
                    graph.add_edge(from, to, kind);
                }
            }
        }
        if let Some(cycle) = find_cycle(&graph) {
            return Err(GraphError::Cycle { groups: cycle });
        }
        let order = stable_topological_order(&graph);
        let index = index.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
        Ok(GroupGraph {
            graph,
            index,
            order,
        })
    }

    /// Group names, dependencies before dependents, ties in declaration order.
    pub fn order(&self) -> &[String] {
        &self.order
    }

    /// The groups `name` waits for directly.
    pub fn dependencies(&self, name: &str) -> Vec<&str> {
        self.neighbors(name, Direction::Incoming)
    }

    /// The groups that wait for `name` directly.
    pub fn dependents(&self, name: &str) -> Vec<&str> {
        self.neighbors(name, Direction::Outgoing)
    }

    fn neighbors(&self, name: &str, direction: Direction) -> Vec<&str> {
        let Some(&node) = self.index.get(name) else {
            return Vec::new();
        };
        let mut names: Vec<&str> = self
            .graph
            .neighbors_directed(node, direction)
            .map(|n| self.graph[n].as_str())
            .collect();
        names.sort_unstable();
        names.dedup();
        names
    }

    /// Every edge as (dependency, dependent, kind), sorted.
    pub fn edges(&self) -> Vec<(&str, &str, EdgeKind)> {
        let mut edges: Vec<_> = self
            .graph
            .edge_indices()
            .filter_map(|e| {
                let (from, to) = self.graph.edge_endpoints(e)?;
                Some((
                    self.graph[from].as_str(),
                    self.graph[to].as_str(),
                    self.graph[e],
                ))
            })
            .collect();
        edges.sort_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
        edges
    }
}

/// Kahn's algorithm with a min-heap on declaration index.
fn stable_topological_order(graph: &DiGraph<String, EdgeKind>) -> Vec<String> {
    let mut indegree: Vec<usize> = graph
        .node_indices()
        .map(|n| graph.neighbors_directed(n, Direction::Incoming).count())
        .collect();
    let mut ready: BinaryHeap<Reverse<usize>> = graph
        .node_indices()
        .filter(|n| indegree[n.index()] == 0)
        .map(|n| Reverse(n.index()))
        .collect();
    let mut order = Vec::with_capacity(graph.node_count());
    while let Some(Reverse(i)) = ready.pop() {
        let node = NodeIndex::new(i);
        order.push(graph[node].clone());
        for next in graph.neighbors_directed(node, Direction::Outgoing) {
            indegree[next.index()] -= 1;
            if indegree[next.index()] == 0 {
                ready.push(Reverse(next.index()));
            }
        }
    }
    order
}

/// The first cycle by declaration order, as a path through every group of its strongly
/// connected component, starting at the component's first-declared group.
fn find_cycle(graph: &DiGraph<String, EdgeKind>) -> Option<Vec<String>> {
    let mut components: Vec<Vec<NodeIndex>> = tarjan_scc(graph)
        .into_iter()
        .filter(|c| c.len() > 1 || graph.contains_edge(c[0], c[0]))
        .collect();
    for c in &mut components {
        c.sort();
    }
    components.sort();
    let component = components.into_iter().next()?;
    let members: BTreeSet<NodeIndex> = component.iter().copied().collect();
    let start = component[0];
    let path = longest_simple_cycle(graph, start, &members);
    Some(path.into_iter().map(|n| graph[n].clone()).collect())
}

/// A cycle from `start` back to it, within `members`, visiting as many members as a
/// depth-first search finds (every member when the component is one ring).
fn longest_simple_cycle(
    graph: &DiGraph<String, EdgeKind>,
    start: NodeIndex,
    members: &BTreeSet<NodeIndex>,
) -> Vec<NodeIndex> {
    let mut best: Vec<NodeIndex> = vec![start];
    let mut stack: Vec<(Vec<NodeIndex>, NodeIndex)> = vec![(vec![start], start)];
    let mut budget = 10_000usize;
    while let Some((path, node)) = stack.pop() {
        if budget == 0 {
            break;
        }
        budget -= 1;
        let mut next: Vec<NodeIndex> = graph
            .neighbors_directed(node, Direction::Outgoing)
            .filter(|n| members.contains(n))
            .collect();
        next.sort();
        next.dedup();
        for n in next.into_iter().rev() {
            if n == start {
                if path.len() > best.len() || best.len() == 1 {
                    best = path.clone();
                }
            } else if !path.contains(&n) {
                let mut longer = path.clone();
                longer.push(n);
                stack.push((longer, n));
            }
        }
    }
    best
}

#[cfg(test)]
mod tests;
