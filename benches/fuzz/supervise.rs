//! The supervisor: runs worker processes until the time is up, fails the input of a worker
//! that died or grew past the memory bound, and prints the table.

use std::collections::{BTreeMap, VecDeque};
use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::targets::{self, Target};
use crate::{chosen, keep, status_field, target_of, Args};

/// The most resident memory a worker may have: a Starlark spec may hold up to its 1 GiB
/// budget in its heap, and freezing the module copies what it holds, so twice the budget
/// plus the worker's own is what evaluation may take (a spec of a thousand 1 MB strings is
/// valid and peaks near 2 GiB).
const MEMORY_BOUND_KB: u64 = 3 << 20;

/// Counts of one target.
#[derive(Default)]
struct Row {
    inputs: u64,
    rejected: u64,
    accepted: u64,
    slowest_ms: u64,
    failures: u64,
}

/// What the workers told, all of them together.
#[derive(Default)]
struct Tally {
    rows: BTreeMap<String, Row>,
    failures: Vec<String>,
    hwm_start_kb: Option<u64>,
    hwm_end_kb: u64,
    workers: u32,
}

/// How one worker ended.
struct Ended {
    /// The input it had begun and not ended.
    in_flight: Option<u64>,
    /// The last input it ended.
    last: Option<u64>,
    status: Option<std::process::ExitStatus>,
    /// Its resident memory when it was killed for going past the bound.
    killed_at_kb: Option<u64>,
    /// Its last stderr lines.
    stderr: Vec<String>,
}

/// Fuzzes for `args.duration`; the exit status.
pub fn run(args: &Args) -> i32 {
    let names: Vec<&str> = chosen(args).iter().map(|t| t.name).collect();
    println!(
        "fuzz: seed {} (repeat with --seed {}), {}s, targets {}",
        args.seed,
        args.seed,
        args.duration.as_secs(),
        names.join(", ")
    );
    let workdir = match tempfile::tempdir() {
        Ok(dir) => dir,
        Err(e) => {
            eprintln!("fuzz: cannot make a temporary folder: {e}");
            return 2;
        }
    };
    let deadline = Instant::now() + args.duration;
    let mut tally = Tally::default();
    let mut next = args.start;
    while Instant::now() < deadline {
        let mut worker_args = args.clone();
        worker_args.start = next;
        worker_args.duration = deadline.saturating_duration_since(Instant::now());
        worker_args.workdir = Some(workdir.path().to_owned());
        let ended = match supervise(&worker_args, &mut tally) {
            Ok(ended) => ended,
            Err(why) => {
                eprintln!("fuzz: {why}");
                return 2;
            }
        };
        tally.workers += 1;
        let ran = ended.in_flight.is_some() || ended.last.is_some();
        if !ran && !ended.status.is_some_and(|s| s.success()) {
            eprintln!(
                "fuzz: a worker ended before its first input ({}): {}",
                ended
                    .status
                    .map_or("no status".to_owned(), |s| s.to_string()),
                ended.stderr.join("\n")
            );
            return 2;
        }
        next = after(&ended, next);
        if let Some(index) = ended.in_flight {
            died(&worker_args, index, &ended, &mut tally);
        } else if ended.status.is_some_and(|s| s.success()) {
            break;
        }
    }
    print(&tally, args);
    i32::from(!tally.failures.is_empty())
}

/// Where the next worker starts.
fn after(ended: &Ended, start: u64) -> u64 {
    match (ended.in_flight, ended.last) {
        (Some(index), _) => index + 1,
        (None, Some(last)) => last + 1,
        (None, None) => start + 1,
    }
}

/// Counts the input of a worker that died under it as a failure, and keeps it.
fn died(args: &Args, index: u64, ended: &Ended, tally: &mut Tally) {
    let target = target_of(args, index);
    let input = args
        .workdir
        .as_ref()
        .and_then(|dir| std::fs::read(dir.join("inflight")).ok())
        .unwrap_or_default();
    let path = keep(target, &input);
    let why = match ended.killed_at_kb {
        Some(kb) => format!(
            "took over {} MiB of memory ({} MiB)",
            MEMORY_BOUND_KB >> 10,
            kb >> 10
        ),
        None => format!(
            "the worker died ({}): {}",
            ended
                .status
                .map_or("no status".to_owned(), |s| s.to_string()),
            ended.stderr.join(" | ")
        ),
    };
    let row = tally.rows.entry(target.name.to_owned()).or_default();
    row.inputs += 1;
    row.failures += 1;
    failure(tally, index, target, &path.display().to_string(), &why);
}

fn failure(tally: &mut Tally, index: u64, target: &Target, file: &str, why: &str) {
    let line = format!(
        "FAILURE {} input {index}: {}\n    kept as {file}",
        target.name,
        targets::shorten(why)
    );
    println!("{line}");
    tally.failures.push(line);
}

/// Starts one worker and follows it to its end.
fn supervise(args: &Args, tally: &mut Tally) -> Result<Ended, String> {
    let mut child = start(args)?;
    let pid = child.id();
    let stderr = tail(child.stderr.take());
    let done = Arc::new(AtomicBool::new(false));
    let killed_at = Arc::new(AtomicU64::new(0));
    let watcher = watch_memory(pid, done.clone(), killed_at.clone());
    let mut ended = Ended {
        in_flight: None,
        last: None,
        status: None,
        killed_at_kb: None,
        stderr: Vec::new(),
    };
    if let Some(stdout) = child.stdout.take() {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            follow(&line, args, tally, &mut ended);
        }
    }
    ended.status = child.wait().ok();
    done.store(true, Ordering::Relaxed);
    let _ = watcher.join();
    ended.killed_at_kb = Some(killed_at.load(Ordering::Relaxed)).filter(|kb| *kb > 0);
    ended.stderr = stderr
        .lock()
        .map(|t| t.iter().cloned().collect())
        .unwrap_or_default();
    Ok(ended)
}

fn start(args: &Args) -> Result<Child, String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this program: {e}"))?;
    let mut command = Command::new(exe);
    command
        .arg("--worker")
        .args(["--seed", &args.seed.to_string()])
        .args(["--start", &args.start.to_string()])
        .args([
            "--duration",
            &format!("{}s", args.duration.as_secs().max(1)),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(dir) = &args.workdir {
        command.arg("--workdir").arg(dir);
    }
    if let Some(target) = &args.target {
        command.args(["--target", target]);
    }
    command
        .spawn()
        .map_err(|e| format!("cannot start a worker: {e}"))
}

/// The last 20 lines of a worker's stderr (what a Starlark `print` writes is dropped with
/// the rest).
fn tail(stderr: Option<impl Read + Send + 'static>) -> Arc<Mutex<VecDeque<String>>> {
    let lines = Arc::new(Mutex::new(VecDeque::new()));
    if let Some(stderr) = stderr {
        let kept = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Ok(mut kept) = kept.lock() {
                    if kept.len() == 20 {
                        kept.pop_front();
                    }
                    kept.push_back(targets::shorten(&line));
                }
            }
        });
    }
    lines
}

/// Kills the worker when its resident memory passes the bound, noting how much it had.
fn watch_memory(
    pid: u32,
    done: Arc<AtomicBool>,
    killed_at: Arc<AtomicU64>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let pid_text = pid.to_string();
        while !done.load(Ordering::Relaxed) {
            let rss = status_field(&pid_text, "VmRSS");
            if rss > MEMORY_BOUND_KB {
                killed_at.store(rss, Ordering::Relaxed);
                // SAFETY: kill has no memory effects; the pid is our child's, not yet
                // waited for, so it cannot have been reused.
                unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    })
}

/// Takes in one line of a worker.
fn follow(line: &str, args: &Args, tally: &mut Tally, ended: &mut Ended) {
    let words: Vec<&str> = line.splitn(5, ' ').collect();
    let index = words.get(1).and_then(|w| w.parse::<u64>().ok());
    match (words.first().copied(), index) {
        (Some("hwm"), _) => {
            let kb = words.get(1).and_then(|w| w.parse().ok()).unwrap_or(0);
            tally.hwm_start_kb.get_or_insert(kb);
            tally.hwm_end_kb = tally.hwm_end_kb.max(kb);
        }
        (Some("begin"), Some(index)) => ended.in_flight = Some(index),
        (Some("failure"), Some(index)) => {
            let target = target_of(args, index);
            let file = words.get(3).copied().unwrap_or_default();
            let why = words
                .get(4)
                .copied()
                .unwrap_or_default()
                .replace("\\n", "\n");
            failure(tally, index, target, file, &why);
        }
        (Some("end"), Some(index)) => {
            ended.in_flight = None;
            ended.last = Some(index);
            count(tally, target_of(args, index), &words);
        }
        _ => {}
    }
}

fn count(tally: &mut Tally, target: &Target, words: &[&str]) {
    let row = tally.rows.entry(target.name.to_owned()).or_default();
    row.inputs += 1;
    match words.get(3).copied() {
        Some("accepted") => row.accepted += 1,
        Some("rejected") => row.rejected += 1,
        _ => row.failures += 1,
    }
    let ms = words.get(4).and_then(|w| w.parse().ok()).unwrap_or(0);
    row.slowest_ms = row.slowest_ms.max(ms);
}

fn print(tally: &Tally, args: &Args) {
    println!(
        "\n{:<16} {:>8} {:>9} {:>9} {:>11} {:>9}",
        "target", "inputs", "rejected", "accepted", "slowest ms", "failures"
    );
    let mut total = Row::default();
    for target in chosen(args) {
        let Some(row) = tally.rows.get(target.name) else {
            continue;
        };
        println!(
            "{:<16} {:>8} {:>9} {:>9} {:>11} {:>9}",
            target.name, row.inputs, row.rejected, row.accepted, row.slowest_ms, row.failures
        );
        total.inputs += row.inputs;
        total.rejected += row.rejected;
        total.accepted += row.accepted;
        total.slowest_ms = total.slowest_ms.max(row.slowest_ms);
        total.failures += row.failures;
    }
    println!(
        "{:<16} {:>8} {:>9} {:>9} {:>11} {:>9}",
        "all", total.inputs, total.rejected, total.accepted, total.slowest_ms, total.failures
    );
    println!(
        "\npeak RSS (VmHWM) of the worker: {} MiB at start, {} MiB at end ({} worker{}); of this supervisor: {} MiB",
        tally.hwm_start_kb.unwrap_or(0) >> 10,
        tally.hwm_end_kb >> 10,
        tally.workers,
        if tally.workers == 1 { "" } else { "s" },
        status_field("self", "VmHWM") >> 10
    );
    println!("seed {}: {} failure(s)", args.seed, tally.failures.len());
    for f in &tally.failures {
        println!("{f}");
    }
}
