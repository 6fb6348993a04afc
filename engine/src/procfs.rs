//! Reading Linux `/proc`: process start times, states and environments.
//!
//! A process is identified by its pid *and* its start time, so a reused pid is never
//! mistaken for the process that had it before.

use std::path::Path;

/// What `/proc/<pid>/stat` says about a process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProcStat {
    /// The state letter: `R`, `S`, `D`, `Z` (zombie), `T`, ...
    pub state: char,
    /// Parent process id.
    pub ppid: u32,
    /// Process group id.
    pub pgrp: i32,
    /// Session id: equal to the pid for a session leader.
    pub session: i32,
    /// Start time in clock ticks since boot.
    pub start_ticks: u64,
    /// CPU time used so far (user + system), in clock ticks.
    pub cpu_ticks: u64,
}

impl ProcStat {
    /// True for a process that has exited but not been reaped.
    pub fn is_zombie(&self) -> bool {
        self.state == 'Z' || self.state == 'X'
    }
}

/// Reads `/proc/<pid>/stat`; `None` when the process does not exist.
///
/// With one read into a buffer on the stack: a look at 10,000 processes makes this call
/// 10,000 times, and `read_to_string` would add a `statx` and four growing reads to each.
pub fn stat(pid: u32) -> Option<ProcStat> {
    use std::io::Read;
    let mut file = std::fs::File::open(format!("/proc/{pid}/stat")).ok()?;
    // The line is short: 52 numbers and a name of at most 64 bytes.
    let mut buf = [0u8; 1024];
    let mut len = 0;
    while len < buf.len() && !buf[..len].ends_with(b"\n") {
        match file.read(&mut buf[len..]) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return None,
        }
    }
    parse_stat(&buf[..len])
}

/// Parses the text of `/proc/<pid>/stat`.
fn parse_stat(text: &[u8]) -> Option<ProcStat> {
    // The command name is in parentheses and may hold spaces: split after the last ')'.
    let after = text.iter().rposition(|b| *b == b')')? + 1;
    let rest = std::str::from_utf8(&text[after..]).ok()?;
    // Fields after the name start at field 3 (state); starttime is field 22.
    let mut fields = rest.split_ascii_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    let pgrp = fields.next()?.parse().ok()?;
    let session = fields.next()?.parse().ok()?;
    // Fields 7 to 13 (tty to majflt... cmajflt) are skipped; 14 and 15 are utime, stime.
    let utime: u64 = fields.nth(7)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    let start_ticks = fields.nth(6)?.parse().ok()?;
    Some(ProcStat {
        state,
        ppid,
        pgrp,
        session,
        start_ticks,
        cpu_ticks: utime + stime,
    })
}

/// The environment of `pid` as key/value pairs; `None` when it cannot be read.
pub fn environ(pid: u32) -> Option<Vec<(String, String)>> {
    let bytes = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
    Some(
        bytes
            .split(|b| *b == 0)
            .filter_map(|entry| {
                let text = std::str::from_utf8(entry).ok()?;
                let (k, v) = text.split_once('=')?;
                Some((k.to_owned(), v.to_owned()))
            })
            .collect(),
    )
}

/// Every pid in `/proc`.
pub fn pids() -> Vec<u32> {
    std::fs::read_dir(Path::new("/proc"))
        .map(|entries| {
            entries
                .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// True when `pid` runs and started at `start_ticks` (so it is the same process).
pub fn is_alive(pid: u32, start_ticks: u64) -> bool {
    stat(pid).is_some_and(|s| s.start_ticks == start_ticks && !s.is_zombie())
}

/// Clock ticks per second (`_SC_CLK_TCK`).
pub fn ticks_per_second() -> u64 {
    // SAFETY: sysconf has no preconditions and only reads a constant.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 {
        ticks as u64
    } else {
        100
    }
}

/// When the machine booted, in milliseconds since the Unix epoch (`btime` in `/proc/stat`).
/// Read once: `/proc/stat` is costly and boot time does not change.
pub fn boot_time_ms() -> u64 {
    static BOOT: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *BOOT.get_or_init(read_boot_time_ms)
}

fn read_boot_time_ms() -> u64 {
    std::fs::read_to_string("/proc/stat")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("btime "))
                .and_then(|v| v.trim().parse::<u64>().ok())
        })
        .map(|secs| secs * 1000)
        .unwrap_or(0)
}

/// A process start time as milliseconds since the Unix epoch.
pub fn start_time_ms(start_ticks: u64) -> u64 {
    boot_time_ms() + start_ticks * 1000 / ticks_per_second()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        let me = std::process::id();
        let s = stat(me).unwrap_or_else(|| panic!("no stat for {me}"));
        assert!(!s.is_zombie());
        assert!(is_alive(me, s.start_ticks));
        assert!(!is_alive(me, s.start_ticks + 1));
        assert!(pids().contains(&me));
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let started = start_time_ms(s.start_ticks);
        assert!(
            started <= now_ms + 1000 && started + 3_600_000 > now_ms,
            "{started} vs {now_ms}"
        );
    }

    #[test]
    fn parses_a_name_with_spaces_and_parentheses() {
        let line = b"4242 (a (b) c) S 1 4242 4242 0 -1 4194560 10 0 0 0 7 3 0 0 20 0 1 0 98765 1000 100 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 0 0 0 0 0 0 0 0 0 0 0 0 0 0\n";
        assert_eq!(
            parse_stat(line),
            Some(ProcStat {
                state: 'S',
                ppid: 1,
                pgrp: 4242,
                session: 4242,
                start_ticks: 98765,
                cpu_ticks: 10,
            })
        );
        assert_eq!(parse_stat(b"4242 (cut"), None);
    }

    #[test]
    fn counts_cpu_time() {
        let me = std::process::id();
        let before = stat(me).map(|s| s.cpu_ticks).unwrap_or(u64::MAX);
        let spin = std::time::Instant::now();
        let mut x = 0u64;
        while spin.elapsed() < std::time::Duration::from_millis(300) {
            x = std::hint::black_box(x.wrapping_add(1));
        }
        let after = stat(me).map(|s| s.cpu_ticks).unwrap_or(0);
        assert!(after > before, "{before} -> {after} after 300 ms of work");
    }
}
