//! The seed's integrations: the time to create 10 instances with `terraform()` and
//! `vagrant()`, against the built-in `process` provider and against each tool driven by
//! hand, all in one run on this machine.
//!
//! - tend: `tend apply --yes` of a group of 10 `sleep 600` instances (plan, provision,
//!   and the observe that confirms them), for `process()`, `terraform()` and `vagrant()`.
//! - Terraform by hand: a `main.tf.json` with one `for_each` `terraform_data` whose
//!   `local-exec` starts the same program, applied (a) once per key in a shell loop that
//!   adds one key at a time, and (b) once with all 10 keys.
//! - Vagrant by hand: 10 folders with the same `Vagrantfile`, `vagrant up` in all of them
//!   at once.
//!
//! Needs `terraform` on PATH (`scripts/install-terraform.sh`), `vagrant`, and a Docker
//! engine with the image `tend-busybox:test` (what `.ci/run` sets up). Everything made is
//! removed at the end: tend's through `tend destroy`, the hand-made through the pids
//! recorded and the containers' bench label.
//!
//! Run: `cargo bench --bench tools`

use std::path::Path;
use std::process::Command;
use std::time::Instant;

const COUNT: usize = 10;
const IMAGE: &str = "tend-busybox:test";

fn run(dir: &Path, program: &str, args: &[&str]) -> std::process::Output {
    let out = Command::new(program)
        .args(args)
        .current_dir(dir)
        .env("TF_CLI_CONFIG_FILE", "/dev/null")
        .env("CHECKPOINT_DISABLE", "1")
        .env("VAGRANT_CHECKPOINT_DISABLE", "1")
        .env("VAGRANT_NO_PLUGINS", "1")
        .env("VAGRANT_HOME", dir.join(".vagrant-home"))
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    if !out.status.success() {
        panic!(
            "{program} {args:?} in {} failed:\n{}\n{}",
            dir.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    out
}

/// Seconds `tend apply --yes` takes to make 10 instances with `provider`.
fn tend_apply(provider: &str) -> f64 {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let name = provider.split('(').next().unwrap_or("x");
    std::fs::write(
        dir.path().join("main.star"),
        format!(
            "project(name = \"bench-tools-{name}\")\ngroup(name = \"work\", size = {COUNT}, provider = {provider}, flavor = flavor(command = [\"sleep\", \"600\"]))\n"
        ),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let tend = env!("CARGO_BIN_EXE_tend");
    let started = Instant::now();
    let out = run(dir.path(), tend, &["apply", "--yes"]);
    let took = started.elapsed().as_secs_f64();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains(&format!("{COUNT} created")), "{said}");
    run(dir.path(), tend, &["destroy", "--yes"]);
    took
}

/// A hand-written `main.tf.json` whose `keys` start `sleep 600` each, recording its pid.
fn hand_config(dir: &Path, keys: usize) {
    let map: serde_json::Map<String, serde_json::Value> = (0..keys)
        .map(|k| (k.to_string(), serde_json::json!({"slot": k.to_string()})))
        .collect();
    let doc = serde_json::json!({"resource": {"terraform_data": {"work": {
        "for_each": map,
        "input": "${each.value}",
        "provisioner": [{"local-exec": {
            "command": "setsid sleep 600 </dev/null >/dev/null 2>&1 & echo $! > pid-${each.key}"
        }}]
    }}}});
    std::fs::write(dir.join("main.tf.json"), doc.to_string()).unwrap_or_else(|e| panic!("{e}"));
}

fn kill_recorded(dir: &Path) {
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with("pid-") {
            if let Ok(pid) = std::fs::read_to_string(entry.path()) {
                let _ = Command::new("kill").arg(pid.trim()).status();
            }
        }
    }
}

/// Seconds for Terraform by hand: one apply per key added (`loop_`), or one for all.
fn terraform_by_hand(one_at_a_time: bool) -> f64 {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    hand_config(dir.path(), 0);
    run(dir.path(), "terraform", &["init", "-input=false"]);
    let started = Instant::now();
    if one_at_a_time {
        for keys in 1..=COUNT {
            hand_config(dir.path(), keys);
            run(
                dir.path(),
                "terraform",
                &["apply", "-auto-approve", "-input=false"],
            );
        }
    } else {
        hand_config(dir.path(), COUNT);
        run(
            dir.path(),
            "terraform",
            &["apply", "-auto-approve", "-input=false"],
        );
    }
    let took = started.elapsed().as_secs_f64();
    kill_recorded(dir.path());
    took
}

/// Seconds for 10 `vagrant up` at once in folders of their own.
fn vagrant_by_hand() -> f64 {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let label = format!("tend-bench-by-hand={}", std::process::id());
    for n in 0..COUNT {
        let machine = dir.path().join(format!("m{n}"));
        std::fs::create_dir_all(&machine).unwrap_or_else(|e| panic!("{e}"));
        let file = format!(
            r#"Vagrant.configure("2") do |config|
  config.vm.synced_folder ".", "/vagrant", disabled: true
  config.vm.network :forwarded_port, guest: 22, host: 2222, id: "ssh", disabled: true
  config.vm.provider "docker" do |d|
    d.image = "{IMAGE}"
    d.name = "tend-bench-{}-{n}"
    d.cmd = ["sleep", "600"]
    d.create_args = ["--label", "{label}", "--pull=never", "--init"]
    d.has_ssh = false
    d.remains_running = true
  end
end
"#,
            std::process::id()
        );
        std::fs::write(machine.join("Vagrantfile"), file).unwrap_or_else(|e| panic!("{e}"));
    }
    let started = Instant::now();
    let children: Vec<std::process::Child> = (0..COUNT)
        .map(|n| {
            let machine = dir.path().join(format!("m{n}"));
            Command::new("vagrant")
                .args(["up", "--provider=docker"])
                .current_dir(&machine)
                .env("VAGRANT_CHECKPOINT_DISABLE", "1")
                .env("VAGRANT_NO_PLUGINS", "1")
                .env("VAGRANT_HOME", dir.path().join(".vagrant-home"))
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap_or_else(|e| panic!("vagrant: {e}"))
        })
        .collect();
    let ups: Vec<bool> = children
        .into_iter()
        .map(|mut c| c.wait().is_ok_and(|s| s.success()))
        .collect();
    let all_up = ups.iter().all(|up| *up);
    let took = started.elapsed().as_secs_f64();
    let made = run(
        dir.path(),
        "docker",
        &["ps", "-aq", "--filter", &format!("label={label}")],
    );
    let ids: Vec<String> = String::from_utf8_lossy(&made.stdout)
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    if !ids.is_empty() {
        let mut args = vec!["rm", "-f"];
        args.extend(ids.iter().map(String::as_str));
        run(dir.path(), "docker", &args);
    }
    assert!(all_up, "a vagrant up by hand failed");
    took
}

fn main() {
    // `cargo bench` passes `--bench`; a `cargo test` of benches passes nothing to run.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let process = tend_apply("process()");
    let terraform = tend_apply("terraform()");
    let by_hand_loop = terraform_by_hand(true);
    let by_hand_once = terraform_by_hand(false);
    let vagrant = tend_apply(&format!("vagrant(image = \"{IMAGE}\")"));
    let vagrant_by_hand = vagrant_by_hand();
    println!("\ncreate {COUNT} instances (`sleep 600`), seconds, one run each\n");
    println!("| how | seconds | / process() | / the tool by hand |");
    println!("| --- | --- | --- | --- |");
    println!("| tend apply, process() | {process:.2} | 1.00 | |");
    println!(
        "| tend apply, terraform() | {terraform:.2} | {:.2} | {:.2} (loop), {:.2} (one apply) |",
        terraform / process,
        terraform / by_hand_loop,
        terraform / by_hand_once
    );
    println!(
        "| terraform apply by hand, one per key added | {by_hand_loop:.2} | {:.2} | |",
        by_hand_loop / process
    );
    println!(
        "| terraform apply by hand, all 10 keys at once | {by_hand_once:.2} | {:.2} | |",
        by_hand_once / process
    );
    println!(
        "| tend apply, vagrant() | {vagrant:.2} | {:.2} | {:.2} |",
        vagrant / process,
        vagrant / vagrant_by_hand
    );
    println!(
        "| vagrant up by hand, 10 folders at once | {vagrant_by_hand:.2} | {:.2} | |",
        vagrant_by_hand / process
    );
}
