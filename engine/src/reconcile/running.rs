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
    tasks: JoinSet<Finished>,
    by_task: BTreeMap<Id, (Action, u64)>,
}

/// An action that ended.
pub(super) struct Finished {
    /// The action.
    pub action: Action,
    /// How it ended.
    pub outcome: Outcome,
    /// How long it ran.
    pub took: Duration,
    /// How many rollout failures the reconciler had seen when it planned the action.
    pub generation: u64,
}

impl Running {
    /// Starts `action` with `context`.
    pub(super) fn start(&mut self, context: Arc<Context>, action: Action) {
        let task = action.clone();
        let generation = context.generation;
        let handle = self.tasks.spawn(async move {
            let started = Instant::now();
            let outcome = perform(&context, &task).await;
            Finished {
                action: task,
                outcome,
                took: started.elapsed(),
                generation,
            }
        });
        self.by_task.insert(handle.id(), (action, generation));
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
        self.by_task.values().map(|(a, _)| a.clone()).collect()
    }

    /// The next action to finish, with its outcome; `None` when none runs.
    pub(super) async fn next(&mut self) -> Option<Finished> {
        loop {
            let joined = self.tasks.join_next_with_id().await?;
            match joined {
                Ok((id, done)) => {
                    self.by_task.remove(&id);
                    return Some(done);
                }
                Err(error) => {
                    let Some((action, generation)) = self.by_task.remove(&error.id()) else {
                        continue;
                    };
                    let why = if error.is_panic() {
                        panic_text(error.into_panic())
                    } else {
                        "the action was cancelled".to_owned()
                    };
                    return Some(Finished {
                        action,
                        outcome: Err(ActionError::Panicked(why)),
                        took: Duration::ZERO,
                        generation,
                    });
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
