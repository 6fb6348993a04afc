//! A leader's lease in the deterministic simulation: the gate a replicated controller's
//! provider calls pass (`engine::provider::fenced`), on virtual time.
//!
//! Like the real session, it is confirmed by a keep-alive every 3 s and refuses every
//! call once the last acknowledged one is 7 s old (7/10 of the 10 s TTL after which another
//! replica may be elected). The schedule can cut it off from "etcd" (its keep-alives go
//! unanswered, the controller goes on running) or pause its whole process (its calls wait
//! where they are, and the keep-alives stop). Every call the gate lets through is reported
//! with the lease's epoch, for the checker to compare with who leads.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use engine::clock::Clock;
use engine::provider::fenced::{Gate, Intended};

/// The lease's TTL: after it, another replica may lead.
pub const TTL_MS: u64 = 10_000;
/// How long after the last acknowledged keep-alive the leader stops calling providers.
pub const FENCE_MS: u64 = 7_000;
const KEEP_ALIVE_MS: u64 = 3_000;

/// Told of every call a gate let through: (epoch, what).
pub type Acted = Arc<dyn Fn(i64, String) + Send + Sync>;

/// One leader's lease.
pub struct SimLease {
    epoch: i64,
    clock: Clock,
    acked_at: AtomicU64,
    cut_off: AtomicBool,
    paused: AtomicBool,
    ops: AtomicU64,
    acted: Acted,
}

impl SimLease {
    /// A lease for `epoch`, confirmed now and kept alive until cut off; its keep-alive task
    /// ends when the lease is dropped.
    pub fn start(epoch: i64, clock: Clock, acted: Acted) -> Arc<SimLease> {
        let lease = Arc::new(SimLease {
            epoch,
            clock,
            acked_at: AtomicU64::new(clock.epoch_ms()),
            cut_off: AtomicBool::new(false),
            paused: AtomicBool::new(false),
            ops: AtomicU64::new(0),
            acted,
        });
        let weak = Arc::downgrade(&lease);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(KEEP_ALIVE_MS)).await;
                let Some(lease) = weak.upgrade() else { return };
                let now = lease.clock.epoch_ms();
                // A lease unconfirmed for its TTL is gone in etcd: a keep-alive after that
                // is answered with TTL 0, and nothing confirms it again.
                if now >= lease.expires_at() {
                    lease.cut_off.store(true, Ordering::Release);
                    return;
                }
                if !lease.cut_off.load(Ordering::Acquire) && !lease.paused.load(Ordering::Acquire) {
                    lease.acked_at.store(now, Ordering::Release);
                }
            }
        });
        lease
    }

    /// Its epoch (the fencing token).
    pub fn epoch(&self) -> i64 {
        self.epoch
    }

    /// Its keep-alives go unanswered from now on.
    pub fn cut_off(&self) {
        self.cut_off.store(true, Ordering::Release);
    }

    /// Pauses or resumes the whole process behind it.
    pub fn set_paused(&self, paused: bool) {
        self.paused.store(paused, Ordering::Release);
    }

    /// When another replica may lead: the TTL after the last acknowledged keep-alive.
    pub fn expires_at(&self) -> u64 {
        self.acked_at.load(Ordering::Acquire) + TTL_MS
    }

    async fn unpaused(&self) {
        while self.paused.load(Ordering::Acquire) {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

#[async_trait]
impl Gate for SimLease {
    fn epoch(&self) -> i64 {
        self.epoch
    }

    fn check(&self) -> Result<(), String> {
        let since = self
            .clock
            .epoch_ms()
            .saturating_sub(self.acked_at.load(Ordering::Acquire));
        if since < FENCE_MS {
            Ok(())
        } else {
            Err(format!(
                "not acting: leadership of epoch {} not confirmed for {since} ms",
                self.epoch
            ))
        }
    }

    fn next_op(&self) -> String {
        format!("{}-{}", self.epoch, self.ops.fetch_add(1, Ordering::AcqRel))
    }

    async fn intend(&self, op: &str, what: &Intended) -> Result<(), String> {
        // A paused process does nothing until it resumes, then finds out where it stands.
        self.unpaused().await;
        self.check()?;
        let target = if what.instance.is_empty() {
            format!("{}/{}", what.group, what.slot)
        } else {
            what.instance.clone()
        };
        (self.acted)(self.epoch, format!("{} {target} (op {op})", what.action));
        Ok(())
    }

    async fn done(&self, _op: &str) {}
}
