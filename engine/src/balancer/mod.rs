//! The built-in L4 balancer: `expose = balancer(...)` on a group makes `tend run` accept TCP
//! connections on one address and spread them over the group's live, healthy instances.
//!
//! A new instance joins the rotation when its action saw it healthy, or when a round sees
//! it serving; one judged unhealthy or gone leaves at the next round; one being replaced or
//! scaled down is drained first: out of rotation, then its open connections get the drain
//! timeout before the provider stops it. Without a controller (`tend apply` alone) nothing
//! is exposed and every call here does nothing.

mod pool;
mod proxy;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;

use crate::provider::{InstanceState, Observed};
use crate::spec::{Expose, Spec};

pub use pool::{Pool, Seen};

struct Served {
    pool: Arc<Pool>,
    task: Option<JoinHandle<()>>,
    problem: Option<String>,
    /// No group is exposed here any more: it listens no longer, and goes once nothing
    /// open is left.
    retired: bool,
}

impl Served {
    fn stop_listening(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        self.stop_listening();
    }
}

/// The balancers of one controller, by group; cheap to clone, shared with running actions.
#[derive(Clone, Default)]
pub struct Balancers {
    served: Arc<Mutex<BTreeMap<String, Served>>>,
}

/// How one balancer is doing, for status and metrics.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BalancerStatus {
    /// The group behind it.
    pub group: String,
    /// Where it listens.
    pub listen: String,
    /// Whether it listens now.
    pub listening: bool,
    /// Why it does not listen, when it does not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
    /// Instances in rotation.
    pub in_rotation: Vec<String>,
    /// Open connections by instance (in rotation or draining).
    pub open: BTreeMap<String, usize>,
}

/// Where the balancer of `expose` reaches an instance with `address` and `ports`.
fn target(
    expose: &Expose,
    address: Option<&str>,
    ports: &BTreeMap<String, u16>,
) -> Option<SocketAddr> {
    match &expose.target {
        Some(name) => ports
            .get(name)
            .map(|p| SocketAddr::from(([127, 0, 0, 1], *p))),
        None => address?.parse().ok(),
    }
}

impl std::fmt::Debug for Balancers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.lock().keys()).finish()
    }
}

impl Balancers {
    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, Served>> {
        self.served.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn pool(&self, group: &str) -> Option<Arc<Pool>> {
        self.lock().get(group).map(|s| s.pool.clone())
    }

    /// Serves the balancers `spec` asks for: listens on new addresses, takes new settings
    /// without closing anything, stops listening where no group is exposed any more (its
    /// rotation stays, so what is open drains as its instances go), and tries again to
    /// listen where it could not before. Returns what changed, or could not, for the
    /// journal.
    pub fn serve(&self, spec: &Spec) -> Vec<String> {
        let wanted: BTreeMap<&str, &Expose> = spec
            .groups
            .iter()
            .filter_map(|g| g.expose.as_ref().map(|e| (g.name.as_str(), e)))
            .collect();
        let mut said = Vec::new();
        let mut served = self.lock();
        for (group, s) in served.iter_mut() {
            if !wanted.contains_key(group.as_str()) && !s.retired {
                s.stop_listening();
                s.retired = true;
                said.push(format!(
                    "balancer of {group} on {} stopped; open connections drain as its instances go",
                    s.pool.expose().listen
                ));
            }
        }
        for (group, expose) in wanted {
            let s = served.entry(group.to_owned()).or_insert_with(|| Served {
                pool: Arc::new(Pool::new(expose.clone())),
                task: None,
                problem: None,
                retired: false,
            });
            let before = s.pool.expose();
            if before.listen != expose.listen || s.retired {
                s.stop_listening();
                s.retired = false;
            } else if before != *expose {
                said.push(format!(
                    "balancer of {group} on {} takes new settings",
                    expose.listen
                ));
            }
            s.pool.set_expose(expose.clone());
            if s.task.is_some() {
                continue;
            }
            match proxy::bind(&expose.listen) {
                Ok(listener) => {
                    said.push(format!(
                        "balancer of {group} listening on {}",
                        expose.listen
                    ));
                    s.task = Some(tokio::spawn(proxy::serve(listener, s.pool.clone())));
                    s.problem = None;
                }
                Err(e) => {
                    let problem = format!("cannot listen on {}: {e}", expose.listen);
                    if s.problem.as_deref() != Some(problem.as_str()) {
                        said.push(format!("balancer of {group}: {problem}"));
                    }
                    s.problem = Some(problem);
                }
            }
        }
        said
    }

    /// Stops every balancer.
    pub fn shutdown(&self) {
        self.lock().clear();
    }

    /// Brings every rotation in line with a round: `serving` are the instances judged
    /// healthy (or without checks) in `observed`. A provider that could not be observed
    /// empties no rotation: its instances stay until a round sees them gone.
    pub fn sync(&self, observed: &Observed, serving: &BTreeSet<String>) {
        let complete = observed.unobserved.is_empty();
        self.lock().retain(|group, s| {
            !s.retired
                || !s.pool.idle()
                || !complete
                || observed
                    .iter()
                    .any(|(_, i)| i.tags.group == *group && i.state.is_live())
        });
        let pools: Vec<(String, Arc<Pool>)> = self
            .lock()
            .iter()
            .map(|(g, s)| (g.clone(), s.pool.clone()))
            .collect();
        for (group, pool) in pools {
            let expose = pool.expose();
            let seen: Vec<Seen> = observed
                .iter()
                .filter(|(_, i)| i.tags.group == group && i.state.is_live())
                .map(|(_, i)| Seen {
                    id: i.id.clone(),
                    address: target(&expose, i.address.as_deref(), &i.ports),
                    serving: i.state == InstanceState::Running && serving.contains(&i.id),
                    fine: i.state != InstanceState::Unhealthy,
                })
                .collect();
            pool.sync(&seen, complete);
        }
    }

    /// Puts a new instance of `group` in rotation: its action saw it healthy.
    pub fn admit(
        &self,
        group: &str,
        id: &str,
        address: Option<&str>,
        ports: &BTreeMap<String, u16>,
    ) {
        if let Some(pool) = self.pool(group) {
            if let Some(at) = target(&pool.expose(), address, ports) {
                pool.admit(id, at);
            }
        }
    }

    /// Takes instance `id` of `group` out of rotation and waits until its open connections
    /// ended, at most the balancer's drain timeout.
    pub async fn drain(&self, group: &str, id: &str) {
        if let Some(pool) = self.pool(group) {
            pool.drain(id).await;
        }
    }

    /// Lets `id` back into rotation: it was not stopped after all.
    pub fn undrain(&self, group: &str, id: &str) {
        if let Some(pool) = self.pool(group) {
            pool.undrain(id);
        }
    }

    /// How every balancer is doing.
    pub fn status(&self) -> Vec<BalancerStatus> {
        self.lock()
            .iter()
            .filter(|(_, s)| !s.retired)
            .map(|(group, s)| BalancerStatus {
                group: group.clone(),
                listen: s.pool.expose().listen,
                listening: s.task.is_some(),
                problem: s.problem.clone(),
                in_rotation: s.pool.in_rotation(),
                open: s.pool.open(),
            })
            .collect()
    }
}
