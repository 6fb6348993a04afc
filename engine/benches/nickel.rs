//! Evaluating the same spec written in Starlark and in Nickel: G groups, every tenth
//! starting a dependency chain. Prints a table, Nickel's time as a ratio of Starlark's
//! (the peer run in the same invocation), and how Nickel's time grows with the spec.
//!
//! Run: `cargo bench -p tend-engine --bench nickel`

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use engine::lang::{evaluate_source, EvalOptions};
use engine::spec::Spec;

const RUNS: usize = 5;

fn dependency(i: usize) -> Option<usize> {
    (!i.is_multiple_of(10)).then(|| i - 1)
}

fn starlark(groups: usize) -> String {
    let mut out = String::from("project(name = \"bench\")\n");
    for i in 0..groups {
        let deps = dependency(i)
            .map(|d| format!(", depends_on = [\"g{d}\"]"))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "group(name = \"g{i}\", size = 100, provider = sim(), flavor = flavor(command = [\"srv\", \"--port\", \"{{{{ 8000 + instance.index }}}}\"], env = {{\"GROUP\": \"g{i}\"}}, health = http(port = \"{{{{ 8000 + instance.index }}}}\")){deps})"
        );
    }
    out
}

fn nickel(groups: usize) -> String {
    let mut out = String::from("{\n  project = \"bench\",\n  groups = {\n");
    for i in 0..groups {
        let deps = dependency(i)
            .map(|d| format!(", depends_on = [\"g{d}\"]"))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "    g{i} = {{ size = 100, provider = {{ sim = {{}} }}, flavor = {{ command = [\"srv\", \"--port\", \"{{{{ 8000 + instance.index }}}}\"], env = {{ GROUP = \"g{i}\" }}, health = {{ http = {{ port = \"{{{{ 8000 + instance.index }}}}\" }} }} }}{deps} }},"
        );
    }
    out.push_str("  },\n}\n");
    out
}

fn evaluate(name: &str, source: &str, dir: &std::path::Path) -> Spec {
    match evaluate_source(name, source, dir, &EvalOptions::default()) {
        Ok(spec) => spec,
        Err(e) => panic!("{name}: {e}"),
    }
}

fn median_time(name: &str, source: &str, dir: &std::path::Path) -> Duration {
    let mut times: Vec<Duration> = (0..RUNS)
        .map(|_| {
            let start = Instant::now();
            evaluate(name, source, dir);
            start.elapsed()
        })
        .collect();
    times.sort();
    times[RUNS / 2]
}

fn main() {
    let dir = std::env::temp_dir();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!("evaluate one spec in both languages, median of {RUNS} runs");
    println!(
        "{:>7} {:>12} {:>12} {:>14}",
        "groups", "starlark ms", "nickel ms", "nickel/starlark"
    );
    let mut nickel_times = Vec::new();
    for groups in [100, 1_000, 10_000] {
        let (star, ncl) = (starlark(groups), nickel(groups));
        // The same model from both, or the comparison means nothing.
        let same = serde_json::to_string(&evaluate("main.star", &star, &dir)).ok()
            == serde_json::to_string(&evaluate("main.ncl", &ncl, &dir)).ok();
        assert!(
            same,
            "{groups} groups: the two languages gave different models"
        );
        let (s, n) = (
            median_time("main.star", &star, &dir),
            median_time("main.ncl", &ncl, &dir),
        );
        nickel_times.push(n);
        println!(
            "{:>7} {:>12.1} {:>12.1} {:>14.2}",
            groups,
            ms(s),
            ms(n),
            n.as_secs_f64() / s.as_secs_f64()
        );
    }
    let growth = |a: Duration, b: Duration| b.as_secs_f64() / a.as_secs_f64();
    println!(
        "nickel: 10x the groups cost {:.2}x then {:.2}x the time",
        growth(nickel_times[0], nickel_times[1]),
        growth(nickel_times[1], nickel_times[2])
    );
}
