//! The operator's one HTTP port: `/metrics` (Prometheus), `/healthz` and
//! `/readyz` (probes), and `/api/v1/events/project-sync/{namespace}/{name}`,
//! which streams the live progress of a resource's run as Server-Sent Events
//! (what a browser or `curl -N` follows while a sync runs), plus the webhook
//! receiver's `/hooks/...` routes
//! ([`crate::webhook`]). Does network I/O.

use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use axum::{
    Router,
    extract::{Path, State},
    http::{StatusCode, header},
    response::{
        IntoResponse, Response,
        sse::{Event, KeepAlive, Sse},
    },
    routing::get,
};
use futures::{Stream, StreamExt, future, stream};
use tokio_stream::wrappers::{BroadcastStream, errors::BroadcastStreamRecvError};

use crate::{metrics::Metrics, pipeline::SyncEvent, progress::ProgressHub, webhook};

/// Whether the operator can do its job; `/readyz` answers from it.
#[derive(Clone, Default)]
pub struct Readiness(Arc<AtomicBool>);

impl Readiness {
    /// Marks the operator ready (store migrated, controller watching) or not.
    pub fn set(&self, ready: bool) {
        self.0.store(ready, Ordering::SeqCst);
    }

    /// Whether the operator is ready.
    pub fn get(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// What the handlers share.
#[derive(Clone)]
pub struct HttpState {
    pub metrics: Metrics,
    pub hub: ProgressHub,
    pub readiness: Readiness,
    pub webhooks: webhook::Receiver,
}

/// The routes.
pub fn router(state: HttpState) -> Router {
    let hooks = webhook::router(state.webhooks.clone());
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route(
            "/api/v1/events/project-sync/{namespace}/{name}",
            get(events),
        )
        .with_state(state)
        .merge(hooks)
}

/// Serves the routes on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: HttpState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
}

/// Binds the HTTP port.
pub async fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await
}

async fn metrics(State(state): State<HttpState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(),
    )
        .into_response()
}

async fn readyz(State(state): State<HttpState>) -> Response {
    if state.readiness.get() {
        (StatusCode::OK, "ready").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready").into_response()
    }
}

/// The SSE stream of one resource: first a `snapshot` of the last event (if
/// any), then every live event, ending after the run's final summary
/// (`completed` or `failed`) or the result of a check (`unchanged`).
async fn events(
    Path((namespace, name)): Path<(String, String)>,
    State(state): State<HttpState>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let (last, receiver) = state.hub.subscribe(&format!("{namespace}/{name}"));
    let snapshot = stream::iter(last.map(|event| Ok(sse_event("snapshot", &event))));
    let live = BroadcastStream::new(receiver).scan(false, |done, item| {
        if *done {
            return future::ready(None);
        }
        let event = match item {
            Ok(event) => {
                *done = event.is_terminal();
                sse_event(event.name(), &event)
            }
            Err(BroadcastStreamRecvError::Lagged(missed)) => {
                Event::default().comment(format!("lagged: {missed} events dropped"))
            }
        };
        future::ready(Some(Ok(event)))
    });
    Sse::new(snapshot.chain(live)).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}

fn sse_event(name: &str, event: &SyncEvent) -> Event {
    Event::default()
        .event(name)
        .json_data(event)
        .unwrap_or_else(|e| Event::default().comment(format!("unserializable event: {e}")))
}
