//! Performing one action: create, heal, replace or destroy, through a provider.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::render::{render_instance, RenderedInstance};
use super::{chain, ActionError, Context, Done, Outcome};
use crate::health::{wait_healthy, ProbeError, RenderedProbe};
use crate::plan::{Action, ActionKind};
use crate::provider::{observe, probe_instance, Observed, Provider, ProviderError, Selector};
use crate::spec::{Group, PortValue, Probe, UpdatePolicy};

/// Performs `action`. A surge instance that fails is removed again; an in-place
/// replacement that fails is left for the planner (it counts as unavailable).
pub async fn perform(ctx: &Context, action: &Action) -> Outcome {
    let provider = provider(ctx, &action.provider)?;
    let group = ctx.catalog.group(&action.group, action.hash.as_ref());
    match action.action {
        ActionKind::Destroy => {
            let id = action.instance.as_deref().unwrap_or_default();
            stop(
                ctx,
                provider.as_ref(),
                group.as_ref(),
                action,
                id,
                Retire::Plain,
            )
            .await?;
            Ok(Done {
                instance: None,
                checked: None,
                in_place: false,
            })
        }
        ActionKind::Create => {
            create_healthy(ctx, provider.as_ref(), &need(group, action)?, action).await
        }
        ActionKind::Heal | ActionKind::Replace => {
            let group = need(group, action)?;
            let Some(old) = action.instance.as_deref() else {
                return create_healthy(ctx, provider.as_ref(), &group, action).await;
            };
            let holder = self::provider(ctx, action.holder())?;
            let selector = Selector {
                project: ctx.catalog.spec().project.clone(),
            };
            // Dead (the planner saw it so) at the version to make, and its provider can
            // start it again: the same instance is started in place, which costs no create
            // and no look before it (one that runs after all is simply judged by its gate).
            // One that cannot be started, or is gone, gets a new instance below.
            if !action.unhealthy && may_start_in_place(ctx, action) {
                let started = start_in_place(ctx, provider.as_ref(), &group, action, old).await;
                if matches!(started, Err(ActionError::NotHealthy { .. })) {
                    // It did not come back healthy: the slot's next heals make new ones.
                    ctx.make_anew(action);
                }
                if let Some(done) = started? {
                    return Ok(done);
                }
            }
            // A dead instance holds no port: its replacement starts first and the remains
            // go after, so the slot serves again as soon as it can. So does a surge. What
            // a dead instance left running may hold its port: that goes first.
            let old_is_dead = action.action == ActionKind::Heal
                && !holder.alive(old, &selector).await.unwrap_or(true)
                && !holder.has_remains(old).await.unwrap_or(true);
            if old_is_dead || action.surge {
                let made = create_healthy(ctx, provider.as_ref(), &group, action).await?;
                let retire = match (&made.instance, action.surge) {
                    (Some(new), true) => Retire::AfterSuccessor {
                        provider: provider.as_ref(),
                        id: new,
                    },
                    _ => Retire::Plain,
                };
                stop(ctx, holder.as_ref(), Some(&group), action, old, retire).await?;
                Ok(made)
            } else {
                stop(
                    ctx,
                    holder.as_ref(),
                    Some(&group),
                    action,
                    old,
                    Retire::InPlace,
                )
                .await?;
                create_healthy(ctx, provider.as_ref(), &group, action).await
            }
        }
    }
}

/// True when `action` may start the dead instance it heals again in place: a heal at the
/// instance's own version, by the provider that holds it, in a slot whose last instance
/// started in place held (see [`Context::make_anew`]).
fn may_start_in_place(ctx: &Context, action: &Action) -> bool {
    action.action == ActionKind::Heal
        && !action.surge
        && action.instance_provider.is_none()
        && action.hash.is_some()
        && action.hash == action.from_hash
        && !ctx.makes_anew(action)
}

/// Starts the dead instance `id` again in place and waits for it to pass the same health
/// gate as a new instance. `Ok(None)` when nothing was started (the provider cannot start
/// instances again, or this one is gone or would not start): the caller makes a new one.
async fn start_in_place(
    ctx: &Context,
    provider: &dyn Provider,
    group: &Group,
    action: &Action,
    id: &str,
) -> Result<Option<Done>, ActionError> {
    if let Some(hash) = ctx.halted(action) {
        return Err(ActionError::Halted(hash));
    }
    match ctx.limited(provider.restart(id)).await {
        Ok(true) => {}
        Ok(false) | Err(_) => return Ok(None),
    }
    let started = Instant::now();
    let spec = ctx.catalog.spec();
    let project = &spec.project;
    // Its own ports are in its tags; where they are reached may have changed with the
    // start (an engine picks a container's host ports again).
    let mut own = Vec::new();
    let mut reachable = std::collections::BTreeMap::new();
    if !group.flavor.port_names().is_empty() {
        let selector = Selector {
            project: project.clone(),
        };
        let found = provider
            .describe(&selector)
            .await
            .ok()
            .and_then(|found| found.into_iter().find(|i| i.id == id));
        let Some(found) = found else {
            return Err(ActionError::NotHealthy {
                id: id.to_owned(),
                why: "was started again in place and then not seen by its provider".to_owned(),
            });
        };
        own = found.tags.ports;
        reachable = if provider.publishes_ports() {
            found.ports
        } else {
            own.iter().cloned().collect()
        };
    }
    let empty = Observed::new(project);
    let hash = ctx.catalog.hash_of(&group.name, action.hash.as_ref());
    let mut rendered = render_instance(
        project,
        group,
        &hash,
        &action.slot,
        &own,
        &empty,
        ctx.secret.as_ref(),
    )?;
    if provider.publishes_ports() && !reachable.is_empty() {
        rendered.reach(group, &reachable);
    }
    let done = gate(
        ctx,
        provider,
        group,
        action,
        id.to_owned(),
        &rendered,
        &reachable,
        started,
    )
    .await?;
    Ok(Some(Done {
        in_place: true,
        ..done
    }))
}

fn provider(ctx: &Context, name: &str) -> Result<Arc<dyn Provider>, ActionError> {
    ctx.providers
        .get(name)
        .map_err(|e| ActionError::UnknownProvider(e.to_string()))
}

fn need(group: Option<Group>, action: &Action) -> Result<Group, ActionError> {
    group.ok_or_else(|| ActionError::UnknownGroup(action.group.clone()))
}

/// Why an attempt stopped.
enum Stop {
    /// The rollout of its version failed meanwhile.
    Halted(crate::spec::SpecHash),
    /// The replacement made first is gone: the instance it was to replace stays.
    Lost(String),
    /// The provider failed.
    Provider(ProviderError),
}

/// A failure that another attempt may get past.
trait Passing {
    fn may_pass(&self) -> bool;
}

impl Passing for ProviderError {
    fn may_pass(&self) -> bool {
        matches!(self, ProviderError::Backend { .. })
    }
}

impl Passing for Stop {
    fn may_pass(&self) -> bool {
        matches!(self, Stop::Provider(e) if e.may_pass())
    }
}

/// Retries a provider call that failed for a reason that may pass, with backoff.
async fn retry<T, E, F, Fut>(attempts: u32, mut call: F) -> Result<T, E>
where
    E: Passing,
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    let mut pause = Duration::from_millis(200);
    let mut attempt = 1;
    loop {
        match call().await {
            Err(e) if e.may_pass() && attempt < attempts => {
                tokio::time::sleep(pause).await;
                pause *= 2;
                attempt += 1;
            }
            other => return other,
        }
    }
}

/// Drains (when the flavor says how) and destroys one instance. One already gone is fine.
/// What must still hold, at each attempt, before a serving instance is removed.
enum Retire<'a> {
    /// Nothing: the instance is not wanted, dead, or failing.
    Plain,
    /// It serves and its slot goes down until the replacement is made: not for a version
    /// whose rollout failed since the action was planned.
    InPlace,
    /// Its replacement `id` was made first (surge): it must still live, and the version's
    /// rollout must not have failed meanwhile.
    AfterSuccessor {
        /// The replacement's provider.
        provider: &'a dyn Provider,
        /// The replacement.
        id: &'a str,
    },
}

async fn stop(
    ctx: &Context,
    provider: &dyn Provider,
    group: Option<&Group>,
    action: &Action,
    id: &str,
    retire: Retire<'_>,
) -> Result<(), ActionError> {
    // Out of its balancer's rotation first; its open connections get the drain timeout.
    ctx.balancers.drain(&action.group, id).await;
    run_drain_command(ctx, provider, group, action, id).await;
    let project = &ctx.catalog.spec().project;
    // Every attempt checks again: retries can come seconds later.
    let destroyed = retry(ctx.options.attempts, || async {
        let guarded = !matches!(retire, Retire::Plain);
        if let Some(hash) = ctx.halted(action).filter(|_| guarded) {
            return Err(Stop::Halted(hash));
        }
        if let Retire::AfterSuccessor {
            provider: p,
            id: new,
        } = &retire
        {
            if !is_live(*p, project, new).await {
                return Err(Stop::Lost((*new).to_owned()));
            }
        }
        ctx.limited(provider.destroy(id))
            .await
            .map_err(Stop::Provider)
    })
    .await;
    if destroyed.is_err()
        && !matches!(
            destroyed,
            Err(Stop::Provider(ProviderError::NotFound { .. }))
        )
    {
        // It may still run: a round that sees it serving puts it back into rotation.
        ctx.balancers.undrain(&action.group, id);
    }
    match destroyed {
        Ok(()) | Err(Stop::Provider(ProviderError::NotFound { .. })) => Ok(()),
        Err(Stop::Halted(hash)) => Err(ActionError::Halted(hash)),
        Err(Stop::Lost(new)) => Err(ActionError::NotHealthy {
            id: new,
            why: "exited before the instance it replaces was removed".to_owned(),
        }),
        Err(Stop::Provider(e)) => Err(ActionError::Destroy {
            id: id.to_owned(),
            detail: chain(&e),
        }),
    }
}

/// Runs the flavor's drain command for instance `id`, rendered as the instance was made: at
/// its own version (`from_hash`), with its own ports (from its tags). A drain that cannot
/// be rendered or fails does not keep the instance alive: it is stopped anyway.
async fn run_drain_command(
    ctx: &Context,
    provider: &dyn Provider,
    group: Option<&Group>,
    action: &Action,
    id: &str,
) {
    let own = action
        .from_hash
        .as_ref()
        .and_then(|h| ctx.catalog.group(&action.group, Some(h)));
    let Some(group) = own
        .as_ref()
        .or(group)
        .filter(|g| g.flavor.drain.as_ref().is_some_and(|d| d.command.is_some()))
    else {
        return;
    };
    let spec = ctx.catalog.spec();
    let ports = if group.flavor.port_names().is_empty() {
        Vec::new()
    } else {
        let selector = Selector {
            project: spec.project.clone(),
        };
        provider
            .describe(&selector)
            .await
            .ok()
            .and_then(|found| found.into_iter().find(|i| i.id == id))
            .map(|i| i.tags.ports)
            .unwrap_or_default()
    };
    let empty = Observed::new(&spec.project);
    let Ok(rendered) = render_instance(
        &spec.project,
        group,
        &crate::spec::SpecHash::of(group),
        &action.slot,
        &ports,
        &empty,
        ctx.secret.as_ref(),
    ) else {
        return;
    };
    if let Some(command) = rendered.drain {
        let timeout = group
            .flavor
            .drain
            .as_ref()
            .map(|d| d.timeout.to_std())
            .unwrap_or_default();
        let _ = crate::health::probe(&RenderedProbe::Exec { command }, timeout).await;
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
    ctx: &Context,
    provider: &dyn Provider,
    group: &Group,
    action: &Action,
) -> Outcome {
    let spec = ctx.catalog.spec();
    let project = &spec.project;
    let observed = if group.reads_groups.is_empty() {
        Observed::new(project)
    } else {
        observe(spec, &[], &ctx.providers)
            .await
            .map_err(|e| ActionError::Provision(chain(&e)))?
    };
    let names = group.flavor.port_names();
    let ports = if names.is_empty() {
        Vec::new()
    } else {
        ctx.ports
            .lock()
            .map_err(|_| ActionError::Panicked("the port allocator was poisoned".into()))?
            .allocate(&names)?
    };
    let hash = ctx.catalog.hash_of(&group.name, action.hash.as_ref());
    let mut rendered = render_instance(
        project,
        group,
        &hash,
        &action.slot,
        &ports,
        &observed,
        ctx.secret.as_ref(),
    )?;
    // A rollout that failed while this action waited (or retried) makes no more of its
    // version: every attempt checks first.
    let halted = || ctx.halted(action);
    let id = retry(ctx.options.attempts, || async {
        match halted() {
            Some(hash) => Err(Stop::Halted(hash)),
            None => ctx
                .limited(provider.provision(rendered.request.clone()))
                .await
                .map_err(Stop::Provider),
        }
    })
    .await
    .map_err(|e| match e {
        Stop::Halted(hash) => ActionError::Halted(hash),
        Stop::Provider(e) => ActionError::Provision(chain(&e)),
        Stop::Lost(id) => ActionError::Provision(format!("{id} is gone")),
    })?;
    // The grace period and the health timeout run from the instance's start, not from the
    // provider call: a slow provider eats none of them.
    let started = Instant::now();
    let mut reachable: std::collections::BTreeMap<String, u16> = ports.iter().cloned().collect();
    if !ports.is_empty() && provider.publishes_ports() {
        let selector = Selector {
            project: project.clone(),
        };
        if let Ok(found) = provider.describe(&selector).await {
            if let Some(made) = found.iter().find(|i| i.id == id) {
                rendered.reach(group, &made.ports);
                reachable.clone_from(&made.ports);
            }
        }
    }
    gate(
        ctx, provider, group, action, id, &rendered, &reachable, started,
    )
    .await
}

/// The health gate of an instance just started (`started`): it must turn healthy within
/// the health timeout, joins its balancer's rotation when it does, and on a rolling
/// replace must stay healthy for `min_ready`. A failed surge instance is removed again.
#[allow(clippy::too_many_arguments)]
async fn gate(
    ctx: &Context,
    provider: &dyn Provider,
    group: &Group,
    action: &Action,
    id: String,
    rendered: &RenderedInstance,
    reachable: &std::collections::BTreeMap<String, u16>,
    started: Instant,
) -> Outcome {
    let project = &ctx.catalog.spec().project;
    let (health_timeout, min_ready) = match (&group.update, action.action) {
        (UpdatePolicy::Rolling(r), ActionKind::Replace) => {
            (r.health_timeout.to_std(), r.min_ready.to_std())
        }
        _ => (ctx.options.health_timeout, Duration::ZERO),
    };
    if rendered.probe.is_some() {
        (ctx.events)(crate::reconcile::Event::WaitingOnHealth {
            action: action.clone(),
            instance: id.clone(),
        });
    }
    let healthy = wait_until_healthy(
        provider,
        project,
        group,
        &rendered.probe,
        &id,
        started,
        health_timeout,
    )
    .await;
    // Healthy: it joins its balancer's rotation, so `min_ready` watches it under traffic.
    if healthy.is_ok() {
        ctx.balancers.admit(
            &group.name,
            &id,
            rendered.request.address.as_deref(),
            reachable,
        );
    }
    let ready = match healthy {
        Ok(()) if !min_ready.is_zero() => {
            tokio::time::sleep(min_ready).await;
            stays_healthy(provider, project, &rendered.probe, &id, group).await
        }
        other => other,
    };
    if let Err(why) = ready {
        // A failed surge instance goes again, drained first; one made in place stays, and
        // its checks take it out of rotation.
        if action.surge {
            ctx.balancers.drain(&group.name, &id).await;
            let _ = ctx.limited(provider.destroy(&id)).await;
        }
        return Err(ActionError::NotHealthy { id, why });
    }
    let checked = rendered.probe.as_ref().map(|p| match p {
        RenderedProbe::Http { address, path } => format!("answers http://{address}{path}"),
        RenderedProbe::Tcp { address } => format!("accepts TCP on {address}"),
        RenderedProbe::Exec { .. } => "passes its exec check".to_owned(),
    });
    Ok(Done {
        instance: Some(id),
        checked,
        in_place: false,
    })
}

async fn wait_until_healthy(
    provider: &dyn Provider,
    project: &str,
    group: &Group,
    rendered: &Option<RenderedProbe>,
    id: &str,
    started: Instant,
    timeout: Duration,
) -> Result<(), String> {
    match (rendered, &group.flavor.health) {
        (Some(p), Some(health)) => {
            let probe_timeout = health.timeout.to_std();
            // A port of the instance's own reaches it alone; any other address may be
            // answered by another instance, so a pass there counts only when none has it.
            let reaches_it_alone = provider.probes_by_id()
                || matches!(
                    group.flavor.health.as_ref().map(|h| &h.probe),
                    Some(Probe::Http {
                        port: PortValue::Named(_),
                        ..
                    }) | Some(Probe::Tcp {
                        port: PortValue::Named(_)
                    })
                );
            let check = || async move {
                probe_instance(provider, id, p, probe_timeout).await?;
                if reaches_it_alone {
                    return Ok(());
                }
                match address_holder(provider, project, &group.name, id, p).await {
                    Some((other, address)) => Err(ProbeError::Ambiguous(format!(
                        "{address} is also instance {other}'s address, so a probe there cannot tell them apart: give each instance a port of its own (ports = [\"http\"] and http(port = \"http\"))"
                    ))),
                    None => Ok(()),
                }
            };
            let alive = || is_live(provider, project, id);
            wait_healthy(health, started, started + timeout, check, alive)
                .await
                .map_err(|e| e.to_string())
        }
        _ => {
            // No health check: alive shortly after start is as healthy as it gets.
            tokio::time::sleep(Duration::from_millis(50)).await;
            if is_live(provider, project, id).await {
                Ok(())
            } else {
                Err("exited right after it started".to_owned())
            }
        }
    }
}

/// Another live instance of `group` whose address is where `probe` goes, if any, and the
/// address.
async fn address_holder(
    provider: &dyn Provider,
    project: &str,
    group: &str,
    id: &str,
    probe: &RenderedProbe,
) -> Option<(String, String)> {
    let (RenderedProbe::Http { address, .. } | RenderedProbe::Tcp { address }) = probe else {
        return None;
    };
    let selector = Selector {
        project: project.to_owned(),
    };
    let found = provider.describe(&selector).await.ok()?;
    found
        .into_iter()
        .find(|i| {
            i.id != id
                && i.tags.group == group
                && i.state.is_live()
                && i.address.as_deref() == Some(address)
        })
        .map(|i| (i.id, address.clone()))
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
        (Some(p), Some(h)) => probe_instance(provider, id, p, h.timeout.to_std())
            .await
            .map_err(|e| format!("turned unhealthy before min_ready passed: {e}")),
        _ => Ok(()),
    }
}
