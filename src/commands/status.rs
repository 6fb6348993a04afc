//! `tend status`

use std::io::IsTerminal;

use crate::cli::{SpecArgs, StoreArgs};
use crate::failure::Failure;

use super::setup::{load, look, open_store, providers_for, runtime, Closing, OnCtrlC};

/// Shows what runs for the project, judged against the spec: each instance probed once
/// with its own checks, failed rollouts from the store, and, while `tend run` holds the
/// project, its view (phases, failing groups, backoffs). With `watch`, looks again every
/// so often until Ctrl-C: in place on a terminal, one status after another elsewhere.
pub fn run(
    args: &SpecArgs,
    json: bool,
    watch: Option<&str>,
    store: &StoreArgs,
) -> Result<i32, Failure> {
    let every = watch
        .map(|text| {
            text.parse::<engine::spec::Duration>()
                .map(|d| d.to_std().max(std::time::Duration::from_millis(100)))
                .map_err(|e| Failure::Other {
                    fault: engine::fault::Fault::Usage,
                    message: format!("--watch: {e}"),
                })
        })
        .transpose()?;
    let (spec, _) = load(args)?;
    let (state_dir, store) = open_store(&args.spec, store, &spec)?;
    let applied = store.last_applied()?;
    let previous: Vec<_> = applied.iter().map(|a| a.spec.clone()).collect();
    let providers = providers_for(&args.spec, &state_dir, &spec, &previous);
    let rt = runtime()?;
    let _closing = Closing::new(&rt, &providers);
    let in_place = every.is_some() && !json && std::io::stdout().is_terminal();
    // On a terminal the frames go on the alternate screen, left (with the last frame
    // printed on the main one) when the watch ends.
    let screen = in_place.then(AlternateScreen::enter);
    loop {
        let status = match snapshot(&rt, &spec, &store, &providers) {
            Ok(status) => status,
            Err(e) => {
                drop(screen);
                return Err(e);
            }
        };
        if json && every.is_some() {
            crate::outln!("{}", serde_json::to_string(&status).unwrap_or_default());
        } else if json {
            crate::outln!(
                "{}",
                serde_json::to_string_pretty(&status).unwrap_or_default()
            );
        } else if in_place {
            redraw(&status.to_text(), every.unwrap_or_default());
        } else {
            crate::out!("{}", status.to_text());
        }
        // Nobody reads any more (`tend status --watch | head -1`): the watch ends.
        let Some(every) = every.filter(|_| !crate::output::stdout_gone()) else {
            return Ok(0);
        };
        if !in_place && !json {
            crate::outln!();
        }
        let stopped = rt.block_on(async {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => true,
                _ = tokio::time::sleep(every) => false,
            }
        });
        if stopped {
            drop(screen);
            if in_place {
                crate::out!("{}", status.to_text());
            }
            return Ok(0);
        }
    }
}

/// One look at the project, with the store's and the controller's word on it.
fn snapshot(
    rt: &tokio::runtime::Runtime,
    spec: &engine::spec::Spec,
    store: &engine::store::Store,
    providers: &engine::provider::ProviderSet,
) -> Result<engine::status::Status, Failure> {
    let applied = store.last_applied()?;
    let previous: Vec<_> = applied.iter().map(|a| a.spec.clone()).collect();
    let look = look(rt, spec, &previous, store, providers, OnCtrlC::EndsLook)?;
    let mut status = engine::status::build(spec, &look.observed, applied.as_ref(), &|id| {
        look.health.get(id).cloned()
    });
    status.note_failed_rollouts(&store.failed_rollouts()?);
    if let Some(controller) = engine::controller::report::read(store) {
        controller.annotate(&mut status);
    }
    status.replicas = engine::controller::replicas::shown(store)?;
    status.tools = rt.block_on(tools(spec, providers));
    Ok(status)
}

/// The terminal's alternate screen while this lives.
struct AlternateScreen;

impl AlternateScreen {
    fn enter() -> AlternateScreen {
        crate::out!("\x1b[?1049h");
        AlternateScreen
    }
}

impl Drop for AlternateScreen {
    fn drop(&mut self) {
        crate::out!("\x1b[?1049l");
    }
}

/// Draws `text` in place of the last frame: the screen cleared, then the text from the top.
fn redraw(text: &str, every: std::time::Duration) {
    crate::out!(
        "\x1b[H\x1b[2J{text}\nlooking again every {:.1}s; Ctrl-C to stop\n",
        every.as_secs_f64()
    );
}

/// What the tools the spec's providers drive are: each provider's own word on it.
async fn tools(
    spec: &engine::spec::Spec,
    providers: &engine::provider::ProviderSet,
) -> std::collections::BTreeMap<String, String> {
    let mut kinds: Vec<&str> = spec
        .groups
        .iter()
        .map(|g| g.provider.kind.as_str())
        .collect();
    kinds.sort_unstable();
    kinds.dedup();
    let mut tools = std::collections::BTreeMap::new();
    for kind in kinds {
        if let Ok(provider) = providers.get(kind) {
            if let Some(about) = provider.about().await {
                tools.insert(kind.to_owned(), about);
            }
        }
    }
    tools
}
