//! The web inbox on the admin listener: the newest events (live over Server-Sent Events),
//! one event, the conversation with one number, the deliveries waiting or given up, and a
//! status strip on every page.
//!
//! Pages are rendered on the server with maud, which escapes every value it is given: an
//! event body is any text Volt (or anyone who found the URL) sent, HTML and script included.
//! The stylesheet and the one small script are compiled in, and the Content-Security-Policy
//! allows nothing from elsewhere and no inline script, so a value that slipped through could
//! still not run. Replay buttons exist only with `[admin] ui_actions = true`, and only as
//! POST forms carrying the process's CSRF token.
//!
//! Rejected: a JavaScript front end over a JSON API (a build step, and a second place for
//! escaping to go wrong); askama templates (one more file per page for pages this small).

mod actions;
mod auth;
mod live;
mod pages;
mod params;
mod views;

use std::sync::Arc;

use actix_web::http::header;
use actix_web::{HttpResponse, ResponseError, web};
use tokio_util::sync::CancellationToken;

pub use auth::UiPasswordError;

use crate::config::Settings;
use crate::error_chain::ErrorChain;
use crate::ops::admin::{self, AdminState};
use crate::store::{Store, StoreError};
use crate::volt::registration::RegistrationState;

/// What the pages read: the store, the daemon's state for the status strip, and the
/// settings of the optional parts.
#[derive(Clone)]
pub struct UiState {
    store: Store,
    admin: AdminState,
    public_url: Arc<str>,
    password: Option<auth::Password>,
    /// Present when `[admin] ui_actions` is on.
    actions: Option<actions::Actions>,
    /// Cancelled at shutdown: live streams end, so the admin listener stops at once.
    streams: CancellationToken,
}

impl UiState {
    /// Read the password file when one is configured.
    pub fn new(
        settings: &Settings,
        store: Store,
        admin: AdminState,
        streams: CancellationToken,
    ) -> Result<Self, UiPasswordError> {
        let password = match &settings.admin.ui_password_file {
            Some(file) => Some(auth::Password::load(file)?),
            None => None,
        };
        let actions = settings
            .admin
            .ui_actions
            .then(|| actions::Actions::new(settings.forward.clone()));
        Ok(Self {
            store,
            admin,
            public_url: settings.server.public_url.as_str().into(),
            password,
            actions,
            streams,
        })
    }
}

/// Add the inbox's routes to the admin listener.
pub fn configure(cfg: &mut web::ServiceConfig, state: UiState) {
    cfg.app_data(web::Data::new(state))
        .route("/", web::get().to(pages::inbox))
        .route("/live", web::get().to(live::stream))
        .route("/events/{id}", web::get().to(pages::event))
        .route("/events/{id}/replay", web::post().to(actions::replay_event))
        .route(
            "/conversations/{number}",
            web::get().to(pages::conversation),
        )
        .route("/deliveries", web::get().to(pages::deliveries))
        .route(
            "/deliveries/{id}/retry",
            web::post().to(actions::retry_delivery),
        )
        .route("/assets/style.css", web::get().to(style))
        .route("/assets/inbox.js", web::get().to(script));
}

async fn style() -> HttpResponse {
    asset("text/css; charset=utf-8", include_str!("assets/style.css"))
}

async fn script() -> HttpResponse {
    asset(
        "text/javascript; charset=utf-8",
        include_str!("assets/inbox.js"),
    )
}

fn asset(content_type: &'static str, body: &'static str) -> HttpResponse {
    HttpResponse::Ok()
        .content_type(content_type)
        .insert_header((header::CACHE_CONTROL, "max-age=300"))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .body(body)
}

/// Nothing but this listener's own stylesheet and script, no inline script, no framing.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; style-src 'self'; script-src 'self'; \
    connect-src 'self'; img-src 'self'; form-action 'self'; base-uri 'none'; \
    frame-ancestors 'none'";

/// An HTML page with the headers every page carries.
fn html(status: actix_web::http::StatusCode, markup: maud::Markup) -> HttpResponse {
    HttpResponse::build(status)
        .content_type("text/html; charset=utf-8")
        .insert_header((header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((header::REFERRER_POLICY, "no-referrer"))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .body(markup.into_string())
}

/// Why a page cannot be shown.
#[derive(Debug, thiserror::Error)]
enum PageError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("cannot read the store; voltd's log has the cause")]
    Store(#[from] StoreError),
}

impl ResponseError for PageError {
    fn status_code(&self) -> actix_web::http::StatusCode {
        use actix_web::http::StatusCode;
        match self {
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::Store(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        if let Self::Store(e) = self {
            tracing::error!(error = %ErrorChain(e), "Web inbox cannot read the store");
        }
        html(self.status_code(), views::error_page(&self.to_string()))
    }
}

/// What the status strip shows, read without touching the database.
struct Status {
    registration: RegistrationState,
    public_url: Arc<str>,
    ready: Result<(), String>,
    stored_since_start: u64,
    duplicates: u64,
    delivery_backlog: i64,
}

impl Status {
    fn of(state: &UiState) -> Self {
        let metrics = &state.admin.metrics;
        Self {
            registration: state.admin.registration.get(),
            public_url: state.public_url.clone(),
            ready: admin::readiness(&state.admin),
            stored_since_start: metrics.stored_since_start(),
            duplicates: metrics.duplicates(),
            delivery_backlog: metrics.delivery_backlog(),
        }
    }
}
