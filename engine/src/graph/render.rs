//! Printing the group graph as Graphviz DOT or Mermaid.

use std::fmt::Write;

use super::{EdgeKind, GroupGraph};

impl GroupGraph {
    /// The graph in Graphviz DOT; implicit (template) dependencies are dashed.
    pub fn to_dot(&self) -> String {
        let mut out = String::from("digraph tend {\n  rankdir=LR;\n");
        for name in &self.order {
            let _ = writeln!(out, "  \"{name}\";");
        }
        for (from, to, kind) in self.edges() {
            let style = match kind {
                EdgeKind::DependsOn => "",
                EdgeKind::ReadsAddresses => " [style=dashed, label=\"reads\"]",
            };
            let _ = writeln!(out, "  \"{from}\" -> \"{to}\"{style};");
        }
        out.push_str("}\n");
        out
    }

    /// The graph as a Mermaid flowchart; implicit (template) dependencies are dotted.
    pub fn to_mermaid(&self) -> String {
        let mut out = String::from("flowchart LR\n");
        for name in &self.order {
            let _ = writeln!(out, "  {}[\"{name}\"]", mermaid_id(name));
        }
        for (from, to, kind) in self.edges() {
            let arrow = match kind {
                EdgeKind::DependsOn => "-->",
                EdgeKind::ReadsAddresses => "-. reads .->",
            };
            let _ = writeln!(out, "  {} {arrow} {}", mermaid_id(from), mermaid_id(to));
        }
        out
    }
}

/// Mermaid ids cannot hold '-'; group names are DNS labels, so '_' is free to use.
fn mermaid_id(name: &str) -> String {
    format!("g_{}", name.replace('-', "_"))
}
