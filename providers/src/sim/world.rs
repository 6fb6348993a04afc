//! The simulated world: every sim instance, its health, and the faults a test injects.
//!
//! The world keeps time by a [`Clock`], so on a paused tokio runtime it runs on virtual
//! time; it decides nothing at random itself. A [`Chaos`] (by default none) says how each
//! call and each new instance behaves, and an observer sees every change, so a simulation
//! can check its invariants after every step.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use engine::clock::Clock;
use engine::provider::{InstanceState, ObservedInstance, ProviderError, ProviderEvent};
use serde::{Deserialize, Serialize};

use crate::journal::{Fold, Journal, JournalError};

/// How one provider call goes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum CallFault {
    /// It works at once.
    #[default]
    None,
    /// It works after a while.
    Slow(Duration),
    /// It fails (after a while), and changes nothing.
    Fail(Duration, String),
}

/// How a new instance behaves.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Behaviour {
    /// From its start, how long until it answers its health checks.
    #[serde(default)]
    pub ready_after_ms: u64,
    /// False for a version that never answers (a bad deploy).
    #[serde(default = "yes")]
    pub works: bool,
    /// When it dies by itself, in ms after its start (a crash).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dies_after_ms: Option<u64>,
}

fn yes() -> bool {
    true
}

impl Default for Behaviour {
    fn default() -> Self {
        Behaviour {
            ready_after_ms: 0,
            works: true,
            dies_after_ms: None,
        }
    }
}

/// What decides how calls and new instances behave: a simulation's seeded fault schedule.
pub trait Chaos: Send + Sync {
    /// How a `provision` of `group`/`slot` at `hash` goes.
    fn provision(&self, _group: &str, _slot: &str, _hash: &str) -> CallFault {
        CallFault::None
    }
    /// How a `destroy` goes.
    fn destroy(&self, _id: &str) -> CallFault {
        CallFault::None
    }
    /// How a `describe` goes.
    fn describe(&self) -> CallFault {
        CallFault::None
    }
    /// How a new instance of `group` at `hash` behaves.
    fn behaviour(&self, _group: &str, _hash: &str) -> Behaviour {
        Behaviour::default()
    }
}

/// No faults at all.
pub struct Calm;

impl Chaos for Calm {}

/// One simulated instance.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SimInstance {
    /// What `describe` reports.
    pub instance: ObservedInstance,
    /// How it behaves.
    #[serde(default)]
    pub behaviour: Behaviour,
    /// True while it is hung: alive, but answering nothing.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub hung: bool,
    /// True while its checks fail although it works (a health flap).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub flapping: bool,
    /// When a health check of it last passed (ms since the epoch): what tend saw.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub passed_check_at: Option<u64>,
    /// Until when `describe` does not show it (ms since the epoch): a slow cloud's listing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hidden_until: Option<u64>,
}

impl SimInstance {
    /// True when it is live and answers its health checks now.
    pub fn serves(&self, now_ms: u64) -> bool {
        self.instance.state == InstanceState::Running
            && self.behaviour.works
            && !self.hung
            && !self.flapping
            && now_ms >= self.instance.started_at + self.behaviour.ready_after_ms
    }
}

/// What the world keeps (and, for the CLI, writes to disk).
#[derive(Clone, Debug, Default)]
pub struct SimState {
    /// The number of the last instance made (ids are never given twice).
    pub next: u64,
    /// Every simulated instance by id, dead ones included until destroyed.
    pub instances: BTreeMap<String, SimInstance>,
}

impl SimState {
    /// Makes the id of a new instance.
    pub fn new_id(&mut self) -> String {
        self.next += 1;
        format!("sim-{:06}", self.next)
    }
}

/// One line of the world's file.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum WorldLine {
    /// The number of the last instance made.
    Next(u64),
    /// An instance as it is now.
    Put(Box<SimInstance>),
    /// An instance was destroyed.
    Drop(String),
}

impl Fold for SimState {
    type Line = WorldLine;

    fn apply(&mut self, line: WorldLine) {
        match line {
            WorldLine::Next(next) => self.next = self.next.max(next),
            WorldLine::Put(i) => {
                self.instances.insert(i.instance.id.clone(), *i);
            }
            WorldLine::Drop(id) => {
                self.instances.remove(&id);
            }
        }
    }

    fn lines(&self) -> Vec<WorldLine> {
        std::iter::once(WorldLine::Next(self.next))
            .chain(
                self.instances
                    .values()
                    .map(|i| WorldLine::Put(Box::new(i.clone()))),
            )
            .collect()
    }

    fn len(&self) -> usize {
        self.instances.len()
    }
}

/// The lines that record `change` (made to `state`) in the world's file.
fn lines_for(change: &Change, state: &SimState) -> Vec<WorldLine> {
    let id = match change {
        Change::Provisioned { id } | Change::Destroyed { id } | Change::Fault { id, .. } => id,
        Change::Provisioning { .. } | Change::Destroying { .. } | Change::Hitting { .. } => {
            return Vec::new()
        }
    };
    let mut lines = Vec::new();
    if matches!(change, Change::Provisioned { .. }) {
        lines.push(WorldLine::Next(state.next));
    }
    lines.push(match state.instances.get(id) {
        Some(i) => WorldLine::Put(Box::new(i.clone())),
        None => WorldLine::Drop(id.clone()),
    });
    lines
}

/// A change in the world, for observers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// A provision call started (it may take a while, or fail).
    Provisioning {
        /// The group.
        group: String,
        /// The slot.
        slot: String,
        /// The version asked for.
        hash: String,
    },
    /// An instance was made.
    Provisioned {
        /// Its id.
        id: String,
    },
    /// A destroy call started (it may take a while, or fail; the state passed to the
    /// observer is the one when it was made).
    Destroying {
        /// Its id.
        id: String,
    },
    /// An instance was destroyed.
    Destroyed {
        /// Its id.
        id: String,
    },
    /// A fault is about to hit instance `id` (the state passed is the one before).
    Hitting {
        /// Its id.
        id: String,
    },
    /// An instance died, was hung, or its health changed, by a fault or by itself.
    Fault {
        /// Its id.
        id: String,
        /// What happened.
        what: String,
    },
}

/// Sees every change with the world as it is then.
pub type Observer = Arc<dyn Fn(&Change, &SimState) + Send + Sync>;

/// Where the world's state lives.
enum Backing {
    /// In memory only (a simulation).
    Memory(SimState),
    /// In a file, a line per change (the CLI).
    File(Journal<SimState>),
}

pub(super) struct Inner {
    backing: Backing,
    pub(super) watchers: Vec<tokio::sync::mpsc::UnboundedSender<ProviderEvent>>,
}

impl Inner {
    /// The state, with what another process wrote to the file folded in.
    fn state_mut(&mut self) -> Result<&mut SimState, ProviderError> {
        match &mut self.backing {
            Backing::Memory(state) => Ok(state),
            Backing::File(journal) => journal.state_mut().map_err(unreadable),
        }
    }

    /// Records `change` in the file (nothing for a world in memory).
    fn record(&mut self, change: &Change) -> Result<(), ProviderError> {
        let Backing::File(journal) = &mut self.backing else {
            return Ok(());
        };
        let lines = lines_for(change, journal.state_mut().map_err(unreadable)?);
        journal.record(&lines).map_err(unreadable)
    }
}

/// The simulated world, shared by the provider and the test that drives it.
#[derive(Clone)]
pub struct SimWorld {
    pub(super) inner: Arc<Mutex<Inner>>,
    pub(super) clock: Clock,
    pub(super) chaos: Arc<dyn Chaos>,
    pub(super) observer: Option<Observer>,
}

fn unreadable(e: JournalError) -> ProviderError {
    backend(format!("the simulated world's file: {e}"))
}

pub(super) fn backend(detail: String) -> ProviderError {
    ProviderError::Backend {
        provider: super::NAME.to_owned(),
        detail,
        source: None,
    }
}

impl SimWorld {
    /// A world kept only in memory, on `clock`, with `chaos` deciding how things go and
    /// `observer` seeing every change.
    pub fn in_memory(clock: Clock, chaos: Arc<dyn Chaos>, observer: Option<Observer>) -> SimWorld {
        SimWorld {
            inner: Arc::new(Mutex::new(Inner {
                backing: Backing::Memory(SimState::default()),
                watchers: Vec::new(),
            })),
            clock,
            chaos,
            observer,
        }
    }

    /// A calm world kept in `file`: a line appended per change, read again when another
    /// process wrote to it.
    pub fn in_file(file: PathBuf) -> SimWorld {
        SimWorld {
            inner: Arc::new(Mutex::new(Inner {
                backing: Backing::File(Journal::new(file)),
                watchers: Vec::new(),
            })),
            clock: Clock::real(),
            chaos: Arc::new(Calm),
            observer: None,
        }
    }

    /// The clock the world keeps time by.
    pub fn clock(&self) -> Clock {
        self.clock
    }

    /// Runs `change` on the state, then tells the observer and writes the file.
    pub(super) fn with<T>(
        &self,
        change: impl FnOnce(&mut SimState, u64) -> Result<(T, Option<Change>), ProviderError>,
    ) -> Result<T, ProviderError> {
        let mut inner = self.lock()?;
        let now = self.clock.epoch_ms();
        let state = inner.state_mut()?;
        let (value, what) = change(state, now)?;
        if let Some(what) = what {
            if let Some(observer) = &self.observer {
                observer(&what, state);
            }
            inner.record(&what)?;
        }
        Ok(value)
    }

    /// Tells the observer of `change` with the world as it is (nothing changed yet).
    pub fn notify(&self, change: Change) {
        let Some(observer) = &self.observer else {
            return;
        };
        if let Ok(mut inner) = self.lock() {
            if let Ok(state) = inner.state_mut() {
                observer(&change, state);
            }
        }
    }

    /// Reads the state.
    pub fn read<T>(&self, look: impl FnOnce(&SimState, u64) -> T) -> Result<T, ProviderError> {
        let mut inner = self.lock()?;
        let state = inner.state_mut()?;
        Ok(look(state, self.clock.epoch_ms()))
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, Inner>, ProviderError> {
        self.inner
            .lock()
            .map_err(|_| backend("the simulated world is poisoned".into()))
    }

    /// Records that a health check of `id` passed now (kept in memory only).
    pub(super) fn note_passed_check(&self, id: &str) {
        let now = self.clock.epoch_ms();
        if let Ok(mut inner) = self.lock() {
            if let Some(i) = inner.state_mut().ok().and_then(|s| s.instances.get_mut(id)) {
                i.passed_check_at = Some(now);
            }
        }
    }

    /// Tells every watcher that instance `id` is gone.
    pub(super) fn announce_gone(&self, id: &str) {
        if let Ok(mut inner) = self.inner.lock() {
            inner.watchers.retain(|w| {
                w.send(ProviderEvent::Gone {
                    id: id.to_owned(),
                    why: None,
                })
                .is_ok()
            });
        }
    }

    /// Every instance as it is now.
    pub fn instances(&self) -> Vec<SimInstance> {
        self.read(|s, _| s.instances.values().cloned().collect())
            .unwrap_or_default()
    }

    /// Kills instance `id` (a fault): it is dead, and watchers hear of it.
    pub fn kill(&self, id: &str) -> bool {
        self.make_dead(id, "killed")
    }

    /// Marks live instance `id` dead, saying `what` happened; false when it was not live.
    fn make_dead(&self, id: &str, what: &str) -> bool {
        self.notify(Change::Hitting { id: id.to_owned() });
        let died = self.with(|state, _| {
            let Some(i) = state
                .instances
                .get_mut(id)
                .filter(|i| i.instance.state.is_live())
            else {
                return Ok((false, None));
            };
            i.instance.state = InstanceState::Dead;
            let change = Change::Fault {
                id: id.to_owned(),
                what: what.into(),
            };
            Ok((true, Some(change)))
        });
        if died.unwrap_or(false) {
            self.announce_gone(id);
            return true;
        }
        false
    }

    /// Hangs or releases instance `id`: a hung instance is alive but answers nothing.
    pub fn set_hung(&self, id: &str, hung: bool) {
        let what = if hung { "hung" } else { "released" };
        self.alter(id, what, |i| i.hung = hung);
    }

    /// Makes instance `id`'s checks fail (or pass again) while it keeps working.
    pub fn set_flapping(&self, id: &str, flapping: bool) {
        let what = if flapping {
            "checks fail"
        } else {
            "checks pass"
        };
        self.alter(id, what, |i| i.flapping = flapping);
    }

    /// Changes instance `id` by `change` (a fault saying `what`), if it exists.
    fn alter(&self, id: &str, what: &str, change: impl FnOnce(&mut SimInstance)) {
        self.notify(Change::Hitting { id: id.to_owned() });
        let _ = self.with(|state, _| {
            let Some(i) = state.instances.get_mut(id) else {
                return Ok(((), None));
            };
            change(i);
            let fault = Change::Fault {
                id: id.to_owned(),
                what: what.into(),
            };
            Ok(((), Some(fault)))
        });
    }

    /// Dies by itself after `after` (its behaviour says it crashes), unless gone by then.
    pub(super) fn schedule_death(&self, id: String, after: Duration) {
        let world = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            world.make_dead(&id, "crashed");
        });
    }
}
