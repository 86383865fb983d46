//! Building and running the daemon in the order Volt requires: serve first, then register
//! (Volt probes the URL during `registerWebhook`), then tell systemd we are ready.

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::Server;
use actix_web::middleware::{Condition, from_fn};
use actix_web::{App, HttpServer, web};
use anyhow::Context;
use secrecy::SecretString;
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio_util::sync::CancellationToken;

use crate::config::{RegisterMode, Settings};
use crate::ops::admin::{self, AdminState};
use crate::ops::metrics::{Metrics, RegistrationState};
use crate::ops::{systemd, watchdog};
use crate::receiver::access::{self, AccessPolicy};
use crate::receiver::tls::ReloadableCert;
use crate::receiver::{self, Receiver};
use crate::store::retention;
use crate::store::{Registration, Role, RoleLock, Store, WriterTask};
use crate::volt::{RetryPolicy, VoltClient, VoltError, Webhook, register_with_retry};

/// A daemon whose store is open and whose listeners are bound and serving.
pub struct Application {
    settings: Settings,
    server: Server,
    admin_server: Option<(Server, SocketAddr)>,
    local_addr: SocketAddr,
    store: Store,
    writer_task: WriterTask,
    admin_state: AdminState,
    tls: Option<Arc<ReloadableCert>>,
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
        crate::forward::prepare(&store, &settings.forward).await?;
        let metrics = Metrics::new();
        let commit_metrics = metrics.clone();
        let (writer, writer_task) = store
            .start_writer(
                settings.storage.queue_capacity,
                settings.storage.max_batch,
                Arc::new(move |events, took| {
                    commit_metrics.batch_committed(events, took.as_secs_f64());
                }),
            )
            .await?;
        let admin_state = AdminState {
            store: store.clone(),
            writer: writer.clone(),
            metrics: metrics.clone(),
        };
        let local_addr = listener.local_addr()?;
        let path = settings.server.webhook_path().to_owned();
        let receiver = web::Data::new(Receiver::new(
            writer,
            metrics,
            settings.verify.clone(),
            settings.server.max_body_bytes,
            settings.server.request_timeout,
        ));
        let tls = match &settings.server.tls {
            Some(files) => Some(ReloadableCert::load(&files.cert, &files.key)?),
            None => None,
        };
        let access = web::Data::new(AccessPolicy::new(
            settings.server.allow_ips.clone(),
            settings.server.trusted_proxies.clone(),
            admin_state.metrics.clone(),
        ));
        let filter_clients =
            !settings.server.allow_ips.is_empty() || !settings.server.trusted_proxies.is_empty();
        let server = HttpServer::new(move || {
            App::new()
                .app_data(access.clone())
                // Without allow_ips or trusted proxies the peer address is all there is to know.
                .wrap(Condition::new(filter_clients, from_fn(access::enforce)))
                .configure(receiver::configure(&path, receiver.clone()))
        })
        // A slow or silent client holds only its own connection, and only this long.
        .client_request_timeout(settings.server.request_timeout)
        .client_disconnect_timeout(Duration::from_secs(5))
        .max_connections(per_worker(settings.server.max_connections));
        let server = match &tls {
            Some(cert) => server.listen_rustls_0_23(listener, cert.server_config()?),
            None => server.listen(listener),
        }
        .with_context(|| format!("cannot serve on {local_addr}"))?
        // Signals are handled in one place (the CLI) so shutdown also stops registration.
        .disable_signals()
        .shutdown_timeout(settings.server.shutdown_timeout.as_secs())
        .run();
        let admin_server = build_admin(&settings, admin_state.clone())?;
        Ok(Self {
            settings,
            server,
            admin_server,
            local_addr,
            store,
            writer_task,
            admin_state,
            tls,
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
            server,
            admin_server,
            local_addr,
            store,
            writer_task,
            admin_state,
            tls,
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
            (server.handle(), actix_web::rt::spawn(server))
        });
        if let Some(key) = &settings.verify.key {
            tracing::info!(
                mode = ?settings.verify.mode,
                bits = key.bits(),
                fingerprint = key.fingerprint(),
                "Checking Volt signatures"
            );
        }
        for warning in settings.warnings() {
            tracing::warn!("{warning}");
        }
        let mut background = Vec::new();
        // Installed before anything is logged as ready, so no SIGHUP can meet the default
        // action (terminate).
        match signal(SignalKind::hangup()) {
            Ok(hangup) => background.push(actix_web::rt::spawn(reload_on_sighup(
                hangup,
                tls,
                stop.clone(),
            ))),
            Err(e) => {
                tracing::warn!(error = %e, "Cannot listen for SIGHUP; TLS certificates will not be reloaded")
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
        let registered = tokio::select! {
            result = register_if_configured(&settings, &store, &metrics) => result,
            () = stop.cancelled() => Ok(None),
        };
        // Held until shutdown, so no other instance registers while this one runs.
        let result = match registered {
            Ok(Some(role)) => {
                background.push(actix_web::rt::spawn(hold_registration(
                    store.clone(),
                    role,
                    stop.clone(),
                )));
                Ok(())
            }
            Ok(None) => Ok(()),
            Err(e) => Err(e),
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

/// actix applies its connection cap per worker thread.
fn per_worker(total: usize) -> usize {
    let workers = std::thread::available_parallelism().map_or(1, usize::from);
    total.div_ceil(workers).max(1)
}

/// SIGHUP re-reads the TLS certificate and key; a bad pair is logged and the old one kept.
/// Without TLS the signal is acknowledged and ignored, rather than ending the process as
/// SIGHUP does by default (`systemctl reload` must never stop the receiver).
async fn reload_on_sighup(
    mut hangup: Signal,
    cert: Option<Arc<ReloadableCert>>,
    stop: CancellationToken,
) {
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = hangup.recv() => match cert.as_deref().map(ReloadableCert::reload) {
                Some(Ok(())) => tracing::info!("TLS certificate reloaded"),
                Some(Err(e)) => tracing::error!(error = %e, "TLS certificate not reloaded; keeping the current one"),
                None => tracing::info!("SIGHUP received; nothing to reload without TLS"),
            },
        }
    }
}

/// Bind the admin listener. A default address that is taken only costs the health and metrics
/// endpoints (a second instance on one host still receives events); an explicit one is fatal.
fn build_admin(
    settings: &Settings,
    state: AdminState,
) -> anyhow::Result<Option<(Server, SocketAddr)>> {
    let Some(listen) = settings.admin.listen else {
        return Ok(None);
    };
    let listener = match TcpListener::bind(listen) {
        Ok(listener) => listener,
        Err(e) if !settings.admin.explicit => {
            tracing::warn!(
                listen = %listen,
                error = %e,
                "Admin listener not started: its default address is taken; set admin.listen \
                 to a free address (or admin.enabled = false)"
            );
            return Ok(None);
        }
        Err(e) => {
            return Err(anyhow::Error::new(e).context(format!(
                "cannot listen on {listen} for the admin endpoints; change admin.listen"
            )));
        }
    };
    let addr = listener.local_addr()?;
    let server = HttpServer::new(move || App::new().configure(admin::configure(state.clone())))
        .workers(1)
        .listen(listener)?
        .disable_signals()
        .shutdown_timeout(5)
        .run();
    Ok(Some((server, addr)))
}

/// Register `server.public_url` with Volt according to `[api] register`. Of the instances
/// sharing a PostgreSQL store, only the one holding the registration role registers; the
/// role is returned, to be held while this instance runs.
async fn register_if_configured(
    settings: &Settings,
    store: &Store,
    metrics: &Metrics,
) -> anyhow::Result<Option<RoleLock>> {
    let api = &settings.api;
    let Some(token) = api.token.clone().filter(|_| api.should_register()) else {
        metrics.set_registration_state(RegistrationState::not_required);
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
        .context("cannot find out whether another voltd instance is registering")?
    else {
        metrics.set_registration_state(RegistrationState::other_instance);
        tracing::info!(
            "Not registering with Volt: another voltd instance sharing this database holds \
             registration; receiving events"
        );
        return Ok(None);
    };
    let url = settings.server.public_url.as_str();
    tracing::info!(url, "Registering the webhook URL with Volt");
    systemd::status("registering with Volt");
    let result = register_and_record(settings, store, token, |attempt, error, delay| {
        metrics.registration_attempt("transient_failure");
        systemd::status(&format!(
            "registering with Volt, attempt {}: {}",
            attempt + 1,
            short(error)
        ));
        systemd::extend_start_timeout(delay + api.timeout * 2);
    })
    .await;
    match &result {
        Ok(_) => {
            metrics.registration_attempt("success");
            metrics.set_registration_state(RegistrationState::registered);
        }
        Err(_) => {
            metrics.registration_attempt("failure");
            metrics.set_registration_state(RegistrationState::failed);
        }
    }
    result.map(|_| Some(role))
}

/// How often the registrant checks that the database still holds its registration lock.
const ROLE_CHECK_INTERVAL: Duration = Duration::from_secs(30);

/// Hold the registration role until shutdown. The database drops the lock with the session
/// (a restart, a failover, a cut connection); that is logged, because an instance started
/// meanwhile registers again, and the role is taken back when free.
async fn hold_registration(store: Store, mut role: RoleLock, stop: CancellationToken) {
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
                    error = %e,
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
