//! `tend run`

use std::path::{Path, PathBuf};
use std::sync::Arc;

use engine::clock::Clock;
use engine::controller::journal::Journal;
use engine::controller::{http, Controller, Options, Reload};
use engine::fault::Fault;
use engine::lang::{evaluate_file, EvalOptions};
use engine::spec::Duration;
use engine::store::Store;

use crate::cli::RunArgs;
use crate::failure::Failure;

use super::setup::{load, runtime, secrets, state_dir_for};

fn environment(message: String) -> Failure {
    Failure::Other {
        fault: Fault::Environment,
        message,
    }
}

/// Every `.star` file under `root` (the spec's own files), at most 1,000.
fn spec_files(root: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            let hidden = path
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with('.'));
            if hidden {
                continue;
            }
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "star") && found.len() < 1000 {
                found.push(path);
            }
        }
    }
    found.sort();
    found
}

/// Takes the project, commits the spec (when it is not the one applied last), and
/// reconciles until SIGTERM or Ctrl-C; a second one exits at once.
pub fn run(args: RunArgs) -> Result<i32, Failure> {
    let (spec, _) = load(&args.spec)?;
    let resync: Duration = args.resync.parse().map_err(|e| Failure::Other {
        fault: Fault::Spec,
        message: format!("--resync: {e}"),
    })?;
    let state_dir = state_dir_for(&args.spec.spec, args.state_dir.clone());
    let store = Store::new(&state_dir);
    let lock = store.lock("run")?;
    // The same spec as last applied keeps its serial: a restarted controller keeps a
    // paused group paused. A new one is a new serial.
    let applied = match store.last_applied()? {
        Some(a) if a.spec.fingerprint() == spec.fingerprint() => a,
        _ => store.commit(&spec)?,
    };
    let providers = providers::all(&state_dir);
    let reload = args.watch.then(|| {
        let root = args
            .spec
            .root
            .clone()
            .or_else(|| args.spec.spec.parent().map(Path::to_path_buf))
            .unwrap_or_default();
        let root = if root.as_os_str().is_empty() {
            PathBuf::from(".")
        } else {
            root
        };
        let path = args.spec.spec.clone();
        let options = EvalOptions {
            root: args.spec.root.clone(),
            max_steps: args.spec.max_steps,
        };
        Reload {
            files: spec_files(&root),
            evaluate: Box::new(move || evaluate_file(&path, &options).map_err(|e| e.to_string())),
        }
    });
    let options = Options {
        resync: resync.to_std(),
        parallelism: args.parallelism.max(1),
        ports: args.ports,
        state_dir: Some(state_dir.clone()),
        listen: Some(args.listen.clone()),
        reload,
        quick_heals_from: engine::reconcile::QUICK_HEALS_FROM,
    };
    let project = spec.project.clone();
    let rt = runtime()?;
    let result = rt.block_on(async {
        let clock = Clock::real();
        let journal = Arc::new(Journal::new(clock, true));
        let controller = Controller::new(
            spec,
            applied.serial,
            store,
            providers,
            secrets(),
            clock,
            journal,
            options,
        )
        .map_err(|e| environment(e.to_string()))?;
        let endpoint = Arc::new(controller.endpoint());
        let listener = tokio::net::TcpListener::bind(&args.listen)
            .await
            .map_err(|e| environment(format!("cannot listen on {}: {e}", args.listen)))?;
        tokio::spawn(http::serve(listener, endpoint));
        let stop = crate::progress::stop_on_signals();
        crate::errln!(
            "tend run: keeping project {project:?} at serial {}; http://{}/status",
            applied.serial,
            args.listen
        );
        controller
            .run(stop)
            .await
            .map_err(|e| environment(e.to_string()))
    });
    drop(lock);
    result.map(|()| 0)
}
