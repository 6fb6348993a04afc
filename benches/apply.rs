//! Creating and destroying 200 process instances with the real `tend` binary, next to a
//! shell loop that starts as many processes (the floor for fork+exec on this machine).
//! Prints a table with instances per second and tend's peak memory.
//!
//! Run: `cargo bench --bench apply`

use std::process::Command;
use std::time::{Duration, Instant};

const INSTANCES: usize = 200;

/// Runs `command`, returning its wall time and peak resident memory in MB.
fn measure(command: &mut Command) -> (Duration, f64, bool) {
    let start = Instant::now();
    let child = match command.spawn() {
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
    let ok = waited == pid && libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0;
    std::mem::forget(child);
    (elapsed, usage.ru_maxrss as f64 / 1024.0, ok)
}

/// Pids whose environment holds `marker` (the bench's own tag).
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

fn main() {
    let dir = match tempfile::tempdir() {
        Ok(d) => d,
        Err(e) => panic!("{e}"),
    };
    let tend = env!("CARGO_BIN_EXE_tend");
    let spec = format!(
        "project(name = \"bench-apply-{}\")\ngroup(name = \"work\", size = {INSTANCES}, provider = process(), flavor = flavor(command = [\"sleep\", \"1000\"]))\n",
        std::process::id()
    );
    if let Err(e) = std::fs::write(dir.path().join("main.star"), spec) {
        panic!("{e}");
    }

    // The floor: a shell starting the same number of background processes.
    let marker = format!("TEND_BENCH_PEER={}", std::process::id());
    let script = format!("for i in $(seq 1 {INSTANCES}); do sleep 1000 & done");
    let (shell, _, _) = measure(
        Command::new("sh")
            .args(["-c", &script])
            .env("TEND_BENCH_PEER", std::process::id().to_string()),
    );
    let peers = tagged(&marker);
    for pid in &peers {
        // SAFETY: only processes carrying this run's marker are signalled.
        unsafe { libc::kill(*pid as libc::pid_t, libc::SIGKILL) };
    }

    let (create, create_mb, created) = measure(
        Command::new(tend)
            .args(["apply", "--yes", "--parallelism", "50"])
            .current_dir(dir.path())
            .stdout(std::process::Stdio::null()),
    );
    let (destroy, destroy_mb, destroyed) = measure(
        Command::new(tend)
            .args(["destroy", "--yes", "--parallelism", "50"])
            .current_dir(dir.path())
            .stdout(std::process::Stdio::null()),
    );
    assert!(created && destroyed, "tend apply or destroy failed");
    let rate = |d: Duration| INSTANCES as f64 / d.as_secs_f64();
    println!("{INSTANCES} process instances (sleep), parallelism 50");
    println!(
        "{:<34} {:>9} {:>12} {:>10}",
        "run", "seconds", "instances/s", "peak MB"
    );
    println!(
        "{:<34} {:>9.3} {:>12.0} {:>10}",
        "sh loop: sleep & (the floor)",
        shell.as_secs_f64(),
        rate(shell),
        "-"
    );
    println!(
        "{:<34} {:>9.3} {:>12.0} {:>10.1}",
        "tend apply (create)",
        create.as_secs_f64(),
        rate(create),
        create_mb
    );
    println!(
        "{:<34} {:>9.3} {:>12.0} {:>10.1}",
        "tend destroy",
        destroy.as_secs_f64(),
        rate(destroy),
        destroy_mb
    );
    println!(
        "tend apply takes {:.1}x the shell loop's time (target: at least 300 created per second)",
        create.as_secs_f64() / shell.as_secs_f64()
    );
}
