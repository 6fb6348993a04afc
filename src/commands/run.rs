//! `tend run`

use std::path::{Path, PathBuf};
use std::sync::Arc;

use engine::clock::Clock;
use engine::controller::journal::Journal;
use engine::controller::replicas::{Election, Replica};
use engine::controller::{http, Controller, Options, Reload};
use engine::fault::Fault;
use engine::lang::{evaluate_file, is_nickel, EvalOptions};
use engine::spec::Duration;
use engine::store::etcd::Member;

use crate::cli::{RunArgs, SpecArgs};
use crate::failure::Failure;

use super::setup::{load, open_store, providers_for, runtime, secrets, Closing};

fn environment(message: String) -> Failure {
    Failure::Other {
        fault: Fault::Environment,
        message,
    }
}

/// The files a spec may read: `.star`, `.ncl`, and the JSON, YAML and TOML a Nickel spec
/// may import.
const SPEC_FILES: [&str; 6] = ["star", "ncl", "json", "yaml", "yml", "toml"];

/// True when `event` touched a spec file outside hidden folders (`.tend/` among them).
fn touches_spec(event: &notify::Event, root: &Path) -> bool {
    use notify::EventKind;
    if !matches!(
        event.kind,
        EventKind::Create(_) | EventKind::Modify(_) | EventKind::Remove(_)
    ) {
        return false;
    }
    event.paths.iter().any(|path| {
        let hidden = path
            .strip_prefix(root)
            .unwrap_or(path)
            .components()
            .any(|c| c.as_os_str().to_str().is_some_and(|n| n.starts_with('.')));
        !hidden
            && path
                .extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| SPEC_FILES.contains(&e))
    })
}

/// Watches the spec files in `root` and the folders under it (inotify, through `notify`):
/// `changed` is told at each change. The watcher must be kept while the watch matters.
fn watch_files(
    root: &Path,
    changed: Arc<tokio::sync::Notify>,
) -> Result<notify::RecommendedWatcher, Failure> {
    use notify::Watcher;
    let absolute = std::path::absolute(root).unwrap_or_else(|_| root.to_path_buf());
    let seen = absolute.clone();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if event.is_ok_and(|e| touches_spec(&e, &seen)) {
            changed.notify_one();
        }
    })
    .map_err(|e| environment(format!("--watch: cannot watch files: {e}")))?;
    for dir in spec_folders(&absolute) {
        watcher
            .watch(&dir, notify::RecursiveMode::NonRecursive)
            .map_err(|e| environment(format!("--watch: cannot watch {}: {e}", dir.display())))?;
    }
    Ok(watcher)
}

/// `root` and the folders under it that may hold spec files, at most 1,000: hidden ones
/// (`.git`, `.tend`) are left out, so a large history costs no watches.
fn spec_folders(root: &Path) -> Vec<PathBuf> {
    let mut found = vec![root.to_path_buf()];
    let mut next = 0;
    while next < found.len() && found.len() < 1000 {
        let dir = found[next].clone();
        next += 1;
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let hidden = entry
                .file_name()
                .to_str()
                .is_some_and(|n| n.starts_with('.'));
            if !hidden && entry.file_type().is_ok_and(|t| t.is_dir()) && found.len() < 1000 {
                found.push(entry.path());
            }
        }
    }
    found
}

/// Files the controller keeps for itself beside the endpoint's connections: its store,
/// logs, pidfds, providers' sockets.
const OWN_FILES: u64 = 512;

/// The endpoint's connection cap: `wanted`, after the soft limit on open files is raised
/// to the hard one, kept under that limit with room for the controller's own files.
fn connection_cap(wanted: usize) -> usize {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit read and write only the struct given.
    let soft = unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return wanted;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                limit.rlim_cur = limit.rlim_max;
            }
        }
        limit.rlim_cur
    };
    let room = usize::try_from(soft.saturating_sub(OWN_FILES).max(16)).unwrap_or(usize::MAX);
    if wanted > room {
        tracing::warn!(
            "--max-connections {wanted} is more than the open-file limit leaves room for; serving at most {room}"
        );
    }
    wanted.min(room)
}

fn duration_flag(flag: &str, text: &str) -> Result<std::time::Duration, Failure> {
    let parsed: Duration = text.parse().map_err(|e| Failure::Other {
        fault: Fault::Usage,
        message: format!("{flag}: {e}"),
    })?;
    Ok(parsed.to_std())
}

/// With `--watch`: a watch on the spec's folder, and how to evaluate the spec again when
/// one of its files changes.
fn reload_for(spec: &SpecArgs, watch: bool) -> Result<Option<Reload>, Failure> {
    if !watch {
        return Ok(None);
    }
    let root = spec
        .root
        .clone()
        .or_else(|| spec.spec.parent().map(Path::to_path_buf))
        .unwrap_or_default();
    let root = if root.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        root
    };
    let changed = Arc::new(tokio::sync::Notify::new());
    let watcher = watch_files(&root, changed.clone())?;
    let path = spec.spec.clone();
    let options = EvalOptions {
        root: spec.root.clone(),
        max_steps: spec.max_steps,
        ..Default::default()
    };
    Ok(Some(Reload {
        changed,
        watcher: Box::new(watcher),
        evaluate: Box::new(move || {
            if is_nickel(&path) {
                evaluate_apart(&path, &options)
            } else {
                evaluate_file(&path, &options).map_err(|e| e.to_string())
            }
        }),
    }))
}

/// Evaluates a Nickel spec in a `tend validate` of its own: Nickel cannot be stopped, and a
/// runaway edit abandoned inside this long-lived process would spin here for good; in a
/// child it ends with the child.
fn evaluate_apart(path: &Path, options: &EvalOptions) -> Result<engine::spec::Spec, String> {
    let tend = std::env::current_exe().map_err(|e| format!("cannot find tend itself: {e}"))?;
    let mut validate = std::process::Command::new(tend);
    validate.arg("validate").arg(path).arg("--json");
    if let Some(root) = &options.root {
        validate.arg("--root").arg(root);
    }
    let out = validate
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| format!("cannot run tend validate: {e}"))?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).trim_end().to_owned());
    }
    serde_json::from_slice(&out.stdout).map_err(|e| format!("tend validate printed no spec: {e}"))
}

/// Takes the project, commits the spec (when it is not the one applied last), and
/// reconciles until SIGTERM or Ctrl-C; a second one exits at once. With an etcd store,
/// runs as one replica: stands by, and leads when elected.
pub fn run(args: RunArgs) -> Result<i32, Failure> {
    let (spec, _) = load(&args.spec)?;
    let resync = duration_flag("--resync", &args.resync)?;
    let max_connections = connection_cap(args.max_connections as usize);
    // A watch that cannot be set up stops the command here, before anything runs.
    drop(reload_for(&args.spec, args.watch)?);
    let (state_dir, store) = open_store(&args.spec.spec, &args.store, &spec)?;
    // The specs it adopts later, and those whose instances may remain, are learned by the
    // providers as they meet them.
    let providers = providers_for(&args.spec.spec, &state_dir, &spec, &[]);
    let options = {
        let parallelism = args.parallelism.max(1);
        let ports = args.ports;
        let listen = args.listen.clone();
        let watch = args.watch;
        let spec_args = args.spec.clone();
        move || Options {
            resync,
            parallelism,
            ports,
            report: true,
            listen: Some(listen.clone()),
            // Checked before the controller started: a watch that fails later is told.
            reload: reload_for(&spec_args, watch).unwrap_or_else(|e| {
                tracing::warn!("{e}");
                None
            }),
            quick_heals_from: engine::reconcile::QUICK_HEALS_FROM,
            endpoint: None,
        }
    };
    let project = spec.project.clone();
    let rt = runtime()?;
    let _closing = Closing::new(&rt, &providers);
    if store.remote().is_some() {
        let election = Election {
            ttl: duration_flag("--lease-ttl", &args.lease_ttl)?,
            keep_alive: duration_flag("--keep-alive", &args.keep_alive)?,
        };
        let fence = engine::store::etcd::fence_after(election.ttl);
        if election.ttl.subsec_nanos() != 0 || election.ttl.as_secs() < 2 {
            return Err(Failure::Other {
                fault: Fault::Usage,
                message: "--lease-ttl: etcd counts leases in whole seconds; give at least 2s"
                    .to_owned(),
            });
        }
        if election.keep_alive * 2 > fence {
            return Err(Failure::Other {
                fault: Fault::Usage,
                message: format!(
                    "--keep-alive {:?} is too slow for --lease-ttl {:?}: a leader stops acting {:?} after its last answered keep-alive, so two must fit in that",
                    election.keep_alive, election.ttl, fence
                ),
            });
        }
        // A replica registers and campaigns before it reads the spec: a store that a
        // newer tend wrote is refused first.
        store.check_format()?;
        return rt.block_on(async {
            let clock = Clock::real();
            let journal = Arc::new(Journal::new(clock, true));
            let endpoint = http::Endpoint {
                journal: journal.clone(),
                status: Default::default(),
                balancers: Default::default(),
            };
            let listener = tokio::net::TcpListener::bind(&args.listen)
                .await
                .map_err(|e| environment(format!("cannot listen on {}: {e}", args.listen)))?;
            tokio::spawn(http::serve(
                listener,
                Arc::new(endpoint.clone()),
                max_connections,
            ));
            let stop = crate::progress::stop_on_signals();
            tracing::info!(
                "tend run: a replica of project {project:?} in {}; dashboard on http://{}/",
                args.store.store.as_deref().unwrap_or_default(),
                args.listen
            );
            let replica = Replica {
                store,
                spec,
                providers,
                secret: secrets(),
                clock,
                journal,
                endpoint,
                election,
                member: Member::this_process("run", Some(args.listen.clone())),
                resync,
                options: Box::new(options),
            };
            replica.run(stop).await.map(|()| 0).map_err(Failure::from)
        });
    }
    let (lock, waited) = lock_for_run(&store)?;
    // The spec file may have changed while an apply held the project: it is read again.
    let spec = if waited { load(&args.spec)?.0 } else { spec };
    // A project holding an instance that a newer tend made (or a spec its providers
    // refuse) is refused before the spec is committed: nothing is written or done.
    let previous: Vec<engine::spec::Spec> =
        store.last_applied()?.map(|a| a.spec).into_iter().collect();
    rt.block_on(engine::provider::observe(&spec, &previous, &providers))?;
    // The same spec as last applied keeps its serial: a restarted controller keeps a
    // paused group paused. A new one is a new serial.
    let applied = match store.last_applied()? {
        Some(a) if a.spec.fingerprint() == spec.fingerprint() => a,
        _ => store.commit(&spec)?,
    };
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
            options(),
        )
        .map_err(Failure::from)?;
        let endpoint = Arc::new(controller.endpoint());
        let listener = tokio::net::TcpListener::bind(&args.listen)
            .await
            .map_err(|e| environment(format!("cannot listen on {}: {e}", args.listen)))?;
        tokio::spawn(http::serve(listener, endpoint, max_connections));
        let stop = crate::progress::stop_on_signals();
        tracing::info!(
            "tend run: keeping project {project:?} at serial {}; dashboard on http://{}/",
            applied.serial,
            args.listen
        );
        controller.run(stop).await.map_err(Failure::from)
    });
    drop(lock);
    result.map(|()| 0)
}

/// The project lock for `tend run` on the local store, and whether it had to wait. A
/// `tend apply` holding it (one that found no controller) is waited for, as a controller
/// restarted during an apply must; anything else holding it (another `tend run`, a
/// `tend destroy`, whose work a controller must not undo) is an error.
fn lock_for_run(store: &engine::store::Store) -> Result<(engine::store::LockGuard, bool), Failure> {
    let mut waited = false;
    loop {
        match store.lock("run") {
            Err(engine::store::StoreError::Locked {
                holder: Some(holder),
            }) if holder.command == "apply" => {
                if !waited {
                    tracing::warn!("waiting for {} to finish with the project", holder.who());
                    waited = true;
                }
                std::thread::sleep(std::time::Duration::from_millis(200));
            }
            other => return Ok((other?, waited)),
        }
    }
}
