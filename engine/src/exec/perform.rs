//! Performing one action: create, heal, replace or destroy, through a provider.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::render::render_instance;
use super::{Outcome, Shared};
use crate::health::{probe, wait_healthy, RenderedProbe};
use crate::plan::{Action, ActionKind, Expectation, Expected};
use crate::provider::{observe, Observed, Provider, ProviderError, Selector};
use crate::spec::{Group, SpecHash, UpdatePolicy};

pub(super) async fn perform(shared: &Shared, action: &Action) -> Outcome {
    match run(shared, action).await {
        Ok(made) => Outcome::Done {
            instance: made.as_ref().map(|m| m.id.clone()),
            checked: made.and_then(|m| m.checked),
        },
        Err(error) => Outcome::Failed { error },
    }
}

/// A new instance and what its health check showed.
struct Made {
    id: String,
    checked: Option<String>,
}

async fn run(shared: &Shared, action: &Action) -> Result<Option<Made>, String> {
    let provider = shared
        .providers
        .get(&action.provider)
        .map_err(|e| e.to_string())?
        .clone();
    let group = shared.spec.group(&action.group);
    match action.action {
        ActionKind::Destroy => {
            let id = action
                .instance
                .as_deref()
                .ok_or("destroy without an instance")?;
            stop(shared, provider.as_ref(), group, action, id).await?;
            Ok(None)
        }
        ActionKind::Create => {
            create_healthy(shared, provider.as_ref(), need(group, action)?, action)
                .await
                .map(Some)
        }
        ActionKind::Heal => {
            let group = need(group, action)?;
            let selector = Selector {
                project: shared.spec.project.clone(),
            };
            match &action.instance {
                // A dead instance holds no port: its replacement starts first, and the remains
                // are removed after, so the slot is served again as soon as possible.
                Some(old) if !provider.alive(old, &selector).await.unwrap_or(true) => {
                    let made = create_healthy(shared, provider.as_ref(), group, action).await?;
                    stop(shared, provider.as_ref(), Some(group), action, old).await?;
                    Ok(Some(made))
                }
                Some(old) => {
                    stop(shared, provider.as_ref(), Some(group), action, old).await?;
                    create_healthy(shared, provider.as_ref(), group, action)
                        .await
                        .map(Some)
                }
                None => create_healthy(shared, provider.as_ref(), group, action)
                    .await
                    .map(Some),
            }
        }
        ActionKind::Replace => {
            let group = need(group, action)?;
            let old = action
                .instance
                .as_deref()
                .ok_or("replace without an instance")?;
            if action.surge {
                let new = create_healthy(shared, provider.as_ref(), group, action).await?;
                stop(shared, provider.as_ref(), Some(group), action, old).await?;
                Ok(Some(new))
            } else {
                stop(shared, provider.as_ref(), Some(group), action, old).await?;
                create_healthy(shared, provider.as_ref(), group, action)
                    .await
                    .map(Some)
            }
        }
    }
}

fn need<'a>(group: Option<&'a Group>, action: &Action) -> Result<&'a Group, String> {
    group.ok_or_else(|| format!("group {:?} is not in the spec", action.group))
}

/// Retries a provider call that failed for a reason that may pass, with backoff.
async fn retry<T, F, Fut>(attempts: u32, mut call: F) -> Result<T, ProviderError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, ProviderError>>,
{
    let mut pause = Duration::from_millis(200);
    let mut attempt = 1;
    loop {
        match call().await {
            Err(ProviderError::Backend { .. }) if attempt < attempts => {
                tokio::time::sleep(pause).await;
                pause *= 2;
                attempt += 1;
            }
            other => return other,
        }
    }
}

/// Drains (when the flavor says how) and destroys one instance. One already gone is fine.
async fn stop(
    shared: &Shared,
    provider: &dyn Provider,
    group: Option<&Group>,
    action: &Action,
    id: &str,
) -> Result<(), String> {
    if let Some(group) =
        group.filter(|g| g.flavor.drain.as_ref().is_some_and(|d| d.command.is_some()))
    {
        let empty = Observed::new(&shared.spec.project);
        if let Ok(rendered) = render_instance(
            &shared.spec.project,
            group,
            &action.slot,
            &empty,
            shared.secret.as_ref(),
        ) {
            if let Some(command) = rendered.drain {
                let timeout = group
                    .flavor
                    .drain
                    .as_ref()
                    .map(|d| d.timeout.to_std())
                    .unwrap_or_default();
                // A drain that fails does not keep the instance alive: it is stopped anyway.
                let _ = probe(&RenderedProbe::Exec { command }, timeout).await;
            }
        }
    }
    expect(
        shared,
        action,
        Expected::Destroy {
            instance: id.to_owned(),
        },
    );
    let result = retry(shared.options.attempts, || provider.destroy(id)).await;
    settle(shared, action);
    match result {
        Ok(()) | Err(ProviderError::NotFound { .. }) => Ok(()),
        Err(e) => Err(format!("cannot destroy {id}: {}", chain(&e))),
    }
}

fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        text.push_str(&format!(": {inner}"));
        source = inner.source();
    }
    text
}

fn expect(shared: &Shared, action: &Action, expected: Expected) {
    if let Ok(mut list) = shared.expectations.lock() {
        list.push(Expectation {
            group: action.group.clone(),
            slot: action.slot.clone(),
            expected,
        });
    }
}

fn settle(shared: &Shared, action: &Action) {
    if let Ok(mut list) = shared.expectations.lock() {
        list.retain(|e| !(e.group == action.group && e.slot == action.slot));
    }
}

/// True while the provider still shows `id` as live. An instance is called gone only when
/// two looks 20 ms apart both miss it, so one passing through `exec` is not.
async fn is_live(provider: &dyn Provider, project: &str, id: &str) -> bool {
    let selector = Selector {
        project: project.to_owned(),
    };
    for look in 0..2 {
        if look > 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        match provider.alive(id, &selector).await {
            Ok(true) => return true,
            Ok(false) => {}
            // If the provider cannot answer, do not call the instance dead on that alone.
            Err(_) => return true,
        }
    }
    false
}

/// Creates the slot's instance and waits for it to be healthy (and ready for `min_ready`
/// on a rolling replace). A surge instance that fails is removed again.
async fn create_healthy(
    shared: &Shared,
    provider: &dyn Provider,
    group: &Group,
    action: &Action,
) -> Result<Made, String> {
    let project = &shared.spec.project;
    let observed = if group.reads_groups.is_empty() {
        Observed::new(project)
    } else {
        observe(&shared.spec, &shared.providers)
            .await
            .map_err(|e| chain(&e))?
    };
    let rendered = render_instance(
        project,
        group,
        &action.slot,
        &observed,
        shared.secret.as_ref(),
    )
    .map_err(|e| e.to_string())?;
    let started = Instant::now();
    expect(
        shared,
        action,
        Expected::Create {
            hash: SpecHash::of(group),
        },
    );
    let created = retry(shared.options.attempts, || {
        provider.provision(rendered.request.clone())
    })
    .await;
    settle(shared, action);
    let id = created.map_err(|e| chain(&e))?;
    let (health_timeout, min_ready) = match (&group.update, action.action) {
        (UpdatePolicy::Rolling(r), ActionKind::Replace) => {
            (r.health_timeout.to_std(), r.min_ready.to_std())
        }
        _ => (shared.options.health_timeout, Duration::ZERO),
    };
    let healthy = wait_until_healthy(
        shared,
        provider,
        group,
        &rendered.probe,
        &id,
        started,
        health_timeout,
    )
    .await;
    let ready = match healthy {
        Ok(()) if !min_ready.is_zero() => {
            tokio::time::sleep(min_ready).await;
            stays_healthy(provider, project, &rendered.probe, &id, group).await
        }
        other => other,
    };
    if let Err(why) = ready {
        if action.surge {
            let _ = provider.destroy(&id).await;
        }
        return Err(format!("new instance {id} {why}"));
    }
    let checked = rendered.probe.as_ref().map(|p| match p {
        RenderedProbe::Http { address, path } => format!("answers http://{address}{path}"),
        RenderedProbe::Tcp { address } => format!("accepts TCP on {address}"),
        RenderedProbe::Exec { .. } => "passes its exec check".to_owned(),
    });
    Ok(Made { id, checked })
}

async fn wait_until_healthy(
    shared: &Shared,
    provider: &dyn Provider,
    group: &Group,
    rendered: &Option<RenderedProbe>,
    id: &str,
    started: Instant,
    timeout: Duration,
) -> Result<(), String> {
    let project = shared.spec.project.clone();
    match (rendered, &group.flavor.health) {
        (Some(p), Some(health)) => {
            let p = Arc::new(p.clone());
            let probe_timeout = health.timeout.to_std();
            let check = || {
                let p = p.clone();
                async move { probe(&p, probe_timeout).await }
            };
            let alive = || is_live(provider, &project, id);
            wait_healthy(health, started, started + timeout, check, alive)
                .await
                .map_err(|e| e.to_string())
        }
        _ => {
            // No health check: alive shortly after start is as healthy as it gets.
            tokio::time::sleep(Duration::from_millis(50)).await;
            if is_live(provider, &project, id).await {
                Ok(())
            } else {
                Err("exited right after it started".to_owned())
            }
        }
    }
}

async fn stays_healthy(
    provider: &dyn Provider,
    project: &str,
    rendered: &Option<RenderedProbe>,
    id: &str,
    group: &Group,
) -> Result<(), String> {
    if !is_live(provider, project, id).await {
        return Err("exited before it was ready for min_ready".to_owned());
    }
    match (rendered, &group.flavor.health) {
        (Some(p), Some(h)) => probe(p, h.timeout.to_std())
            .await
            .map_err(|e| format!("turned unhealthy before min_ready passed: {e}")),
        _ => Ok(()),
    }
}
