//! tend's engine: everything that is not a concrete provider.
//!
//! Data flows one way: [`lang`] evaluates a spec into the [`spec`] model; [`graph`] orders its
//! groups; [`provider`] reads back what is really running; [`plan`] diffs the two into an
//! action DAG; [`reconcile`] runs the plan's actions through [`exec`], round after round,
//! for `apply`, `destroy` and `run` alike. [`template`] checks and renders flavor templates.

pub mod balancer;
pub mod clock;
pub mod controller;
pub mod diagnostic;
pub mod exec;
pub mod fault;
pub mod format;
pub mod graph;
pub mod health;
pub mod lang;
pub mod plan;
pub mod procfs;
pub mod provider;
pub mod reconcile;
pub mod reference;
pub mod spec;
pub mod status;
pub mod store;
pub mod template;
pub mod testing;
