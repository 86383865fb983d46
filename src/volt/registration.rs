//! Registration policy: whether this instance registers `server.public_url` with Volt, the
//! retries, the record of what Volt answered, and the registration role that makes one of
//! several instances sharing a PostgreSQL store the only one that registers.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use secrecy::SecretString;
use tokio_util::sync::CancellationToken;
use url::Url;

use super::{VoltClient, VoltError};
use crate::backoff::Backoff;
use crate::config::{RegisterMode, Settings};
use crate::error_chain::ErrorChain;
use crate::store::{Role, RoleLock, Store, StoreError};
use crate::webhook::Webhook;

/// How often the registrant checks that the database still holds its registration lock.
const ROLE_CHECK_INTERVAL: Duration = Duration::from_secs(30);
/// Refused connections in a row after which `api.url` is taken to be wrong: a refusal is
/// immediate and means nothing listens there, while a timeout or an HTTP 5xx may be Volt
/// having a bad minute. A few, not one, because a proxy or Volt's own servers may be
/// restarting.
const REFUSALS_BEFORE_GIVING_UP: u32 = 3;

/// Where registration with Volt stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RegistrationState {
    Pending,
    NotRequired,
    Registered,
    Failed,
    /// Another instance sharing the PostgreSQL store holds registration.
    OtherInstance,
}

impl RegistrationState {
    pub const ALL: [Self; 5] = [
        Self::Pending,
        Self::NotRequired,
        Self::Registered,
        Self::Failed,
        Self::OtherInstance,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::NotRequired => "not_required",
            Self::Registered => "registered",
            Self::Failed => "failed",
            Self::OtherInstance => "other_instance",
        }
    }
}

/// The current [`RegistrationState`], shared by the registration task, readiness and metrics.
/// Cheap to clone; starts as pending.
#[derive(Clone, Debug, Default)]
pub struct RegistrationStatus(Arc<AtomicU8>);

impl RegistrationStatus {
    pub fn get(&self) -> RegistrationState {
        RegistrationState::ALL[usize::from(self.0.load(Ordering::Relaxed))]
    }

    fn set(&self, state: RegistrationState) {
        self.0.store(state as u8, Ordering::Relaxed);
    }
}

/// What registration reports as it goes, for metrics and the service manager.
#[derive(Debug)]
pub enum Progress<'a> {
    Started,
    /// Attempt `attempt` failed with a transient error; the next follows after `delay`.
    Retrying {
        attempt: u32,
        error: &'a VoltError,
        delay: Duration,
    },
    Finished {
        registered: bool,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum RegistrationError {
    #[error("cannot find out whether another voltd instance is registering")]
    Role(#[source] StoreError),
    #[error(
        "registration with Volt at api.url ({api_url}) failed after {attempts} attempts \
         (api.register_attempts)"
    )]
    GaveUp {
        api_url: Url,
        attempts: u32,
        #[source]
        source: VoltError,
    },
    /// The source's message names the URL.
    #[error(
        "registration with Volt failed: nothing accepts connections at api.url, refused \
         {attempts} times in a row; check that api.url is Volt's GraphQL endpoint (its scheme, \
         host name and port)"
    )]
    NothingListening {
        attempts: u32,
        #[source]
        source: VoltError,
    },
    #[error("registration with Volt at api.url ({api_url}) failed")]
    Refused {
        api_url: Url,
        #[source]
        source: VoltError,
    },
    #[error("registered with Volt, but could not record the registration in the store")]
    Record(#[source] StoreError),
}

impl RegistrationError {
    /// Volt rejected the token: a configuration problem, not worth restarting for.
    pub fn is_credential(&self) -> bool {
        matches!(self, Self::Refused { source, .. } if source.is_credential())
    }
}

#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    pub attempts: u32,
    pub backoff: Backoff,
}

/// Call `registerWebhook` until it succeeds, fails permanently, or the attempts run out
/// (or `api.url` refused the connection three times in a row).
/// `on_retry(attempt, error, delay)` is told about every failed attempt that will be retried.
pub async fn register_with_retry(
    client: &VoltClient,
    url: &str,
    policy: RetryPolicy,
    mut on_retry: impl FnMut(u32, &VoltError, Duration),
) -> Result<Webhook, RegistrationError> {
    let api_url = || client.endpoint().clone();
    let mut attempt = 1;
    let mut refusals = 0;
    loop {
        let error = match client.register_webhook(url).await {
            Ok(webhook) => return Ok(webhook),
            Err(e) => e,
        };
        refusals = if error.is_connection_refused() {
            refusals + 1
        } else {
            0
        };
        match error {
            e if !e.is_transient() => {
                return Err(RegistrationError::Refused {
                    api_url: api_url(),
                    source: e,
                });
            }
            e if refusals >= REFUSALS_BEFORE_GIVING_UP => {
                return Err(RegistrationError::NothingListening {
                    attempts: refusals,
                    source: e,
                });
            }
            e if attempt >= policy.attempts => {
                return Err(RegistrationError::GaveUp {
                    api_url: api_url(),
                    attempts: attempt,
                    source: e,
                });
            }
            e => {
                let delay = policy.backoff.delay(attempt);
                tracing::warn!(
                    attempt,
                    max_attempts = policy.attempts,
                    retry_in_ms = delay.as_millis() as u64,
                    error = %ErrorChain(&e),
                    "Registration with Volt failed; will retry"
                );
                on_retry(attempt, &e, delay);
                tokio::time::sleep(delay).await;
                attempt += 1;
            }
        }
    }
}

/// Register `server.public_url` with Volt according to `[api] register`, with `token` (see
/// [`super::token::load`]). Of the instances sharing a PostgreSQL store, only the one holding
/// the registration role registers; the role is returned, to be held (see
/// [`hold_registration`]) while this instance runs.
pub async fn register_if_configured(
    settings: &Settings,
    token: Option<SecretString>,
    store: &Store,
    status: &RegistrationStatus,
    on_progress: impl Fn(Progress<'_>),
) -> Result<Option<RoleLock>, RegistrationError> {
    let api = &settings.api;
    let Some(token) = token.filter(|_| api.should_register()) else {
        status.set(RegistrationState::NotRequired);
        if api.register == RegisterMode::Never {
            tracing::info!("Not registering with Volt: api.register = \"never\"");
        } else {
            tracing::warn!(
                "Not registering with Volt: no API token is configured. Set api.token_file in \
                 volt.toml (or VOLT_API__TOKEN) to register automatically, or register the URL \
                 in Volt's portal"
            );
        }
        return Ok(None);
    };
    let Some(role) = store
        .try_take_role(Role::Registration)
        .await
        .map_err(RegistrationError::Role)?
    else {
        status.set(RegistrationState::OtherInstance);
        tracing::info!(
            "Not registering with Volt: another voltd instance sharing this database holds \
             registration; receiving events"
        );
        return Ok(None);
    };
    let url = settings.server.public_url.as_str();
    tracing::info!(url, "Registering the webhook URL with Volt");
    on_progress(Progress::Started);
    let result = register_and_record(settings, store, token, |attempt, error, delay| {
        on_progress(Progress::Retrying {
            attempt,
            error,
            delay,
        });
    })
    .await;
    let registered = result.is_ok();
    on_progress(Progress::Finished { registered });
    status.set(if registered {
        RegistrationState::Registered
    } else {
        RegistrationState::Failed
    });
    result.map(|_| Some(role))
}

/// Hold the registration role until shutdown. The database drops the lock with the session
/// (a restart, a failover, a cut connection); that is logged, because an instance started
/// meanwhile registers again, and the role is taken back when free.
pub async fn hold_registration(store: Store, mut role: RoleLock, stop: CancellationToken) {
    let mut held = true;
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(ROLE_CHECK_INTERVAL) => {}
        }
        if held {
            if let Err(e) = role.check().await {
                held = false;
                tracing::warn!(
                    error = %ErrorChain(&e),
                    "Lost the registration lock: its database session ended, so a voltd \
                     instance that starts now registers with Volt again. Taking it back when free"
                );
            }
        } else if let Ok(Some(taken)) = store.try_take_role(Role::Registration).await {
            role = taken;
            held = true;
            tracing::info!("Holding the registration lock again");
        }
    }
}

/// Call `registerWebhook` with retries, log the webhook Volt returned and record it.
pub async fn register_and_record(
    settings: &Settings,
    store: &Store,
    token: SecretString,
    on_retry: impl FnMut(u32, &VoltError, Duration),
) -> Result<Webhook, RegistrationError> {
    let api = &settings.api;
    let client = VoltClient::new(api.url.clone(), token, api.timeout);
    let policy = RetryPolicy {
        attempts: api.register_attempts,
        backoff: Backoff {
            initial: api.retry_initial,
            max: api.retry_max,
        },
    };
    let url = settings.server.public_url.as_str();
    let webhook = register_with_retry(&client, url, policy, on_retry).await?;
    tracing::info!(
        webhook_id = webhook.id,
        url = webhook.url,
        "Registered with Volt"
    );
    store
        .record_registration(&webhook)
        .await
        .map_err(RegistrationError::Record)?;
    Ok(webhook)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_status_reads_back_every_state() {
        let status = RegistrationStatus::default();
        assert_eq!(status.get(), RegistrationState::Pending);
        for state in RegistrationState::ALL {
            status.set(state);
            assert_eq!(status.get(), state);
        }
    }
}
