//! The planner: the difference between the spec and the observed state, as an ordered DAG
//! of actions, each with a reason.
//!
//! Planning does no I/O and reads no clock: the same inputs give the same plan, byte for
//! byte. `plan`, `apply`, `run` and `tend test` all call [`plan`].

mod model;
mod planner;
mod render;
mod saved;

pub use model::{
    Action, ActionKind, Barrier, BarrierKind, Expectation, Expected, Hold, Plan, Summary,
};
pub use planner::{plan, rolling_batch, Paused, PlanInput};
pub use saved::{SavedPlan, SavedPlanError, FORMAT as SAVED_PLAN_FORMAT};
