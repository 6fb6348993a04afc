//! The scripts behind an instance's provisioners, written into its run folder: `start.sh`
//! (the create provisioner) starts the flavor's command in a session of its own and
//! records its pid and start time in `pid`; `stop.sh` (the destroy provisioner) reads that
//! record, stops the session, and removes what `start.sh` was given.
//!
//! The environment the program gets is written to memory (a tmpfs), never into the run
//! folder, `main.tf.json` or Terraform's state: it may hold secrets.

use std::collections::BTreeMap;
use std::path::Path;

use crate::shell::quote;

/// Variables passed through from tend's own environment; nothing else is inherited.
const PASS_THROUGH: [&str; 5] = ["PATH", "HOME", "LANG", "TZ", "USER"];
/// How long `start.sh` waits for its program's session to record its pid, in fiftieths of
/// a second (5 s).
const RECORD_WAIT: u32 = 250;

/// The start time field of `/proc/PID/stat` (field 22), read past the command name.
const START_TICKS: &str = r#"sed 's/.*) //' "/proc/$pid/stat" 2>/dev/null | cut -d' ' -f20"#;

/// What `start.sh` needs.
pub struct Start<'a> {
    /// The run folder (holds the scripts, `pid` and `log`).
    pub run: &'a Path,
    /// Where the program runs.
    pub workdir: &'a Path,
    /// The program and its arguments.
    pub command: &'a [String],
    /// The file (in memory) that exports the program's environment.
    pub environment: &'a Path,
}

/// The `sh` text of a file exporting `env`, sourced by the program's session.
pub fn environment(env: &BTreeMap<String, String>) -> String {
    env.iter()
        .map(|(k, v)| format!("export {k}={}\n", quote(v)))
        .collect()
}

/// `start.sh`.
pub fn start(s: &Start<'_>) -> String {
    let program = s.command.first().map(String::as_str).unwrap_or("");
    let passed: String = PASS_THROUGH
        .iter()
        .filter_map(|k| std::env::var(k).ok().map(|v| format!(" {k}={}", quote(&v))))
        .collect();
    let run = quote(&s.run.to_string_lossy());
    // The session's own script: record the leader, take the environment, become the program.
    let inner = format!(
        r#"pid=$$
echo "$pid $({START_TICKS})" > "$TEND_RUN/pid.new" && mv "$TEND_RUN/pid.new" "$TEND_RUN/pid"
. "$TEND_ENVIRONMENT"
unset TEND_RUN TEND_ENVIRONMENT
exec "$@""#
    );
    format!(
        r#"#!/bin/sh
# Made by tend: starts this instance's program; stop.sh stops it.
cd {workdir} || exit 1
# Found as the program will look for it: with its own environment (its PATH).
if ! (. {environment}; command -v {program}) >/dev/null 2>&1; then
  echo "tend: cannot start "{program}": no such program (in PATH or in "{workdir}")" >&2
  exit 127
fi
rm -f {run}/pid
env -i{passed} TEND_RUN={run} TEND_ENVIRONMENT={environment} setsid /bin/sh -c {inner} {words} </dev/null >>{run}/log 2>&1 &
leader=$!
i=0
while [ ! -s {run}/pid ]; do
  i=$((i + 1))
  if [ "$i" -gt {RECORD_WAIT} ]; then
    echo "tend: "{program}" started, but its session never recorded its pid" >&2
    kill -KILL "-$leader" "$leader" 2>/dev/null
    exit 1
  fi
  sleep 0.02
done
"#,
        workdir = quote(&s.workdir.to_string_lossy()),
        program = quote(program),
        inner = quote(&inner),
        environment = quote(&s.environment.to_string_lossy()),
        words = crate::shell::join(
            &std::iter::once("tend-instance".to_owned())
                .chain(s.command.iter().cloned())
                .collect::<Vec<_>>()
        ),
    )
}

/// `stop.sh`: TERM to the session, KILL after `stop_tenths` tenths of a second, then the
/// instance's memory folders (`secrets`) and run folder are removed.
pub fn stop(run: &Path, stop_tenths: u64, secrets: &[&Path]) -> String {
    let remove: Vec<String> = secrets
        .iter()
        .map(|p| quote(&p.to_string_lossy()))
        .collect();
    format!(
        r#"#!/bin/sh
# Made by tend: stops what start.sh started, by the pid and start time it recorded.
run={run}
# The session leader has not exited (a zombie has).
running() {{
  state=$(sed 's/.*) //' "/proc/$pid/stat" 2>/dev/null | cut -d' ' -f1)
  [ -n "$state" ] && [ "$state" != Z ]
}}
if read -r pid ticks < "$run/pid" 2>/dev/null && [ -n "$pid" ] && [ "$({START_TICKS})" = "$ticks" ]; then
  kill -TERM "-$pid" 2>/dev/null
  i=0
  while [ "$i" -lt {stop_tenths} ] && running; do
    sleep 0.1
    i=$((i + 1))
  done
  kill -KILL "-$pid" 2>/dev/null
fi
rm -rf {remove} "$run"
exit 0
"#,
        run = quote(&run.to_string_lossy()),
        remove = remove.join(" "),
    )
}

/// Ends what an instance left once Terraform no longer holds it: every process of
/// `session` (the leader `start.sh` recorded, read before the destroy provisioner removed
/// the record; that provisioner stops only a live leader's group, and does not run at all
/// for a tainted resource), its run folder and its `memory` folder.
pub fn clean_up(run: &Path, memory: Option<&Path>, session: Option<(u32, u64)>) {
    if let Some((pid, ticks)) = session {
        for member in crate::process::members::session(pid, ticks) {
            // SAFETY: a process of the session start.sh recorded: `session` checked its
            // session id and that it started after the recorded leader.
            unsafe { libc::kill(member as i32, libc::SIGKILL) };
        }
    }
    let _ = std::fs::remove_dir_all(run);
    if let Some(memory) = memory {
        let _ = std::fs::remove_dir_all(memory);
    }
}

/// The session leader `start.sh` recorded in `run`: its pid and start time in clock ticks.
pub fn recorded(run: &Path) -> Option<(u32, u64)> {
    let text = std::fs::read_to_string(run.join("pid")).ok()?;
    let mut words = text.split_whitespace();
    Some((words.next()?.parse().ok()?, words.next()?.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &Path) -> std::process::Output {
        std::process::Command::new("/bin/sh")
            .arg(script)
            .output()
            .unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn start_records_its_session_and_stop_ends_it() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let run = dir.path().join("run");
        std::fs::create_dir_all(&run).unwrap_or_else(|e| panic!("{e}"));
        let environment = dir.path().join("env");
        let env: BTreeMap<String, String> =
            [("GREETING".to_owned(), "it's ${not} expanded".to_owned())].into();
        std::fs::write(&environment, super::environment(&env)).unwrap_or_else(|e| panic!("{e}"));
        let command: Vec<String> = ["sh", "-c", "echo \"$GREETING\"; exec sleep 30"]
            .into_iter()
            .map(str::to_owned)
            .collect();
        let script = run.join("start.sh");
        std::fs::write(
            &script,
            start(&Start {
                run: &run,
                workdir: dir.path(),
                command: &command,
                environment: &environment,
            }),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let out = sh(&script);
        assert!(out.status.success(), "{out:?}");
        let (pid, ticks) = recorded(&run).unwrap_or_else(|| panic!("no pid recorded"));
        assert!(engine::procfs::is_alive(pid, ticks));
        let stat = engine::procfs::stat(pid).unwrap_or_else(|| panic!("gone"));
        assert_eq!(
            stat.session, pid as i32,
            "the program leads a session of its own"
        );
        // The variables come from the environment file only, and literally.
        let environ = engine::procfs::environ(pid).unwrap_or_default();
        assert!(environ.contains(&("GREETING".to_owned(), "it's ${not} expanded".to_owned())));
        assert!(
            !environ.iter().any(|(k, _)| k == "TEND_RUN" || k == "CARGO"),
            "{environ:?}"
        );
        let stop_script = dir.path().join("stop.sh");
        std::fs::write(&stop_script, stop(&run, 20, &[&environment]))
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(sh(&stop_script).status.success());
        assert!(!engine::procfs::is_alive(pid, ticks));
        assert!(!run.exists() && !environment.exists());
        // A second stop, with nothing left, still succeeds.
        std::fs::write(&stop_script, stop(&run, 20, &[])).unwrap_or_else(|e| panic!("{e}"));
        assert!(sh(&stop_script).status.success());
    }

    #[test]
    fn a_missing_program_fails_the_start_and_says_which() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let command = vec!["./no-such-app".to_owned()];
        let script = dir.path().join("start.sh");
        let environment = dir.path().join("env");
        std::fs::write(
            &script,
            start(&Start {
                run: dir.path(),
                workdir: dir.path(),
                command: &command,
                environment: &environment,
            }),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let out = sh(&script);
        assert_eq!(out.status.code(), Some(127));
        let said = String::from_utf8_lossy(&out.stderr);
        assert!(
            said.contains("cannot start ./no-such-app: no such program"),
            "{said}"
        );
        assert!(recorded(dir.path()).is_none());
    }
}
