//! The webhook receiver: git hosts announce pushes at
//! `POST /hooks/github/{namespace}/{name}` (GitHub `push` and `ping` events)
//! and `POST /hooks/generic/{namespace}/{name}` (`{"ref": ...}` or
//! `{"branch": ...}`, for other hosts), signed with the shared secret of
//! `spec.webhook.secretRef` in `X-Hub-Signature-256`. Reads the ProjectSync
//! and its Secret, and patches the resource: network I/O.
//!
//! A push to the resource's branch sets the `projectsync.dev/requested-at`
//! annotation to `webhook:<delivery id>`, exactly as a user asking for a sync
//! would. The annotation rather than a channel into the Controller because
//! the webhook may reach any replica while only the Lease holder reconciles;
//! the request is visible on the object and handled once per value; and it
//! needs no verb the operator lacks (patch on projectsyncs).

pub mod verify;

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum::{
    Router,
    body::Bytes,
    extract::{DefaultBodyLimit, Path, State, rejection::BytesRejection},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::post,
};
use k8s_openapi::api::core::v1::Secret;
use kube::{
    Api, Client,
    api::{ListParams, Patch, PatchParams},
};
use serde_json::json;

use crate::{
    api::{ProjectSync, REQUESTED_AT_ANNOTATION},
    metrics::Metrics,
};

use self::verify::{ReplayWindow, build_pushed_branch, signature_matches};

/// Bodies above this are refused with 413 before they are parsed (GitHub caps
/// payloads at 25 MB, but a push payload is far smaller than this).
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// How long a delivery id is remembered, and how many at most.
const REPLAY_TTL: Duration = Duration::from_secs(3600);
const REPLAY_CAPACITY: usize = 10_000;

/// Headers that carry a delivery id, GitHub's first, then those of hosts
/// that sign the same way (Gitea, Gogs), then a generic one.
const DELIVERY_HEADERS: &[&str] = &[
    "x-github-delivery",
    "x-gitea-delivery",
    "x-gogs-delivery",
    "x-delivery-id",
];

/// What the receiver needs: a client to read resources and Secrets and to
/// patch the request annotation, the namespaces the operator serves, the
/// metrics and the replay window.
#[derive(Clone)]
pub struct Receiver {
    client: Client,
    namespaces: Arc<Vec<String>>,
    metrics: Metrics,
    replays: Arc<Mutex<ReplayWindow>>,
}

impl Receiver {
    /// A receiver for resources in `namespaces` (all when empty).
    pub fn new(client: Client, namespaces: Vec<String>, metrics: Metrics) -> Self {
        Receiver {
            client,
            namespaces: Arc::new(namespaces),
            metrics,
            replays: Arc::new(Mutex::new(ReplayWindow::new(REPLAY_TTL, REPLAY_CAPACITY))),
        }
    }
}

impl Receiver {
    fn with_replays<T>(&self, f: impl FnOnce(&mut ReplayWindow) -> T) -> T {
        f(&mut self
            .replays
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()))
    }
}

/// The webhook routes, with the body limit applied to them only.
pub fn router(receiver: Receiver) -> Router {
    Router::new()
        .route("/hooks/github/{namespace}/{name}", post(github))
        .route("/hooks/generic/{namespace}/{name}", post(generic))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(receiver)
}

/// How a delivery ended; each is one value of the metric's `result` label.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    /// A push to the branch: a sync was requested.
    Accepted,
    /// GitHub's `ping` on hook creation.
    Ping,
    /// Signed and valid, but not for this resource's branch (or not a push).
    Ignored(String),
    /// No or a wrong signature.
    Unauthorized,
    /// A delivery id seen within the window.
    Replayed,
    /// Body over [`MAX_BODY_BYTES`].
    TooLarge,
    /// No such resource, not served here, or no webhook secret: one answer
    /// for all, so a caller learns nothing about which resources exist.
    NotFound,
    /// Signed, but without a delivery id or with a payload that is not JSON.
    BadRequest(&'static str),
    /// The request annotation could not be written.
    Failed,
}

impl Outcome {
    fn label(&self) -> &'static str {
        match self {
            Outcome::Accepted => "accepted",
            Outcome::Ping => "ping",
            Outcome::Ignored(_) => "ignored",
            Outcome::Unauthorized => "unauthorized",
            Outcome::Replayed => "replayed",
            Outcome::TooLarge => "too_large",
            Outcome::NotFound => "not_found",
            Outcome::BadRequest(_) => "bad_request",
            Outcome::Failed => "error",
        }
    }

    fn into_response(self) -> Response {
        let (status, message) = match &self {
            Outcome::Accepted => (StatusCode::ACCEPTED, "sync requested".to_string()),
            Outcome::Ping => (StatusCode::OK, "pong".to_string()),
            Outcome::Ignored(why) => (StatusCode::ACCEPTED, format!("ignored: {why}")),
            Outcome::Unauthorized => (StatusCode::UNAUTHORIZED, "invalid signature".to_string()),
            Outcome::Replayed => (
                StatusCode::CONFLICT,
                "delivery already received".to_string(),
            ),
            Outcome::TooLarge => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload too large".to_string(),
            ),
            Outcome::NotFound => (StatusCode::NOT_FOUND, "not found".to_string()),
            Outcome::BadRequest(why) => (StatusCode::BAD_REQUEST, (*why).to_string()),
            Outcome::Failed => (
                StatusCode::SERVICE_UNAVAILABLE,
                "could not request a sync".to_string(),
            ),
        };
        (
            status,
            json!({ "result": self.label(), "message": message }).to_string(),
        )
            .into_response()
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Form {
    GitHub,
    Generic,
}

async fn github(
    State(receiver): State<Receiver>,
    Path((namespace, name)): Path<(String, String)>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    handle(receiver, Form::GitHub, namespace, name, headers, body).await
}

async fn generic(
    State(receiver): State<Receiver>,
    Path((namespace, name)): Path<(String, String)>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    handle(receiver, Form::Generic, namespace, name, headers, body).await
}

async fn handle(
    receiver: Receiver,
    form: Form,
    namespace: String,
    name: String,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let outcome = receive(&receiver, form, &namespace, &name, &headers, body).await;
    receiver
        .metrics
        .webhook_requests
        .with_label_values(&[outcome.label()])
        .inc();
    match &outcome {
        Outcome::Accepted | Outcome::Ping => {
            tracing::info!(resource = %format!("{namespace}/{name}"), result = outcome.label(), "webhook delivery")
        }
        _ => {
            tracing::debug!(resource = %format!("{namespace}/{name}"), result = outcome.label(), "webhook delivery")
        }
    }
    outcome.into_response()
}

/// The checks in order: size, resource and secret, signature, replay, event,
/// branch; then the request.
async fn receive(
    receiver: &Receiver,
    form: Form,
    namespace: &str,
    name: &str,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Outcome {
    let body = match body {
        Ok(body) => body,
        Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            return Outcome::TooLarge;
        }
        Err(_) => return Outcome::BadRequest("unreadable body"),
    };
    let Some((obj, secret)) = fetch_target(receiver, namespace, name).await else {
        return Outcome::NotFound;
    };
    let signature = header(headers, "x-hub-signature-256").unwrap_or_default();
    if !signature_matches(&secret, &body, signature) {
        return Outcome::Unauthorized;
    }
    let Some(delivery) = DELIVERY_HEADERS
        .iter()
        .find_map(|h| header(headers, h))
        .filter(|d| !d.is_empty())
    else {
        return Outcome::BadRequest("no delivery id header");
    };
    let delivery_key = format!("{namespace}/{name}/{delivery}");
    let fresh = receiver.with_replays(|r| r.record(&delivery_key, Instant::now()));
    if !fresh {
        return Outcome::Replayed;
    }
    if form == Form::GitHub {
        match header(headers, "x-github-event") {
            Some("ping") => return Outcome::Ping,
            Some("push") => {}
            other => return Outcome::Ignored(format!("event {}", other.unwrap_or("(none)"))),
        }
    }
    let Ok(payload) = serde_json::from_slice::<serde_json::Value>(&body) else {
        return Outcome::BadRequest("the payload is not JSON");
    };
    match build_pushed_branch(&payload) {
        Some(branch) if branch == obj.spec.branch => {}
        Some(branch) => return Outcome::Ignored(format!("push to branch {branch}")),
        None => return Outcome::Ignored("no branch in the payload".to_string()),
    }
    match ensure_requested(receiver, namespace, name, delivery).await {
        Ok(()) => Outcome::Accepted,
        Err(error) => {
            // Not acted on: GitHub's "Redeliver" (same id) must not be a replay.
            receiver.with_replays(|r| r.forget(&delivery_key));
            tracing::warn!(resource = %format!("{namespace}/{name}"), %error, "could not request a sync for a webhook");
            Outcome::Failed
        }
    }
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// The resource and its webhook secret, or `None` for every reason the
/// caller must not tell apart (not served here, absent, no webhook, Secret or
/// key missing, API error).
async fn fetch_target(
    receiver: &Receiver,
    namespace: &str,
    name: &str,
) -> Option<(ProjectSync, Vec<u8>)> {
    if !receiver.namespaces.is_empty() && !receiver.namespaces.iter().any(|n| n == namespace) {
        return None;
    }
    // A list by name rather than a get: the operator's RBAC grants
    // list/watch on projectsyncs (for its reflector) but no get.
    let resources: Api<ProjectSync> = Api::namespaced(receiver.client.clone(), namespace);
    let by_name = ListParams::default().fields(&format!("metadata.name={name}"));
    let obj = match resources.list(&by_name).await {
        Ok(list) => list
            .items
            .into_iter()
            .find(|o| o.metadata.name.as_deref() == Some(name))?,
        Err(error) => {
            tracing::warn!(resource = %format!("{namespace}/{name}"), %error, "cannot read a webhook's ProjectSync");
            return None;
        }
    };
    let secret_ref = obj.spec.webhook.as_ref()?.secret_ref.clone();
    let secrets: Api<Secret> = Api::namespaced(receiver.client.clone(), namespace);
    let secret = match secrets.get_opt(&secret_ref.name).await {
        Ok(secret) => secret,
        Err(error) => {
            tracing::warn!(resource = %format!("{namespace}/{name}"), secret = %secret_ref.name, %error, "cannot read the webhook secret");
            return None;
        }
    };
    let value = secret
        .and_then(|s| s.data)
        .and_then(|mut data| data.remove(&secret_ref.key));
    match value {
        Some(value) if !value.0.is_empty() => Some((obj, value.0)),
        _ => {
            tracing::warn!(resource = %format!("{namespace}/{name}"), secret = %secret_ref.name, key = %secret_ref.key, "the webhook secret or its key is missing");
            None
        }
    }
}

/// Sets the request annotation to `webhook:<delivery>`: the controller
/// handles it once, as it handles a user's request.
async fn ensure_requested(
    receiver: &Receiver,
    namespace: &str,
    name: &str,
    delivery: &str,
) -> Result<(), kube::Error> {
    let resources: Api<ProjectSync> = Api::namespaced(receiver.client.clone(), namespace);
    let patch = json!({ "metadata": { "annotations": { REQUESTED_AT_ANNOTATION: format!("webhook:{delivery}") } } });
    resources
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map(|_| ())
}
