//! Evaluate + plan benchmark: a generated spec of G groups x 100 slots against an observed
//! state with 10% dead, 10% outdated and 5% extra instances. Prints a table. Times the
//! evaluation and the planning; the observed state is built between them, as `tend plan`
//! reads it from the providers, and that reading is not timed.
//!
//! Run: `cargo bench -p tend-engine --bench plan`

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use engine::graph::GroupGraph;
use engine::lang::{evaluate_source, EvalOptions};
use engine::plan::{plan, PlanInput, Summary};
use engine::provider::{InstanceState, InstanceTags, Observed, ObservedInstance};
use engine::spec::{Spec, SpecHash};

const SLOTS: u32 = 100;
const RUNS: usize = 11;

/// A spec with `groups` literal group() calls; every tenth group starts a dependency chain.
fn spec_source(groups: usize) -> String {
    let mut out = String::from("project(name = \"bench\")\n");
    for i in 0..groups {
        let deps = if i % 10 == 0 {
            String::new()
        } else {
            format!(", depends_on = [\"g{}\"]", i - 1)
        };
        let _ = writeln!(
            out,
            "group(name = \"g{i}\", size = {SLOTS}, provider = sim(), flavor = flavor(command = [\"srv\", \"--port\", \"{{{{ 8000 + instance.index }}}}\"], env = {{\"GROUP\": \"g{i}\"}}, health = http(port = \"{{{{ 8000 + instance.index }}}}\")){deps})"
        );
    }
    out
}

/// 75% current and running, 10% dead, 10% outdated, plus 5% extra beyond the size.
fn observed_for(spec: &Spec) -> Observed {
    let mut instances = Vec::new();
    let mut n = 0u64;
    for group in &spec.groups {
        let hash = SpecHash::of(group).to_string();
        for slot in 0..(SLOTS + SLOTS / 20) {
            n += 1;
            let (state, hash) = match slot % 20 {
                0 | 1 if slot < SLOTS => (InstanceState::Dead, hash.clone()),
                2 | 3 if slot < SLOTS => (InstanceState::Running, "0ld0ld0ld0ld".to_owned()),
                _ => (InstanceState::Running, hash.clone()),
            };
            instances.push(ObservedInstance {
                id: format!("sim-{n:07}"),
                tags: InstanceTags {
                    project: "bench".to_owned(),
                    group: group.name.clone(),
                    slot: slot.to_string(),
                    hash,
                    ports: Default::default(),
                    format: engine::format::INSTANCE,
                },
                labels: BTreeMap::new(),
                address: None,
                state,
                started_at: n,
                ended: None,
                remains: 0,
                ports: Default::default(),
            });
        }
    }
    Observed::from_instances(&spec.project, "sim", instances)
}

struct Row {
    groups: usize,
    instances: usize,
    eval: Duration,
    plan: Duration,
    total: Duration,
    summary: Summary,
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn measure(groups: usize, dir: &std::path::Path) -> Row {
    let source = spec_source(groups);
    let options = EvalOptions::default();
    let spec = match evaluate_source("main.star", &source, dir, &options) {
        Ok(s) => s,
        Err(e) => panic!("{e}"),
    };
    drop(spec);
    let (mut evals, mut plans, mut totals) = (Vec::new(), Vec::new(), Vec::new());
    let mut summary = Summary::default();
    for _ in 0..RUNS {
        let start = Instant::now();
        let spec = match evaluate_source("main.star", &source, dir, &options) {
            Ok(s) => s,
            Err(e) => panic!("{e}"),
        };
        let evaluated = Instant::now();
        // As in `tend plan`: the observed state is read after the spec is evaluated.
        // Reading it is provider I/O, so it is not timed here.
        let observed = observed_for(&spec);
        let observed_at = Instant::now();
        let graph = match GroupGraph::build(&spec) {
            Ok(g) => g,
            Err(e) => panic!("{e}"),
        };
        let planned = plan(PlanInput::new(&spec, &graph, &observed));
        let done = Instant::now();
        summary = planned.summary;
        evals.push(evaluated - start);
        plans.push(done - observed_at);
        totals.push((evaluated - start) + (done - observed_at));
    }
    Row {
        groups,
        instances: groups * SLOTS as usize,
        eval: median(evals),
        plan: median(plans),
        total: median(totals),
        summary,
    }
}

fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(f64::NAN)
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` passes nothing we need.
    let dir = std::env::temp_dir();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!("evaluate + plan, median of {RUNS} runs (100 slots per group; 10% dead, 10% outdated, 5% extra)");
    println!(
        "{:>7} {:>10} {:>10} {:>10} {:>10} {:>8} {:>8} {:>8} {:>8}",
        "groups",
        "instances",
        "eval ms",
        "plan ms",
        "total ms",
        "create",
        "replace",
        "heal",
        "destroy"
    );
    let rows: Vec<Row> = [100, 1000].iter().map(|g| measure(*g, &dir)).collect();
    for r in &rows {
        println!(
            "{:>7} {:>10} {:>10.1} {:>10.1} {:>10.1} {:>8} {:>8} {:>8} {:>8}",
            r.groups,
            r.instances,
            ms(r.eval),
            ms(r.plan),
            ms(r.total),
            r.summary.create,
            r.summary.replace,
            r.summary.heal,
            r.summary.destroy
        );
    }
    let ratio = rows[1].total.as_secs_f64() / rows[0].total.as_secs_f64();
    println!("10x the instances cost {ratio:.2}x the time (target: at most 11x)");
    println!(
        "100,000 instances: {:.0} ms (target: under 300 ms); peak memory {:.0} MB (target: under 250 MB)",
        ms(rows[1].total),
        peak_rss_mb()
    );
}
