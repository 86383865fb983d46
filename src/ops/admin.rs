//! The admin listener: liveness, readiness and Prometheus metrics, kept off the public
//! webhook listener so they are never exposed to the internet by the reverse proxy. The web
//! inbox is served here too, added by the caller (`routes`), so that this layer knows
//! nothing of it.

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;

use actix_web::dev::Server;
use actix_web::{App, HttpResponse, HttpServer, web};
use anyhow::Context;

use super::metrics::Metrics;
use crate::config::AdminSettings;
use crate::error_chain::ErrorChain;
use crate::store::EventWriter;
use crate::volt::registration::{RegistrationState, RegistrationStatus};

/// What health, readiness and metrics look at.
#[derive(Clone)]
pub struct AdminState {
    pub writer: EventWriter,
    pub metrics: Arc<Metrics>,
    pub registration: RegistrationStatus,
}

/// Bind the admin listener and start serving on it, with `routes` after its own. A default
/// address that is taken only costs the admin endpoints (a second instance on one host still
/// receives events); an explicit one is fatal.
pub fn serve(
    settings: &AdminSettings,
    state: AdminState,
    routes: impl Fn(&mut web::ServiceConfig) + Clone + Send + 'static,
) -> anyhow::Result<Option<(Server, SocketAddr)>> {
    let Some(listen) = settings.address() else {
        return Ok(None);
    };
    let listener = match TcpListener::bind(listen) {
        Ok(listener) => listener,
        Err(e) if !settings.is_explicit() => {
            tracing::warn!(
                listen = %listen,
                error = %ErrorChain(&e),
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
    let server = HttpServer::new(move || {
        App::new()
            .configure(configure(state.clone()))
            .configure(routes.clone())
    })
    .workers(1)
    .listen(listener)
    .with_context(|| format!("cannot serve the admin endpoints on {addr}"))?
    .disable_signals()
    .shutdown_timeout(5)
    .run();
    Ok(Some((server, addr)))
}

fn configure(state: AdminState) -> impl FnOnce(&mut web::ServiceConfig) {
    move |cfg| {
        cfg.app_data(web::Data::new(state))
            .route("/healthz", web::get().to(healthz))
            .route("/readyz", web::get().to(readyz))
            .route("/metrics", web::get().to(metrics));
    }
}

/// Alive: the process answers. Deliberately touches nothing else.
async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({ "status": "ok" }))
}

/// Ready: the store commits and registration is done or not required.
async fn readyz(state: web::Data<AdminState>) -> HttpResponse {
    match readiness(&state) {
        Ok(()) => HttpResponse::Ok().json(serde_json::json!({ "status": "ready" })),
        Err(reason) => HttpResponse::ServiceUnavailable()
            .json(serde_json::json!({ "status": "not ready", "reason": reason })),
    }
}

/// Whether the daemon can take events and is known to Volt; the reason when not.
pub fn readiness(state: &AdminState) -> Result<(), String> {
    store_health(state)?;
    match state.registration.get() {
        RegistrationState::Registered
        | RegistrationState::NotRequired
        | RegistrationState::OtherInstance => Ok(()),
        RegistrationState::Pending => Err("registration with Volt in progress".to_owned()),
        RegistrationState::Failed => Err("registration with Volt failed".to_owned()),
    }
}

/// Whether events can be stored: the writer runs, its last commit succeeded, and none has
/// been running too long. Read from the writer's status, never by asking the database, so
/// it is known at once and never waits: readiness answers within milliseconds whatever the
/// database does (a probe's own timeout is often one second).
pub fn store_health(state: &AdminState) -> Result<(), String> {
    if state.writer.is_closed() {
        return Err("the store writer has stopped".to_owned());
    }
    state
        .writer
        .health()
        .check()
        .map_err(|problem| problem.to_string())
}

async fn metrics(state: web::Data<AdminState>) -> HttpResponse {
    state
        .metrics
        .set_store_healthy(store_health(&state).is_ok());
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(
            state
                .metrics
                .render(state.writer.queue_depth(), state.registration.get()),
        )
}
