//! Leadership: a session (a lease this process keeps alive), etcd's election on it, and
//! the fence that stops a leader which can no longer be sure it leads.
//!
//! etcd does not keep a campaign's lease alive: the session does, sending a keep-alive
//! every `keep_alive` and remembering when the last acknowledged one was *sent* (an
//! acknowledgement proves the lease was alive then, not when it arrived). A leader acts
//! only while that moment is less than [`fence_after`] the TTL ago (7 s of 10 s), well inside the lease's
//! TTL: a leader that was paused, cut off, or whose lease ended stops calling providers
//! before anybody else can be elected. After `campaign` returns, the key is read back and
//! must carry the campaign's create revision and lease, and the lease must still live.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use etcd_client::{GetOptions, LeaderKey, ResignOptions};
use serde::{Deserialize, Serialize};

use super::{EtcdStore, Fence, Intent};
use crate::provider::fenced::{Gate, Intended};
use crate::store::{now_ms, StoreError};

/// How long after its last acknowledged keep-alive a leader stops calling providers, as a
/// share of its lease's TTL: 7 s at the default 10 s, well before any other replica can be
/// elected.
pub fn fence_after(ttl: Duration) -> Duration {
    ttl * 7 / 10
}

/// A replica as the election and `members/` show it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Member {
    /// The machine it runs on.
    pub host: String,
    /// Its process id there.
    pub pid: u32,
    /// `run`, or `apply` / `destroy` while one holds the project.
    pub command: String,
    /// Where it serves `/status`, if it does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listen: Option<String>,
    /// When it started, in milliseconds since the Unix epoch.
    pub since: u64,
    /// The newest spec serial it has seen.
    #[serde(default)]
    pub serial: u64,
    /// True while it leads.
    #[serde(default)]
    pub leading: bool,
}

impl Member {
    /// This process, running `command`.
    pub fn this_process(command: &str, listen: Option<String>) -> Member {
        Member {
            host: host_name(),
            pid: std::process::id(),
            command: command.to_owned(),
            listen,
            since: now_ms(),
            serial: 0,
            leading: false,
        }
    }
}

impl std::fmt::Display for Member {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "`tend {}` (pid {} on {}",
            self.command, self.pid, self.host
        )?;
        if let Some(listen) = &self.listen {
            write!(f, ", http://{listen}")?;
        }
        write!(f, ")")
    }
}

/// The machine's name, from the kernel.
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}

/// What the keep-alives of one lease tell, shared by its session and its keep-alive loop.
struct LeaseState {
    base: std::time::Instant,
    /// When (ms after `base`) the last acknowledged keep-alive was sent.
    acked: AtomicU64,
    /// Set when the lease is known gone, or went unconfirmed past the fence.
    lost: AtomicBool,
    /// Set when the session ends: the loop revokes the lease and stops.
    closed: AtomicBool,
    lost_signal: tokio::sync::Notify,
    fence_after: Duration,
}

impl LeaseState {
    fn since_ack(&self) -> Duration {
        self.base
            .elapsed()
            .saturating_sub(Duration::from_millis(self.acked.load(Ordering::Acquire)))
    }

    fn confirmed(&self) -> bool {
        !self.lost.load(Ordering::Acquire) && self.since_ack() < self.fence_after
    }

    fn closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    fn mark_lost(&self) {
        self.lost.store(true, Ordering::Release);
        self.lost_signal.notify_waiters();
    }
}

/// A lease this process keeps alive, and what the keep-alives tell.
pub struct Session {
    lease: i64,
    state: Arc<LeaseState>,
}

impl Session {
    /// The lease's id.
    pub fn lease(&self) -> i64 {
        self.lease
    }

    /// How long after the last acknowledged keep-alive this session stops being confirmed.
    pub fn fence_after(&self) -> Duration {
        self.state.fence_after
    }

    /// True while the lease was confirmed alive less than [`Session::fence_after`] ago.
    pub fn confirmed(&self) -> bool {
        self.state.confirmed()
    }

    /// Waits until the session is lost (its lease ended, or went unconfirmed too long).
    pub async fn lost(&self) {
        loop {
            let notified = self.state.lost_signal.notified();
            if !self.confirmed() {
                return;
            }
            tokio::select! {
                _ = notified => {}
                _ = tokio::time::sleep(Duration::from_millis(250)) => {}
            }
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.state.closed.store(true, Ordering::Release);
    }
}

/// This process leads: the leader key and its fencing token.
pub struct Leadership {
    store: Arc<EtcdStore>,
    session: Arc<Session>,
    key: LeaderKey,
    ops: AtomicU64,
    /// Set once it stepped down: nothing passes the gate after that.
    resigned: AtomicBool,
}

impl Leadership {
    /// The fencing token: the leader key's create revision.
    pub fn token(&self) -> i64 {
        self.key.rev()
    }

    /// True while this process may act: it has not stepped down, and its lease was
    /// confirmed recently enough.
    pub fn may_act(&self) -> bool {
        !self.resigned.load(Ordering::Acquire) && self.session.confirmed()
    }

    /// Waits until leadership can no longer be relied on.
    pub async fn lost(&self) {
        self.session.lost().await
    }

    /// Steps down: resigns, so a standby is elected at once, and stops fencing writes.
    pub async fn resign(&self) {
        self.resigned.store(true, Ordering::Release);
        let key = self.key.clone();
        let _ = self
            .store
            .call(key, |mut c, key| async move {
                c.resign(Some(ResignOptions::new().with_leader(key))).await
            })
            .await;
        if let Ok(mut fence) = self.store.fence.lock() {
            *fence = None;
        }
    }
}

#[async_trait]
impl Gate for Leadership {
    fn epoch(&self) -> i64 {
        self.token()
    }

    fn check(&self) -> Result<(), String> {
        if self.may_act() {
            Ok(())
        } else {
            Err(format!(
                "not acting: this controller's leadership was not confirmed in the last {:.1}s",
                self.session.fence_after().as_secs_f64()
            ))
        }
    }

    fn next_op(&self) -> String {
        format!(
            "{}-{}",
            self.token(),
            self.ops.fetch_add(1, Ordering::AcqRel)
        )
    }

    async fn intend(&self, op: &str, what: &Intended) -> Result<(), String> {
        self.check()?;
        let intent = Intent {
            action: what.action.to_owned(),
            group: what.group.clone(),
            slot: what.slot.clone(),
            instance: what.instance.clone(),
            epoch: self.token(),
            at_ms: now_ms(),
        };
        self.store
            .write_intent(op, &intent)
            .await
            .map_err(|e| e.to_string())?;
        // The write may have taken a while: check again right before the provider call.
        self.check()
    }

    async fn done(&self, op: &str) {
        let _ = self.store.clear_intent(op).await;
    }
}

impl EtcdStore {
    /// Starts a session: a lease of `ttl`, kept alive every `keep_alive` on the store's
    /// runtime until the session is dropped or lost.
    pub async fn session(
        &self,
        ttl: Duration,
        keep_alive: Duration,
    ) -> Result<Arc<Session>, StoreError> {
        let seconds = ttl.as_secs().max(2) as i64;
        // The lease's TTL starts when etcd grants it: the fence counts from before the ask.
        let base = std::time::Instant::now();
        let grant = self
            .call(seconds, |mut c, seconds| async move {
                c.lease_grant(seconds, None).await
            })
            .await?;
        let session = Arc::new(Session {
            lease: grant.id(),
            state: Arc::new(LeaseState {
                base,
                acked: AtomicU64::new(0),
                lost: AtomicBool::new(false),
                closed: AtomicBool::new(false),
                lost_signal: tokio::sync::Notify::new(),
                fence_after: fence_after(Duration::from_secs(seconds as u64)),
            }),
        });
        let keeper = KeepAlive {
            client: self.client.clone(),
            lease: session.lease,
            every: keep_alive.max(Duration::from_millis(100)),
            state: session.state.clone(),
        };
        self.handle.spawn(keeper.run());
        Ok(session)
    }

    /// Ends a session at once: its lease is revoked, and with it its election key and its
    /// `members/` entry (otherwise they stay until the lease runs out).
    pub async fn end_session(&self, session: &Session) {
        session.state.closed.store(true, Ordering::Release);
        let _ = self
            .call(session.lease, |mut c, lease| async move {
                c.lease_revoke(lease).await
            })
            .await;
    }

    /// Announces `member` under `members/`, on the session's lease: it disappears when the
    /// replica does.
    pub async fn announce(&self, session: &Session, member: &Member) -> Result<(), StoreError> {
        let key = self.key(&format!("members/{:x}", session.lease));
        let value = serde_json::to_vec(member).unwrap_or_default();
        let options = etcd_client::PutOptions::new().with_lease(session.lease);
        self.call(
            (key, value, options),
            |mut c, (key, value, options)| async move { c.put(key, value, Some(options)).await },
        )
        .await
        .map(|_| ())
    }

    /// The replicas that announced themselves and still live.
    pub fn members(&self) -> Result<Vec<Member>, StoreError> {
        let prefix = self.key("members/");
        let answer = self.block(prefix, |mut c, prefix| async move {
            c.get(prefix, Some(GetOptions::new().with_prefix())).await
        })?;
        Ok(answer
            .kvs()
            .iter()
            .filter_map(|kv| serde_json::from_slice(kv.value()).ok())
            .collect())
    }

    /// Who leads now, if anybody.
    pub fn leader(&self) -> Result<Option<Member>, StoreError> {
        let name = self.key("leader");
        let prefix = format!("{name}/");
        // The election's leader is the oldest key under its name.
        let answer = self.block(prefix, |mut c, prefix| async move {
            c.get(
                prefix,
                Some(
                    GetOptions::new()
                        .with_prefix()
                        .with_sort(
                            etcd_client::SortTarget::Create,
                            etcd_client::SortOrder::Ascend,
                        )
                        .with_limit(1),
                ),
            )
            .await
        })?;
        Ok(answer
            .kvs()
            .first()
            .and_then(|kv| serde_json::from_slice(kv.value()).ok()))
    }

    /// Campaigns with `session` until elected, then checks the election really holds:
    /// the key exists with the campaign's create revision and lease, and the lease lives.
    /// From then on every write of this store is fenced by the key.
    pub async fn campaign(
        self: &Arc<Self>,
        session: Arc<Session>,
        member: &Member,
    ) -> Result<Leadership, StoreError> {
        let name = self.key("leader");
        let mut leading = member.clone();
        leading.leading = true;
        let value = serde_json::to_vec(&leading).unwrap_or_default();
        let lease = session.lease;
        let mut client = self.client.clone();
        let mut task = AbortOnDrop(
            self.handle
                .spawn(async move { client.campaign(name, value, lease).await }),
        );
        let answer = match (&mut task.0).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(e)) => return Err(self.error(format!("campaign: {e}"))),
            Err(e) => return Err(self.error(format!("campaign: {e}"))),
        };
        let Some(key) = answer.leader().cloned() else {
            return Err(self.error("campaign returned no leader key"));
        };
        // The leader is the oldest key of the election: ours, with the campaign's create
        // revision and lease. A campaign can return before that holds (seen here while a
        // killed leader's key was still there): then this process does not lead.
        let oldest = self
            .call(self.key("leader/"), |mut c, prefix| async move {
                let options = GetOptions::new()
                    .with_prefix()
                    .with_sort(
                        etcd_client::SortTarget::Create,
                        etcd_client::SortOrder::Ascend,
                    )
                    .with_limit(1);
                c.get(prefix, Some(options)).await
            })
            .await?;
        let holds = oldest.kvs().first().is_some_and(|kv| {
            kv.key() == key.key() && kv.create_revision() == key.rev() && kv.lease() == lease
        });
        let alive = self
            .call(lease, |mut c, lease| async move {
                c.lease_time_to_live(lease, None).await
            })
            .await
            .map(|t| t.ttl() > 0)
            .unwrap_or(false);
        if !holds || !alive || !session.confirmed() {
            return Err(self.error(
                "the election returned, but this replica's key is not the oldest, or its lease is gone: not leading",
            ));
        }
        if let Ok(mut fence) = self.fence.lock() {
            *fence = Some(Fence {
                key: key.key().to_vec(),
                token: key.rev(),
            });
        }
        Ok(Leadership {
            store: self.clone(),
            session,
            key,
            ops: AtomicU64::new(0),
            resigned: AtomicBool::new(false),
        })
    }
}

/// A task stopped when its handle is dropped (a campaign nobody waits for any more).
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The keep-alive loop of one session.
struct KeepAlive {
    client: etcd_client::Client,
    lease: i64,
    every: Duration,
    state: Arc<LeaseState>,
}

impl KeepAlive {
    async fn run(mut self) {
        // The grant confirmed the lease as of when it was asked for (`acked` starts at 0).
        let state = self.state.clone();
        while !state.closed() && state.since_ack() < state.fence_after {
            // A broken stream is not resumed by the client: open a new one for the same
            // lease, which answers with TTL 0 if the lease ended meanwhile.
            if let Ok((keeper, stream)) = self.client.lease_keep_alive(self.lease).await {
                if self.follow(keeper, stream).await {
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        if state.closed() {
            let revoke = self.client.lease_revoke(self.lease);
            let _ = tokio::time::timeout(Duration::from_secs(2), revoke).await;
        }
        state.mark_lost();
    }

    /// Sends keep-alives on one stream; true when the lease is known gone or the session
    /// closed, false when the stream broke.
    async fn follow(
        &self,
        mut keeper: etcd_client::LeaseKeeper,
        mut stream: etcd_client::LeaseKeepAliveStream,
    ) -> bool {
        let state = &self.state;
        let mut sent: VecDeque<u64> = VecDeque::new();
        let mut tick = tokio::time::interval(self.every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            if state.closed() {
                return true;
            }
            if state.since_ack() >= state.fence_after {
                return false;
            }
            tokio::select! {
                _ = tick.tick() => {
                    sent.push_back(state.base.elapsed().as_millis() as u64);
                    if keeper.keep_alive().await.is_err() {
                        return false;
                    }
                }
                answer = stream.message() => match answer {
                    Ok(Some(a)) if a.ttl() > 0 => {
                        if let Some(at) = sent.pop_front() {
                            state.acked.fetch_max(at, Ordering::AcqRel);
                        }
                    }
                    Ok(Some(_)) => {
                        state.mark_lost();
                        return true;
                    }
                    Ok(None) | Err(_) => return false,
                },
            }
        }
    }
}

/// The lease TTL of a replica's session unless `--lease-ttl` says otherwise.
pub const DEFAULT_TTL: Duration = Duration::from_secs(10);
/// How often a session's lease is kept alive unless `--keep-alive` says otherwise.
pub const DEFAULT_KEEP_ALIVE: Duration = Duration::from_secs(3);
/// How long a one-off command (`apply`, `destroy`) waits to win an election nobody holds.
const HOLD_WAIT: Duration = Duration::from_secs(3);

impl From<Member> for crate::store::LockHolder {
    fn from(m: Member) -> Self {
        crate::store::LockHolder {
            pid: m.pid,
            start_ticks: 0,
            command: m.command,
            since: m.since,
            host: Some(m.host),
        }
    }
}

impl EtcdStore {
    /// Takes the project for a one-off `command` (`apply`, `destroy`): wins the election
    /// when nobody holds it, else says who does (`tend run` gets the spec handed over).
    pub fn hold(self: &Arc<Self>, command: &str) -> Result<Leadership, StoreError> {
        if let Some(leader) = self.leader()? {
            return Err(StoreError::Locked {
                holder: Some(leader.into()),
            });
        }
        let store = self.clone();
        let member = Member::this_process(command, None);
        let (tx, rx) = std::sync::mpsc::channel();
        self.handle.spawn(async move {
            let won = async {
                let session = store.session(DEFAULT_TTL, DEFAULT_KEEP_ALIVE).await?;
                match tokio::time::timeout(HOLD_WAIT, store.campaign(session.clone(), &member))
                    .await
                {
                    Ok(leadership) => leadership.map(Some),
                    // Somebody else won: the campaign is dropped, and the session ends
                    // now, taking its key out of the election.
                    Err(_) => {
                        store.end_session(&session).await;
                        Ok(None)
                    }
                }
            }
            .await;
            let _ = tx.send(won);
        });
        match rx.recv() {
            Ok(Ok(Some(leadership))) => Ok(leadership),
            // Nobody won in time: a holder when there is one, else etcd too slow to elect.
            Ok(Ok(None)) => match self.leader()? {
                Some(leader) => Err(StoreError::Locked {
                    holder: Some(leader.into()),
                }),
                None => Err(self.error(format!(
                    "the project's election did not answer within {}s",
                    HOLD_WAIT.as_secs()
                ))),
            },
            Ok(Err(e)) => Err(e),
            Err(_) => Err(self.error("the election did not answer")),
        }
    }
}

impl Leadership {
    /// Steps down from synchronous code (a lock dropped): resigns and ends the lease.
    pub fn step_down_now(&self) {
        let key = self.key.clone();
        let lease = self.session.lease;
        self.resigned.store(true, Ordering::Release);
        let _ = self.store.block(key, |mut c, key| async move {
            c.resign(Some(ResignOptions::new().with_leader(key))).await
        });
        let _ = self.store.block(
            lease,
            |mut c, lease| async move { c.lease_revoke(lease).await },
        );
        if let Ok(mut fence) = self.store.fence.lock() {
            *fence = None;
        }
    }

    /// The session this leadership stands on.
    pub fn session(&self) -> &Arc<Session> {
        &self.session
    }
}
