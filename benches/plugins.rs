//! What a provider plugin costs, against the built-in `process` provider in the same run.
//!
//! (a) Provisions per second: `TEND_BENCH_INSTANCES` (default 1,000) instances running
//!     `sleep 600`, made ten at a time through the reference plugin
//!     (`examples/plugins/localproc.py`, behind tend's host: handshake once, then
//!     `instance.provision` and the describe by key that checks each instance's tags),
//!     and through the `process` provider.
//! (b) `instance.describe` round trip with all of them made: median and p95 of 50
//!     describes of the project, through the plugin and through `process` (which reads
//!     /proc).
//!
//! Everything made is destroyed at the end, through the provider that made it.
//!
//! Run: `cargo bench --bench plugins`

use std::sync::Arc;
use std::time::{Duration, Instant};

use engine::provider::{InstanceTags, Provider, ProvisionRequest, Selector};
use engine::spec::Slot;
use providers::plugin::{PluginProvider, PluginSpec};
use providers::process::ProcessProvider;

const PARALLEL: usize = 10;
const DESCRIBES: usize = 50;

fn request(project: &str, slot: u32, props: serde_json::Value) -> ProvisionRequest {
    let tags = InstanceTags {
        project: project.to_owned(),
        group: "bench".to_owned(),
        slot: slot.to_string(),
        hash: "b0b0".to_owned(),
        ports: Vec::new(),
        format: engine::format::INSTANCE,
    };
    let mut request = ProvisionRequest::bare(Slot::Index(slot), tags);
    request.command = vec!["sleep".to_owned(), "600".to_owned()];
    request.props = serde_json::from_value(props).unwrap_or_default();
    request
}

/// Makes `count` instances, `PARALLEL` at a time; provisions per second.
async fn provision_all(
    provider: Arc<dyn Provider>,
    project: &str,
    count: u32,
    props: serde_json::Value,
) -> f64 {
    let started = Instant::now();
    let next = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..PARALLEL {
        let (provider, next, project, props) = (
            provider.clone(),
            next.clone(),
            project.to_owned(),
            props.clone(),
        );
        workers.spawn(async move {
            loop {
                let slot = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if slot >= count {
                    break;
                }
                if let Err(e) = provider
                    .provision(request(&project, slot, props.clone()))
                    .await
                {
                    panic!("provision {slot}: {e}");
                }
            }
        });
    }
    while let Some(done) = workers.join_next().await {
        if let Err(e) = done {
            panic!("a worker failed: {e}");
        }
    }
    f64::from(count) / started.elapsed().as_secs_f64()
}

/// Median and p95 of `DESCRIBES` describes, in milliseconds; checks each sees `count`.
async fn describe_times(provider: &dyn Provider, project: &str, count: usize) -> (f64, f64) {
    let selector = Selector {
        project: project.to_owned(),
    };
    let mut times = Vec::with_capacity(DESCRIBES);
    for _ in 0..DESCRIBES {
        let started = Instant::now();
        let found = provider
            .describe(&selector)
            .await
            .unwrap_or_else(|e| panic!("describe: {e}"));
        times.push(started.elapsed().as_secs_f64() * 1000.0);
        assert_eq!(
            found.len(),
            count,
            "describe saw {} of {count}",
            found.len()
        );
    }
    times.sort_by(f64::total_cmp);
    (times[DESCRIBES / 2], times[DESCRIBES * 95 / 100])
}

async fn destroy_all(provider: &dyn Provider, project: &str) {
    let selector = Selector {
        project: project.to_owned(),
    };
    if let Ok(found) = provider.describe(&selector).await {
        for instance in found {
            if let Err(e) = provider.destroy(&instance.id).await {
                eprintln!("destroy {}: {e}", instance.id);
            }
        }
    }
}

fn main() {
    let count: u32 = std::env::var("TEND_BENCH_INSTANCES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/plugins/localproc.py");
    let spec = PluginSpec {
        name: "localproc".to_owned(),
        command: vec!["python3".to_owned(), script.display().to_string()],
        config: serde_json::json!({}),
    };
    let quiet: providers::plugin::logs::LogSink = Arc::new(|_: &str, _: &str| {});
    let plugin: Arc<dyn Provider> = Arc::new(PluginProvider::new(&spec, dir.path(), quiet));
    let process: Arc<dyn Provider> = Arc::new(ProcessProvider::new(dir.path()));
    let (plugin_project, process_project) = ("bench-plugin", "bench-process");
    rt.block_on(async {
        // Both start from nothing: the plugin is started (and shakes hands) before timing.
        destroy_all(&*plugin, plugin_project).await;
        destroy_all(&*process, process_project).await;
let plugin_props = serde_json::json!({"plugin": {"command": spec.command, "config": spec.config}});
        let plugin_rate = provision_all(plugin.clone(), plugin_project, count, plugin_props).await;
        let process_rate = provision_all(
            process.clone(),
            process_project,
            count,
            serde_json::json!({"cgroups": false}),
        )
        .await;
        let n = usize::try_from(count).unwrap_or(usize::MAX);
        let (plugin_median, plugin_p95) = describe_times(&*plugin, plugin_project, n).await;
        let (process_median, process_p95) = describe_times(&*process, process_project, n).await;
        println!("\nprovider plugins, {count} instances ({PARALLEL} provisions at a time)\n");
        println!("| measure | plugin (localproc.py) | process (built in) | plugin / process |");
        println!("| --- | --- | --- | --- |");
        println!(
            "| provisions per second | {plugin_rate:.0} | {process_rate:.0} | {:.2}x |",
            plugin_rate / process_rate
        );
        println!(
            "| describe of {count}, median | {plugin_median:.1} ms | {process_median:.1} ms | {:.2}x |",
            plugin_median / process_median
        );
        println!(
            "| describe of {count}, p95 | {plugin_p95:.1} ms | {process_p95:.1} ms | {:.2}x |",
            plugin_p95 / process_p95
        );
        destroy_all(&*plugin, plugin_project).await;
        destroy_all(&*process, process_project).await;
        plugin.close().await;
    });
    std::thread::sleep(Duration::from_millis(100));
}
