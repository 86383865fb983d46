//! Building and running the daemon in the order Volt requires: serve first, then register
//! (Volt probes the URL during `registerWebhook`), then tell systemd we are ready.

use std::net::{SocketAddr, TcpListener};
use std::time::Duration;

use actix_web::dev::Server;
use actix_web::{App, HttpServer, web};
use anyhow::Context;
use secrecy::SecretString;
use tokio_util::sync::CancellationToken;

use crate::config::Settings;
use crate::store::{Registration, Store, WriterTask};
use crate::volt::{RetryPolicy, VoltClient, VoltError, Webhook, register_with_retry};
use crate::{receiver, systemd};

/// A daemon whose store is open and whose listener is bound and serving.
pub struct Application {
    settings: Settings,
    server: Server,
    local_addr: SocketAddr,
    store: Store,
    writer_task: WriterTask,
}

impl Application {
    /// Open the store, apply migrations and bind `server.listen`.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let listen = settings.server.listen;
        let listener = TcpListener::bind(listen).with_context(|| {
            format!(
                "cannot listen on {listen}; is another process using the port? \
                 Change server.listen (or VOLT_SERVER__LISTEN)"
            )
        })?;
        Self::build_with_listener(settings, listener).await
    }

    /// As [`Application::build`], on a listener bound by the caller (tests bind port 0 first
    /// so the public URL can name the real port).
    pub async fn build_with_listener(
        settings: Settings,
        listener: TcpListener,
    ) -> anyhow::Result<Self> {
        let store = Store::open(&settings.storage.url).await?;
        store.migrate().await?;
        let (writer, writer_task) = store
            .start_writer(settings.storage.queue_capacity, settings.storage.max_batch)
            .await?;
        let local_addr = listener.local_addr()?;
        let path = settings.server.webhook_path().to_owned();
        let max_body = settings.server.max_body_bytes;
        let writer = web::Data::new(writer);
        let server = HttpServer::new(move || {
            App::new()
                .app_data(writer.clone())
                .configure(receiver::configure(&path, max_body))
        })
        .listen(listener)
        .with_context(|| format!("cannot serve on {local_addr}"))?
        // Signals are handled in one place (the CLI) so shutdown also stops registration.
        .disable_signals()
        .shutdown_timeout(settings.server.shutdown_timeout.as_secs())
        .run();
        Ok(Self {
            settings,
            server,
            local_addr,
            store,
            writer_task,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Serve, register when configured, report readiness, and run until `stop` is
    /// cancelled. In-flight requests finish (their commit included) before the store closes.
    pub async fn run_until_stopped(self, stop: CancellationToken) -> anyhow::Result<()> {
        let Self {
            settings,
            server,
            local_addr,
            store,
            writer_task,
        } = self;
        let handle = server.handle();
        let mut serving = actix_web::rt::spawn(server);
        tracing::info!(
            listen = %local_addr,
            path = settings.server.webhook_path(),
            public_url = %settings.server.public_url,
            "Receiving webhook events on http://{local_addr}{}",
            settings.server.webhook_path()
        );
        for warning in settings.warnings() {
            tracing::warn!("{warning}");
        }

        let registered = tokio::select! {
            result = register_if_configured(&settings, &store) => result,
            () = stop.cancelled() => Ok(()),
        };
        let result = match registered {
            Ok(()) if !stop.is_cancelled() => {
                let stored = store.count_events().await.unwrap_or_default();
                systemd::ready(&format!("ready: {stored} events stored"));
                tokio::select! {
                    () = stop.cancelled() => Ok(()),
                    ended = &mut serving => Err(anyhow::anyhow!(
                        "the HTTP server stopped unexpectedly: {ended:?}"
                    )),
                }
            }
            other => other,
        };

        tracing::info!("Shutting down: finishing in-flight requests");
        systemd::stopping();
        handle.stop(true).await;
        let _ = serving.await;
        writer_task.shutdown().await;
        store.close().await;
        tracing::info!("Stopped");
        result
    }
}

/// Register `server.public_url` with Volt according to `[api] register`.
async fn register_if_configured(settings: &Settings, store: &Store) -> anyhow::Result<()> {
    let api = &settings.api;
    let Some(token) = api.token.clone().filter(|_| api.should_register()) else {
        if api.token.is_none() {
            tracing::warn!(
                "Not registering with Volt: no API token is configured. Set api.token_file in \
                 volt.toml (or VOLT_API__TOKEN) to register automatically, or register the URL \
                 in Volt's portal"
            );
        } else {
            tracing::info!("Not registering with Volt: api.register = \"never\"");
        }
        return Ok(());
    };
    let url = settings.server.public_url.as_str();
    tracing::info!(url, "Registering the webhook URL with Volt");
    systemd::status("registering with Volt");
    register_and_record(settings, store, token, |attempt, error, delay| {
        systemd::status(&format!(
            "registering with Volt, attempt {}: {}",
            attempt + 1,
            short(error)
        ));
        systemd::extend_start_timeout(delay + api.timeout * 2);
    })
    .await?;
    Ok(())
}

/// Call `registerWebhook` with retries, log the webhook Volt returned and record it.
pub async fn register_and_record(
    settings: &Settings,
    store: &Store,
    token: SecretString,
    on_retry: impl FnMut(u32, &VoltError, Duration),
) -> anyhow::Result<Webhook> {
    let api = &settings.api;
    let client = VoltClient::new(api.url.clone(), token, api.timeout);
    let policy = RetryPolicy {
        attempts: api.register_attempts,
        initial: api.retry_initial,
        max: api.retry_max,
    };
    let url = settings.server.public_url.as_str();
    let webhook = register_with_retry(&client, url, policy, on_retry)
        .await
        .map_err(|e| registration_failed(e, api.register_attempts))?;
    tracing::info!(
        webhook_id = webhook.id,
        url = webhook.url,
        "Registered with Volt"
    );
    store
        .record_registration(&Registration {
            webhook_id: webhook.id.clone(),
            url: webhook.url.clone(),
            created_at: webhook.created_at.clone(),
            last_updated_at: webhook.last_updated_at.clone(),
        })
        .await
        .context("registered with Volt, but could not record the registration in the store")?;
    Ok(webhook)
}

fn registration_failed(error: VoltError, attempts: u32) -> anyhow::Error {
    if error.is_transient() {
        anyhow::Error::new(error).context(format!(
            "registration with Volt failed after {attempts} attempts (api.register_attempts)"
        ))
    } else {
        anyhow::Error::new(error)
    }
}

fn short(error: &VoltError) -> String {
    match error {
        VoltError::WebhookUnreachable { .. } => "Volt could not reach public_url".to_owned(),
        other => other.to_string().chars().take(120).collect(),
    }
}
