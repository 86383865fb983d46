//! Rate-limited log lines: a flood of bad requests must not flood the journal.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// Lets one message through per interval and counts the ones it held back.
#[derive(Debug)]
pub struct LogLimiter {
    interval: Duration,
    last: Mutex<Option<Instant>>,
    suppressed: AtomicU64,
}

impl LogLimiter {
    pub fn new(interval: Duration) -> Self {
        Self {
            interval,
            last: Mutex::new(None),
            suppressed: AtomicU64::new(0),
        }
    }

    /// `Some(n)` when a message may be logged now (`n` were held back since the last one);
    /// `None` when this one should be dropped.
    pub fn permit(&self) -> Option<u64> {
        let now = Instant::now();
        let mut last = lock(&self.last);
        match *last {
            Some(at) if now.duration_since(at) < self.interval => {
                self.suppressed.fetch_add(1, Ordering::Relaxed);
                None
            }
            _ => {
                *last = Some(now);
                Some(self.suppressed.swap(0, Ordering::Relaxed))
            }
        }
    }
}

/// A [`LogLimiter`] for each kind of message, so that a flood of one kind cannot silence
/// the first line of another.
#[derive(Debug)]
pub struct LogLimiterByKind<K> {
    interval: Duration,
    kinds: Mutex<HashMap<K, Window>>,
}

#[derive(Debug, Default)]
struct Window {
    last: Option<Instant>,
    held_back: u64,
}

impl<K: Hash + Eq> LogLimiterByKind<K> {
    pub fn new(interval: Duration) -> Self {
        Self {
            interval,
            kinds: Mutex::new(HashMap::new()),
        }
    }

    /// As [`LogLimiter::permit`], for messages of `kind`.
    pub fn permit(&self, kind: K) -> Option<u64> {
        let now = Instant::now();
        let mut kinds = lock(&self.kinds);
        let window = kinds.entry(kind).or_default();
        match window.last {
            Some(at) if now.duration_since(at) < self.interval => {
                window.held_back += 1;
                None
            }
            _ => {
                window.last = Some(now);
                Some(std::mem::take(&mut window.held_back))
            }
        }
    }

    /// The kinds with messages held back since their last line or the last call, with how
    /// many; their counts start again from zero.
    pub fn take_held_back(&self) -> Vec<(K, u64)>
    where
        K: Clone,
    {
        lock(&self.kinds)
            .iter_mut()
            .filter(|(_, window)| window.held_back > 0)
            .map(|(kind, window)| (kind.clone(), std::mem::take(&mut window.held_back)))
            .collect()
    }
}

/// A limiter's state stays usable after a panic elsewhere: at worst a line too many.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lets_one_through_per_interval_and_counts_the_rest() {
        let limiter = LogLimiter::new(Duration::from_secs(3600));
        assert_eq!(limiter.permit(), Some(0));
        assert_eq!(limiter.permit(), None);
        assert_eq!(limiter.permit(), None);
        let limiter_zero = LogLimiter::new(Duration::ZERO);
        assert_eq!(limiter_zero.permit(), Some(0));
        assert_eq!(limiter_zero.permit(), Some(0));
    }

    #[test]
    fn each_kind_has_its_own_line_and_count() {
        let limiter = LogLimiterByKind::new(Duration::from_secs(3600));
        assert_eq!(limiter.permit("size"), Some(0));
        assert_eq!(limiter.permit("size"), None);
        assert_eq!(limiter.permit("size"), None);
        assert_eq!(
            limiter.permit("path"),
            Some(0),
            "a flood of one kind hides no other"
        );
        assert_eq!(limiter.permit("path"), None);
        let mut held_back = limiter.take_held_back();
        held_back.sort();
        assert_eq!(held_back, [("path", 1), ("size", 2)]);
        assert!(limiter.take_held_back().is_empty(), "counted once");

        let limiter_zero = LogLimiterByKind::new(Duration::ZERO);
        assert_eq!(limiter_zero.permit("size"), Some(0));
        assert_eq!(limiter_zero.permit("size"), Some(0));
    }
}
