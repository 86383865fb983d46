//! The wait between retries, for everything that retries: registration with Volt and
//! deliveries to sinks.

use std::time::Duration;

/// Exponential backoff: `initial` after the first failure, doubling with each one after it,
/// never more than `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
}

impl Backoff {
    /// The wait after failure number `failures` (1 after the first). Only its lower half is
    /// fixed; the upper half is random, so that many instances or deliveries that failed
    /// together do not all retry in step.
    pub fn delay(&self, failures: u32) -> Duration {
        // Saturating: after enough failures the product only reaches its limit, and `max`
        // caps it.
        let doublings = 2u32.saturating_pow(failures.saturating_sub(1));
        let ceiling = self.initial.saturating_mul(doublings).min(self.max);
        let half = ceiling / 2;
        half + half.mul_f64(rand::random::<f64>())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BACKOFF: Backoff = Backoff {
        initial: Duration::from_millis(100),
        max: Duration::from_secs(1),
    };

    fn within(low: Duration, high: Duration, failures: u32) {
        let delay = BACKOFF.delay(failures);
        assert!(
            (low..=high).contains(&delay),
            "after {failures} failures: {delay:?}"
        );
    }

    #[test]
    fn delay_doubles_and_is_capped() {
        for failures in 1..=12 {
            let ceiling = Duration::from_millis(100 * (1 << (failures - 1).min(10)))
                .min(Duration::from_secs(1));
            within(ceiling / 2, ceiling, failures);
        }
    }

    #[test]
    fn delay_grows_and_is_capped() {
        for _ in 0..50 {
            within(Duration::from_millis(50), Duration::from_millis(100), 1);
            within(Duration::from_millis(200), Duration::from_millis(400), 3);
            within(Duration::from_millis(500), Duration::from_secs(1), 30);
        }
    }

    #[test]
    fn any_number_of_failures_waits_within_max() {
        within(Duration::from_millis(50), Duration::from_millis(100), 0);
        for failures in [32, 33, 1000, u32::MAX] {
            within(Duration::from_millis(500), Duration::from_secs(1), failures);
        }
        let huge = Backoff {
            initial: Duration::MAX / 2,
            max: Duration::MAX,
        };
        assert!(huge.delay(u32::MAX) >= Duration::MAX / 2);
    }
}
