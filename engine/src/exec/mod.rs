//! The executor: runs a plan's action DAG through the providers, with bounded concurrency,
//! health gates, rolling pacing, retries and expectations.
//!
//! An action finishes only when its new instance is healthy (and, for a rolling replace,
//! has stayed healthy for `min_ready`), so everything that waits for it waits for health.
//! A failed action skips everything that waits for it: a rolling update pauses at the
//! failed batch. Nothing is destroyed that the plan does not name.

mod perform;
mod render;
mod rollback;

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::task::JoinSet;

use crate::plan::{Action, Expectation, Plan};
use crate::provider::ProviderSet;
use crate::spec::Spec;

pub use render::{context, render_instance, RenderError, RenderedInstance};
pub use rollback::{groups_to_roll_back, spec_with_previous_templates};

/// How the executor runs.
#[derive(Clone, Debug)]
pub struct ExecOptions {
    /// Actions in flight at once.
    pub parallelism: usize,
    /// Attempts of a provider call before it counts as failed.
    pub attempts: u32,
    /// How long a new instance may take to turn healthy when no rolling policy says.
    pub health_timeout: Duration,
}

impl Default for ExecOptions {
    fn default() -> Self {
        ExecOptions {
            parallelism: 10,
            attempts: 3,
            health_timeout: Duration::from_secs(300),
        }
    }
}

/// How one action ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// It did what it said; the new instance, if it made one.
    Done {
        /// The instance created, if any.
        instance: Option<String>,
        /// What its health check showed, such as `answers http://127.0.0.1:8001/`.
        checked: Option<String>,
    },
    /// It failed; the message says why.
    Failed {
        /// Why.
        error: String,
    },
    /// It never started.
    Skipped {
        /// Why.
        reason: String,
    },
}

/// What the executor tells its caller as it goes.
#[derive(Clone, Debug)]
pub enum ExecEvent {
    /// An action started.
    Started {
        /// Its index in the plan.
        index: usize,
    },
    /// An action ended.
    Finished {
        /// Its index in the plan.
        index: usize,
        /// How.
        outcome: Outcome,
        /// How long it took.
        elapsed: Duration,
    },
}

/// The result of running a plan.
#[derive(Clone, Debug, Default)]
pub struct ExecReport {
    /// One outcome per action, in plan order.
    pub outcomes: Vec<Outcome>,
    /// True when a stop request ended the run early.
    pub stopped: bool,
}

impl ExecReport {
    /// How many actions ended each way: (done, failed, skipped).
    pub fn counts(&self) -> (usize, usize, usize) {
        let mut counts = (0, 0, 0);
        for o in &self.outcomes {
            match o {
                Outcome::Done { .. } => counts.0 += 1,
                Outcome::Failed { .. } => counts.1 += 1,
                Outcome::Skipped { .. } => counts.2 += 1,
            }
        }
        counts
    }

    /// True when every action was done.
    pub fn succeeded(&self) -> bool {
        self.outcomes
            .iter()
            .all(|o| matches!(o, Outcome::Done { .. }))
    }
}

/// Reads a secret by name at apply time.
pub type SecretSource = Arc<dyn Fn(&str) -> Option<String> + Send + Sync>;

/// What every running action shares.
pub(crate) struct Shared {
    pub(crate) spec: Spec,
    pub(crate) providers: ProviderSet,
    pub(crate) options: ExecOptions,
    pub(crate) secret: SecretSource,
    pub(crate) expectations: Mutex<Vec<Expectation>>,
}

/// Runs plans for one spec.
pub struct Executor {
    shared: Arc<Shared>,
    stop: Arc<AtomicBool>,
}

impl Executor {
    /// An executor for `spec` over `providers`; secrets come from `secret`.
    pub fn new(
        spec: Spec,
        providers: ProviderSet,
        options: ExecOptions,
        secret: SecretSource,
    ) -> Self {
        Executor {
            shared: Arc::new(Shared {
                spec,
                providers,
                options,
                secret,
                expectations: Mutex::new(Vec::new()),
            }),
            stop: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Set it to stop starting new actions; running ones finish.
    pub fn stop_flag(&self) -> Arc<AtomicBool> {
        self.stop.clone()
    }

    /// Work issued that providers may not show yet: give it to the planner.
    pub fn expectations(&self) -> Vec<Expectation> {
        self.shared
            .expectations
            .lock()
            .map(|e| e.clone())
            .unwrap_or_default()
    }

    /// Runs `plan`, calling `on_event` as actions start and finish.
    pub async fn run(
        &self,
        plan: &Plan,
        on_event: &mut (dyn FnMut(&Action, ExecEvent) + Send),
    ) -> ExecReport {
        let n = plan.actions.len();
        let mut waiting: Vec<usize> = vec![0; n];
        let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); n];
        for (i, action) in plan.actions.iter().enumerate() {
            for &before in action.after.iter().filter(|b| **b < n && **b != i) {
                waiting[i] += 1;
                dependents[before].push(i);
            }
        }
        let mut ready: VecDeque<usize> = (0..n).filter(|i| waiting[*i] == 0).collect();
        let mut outcomes: Vec<Option<Outcome>> = vec![None; n];
        let mut running: JoinSet<(usize, Outcome, Duration)> = JoinSet::new();
        let mut task_index: HashMap<tokio::task::Id, usize> = HashMap::new();
        let parallelism = self.shared.options.parallelism.max(1);
        loop {
            while running.len() < parallelism && !self.stop.load(Ordering::SeqCst) {
                let Some(i) = ready.pop_front() else { break };
                on_event(&plan.actions[i], ExecEvent::Started { index: i });
                let shared = self.shared.clone();
                let action = plan.actions[i].clone();
                let handle = running.spawn(async move {
                    let started = Instant::now();
                    let outcome = perform::perform(&shared, &action).await;
                    (i, outcome, started.elapsed())
                });
                task_index.insert(handle.id(), i);
            }
            let Some(joined) = running.join_next_with_id().await else {
                break;
            };
            let (i, outcome, elapsed) = match joined {
                Ok((_, done)) => done,
                Err(e) => {
                    // A panic inside an action is a bug: report it on that action, go on.
                    let Some(&index) = task_index.get(&e.id()) else {
                        continue;
                    };
                    let error = format!("internal error (a bug in tend): {e}");
                    (index, Outcome::Failed { error }, Duration::ZERO)
                }
            };
            if matches!(outcome, Outcome::Done { .. }) {
                for &d in &dependents[i] {
                    waiting[d] -= 1;
                    if waiting[d] == 0 {
                        ready.push_back(d);
                    }
                }
            }
            outcomes[i] = Some(outcome.clone());
            on_event(
                &plan.actions[i],
                ExecEvent::Finished {
                    index: i,
                    outcome,
                    elapsed,
                },
            );
        }
        let stopped = self.stop.load(Ordering::SeqCst);
        let outcomes = outcomes
            .into_iter()
            .map(|o| {
                o.unwrap_or_else(|| Outcome::Skipped {
                    reason: if stopped {
                        "stopped before it started".to_owned()
                    } else {
                        "waits for an action that failed".to_owned()
                    },
                })
            })
            .collect();
        ExecReport { outcomes, stopped }
    }
}
