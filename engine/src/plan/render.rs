//! Plans as text for people and JSON for machines.

use std::fmt::Write;

use super::model::{Action, BarrierKind, Plan};

impl Plan {
    /// One line per action (`+` create, `!` heal, `~` replace, `-` destroy), then the summary.
    /// An action that waits for other groups says which, by name: `after db` (its builds),
    /// `after web's destroys`; waits inside its own group show in its reason (a rolling
    /// batch) or its `waits`.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let targets: Vec<String> = self.actions.iter().map(target).collect();
        let width = targets.iter().map(String::len).max().unwrap_or(0);
        for (action, target) in self.actions.iter().zip(targets) {
            let mut note = String::new();
            if action.in_flight {
                note.push_str(" [running]");
            }
            let groups = self.waits_on_groups(action);
            if !groups.is_empty() {
                note.push_str(&format!("; after {}", groups.join(", ")));
            }
            if let Some(waits) = &action.waits {
                note.push_str(&format!("; waits: {waits}"));
            }
            if let Some(from) = &action.instance_provider {
                note.push_str(&format!("; moves from {from} to {}", action.provider));
            }
            // Padded by hand: a width past 65,535 (a name that long, from a saved plan)
            // is out of range for `format!`.
            let pad = " ".repeat(width - target.len());
            let _ = writeln!(
                out,
                "{} {:<7} {target}{pad}  {}{note}",
                action.action.symbol(),
                action.action.name(),
                action.reason,
            );
        }
        if !self.held.is_empty() {
            if !self.actions.is_empty() {
                out.push('\n');
            }
            for (group, hold) in &self.held {
                let _ = writeln!(out, "group {group} is {}: {}", hold.name(), hold.reason());
            }
        }
        let instances = if self.unchanged == 1 {
            "instance"
        } else {
            "instances"
        };
        if self.actions.is_empty() && !self.held.is_empty() {
            // Not "no changes": the project does not match the spec, tend only waits.
            let _ = writeln!(
                out,
                "Nothing to do while held: {} {instances} left as they are.",
                self.unchanged
            );
        } else if self.actions.is_empty() {
            let _ = writeln!(
                out,
                "No changes: {} {instances} match the spec.",
                self.unchanged
            );
        } else {
            out.push('\n');
        }
        let s = &self.summary;
        let _ = writeln!(
            out,
            "Plan: {} to create, {} to replace, {} to heal, {} to destroy.",
            s.create, s.replace, s.heal, s.destroy
        );
        out
    }

    /// The plan as pretty JSON: `project`, `summary` (all four counts), `unchanged`,
    /// `actions`, `barriers` and `held` (when a group is held). `docs/plan-json.md` says
    /// what each field means.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
    }

    /// The other groups `action` waits for, as the text names them, in barrier order.
    fn waits_on_groups(&self, action: &Action) -> Vec<String> {
        action
            .after_barriers
            .iter()
            .filter_map(|b| self.barriers.get(*b))
            .filter(|b| b.group != action.group)
            .filter_map(|b| match b.kind {
                BarrierKind::Builds => Some(b.group.clone()),
                BarrierKind::Destroys => Some(format!("{}'s destroys", b.group)),
                BarrierKind::Batch | BarrierKind::Restoring | BarrierKind::UnhealthyHeals => None,
            })
            .collect()
    }
}

/// `group/slot`, and the instance acted on when there is one: `web/0 (sim-000002)`.
fn target(action: &Action) -> String {
    match &action.instance {
        Some(id) => format!("{}/{} ({id})", action.group, action.slot),
        None => format!("{}/{}", action.group, action.slot),
    }
}
