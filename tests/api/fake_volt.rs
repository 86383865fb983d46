//! A fake of Volt's GraphQL API that behaves like the real one where it matters: it checks the
//! Bearer token and, during `registerWebhook`, probes the URL and fails unless it gets a 200.

use std::net::TcpListener;
use std::sync::Mutex;
use std::time::Duration;

use actix_web::dev::ServerHandle;
use actix_web::web::{self, Bytes};
use actix_web::{App, HttpRequest, HttpResponse, HttpServer};
use serde_json::{Value, json};

use crate::helpers::fixture;

/// What Volt's probe sends; the real body is undocumented.
pub const PROBE_BODY: &str = r#"{"test":true}"#;

/// How a wrong token is answered: the first two shapes have been seen from GraphQL servers;
/// the third is a proxy in front of one that echoes the request's headers, at length.
#[derive(Debug, Clone, Copy)]
pub enum TokenRejection {
    Http401,
    GraphQlError,
    EchoingHeaders,
}

/// One `registerWebhook` call as the fake saw it.
#[derive(Debug, Clone)]
pub struct VoltCall {
    pub authorization: Option<String>,
    pub url: Option<String>,
    /// The status the probe of `url` got, when the fake got as far as probing.
    pub probe_status: Option<u16>,
}

pub struct FakeVoltBuilder {
    token: String,
    rejection: TokenRejection,
    unavailable_first: usize,
    graphql_error: Option<String>,
}

impl FakeVoltBuilder {
    pub fn rejecting_tokens_with(mut self, rejection: TokenRejection) -> Self {
        self.rejection = rejection;
        self
    }

    /// Answer the first `calls` calls with HTTP 503.
    pub fn unavailable_first(mut self, calls: usize) -> Self {
        self.unavailable_first = calls;
        self
    }

    /// Answer every authorised call with HTTP 200 and this GraphQL error.
    pub fn graphql_error(mut self, message: &str) -> Self {
        self.graphql_error = Some(message.to_owned());
        self
    }

    pub async fn start(self) -> FakeVolt {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the fake Volt");
        let port = listener.local_addr().unwrap().port();
        let state = web::Data::new(State {
            behaviour: self,
            calls: Mutex::new(Vec::new()),
        });
        let shared = state.clone();
        let server = HttpServer::new(move || {
            App::new()
                .app_data(shared.clone())
                .route("/graphql", web::post().to(graphql))
        })
        .workers(1)
        .disable_signals()
        .listen(listener)
        .expect("serve the fake Volt")
        .run();
        let handle = server.handle();
        actix_web::rt::spawn(server);
        FakeVolt {
            port,
            state,
            handle,
        }
    }
}

struct State {
    behaviour: FakeVoltBuilder,
    calls: Mutex<Vec<VoltCall>>,
}

pub struct FakeVolt {
    port: u16,
    state: web::Data<State>,
    handle: ServerHandle,
}

impl FakeVolt {
    /// A fake that accepts `token`.
    pub fn builder(token: &str) -> FakeVoltBuilder {
        FakeVoltBuilder {
            token: token.to_owned(),
            rejection: TokenRejection::Http401,
            unavailable_first: 0,
            graphql_error: None,
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/graphql", self.port)
    }

    pub fn calls(&self) -> Vec<VoltCall> {
        self.state.calls.lock().unwrap().clone()
    }
}

impl Drop for FakeVolt {
    fn drop(&mut self) {
        drop(self.handle.stop(false));
    }
}

async fn graphql(request: HttpRequest, body: Bytes, state: web::Data<State>) -> HttpResponse {
    let mut call = VoltCall {
        authorization: request
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        url: serde_json::from_slice::<Value>(&body)
            .ok()
            .and_then(|b| b["variables"]["url"].as_str().map(str::to_owned)),
        probe_status: None,
    };
    let earlier_calls = state.calls.lock().unwrap().len();
    let response = answer(&state.behaviour, earlier_calls, &mut call).await;
    state.calls.lock().unwrap().push(call);
    response
}

async fn answer(
    behaviour: &FakeVoltBuilder,
    earlier_calls: usize,
    call: &mut VoltCall,
) -> HttpResponse {
    if earlier_calls < behaviour.unavailable_first {
        return HttpResponse::ServiceUnavailable().body("<html>upstream unavailable</html>");
    }
    if call.authorization.as_deref() != Some(&format!("Bearer {}", behaviour.token)) {
        return match behaviour.rejection {
            TokenRejection::Http401 => HttpResponse::Unauthorized()
                .json(json!({"errors":[{"message":"Unauthorized"}],"data":null})),
            TokenRejection::GraphQlError => {
                HttpResponse::Ok().body(fixture("register-unauthorized.json"))
            }
            TokenRejection::EchoingHeaders => HttpResponse::Unauthorized().body(format!(
                "<html><p>{}</p><pre>authorization: {}</pre></html>",
                "Your request was refused. ".repeat(20),
                call.authorization.as_deref().unwrap_or_default()
            )),
        };
    }
    if let Some(message) = &behaviour.graphql_error {
        return HttpResponse::Ok().json(json!({"errors":[{"message":message}],"data":null}));
    }
    let Some(url) = call.url.clone() else {
        return HttpResponse::Ok()
            .json(json!({"errors":[{"message":"Variable \"$url\" of required type \"String!\" was not provided."}]}));
    };
    call.probe_status = probe(&url).await;
    if call.probe_status != Some(200) {
        return HttpResponse::Ok().body(fixture("register-unreachable.json"));
    }
    let mut ok: Value = serde_json::from_slice(&fixture("register-ok.json")).unwrap();
    ok["data"]["registerWebhook"]["url"] = Value::String(url);
    HttpResponse::Ok().json(ok)
}

async fn probe(url: &str) -> Option<u16> {
    let client = awc::Client::builder()
        .timeout(Duration::from_secs(5))
        .finish();
    let response = client
        .post(url)
        .insert_header(("Content-Type", "application/json"))
        .send_body(PROBE_BODY)
        .await
        .ok()?;
    Some(response.status().as_u16())
}
