//! What evaluating a spec records: the project name and the groups, in declaration order.

use std::cell::RefCell;

use starlark::any::ProvidesStaticType;

use crate::diagnostic::SourceLocation;
use crate::spec::Group;

/// What builtins can reach while a module evaluates; lives in the evaluator's `extra`.
#[derive(Default, ProvidesStaticType)]
pub struct EvalContext {
    /// Where `group()` and `project()` record.
    pub recorder: SpecRecorder,
    /// What a harness that adds builtins of its own needs them to find (`tend test` puts
    /// its settings here); a spec's evaluation has none.
    pub harness: Option<Box<dyn std::any::Any>>,
}

/// Collects what builtins declare while a spec evaluates.
#[derive(Debug, Default)]
pub struct SpecRecorder {
    inner: RefCell<Recorded>,
}

/// The declarations made so far.
#[derive(Debug, Default)]
pub struct Recorded {
    /// `project(name = ...)`, with where it was called.
    pub project: Option<(String, Option<SourceLocation>)>,
    /// Every `group()` call, in order.
    pub groups: Vec<Group>,
    /// `project(ports = ...)`: where instance ports come from.
    pub ports: Option<crate::spec::PortRange>,
}

impl SpecRecorder {
    /// Records the project name; a second call is an error naming the first.
    pub fn set_project(
        &self,
        name: String,
        ports: Option<crate::spec::PortRange>,
        at: Option<SourceLocation>,
    ) -> anyhow::Result<()> {
        let mut inner = self.inner.borrow_mut();
        inner.ports = ports;
        if let Some((first, first_at)) = &inner.project {
            let place = first_at
                .as_ref()
                .map(|l| format!(" at {l}"))
                .unwrap_or_default();
            anyhow::bail!("project is already set to {first:?}{place}; call project() once");
        }
        inner.project = Some((name, at));
        Ok(())
    }

    /// Records a group; a name already taken is an error naming the first declaration.
    pub fn add_group(&self, group: Group) -> anyhow::Result<()> {
        let mut inner = self.inner.borrow_mut();
        if let Some(first) = inner.groups.iter().find(|g| g.name == group.name) {
            let place = first
                .origin
                .as_ref()
                .map(|l| format!(", first declared at {l}"))
                .unwrap_or_default();
            anyhow::bail!(
                "duplicate group {:?}: group names must be unique in a project{place}",
                group.name
            );
        }
        inner.groups.push(group);
        Ok(())
    }

    /// Takes everything recorded.
    pub fn into_recorded(self) -> Recorded {
        self.inner.into_inner()
    }
}
