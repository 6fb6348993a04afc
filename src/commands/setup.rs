//! What several commands share: loading a spec, the state folder, the runtime, providers.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use engine::exec::SecretSource;
use engine::fault::Fault;
use engine::graph::GroupGraph;
use engine::lang::{evaluate_file, EvalOptions};
use engine::spec::Spec;
use engine::store::{EtcdStore, Store, StoreError};

use crate::cli::{SpecArgs, StoreArgs};
use crate::failure::Failure;

/// Evaluates and checks the spec, and builds its group graph. A plan saved by `tend plan
/// -o` is refused: as Starlark, its JSON would evaluate to an empty spec, whose apply or
/// `tend run` would remove every instance.
pub fn load(args: &SpecArgs) -> Result<(Spec, GroupGraph), Failure> {
    use engine::plan::{SavedPlan, SavedPlanError};
    match SavedPlan::read(&args.spec) {
        Err(SavedPlanError::NotAPlan { .. } | SavedPlanError::Io { .. }) => {}
        _ => {
            return Err(Failure::Other {
                fault: Fault::Usage,
                message: format!(
                    "{} is a plan saved by `tend plan -o`, not a spec: `tend apply {}` applies it",
                    args.spec.display(),
                    args.spec.display()
                ),
            })
        }
    }
    let options = EvalOptions {
        root: args.root.clone(),
        max_steps: args.max_steps,
        ..Default::default()
    };
    let spec = evaluate_file(&args.spec, &options)?;
    crate::logging::set_project(&spec.project);
    let graph = GroupGraph::build(&spec).map_err(|e| Failure::Spec(format!("error: {e}")))?;
    Ok((spec, graph))
}

/// `.tend/` beside the spec, unless given.
pub fn state_dir_for(spec: &Path, given: Option<PathBuf>) -> PathBuf {
    given.unwrap_or_else(|| {
        spec.parent()
            .map(Path::to_path_buf)
            .unwrap_or_default()
            .join(".tend")
    })
}

/// The state folder of the spec at `spec_path`, and the store of `project`: the folder
/// itself, or etcd when `--store` (or `TEND_STORE`) names it. A folder that a newer tend
/// wrote is refused here, before anything (the lock, a provider) touches it; an etcd store
/// by the first call made to it (`take`, `last_applied`), so its flags are checked first.
pub fn open_store(
    spec_path: &Path,
    args: &StoreArgs,
    spec: &Spec,
) -> Result<(PathBuf, Store), Failure> {
    let project = spec.project.as_str();
    let state_dir = state_dir_for(spec_path, args.state_dir.clone());
    match args.store.as_deref().map(str::trim) {
        None | Some("") | Some("local") => {
            let store = Store::new(&state_dir);
            store.check_format()?;
            Ok((state_dir, store))
        }
        Some(url) => {
            let endpoints =
                engine::store::etcd::parse_url(url).map_err(|message| Failure::Other {
                    fault: Fault::Usage,
                    message: format!("--store: {message}"),
                })?;
            process_groups_name_their_machine(spec)?;
            let etcd = EtcdStore::connect(&endpoints, project)?;
            let store = Store::etcd(&state_dir, etcd, project);
            store.check_folder_format()?;
            Ok((state_dir, store))
        }
    }
}

/// With an etcd store, controllers on other machines share the project: a group of local
/// processes must say which machine keeps them.
fn process_groups_name_their_machine(spec: &Spec) -> Result<(), Failure> {
    let Some(group) = spec
        .groups
        .iter()
        .find(|g| g.provider.kind == "process" && !g.provider.props.contains_key("machine"))
    else {
        return Ok(());
    };
    let diagnostic = engine::diagnostic::Diagnostic::new(
        format!(
            "group {:?} runs local processes but names no machine: with an etcd store, tends on other machines share the project, and only one on the processes' machine may keep them; say which, as process(machine = {:?})",
            group.name,
            engine::store::etcd::host_name()
        ),
        group.origin.clone(),
    );
    Err(Failure::Spec(diagnostic.to_string()))
}

/// The providers for `spec` and the `previous` specs whose instances may still exist:
/// every built-in one, and each plugin they name, started in the folder of the spec at
/// `spec_path` when first used.
pub fn providers_for(
    spec_path: &Path,
    state_dir: &Path,
    spec: &Spec,
    previous: &[Spec],
) -> engine::provider::ProviderSet {
    let dir = spec_path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let specs: Vec<&Spec> = std::iter::once(spec).chain(previous).collect();
    providers::for_specs(state_dir, dir, &specs)
}

/// Ends what the providers run for tend itself (plugins, by their shutdown sequence) when
/// dropped, however the command ends. Declare it after the runtime it runs on.
pub struct Closing<'a> {
    rt: &'a tokio::runtime::Runtime,
    providers: engine::provider::ProviderSet,
}

impl<'a> Closing<'a> {
    /// Closes `providers` on `rt` when dropped.
    pub fn new(rt: &'a tokio::runtime::Runtime, providers: &engine::provider::ProviderSet) -> Self {
        Closing {
            rt,
            providers: providers.clone(),
        }
    }
}

impl Drop for Closing<'_> {
    fn drop(&mut self) {
        self.rt.block_on(self.providers.close());
    }
}

/// `providers`, fenced by the project lock when it is a leadership in etcd: every call
/// that acts checks the lease first, writes an intent, and tags what it makes.
pub fn fenced(
    providers: engine::provider::ProviderSet,
    lock: &engine::store::ProjectLock,
) -> engine::provider::ProviderSet {
    match lock.leadership() {
        Some(leadership) => engine::provider::fenced::fence(&providers, leadership),
        None => providers,
    }
}

/// The async runtime the engine runs on.
pub fn runtime() -> Result<tokio::runtime::Runtime, Failure> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| Failure::Other {
            fault: Fault::Environment,
            message: format!("cannot start the async runtime: {e}"),
        })
}

/// Secrets come from tend's own environment, read when an instance is rendered.
pub fn secrets() -> SecretSource {
    Arc::new(|name: &str| std::env::var(name).ok())
}

impl From<StoreError> for Failure {
    fn from(e: StoreError) -> Self {
        let fault = match &e {
            StoreError::TooLarge { .. } => Fault::Spec,
            StoreError::NewerFormat(newer) => newer.fault(),
            _ => Fault::Environment,
        };
        Failure::Other {
            fault,
            message: e.to_string(),
        }
    }
}

/// The reconciler's options for `apply` and `destroy` (and, with `Mode::Run`, `run`).
pub fn reconcile_options(
    parallelism: usize,
    ports: Option<engine::spec::PortRange>,
    mode: engine::reconcile::Mode,
) -> engine::reconcile::Options {
    engine::reconcile::Options {
        exec: engine::exec::ExecOptions {
            parallelism: parallelism.max(1),
            ports,
            ..engine::exec::ExecOptions::default()
        },
        mode,
        balancers: Default::default(),
        quick_heals_from: engine::reconcile::QUICK_HEALS_FROM,
    }
}

/// What a Ctrl-C during a look does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnCtrlC {
    /// What it does anyway: `apply` keeps the default, so a Ctrl-C at its question ends it.
    Default,
    /// It ends the look, and the command returns, so its plugins are shut down in order on
    /// the way out: for commands that only show (`plan`, `status`).
    EndsLook,
}

/// One look at what the providers hold for `spec`: observed instances, their health and
/// the plan, with the rollouts the store says failed. An unobservable provider is an
/// error, never an empty view.
pub fn look(
    rt: &tokio::runtime::Runtime,
    spec: &Spec,
    previous: &[Spec],
    store: &engine::store::Store,
    providers: &engine::provider::ProviderSet,
    on_ctrl_c: OnCtrlC,
) -> Result<engine::reconcile::Preview, Failure> {
    let failed = store.failed_rollouts()?;
    let (secrets, clock) = (secrets(), engine::clock::Clock::real());
    let looking = engine::reconcile::preview(spec, previous, failed, providers, &secrets, &clock);
    rt.block_on(async {
        if on_ctrl_c == OnCtrlC::Default {
            return Ok(looking.await?);
        }
        tokio::select! {
            looked = looking => Ok(looked?),
            _ = tokio::signal::ctrl_c() => Err(Failure::Other {
                fault: Fault::Usage,
                message: "interrupted: nothing was planned or done".to_owned(),
            }),
        }
    })
}

/// What `apply` and `destroy` run once the spec is committed: one reconciler, driven until
/// the project converges or nothing more can be done, printing each action as it ends.
pub struct Drive<'a> {
    /// The spec to reach (empty for destroy).
    pub spec: Spec,
    /// Its serial in the store.
    pub serial: u64,
    /// Specs whose instances may still exist.
    pub previous: Vec<Spec>,
    /// The project's store.
    pub store: &'a engine::store::Store,
    /// The providers to act through.
    pub providers: engine::provider::ProviderSet,
    /// Actions in flight at once.
    pub parallelism: usize,
    /// Where instance ports come from (`--ports`), when given.
    pub ports: Option<engine::spec::PortRange>,
    /// The plan shown, for the progress bars.
    pub planned: &'a engine::plan::Plan,
    /// "Apply" or "Destroy", for the closing line.
    pub verb: &'static str,
}

impl Drive<'_> {
    /// Runs the reconciler to the end on `rt`; the exit status.
    pub fn run(self, rt: &tokio::runtime::Runtime) -> Result<i32, Failure> {
        let (events, tally) = crate::progress::printer(self.planned);
        rt.block_on(async {
            let mut reconciler = engine::reconcile::Reconciler::new(
                self.spec,
                self.serial,
                self.previous,
                self.store.clone(),
                self.providers,
                secrets(),
                engine::clock::Clock::real(),
                reconcile_options(self.parallelism, self.ports, engine::reconcile::Mode::Apply),
                events,
            )?;
            crate::progress::run_to_end(&mut reconciler, &tally, self.verb).await
        })
    }
}
