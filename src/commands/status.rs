//! `tend status`

use std::path::PathBuf;
use std::time::Duration;

use engine::exec::render_instance;
use engine::health::probe;
use engine::provider::{observe, InstanceState, ObservedInstance};
use engine::spec::{Spec, SpecHash};
use engine::store::{now_ms, Store};
use serde::Serialize;

use crate::cli::SpecArgs;
use crate::failure::Failure;

use super::setup::{load, runtime, secrets, state_dir_for};

/// One instance in the status.
#[derive(Serialize)]
struct InstanceStatus {
    id: String,
    slot: String,
    state: InstanceState,
    health: String,
    hash: String,
    outdated: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    address: Option<String>,
}

/// One group in the status.
#[derive(Serialize)]
struct GroupStatus {
    name: String,
    wanted: usize,
    hash: String,
    missing: Vec<String>,
    instances: Vec<InstanceStatus>,
}

/// The whole status.
#[derive(Serialize)]
struct Status {
    project: String,
    serial: Option<u64>,
    applied_ms_ago: Option<u64>,
    groups: Vec<GroupStatus>,
    orphans: Vec<InstanceStatus>,
}

async fn health_of(spec: &Spec, instance: &ObservedInstance) -> String {
    if !instance.state.is_live() {
        return "-".to_owned();
    }
    let Some(group) = spec.group(&instance.tags.group) else {
        return "-".to_owned();
    };
    let Some(health) = &group.flavor.health else {
        return "no check".to_owned();
    };
    let slot = group.allocation.parse_slot(&instance.tags.slot);
    let empty = engine::provider::Observed::new(&spec.project);
    let secret = secrets();
    match render_instance(&spec.project, group, &slot, &empty, secret.as_ref()) {
        Ok(rendered) => match rendered.probe {
            Some(p) => match probe(&p, health.timeout.to_std().min(Duration::from_secs(2))).await {
                Ok(()) => "healthy".to_owned(),
                Err(e) => format!("unhealthy: {e}"),
            },
            None => "no check".to_owned(),
        },
        Err(e) => format!("unknown: {e}"),
    }
}

/// Shows what runs for the project, judged against the spec.
pub fn run(args: &SpecArgs, json: bool, state_dir: Option<PathBuf>) -> Result<i32, Failure> {
    let (spec, _) = load(args)?;
    let state_dir = state_dir_for(&args.spec, state_dir);
    let applied = Store::new(&state_dir).last_applied()?;
    let providers = providers::all(&state_dir);
    let rt = runtime()?;
    let status = rt.block_on(async {
        let observed = observe(&spec, &providers).await?;
        let mut groups = Vec::new();
        for group in &spec.groups {
            let hash = SpecHash::of(group).to_string();
            let mut instances = Vec::new();
            for (_, i) in observed.iter().filter(|(_, i)| i.tags.group == group.name) {
                instances.push(InstanceStatus {
                    id: i.id.clone(),
                    slot: i.tags.slot.clone(),
                    state: i.state,
                    health: health_of(&spec, i).await,
                    hash: i.tags.hash.clone(),
                    outdated: i.tags.hash != hash,
                    address: i.address.clone(),
                });
            }
            instances.sort_by_key(|i| (group.allocation.parse_slot(&i.slot), i.id.clone()));
            let missing = group
                .slots()
                .into_iter()
                .filter(|s| {
                    !instances
                        .iter()
                        .any(|i| i.slot == s.to_string() && i.state.is_live())
                })
                .map(|s| s.to_string())
                .collect();
            groups.push(GroupStatus {
                name: group.name.clone(),
                wanted: group.allocation.len(),
                hash,
                missing,
                instances,
            });
        }
        let orphans = observed
            .iter()
            .filter(|(_, i)| spec.group(&i.tags.group).is_none())
            .map(|(_, i)| InstanceStatus {
                id: i.id.clone(),
                slot: i.tags.slot.clone(),
                state: i.state,
                health: "-".to_owned(),
                hash: i.tags.hash.clone(),
                outdated: true,
                address: i.address.clone(),
            })
            .collect();
        Ok::<_, engine::provider::ProviderError>(Status {
            project: spec.project.clone(),
            serial: applied.as_ref().map(|a| a.serial),
            applied_ms_ago: applied
                .as_ref()
                .map(|a| now_ms().saturating_sub(a.applied_at)),
            groups,
            orphans,
        })
    })?;
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&status).unwrap_or_default()
        );
    } else {
        print_status(&status);
    }
    Ok(0)
}

fn print_status(status: &Status) {
    let applied = match (status.serial, status.applied_ms_ago) {
        (Some(serial), Some(ago)) => format!("serial {serial}, applied {}s ago", ago / 1000),
        _ => "never applied".to_owned(),
    };
    println!("project {} ({applied})", status.project);
    for g in &status.groups {
        let live = g.instances.iter().filter(|i| i.state.is_live()).count();
        println!(
            "\ngroup {}: {live}/{} live, hash {}",
            g.name, g.wanted, g.hash
        );
        for i in &g.instances {
            let outdated = if i.outdated { " (outdated)" } else { "" };
            let address = i
                .address
                .as_deref()
                .map(|a| format!(" at {a}"))
                .unwrap_or_default();
            println!(
                "  {:<6} {:<18} {:<9} {}{address}{outdated}",
                i.slot,
                i.id,
                format!("{:?}", i.state).to_lowercase(),
                i.health
            );
        }
        if !g.missing.is_empty() {
            println!("  missing slots: {}", g.missing.join(", "));
        }
    }
    if !status.orphans.is_empty() {
        println!("\norphans (tagged with the project, owned by no group):");
        for i in &status.orphans {
            println!("  {} slot {} hash {}", i.id, i.slot, i.hash);
        }
    }
}
