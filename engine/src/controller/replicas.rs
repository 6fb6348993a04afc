//! Replicated controllers: any number of `tend run --store etcd://...` keep one project.
//!
//! Each replica opens a session (a lease it keeps alive), announces itself under
//! `members/`, and campaigns. While it waits it is a warm standby: it watches the spec,
//! looks at the instances every resync and serves `/status` with the leader's identity,
//! but never acts. Once elected (and the election checked), it reads the intents the last
//! leader left, builds a controller whose provider calls pass the leadership's fence, and
//! keeps the project until it is stopped or its leadership can no longer be confirmed;
//! then it stands by again on a new session.

use std::sync::Arc;
use std::time::Duration;

use crate::clock::Clock;
use crate::exec::SecretSource;
use crate::provider::fenced;
use crate::provider::ProviderSet;
use crate::spec::Spec;
use crate::status::Replicas;
use crate::store::etcd::{EtcdStore, Leadership, Member, Session};
use crate::store::{Store, StoreError};

use super::journal::Journal;
use super::{http, Controller, ControllerError, Options};

/// How a replica campaigns.
#[derive(Clone, Copy, Debug)]
pub struct Election {
    /// The TTL of the lease it campaigns on.
    pub ttl: Duration,
    /// How often the lease is kept alive.
    pub keep_alive: Duration,
}

/// Who leads and who stands by, for `tend status` and `/status`: `None` for a local store.
pub fn shown(store: &Store) -> Result<Option<Replicas>, StoreError> {
    let Some(etcd) = store.remote() else {
        return Ok(None);
    };
    let mut members = etcd.members()?;
    members.sort_by(|a, b| (!a.leading, &a.host, a.pid).cmp(&(!b.leading, &b.host, b.pid)));
    Ok(Some(Replicas {
        leader: etcd.leader()?,
        members,
    }))
}

/// One replica of a replicated controller.
pub struct Replica {
    /// The store (in etcd).
    pub store: Store,
    /// The spec this replica was started with: committed when the store has none.
    pub spec: Spec,
    /// The providers, unfenced (the replica fences them while it leads).
    pub providers: ProviderSet,
    /// Secrets, for the instances it makes.
    pub secret: SecretSource,
    /// The clock.
    pub clock: Clock,
    /// Its events.
    pub journal: Arc<Journal>,
    /// What its HTTP endpoint serves, across leaderships.
    pub endpoint: http::Endpoint,
    /// How it campaigns.
    pub election: Election,
    /// Who it is.
    pub member: Member,
    /// How often a standby looks (the controller's `resync`).
    pub resync: Duration,
    /// The controller's options for each leadership (made when it leads: with `--watch`,
    /// a file watcher among them).
    pub options: Box<dyn Fn() -> Options + Send + Sync>,
}

impl Replica {
    fn etcd(&self) -> Result<Arc<EtcdStore>, ControllerError> {
        self.store.remote().cloned().ok_or_else(|| {
            ControllerError::Store(StoreError::Etcd {
                endpoints: String::new(),
                detail: "a replicated controller needs an etcd store".to_owned(),
            })
        })
    }

    /// Stands by and leads, in turn, until `stop` turns true.
    pub async fn run(
        self,
        stop: tokio::sync::watch::Receiver<bool>,
    ) -> Result<(), ControllerError> {
        let etcd = self.etcd()?;
        etcd.watch_spec();
        let resync = self.resync;
        loop {
            self.journal.role(false);
            if *stop.borrow() {
                return Ok(());
            }
            let session = match etcd
                .session(self.election.ttl, self.election.keep_alive)
                .await
            {
                Ok(session) => session,
                Err(e) => {
                    self.say(format!("cannot open a session: {e}; trying again"));
                    if wait_or_stop(&stop, Duration::from_secs(1)).await {
                        return Ok(());
                    }
                    continue;
                }
            };
            let Some(leadership) = self.stand_by(&etcd, session.clone(), &stop, resync).await
            else {
                // Its key leaves the election queue now, not when its lease runs out.
                etcd.end_session(&session).await;
                if *stop.borrow() {
                    return Ok(());
                }
                continue;
            };
            let leadership = Arc::new(leadership);
            let stopped = match self.lead(&etcd, leadership.clone(), &stop).await {
                Ok(stopped) => stopped,
                // A newer tend wrote the store since this replica started: it reads
                // nothing of it and writes nothing more to it. Campaigning again would
                // only win and refuse again, so the replica ends, and says why.
                Err(ControllerError::Store(StoreError::NewerFormat(newer)))
                | Err(ControllerError::Reconcile(crate::reconcile::ReconcileError::Store(
                    StoreError::NewerFormat(newer),
                ))) => {
                    self.say(format!("stopping: {newer}"));
                    leadership.resign().await;
                    etcd.end_session(&session).await;
                    return Err(ControllerError::Store(StoreError::NewerFormat(newer)));
                }
                // The store failing (etcd unreachable, this leader deposed) ends this
                // leadership, not the replica: it steps down and stands by again.
                Err(ControllerError::Store(e))
                | Err(ControllerError::Reconcile(crate::reconcile::ReconcileError::Store(e))) => {
                    self.say(format!("stepping down: the store failed: {e}"));
                    leadership.resign().await;
                    etcd.end_session(&session).await;
                    if wait_or_stop(&stop, Duration::from_secs(1)).await {
                        return Ok(());
                    }
                    continue;
                }
                Err(e) => return Err(e),
            };
            if stopped {
                leadership.resign().await;
                etcd.end_session(&session).await;
                self.say("stepped down: stopped".to_owned());
                return Ok(());
            }
            self.say(format!(
                "lost the lead (leadership not confirmed for {:.1}s); standing by",
                leadership.session().fence_after().as_secs_f64()
            ));
            // Its key and its `members/` entry (still saying it leads) go now, not when the
            // lease runs out.
            leadership.resign().await;
            etcd.end_session(&session).await;
        }
    }

    fn say(&self, message: String) {
        self.journal.event("leader", "", "", message);
    }

    /// Campaigns; meanwhile looks every `resync` and serves what it sees. `None` when
    /// stopped, or when the session was lost or the election did not hold.
    async fn stand_by(
        &self,
        etcd: &Arc<EtcdStore>,
        session: Arc<Session>,
        stop: &tokio::sync::watch::Receiver<bool>,
        resync: Duration,
    ) -> Option<Leadership> {
        let mut stop = stop.clone();
        let campaign = etcd.campaign(session.clone(), &self.member);
        tokio::pin!(campaign);
        let mut said_leader = None;
        loop {
            // The look runs beside the campaign: a standby that wins acts at once, whatever
            // its look was doing.
            let look = async {
                let serial = self.observe().await;
                let mut me = self.member.clone();
                me.serial = serial;
                let _ = etcd.announce(&session, &me).await;
                let leader = etcd.leader().ok().flatten();
                tokio::time::sleep(resync).await;
                leader
            };
            tokio::select! {
                won = &mut campaign => match won {
                    Ok(leadership) => return Some(leadership),
                    Err(e) => {
                        self.say(format!("the election did not hold: {e}"));
                        return None;
                    }
                },
                _ = crate::reconcile::stopped(&mut stop) => return None,
                _ = session.lost() => {
                    self.say("the session's lease ended; opening a new one".to_owned());
                    return None;
                }
                leader = look => {
                    let name = leader.as_ref().map(ToString::to_string);
                    if name != said_leader && leader.as_ref() != Some(&self.leading()) {
                        match &name {
                            Some(l) => self.say(format!("standing by; the leader is {l}")),
                            None => self.say("standing by; nobody leads yet".to_owned()),
                        }
                        said_leader = name;
                    }
                }
            }
        }
    }

    fn leading(&self) -> Member {
        let mut me = self.member.clone();
        me.leading = true;
        me
    }

    /// A standby's look: the spec in the store, the instances, their health; what
    /// `/status` serves. Returns the serial seen.
    async fn observe(&self) -> u64 {
        let looked_at = self.clock.epoch_ms();
        let applied = self.store.last_applied().ok().flatten();
        let spec = applied
            .as_ref()
            .map(|a| a.spec.clone())
            .unwrap_or_else(|| self.spec.clone());
        let failed = self.store.failed_rollouts().unwrap_or_default();
        let look = crate::reconcile::preview(
            &spec,
            &[],
            failed.clone(),
            &self.providers,
            &self.secret,
            &self.clock,
        )
        .await;
        if let Ok(look) = look {
            let mut status = crate::status::build(&spec, &look.observed, applied.as_ref(), &|id| {
                look.health.get(id).cloned()
            });
            status.observed_at_ms = Some(looked_at);
            status.note_failed_rollouts(&failed);
            if let Some(report) = super::report::read(&self.store) {
                report.annotate(&mut status);
            }
            status.replicas = shown(&self.store).ok().flatten();
            if let Ok(mut shown) = self.endpoint.status.lock() {
                *shown = Some(Arc::new(status));
            }
        }
        applied.map_or(0, |a| a.serial)
    }

    /// Leads until stopped (true) or until leadership is lost (false).
    async fn lead(
        &self,
        etcd: &Arc<EtcdStore>,
        leadership: Arc<Leadership>,
        stop: &tokio::sync::watch::Receiver<bool>,
    ) -> Result<bool, ControllerError> {
        self.say(format!(
            "leading (fencing token {}); describing before acting",
            leadership.token()
        ));
        let left = etcd.intents().unwrap_or_default();
        for (op, intent) in &left {
            let what = match intent.action.as_str() {
                "create" => format!("create {}/{}", intent.group, intent.slot),
                _ => format!("destroy {}", intent.instance),
            };
            self.say(format!(
                "the last leader (token {}) left intent {op}: {what}; the first look adopts what it made, and the plan reaps what is twice in a slot",
                intent.epoch
            ));
        }
        let applied = match self.store.last_applied() {
            Ok(Some(a)) => a,
            Ok(None) => match self.store.commit(&self.spec) {
                Ok(a) => a,
                Err(StoreError::NewerFormat(newer)) => {
                    return Err(ControllerError::Store(StoreError::NewerFormat(newer)))
                }
                Err(e) => {
                    self.say(format!("cannot commit the spec: {e}"));
                    // Not at once: the next leader would meet the same store.
                    return Ok(wait_or_stop(stop, Duration::from_secs(1)).await);
                }
            },
            Err(StoreError::NewerFormat(newer)) => {
                return Err(ControllerError::Store(StoreError::NewerFormat(newer)))
            }
            Err(e) => {
                self.say(format!("cannot read the spec: {e}"));
                // Not at once: a damaged store answers the next leader the same.
                return Ok(wait_or_stop(stop, Duration::from_secs(1)).await);
            }
        };
        let announcer = announce_while_leading(etcd.clone(), leadership.clone(), self.leading());
        let providers = fenced::fence(&self.providers, leadership.clone());
        let mut options = (self.options)();
        options.endpoint = Some(self.endpoint.clone());
        let controller = Controller::new(
            applied.spec,
            applied.serial,
            self.store.clone(),
            providers,
            self.secret.clone(),
            self.clock,
            self.journal.clone(),
            options,
        );
        let controller = match controller {
            Ok(c) => c,
            Err(e) => {
                announcer.abort();
                return Err(e);
            }
        };
        // The intents are read; what they name is judged by the first look from the tags.
        if !left.is_empty() {
            let _ = etcd.clear_intents();
        }
        let (quit, quit_rx) = tokio::sync::watch::channel(false);
        let mut outer = stop.clone();
        let watcher = {
            let leadership = leadership.clone();
            tokio::spawn(async move {
                tokio::select! {
                    _ = crate::reconcile::stopped(&mut outer) => {}
                    _ = leadership.lost() => {}
                }
                let _ = quit.send(true);
            })
        };
        let ran = controller.run(quit_rx).await;
        watcher.abort();
        announcer.abort();
        ran?;
        Ok(*stop.borrow())
    }
}

/// Keeps the leader's entry under `members/` saying the newest serial it has seen.
fn announce_while_leading(
    etcd: Arc<EtcdStore>,
    leadership: Arc<Leadership>,
    me: Member,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut said = None;
        loop {
            let serial = etcd.spec_mark();
            if said != Some(serial) {
                let mut member = me.clone();
                member.serial = serial;
                if etcd.announce(leadership.session(), &member).await.is_ok() {
                    said = Some(serial);
                }
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    })
}

/// Sleeps `wait`; true when `stop` turned true meanwhile.
async fn wait_or_stop(stop: &tokio::sync::watch::Receiver<bool>, wait: Duration) -> bool {
    let mut stop = stop.clone();
    tokio::select! {
        _ = crate::reconcile::stopped(&mut stop) => true,
        _ = tokio::time::sleep(wait) => *stop.borrow(),
    }
}
