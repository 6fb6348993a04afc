//! The etcd store: the desired state of one project in etcd, so that any number of
//! `tend run` replicas, on any machines, keep it together (one leader acts, the others
//! stand by).
//!
//! Keys live under one versioned root, `/tend/v1/<project>/`:
//!
//! | key | holds |
//! |---|---|
//! | `format` | the store's format ([`crate::format::ETCD_STATE`]; none before tend marked it) |
//! | `specs/<group>` | one group of the applied spec |
//! | `sources` | the rest of the spec (ports, group order), the lineage, the history count |
//! | `history/<n>` | the whole spec as applied the n-th time |
//! | `rollouts` | the rollouts that failed |
//! | `status` | the leader's report |
//! | `intents/<op>` | a create or destroy the leader is about to make |
//! | `members/<lease>` | each replica, on its own lease |
//! | `leader/…` | the election |
//!
//! An apply writes every changed group, `sources`, a history entry and `format` in one
//! transaction guarded by the `mod_revision`s it read (and the `format` it read): the
//! transaction's revision is the spec serial. A project whose `format` is newer than this
//! tend reads is refused before anything else under its root is read, and never written;
//! one without (tend 0.1.0's) is read as format 1 and gets the key with its next commit.
//! The root keeps its `v1` for good: a new format is a new `format`, never a new root an
//! older tend would read as an empty project.
//! While this process leads, every write also compares the leader key's create revision
//! (the fencing token), so a deposed leader writes nothing.
//!
//! The store's calls run on a small runtime of its own, so the engine's synchronous store
//! interface can wait for them from any thread, async or not.

mod leader;
mod watch;

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, DeleteOptions, GetOptions, Txn, TxnOp,
};
use serde::{Deserialize, Serialize};

use super::{now_ms, Applied, FailedRollout, StoreError};
use crate::format;
use crate::spec::{Group, PortRange, Spec};

pub use leader::{
    fence_after, host_name, Leadership, Member, Session, DEFAULT_KEEP_ALIVE, DEFAULT_TTL,
};

/// etcd's default limit on one request (`--max-request-bytes`).
pub const MAX_REQUEST_BYTES: usize = 1536 * 1024;
/// etcd's default limit on operations in one transaction (`--max-txn-ops`).
pub const MAX_TXN_OPS: usize = 128;
/// How long one try of a call to etcd may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a call is tried again while etcd elects a leader or a member is unreachable.
const RETRY_FOR: Duration = Duration::from_secs(10);

/// True for an error that a leader change or an unreachable member causes, which the same
/// call may not meet again a moment later.
fn transient(e: &etcd_client::Error) -> bool {
    let text = e.to_string().to_lowercase();
    matches!(
        e,
        etcd_client::Error::TransportError(_) | etcd_client::Error::IoError(_)
    ) || [
        "unavailable",
        "leader changed",
        "no leader",
        "deadline",
        "timeout",
        "transport",
    ]
    .iter()
    .any(|t| text.contains(t))
}

/// Makes `call` until it answers, fails for good, or [`RETRY_FOR`] has passed.
async fn retried<A, T, F>(
    client: Client,
    arg: A,
    call: impl Fn(Client, A) -> F,
) -> Result<T, String>
where
    A: Clone,
    F: Future<Output = Result<T, etcd_client::Error>>,
{
    let deadline = tokio::time::Instant::now() + RETRY_FOR;
    let mut pause = Duration::from_millis(100);
    loop {
        let why = match tokio::time::timeout(CALL_TIMEOUT, call(client.clone(), arg.clone())).await
        {
            Ok(Ok(answer)) => return Ok(answer),
            Ok(Err(e)) if !transient(&e) => return Err(e.to_string()),
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!("no answer within {}s", CALL_TIMEOUT.as_secs()),
        };
        if tokio::time::Instant::now() + pause >= deadline {
            return Err(why);
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(1));
    }
}

/// `sources`: what a spec holds besides its groups, and the store's own counters.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct Sources {
    lineage: String,
    applied_at: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ports: Option<PortRange>,
    /// The groups in declaration order.
    groups: Vec<String>,
    /// History entries written so far.
    history: u64,
    /// Names the commit that wrote it: a commit whose answer was lost reads it back to
    /// know whether it landed.
    #[serde(default)]
    commit: String,
}

/// What the last read saw: the revisions a commit is guarded by.
#[derive(Clone, Debug, Default)]
struct Seen {
    /// `sources`' mod revision (0: none yet).
    sources: i64,
    sources_value: Sources,
    /// Each group's mod revision and value.
    groups: BTreeMap<String, (i64, Vec<u8>)>,
    /// The `format` key's value (none: format 1).
    format: Option<Vec<u8>>,
}

/// The leader key this process holds, compared by every write while it leads.
#[derive(Clone, Debug)]
struct Fence {
    key: Vec<u8>,
    token: i64,
}

/// The desired state of one project in etcd.
pub struct EtcdStore {
    runtime: Option<tokio::runtime::Runtime>,
    handle: tokio::runtime::Handle,
    client: Client,
    endpoints: String,
    root: String,
    seen: Mutex<Option<Seen>>,
    fence: Mutex<Option<Fence>>,
    changes: watch::Changes,
    /// History keys by serial, as last listed: an entry never changes once written, so
    /// reading one version does not list the whole history again.
    history_index: Mutex<BTreeMap<u64, Vec<u8>>>,
}

impl std::fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdStore")
            .field("endpoints", &self.endpoints)
            .field("root", &self.root)
            .finish()
    }
}

impl Drop for EtcdStore {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// Parses `etcd://h1:2379,h2:2379` into its endpoints.
pub fn parse_url(url: &str) -> Result<Vec<String>, String> {
    let Some(rest) = url.strip_prefix("etcd://") else {
        return Err(format!(
            "{url:?} is not a store: use `local` or etcd://host:port[,host:port...]"
        ));
    };
    let endpoints: Vec<String> = rest
        .trim_end_matches('/')
        .split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .map(str::to_owned)
        .collect();
    if endpoints.is_empty() {
        return Err(format!("{url:?} names no etcd endpoint"));
    }
    if endpoints.iter().any(|e| e.contains('@')) {
        // Never echoed: the part before '@' may be a password.
        return Err(
            "credentials in the store's address are not supported: give etcd://host:port"
                .to_owned(),
        );
    }
    for e in &endpoints {
        let port = e.rsplit_once(':').map(|(_, p)| p);
        if port.is_none_or(|p| p.parse::<u16>().is_err()) {
            return Err(format!("{url:?}: endpoint {e:?} is not host:port"));
        }
    }
    Ok(endpoints)
}

impl EtcdStore {
    /// The store of `project` on the etcd cluster at `endpoints` (`host:port`). Connects
    /// lazily: an unreachable cluster is an error at the first call.
    pub fn connect(endpoints: &[String], project: &str) -> Result<Arc<EtcdStore>, StoreError> {
        let joined = endpoints.join(",");
        let fail = |detail: String| StoreError::Etcd {
            endpoints: joined.clone(),
            detail,
        };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("tend-etcd")
            .enable_all()
            .build()
            .map_err(|e| fail(format!("cannot start its runtime: {e}")))?;
        let handle = runtime.handle().clone();
        let urls: Vec<String> = endpoints.iter().map(|e| format!("http://{e}")).collect();
        // No timeout for every request: a campaign waits as long as another replica leads.
        // Each call but the campaign is bounded by `CALL_TIMEOUT` here.
        let options = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(2))
            // etcd closes connections that ping more often than every 5 s
            // (`--grpc-keepalive-min-time`), breaking every stream on them.
            .with_keep_alive(Duration::from_secs(10), Duration::from_secs(5));
        let (tx, rx) = std::sync::mpsc::channel();
        handle.spawn(async move {
            let _ = tx.send(Client::connect(urls, Some(options)).await);
        });
        let client = match rx.recv_timeout(CALL_TIMEOUT) {
            Ok(Ok(client)) => client,
            Ok(Err(e)) => return Err(fail(e.to_string())),
            Err(_) => return Err(fail("no answer".to_owned())),
        };
        let root = format!("/tend/v1/{project}/");
        let changes = watch::Changes::default();
        let store = Arc::new(EtcdStore {
            runtime: Some(runtime),
            handle,
            client,
            endpoints: joined,
            root,
            seen: Mutex::new(None),
            fence: Mutex::new(None),
            changes,
            history_index: Mutex::new(BTreeMap::new()),
        });
        Ok(store)
    }

    /// The endpoints, comma separated.
    pub fn endpoints(&self) -> &str {
        &self.endpoints
    }

    fn key(&self, rest: &str) -> String {
        format!("{}{rest}", self.root)
    }

    fn error(&self, detail: impl std::fmt::Display) -> StoreError {
        StoreError::Etcd {
            endpoints: self.endpoints.clone(),
            detail: detail.to_string(),
        }
    }

    /// Runs `call(client, arg)` on the store's runtime and waits for it, from any thread.
    /// See [`EtcdStore::call`] for retries.
    fn block<A, T, F>(
        &self,
        arg: A,
        call: impl Fn(Client, A) -> F + Send + Sync + 'static,
    ) -> Result<T, StoreError>
    where
        A: Clone + Send + Sync + 'static,
        T: Send + 'static,
        F: Future<Output = Result<T, etcd_client::Error>> + Send + 'static,
    {
        let (tx, rx) = std::sync::mpsc::channel();
        let client = self.client.clone();
        self.handle.spawn(async move {
            let _ = tx.send(retried(client, arg, call).await);
        });
        // On a worker of a multi-threaded runtime, let its other tasks move meanwhile.
        let on_worker = tokio::runtime::Handle::try_current()
            .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
        let answer = if on_worker {
            tokio::task::block_in_place(|| rx.recv())
        } else {
            rx.recv()
        };
        match answer {
            Ok(answer) => answer.map_err(|e| self.error(e)),
            Err(_) => Err(self.error("the store's runtime ended")),
        }
    }

    /// Runs `call(client, arg)` on the store's runtime and awaits it, from async code. A
    /// call that fails while the cluster changes leader or a member is unreachable is made
    /// again, for up to [`RETRY_FOR`]; each try takes at most [`CALL_TIMEOUT`].
    async fn call<A, T, F>(
        &self,
        arg: A,
        call: impl Fn(Client, A) -> F + Send + Sync + 'static,
    ) -> Result<T, StoreError>
    where
        A: Clone + Send + Sync + 'static,
        T: Send + 'static,
        F: Future<Output = Result<T, etcd_client::Error>> + Send + 'static,
    {
        let client = self.client.clone();
        match self.handle.spawn(retried(client, arg, call)).await {
            Ok(answer) => answer.map_err(|e| self.error(e)),
            Err(e) => Err(self.error(e)),
        }
    }

    /// The compare every write makes while this process leads.
    fn fence_compares(&self) -> Vec<Compare> {
        let fence = self.fence.lock().map(|f| f.clone()).unwrap_or(None);
        fence
            .map(|f| vec![Compare::create_revision(f.key, CompareOp::Equal, f.token)])
            .unwrap_or_default()
    }

    fn fenced(&self) -> bool {
        self.fence.lock().map(|f| f.is_some()).unwrap_or(false)
    }

    /// Puts `value` at `key` (under the root), fenced while this process leads. A fenced
    /// write that finds another leader is refused.
    fn put_fenced(&self, key: &str, value: Vec<u8>) -> Result<(), StoreError> {
        let txn = Txn::new()
            .when(self.fence_compares())
            .and_then(vec![TxnOp::put(self.key(key), value, None)]);
        let fenced = self.fenced();
        let done = self.block(txn, |mut c, txn| async move { c.txn(txn).await })?;
        if fenced && !done.succeeded() {
            return Err(StoreError::Deposed);
        }
        Ok(())
    }

    /// Reads the project's format: 1 without the key, an error when it is newer than this
    /// tend reads (or not a number).
    pub fn format(&self) -> Result<u32, StoreError> {
        let key = self.key("format");
        let answer = self.block(key, |mut c, key| async move { c.get(key, None).await })?;
        self.check_format(answer.kvs().first().map(|kv| kv.value()))
    }

    /// Checks the `format` key's value (`None`: no key, format 1).
    fn check_format(&self, value: Option<&[u8]>) -> Result<u32, StoreError> {
        let Some(value) = value else {
            return Ok(1);
        };
        let Some(found) = format::parse_marker(value) else {
            return Err(StoreError::Damaged {
                path: self.key("format").into(),
                detail: format!(
                    "it should hold the store's format, a number from 1 up; if only tends of \
                     this version keep the project, write {} there",
                    format::ETCD_STATE
                ),
            });
        };
        format::check(format::Kind::EtcdState, found, || {
            format!("the state in etcd under {}", self.root)
        })?;
        Ok(found as u32)
    }

    /// The last applied version, if any; remembers the revisions the next commit is
    /// guarded by. A project of a newer format is refused before its spec is read.
    pub fn last_applied(&self, project: &str) -> Result<Option<Applied>, StoreError> {
        let (sources_key, specs) = (self.key("sources"), self.key("specs/"));
        let txn = Txn::new().and_then(vec![
            TxnOp::get(self.key("format"), None),
            TxnOp::get(sources_key, None),
            TxnOp::get(specs, Some(GetOptions::new().with_prefix())),
        ]);
        let answer = self.block(txn, |mut c, txn| async move { c.txn(txn).await })?;
        let mut gets = answer.op_responses().into_iter().filter_map(|r| match r {
            etcd_client::TxnOpResponse::Get(g) => Some(g),
            _ => None,
        });
        let (Some(format), Some(sources), Some(specs)) = (gets.next(), gets.next(), gets.next())
        else {
            return Err(self.error("a read of the spec came back incomplete"));
        };
        let format = format.kvs().first().map(|kv| kv.value().to_vec());
        self.check_format(format.as_deref())?;
        let Some(kv) = sources.kvs().first() else {
            if let Ok(mut seen) = self.seen.lock() {
                *seen = Some(Seen {
                    format,
                    ..Seen::default()
                });
            }
            return Ok(None);
        };
        let sources_value: Sources = self.parse("sources", kv.value())?;
        let serial = kv.mod_revision();
        let mut by_name: BTreeMap<String, (i64, Vec<u8>)> = BTreeMap::new();
        for kv in specs.kvs() {
            let name = String::from_utf8_lossy(kv.key())
                .trim_start_matches(&self.key("specs/"))
                .to_owned();
            by_name.insert(name, (kv.mod_revision(), kv.value().to_vec()));
        }
        let mut groups = Vec::with_capacity(sources_value.groups.len());
        for name in &sources_value.groups {
            let Some((_, value)) = by_name.get(name) else {
                return Err(StoreError::Damaged {
                    path: self.key(&format!("specs/{name}")).into(),
                    detail: "the spec names this group but the store has no key for it".to_owned(),
                });
            };
            groups.push(self.parse::<Group>(&format!("specs/{name}"), value)?);
        }
        let applied = Applied {
            lineage: sources_value.lineage.clone(),
            serial: serial as u64,
            applied_at: sources_value.applied_at,
            spec: Spec {
                project: project.to_owned(),
                ports: sources_value.ports,
                groups,
            },
        };
        if let Ok(mut seen) = self.seen.lock() {
            *seen = Some(Seen {
                sources: serial,
                sources_value,
                groups: by_name,
                format,
            });
        }
        Ok(Some(applied))
    }

    fn parse<T: serde::de::DeserializeOwned>(
        &self,
        key: &str,
        value: &[u8],
    ) -> Result<T, StoreError> {
        serde_json::from_slice(value).map_err(|e| StoreError::Damaged {
            path: self.key(key).into(),
            detail: e.to_string(),
        })
    }

    /// Records `spec` as applied in one transaction: the changed groups, `sources`, a
    /// history entry and this tend's `format` (the migration from an older one), guarded
    /// by the revisions and the format the last read saw (read now when nothing was
    /// read). The transaction's revision is the serial.
    pub fn commit(&self, spec: &Spec) -> Result<Applied, StoreError> {
        let seen = match self.seen.lock().map(|s| s.clone()).unwrap_or(None) {
            Some(seen) => seen,
            None => {
                self.last_applied(&spec.project)?;
                self.seen
                    .lock()
                    .map(|s| s.clone())
                    .unwrap_or(None)
                    .unwrap_or_default()
            }
        };
        let first = seen.sources == 0;
        let sources = Sources {
            lineage: if first {
                super::new_lineage()
            } else {
                seen.sources_value.lineage.clone()
            },
            applied_at: now_ms(),
            ports: spec.ports,
            groups: spec.groups.iter().map(|g| g.name.clone()).collect(),
            history: seen.sources_value.history + 1,
            commit: format!("{}-{:010}", super::new_lineage(), std::process::id()),
        };
        let mut compares = self.fence_compares();
        // A newer tend that marked the project meanwhile fails the commit: the next read
        // refuses its format.
        let format_key = self.key("format");
        compares.push(match &seen.format {
            None => Compare::version(format_key.clone(), CompareOp::Equal, 0),
            Some(value) => Compare::value(format_key.clone(), CompareOp::Equal, value.clone()),
        });
        compares.push(if first {
            Compare::version(self.key("sources"), CompareOp::Equal, 0)
        } else {
            Compare::mod_revision(self.key("sources"), CompareOp::Equal, seen.sources)
        });
        let mut ops = Vec::new();
        let mut bytes = 0usize;
        let mut put = |ops: &mut Vec<TxnOp>, key: String, value: Vec<u8>| {
            bytes += key.len() + value.len();
            ops.push(TxnOp::put(key, value, None));
        };
        let damaged = |e: serde_json::Error| StoreError::Damaged {
            path: self.root.clone().into(),
            detail: e.to_string(),
        };
        for group in &spec.groups {
            let value = serde_json::to_vec(group).map_err(damaged)?;
            let key = self.key(&format!("specs/{}", group.name));
            match seen.groups.get(&group.name) {
                Some((_, old)) if *old == value => continue,
                Some((revision, _)) => {
                    compares.push(Compare::mod_revision(
                        key.clone(),
                        CompareOp::Equal,
                        *revision,
                    ));
                }
                None => compares.push(Compare::version(key.clone(), CompareOp::Equal, 0)),
            }
            put(&mut ops, key, value);
        }
        for (name, (revision, _)) in &seen.groups {
            if !spec.groups.iter().any(|g| &g.name == name) {
                let key = self.key(&format!("specs/{name}"));
                compares.push(Compare::mod_revision(
                    key.clone(),
                    CompareOp::Equal,
                    *revision,
                ));
                ops.push(TxnOp::delete(key, None));
            }
        }
        let history = HistoryEntry {
            lineage: sources.lineage.clone(),
            applied_at: sources.applied_at,
            spec: spec.clone(),
        };
        put(
            &mut ops,
            self.key(&format!("history/{:010}", sources.history)),
            serde_json::to_vec(&history).map_err(damaged)?,
        );
        put(
            &mut ops,
            self.key("sources"),
            serde_json::to_vec(&sources).map_err(damaged)?,
        );
        put(
            &mut ops,
            format_key,
            format::marker(format::ETCD_STATE).into_bytes(),
        );
        // The history keeps the newest versions: older entries go in the same transaction.
        if let Some(oldest_kept) = sources.history.checked_sub(super::HISTORY_KEPT - 1) {
            ops.push(TxnOp::delete(
                self.key("history/"),
                Some(
                    DeleteOptions::new()
                        .with_range(self.key(&format!("history/{oldest_kept:010}"))),
                ),
            ));
        }
        let count = ops.len() + compares.len();
        if bytes > MAX_REQUEST_BYTES || ops.len() > MAX_TXN_OPS || compares.len() > MAX_TXN_OPS {
            return Err(StoreError::TooLarge {
                bytes,
                operations: count,
            });
        }
        let fenced = self.fenced();
        let txn = Txn::new().when(compares).and_then(ops);
        let answer = self.block(txn, |mut c, txn| async move { c.txn(txn).await })?;
        // A try whose answer was lost may have landed before the one that answered: then
        // `sources` names this commit.
        let landed = (!answer.succeeded())
            .then(|| self.landed(&sources.commit))
            .flatten();
        if !answer.succeeded() && landed.is_none() {
            // Whatever the reason, the next commit reads afresh.
            if let Ok(mut s) = self.seen.lock() {
                *s = None;
            }
            if fenced && self.fence_lost() {
                return Err(StoreError::Deposed);
            }
            return Err(StoreError::Conflict {
                read: seen.sources.max(0) as u64,
            });
        }
        let serial =
            landed.unwrap_or_else(|| answer.header().map_or(0, |h| h.revision().max(0) as u64));
        // The next commit is guarded by what this one wrote; when that cannot be read now,
        // the next commit reads it first.
        if self.last_applied(&spec.project).is_err() {
            if let Ok(mut s) = self.seen.lock() {
                *s = None;
            }
        }
        Ok(Applied {
            lineage: sources.lineage,
            serial,
            applied_at: sources.applied_at,
            spec: spec.clone(),
        })
    }

    /// The serial of the commit named `commit`, when `sources` says it landed.
    fn landed(&self, commit: &str) -> Option<u64> {
        let key = self.key("sources");
        let answer = self
            .block(key, |mut c, key| async move { c.get(key, None).await })
            .ok()?;
        let kv = answer.kvs().first()?;
        let sources: Sources = serde_json::from_slice(kv.value()).ok()?;
        (sources.commit == commit).then_some(kv.mod_revision() as u64)
    }

    /// True when this process holds a fence and the leader key no longer matches it.
    fn fence_lost(&self) -> bool {
        let Some(fence) = self.fence.lock().map(|f| f.clone()).unwrap_or(None) else {
            return false;
        };
        let key = fence.key.clone();
        match self.block(key, |mut c, key| async move { c.get(key, None).await }) {
            Ok(answer) => answer
                .kvs()
                .first()
                .is_none_or(|kv| kv.create_revision() != fence.token),
            Err(_) => true,
        }
    }

    /// History entries: (serial, key), oldest first.
    fn history_keys(&self) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        let prefix = self.key("history/");
        let answer = self.block(prefix, |mut c, prefix| async move {
            c.get(
                prefix,
                Some(GetOptions::new().with_prefix().with_keys_only()),
            )
            .await
        })?;
        let mut keys: Vec<(u64, Vec<u8>)> = answer
            .kvs()
            .iter()
            .map(|kv| (kv.create_revision() as u64, kv.key().to_vec()))
            .collect();
        keys.sort();
        if let Ok(mut index) = self.history_index.lock() {
            *index = keys.iter().cloned().collect();
        }
        Ok(keys)
    }

    /// Serials in the history, oldest first.
    pub fn history(&self) -> Vec<u64> {
        self.history_keys()
            .map(|keys| keys.into_iter().map(|(serial, _)| serial).collect())
            .unwrap_or_default()
    }

    /// The version applied as `serial`, if the history still has it.
    pub fn applied(&self, serial: u64) -> Result<Option<Applied>, StoreError> {
        let known = self
            .history_index
            .lock()
            .ok()
            .and_then(|index| index.get(&serial).cloned());
        let key = match known {
            Some(key) => key,
            None => match self.history_keys()?.into_iter().find(|(s, _)| *s == serial) {
                Some((_, key)) => key,
                None => return Ok(None),
            },
        };
        let answer = self.block(key, |mut c, key| async move { c.get(key, None).await })?;
        let Some(kv) = answer.kvs().first() else {
            return Ok(None);
        };
        let entry: HistoryEntry = self.parse("history", kv.value())?;
        Ok(Some(Applied {
            lineage: entry.lineage,
            serial,
            applied_at: entry.applied_at,
            spec: entry.spec,
        }))
    }

    /// Gets the JSON value at `key`, if any.
    fn get_json<T: serde::de::DeserializeOwned>(&self, key: &str) -> Result<Option<T>, StoreError> {
        let full = self.key(key);
        let answer = self.block(full, |mut c, full| async move { c.get(full, None).await })?;
        match answer.kvs().first() {
            Some(kv) => self.parse(key, kv.value()).map(Some),
            None => Ok(None),
        }
    }

    /// Rollouts that failed, by group.
    pub fn failed_rollouts(&self) -> Result<BTreeMap<String, FailedRollout>, StoreError> {
        Ok(self.get_json("rollouts")?.unwrap_or_default())
    }

    /// Records the rollouts that failed (fenced).
    pub fn save_failed_rollouts(
        &self,
        rollouts: &BTreeMap<String, FailedRollout>,
    ) -> Result<(), StoreError> {
        let value = serde_json::to_vec(rollouts).unwrap_or_default();
        self.put_fenced("rollouts", value)
    }

    /// The leader's report, if one was written.
    pub fn report(&self) -> Result<Option<serde_json::Value>, StoreError> {
        self.get_json("status")
    }

    /// Writes the leader's report (fenced).
    pub fn save_report(&self, report: &serde_json::Value) -> Result<(), StoreError> {
        let value = serde_json::to_vec(report).unwrap_or_default();
        self.put_fenced("status", value)
    }

    /// Writes an intent before a create or destroy (fenced): what the leader is about to
    /// do, for a new leader to finish or undo from the instances' tags.
    pub async fn write_intent(&self, op: &str, intent: &Intent) -> Result<(), StoreError> {
        let txn = Txn::new()
            .when(self.fence_compares())
            .and_then(vec![TxnOp::put(
                self.key(&format!("intents/{op}")),
                serde_json::to_vec(intent).unwrap_or_default(),
                None,
            )]);
        let done = self
            .call(txn, |mut c, txn| async move { c.txn(txn).await })
            .await?;
        if !done.succeeded() {
            return Err(StoreError::Deposed);
        }
        Ok(())
    }

    /// Removes an intent once its action ended (fenced).
    pub async fn clear_intent(&self, op: &str) -> Result<(), StoreError> {
        let txn = Txn::new()
            .when(self.fence_compares())
            .and_then(vec![TxnOp::delete(
                self.key(&format!("intents/{op}")),
                None,
            )]);
        self.call(txn, |mut c, txn| async move { c.txn(txn).await })
            .await
            .map(|_| ())
    }

    /// The intents left in the store, by op.
    pub fn intents(&self) -> Result<BTreeMap<String, Intent>, StoreError> {
        let prefix = self.key("intents/");
        let answer = self.block(prefix, |mut c, prefix| async move {
            c.get(prefix, Some(GetOptions::new().with_prefix())).await
        })?;
        let mut intents = BTreeMap::new();
        for kv in answer.kvs() {
            let op = String::from_utf8_lossy(kv.key())
                .trim_start_matches(&self.key("intents/"))
                .to_owned();
            intents.insert(op, self.parse("intents", kv.value())?);
        }
        Ok(intents)
    }

    /// Removes every intent (fenced), once a new leader looked at what they name.
    pub fn clear_intents(&self) -> Result<(), StoreError> {
        let txn = Txn::new()
            .when(self.fence_compares())
            .and_then(vec![TxnOp::delete(
                self.key("intents/"),
                Some(etcd_client::DeleteOptions::new().with_prefix()),
            )]);
        let fenced = self.fenced();
        let done = self.block(txn, |mut c, txn| async move { c.txn(txn).await })?;
        if fenced && !done.succeeded() {
            return Err(StoreError::Deposed);
        }
        Ok(())
    }

    /// A number that changes whenever a new spec is committed, from the store's watch.
    pub fn spec_mark(&self) -> u64 {
        self.changes.mark()
    }

    /// Starts watching the spec: [`EtcdStore::spec_mark`] moves with every commit.
    pub fn watch_spec(self: &Arc<Self>) {
        watch::start(self.clone());
    }
}

/// One history entry: a spec as applied (its serial is the entry's create revision).
#[derive(Serialize, Deserialize)]
struct HistoryEntry {
    lineage: String,
    applied_at: u64,
    spec: Spec,
}

/// A create or destroy a leader is about to make.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Intent {
    /// `create` or `destroy`.
    pub action: String,
    /// The group.
    pub group: String,
    /// The slot, for a create.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub slot: String,
    /// The instance, for a destroy.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub instance: String,
    /// The leader's fencing token.
    pub epoch: i64,
    /// When, in milliseconds since the Unix epoch.
    pub at_ms: u64,
}
