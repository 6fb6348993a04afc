//! What the reconciler tells its caller as it goes: `tend apply` prints it, `tend run`
//! journals it (events, metrics, logs).

use std::sync::Arc;
use std::time::Duration;

use crate::exec::Outcome;
use crate::plan::{Action, Hold};

/// One thing that happened.
#[derive(Clone, Debug)]
pub enum Event {
    /// An action started.
    Started(Action),
    /// A new instance was made and its action waits for it to pass its health checks.
    WaitingOnHealth {
        /// The action.
        action: Action,
        /// The instance made.
        instance: String,
    },
    /// An action ended.
    Finished {
        /// The action.
        action: Action,
        /// How it ended.
        outcome: Outcome,
        /// How long it took.
        elapsed: Duration,
    },
    /// A live instance crossed its failure threshold.
    Unhealthy {
        /// Its group.
        group: String,
        /// Its slot.
        slot: String,
        /// The instance.
        instance: String,
        /// The last probe error.
        why: String,
    },
    /// A batch of a rollout failed: the group is paused, or rolls back.
    RolloutFailed {
        /// The group.
        group: String,
        /// Why the batch failed.
        reason: String,
        /// True when the group goes back to its previous version.
        rollback: bool,
    },
    /// A slot failed and waits before its next attempt (or, in `apply`, gets none).
    Backoff {
        /// Its group.
        group: String,
        /// The slot.
        slot: String,
        /// How long until the next attempt; `None` when there is none.
        wait: Option<Duration>,
        /// Why.
        why: String,
    },
    /// A provider that may hold instances stopped answering (`Some`) or answers again.
    Provider {
        /// The provider.
        provider: String,
        /// Its error, or `None` when it answers again.
        error: Option<String>,
    },
    /// What holds a group back changed: degraded, paused, unobserved, or nothing now.
    Hold {
        /// The group.
        group: String,
        /// The new hold, or `None` when the group moves freely again.
        hold: Option<Hold>,
    },
}

/// Where events go.
pub type EventSink = Arc<dyn Fn(Event) + Send + Sync>;

/// A sink that drops every event.
pub fn ignore() -> EventSink {
    Arc::new(|_| {})
}
