//! `tend apply` while `tend run` keeps the project: apply never acts beside the
//! controller. It shows the plan, asks like any apply, commits the spec to the store, and
//! follows the controller (its events, its report) until that serial converges (exit 0) or
//! the controller pauses, rolls back, or cannot go on (exit 1).

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::Duration;

use engine::controller::report::{self, Report};
use engine::fault::Fault;
use engine::reconcile::GroupPhase;
use engine::spec::Spec;
use engine::store::{LockHolder, Store};

use crate::cli::ApplyArgs;
use crate::failure::Failure;

use super::apply::{ask, nothing_to_do};
use super::setup::{look, providers_for, runtime, Closing, OnCtrlC};

/// Hands `spec` to the controller `holder` and follows it.
pub fn hand_over(
    spec: &Spec,
    store: &Store,
    state_dir: &Path,
    holder: &LockHolder,
    args: &ApplyArgs,
) -> Result<i32, Failure> {
    let who = holder.who();
    let last = store.last_applied()?;
    let previous: Vec<Spec> = last.iter().map(|a| a.spec.clone()).collect();
    let providers = providers_for(&args.spec.spec, state_dir, spec, &previous);
    let rt = runtime()?;
    let _closing = Closing::new(&rt, &providers);
    let look = look(&rt, spec, &previous, store, &providers, OnCtrlC::Default)?;
    crate::out!("{}", look.plan.to_text());
    let same_spec = last
        .as_ref()
        .is_some_and(|a| a.spec.fingerprint() == spec.fingerprint());
    if same_spec && nothing_to_do(&look.plan, &look) {
        crate::outln!("{who} keeps this project at this spec already.");
        return Ok(0);
    }
    if !look.plan.is_empty() && !ask(&look.plan, spec, "Hand", args.yes)? {
        return Ok(1);
    }
    let applied = store.commit(spec)?;
    crate::outln!(
        "\n{who} keeps this project: handed it serial {}; following it.",
        applied.serial
    );
    follow(store, applied.serial, applied.applied_at)
}

/// Follows the controller until serial `serial` converges or stops progressing.
fn follow(store: &Store, serial: u64, since_ms: u64) -> Result<i32, Failure> {
    // The controller whose events are printed: a new leader's after a failover.
    let mut streaming: Option<String> = None;
    // In etcd a leader that died leaves the project leaderless until its lease ends and a
    // standby wins: wait for one that long (and then some) before giving up.
    let leaderless_for = if store.remote().is_some() {
        Duration::from_secs(30)
    } else {
        Duration::ZERO
    };
    let mut leaderless_since: Option<std::time::Instant> = None;
    loop {
        let Some(report) = report::read(store) else {
            let since = *leaderless_since.get_or_insert_with(std::time::Instant::now);
            if since.elapsed() < leaderless_for {
                std::thread::sleep(Duration::from_millis(200));
                continue;
            }
            return Err(Failure::Other {
                fault: Fault::Environment,
                message: "`tend run` stopped before the spec converged; run `tend apply` again"
                    .to_owned(),
            });
        };
        leaderless_since = None;
        if let Some(listen) = report
            .listen
            .as_ref()
            .filter(|l| streaming.as_ref() != Some(*l))
        {
            if stream_events(listen.clone(), since_ms) {
                streaming = Some(listen.clone());
            }
        }
        if report.serial >= serial {
            if let Some(code) = verdict(&report, serial) {
                // Let the last event lines arrive before the verdict.
                std::thread::sleep(Duration::from_millis(100));
                return Ok(code);
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The exit status once the report says how serial `serial` ended, if it did.
fn verdict(report: &Report, serial: u64) -> Option<i32> {
    if report.converged {
        crate::outln!("\nSerial {serial} converged.");
        return Some(0);
    }
    let stuck: Vec<(&String, &GroupPhase)> = report
        .groups
        .iter()
        .filter(|(_, p)| {
            matches!(
                p,
                GroupPhase::Paused { .. }
                    | GroupPhase::RolledBack { .. }
                    | GroupPhase::Degraded { .. }
                    | GroupPhase::Failing { .. }
                    | GroupPhase::Unobserved { .. }
            )
        })
        .collect();
    if stuck.is_empty() {
        return None;
    }
    crate::outln!("\nSerial {serial} did not converge:");
    for (group, phase) in stuck {
        crate::outln!(
            "group {group} is {}: {}",
            phase.name().replace('_', " "),
            phase.reason().unwrap_or("")
        );
    }
    Some(1)
}

/// Prints the controller's events from `since_ms` on, as they happen, on a thread of its
/// own. False when the endpoint cannot be reached.
fn stream_events(listen: String, since_ms: u64) -> bool {
    let Ok(mut stream) = TcpStream::connect(&listen) else {
        return false;
    };
    if write!(
        stream,
        "GET /events?follow HTTP/1.0\r\nHost: {listen}\r\n\r\n"
    )
    .is_err()
    {
        return false;
    }
    std::thread::spawn(move || {
        let reader = BufReader::new(stream);
        let mut body = false;
        for line in reader.lines() {
            let Ok(line) = line else { break };
            if !body {
                body = line.is_empty();
                continue;
            }
            let Ok(event) = serde_json::from_str::<serde_json::Value>(&line) else {
                continue;
            };
            if event["at_ms"].as_u64().unwrap_or(0) < since_ms {
                continue;
            }
            let kind = event["kind"].as_str().unwrap_or("");
            let group = event["group"].as_str().unwrap_or("");
            let slot = event["slot"].as_str().unwrap_or("");
            let message = event["message"].as_str().unwrap_or("");
            let target = match (group, slot) {
                ("", _) => String::new(),
                (g, "") => format!(" {g}"),
                (g, s) => format!(" {g}/{s}"),
            };
            crate::outln!("{kind:<10}{target}: {message}");
        }
    });
    true
}
