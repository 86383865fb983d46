//! Registration with retry: capped exponential backoff with jitter, bounded attempts.

use std::time::Duration;

use super::{VoltClient, VoltError, Webhook};

#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    pub attempts: u32,
    pub initial: Duration,
    pub max: Duration,
}

impl RetryPolicy {
    /// The wait after failed attempt `attempt` (1-based): doubling from `initial`, capped at
    /// `max`, then jittered into its upper half so many instances do not retry in step.
    pub fn delay(&self, attempt: u32) -> Duration {
        let exponent = attempt.saturating_sub(1).min(20);
        let ceiling = self.initial.saturating_mul(1 << exponent).min(self.max);
        let half = ceiling / 2;
        half + ceiling.mul_f64(rand::random::<f64>() * 0.5)
    }
}

/// Call `registerWebhook` until it succeeds, fails permanently, or the attempts run out.
/// `on_retry(attempt, error, delay)` is told about every failed attempt that will be retried.
pub async fn register_with_retry(
    client: &VoltClient,
    url: &str,
    policy: RetryPolicy,
    mut on_retry: impl FnMut(u32, &VoltError, Duration),
) -> Result<Webhook, VoltError> {
    let mut attempt = 1;
    loop {
        match client.register_webhook(url).await {
            Ok(webhook) => return Ok(webhook),
            Err(e) if e.is_transient() && attempt < policy.attempts => {
                let delay = policy.delay(attempt);
                tracing::warn!(
                    attempt,
                    max_attempts = policy.attempts,
                    retry_in_ms = delay.as_millis() as u64,
                    error = %e,
                    "Registration with Volt failed; will retry"
                );
                on_retry(attempt, &e, delay);
                tokio::time::sleep(delay).await;
                attempt += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delay_doubles_and_is_capped() {
        let policy = RetryPolicy {
            attempts: 10,
            initial: Duration::from_millis(100),
            max: Duration::from_secs(1),
        };
        for attempt in 1..=12 {
            let ceiling = Duration::from_millis(100 * (1 << (attempt - 1).min(10)))
                .min(Duration::from_secs(1));
            let d = policy.delay(attempt);
            assert!(d >= ceiling / 2 && d <= ceiling, "attempt {attempt}: {d:?}");
        }
    }
}
