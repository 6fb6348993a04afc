//! The fuzz targets: what `benches/fuzz.rs` feeds its generated inputs to, and what
//! `fuzz_replay` replays the inputs kept under `testdata/fuzz/<target>/` through.
//!
//! Each target takes raw bytes and runs them through tend's real entry points for that kind
//! of outside input. Its verdict is `Ok` when the input was accepted, or rejected with a
//! clear error; `Err` says why the input shows a bug (an unclear error, a broken
//! invariant). [`run_guarded`] adds the rest: a panic or a hang is a bug too.

use std::collections::BTreeMap;
use std::io::BufReader;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use engine::diagnostic::Diagnostic;
use engine::graph::GroupGraph;
use engine::health::{ProbeError, RenderedProbe};
use engine::lang::{evaluate_file, Diagnostics, EvalBudget, EvalOptions, LangError};
use engine::plan::{plan, PlanInput, SavedPlan, SAVED_PLAN_FORMAT};
use engine::provider::{
    InstanceState, InstanceTags, Observed, ObservedInstance, Provider, ProviderError, ProviderSet,
    ProvisionRequest, Selector,
};
use engine::spec::{Group, PortRange, Spec};
use engine::store::{FailedRollout, LockHolder, Store};
use providers::sim::SimProvider;
use serde::{Deserialize, Serialize};

/// What a target made of an input it handled well.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Taken as valid.
    Accepted,
    /// Refused, with this clear error.
    Rejected(String),
}

/// `Ok` for an input handled well; `Err` says what is wrong with how tend handled it.
pub type Verdict = Result<Outcome, String>;

/// One kind of outside input and the code that reads it.
pub struct Target {
    /// Its name: the folder under `testdata/fuzz/` and `--target`.
    pub name: &'static str,
    /// The extension of its kept inputs.
    pub ext: &'static str,
    /// How long one input may take before it counts as a hang.
    pub timeout: Duration,
    /// Runs one input.
    pub run: fn(&[u8]) -> Verdict,
}

/// How long a byte parser may take with one input, planning what it read included: a
/// stored spec may hold 100,000 instances in each of its groups, which a dev build plans
/// in seconds.
const BYTES: Duration = Duration::from_secs(20);

/// Every target, in the order the fuzzer takes them.
pub const TARGETS: [Target; 9] = [
    Target {
        name: "starlark",
        ext: "star",
        // Three times what a spec that hits the default step limit takes in a dev build.
        timeout: Duration::from_secs(30),
        run: starlark,
    },
    Target {
        name: "nickel",
        ext: "ncl",
        // Nickel's own budget (see `nickel_options`) and time to give up after it.
        timeout: Duration::from_secs(20),
        run: nickel,
    },
    Target {
        name: "saved_plan",
        ext: "json",
        timeout: BYTES,
        run: saved_plan,
    },
    Target {
        name: "state",
        ext: "json",
        timeout: BYTES,
        run: state,
    },
    Target {
        name: "etcd_values",
        ext: "json",
        timeout: BYTES,
        run: etcd_values,
    },
    Target {
        name: "plugin_reply",
        ext: "jsonl",
        timeout: BYTES,
        run: plugin_reply,
    },
    Target {
        name: "terraform_json",
        ext: "json",
        timeout: BYTES,
        run: terraform_json,
    },
    Target {
        name: "template",
        ext: "txt",
        timeout: BYTES,
        run: template,
    },
    Target {
        name: "values",
        ext: "txt",
        timeout: BYTES,
        run: values,
    },
];

/// The target called `name`.
pub fn by_name(name: &str) -> Option<&'static Target> {
    TARGETS.iter().find(|t| t.name == name)
}

// ---------------------------------------------------------------------------------------
// Running one input: a thread of its own, panics caught, a deadline.

/// The last panic's message with its place, when a panic hook noted one.
static NOTED_PANIC: Mutex<Option<String>> = Mutex::new(None);

/// Notes a panic's message for [`run_guarded`] (called by the fuzzer's quiet panic hook).
pub fn note_panic(message: String) {
    if let Ok(mut noted) = NOTED_PANIC.lock() {
        *noted = Some(message);
    }
}

fn take_noted_panic() -> Option<String> {
    NOTED_PANIC.lock().ok().and_then(|mut n| n.take())
}

/// A panic payload's text.
pub fn panic_text(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_owned())
}

/// Runs `input` through `target` on a thread of its own (with the 8 MiB stack of a main
/// thread, where tend evaluates specs): a panic, or no answer within the target's timeout,
/// is an `Err` like any other bug. A thread that hangs is left behind.
pub fn run_guarded(target: &Target, input: Vec<u8>) -> Verdict {
    let (tx, rx) = std::sync::mpsc::channel();
    let run = target.run;
    take_noted_panic();
    let spawned = std::thread::Builder::new()
        .name(format!("fuzz-{}", target.name))
        .stack_size(8 << 20)
        .spawn(move || {
            let result = std::panic::catch_unwind(|| run(&input));
            let _ = tx.send(result.map_err(|p| panic_text(&*p)));
        });
    if let Err(e) = spawned {
        return Err(format!("cannot start a thread: {e}"));
    }
    match rx.recv_timeout(target.timeout) {
        Ok(Ok(verdict)) => verdict,
        Ok(Err(payload)) => Err(format!(
            "panicked: {}",
            take_noted_panic().unwrap_or(payload)
        )),
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => Err(format!(
            "hung: no answer within {}s",
            target.timeout.as_secs()
        )),
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
            Err("the input's thread ended without an answer".to_owned())
        }
    }
}

// ---------------------------------------------------------------------------------------
// Clear errors.

/// What no error shown to a user may say: tend's own failures.
const NOT_CLEAR: [&str; 3] = ["internal error", "panicked", "a bug in tend"];

/// `Ok` with the text when `text` is a clear error: something said, in words, and not an
/// internal failure.
fn clear(text: &str) -> Result<String, String> {
    if !text.chars().any(char::is_alphabetic) {
        return Err(format!("an error that says nothing: {text:?}"));
    }
    if let Some(bad) = NOT_CLEAR.iter().find(|bad| text.contains(*bad)) {
        return Err(format!("an error that says {bad:?}: {}", shorten(text)));
    }
    Ok(text.to_owned())
}

/// A rejection by `error`, when its text is clear.
fn rejected(error: impl std::fmt::Display) -> Verdict {
    clear(&error.to_string()).map(Outcome::Rejected)
}

/// At most 400 characters of `text`, for messages.
pub fn shorten(text: &str) -> String {
    let mut short: String = text.chars().take(400).collect();
    if short.len() < text.len() {
        short.push_str("...");
    }
    short
}

/// A spec error is clear when each of its diagnostics says something and points at a
/// `file:line:column`, except the one diagnostic that has no place: a Nickel evaluation
/// abandoned when it ran over its budget.
fn clear_spec_error(error: &LangError) -> Verdict {
    let text = clear(&error.to_string())?;
    let LangError::Spec(Diagnostics(diagnostics)) = error else {
        return Ok(Outcome::Rejected(text));
    };
    if diagnostics.is_empty() {
        return Err("a spec error without a diagnostic".to_owned());
    }
    for d in diagnostics {
        placed(d)?;
    }
    Ok(Outcome::Rejected(text))
}

fn placed(d: &Diagnostic) -> Result<(), String> {
    clear(&d.message)?;
    match &d.location {
        Some(at) if at.file.is_empty() || at.line == 0 || at.column == 0 => {
            Err(format!("a diagnostic with a bad place ({at}): {d}"))
        }
        Some(_) => Ok(()),
        None if d.message.contains("was abandoned") => Ok(()),
        None => Err(format!("a diagnostic without file:line:column: {d}")),
    }
}

// ---------------------------------------------------------------------------------------
// Specs: evaluate, validate, plan.

fn temp() -> Result<tempfile::TempDir, String> {
    tempfile::tempdir().map_err(|e| format!("cannot make a temporary folder: {e}"))
}

fn write(path: &Path, bytes: &[u8]) -> Result<(), String> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {dir:?}: {e}"))?;
    }
    std::fs::write(path, bytes).map_err(|e| format!("cannot write {path:?}: {e}"))
}

/// A Starlark spec: `main.star` in a folder of its own, evaluated with the default options.
fn starlark(input: &[u8]) -> Verdict {
    spec_file(input, "main.star", &EvalOptions::default())
}

/// The options Nickel specs are fuzzed with: the defaults, but a runaway spec is given up
/// after 5 s instead of 30 s, so one costs the fuzzer less.
pub fn nickel_options() -> EvalOptions {
    EvalOptions {
        budget: EvalBudget {
            time: Duration::from_secs(5),
            ..EvalBudget::default()
        },
        ..EvalOptions::default()
    }
}

/// A Nickel spec: `main.ncl` in a folder of its own.
fn nickel(input: &[u8]) -> Verdict {
    spec_file(input, "main.ncl", &nickel_options())
}

/// Evaluates `input` as the spec `name` the way `tend validate` does, then validates and
/// plans what it accepts.
fn spec_file(input: &[u8], name: &str, options: &EvalOptions) -> Verdict {
    let dir = temp()?;
    let path = dir.path().join(name);
    write(&path, input)?;
    let spec = match evaluate_file(&path, options) {
        Ok(spec) => spec,
        Err(e) => return clear_spec_error(&e),
    };
    round_trips(&spec)?;
    exercise(&spec, &[], BTreeMap::new(), seed_of(input))
}

/// What tend writes of an evaluated spec reads back as the same spec: the store's state and
/// a saved plan.
fn round_trips(spec: &Spec) -> Result<(), String> {
    let mut plain = spec.clone();
    for g in &mut plain.groups {
        g.origin = None;
    }
    let text = serde_json::to_string(&plain).map_err(|e| format!("cannot write the spec: {e}"))?;
    let back: Spec = serde_json::from_str(&text)
        .map_err(|e| format!("the spec does not read back: {e}: {}", shorten(&text)))?;
    if back != plain {
        return Err(format!(
            "the spec reads back as another spec: {}",
            shorten(&text)
        ));
    }
    saved_plan_round_trips(&plain)
}

fn saved_plan_round_trips(spec: &Spec) -> Result<(), String> {
    let graph = match GroupGraph::build(spec) {
        Ok(graph) => graph,
        Err(e) => return Err(format!("an evaluated spec has no graph: {e}")),
    };
    let observed = Observed::new(&spec.project);
    let saved = SavedPlan {
        format: SAVED_PLAN_FORMAT,
        tend_version: "fuzz".to_owned(),
        spec_path: "main.star".to_owned(),
        spec_fingerprint: spec.fingerprint(),
        observed_fingerprint: observed.fingerprint(),
        spec: spec.clone(),
        plan: plan(PlanInput::new(spec, &graph, &observed)),
    };
    let dir = temp()?;
    let path = dir.path().join("plan.json");
    saved.write(&path).map_err(|e| e.to_string())?;
    match SavedPlan::read(&path) {
        Ok(back) if back == saved => Ok(()),
        Ok(_) => Err("a saved plan reads back as another plan".to_owned()),
        Err(e) => Err(format!("a saved plan does not read back: {e}")),
    }
}

/// A number from the input, to choose what is observed the same way on every replay.
fn seed_of(input: &[u8]) -> u64 {
    input.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// What `tend plan` does with a spec it accepted (or one it read from a store): checks
/// each group's provider settings, observes (sim worlds stand in for every provider, empty
/// and then holding instances made up from `seed`), probes and plans; and plans twice, which
/// must give one plan.
fn exercise(
    spec: &Spec,
    previous: &[Spec],
    failed: BTreeMap<String, FailedRollout>,
    seed: u64,
) -> Verdict {
    let graph = match GroupGraph::build(spec) {
        Ok(graph) => graph,
        Err(e) => return rejected(e),
    };
    plans_once(spec, &graph)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot make a runtime: {e}"))?;
    let dir = temp()?;
    let (providers, worlds) = stand_ins(dir.path());
    let empty = runtime.block_on(preview(spec, previous, failed.clone(), &providers))?;
    if let Outcome::Rejected(why) = empty {
        return Ok(Outcome::Rejected(why));
    }
    runtime.block_on(populate(spec, &worlds, seed));
    runtime.block_on(preview(spec, previous, failed, &providers))
}

/// Planning the same input twice gives the same plan, which renders as text and JSON.
fn plans_once(spec: &Spec, graph: &GroupGraph) -> Result<(), String> {
    let observed = Observed::new(&spec.project);
    let input = PlanInput::new(spec, graph, &observed);
    let first = plan(input);
    if first != plan(input) {
        return Err("planning twice gave two plans".to_owned());
    }
    render(&first);
    Ok(())
}

fn render(planned: &engine::plan::Plan) {
    let _ = planned.to_text();
    let _ = planned.to_json();
    let _ = planned.startable().count();
    // What `tend test` shows of each action (it lists every action a barrier holds, so a
    // few are enough: over a whole plan of 100,000 that is quadratic).
    for i in 0..planned.actions.len().min(100) {
        let _ = planned.waits_for(i);
    }
    let _ = planned.waits_for(planned.actions.len().saturating_sub(1));
}

async fn preview(
    spec: &Spec,
    previous: &[Spec],
    failed: BTreeMap<String, FailedRollout>,
    providers: &ProviderSet,
) -> Verdict {
    let secrets: engine::exec::SecretSource = Arc::new(|_: &str| Some("s3cret".to_owned()));
    let clock = engine::clock::Clock::real();
    match engine::reconcile::preview(spec, previous, failed, providers, &secrets, &clock).await {
        Ok(looked) => {
            render(&looked.plan);
            Ok(Outcome::Accepted)
        }
        Err(e) => rejected(engine::provider::error_chain(&e)),
    }
}

/// A small xorshift generator.
fn xorshift(seed: u64) -> impl FnMut(u64) -> u64 {
    let mut state = seed | 1;
    move |n: u64| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state % n.max(1)
    }
}

/// Instances made up for the spec's groups, in the sim world of each group's provider: in
/// and out of the allocation, at the group's hash or another, in every state.
async fn populate(spec: &Spec, worlds: &BTreeMap<String, SimProvider>, seed: u64) {
    let mut next = xorshift(seed);
    let states = [
        InstanceState::Running,
        InstanceState::Starting,
        InstanceState::Unhealthy,
        InstanceState::Dead,
    ];
    for group in &spec.groups {
        let Some(world) = worlds.get(&group.provider.kind) else {
            continue;
        };
        let slots = group.slots();
        let current = engine::spec::SpecHash::of(group).to_string();
        for _ in 0..next(6) {
            let slot = match slots.get(next(slots.len() as u64 + 2) as usize) {
                Some(slot) => slot.to_string(),
                None => next(1000).to_string(),
            };
            let hash = if next(3) == 0 {
                "0ld0ld0ld0ld"
            } else {
                &current
            };
            let tags = InstanceTags {
                project: spec.project.clone(),
                group: group.name.clone(),
                slot,
                hash: hash.to_owned(),
                ports: Vec::new(),
                format: engine::format::INSTANCE,
            };
            let _ = world.insert(made_up(tags, states[next(4) as usize])).await;
        }
    }
}

fn made_up(tags: InstanceTags, state: InstanceState) -> ObservedInstance {
    ObservedInstance {
        id: String::new(),
        tags,
        labels: BTreeMap::new(),
        address: None,
        ports: BTreeMap::new(),
        state,
        started_at: 0,
        ended: None,
        remains: 0,
    }
}

/// A sim world for each provider a spec may name, each answering as that provider in name
/// and in what settings it takes; and the worlds by provider name.
fn stand_ins(dir: &Path) -> (ProviderSet, BTreeMap<String, SimProvider>) {
    let real = providers::all(&dir.join("real"));
    let mut set = ProviderSet::default();
    let mut worlds = BTreeMap::new();
    for (name, provider) in real.all() {
        let sim = SimProvider::new(&dir.join(&name));
        worlds.insert(name.clone(), sim.clone());
        set.insert(Arc::new(StandIn {
            sim,
            name,
            real: provider,
        }));
    }
    (set, worlds)
}

/// A provider that checks settings as the real one of its name does, and keeps its
/// instances in a sim world.
struct StandIn {
    name: String,
    real: Arc<dyn Provider>,
    sim: SimProvider,
}

#[async_trait::async_trait]
impl Provider for StandIn {
    fn name(&self) -> &str {
        &self.name
    }

    fn validate(&self, props: &BTreeMap<String, serde_json::Value>) -> Result<(), ProviderError> {
        self.real.validate(props)
    }

    async fn provision(&self, request: ProvisionRequest) -> Result<String, ProviderError> {
        self.sim.provision(request).await
    }

    async fn destroy(&self, id: &str) -> Result<(), ProviderError> {
        self.sim.destroy(id).await
    }

    async fn describe(&self, selector: &Selector) -> Result<Vec<ObservedInstance>, ProviderError> {
        self.sim.describe(selector).await
    }

    async fn probe(
        &self,
        id: &str,
        probe: &RenderedProbe,
        timeout: Duration,
    ) -> Option<Result<(), ProbeError>> {
        self.sim.probe(id, probe, timeout).await
    }

    fn probes_by_id(&self) -> bool {
        true
    }
}

// ---------------------------------------------------------------------------------------
// Saved plans.

/// A saved plan file (`tend plan -o`), read as `tend apply FILE` reads it.
fn saved_plan(input: &[u8]) -> Verdict {
    let dir = temp()?;
    let path = dir.path().join("plan.json");
    write(&path, input)?;
    let saved = match SavedPlan::read(&path) {
        Ok(saved) => saved,
        Err(e) => return rejected(e),
    };
    render(&saved.plan);
    let _ = saved.spec.fingerprint();
    exercise(&saved.spec, &[], BTreeMap::new(), seed_of(input)).map(|_| Outcome::Accepted)
}

// ---------------------------------------------------------------------------------------
// The local store.

/// The same bytes as each file of the local state folder: `state.json`, a history entry,
/// `rollouts.json`, `controller.json`, the sim world's `world.jsonl` and the lock file's
/// holder. Accepted when any of them reads; what reads is then planned with, as `tend run`
/// takes the last applied spec for its own.
fn state(input: &[u8]) -> Verdict {
    let dir = temp()?;
    for file in [
        "state.json",
        "history/000001.json",
        "rollouts.json",
        "controller.json",
        "sim/world.jsonl",
    ] {
        write(&dir.path().join(file), input)?;
    }
    let store = Store::new(dir.path());
    let mut accepted = false;
    let mut refusals = Vec::new();
    let failed = match store.failed_rollouts() {
        Ok(failed) => {
            accepted = true;
            failed
        }
        Err(e) => {
            refusals.push(clear(&e.to_string())?);
            BTreeMap::new()
        }
    };
    // A history entry is read as the state is, and planned with the same way: once does.
    for (read, plan_it) in [(store.last_applied(), true), (store.applied(1), false)] {
        match read {
            Ok(Some(applied)) => {
                accepted = true;
                if plan_it {
                    let previous = [applied.spec.clone()];
                    exercise(&applied.spec, &previous, failed.clone(), seed_of(input))?;
                }
            }
            Ok(None) => return Err("a state file that is there reads as none".to_owned()),
            Err(e) => refusals.push(clear(&e.to_string())?),
        }
    }
    accepted |= other_state_files(dir.path(), &store, input);
    match (accepted, refusals.into_iter().next()) {
        (false, Some(why)) => Ok(Outcome::Rejected(why)),
        _ => Ok(Outcome::Accepted),
    }
}

/// The controller's report, the sim world and a lock holder; true when any of them read.
fn other_state_files(dir: &Path, store: &Store, input: &[u8]) -> bool {
    let report = engine::controller::report::read(store).is_some();
    let world = providers::sim::SimWorld::in_file(dir.join("sim/world.jsonl"));
    let now = engine::store::now_ms();
    let instances = world.instances();
    for i in &instances {
        let _ = i.serves(now);
    }
    let holder = match serde_json::from_slice::<LockHolder>(input) {
        Ok(holder) => {
            let _ = engine::procfs::is_alive(holder.pid, holder.start_ticks);
            let _ = holder.to_string();
            true
        }
        Err(_) => false,
    };
    report || !instances.is_empty() || holder
}

// ---------------------------------------------------------------------------------------
// Values read from etcd.

/// etcd's `sources` key, as the etcd store reads it (its type is private there).
#[derive(Serialize, Deserialize)]
pub struct Sources {
    /// The store's lineage.
    pub lineage: String,
    /// When the spec was applied.
    pub applied_at: u64,
    /// The spec's port range.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ports: Option<PortRange>,
    /// The groups in declaration order.
    pub groups: Vec<String>,
    /// History entries written so far.
    pub history: u64,
    /// The commit that wrote it.
    #[serde(default)]
    pub commit: String,
}

/// An etcd `history/<n>` entry, as the etcd store reads it (its type is private there).
#[derive(Serialize, Deserialize)]
pub struct HistoryEntry {
    /// The store's lineage.
    pub lineage: String,
    /// When it was applied.
    pub applied_at: u64,
    /// The spec as applied.
    pub spec: Spec,
}

/// The same bytes as the value of each key of an etcd store: a group of the spec, `sources`,
/// a history entry, `rollouts`, the leader's `status`, an intent, a member. Accepted when
/// any of them reads; a group or a history entry is then planned with.
fn etcd_values(input: &[u8]) -> Verdict {
    let seed = seed_of(input);
    let mut accepted = Vec::new();
    let mut first_refusal = None;
    let mut note = |name: &'static str, read: Result<(), serde_json::Error>| match read {
        Ok(()) => accepted.push(name),
        Err(e) => {
            first_refusal.get_or_insert(e.to_string());
        }
    };
    note(
        "sources",
        serde_json::from_slice::<Sources>(input).map(drop),
    );
    note(
        "status",
        serde_json::from_slice::<engine::controller::report::Report>(input).map(drop),
    );
    note(
        "intent",
        serde_json::from_slice::<engine::store::etcd::Intent>(input).map(drop),
    );
    note(
        "member",
        serde_json::from_slice::<engine::store::etcd::Member>(input).map(|m| drop(m.to_string())),
    );
    let group = serde_json::from_slice::<Group>(input);
    let history = serde_json::from_slice::<HistoryEntry>(input);
    let rollouts = serde_json::from_slice::<BTreeMap<String, FailedRollout>>(input);
    if let Ok(group) = group {
        let spec = Spec {
            project: "fuzz".to_owned(),
            ports: None,
            groups: vec![group],
        };
        exercise(&spec, &[], BTreeMap::new(), seed)?;
        accepted.push("group");
    }
    if let Ok(entry) = history {
        exercise(&entry.spec, &[], BTreeMap::new(), seed)?;
        accepted.push("history");
    }
    if let Ok(failed) = rollouts {
        exercise(&base_spec()?, &[], failed, seed)?;
        accepted.push("rollouts");
    }
    match (accepted.is_empty(), first_refusal) {
        (true, Some(why)) => rejected(why),
        _ => Ok(Outcome::Accepted),
    }
}

/// The spec `rollouts` and plugin answers are planned against: groups `web` and `db`.
pub const BASE_SPEC: &str = r#"project(name = "fuzz")
db = group(name = "db", ids = ["a", "b"], provider = sim(), flavor = flavor(command = ["db"]))
group(
    name = "web",
    size = 3,
    provider = sim(),
    flavor = flavor(command = ["web", "{{ instance.ports.http }}"], ports = ["http"], health = http(port = "http")),
    update = rolling(max_surge = 1, on_failure = "rollback"),
    depends_on = [db],
)
"#;

/// [`BASE_SPEC`], evaluated.
pub fn base_spec() -> Result<Spec, String> {
    let dir = temp()?;
    let path = dir.path().join("main.star");
    write(&path, BASE_SPEC.as_bytes())?;
    evaluate_file(&path, &EvalOptions::default()).map_err(|e| format!("the base spec: {e}"))
}

// ---------------------------------------------------------------------------------------
// Plugin replies.

/// What a plugin writes on its stdout, line by line, read as tend reads it: each line
/// decoded as a JSON-RPC message; each answer's result read as an `initialize`,
/// `instance.provision` and `instance.describe` result, the instances described then
/// planned against. Accepted when any line is a message.
fn plugin_reply(input: &[u8]) -> Verdict {
    use providers::plugin::protocol::{frame, MAX_MESSAGE_BYTES};
    let mut reader = BufReader::new(input);
    let mut accepted = false;
    let mut first_refusal = None;
    loop {
        match frame::read_line(&mut reader, MAX_MESSAGE_BYTES) {
            Ok(None) => break,
            Ok(Some(line)) => match reply_line(&line)? {
                Outcome::Accepted => accepted = true,
                Outcome::Rejected(why) => {
                    first_refusal.get_or_insert(why);
                }
            },
            Err(e) => {
                first_refusal.get_or_insert(clear(&e.to_string())?);
            }
        }
    }
    match (accepted, first_refusal) {
        (false, Some(why)) => Ok(Outcome::Rejected(why)),
        _ => Ok(Outcome::Accepted),
    }
}

fn reply_line(line: &[u8]) -> Verdict {
    use providers::plugin::protocol::{decode, Message};
    match decode(line) {
        Err(e) => {
            clear(&e.to_rpc().message)?;
            rejected(e)
        }
        Ok(Message::Response {
            outcome: Ok(result),
            ..
        }) => answer(result),
        Ok(Message::Response {
            outcome: Err(error),
            ..
        }) => {
            let _ = error.retryable();
            clear(&error.to_string()).map(|_| Outcome::Accepted)
        }
        Ok(_) => Ok(Outcome::Accepted),
    }
}

/// A result read as each answer tend waits for.
fn answer(result: serde_json::Value) -> Verdict {
    use providers::plugin::protocol::methods::{InitializeResult, ProvisionResult};
    if let Ok(info) = serde_json::from_value::<InitializeResult>(result.clone()) {
        let _ = usize::try_from(info.capabilities.max_concurrency);
        let _ = info.timeouts.provision_ms.map(Duration::from_millis);
    }
    let _ = serde_json::from_value::<ProvisionResult>(result.clone());
    let filter: BTreeMap<String, String> = [("tend.project".to_owned(), "fuzz".to_owned())]
        .into_iter()
        .collect();
    match providers::plugin::answers::instances(result, &filter) {
        Ok(instances) => plan_observed(instances),
        Err(why) => clear(&why).map(|_| Outcome::Accepted),
    }
}

/// Plans the base spec against instances a provider reported.
fn plan_observed(instances: Vec<ObservedInstance>) -> Verdict {
    let spec = base_spec()?;
    let graph = GroupGraph::build(&spec).map_err(|e| e.to_string())?;
    let observed = Observed::from_instances("fuzz", "sim", instances);
    let input = PlanInput::new(&spec, &graph, &observed);
    let first = plan(input);
    if first != plan(input) {
        return Err("planning twice gave two plans".to_owned());
    }
    render(&first);
    Ok(Outcome::Accepted)
}

// ---------------------------------------------------------------------------------------
// Terraform's JSON.

/// The same bytes as the output of `terraform show -json`, a group's `main.tf.json` and the
/// lines of `terraform apply -json`. Accepted when the first or the second reads.
fn terraform_json(input: &[u8]) -> Verdict {
    use providers::terraform::reading;
    for line in input.split(|b| *b == b'\n') {
        if let Some(event) = reading::read_event(line) {
            if let Some((_, message)) = &event.error {
                clear(message)?;
            }
        }
    }
    let dir = temp()?;
    let path = dir.path().join("main.tf.json");
    write(&path, input)?;
    let config = reading::config_instances(&path, "web");
    let shown = reading::show(input, "web");
    if let Ok(resources) = &shown {
        for r in resources {
            let _ = reading::folders_of(&r.input);
            let _ = r.field("run");
            let tags: BTreeMap<String, String> = r
                .input
                .get("tags")
                .and_then(|t| serde_json::from_value(t.clone()).ok())
                .unwrap_or_default();
            let _ = InstanceTags::from_map(&tags).port_map();
        }
    }
    match (shown, config) {
        (Err(a), Err(b)) => {
            clear(&b)?;
            rejected(a)
        }
        _ => Ok(Outcome::Accepted),
    }
}

// ---------------------------------------------------------------------------------------
// Flavor templates.

/// A flavor template: checked as a spec's evaluation checks it, then rendered for one
/// instance as an apply renders it.
fn template(input: &[u8]) -> Verdict {
    use engine::template::{analyze, render, GroupVars, InstanceVars, TemplateContext};
    let text = String::from_utf8_lossy(input);
    if let Err(e) = analyze(&text) {
        return rejected(e);
    }
    let context = TemplateContext {
        instance: InstanceVars {
            id: "web-1".to_owned(),
            index: 1,
            slot: "1".to_owned(),
            group: "web".to_owned(),
            ports: [("http".to_owned(), 20001)].into_iter().collect(),
        },
        group: GroupVars {
            name: "web".to_owned(),
            size: 3,
            ids: vec!["a".to_owned(), "b".to_owned()],
        },
        groups: BTreeMap::new(),
    };
    match render(&text, &context) {
        Ok(_) => Ok(Outcome::Accepted),
        Err(e) => rejected(e),
    }
}

// ---------------------------------------------------------------------------------------
// Small values.

/// The text (each line, and the whole) through the parsers of small values users and
/// other programs write: durations, port ranges, memory sizes, store URLs, `tend.ports`
/// tags, names. Accepted when any of them reads it.
fn values(input: &[u8]) -> Verdict {
    let text = String::from_utf8_lossy(input);
    let mut accepted = false;
    let mut first_refusal = None;
    for piece in std::iter::once(text.as_ref()).chain(text.lines()) {
        for result in value_parsers(piece) {
            match result {
                Ok(()) => accepted = true,
                Err(why) => {
                    let why = clear(&why)?;
                    first_refusal.get_or_insert(why);
                }
            }
        }
    }
    match (accepted, first_refusal) {
        (false, Some(why)) => Ok(Outcome::Rejected(why)),
        _ => Ok(Outcome::Accepted),
    }
}

fn value_parsers(text: &str) -> Vec<Result<(), String>> {
    use engine::spec::{parse_memory, validate, Duration as SpecDuration};
    let _ = InstanceTags::parse_ports(text);
    let _ = engine::spec::Allocation::Size(3).parse_slot(text);
    let e = |e: &dyn std::fmt::Display| e.to_string();
    vec![
        text.parse::<SpecDuration>().map(drop).map_err(|x| e(&x)),
        text.parse::<PortRange>().map(drop).map_err(|x| e(&x)),
        parse_memory(text).map(drop).map_err(|x| e(&x)),
        engine::store::etcd::parse_url(text).map(drop),
        validate::project_name(text).map_err(|x| e(&x)),
        validate::port_name(text).map_err(|x| e(&x)),
        validate::env_name(text).map_err(|x| e(&x)),
    ]
}
