//! Running a plan with visible progress: one line per finished action on stdout, a progress
//! bar on stderr when it is a terminal, and a summary. Ctrl-C stops starting new actions.

use std::io::{IsTerminal, Write};
use std::sync::atomic::Ordering;
use std::time::Instant;

use engine::exec::{ExecEvent, ExecReport, Executor, Outcome};
use engine::plan::{Action, ActionKind, Plan};

fn past(kind: ActionKind) -> &'static str {
    match kind {
        ActionKind::Create => "created",
        ActionKind::Heal => "healed",
        ActionKind::Replace => "replaced",
        ActionKind::Destroy => "destroyed",
    }
}

/// Runs `plan` on `executor`, printing as it goes; returns the report.
pub async fn run_plan(executor: &Executor, plan: &Plan, verb: &str) -> ExecReport {
    let stop = executor.stop_flag();
    let watcher = tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            eprintln!("\nStopping: no new actions start; running ones finish.");
            stop.store(true, Ordering::SeqCst);
        }
    });
    let total = plan.actions.len();
    let bar = std::io::stderr().is_terminal();
    let started = Instant::now();
    let mut finished = 0usize;
    let mut on_event = |action: &Action, event: ExecEvent| {
        if let ExecEvent::Finished {
            outcome, elapsed, ..
        } = event
        {
            finished += 1;
            let target = format!("{}/{}", action.group, action.slot);
            let line = match &outcome {
                Outcome::Done { instance, checked } => {
                    let made = instance
                        .as_deref()
                        .map(|i| format!(" ({i})"))
                        .unwrap_or_default();
                    let checked = checked
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
                Outcome::Failed { error } => {
                    format!("x failed    {target} ({}): {error}", action.action.name())
                }
                Outcome::Skipped { reason } => format!("  skipped   {target}: {reason}"),
            };
            if bar {
                eprint!("\r\x1b[2K");
            }
            println!("{line}");
            if bar {
                let width = 30;
                let done = finished * width / total.max(1);
                eprint!(
                    "[{}{}] {finished}/{total}",
                    "=".repeat(done),
                    " ".repeat(width - done)
                );
                let _ = std::io::stderr().flush();
            }
        }
    };
    let report = executor.run(plan, &mut on_event).await;
    watcher.abort();
    if bar {
        eprint!("\r\x1b[2K");
    }
    let (done, failed, skipped) = report.counts();
    let by_kind = |kind: ActionKind| {
        plan.actions
            .iter()
            .zip(&report.outcomes)
            .filter(|(a, o)| a.action == kind && matches!(o, Outcome::Done { .. }))
            .count()
    };
    let seconds = started.elapsed().as_secs_f64();
    if failed == 0 && skipped == 0 {
        println!(
            "\n{verb} complete: {} created, {} replaced, {} healed, {} destroyed in {seconds:.1}s.",
            by_kind(ActionKind::Create),
            by_kind(ActionKind::Replace),
            by_kind(ActionKind::Heal),
            by_kind(ActionKind::Destroy),
        );
    } else {
        let why = if report.stopped { " (stopped)" } else { "" };
        println!("\n{verb} incomplete{why}: {done} done, {failed} failed, {skipped} skipped in {seconds:.1}s.");
    }
    report
}

/// Asks for `yes` on a terminal; refuses without `--yes` elsewhere.
pub fn confirm(question: &str, yes: bool) -> Result<bool, String> {
    if yes {
        return Ok(true);
    }
    if !std::io::stdin().is_terminal() {
        return Err("not on a terminal: pass --yes to go ahead without a question".to_owned());
    }
    print!("{question} Only 'yes' goes ahead: ");
    let _ = std::io::stdout().flush();
    let mut answer = String::new();
    std::io::stdin()
        .read_line(&mut answer)
        .map_err(|e| format!("cannot read the answer: {e}"))?;
    Ok(answer.trim() == "yes")
}
