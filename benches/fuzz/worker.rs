//! The worker process: makes inputs and runs them, telling the supervisor on its stdout.
//!
//! Lines: `hwm KB` (its peak memory), `begin INDEX TARGET` before an input (whose bytes are
//! in `WORKDIR/inflight` then), `failure INDEX TARGET FILE WHY` and `end INDEX TARGET
//! accepted|rejected|failed MS` after it. It exits 0 at its deadline and 3 when it must be
//! replaced: a hung input's thread, or a Nickel evaluation given up, still runs in it.

use std::io::Write;
use std::time::{Duration, Instant};

use crate::targets::{self, Outcome, Target};
use crate::{chosen, corpus, generate, keep, status_field, target_of, Args};

/// Exit status of a worker to be replaced.
pub const REPLACE_ME: i32 = 3;

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// Panics are counted, not printed: the hook only notes the message and its place.
fn quiet_panics() {
    std::panic::set_hook(Box::new(|info| {
        let place = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        targets::note_panic(format!("{}{place}", targets::panic_text(info.payload())));
    }));
}

/// Runs inputs from `args.start` on until `args.duration` has passed.
pub fn run(args: &Args) -> i32 {
    let corpus = corpus::build();
    quiet_panics();
    say(&format!("hwm {}", status_field("self", "VmHWM")));
    let threads = status_field("self", "Threads");
    let until = Instant::now() + args.duration;
    let inflight = args
        .workdir
        .clone()
        .unwrap_or_else(std::env::temp_dir)
        .join("inflight");
    let mut index = args.start;
    while Instant::now() < until && !chosen(args).is_empty() {
        let target = target_of(args, index);
        let input = generate(args.seed, index, target, &corpus);
        let _ = std::fs::write(&inflight, &input);
        say(&format!("begin {index} {}", target.name));
        let replace = run_one(target, index, input);
        if replace || leaked_threads(threads) {
            say(&format!("hwm {}", status_field("self", "VmHWM")));
            return REPLACE_ME;
        }
        index += 1;
    }
    say(&format!("hwm {}", status_field("self", "VmHWM")));
    0
}

/// Runs one input and says how it went; true when the worker must be replaced.
fn run_one(target: &Target, index: u64, input: Vec<u8>) -> bool {
    let started = Instant::now();
    let verdict = targets::run_guarded(target, input.clone());
    let ms = started.elapsed().as_millis();
    let (word, hung) = match &verdict {
        Ok(Outcome::Accepted) => ("accepted", false),
        Ok(Outcome::Rejected(_)) => ("rejected", false),
        Err(why) => {
            let path = keep(target, &input);
            let why = why.replace('\n', "\\n");
            say(&format!(
                "failure {index} {} {} {why}",
                target.name,
                path.display()
            ));
            ("failed", why.starts_with("hung"))
        }
    };
    say(&format!("end {index} {} {word} {ms}", target.name));
    hung
}

/// True when threads an input started still run (a Nickel evaluation given up keeps
/// running), after a moment for finished ones to end.
fn leaked_threads(baseline: u64) -> bool {
    for _ in 0..10 {
        if status_field("self", "Threads") <= baseline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    true
}

/// Makes and runs input `index` alone, printing it and its verdict.
pub fn one(args: &Args, index: u64) -> i32 {
    let corpus = corpus::build();
    let target = target_of(args, index);
    let input = generate(args.seed, index, target, &corpus);
    println!(
        "seed {} index {index}: target {}, {} bytes:\n{}",
        args.seed,
        target.name,
        input.len(),
        targets::shorten(&String::from_utf8_lossy(&input))
    );
    match targets::run_guarded(target, input.clone()) {
        Ok(Outcome::Accepted) => println!("accepted"),
        Ok(Outcome::Rejected(why)) => println!("rejected: {}", targets::shorten(&why)),
        Err(why) => {
            println!("FAILED: {why}\nkept as {}", keep(target, &input).display());
            return 1;
        }
    }
    0
}

/// Runs each file through the target its folder names (`testdata/fuzz/<target>/...`).
pub fn replay(files: &[std::path::PathBuf]) -> i32 {
    let mut failed = 0;
    for file in files {
        let name = file
            .parent()
            .and_then(|d| d.file_name())
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let Some(target) = targets::by_name(&name) else {
            println!(
                "{}: no target {name:?} (the folder names it)",
                file.display()
            );
            failed += 1;
            continue;
        };
        let input = std::fs::read(file).unwrap_or_default();
        let started = Instant::now();
        let verdict = targets::run_guarded(target, input);
        let ms = started.elapsed().as_millis();
        match verdict {
            Ok(Outcome::Accepted) => println!("{}: accepted ({ms} ms)", file.display()),
            Ok(Outcome::Rejected(why)) => {
                println!(
                    "{}: rejected ({ms} ms): {}",
                    file.display(),
                    targets::shorten(&why)
                )
            }
            Err(why) => {
                println!("{}: FAILED ({ms} ms): {why}", file.display());
                failed += 1;
            }
        }
    }
    i32::from(failed > 0)
}
