//! The operator's two HTTP listeners. The probe listener (`--probe-addr`)
//! serves `/healthz`, `/readyz` and `/metrics` and nothing a tenant may
//! reach; the API listener (`--http-addr`) serves the JSON API of [`api`]
//! under `/api/v1/` (reads, the [`actions`], the OpenAPI document), among
//! it `/api/v1/events/project-sync/{namespace}/{name}`, which streams the
//! live progress of a resource's run as Server-Sent Events to callers
//! allowed to `get` that ProjectSync ([`auth`]), plus the webhook
//! receiver's `/hooks/...` routes ([`crate::webhook`]). Both run under the
//! connection limits of [`limits`]. Does network I/O.

pub mod actions;
pub mod api;
pub mod auth;
pub mod cache;
pub mod index;
pub mod limits;
pub mod ui;

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
    http::{HeaderMap, StatusCode, header},
    response::{
        IntoResponse, Response,
        sse::{Event, KeepAlive, Sse},
    },
    routing::get,
};
use futures::{StreamExt, stream};
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;

use crate::{
    controller::Shards,
    metrics::Metrics,
    pipeline::SyncEvent,
    progress::{ProgressHub, relay::RelayStatus},
    store::Store,
    webhook,
};

pub use self::{
    auth::{AuthError, Authorizer, Caller, ResourceAccess},
    index::ResourceIndex,
    limits::{ServeLimits, serve},
};

/// Longest pause between two writes on a progress stream (SSE comments keep
/// proxies and the idle timeout from closing a quiet stream).
const STREAM_KEEP_ALIVE: Duration = Duration::from_secs(15);

/// Whether the operator can do its job, and what this replica serves;
/// `/readyz` answers from it.
#[derive(Clone, Default)]
pub struct Readiness {
    ready: Arc<AtomicBool>,
    relay: Option<RelayStatus>,
    shards: Option<Shards>,
}

impl Readiness {
    /// Reports whether the other replicas' progress reaches this one.
    pub fn with_relay(mut self, relay: RelayStatus) -> Self {
        self.relay = Some(relay);
        self
    }

    /// Reports the shards this replica reconciles.
    pub fn with_shards(mut self, shards: Shards) -> Self {
        self.shards = Some(shards);
        self
    }

    /// Marks the operator ready (store migrated, controller watching) or not.
    pub fn set(&self, ready: bool) {
        self.ready.store(ready, Ordering::SeqCst);
    }

    /// Whether the operator is ready.
    pub fn get(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }

    /// What this replica can serve now, as `/readyz` shows it: the API
    /// (streams and webhooks) once ready; progress of every replica's runs
    /// while the relay listens, else only of its own; the shards it
    /// reconciles (all of them under one leader: `leader`).
    pub fn describe(&self) -> serde_json::Value {
        let ready = self.get();
        let progress = match &self.relay {
            Some(relay) if relay.is_listening() => "allReplicas",
            _ => "thisReplica",
        };
        let reconciles = match &self.shards {
            Some(shards) if shards.is_sharded() => serde_json::json!({
                "shards": shards.count(),
                "owned": shards.owned_now(),
            }),
            _ => serde_json::json!("leader"),
        };
        serde_json::json!({
            "ready": ready,
            "serves": {
                "progressStreams": ready,
                "webhooks": ready,
                "progress": progress,
            },
            "reconciles": reconciles,
        })
    }
}

/// What the probe listener's handlers share.
#[derive(Clone)]
pub struct ProbeState {
    pub metrics: Metrics,
    pub readiness: Readiness,
}

/// What the API listener's handlers share.
#[derive(Clone)]
pub struct ApiState {
    pub hub: ProgressHub,
    pub auth: Authorizer,
    pub index: ResourceIndex,
    pub webhooks: webhook::Receiver,
    /// The runs, files and memory the API reads.
    pub store: Store,
    /// The patches of the API's actions.
    pub actions: actions::Actions,
    /// Reads the one Secret a vector search needs (`spec.embedding.secretRef`).
    pub client: kube::Client,
    /// Where a vector search may connect (the operator's egress policy).
    pub egress: crate::egress::EgressPolicy,
    /// Interval of SSE keep-alive comments (below the idle timeout).
    pub keep_alive: Duration,
}

impl ApiState {
    /// The keep-alive interval that fits under `idle_timeout`.
    pub fn keep_alive_for(idle_timeout: Duration) -> Duration {
        STREAM_KEEP_ALIVE
            .min(idle_timeout / 3)
            .max(Duration::from_millis(100))
    }
}

/// The probe and metrics routes.
pub fn probe_router(state: ProbeState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .with_state(state)
}

/// The API routes (JSON API and progress streams) and webhooks.
pub fn api_router(state: ApiState) -> Router {
    let hooks = webhook::router(state.webhooks.clone());
    api::build_router(state).merge(hooks)
}

/// Binds a listener.
pub async fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await
}

async fn metrics(State(state): State<ProbeState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(),
    )
        .into_response()
}

async fn readyz(State(state): State<ProbeState>) -> Response {
    let code = if state.readiness.get() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, axum::Json(state.readiness.describe())).into_response()
}

/// The SSE stream of one resource: first a `snapshot` of the last event (if
/// any), then every live event, ending after the run's final summary
/// (`completed` or `failed`) or the result of a check (`unchanged`).
///
/// In order: the caller must be allowed to `get` the ProjectSync (401/403,
/// as the API server would answer, so a caller without access learns
/// nothing about which resources exist), the resource must exist (404), and
/// the hub must have room (503).
pub(crate) async fn events(
    Path((namespace, name)): Path<(String, String)>,
    State(state): State<ApiState>,
    headers: HeaderMap,
) -> Response {
    let access = ResourceAccess::project_sync("get", &namespace, Some(&name));
    let caller = match state.auth.authorize(&headers, &access).await {
        Ok(caller) => caller,
        Err(error) => {
            tracing::debug!(resource = %format!("{namespace}/{name}"), %error, "progress stream refused");
            return error.into_response();
        }
    };
    if !state.index.is_ready() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "starting: resources not listed yet",
        )
            .into_response();
    }
    if state.index.get(&namespace, &name).is_none() {
        return (
            StatusCode::NOT_FOUND,
            format!("projectsyncs.projectsync.dev \"{name}\" not found in {namespace}"),
        )
            .into_response();
    }
    let subscription = match state.hub.subscribe(&format!("{namespace}/{name}")) {
        Ok(subscription) => subscription,
        Err(error) => {
            tracing::warn!(resource = %format!("{namespace}/{name}"), %error, "progress stream refused");
            return (StatusCode::SERVICE_UNAVAILABLE, error.to_string()).into_response();
        }
    };
    if let Caller::User(user) = &caller {
        tracing::debug!(resource = %format!("{namespace}/{name}"), %user, "progress stream opened");
    }
    let snapshot = stream::iter(
        subscription
            .last
            .map(|event| Ok::<_, Infallible>(sse_event("snapshot", &event))),
    );
    let live = live_until_terminal(subscription.live);
    Sse::new(snapshot.chain(live))
        .keep_alive(KeepAlive::new().interval(state.keep_alive))
        .into_response()
}

/// The live events of a subscription as SSE events, ending right after the
/// run's final event (`completed`, `failed` or `unchanged`): the stream
/// closes then, rather than at the next run's first event.
pub(crate) fn live_until_terminal(
    live: crate::progress::Live,
) -> impl futures::Stream<Item = Result<Event, Infallible>> {
    stream::unfold((live, false), |(mut live, done)| async move {
        if done {
            return None;
        }
        let (event, terminal) = match live.next().await? {
            Ok(event) => (sse_event(event.name(), &event), event.is_terminal()),
            Err(BroadcastStreamRecvError::Lagged(missed)) => (
                Event::default().comment(format!("lagged: {missed} events dropped")),
                false,
            ),
        };
        Some((Ok(event), (live, terminal)))
    })
}

pub(crate) fn sse_event(name: &str, event: &SyncEvent) -> Event {
    Event::default()
        .event(name)
        .json_data(event)
        .unwrap_or_else(|e| Event::default().comment(format!("unserializable event: {e}")))
}
