//! Fuzzing on stable Rust: generated specs and arbitrary bytes into every parser of outside
//! input, for a bounded time.
//!
//! `cargo bench --bench fuzz -- --duration 2m [--seed N] [--target NAME] [--index N]`
//!
//! Targets (`tests/it/fuzz_targets.rs`): Starlark and Nickel specs (valid, almost valid and
//! garbage, run through evaluate, validate and plan), saved plan files, the local state
//! folder, etcd values, plugin replies, Terraform's JSON, flavor templates and small values.
//! Inputs are made from the seed and their index alone, so `--seed S --index I` makes input
//! I of a run again; the seed is printed first.
//!
//! The inputs run in a worker process that this one watches: in it, each input runs on a
//! thread of its own, where a panic, a hang past the target's timeout or an unclear error is
//! a failure; a worker that dies (an abort, a stack overflow) or grows past 3 GiB of
//! resident memory (twice the 1 GiB a spec may hold, which freezing copies, and its own) fails its input too, and a new worker goes on. Each failing input is kept
//! as `testdata/fuzz/<target>/<hash>.<ext>`, which `cargo test --test it fuzz_` replays. The
//! table at the end counts, per target, the inputs run, rejected with a clear error and
//! accepted, the slowest input and the failures. The exit status is 1 when anything failed.

#[path = "../tests/it/fuzz_targets.rs"]
#[allow(dead_code)]
mod targets;

#[path = "fuzz/bytes.rs"]
mod bytes;
#[path = "fuzz/corpus.rs"]
mod corpus;
#[path = "fuzz/nickel.rs"]
mod nickel;
#[path = "fuzz/rng.rs"]
mod rng;
#[path = "fuzz/small.rs"]
mod small;
#[path = "fuzz/starlark.rs"]
mod starlark;
#[path = "fuzz/supervise.rs"]
mod supervise;
#[path = "fuzz/text.rs"]
mod text;
#[path = "fuzz/worker.rs"]
mod worker;

use std::path::{Path, PathBuf};
use std::time::Duration;

use targets::Target;

/// The command line.
#[derive(Clone, Debug)]
pub struct Args {
    /// How long to fuzz.
    pub duration: Duration,
    /// The run's seed.
    pub seed: u64,
    /// The one target to fuzz, when given.
    pub target: Option<String>,
    /// The one input to make and run, when given.
    pub index: Option<u64>,
    /// Set in the worker process.
    pub worker: bool,
    /// The worker's first input.
    pub start: u64,
    /// Where the worker writes the input it is running.
    pub workdir: Option<PathBuf>,
    /// Files to run through the target named by their folder, instead of fuzzing.
    pub replay: Vec<PathBuf>,
}

const USAGE: &str =
    "usage: fuzz [--duration N[s|m|h]] [--seed N] [--target NAME] [--index N] [--replay FILE...]";

fn main() {
    let args = match parse(std::env::args().skip(1)) {
        Ok(args) => args,
        Err(why) => {
            eprintln!("fuzz: {why}\n{USAGE}");
            std::process::exit(2);
        }
    };
    let code = if args.worker {
        worker::run(&args)
    } else if let Some(index) = args.index {
        worker::one(&args, index)
    } else if !args.replay.is_empty() {
        worker::replay(&args.replay)
    } else {
        supervise::run(&args)
    };
    std::process::exit(code);
}

fn parse(mut words: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut args = Args {
        duration: Duration::from_secs(120),
        seed: seed_from_time(),
        target: None,
        index: None,
        worker: false,
        start: 0,
        workdir: None,
        replay: Vec::new(),
    };
    while let Some(word) = words.next() {
        let mut value = || words.next().ok_or(format!("{word} needs a value"));
        match word.as_str() {
            "--duration" => args.duration = duration(&value()?)?,
            "--seed" => args.seed = number(&value()?)?,
            "--target" => args.target = Some(value()?),
            "--index" => args.index = Some(number(&value()?)?),
            "--worker" => args.worker = true,
            "--start" => args.start = number(&value()?)?,
            "--workdir" => args.workdir = Some(PathBuf::from(value()?)),
            "--replay" => args.replay.push(PathBuf::from(value()?)),
            // What `cargo bench` adds.
            "--bench" => {}
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    if let Some(name) = &args.target {
        if targets::by_name(name).is_none() {
            let names: Vec<&str> = targets::TARGETS.iter().map(|t| t.name).collect();
            return Err(format!(
                "no target {name:?}: the targets are {}",
                names.join(", ")
            ));
        }
    }
    Ok(args)
}

fn number(text: &str) -> Result<u64, String> {
    text.parse()
        .map_err(|_| format!("{text:?} is not a number"))
}

/// `90`, `90s`, `2m`, `1h`.
fn duration(text: &str) -> Result<Duration, String> {
    let (digits, scale) = match text.char_indices().last() {
        Some((i, 's')) => (&text[..i], 1),
        Some((i, 'm')) => (&text[..i], 60),
        Some((i, 'h')) => (&text[..i], 3600),
        _ => (text, 1),
    };
    let n =
        number(digits).map_err(|_| format!("{text:?} is not a duration such as 90s, 2m or 1h"))?;
    Ok(Duration::from_secs(n.saturating_mul(scale)))
}

fn seed_from_time() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
        ^ u64::from(std::process::id())
}

/// The targets a run takes, in turn.
pub fn chosen(args: &Args) -> Vec<&'static Target> {
    match &args.target {
        Some(name) => targets::by_name(name).into_iter().collect(),
        None => targets::TARGETS.iter().collect(),
    }
}

/// The target of input `index`.
pub fn target_of(args: &Args, index: u64) -> &'static Target {
    let chosen = chosen(args);
    chosen[(index % chosen.len() as u64) as usize]
}

/// Input `index` of a run seeded with `seed`.
pub fn generate(seed: u64, index: u64, target: &Target, corpus: &corpus::Corpus) -> Vec<u8> {
    let mut rng = rng::Rng::for_input(seed, index);
    match target.name {
        "starlark" => starlark::spec(&mut rng),
        "nickel" => nickel::spec(&mut rng),
        "template" => small::template(&mut rng),
        "values" => small::value(&mut rng),
        other => bytes::input(&mut rng, corpus.get(other).map_or(&[][..], Vec::as_slice)),
    }
}

/// Keeps a failing input as `testdata/fuzz/<target>/<hash>.<ext>`; where it went.
pub fn keep(target: &Target, input: &[u8]) -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("testdata/fuzz")
        .join(target.name);
    let hash = engine::spec::sha256_hex(input);
    let path = dir.join(format!("{}.{}", &hash[..12], target.ext));
    let written = std::fs::create_dir_all(&dir).and_then(|()| std::fs::write(&path, input));
    if let Err(e) = written {
        eprintln!("fuzz: cannot keep {}: {e}", path.display());
    }
    path
}

/// A field of `/proc/<pid>/status` (`VmRSS`, `VmHWM`, `Threads`), as its number (kB for
/// memory).
pub fn status_field(pid: &str, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|text| {
            text.lines()
                .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}
