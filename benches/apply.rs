//! How `tend apply`, `destroy`, `plan` and `status` grow with the number of instances, with
//! the real binary.
//!
//! - `sim()`: apply of 10,000 and 100,000 simulated instances, and a converged `tend plan`
//!   over each; the ratio of the two sizes (10x the instances should cost at most 11x).
//! - `process()`: create and destroy of 1,000 and 10,000 `sleep` processes, next to a shell
//!   loop doing the same work (`sleep &`, then `kill`, builtin and `/bin/kill`) timed in
//!   the same run; `tend plan`
//!   and `tend status` over the 10,000 live ones.
//!
//! Prints tables. Run: `cargo bench --bench apply` (`TEND_BENCH_SCALE=10` divides every
//! size by ten for a quick look).

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Runs `command`, returning its wall time and peak resident memory in MB; panics when it
/// fails.
fn measure(command: &mut Command) -> (Duration, f64) {
    let start = Instant::now();
    let child = match command.stdout(Stdio::null()).spawn() {
        Ok(c) => c,
        Err(e) => panic!("cannot start: {e}"),
    };
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: rusage is plain data filled in by wait4 for our own child.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: waits for the child we just started; the pointers live across the call.
    let waited = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    let elapsed = start.elapsed();
    std::mem::forget(child);
    let ok = waited == pid && libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0;
    assert!(ok, "{command:?} failed");
    (elapsed, usage.ru_maxrss as f64 / 1024.0)
}

/// Pids whose environment holds `marker`.
fn tagged(marker: &str) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/environ"))
                .is_ok_and(|env| env.split(|b| *b == 0).any(|kv| kv == marker.as_bytes()))
        })
        .collect()
}

fn tend(dir: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_tend"));
    command.args(args).current_dir(dir);
    command
}

fn write_spec(dir: &Path, project: &str, size: usize, provider: &str, command: &str) {
    let spec = format!(
        "project(name = \"{project}-{}\")\ngroup(name = \"work\", size = {size}, provider = {provider}, flavor = flavor(command = {command}))\n",
        std::process::id()
    );
    if let Err(e) = std::fs::write(dir.join("main.star"), spec) {
        panic!("{e}");
    }
}

fn temp() -> tempfile::TempDir {
    tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"))
}

struct Row {
    what: String,
    seconds: f64,
    per_second: Option<f64>,
    peak_mb: Option<f64>,
}

fn print(title: &str, rows: &[Row]) {
    println!("{title}");
    println!(
        "{:<46} {:>9} {:>12} {:>9}",
        "run", "seconds", "instances/s", "peak MB"
    );
    for r in rows {
        let rate = r.per_second.map_or("-".to_owned(), |v| format!("{v:.0}"));
        let mb = r.peak_mb.map_or("-".to_owned(), |v| format!("{v:.0}"));
        println!("{:<46} {:>9.3} {:>12} {:>9}", r.what, r.seconds, rate, mb);
    }
    println!();
}

/// Apply and a converged plan of `size` sim instances: (apply, plan) seconds.
fn sim(size: usize, rows: &mut Vec<Row>) -> (f64, f64) {
    let dir = temp();
    write_spec(dir.path(), "bench-sim", size, "sim()", "[\"x\"]");
    let (apply, apply_mb) = measure(&mut tend(dir.path(), &["apply", "--yes"]));
    let (plan, plan_mb) = measure(&mut tend(dir.path(), &["plan"]));
    rows.push(Row {
        what: format!("sim: tend apply of {size}"),
        seconds: apply.as_secs_f64(),
        per_second: Some(size as f64 / apply.as_secs_f64()),
        peak_mb: Some(apply_mb),
    });
    rows.push(Row {
        what: format!("sim: tend plan over {size} (converged)"),
        seconds: plan.as_secs_f64(),
        per_second: None,
        peak_mb: Some(plan_mb),
    });
    (apply.as_secs_f64(), plan.as_secs_f64())
}

/// Times of one size of process instances.
struct Processes {
    shell_create: f64,
    shell_destroy: f64,
    shell_kill_binary: f64,
    create: f64,
    destroy: f64,
}

fn processes(size: usize, rows: &mut Vec<Row>) -> Processes {
    let rate = |d: Duration| Some(size as f64 / d.as_secs_f64());
    // The floor: a shell starting as many background sleeps, then a shell killing them
    // one by one, with its builtin `kill` and (a process per instance, as `sleep &` is)
    // with `/bin/kill`.
    let shell_batch = |n: u32| {
        let tag = format!("{}-{size}-{n}", std::process::id());
        let script = format!("for i in $(seq 1 {size}); do sleep 1000 & done");
        let (took, _) = measure(
            Command::new("sh")
                .args(["-c", &script])
                .env("TEND_BENCH_PEER", &tag),
        );
        let pids: Vec<String> = tagged(&format!("TEND_BENCH_PEER={tag}"))
            .iter()
            .map(u32::to_string)
            .collect();
        assert_eq!(pids.len(), size, "the shell loop did not start every sleep");
        (took, pids.join(" "))
    };
    let kill_all = |kill: &str, pids: String| {
        let script = format!("for p in $PIDS; do {kill} $p; done");
        measure(Command::new("sh").args(["-c", &script]).env("PIDS", pids)).0
    };
    let (shell_create, pids) = shell_batch(0);
    let shell_destroy = kill_all("kill", pids);
    let (_, pids) = shell_batch(1);
    let shell_kill_binary = kill_all("/bin/kill", pids);
    rows.push(Row {
        what: format!("process: sh loop, {size} x sleep &"),
        seconds: shell_create.as_secs_f64(),
        per_second: rate(shell_create),
        peak_mb: None,
    });
    rows.push(Row {
        what: format!("process: sh loop, {size} x kill (builtin)"),
        seconds: shell_destroy.as_secs_f64(),
        per_second: rate(shell_destroy),
        peak_mb: None,
    });
    rows.push(Row {
        what: format!("process: sh loop, {size} x /bin/kill"),
        seconds: shell_kill_binary.as_secs_f64(),
        per_second: rate(shell_kill_binary),
        peak_mb: None,
    });

    let dir = temp();
    write_spec(
        dir.path(),
        "bench-process",
        size,
        "process()",
        "[\"sleep\", \"1000\"]",
    );
    let (create, create_mb) = measure(&mut tend(dir.path(), &["apply", "--yes"]));
    rows.push(Row {
        what: format!("process: tend apply of {size}"),
        seconds: create.as_secs_f64(),
        per_second: rate(create),
        peak_mb: Some(create_mb),
    });
    if size >= 10_000 {
        for command in ["plan", "status"] {
            let (took, mb) = measure(&mut tend(dir.path(), &[command]));
            rows.push(Row {
                what: format!("process: tend {command} over {size} live"),
                seconds: took.as_secs_f64(),
                per_second: None,
                peak_mb: Some(mb),
            });
        }
    }
    let (destroy, destroy_mb) = measure(&mut tend(dir.path(), &["destroy", "--yes"]));
    rows.push(Row {
        what: format!("process: tend destroy of {size}"),
        seconds: destroy.as_secs_f64(),
        per_second: rate(destroy),
        peak_mb: Some(destroy_mb),
    });
    Processes {
        shell_create: shell_create.as_secs_f64(),
        shell_destroy: shell_destroy.as_secs_f64(),
        shell_kill_binary: shell_kill_binary.as_secs_f64(),
        create: create.as_secs_f64(),
        destroy: destroy.as_secs_f64(),
    }
}

fn main() {
    let scale: usize = std::env::var("TEND_BENCH_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .filter(|s| *s > 0)
        .unwrap_or(1);
    let (small_sim, large_sim) = (10_000 / scale, 100_000 / scale);
    let (small, large) = (1_000 / scale, 10_000 / scale);

    let mut rows = Vec::new();
    let (a10, p10) = sim(small_sim, &mut rows);
    let (a100, p100) = sim(large_sim, &mut rows);
    print("sim() instances", &rows);
    println!(
        "sim: {large_sim} instances: apply {a100:.2} s (target under 10 s), converged plan {p100:.2} s (target under 1 s)"
    );
    println!(
        "sim: 10x the instances costs {:.1}x the time to apply, {:.1}x to plan (target: at most 11x)\n",
        a100 / a10,
        p100 / p10
    );

    let mut rows = Vec::new();
    let one = processes(small, &mut rows);
    let ten = processes(large, &mut rows);
    print(
        "process() instances (sleep 1000), default parallelism",
        &rows,
    );
    println!(
        "process: 10x the instances costs {:.1}x to create, {:.1}x to destroy (target: at most 11x)",
        ten.create / one.create,
        ten.destroy / one.destroy
    );
    println!(
        "process: at {large}, tend takes {:.2}x the shell loop's time to create; to destroy {:.2}x the /bin/kill loop's, {:.2}x the builtin kill loop's (target: at most 1.5x)",
        ten.create / ten.shell_create,
        ten.destroy / ten.shell_kill_binary,
        ten.destroy / ten.shell_destroy
    );
}
