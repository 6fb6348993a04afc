//! Allocating instance ports: each new instance gets, for each port its flavor names, a port
//! of the range that no live instance of the project holds, that no instance was given
//! lately, and that nothing on the machine has bound.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use crate::provider::Observed;
use crate::spec::{PortRange, PortValue, Probe, Spec};

/// How long a port given to an instance is not given again, when no live instance shows it
/// (the instance may not be visible yet, or may still be stopping).
const ISSUED_FOR: Duration = Duration::from_secs(600);

/// Why no port could be allocated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("no free port left in {range} for port {name:?}: widen the range (project(ports = \"FIRST-LAST\") or --ports)")]
pub struct NoFreePort {
    /// The range searched.
    pub range: PortRange,
    /// The port that could not be given.
    pub name: String,
}

/// The ports of one project's instances, shared by every action of a reconciler.
#[derive(Debug)]
pub struct PortAllocator {
    range: PortRange,
    next: u16,
    in_use: BTreeSet<u16>,
    issued: BTreeMap<u16, Instant>,
}

/// The ports a spec names as numbers: health check ports, balancer ports, and host ports a
/// container is published on.
fn fixed_ports(spec: &Spec) -> Vec<u16> {
    let mut fixed = Vec::new();
    for group in &spec.groups {
        if let Some(Probe::Http {
            port: PortValue::Number(n),
            ..
        })
        | Some(Probe::Tcp {
            port: PortValue::Number(n),
        }) = group.flavor.health.as_ref().map(|h| &h.probe)
        {
            fixed.push(*n);
        }
        if let Some(expose) = group.expose.as_ref() {
            fixed.extend(
                expose
                    .listen
                    .parse::<std::net::SocketAddr>()
                    .ok()
                    .map(|a| a.port()),
            );
        }
        let published = group
            .provider
            .props
            .get("ports")
            .and_then(|p| p.as_object());
        for outside in published.into_iter().flat_map(|m| m.values()) {
            if let Some(n) = outside.as_u64().and_then(|n| u16::try_from(n).ok()) {
                fixed.push(n);
            }
        }
    }
    fixed
}

/// A port allocator shared by running actions.
pub type SharedPorts = Arc<Mutex<PortAllocator>>;

impl Default for PortAllocator {
    fn default() -> Self {
        PortAllocator::new(PortRange::default())
    }
}

impl PortAllocator {
    /// An allocator over `range`, starting at a place that differs between processes so two
    /// projects on one machine do not race for the same first ports.
    pub fn new(range: PortRange) -> PortAllocator {
        let span = u32::from(range.last - range.first) + 1;
        let offset = (std::process::id().wrapping_mul(7919)) % span;
        PortAllocator {
            range,
            next: range.first + offset as u16,
            in_use: BTreeSet::new(),
            issued: BTreeMap::new(),
        }
    }

    /// Allocates from `range` from now on.
    pub fn set_range(&mut self, range: PortRange) {
        if range != self.range {
            *self = PortAllocator {
                in_use: std::mem::take(&mut self.in_use),
                issued: std::mem::take(&mut self.issued),
                ..PortAllocator::new(range)
            };
        }
    }

    /// Takes in the ports in use: those the instances of `observed` hold (live ones, and
    /// dead ones that left processes running: as tagged, as reached, and the port of their
    /// address), and the fixed ports `spec` names (health checks, balancers, published ports).
    pub fn note_in_use(&mut self, observed: &Observed, spec: &Spec) {
        let address_port = |a: &Option<String>| {
            a.as_deref()
                .and_then(|a| a.rsplit_once(':'))
                .and_then(|(_, p)| p.parse::<u16>().ok())
        };
        self.in_use.clear();
        for (_, i) in observed.iter() {
            if !i.state.is_live() && i.remains == 0 {
                continue;
            }
            self.in_use.extend(i.tags.ports.iter().map(|(_, p)| *p));
            self.in_use.extend(i.ports.values().copied());
            self.in_use.extend(address_port(&i.address));
        }
        self.in_use.extend(fixed_ports(spec));
        let now = Instant::now();
        self.issued
            .retain(|_, at| now.saturating_duration_since(*at) < ISSUED_FOR);
    }

    /// A port for each of `names`, in order.
    pub fn allocate(&mut self, names: &[String]) -> Result<Vec<(String, u16)>, NoFreePort> {
        let mut given = Vec::with_capacity(names.len());
        for name in names {
            let port = self.one().ok_or_else(|| NoFreePort {
                range: self.range,
                name: name.clone(),
            })?;
            given.push((name.clone(), port));
        }
        Ok(given)
    }

    fn one(&mut self) -> Option<u16> {
        let span = u32::from(self.range.last - self.range.first) + 1;
        for _ in 0..span {
            let port = self.next;
            self.next = if port >= self.range.last {
                self.range.first
            } else {
                port + 1
            };
            if self.in_use.contains(&port) || self.issued.contains_key(&port) {
                continue;
            }
            if std::net::TcpListener::bind(("127.0.0.1", port)).is_err() {
                continue;
            }
            self.issued.insert(port, Instant::now());
            return Some(port);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("p{i}")).collect()
    }

    /// A port of the machine that this test holds bound, and a range of that one port.
    fn held_port() -> (std::net::TcpListener, PortRange) {
        let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
        let port = held
            .local_addr()
            .map(|a| a.port())
            .unwrap_or_else(|e| panic!("{e}"));
        (
            held,
            PortRange {
                first: port,
                last: port,
            },
        )
    }

    #[test]
    fn never_gives_a_port_twice_nor_one_in_use() {
        let (held, range) = held_port();
        let mut ports = PortAllocator::new(range);
        let none = Err(NoFreePort {
            range,
            name: "p0".into(),
        });
        assert_eq!(
            ports.allocate(&names(1)),
            none,
            "a port bound on the machine is never given"
        );
        drop(held);
        assert_eq!(
            ports.allocate(&names(1)),
            Ok(vec![("p0".to_owned(), range.first)])
        );
        assert_eq!(
            ports.allocate(&names(1)),
            none,
            "a port given is not given again"
        );
    }

    #[test]
    fn never_gives_a_port_the_spec_or_a_live_address_uses() {
        use crate::provider::{InstanceState, InstanceTags, ObservedInstance};
        use crate::spec::{Allocation, Flavor, Group, Health, ProviderSpec};
        // Two ports next to each other that nothing here binds: one the spec fixes, one a
        // live instance's address has; the range is just those two.
        let (held, one) = held_port();
        drop(held);
        let (fixed_port, address_port) = match one.first.checked_add(1) {
            Some(next) => (one.first, next),
            None => (one.first - 1, one.first),
        };
        let range = PortRange {
            first: fixed_port,
            last: address_port,
        };
        let fixed = Group {
            name: "fixed".into(),
            allocation: Allocation::Size(1),
            provider: ProviderSpec {
                kind: "process".into(),
                props: Default::default(),
            },
            flavor: Flavor {
                health: Some(Health {
                    probe: Probe::Tcp {
                        port: PortValue::Number(fixed_port),
                    },
                    grace_period: crate::spec::Duration::from_secs(1),
                    interval: crate::spec::Duration::from_secs(1),
                    timeout: crate::spec::Duration::from_secs(1),
                    failures: 1,
                }),
                ..Flavor::default()
            },
            depends_on: Vec::new(),
            reads_groups: Vec::new(),
            update: Default::default(),
            expose: Some(crate::spec::Expose {
                listen: "127.0.0.1:8400".into(),
                target: None,
                strategy: crate::spec::Strategy::RoundRobin,
                drain_timeout: crate::spec::Duration::from_secs(1),
            }),
            origin: None,
        };
        assert_eq!(
            fixed_ports(&Spec {
                project: "p".into(),
                ports: None,
                groups: vec![fixed.clone()],
            }),
            [fixed_port, 8400],
            "health and balancer ports"
        );
        let spec = Spec {
            project: "p".into(),
            ports: None,
            groups: vec![fixed],
        };
        let mut observed = Observed::new("p");
        observed.add(
            "process",
            vec![ObservedInstance {
                id: "1-1".into(),
                tags: InstanceTags {
                    project: "p".into(),
                    group: "other".into(),
                    slot: "0".into(),
                    hash: "h".into(),
                    ports: Vec::new(),
                    format: crate::format::INSTANCE,
                },
                labels: Default::default(),
                address: Some(format!("127.0.0.1:{address_port}")),
                ports: Default::default(),
                state: InstanceState::Running,
                started_at: 0,
                ended: None,
                remains: 0,
            }],
        );
        let mut ports = PortAllocator::new(range);
        ports.note_in_use(&observed, &spec);
        assert_eq!(
            ports.allocate(&names(1)),
            Err(NoFreePort {
                range,
                name: "p0".into()
            })
        );
    }
}
