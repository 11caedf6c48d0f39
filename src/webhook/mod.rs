//! The webhook receiver: git hosts announce pushes at
//! `POST /hooks/github/{namespace}/{name}` (GitHub `push` and `ping` events,
//! signed with the shared secret in `X-Hub-Signature-256`),
//! `POST /hooks/gitlab/{namespace}/{name}` (GitLab's `Push Hook`, with the
//! secret itself in `X-Gitlab-Token`) and
//! `POST /hooks/generic/{namespace}/{name}` (`{"ref": ...}` or
//! `{"branch": ...}`, signed as GitHub signs, for other hosts). The secret is
//! the Secret key of `spec.webhook.secretRef`. Patches the resource: network
//! I/O.
//!
//! No API call before a delivery is verified: the resource comes from the
//! HTTP layer's reflector ([`ResourceIndex`]) and the secret from a
//! per-resource cache ([`secrets`]). An unknown resource and a bad signature
//! get the same answer, so a caller learns nothing about what exists.
//!
//! A push to the resource's branch sets the `projectsync.dev/requested-at`
//! annotation to `webhook:<delivery id>`, exactly as a user asking for a sync
//! would. The annotation rather than a channel into the Controller because
//! the webhook may reach any replica while only the Lease holder reconciles;
//! the request is visible on the object and handled once per value; and it
//! needs no verb the operator lacks (patch on projectsyncs).

pub mod secrets;
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
use kube::{
    Api, Client,
    api::{Patch, PatchParams},
};
use serde_json::json;

use crate::{
    api::{ProjectSync, REQUESTED_AT_ANNOTATION},
    http::ResourceIndex,
    metrics::Metrics,
};

use self::{
    secrets::SecretCache,
    verify::{
        ReplayWindow, Seen, build_body_digest, build_pushed_branch, signature_matches,
        token_matches,
    },
};

/// Bodies above this are refused with 413 before they are parsed (GitHub caps
/// payloads at 25 MB, but a push payload is far smaller than this).
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// How long a delivery id is remembered, and how many at most.
const REPLAY_TTL: Duration = Duration::from_secs(3600);
const REPLAY_CAPACITY: usize = 10_000;

/// Headers that carry a delivery id, GitHub's first, then those of hosts
/// that sign the same way (Gitea, Gogs), GitLab's, then a generic one.
const DELIVERY_HEADERS: &[&str] = &[
    "x-github-delivery",
    "x-gitea-delivery",
    "x-gogs-delivery",
    "x-gitlab-event-uuid",
    "x-delivery-id",
];

/// The one answer for "no such webhook" and "not signed by its secret".
const NOT_FOUND_MESSAGE: &str = "no such webhook, or the delivery is not signed with its secret";

/// What the receiver needs: the resource index, the secret cache, a client
/// to patch the request annotation, the metrics and the replay window.
#[derive(Clone)]
pub struct Receiver {
    client: Client,
    index: ResourceIndex,
    secrets: SecretCache,
    metrics: Metrics,
    replays: Arc<Mutex<ReplayWindow>>,
}

impl Receiver {
    /// A receiver for the resources in `index` (the namespaces served).
    pub fn new(client: Client, index: ResourceIndex, metrics: Metrics) -> Self {
        Receiver {
            secrets: SecretCache::new(client.clone(), metrics.clone()),
            client,
            index,
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
        .route("/hooks/gitlab/{namespace}/{name}", post(gitlab))
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
    /// Verified, but not for this resource's branch (or not a push).
    Ignored(String),
    /// No or a wrong signature (or token).
    Unauthorized,
    /// A delivery id seen within the window, with the same body.
    Replayed,
    /// A delivery id seen within the window, with another body.
    Conflict,
    /// Body over [`MAX_BODY_BYTES`].
    TooLarge,
    /// No such resource, not served here, or no webhook secret.
    NotFound,
    /// Verified, but without a delivery id or with a payload that is not JSON.
    BadRequest(&'static str),
    /// The resources are not listed yet (the operator is starting).
    Starting,
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
            Outcome::Conflict => "conflict",
            Outcome::TooLarge => "too_large",
            Outcome::NotFound => "not_found",
            Outcome::BadRequest(_) => "bad_request",
            Outcome::Starting => "starting",
            Outcome::Failed => "error",
        }
    }

    fn into_response(self) -> Response {
        let (status, label, message) = match &self {
            Outcome::Accepted => (
                StatusCode::ACCEPTED,
                self.label(),
                "sync requested".to_string(),
            ),
            Outcome::Ping => (StatusCode::OK, self.label(), "pong".to_string()),
            Outcome::Ignored(why) => (
                StatusCode::ACCEPTED,
                self.label(),
                format!("ignored: {why}"),
            ),
            // One answer for both, byte for byte: the metric and the debug
            // log (for the platform team) still tell them apart.
            Outcome::Unauthorized | Outcome::NotFound => (
                StatusCode::NOT_FOUND,
                "not_found",
                NOT_FOUND_MESSAGE.to_string(),
            ),
            Outcome::Replayed => (
                StatusCode::CONFLICT,
                self.label(),
                "delivery already received".to_string(),
            ),
            Outcome::Conflict => (
                StatusCode::CONFLICT,
                self.label(),
                "delivery id already received with another body".to_string(),
            ),
            Outcome::TooLarge => (
                StatusCode::PAYLOAD_TOO_LARGE,
                self.label(),
                "payload too large".to_string(),
            ),
            Outcome::BadRequest(why) => (StatusCode::BAD_REQUEST, self.label(), (*why).to_string()),
            Outcome::Starting => (
                StatusCode::SERVICE_UNAVAILABLE,
                self.label(),
                "starting: try again".to_string(),
            ),
            Outcome::Failed => (
                StatusCode::SERVICE_UNAVAILABLE,
                self.label(),
                "could not request a sync".to_string(),
            ),
        };
        (
            status,
            json!({ "result": label, "message": message }).to_string(),
        )
            .into_response()
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Form {
    GitHub,
    GitLab,
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

async fn gitlab(
    State(receiver): State<Receiver>,
    Path((namespace, name)): Path<(String, String)>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    handle(receiver, Form::GitLab, namespace, name, headers, body).await
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

/// The checks in order: size, resource and secret (from memory, or one
/// cached read of the Secret), signature, replay, event, branch; then the
/// request, the first API write.
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
    if !receiver.index.is_ready() {
        return Outcome::Starting;
    }
    let Some(obj) = receiver.index.get(namespace, name) else {
        return Outcome::NotFound;
    };
    let Some(secret) = receiver.secrets.fetch_secret(&obj).await else {
        return Outcome::NotFound;
    };
    let verified = match form {
        Form::GitHub | Form::Generic => signature_matches(
            &secret,
            &body,
            header(headers, "x-hub-signature-256").unwrap_or_default(),
        ),
        Form::GitLab => token_matches(
            &secret,
            header(headers, "x-gitlab-token")
                .unwrap_or_default()
                .as_bytes(),
        ),
    };
    if !verified {
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
    let digest = build_body_digest(&body);
    match receiver.with_replays(|r| r.record(&delivery_key, digest, Instant::now())) {
        Seen::Fresh => {}
        Seen::Replayed => return Outcome::Replayed,
        Seen::Conflict => return Outcome::Conflict,
    }
    match form {
        Form::GitHub => match header(headers, "x-github-event") {
            Some("ping") => return Outcome::Ping,
            Some("push") => {}
            other => return Outcome::Ignored(format!("event {}", other.unwrap_or("(none)"))),
        },
        Form::GitLab => match header(headers, "x-gitlab-event") {
            Some("Push Hook") => {}
            other => return Outcome::Ignored(format!("event {}", other.unwrap_or("(none)"))),
        },
        Form::Generic => {}
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
