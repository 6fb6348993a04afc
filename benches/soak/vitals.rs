//! What a controller holds (open files, threads, resident memory) and how much the state
//! folder takes: sampled early and at the end, so a leak shows as growth.

use std::path::Path;

/// One sample.
#[derive(Clone, Copy, Debug, Default)]
pub struct Vitals {
    pub fds: usize,
    pub threads: usize,
    pub rss_kib: u64,
}

/// Samples controller `pid`.
pub fn sample(pid: u32) -> Vitals {
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count());
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            .unwrap_or(0)
    };
    Vitals {
        fds,
        threads: field("Threads:") as usize,
        rss_kib: field("VmRSS:"),
    }
}

/// Bytes of the files under `dir` (symbolic links not followed).
pub fn size_of(dir: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            match entry.metadata() {
                Ok(m) if m.is_dir() => stack.push(entry.path()),
                Ok(m) if m.is_file() => total += m.len(),
                _ => {}
            }
        }
    }
    total
}

/// What grew past its slack between `start` and `end`: a leak, in words. Threads and open
/// files may vary a little with the work in flight; memory may settle into its caches (the
/// journal's recent events, the allocator) and is judged against twice its start.
pub fn grown(start: &Vitals, end: &Vitals) -> Vec<String> {
    let mut grew = Vec::new();
    if end.fds > start.fds + 32 {
        grew.push(format!("open files {} -> {}", start.fds, end.fds));
    }
    if end.threads > start.threads + 16 {
        grew.push(format!("threads {} -> {}", start.threads, end.threads));
    }
    if end.rss_kib > start.rss_kib * 2 + 16 * 1024 {
        grew.push(format!(
            "resident memory {} -> {} KiB",
            start.rss_kib, end.rss_kib
        ));
    }
    grew
}

/// The state folder's growth past its slack (history is kept to 100 versions, logs are
/// rotated, a container's files go with it): a leak, in words.
pub fn state_grown(start: u64, end: u64) -> Vec<String> {
    if end > start * 2 + 2 * 1024 * 1024 {
        vec![format!(".tend/ {start} -> {end} bytes")]
    } else {
        Vec::new()
    }
}
