//! Running a reconciler to convergence for `apply` and `destroy`, with visible progress:
//! one line per finished action on stdout, a progress count on stderr when it is a
//! terminal, and a summary. The first Ctrl-C (or SIGTERM) starts nothing more and lets
//! running actions finish; a second exits at once, leaving every instance made so far
//! tagged and findable.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use engine::plan::ActionKind;
use engine::reconcile::{converge, Converged, Event, GroupPhase, Reconciler};

use crate::failure::Failure;

fn past(kind: ActionKind) -> &'static str {
    match kind {
        ActionKind::Create => "created",
        ActionKind::Heal => "healed",
        ActionKind::Replace => "replaced",
        ActionKind::Destroy => "destroyed",
    }
}

/// What finished, counted as it goes.
#[derive(Default)]
pub struct Tally {
    done: BTreeMap<ActionKind, usize>,
    failed: usize,
}

/// Where the progress lines go: returns the event sink and the tally it keeps. `total`
/// is the size of the plan shown, for the terminal's progress count.
pub fn printer(total: usize) -> (engine::reconcile::EventSink, Arc<Mutex<Tally>>) {
    let tally = Arc::new(Mutex::new(Tally::default()));
    let counts = tally.clone();
    let bar = std::io::stderr().is_terminal();
    let sink: engine::reconcile::EventSink = Arc::new(move |event| {
        let line = match event {
            Event::Finished {
                action,
                outcome,
                elapsed,
            } => {
                let target = format!("{}/{}", action.group, action.slot);
                let mut tally = counts.lock().unwrap_or_else(|p| p.into_inner());
                let line = match &outcome {
                    Ok(done) => {
                        *tally.done.entry(action.action).or_default() += 1;
                        let made = match done.instance.as_deref() {
                            Some(i) if done.in_place => format!(" ({i}) in place"),
                            Some(i) => format!(" ({i})"),
                            None => String::new(),
                        };
                        let checked = done
                            .checked
                            .as_deref()
                            .map(|c| format!(", {c}"))
                            .unwrap_or_default();
                        format!(
                            "{} {:<9} {target}{made} in {:.1}s{checked}",
                            action.action.symbol(),
                            past(action.action),
                            elapsed.as_secs_f64()
                        )
                    }
                    Err(error) => {
                        tally.failed += 1;
                        format!("x failed    {target} ({}): {error}", action.action.name())
                    }
                };
                if bar {
                    let finished: usize = tally.done.values().sum::<usize>() + tally.failed;
                    crate::err!("\r\x1b[2K");
                    crate::outln!("{line}");
                    crate::err!("[{finished}/{total}]");
                    return;
                }
                line
            }
            Event::RolloutFailed {
                group,
                reason,
                rollback: true,
            } => format!("\nRolling back {group} to its previous version: {reason}"),
            Event::RolloutFailed {
                group,
                reason,
                rollback: false,
            } => format!("\nPausing the rollout of {group}: {reason}"),
            Event::Backoff {
                group, slot, why, ..
            } => format!("x gave up   {group}/{slot}: {why}"),
            Event::Unhealthy {
                group,
                slot,
                instance,
                why,
            } => format!("! unhealthy {group}/{slot} ({instance}): {why}"),
            Event::Provider {
                provider,
                error: Some(e),
            } => format!("x cannot observe {provider}: {e}"),
            Event::Started(_) | Event::Provider { .. } | Event::Hold { .. } => return,
        };
        if bar {
            crate::err!("\r\x1b[2K");
        }
        crate::outln!("{line}");
    });
    (sink, tally)
}

/// Stops on the first Ctrl-C or SIGTERM; exits at once on the second.
pub fn stop_on_signals() -> tokio::sync::watch::Receiver<bool> {
    let (tx, rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        let mut signalled = 0;
        loop {
            let terminated = async {
                match term.as_mut() {
                    Some(t) => {
                        t.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = terminated => {}
            }
            signalled += 1;
            if signalled == 1 {
                crate::errln!(
                    "\nStopping: no new actions start; running ones finish. Again to stop at once."
                );
                let _ = tx.send(true);
            } else {
                crate::errln!("Stopping now: every instance made so far carries its tags.");
                std::process::exit(1);
            }
        }
    });
    rx
}

/// Runs `reconciler` until the project converges or nothing more can be done, then prints
/// the summary. Exit status 0 only when it converged.
pub async fn run_to_end(
    reconciler: &mut Reconciler,
    tally: &Arc<Mutex<Tally>>,
    verb: &str,
) -> Result<i32, Failure> {
    let started = Instant::now();
    let mut stop = stop_on_signals();
    let ended = converge(reconciler, &mut stop).await?;
    if std::io::stderr().is_terminal() {
        crate::err!("\r\x1b[2K");
    }
    let seconds = started.elapsed().as_secs_f64();
    let tally = tally.lock().unwrap_or_else(|p| p.into_inner());
    let count = |k: ActionKind| tally.done.get(&k).copied().unwrap_or(0);
    let done: usize = tally.done.values().sum();
    match ended {
        Converged::Yes(_) if tally.failed == 0 => {
            crate::outln!(
                "\n{verb} complete: {} created, {} replaced, {} healed, {} destroyed in {seconds:.1}s.",
                count(ActionKind::Create),
                count(ActionKind::Replace),
                count(ActionKind::Heal),
                count(ActionKind::Destroy),
            );
            Ok(0)
        }
        Converged::Yes(_) => {
            crate::outln!(
                "\n{verb} complete after failures: {done} done, {} failed in {seconds:.1}s.",
                tally.failed
            );
            Ok(0)
        }
        Converged::Stuck(round) => {
            crate::outln!(
                "\n{verb} incomplete: {done} done, {} failed in {seconds:.1}s.",
                tally.failed
            );
            for (group, phase) in &round.groups {
                if let Some(reason) = phase.reason() {
                    crate::outln!(
                        "group {group} is {}: {reason}",
                        phase.name().replace('_', " ")
                    );
                } else if *phase == GroupPhase::Progressing {
                    crate::outln!("group {group} did not converge: see `tend status`");
                }
            }
            Ok(1)
        }
        Converged::Stopped => {
            crate::outln!(
                "\n{verb} incomplete (stopped): {done} done, {} failed in {seconds:.1}s.",
                tally.failed
            );
            Ok(1)
        }
        Converged::Unobserved { provider, error } => {
            crate::outln!(
                "\n{verb} incomplete: {done} done, {} failed in {seconds:.1}s.",
                tally.failed
            );
            Err(Failure::Other {
                fault: engine::fault::Fault::Environment,
                message: format!(
                    "cannot observe the {provider} provider, which may hold instances of the project ({error}); nothing more was started"
                ),
            })
        }
    }
}

/// Asks for `yes` on a terminal; refuses without `--yes` elsewhere.
pub fn confirm(question: &str, yes: bool) -> Result<bool, String> {
    if yes {
        return Ok(true);
    }
    if !std::io::stdin().is_terminal() {
        return Err("not on a terminal: pass --yes to go ahead without a question".to_owned());
    }
    crate::out!("{question} Only 'yes' goes ahead: ");
    let mut answer = String::new();
    std::io::stdin()
        .read_line(&mut answer)
        .map_err(|e| format!("cannot read the answer: {e}"))?;
    Ok(answer.trim() == "yes")
}
