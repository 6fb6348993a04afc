//! Watching the spec: every commit writes `sources`, so one watch on that key tells a
//! replica that a new spec is there. After a compaction, a cancelled watch or a broken
//! stream the key is read again and watched anew from the revision read; the controller's
//! periodic resync reads the store anyway, so nothing waits on the watch alone.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use etcd_client::WatchOptions;

use super::EtcdStore;

/// The serial of the newest spec seen, shared with the watch task.
#[derive(Clone, Debug, Default)]
pub(super) struct Changes(Arc<AtomicU64>);

impl Changes {
    /// The newest serial seen so far.
    pub fn mark(&self) -> u64 {
        self.0.load(Ordering::Acquire)
    }

    fn saw(&self, serial: i64) {
        self.0.fetch_max(serial.max(0) as u64, Ordering::AcqRel);
    }
}

/// Starts the watch on the store's runtime; it ends when the store does.
pub(super) fn start(store: Arc<EtcdStore>) {
    let client = store.client.clone();
    let key = store.key("sources");
    let changes = store.changes.clone();
    store.handle.spawn(async move {
        loop {
            follow(client.clone(), &key, &changes).await;
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    });
}

/// Reads the key, then follows its changes until the watch ends for any reason.
async fn follow(mut client: etcd_client::Client, key: &str, changes: &Changes) {
    let Ok(answer) = client.get(key, None).await else {
        return;
    };
    if let Some(kv) = answer.kvs().first() {
        changes.saw(kv.mod_revision());
    }
    let from = answer.header().map(|h| h.revision()).unwrap_or(0) + 1;
    let options = WatchOptions::new().with_start_revision(from);
    let Ok(mut stream) = client.watch(key, Some(options)).await else {
        return;
    };
    while let Ok(Some(answer)) = stream.message().await {
        if answer.canceled() || answer.compact_revision() > 0 {
            return;
        }
        for event in answer.events() {
            if let Some(kv) = event.kv() {
                changes.saw(kv.mod_revision());
            }
        }
    }
}
