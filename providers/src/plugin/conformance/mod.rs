//! `tend plugin conformance`: checks a provider against the plugin contract, as csi-sanity
//! does for CSI drivers.
//!
//! Two kinds of checks: the protocol ([`protocol`]: handshake, framing, errors, shutdown),
//! for plugins only, and the semantics ([`semantics`]: tags, idempotency, filters, what a
//! cancelled, timed-out or killed provision leaves), one suite run on a [`Subject`]: a
//! plugin spoken to directly ([`PluginSubject`]) or any provider through the `Provider`
//! trait ([`ProviderSubject`]), so the built-in providers pass the same checks.

mod protocol;
mod semantics;
mod subjects;

use std::time::Duration;

use async_trait::async_trait;

pub use protocol::protocol;
pub use semantics::semantics;
pub use subjects::{PluginSubject, ProviderSubject};

/// Tags, as the contract carries them.
pub type Tags = std::collections::BTreeMap<String, String>;

/// How one check ended.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// It passed.
    Passed,
    /// It failed, with why.
    Failed(String),
    /// It does not apply to this subject, with why.
    NotApplicable(String),
}

/// One check and how it ended.
#[derive(Clone, Debug, PartialEq)]
pub struct Check {
    /// `protocol` or `semantics`.
    pub part: &'static str,
    /// What it checks, as a sentence.
    pub name: &'static str,
    /// How it ended.
    pub outcome: Outcome,
}

/// Every check run on one subject.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Report {
    /// The checks, in the order they ran.
    pub checks: Vec<Check>,
}

impl Report {
    /// Records one check.
    pub fn record(&mut self, part: &'static str, name: &'static str, outcome: Outcome) {
        self.checks.push(Check {
            part,
            name,
            outcome,
        });
    }

    /// Records a check from its result.
    pub fn check(&mut self, part: &'static str, name: &'static str, result: Result<(), String>) {
        let outcome = match result {
            Ok(()) => Outcome::Passed,
            Err(why) => Outcome::Failed(why),
        };
        self.record(part, name, outcome);
    }

    /// True when no check failed.
    pub fn passed(&self) -> bool {
        !self
            .checks
            .iter()
            .any(|c| matches!(c.outcome, Outcome::Failed(_)))
    }

    /// The checks that failed, as `name: why` lines.
    pub fn failures(&self) -> Vec<String> {
        self.checks
            .iter()
            .filter_map(|c| match &c.outcome {
                Outcome::Failed(why) => Some(format!("{}: {why}", c.name)),
                _ => None,
            })
            .collect()
    }

    /// The report as text: a line per check under its part, then the counts.
    pub fn to_text(&self) -> String {
        let mut text = String::new();
        let mut part = "";
        let (mut passed, mut failed, mut skipped) = (0, 0, 0);
        for check in &self.checks {
            if check.part != part {
                part = check.part;
                text.push_str(part);
                text.push('\n');
            }
            match &check.outcome {
                Outcome::Passed => {
                    passed += 1;
                    text.push_str(&format!("  ok      {}\n", check.name));
                }
                Outcome::Failed(why) => {
                    failed += 1;
                    text.push_str(&format!("  FAILED  {}\n", check.name));
                    for line in why.lines() {
                        text.push_str(&format!("          {line}\n"));
                    }
                }
                Outcome::NotApplicable(why) => {
                    skipped += 1;
                    text.push_str(&format!("  n/a     {} ({why})\n", check.name));
                }
            }
        }
        text.push_str(&format!(
            "{passed} passed, {failed} failed, {skipped} not applicable\n"
        ));
        text
    }
}

/// What the semantic checks act on: a plugin, or a provider through the `Provider` trait.
#[async_trait]
pub trait Subject: Send + Sync {
    /// Makes an instance with `tags` under idempotency key `key`, giving up after
    /// `deadline`.
    async fn provision(&self, tags: &Tags, key: &str, deadline: Duration)
        -> Result<String, String>;
    /// Removes instance `id`.
    async fn destroy(&self, id: &str) -> Result<(), String>;
    /// Every instance carrying the project tag of `filter` (and, where the subject can
    /// filter by more, every other tag of it): `(id, tags)`, the idempotency key among them
    /// as `tend.key` where the subject keeps it.
    async fn describe(&self, filter: &Tags) -> Result<Vec<(String, Tags)>, String>;
    /// Kills what serves the subject at once, as a crash, and starts it again. `None` when
    /// the subject has nothing to kill.
    async fn crash_and_restart(&self) -> Option<Result<(), String>>;
    /// Stops what serves the subject cleanly and starts it again; `Err` when the stop was
    /// not clean.
    async fn restart(&self) -> Result<(), String>;
}

/// Every check on the plugin `launch` starts: the protocol, then the semantics on
/// instances of a throwaway project, all removed at the end.
pub async fn check_plugin(
    launch: &crate::plugin::conn::Launch,
    config: &serde_json::Value,
    logs: &crate::plugin::logs::LogSink,
) -> Report {
    let mut report = Report::default();
    if !protocol(launch, config, logs, &mut report).await {
        return report;
    }
    match PluginSubject::start(launch.clone(), config.clone(), logs.clone()).await {
        Ok(subject) => {
            semantics(&subject, &throwaway_project(), &mut report).await;
            subject.close().await;
        }
        Err(why) => report.check("semantics", "starts for the semantic checks", Err(why)),
    }
    report
}

/// A project name no real project has.
pub fn throwaway_project() -> String {
    format!("tend-conformance-{}", std::process::id())
}
