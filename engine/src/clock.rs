//! Time as the engine sees it.
//!
//! Instants come from `tokio::time`, so a test runtime with paused time turns every wait,
//! timeout and deadline of the engine into virtual time; wall-clock milliseconds (instance
//! start times, event stamps) are derived from the same instants. The real clock and a
//! simulation's clock are the same type.

use tokio::time::Instant;

/// A clock: monotonic instants and the wall-clock time they stand for.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    base: Instant,
    base_ms: u64,
}

impl Clock {
    /// The machine's clock.
    pub fn real() -> Clock {
        Clock {
            base: Instant::now(),
            base_ms: crate::store::now_ms(),
        }
    }

    /// A clock whose wall time reads `epoch_ms` now: for simulations on paused time, where
    /// every run must see the same times.
    pub fn starting_at(epoch_ms: u64) -> Clock {
        Clock {
            base: Instant::now(),
            base_ms: epoch_ms,
        }
    }

    /// The current instant.
    pub fn now(&self) -> Instant {
        Instant::now()
    }

    /// Milliseconds since the Unix epoch, now.
    pub fn epoch_ms(&self) -> u64 {
        self.base_ms + self.base.elapsed().as_millis() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn paused_time_moves_the_wall_clock_with_it() {
        let clock = Clock::starting_at(1_000_000);
        assert_eq!(clock.epoch_ms(), 1_000_000);
        tokio::time::sleep(std::time::Duration::from_secs(90)).await;
        assert_eq!(clock.epoch_ms(), 1_090_000);
    }
}
