//! The etcd store against a real three-member cluster: its key layout, the revision as the
//! serial, history, commits guarded by what they read, and the errors an operator meets.

use std::time::{Duration, Instant};

use engine::store::{EtcdStore, Store, StoreError};

use crate::etcd::Cluster;
use crate::harness::{repo, snapshots_in, tend, text};

fn two_groups(api_version: u32, with_worker: bool) -> String {
    let worker = if with_worker {
        "group(name = \"worker\", size = 1, provider = sim(), flavor = flavor(command = [\"work\"]))\n"
    } else {
        ""
    };
    format!(
        "project(name = \"keys\")\n\
         group(name = \"api\", size = 2, provider = sim(), flavor = flavor(command = [\"api\", \"--v\", \"{api_version}\"]))\n\
         {worker}"
    )
}

/// (key, mod revision) of every key of the project.
fn keys(cluster: &Cluster, project: &str) -> Vec<(String, i64)> {
    let out = cluster.ctl(&[
        "get",
        "--prefix",
        &format!("/tend/v1/{project}/"),
        "-w",
        "json",
    ]);
    let value: serde_json::Value = serde_json::from_str(&out).unwrap_or_default();
    let decode = |b64: &str| {
        let bytes = base64_decode(b64);
        String::from_utf8_lossy(&bytes).into_owned()
    };
    value["kvs"]
        .as_array()
        .map(|kvs| {
            kvs.iter()
                .map(|kv| {
                    (
                        decode(kv["key"].as_str().unwrap_or("")),
                        kv["mod_revision"].as_i64().unwrap_or(0),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// etcdctl's JSON gives keys in base64.
fn base64_decode(text: &str) -> Vec<u8> {
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut bits = 0u32;
    let mut count = 0;
    let mut out = Vec::new();
    for c in text.bytes().filter(|c| *c != b'=') {
        let Some(v) = alphabet.iter().position(|a| *a == c) else {
            continue;
        };
        bits = (bits << 6) | v as u32;
        count += 6;
        if count >= 8 {
            count -= 8;
            out.push((bits >> count) as u8);
        }
    }
    out
}

#[test]
fn an_apply_writes_a_key_per_group_in_one_transaction_whose_revision_is_the_serial() {
    let test = "etcd_store::an_apply_writes_a_key_per_group_in_one_transaction_whose_revision_is_the_serial";
    let Some(cluster) = Cluster::start(test) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let url = cluster.url();
    let apply = |spec: String| {
        std::fs::write(dir.path().join("main.star"), spec).unwrap_or_else(|e| panic!("{e}"));
        let out = tend(dir.path(), &["apply", "--yes", "--store", &url]);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    };
    apply(two_groups(1, true));
    let first = keys(&cluster, "keys");
    let names: Vec<&str> = first.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        names,
        [
            "/tend/v1/keys/format",
            "/tend/v1/keys/history/0000000001",
            "/tend/v1/keys/sources",
            "/tend/v1/keys/specs/api",
            "/tend/v1/keys/specs/worker",
        ],
        "{first:?}"
    );
    let revisions: std::collections::BTreeSet<i64> = first.iter().map(|(_, r)| *r).collect();
    assert_eq!(revisions.len(), 1, "one transaction: {first:?}");
    let serial = first[0].1;
    let status = tend(dir.path(), &["status", "--store", &url]);
    assert!(
        text(&status.stdout).starts_with(&format!("project keys (serial {serial}, ")),
        "{}",
        text(&status.stdout)
    );
    // A new api version and no worker: api's key changes, worker's goes, history grows.
    apply(two_groups(2, false));
    let second = keys(&cluster, "keys");
    let of = |keys: &[(String, i64)], name: &str| {
        keys.iter()
            .find(|(k, _)| k.ends_with(name))
            .map(|(_, r)| *r)
    };
    assert_eq!(of(&second, "specs/worker"), None, "{second:?}");
    let serial2 = of(&second, "sources").unwrap_or(0);
    assert!(serial2 > serial);
    assert_eq!(of(&second, "specs/api"), Some(serial2));
    assert_eq!(of(&second, "history/0000000001"), Some(serial));
    assert_eq!(of(&second, "history/0000000002"), Some(serial2));
    // The same spec again writes nothing new.
    apply(two_groups(2, false));
    let store = EtcdStore::connect(
        &engine::store::etcd::parse_url(&url).unwrap_or_default(),
        "keys",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let store = Store::etcd(dir.path(), store, "keys");
    let history = store.history();
    assert_eq!(history.len(), 3, "every apply is kept: {history:?}");
    assert_eq!(history[..2], [serial as u64, serial2 as u64]);
    let old = store
        .applied(serial as u64)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        old.map(|a| a.spec.groups.len()),
        Some(2),
        "the first version had two groups"
    );
    // The history keeps the newest versions only: older entries go in the commit that
    // pushes them out.
    let last = store
        .last_applied()
        .ok()
        .flatten()
        .unwrap_or_else(|| panic!("nothing applied"));
    for _ in 0..engine::store::HISTORY_KEPT {
        store.commit(&last.spec).unwrap_or_else(|e| panic!("{e}"));
    }
    let history = store.history();
    assert_eq!(history.len() as u64, engine::store::HISTORY_KEPT);
    assert!(
        !history.contains(&(serial as u64)),
        "the oldest versions are dropped: {history:?}"
    );
    assert_eq!(
        keys(&cluster, "keys")
            .iter()
            .filter(|(k, _)| k.contains("/history/"))
            .count() as u64,
        engine::store::HISTORY_KEPT
    );
}

#[test]
fn a_commit_from_a_stale_read_is_refused_and_writes_nothing() {
    let test = "etcd_store::a_commit_from_a_stale_read_is_refused_and_writes_nothing";
    let Some(cluster) = Cluster::start(test) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(dir.path().join("main.star"), two_groups(1, false))
        .unwrap_or_else(|e| panic!("{e}"));
    let spec = engine::lang::evaluate_file(&dir.path().join("main.star"), &Default::default())
        .unwrap_or_else(|e| panic!("{e}"));
    let endpoints = engine::store::etcd::parse_url(&cluster.url()).unwrap_or_default();
    let open = || {
        let etcd = EtcdStore::connect(&endpoints, "keys").unwrap_or_else(|e| panic!("{e}"));
        Store::etcd(dir.path(), etcd, "keys")
    };
    let (one, two) = (open(), open());
    let first = one.commit(&spec).unwrap_or_else(|e| panic!("{e}"));
    // Both read serial `first`; the second to commit was planned from a spec that is gone.
    let _ = one.last_applied();
    let _ = two.last_applied();
    let mut changed = spec.clone();
    changed.groups[0].name = "renamed".to_owned();
    let won = one.commit(&changed).unwrap_or_else(|e| panic!("{e}"));
    assert!(won.serial > first.serial);
    match two.commit(&spec) {
        Err(StoreError::Conflict { read }) => assert_eq!(read, first.serial),
        other => panic!("a stale commit went through: {other:?}"),
    }
    let last = open().last_applied().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(last.map(|a| a.serial), Some(won.serial));
}

#[test]
fn bad_stores_and_a_spec_past_etcds_limits_are_clear_errors() {
    let test = "etcd_store::bad_stores_and_a_spec_past_etcds_limits_are_clear_errors";
    let settings = snapshots_in(&repo().join("testdata/etcd/snapshots"));
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(dir.path().join("main.star"), two_groups(1, false))
        .unwrap_or_else(|e| panic!("{e}"));
    for (name, store) in [
        ("store_not_a_url", "consul://127.0.0.1:8500"),
        ("store_without_endpoints", "etcd://"),
        ("store_endpoint_without_port", "etcd://127.0.0.1"),
        (
            "store_with_credentials",
            "etcd://root:secret@127.0.0.1:2379",
        ),
    ] {
        let out = tend(dir.path(), &["plan", "--store", store]);
        assert_eq!(out.status.code(), Some(1), "{name}");
        settings.bind(|| insta::assert_snapshot!(name, text(&out.stderr)));
    }
    // Keep-alives too slow for the lease's fence, and a TTL etcd cannot count.
    for (name, ttl, keep_alive) in [
        ("keep_alive_too_slow", "4s", "3s"),
        ("lease_ttl_not_whole_seconds", "2500ms", "500ms"),
    ] {
        let out = tend(
            dir.path(),
            &[
                "run",
                "--store",
                "etcd://127.0.0.1:1",
                "--lease-ttl",
                ttl,
                "--keep-alive",
                keep_alive,
            ],
        );
        assert_eq!(out.status.code(), Some(1), "{name}");
        settings.bind(|| insta::assert_snapshot!(name, text(&out.stderr)));
    }
    // Local processes under an etcd store must name their machine.
    std::fs::write(
        dir.path().join("main.star"),
        "project(name = \"procs\")\n\
         group(name = \"web\", size = 1, provider = process(), flavor = flavor(command = [\"sleep\", \"100\"]))\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let out = tend(dir.path(), &["plan", "--store", "etcd://127.0.0.1:1"]);
    assert_eq!(out.status.code(), Some(1));
    let here = engine::store::etcd::host_name();
    let stderr = text(&out.stderr).replace(&format!("{here:?}"), "\"<this machine>\"");
    settings.bind(|| insta::assert_snapshot!("process_group_without_machine", stderr));
    // A group of another machine's processes is not observed here: a plan from here is an
    // error naming the machine, never a plan made without them; one of this machine's is
    // planned.
    for (machine, observed) in [("elsewhere.example", false), (here.as_str(), true)] {
        std::fs::write(
            dir.path().join("main.star"),
            format!(
                "project(name = \"procs\")\n\
                 group(name = \"web\", size = 1, provider = process(machine = {machine:?}), flavor = flavor(command = [\"sleep\", \"100\"]))\n"
            ),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let out = tend(dir.path(), &["plan"]);
        if observed {
            assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
            assert!(
                text(&out.stdout).contains("+ create  web/0"),
                "{}",
                text(&out.stdout)
            );
        } else {
            assert_eq!(out.status.code(), Some(1));
            assert!(
                text(&out.stderr).contains(
                    "process instances of machine \"elsewhere.example\" are kept only by a tend on that machine"
                ),
                "{}",
                text(&out.stderr)
            );
        }
    }
    std::fs::write(dir.path().join("main.star"), two_groups(1, false))
        .unwrap_or_else(|e| panic!("{e}"));
    // The same through the environment.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tend"))
        .args(["plan"])
        .env("TEND_STORE", "etcd://")
        .current_dir(dir.path())
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("names no etcd endpoint"));
    // Nobody listens: an error naming the store, after the retries, not a hang.
    let started = Instant::now();
    let out = tend(
        dir.path(),
        &["apply", "--yes", "--store", "etcd://127.0.0.1:1"],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr)
            .starts_with("error: environment error: cannot use the etcd store at 127.0.0.1:1: "),
        "{}",
        text(&out.stderr)
    );
    assert!(started.elapsed() < Duration::from_secs(60));
    let Some(cluster) = Cluster::start(test) else {
        return;
    };
    // 1.6 MB in one group: past etcd's 1.5 MiB per request.
    std::fs::write(
        dir.path().join("main.star"),
        "project(name = \"big\")\n\
         group(name = \"big\", size = 1, provider = sim(), flavor = flavor(command = [\"x\"], env = {\"PAYLOAD\": \"x\" * 1600000}))\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let out = tend(dir.path(), &["apply", "--yes", "--store", &cluster.url()]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    settings.bind(|| insta::assert_snapshot!("spec_too_large", text(&out.stderr)));
    assert!(keys(&cluster, "big").is_empty(), "nothing is written");
    let world = dir.path().join(".tend/sim/world.jsonl");
    assert!(
        std::fs::read_to_string(world)
            .unwrap_or_default()
            .is_empty(),
        "no instance was made"
    );
}
