//! Whether the store can commit, as the event writer last found out.
//!
//! Readiness, the systemd watchdog and status line, and a metric all read this one status, so
//! they agree, and none of them waits on the database: a read-only file still answers a
//! `SELECT 1`, and a ping through the pool can hang as long as the database does. The writer
//! knows at once when a commit fails, and while it fails the writer tries a small commit of
//! its own every second, so the status turns healthy again by itself, traffic or not.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, SecondsFormat, Utc};

/// A commit (or check) still running after this long counts as the store not answering.
/// Commits take milliseconds (bench/RESULTS.md: at most about 0.1 s under load); two seconds
/// of silence is a database that hangs, well before the writer's own timeouts give up.
const STALL_AFTER: Duration = Duration::from_secs(2);

/// The store's health as the writer reports it. Cheap to clone; starts healthy (start-up has
/// just committed a check).
#[derive(Clone, Debug)]
pub struct StoreHealth(Arc<Shared>);

#[derive(Debug)]
struct Shared {
    epoch: Instant,
    /// The wall-clock time of `epoch`, to say since when in messages.
    epoch_utc: DateTime<Utc>,
    /// When the running commit or check started, in nanoseconds after `epoch` plus one; 0
    /// when the writer waits for work. Written twice per batch, so no lock.
    busy_since: AtomicU64,
    failing: AtomicBool,
    failure: Mutex<Option<Failure>>,
}

#[derive(Debug, Clone)]
struct Failure {
    reason: String,
    since: DateTime<Utc>,
}

/// Why the store is not healthy. The message says since when, not for how long, so that it
/// stays the same while the problem lasts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreProblem {
    #[error("the store cannot commit since {} ({reason})", utc(.since))]
    Failing {
        reason: String,
        since: DateTime<Utc>,
    },
    #[error("the store has not answered since {}", utc(.since))]
    NotAnswering { since: DateTime<Utc> },
}

fn utc(time: &DateTime<Utc>) -> String {
    time.to_rfc3339_opts(SecondsFormat::Secs, true)
}

impl Default for StoreHealth {
    fn default() -> Self {
        Self(Arc::new(Shared {
            epoch: Instant::now(),
            epoch_utc: Utc::now(),
            busy_since: AtomicU64::new(0),
            failing: AtomicBool::new(false),
            failure: Mutex::new(None),
        }))
    }
}

impl StoreHealth {
    /// `Ok` while the last commit succeeded and none has been running for 2 s.
    pub fn check(&self) -> Result<(), StoreProblem> {
        self.check_at(Instant::now())
    }

    fn check_at(&self, now: Instant) -> Result<(), StoreProblem> {
        if self.0.failing.load(Ordering::Acquire)
            && let Some(failure) = self.failure().as_ref()
        {
            return Err(StoreProblem::Failing {
                reason: failure.reason.clone(),
                since: failure.since,
            });
        }
        let busy_since = self.0.busy_since.load(Ordering::Acquire);
        if busy_since > 0 {
            let after_epoch = Duration::from_nanos(busy_since - 1);
            let started = self.0.epoch + after_epoch;
            if now.saturating_duration_since(started) >= STALL_AFTER {
                return Err(StoreProblem::NotAnswering {
                    since: self.0.epoch_utc + after_epoch,
                });
            }
        }
        Ok(())
    }

    pub(super) fn is_failing(&self) -> bool {
        self.0.failing.load(Ordering::Acquire)
    }

    /// A commit or check starts now.
    pub(super) fn busy(&self) {
        let since = u64::try_from(self.0.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX - 1);
        self.0.busy_since.store(since + 1, Ordering::Release);
    }

    /// The commit or check ended (its outcome is reported separately).
    pub(super) fn idle(&self) {
        self.0.busy_since.store(0, Ordering::Release);
    }

    /// A commit succeeded. Returns since when the store had been failing, when it had.
    pub(super) fn committed(&self) -> Option<DateTime<Utc>> {
        if !self.0.failing.load(Ordering::Acquire) {
            return None;
        }
        let failure = self.failure().take();
        self.0.failing.store(false, Ordering::Release);
        failure.map(|f| f.since)
    }

    /// A commit failed because of the store (not because of one event). Returns true when
    /// the store was healthy until now.
    pub(super) fn failed(&self, reason: String) -> bool {
        let mut failure = self.failure();
        let since = failure.as_ref().map_or_else(Utc::now, |f| f.since);
        let was_healthy = failure.is_none();
        *failure = Some(Failure { reason, since });
        self.0.failing.store(true, Ordering::Release);
        was_healthy
    }

    fn failure(&self) -> std::sync::MutexGuard<'_, Option<Failure>> {
        self.0
            .failure
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_lasts_until_a_commit_succeeds() {
        let health = StoreHealth::default();
        assert_eq!(health.check(), Ok(()));
        assert!(health.failed("disk full".into()));
        assert!(!health.failed("disk still full".into()), "already failing");
        match health.check() {
            Err(StoreProblem::Failing { reason, .. }) => assert_eq!(reason, "disk still full"),
            other => panic!("{other:?}"),
        }
        assert!(health.committed().is_some());
        assert_eq!(health.check(), Ok(()));
        assert_eq!(health.committed(), None, "healthy already");
    }

    #[test]
    fn a_commit_running_too_long_is_a_store_that_does_not_answer() {
        let health = StoreHealth::default();
        health.busy();
        assert_eq!(health.check(), Ok(()), "just started");
        let later = Instant::now() + STALL_AFTER;
        assert!(matches!(
            health.check_at(later),
            Err(StoreProblem::NotAnswering { .. })
        ));
        health.idle();
        assert_eq!(health.check_at(later), Ok(()));
    }
}
