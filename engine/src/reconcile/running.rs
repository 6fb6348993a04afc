//! Actions running as tasks beside the reconciler. A panic inside one fails that action
//! alone: it is reported like any failure, and every other action goes on.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::{Id, JoinSet};
use tokio::time::Instant;

use crate::exec::{perform, ActionError, Context, Outcome};
use crate::plan::Action;

/// The running actions.
#[derive(Default)]
pub(super) struct Running {
    tasks: JoinSet<(Action, Outcome, Duration)>,
    by_task: BTreeMap<Id, Action>,
}

impl Running {
    /// Starts `action` with `context`.
    pub(super) fn start(&mut self, context: Arc<Context>, action: Action) {
        let task = action.clone();
        let handle = self.tasks.spawn(async move {
            let started = Instant::now();
            let outcome = perform(&context, &task).await;
            (task, outcome, started.elapsed())
        });
        self.by_task.insert(handle.id(), action);
    }

    /// How many run.
    pub(super) fn len(&self) -> usize {
        self.by_task.len()
    }

    /// True when none runs.
    pub(super) fn is_empty(&self) -> bool {
        self.by_task.is_empty()
    }

    /// The running actions, in the order they started.
    pub(super) fn actions(&self) -> Vec<Action> {
        self.by_task.values().cloned().collect()
    }

    /// The next action to finish, with its outcome; `None` when none runs.
    pub(super) async fn next(&mut self) -> Option<(Action, Outcome, Duration)> {
        loop {
            let joined = self.tasks.join_next_with_id().await?;
            match joined {
                Ok((id, done)) => {
                    self.by_task.remove(&id);
                    return Some(done);
                }
                Err(error) => {
                    let Some(action) = self.by_task.remove(&error.id()) else {
                        continue;
                    };
                    let why = if error.is_panic() {
                        panic_text(error.into_panic())
                    } else {
                        "the action was cancelled".to_owned()
                    };
                    return Some((action, Err(ActionError::Panicked(why)), Duration::ZERO));
                }
            }
        }
    }
}

/// The message of a panic, when it has one.
fn panic_text(payload: Box<dyn std::any::Any + Send>) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_owned())
}
