//! Running a reconciler to convergence for `apply` and `destroy`, with visible progress:
//! one line per finished action on stdout, a progress bar per group on stderr when it is a
//! terminal (done, running, waiting on health, failed), and a summary. The first Ctrl-C (or
//! SIGTERM) starts nothing more and lets running actions finish; a second exits at once,
//! leaving every instance made so far tagged and findable.

use std::collections::{BTreeMap, BTreeSet};
use std::io::IsTerminal;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use engine::plan::{Action, ActionKind, Plan};
use engine::reconcile::{converge, Converged, Event, GroupPhase, Reconciler};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

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

/// The bars drawn now, if any, and the group bars among them: lines written meanwhile go
/// above them.
static BARS: Mutex<Option<(MultiProgress, Vec<ProgressBar>)>> = Mutex::new(None);

/// Runs `write` with the progress bars (when drawn) cleared first and drawn again after,
/// so a line never lands inside a bar.
pub fn above_bars(write: impl FnOnce()) {
    let bars = BARS
        .lock()
        .ok()
        .and_then(|b| b.as_ref().map(|(m, _)| m.clone()));
    match bars {
        Some(bars) => bars.suspend(write),
        None => write(),
    }
}

/// One group's bar and what it counts.
struct GroupBar {
    bar: ProgressBar,
    running: usize,
    waiting: BTreeSet<String>,
    failed: usize,
}

impl GroupBar {
    fn show(&self) {
        let mut parts = Vec::new();
        let running = self.running.saturating_sub(self.waiting.len());
        if running > 0 {
            parts.push(format!("{running} running"));
        }
        if !self.waiting.is_empty() {
            parts.push(format!("{} waiting on health", self.waiting.len()));
        }
        if self.failed > 0 {
            parts.push(format!("{} failed", self.failed));
        }
        self.bar.set_message(parts.join(", "));
    }
}

/// A bar per group of the plan, on a terminal's stderr.
struct Bars {
    groups: BTreeMap<String, GroupBar>,
}

impl Bars {
    /// Bars for `plan`'s groups, when stderr is a terminal; `None` elsewhere, where the
    /// lines on stdout say everything.
    fn for_plan(plan: &Plan) -> Option<Bars> {
        if !std::io::stderr().is_terminal() {
            return None;
        }
        let mut totals: BTreeMap<&str, u64> = BTreeMap::new();
        for action in &plan.actions {
            *totals.entry(action.group.as_str()).or_default() += 1;
        }
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
        let style = ProgressStyle::with_template("{prefix:>14} [{bar:24}] {pos}/{len} {msg}")
            .map(|s| s.progress_chars("=> "))
            .unwrap_or_else(|_| ProgressStyle::default_bar());
        let groups: BTreeMap<String, GroupBar> = totals
            .into_iter()
            .map(|(group, total)| {
                let bar = multi.add(ProgressBar::new(total));
                bar.set_style(style.clone());
                bar.set_prefix(group.to_owned());
                let g = GroupBar {
                    bar,
                    running: 0,
                    waiting: BTreeSet::new(),
                    failed: 0,
                };
                (group.to_owned(), g)
            })
            .collect();
        if let Ok(mut shown) = BARS.lock() {
            let each = groups.values().map(|g| g.bar.clone()).collect();
            *shown = Some((multi.clone(), each));
        }
        Some(Bars { groups })
    }

    fn group(&mut self, action: &Action) -> Option<&mut GroupBar> {
        self.groups.get_mut(&action.group)
    }

    fn on(&mut self, event: &Event) {
        match event {
            Event::Started(action) => {
                if let Some(g) = self.group(action) {
                    g.running += 1;
                    g.show();
                }
            }
            Event::WaitingOnHealth { action, .. } => {
                let slot = action.slot.to_string();
                if let Some(g) = self.group(action) {
                    g.waiting.insert(slot);
                    g.show();
                }
            }
            Event::Finished {
                action, outcome, ..
            } => {
                let slot = action.slot.to_string();
                if let Some(g) = self.group(action) {
                    g.running = g.running.saturating_sub(1);
                    g.waiting.remove(&slot);
                    match outcome {
                        Ok(_) => g.bar.inc(1),
                        Err(_) => g.failed += 1,
                    }
                    g.show();
                }
            }
            _ => {}
        }
    }
}

/// One line for a finished action.
fn finished_line(action: &Action, outcome: &engine::exec::Outcome, elapsed: f64) -> String {
    let target = format!("{}/{}", action.group, action.slot);
    match outcome {
        Ok(done) => {
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
                "{} {:<9} {target}{made} in {elapsed:.1}s{checked}",
                action.action.symbol(),
                past(action.action),
            )
        }
        Err(error) => format!("x failed    {target} ({}): {error}", action.action.name()),
    }
}

/// Where the progress lines go: returns the event sink and the tally it keeps. `plan` is
/// the plan shown, for the terminal's bars.
pub fn printer(plan: &Plan) -> (engine::reconcile::EventSink, Arc<Mutex<Tally>>) {
    let tally = Arc::new(Mutex::new(Tally::default()));
    let counts = tally.clone();
    let bars = Mutex::new(Bars::for_plan(plan));
    let sink: engine::reconcile::EventSink = Arc::new(move |event| {
        if let Ok(mut bars) = bars.lock() {
            if let Some(bars) = bars.as_mut() {
                bars.on(&event);
            }
        }
        let line = match event {
            Event::Finished {
                action,
                outcome,
                elapsed,
            } => {
                let mut tally = counts.lock().unwrap_or_else(|p| p.into_inner());
                match &outcome {
                    Ok(_) => *tally.done.entry(action.action).or_default() += 1,
                    Err(_) => tally.failed += 1,
                }
                finished_line(&action, &outcome, elapsed.as_secs_f64())
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
            Event::Started(_)
            | Event::WaitingOnHealth { .. }
            | Event::Provider { .. }
            | Event::Hold { .. } => return,
        };
        above_bars(|| crate::outln!("{line}"));
    });
    (sink, tally)
}

/// Takes the progress bars off the terminal, if some are drawn.
fn clear_bars() {
    let bars = BARS.lock().ok().and_then(|mut b| b.take());
    if let Some((multi, each)) = bars {
        // Finished here: a bar left unfinished would draw itself again, full, when the
        // reconciler that holds it is dropped after the summary.
        for bar in each {
            bar.finish_and_clear();
        }
        let _ = multi.clear();
    }
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
                above_bars(|| {
                    crate::errln!(
                        "\nStopping: no new actions start; running ones finish. Again to stop at once."
                    )
                });
                let _ = tx.send(true);
            } else {
                clear_bars();
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
    let ended = converge(reconciler, &mut stop).await;
    clear_bars();
    let ended = ended?;
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
