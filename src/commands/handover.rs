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
use engine::store::Store;

use crate::cli::ApplyArgs;
use crate::failure::Failure;

use super::apply::{ask, nothing_to_do};
use super::setup::{look, runtime};

/// Hands `spec` to the controller with pid `pid` and follows it.
pub fn hand_over(
    spec: &Spec,
    store: &Store,
    state_dir: &Path,
    pid: u32,
    args: &ApplyArgs,
) -> Result<i32, Failure> {
    let last = store.last_applied()?;
    let previous: Vec<Spec> = last.iter().map(|a| a.spec.clone()).collect();
    let providers = providers::all(state_dir);
    let look = look(&runtime()?, spec, &previous, store, &providers)?;
    crate::out!("{}", look.plan.to_text());
    let same_spec = last
        .as_ref()
        .is_some_and(|a| a.spec.fingerprint() == spec.fingerprint());
    if same_spec && nothing_to_do(&look.plan, &look) {
        crate::outln!("`tend run` (pid {pid}) keeps this project at this spec already.");
        return Ok(0);
    }
    if !look.plan.is_empty() && !ask(&look.plan, spec, "Hand", args.yes)? {
        return Ok(1);
    }
    let applied = store.commit(spec)?;
    crate::outln!(
        "\n`tend run` (pid {pid}) keeps this project: handed it serial {}; following it.",
        applied.serial
    );
    follow(state_dir, applied.serial, applied.applied_at)
}

/// Follows the controller until serial `serial` converges or stops progressing.
fn follow(state_dir: &Path, serial: u64, since_ms: u64) -> Result<i32, Failure> {
    let mut streaming = false;
    loop {
        let Some(report) = report::read(state_dir) else {
            return Err(Failure::Other {
                fault: Fault::Environment,
                message: "`tend run` stopped before the spec converged; run `tend apply` again"
                    .to_owned(),
            });
        };
        if !streaming {
            if let Some(listen) = &report.listen {
                streaming = stream_events(listen.clone(), since_ms);
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
