//! Wiring: build the daemon's parts from the settings and run them in the order Volt requires:
//! serve first, then register (Volt probes the URL during `registerWebhook`), then tell
//! systemd we are ready.

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::Server;
use anyhow::Context;
use secrecy::SecretString;
use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

use crate::config::Settings;
use crate::error_chain::ErrorChain;
use crate::ops::admin::{self, AdminState};
use crate::ops::metrics::Metrics;
use crate::ops::{systemd, watchdog};
use crate::receiver::signatures::SignatureCheck;
use crate::receiver::tls::{self, ReloadableCert};
use crate::receiver::{self, Receiver};
use crate::store::{OpenRetry, Store, WriterTask, retention};
use crate::ui::{self, UiState};
use crate::volt::registration::{self, Progress, RegistrationStatus};

/// A daemon whose store is open and whose listeners are bound and serving.
pub struct Application {
    settings: Settings,
    token: Option<SecretString>,
    server: Server,
    admin_server: Option<(Server, SocketAddr)>,
    local_addr: SocketAddr,
    store: Store,
    writer_task: WriterTask,
    admin_state: AdminState,
    tls: Option<Arc<ReloadableCert>>,
    /// Ends the web inbox's live streams, which would otherwise hold the admin listener open
    /// at shutdown.
    ui_streams: CancellationToken,
}

impl Application {
    /// Read Volt's public key, bind `server.listen`, open the store and apply migrations.
    /// `token` is the Volt API token, read by the caller (see [`crate::volt::token`]).
    pub async fn build(settings: Settings, token: Option<SecretString>) -> anyhow::Result<Self> {
        let signatures = SignatureCheck::load(&settings.verify)?;
        let listen = settings.server.listen;
        let listener = TcpListener::bind(listen).with_context(|| {
            format!(
                "cannot listen on {listen}; is another process using the port? \
                 Change server.listen (or VOLT_SERVER__LISTEN)"
            )
        })?;
        Self::assemble(settings, token, signatures, listener).await
    }

    /// As [`Application::build`], on a listener bound by the caller (tests bind port 0 first
    /// so the public URL can name the real port).
    pub async fn build_with_listener(
        settings: Settings,
        token: Option<SecretString>,
        listener: TcpListener,
    ) -> anyhow::Result<Self> {
        let signatures = SignatureCheck::load(&settings.verify)?;
        Self::assemble(settings, token, signatures, listener).await
    }

    async fn assemble(
        settings: Settings,
        token: Option<SecretString>,
        signatures: SignatureCheck,
        listener: TcpListener,
    ) -> anyhow::Result<Self> {
        crate::forward::check_files(&settings.forward)?;
        if let Some(key) = &signatures.key {
            tracing::info!(
                mode = ?signatures.mode,
                bits = key.bits(),
                fingerprint = key.fingerprint(),
                "Checking Volt signatures"
            );
        }
        let store = Store::open_patiently(
            &settings.storage.url,
            settings.storage.startup_retry,
            report_store_wait,
        )
        .await?;
        store.migrate().await?;
        crate::forward::prepare(&store, &settings.forward).await?;
        let metrics = Metrics::new();
        let commit_metrics = metrics.clone();
        let (writer, writer_task) = store
            .start_writer(
                settings.storage.queue_capacity,
                settings.storage.max_batch,
                settings.storage.dedup_window,
                Arc::new(move |events, took| {
                    commit_metrics.batch_committed(events, took.as_secs_f64());
                }),
            )
            .await?;
        let admin_state = AdminState {
            writer: writer.clone(),
            metrics: metrics.clone(),
            registration: RegistrationStatus::default(),
        };
        let local_addr = listener.local_addr()?;
        let receiver = Receiver::new(
            writer,
            metrics,
            signatures,
            settings.server.max_body_bytes,
            settings.server.request_timeout,
        );
        let tls = match settings.server.tls() {
            Some(files) => Some(ReloadableCert::load(files.cert, files.key)?),
            None => None,
        };
        let server = receiver::serve(&settings.server, listener, receiver, tls.as_ref())?;
        let ui_streams = CancellationToken::new();
        let inbox = match settings.admin.serves_ui() {
            true => Some(UiState::new(
                &settings,
                store.clone(),
                admin_state.clone(),
                ui_streams.clone(),
            )?),
            false => None,
        };
        let admin_server = admin::serve(&settings.admin, admin_state.clone(), move |cfg| {
            if let Some(inbox) = &inbox {
                ui::configure(cfg, inbox.clone());
            }
        })?;
        Ok(Self {
            settings,
            token,
            server,
            admin_server,
            local_addr,
            store,
            writer_task,
            admin_state,
            tls,
            ui_streams,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Where health and metrics are served, when the admin listener is on.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin_server.as_ref().map(|(_, addr)| *addr)
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Serve, register when configured, report readiness, and run until `stop` is
    /// cancelled. In-flight requests finish (their commit included) before the store closes.
    pub async fn run_until_stopped(self, stop: CancellationToken) -> anyhow::Result<()> {
        let Self {
            settings,
            token,
            server,
            admin_server,
            local_addr,
            store,
            writer_task,
            admin_state,
            tls,
            ui_streams,
        } = self;
        let handle = server.handle();
        let mut serving = actix_web::rt::spawn(server);
        tracing::info!(
            listen = %local_addr,
            path = settings.server.webhook_path(),
            public_url = %settings.server.public_url,
            "Receiving webhook events on {}://{local_addr}{}",
            if tls.is_some() { "https" } else { "http" },
            settings.server.webhook_path()
        );
        let admin = admin_server.map(|(server, addr)| {
            tracing::info!(listen = %addr, "Serving /healthz, /readyz and /metrics on http://{addr}");
            if settings.admin.serves_ui() {
                tracing::info!(listen = %addr, "Serving the web inbox on http://{addr}/");
            }
            (server.handle(), actix_web::rt::spawn(server))
        });
        for warning in settings.warnings() {
            tracing::warn!("{warning}");
        }
        let mut background = Vec::new();
        // Installed before anything is logged as ready, so no SIGHUP can meet the default
        // action (terminate).
        match signal(SignalKind::hangup()) {
            Ok(hangup) => background.push(actix_web::rt::spawn(tls::reload_on_hangup(
                hangup,
                tls,
                stop.clone(),
            ))),
            Err(e) => {
                tracing::warn!(error = %ErrorChain(&e), "Cannot listen for SIGHUP; TLS certificates will not be reloaded")
            }
        }
        if let Some(retention) = settings.storage.retention {
            background.push(actix_web::rt::spawn(retention::run(
                store.clone(),
                retention,
                stop.clone(),
            )));
        }
        let metrics = admin_state.metrics.clone();
        if !settings.forward.is_empty() {
            background.push(actix_web::rt::spawn(crate::forward::run_on_own_thread(
                store.clone(),
                settings.forward.clone(),
                metrics.clone(),
                stop.clone(),
            )));
        }
        let report = |progress: Progress<'_>| report_registration(&metrics, &settings, progress);
        let registering = registration::register_if_configured(
            &settings,
            token,
            &store,
            &admin_state.registration,
            report,
        );
        let registered = tokio::select! {
            result = registering => result,
            () = stop.cancelled() => Ok(None),
        };
        let result = match registered {
            Ok(role) => {
                // Held until shutdown, so no other instance registers while this one runs.
                if let Some(role) = role {
                    background.push(actix_web::rt::spawn(registration::hold_registration(
                        store.clone(),
                        role,
                        stop.clone(),
                    )));
                }
                Ok(())
            }
            Err(e) => Err(anyhow::Error::new(e)),
        };
        let result = match result {
            Ok(()) if !stop.is_cancelled() => {
                let stored = store.count_events().await.unwrap_or_default();
                systemd::ready(&format!("ready: {stored} events stored"));
                background.push(actix_web::rt::spawn(watchdog::run(
                    admin_state,
                    stored,
                    stop.clone(),
                )));
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
        stop.cancel();
        handle.stop(true).await;
        let _ = serving.await;
        if let Some((admin_handle, admin_serving)) = admin {
            ui_streams.cancel();
            admin_handle.stop(true).await;
            let _ = admin_serving.await;
        }
        for task in background {
            let _ = task.await;
        }
        writer_task.shutdown(settings.server.shutdown_timeout).await;
        store.close().await;
        tracing::info!("Stopped");
        result
    }
}

/// The longest one attempt to open the database takes (connecting, then the pool's first
/// connection, each within PostgreSQL's 10 s answer timeout), for systemd's start timeout.
const STORE_ATTEMPT_TIME: Duration = Duration::from_secs(30);

/// A database not reachable yet at start-up: said in the log and systemd's status line, and
/// systemd is asked for more start-up time, as registration does.
fn report_store_wait(retry: OpenRetry<'_>) {
    tracing::warn!(
        attempt = retry.attempt,
        retry_in_ms = retry.delay.as_millis() as u64,
        error = %ErrorChain(retry.error),
        "Cannot reach the database yet; will retry (storage.startup_retry_secs)"
    );
    let mut cause: &dyn std::error::Error = retry.error;
    while let Some(source) = cause.source() {
        cause = source;
    }
    let cause: String = cause.to_string().chars().take(120).collect();
    systemd::status(&format!(
        "waiting for the database, attempt {}: {cause}",
        retry.attempt + 1
    ));
    systemd::extend_start_timeout(retry.delay + STORE_ATTEMPT_TIME);
}

/// Registration's progress in the metrics and in systemd's status line; while it retries,
/// systemd is asked for more start-up time.
fn report_registration(metrics: &Metrics, settings: &Settings, progress: Progress<'_>) {
    match progress {
        Progress::Started => systemd::status("registering with Volt"),
        Progress::Retrying {
            attempt,
            error,
            delay,
        } => {
            metrics.registration_attempt("transient_failure");
            systemd::status(&format!(
                "registering with Volt, attempt {}: {}",
                attempt + 1,
                error.brief()
            ));
            systemd::extend_start_timeout(delay + settings.api.timeout * 2);
        }
        Progress::Finished { registered } => {
            metrics.registration_attempt(if registered { "success" } else { "failure" });
        }
    }
}
