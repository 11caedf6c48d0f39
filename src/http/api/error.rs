//! The API's failures and how they are answered: a JSON body in the shape
//! of the API server's `Status` (`kind`, `status`, `message`, `reason`,
//! `code`), so clients that read Kubernetes errors read these too. Pure.

use axum::{
    Json,
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde_json::json;

use crate::{
    http::{AuthError, actions::ActionError},
    store::StoreError,
};

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Unavailable(String),
    /// A server the operator called for the caller failed (the embedding
    /// endpoint of a vector search).
    #[error("{0}")]
    Upstream(String),
    // Boxed: the database's and the API server's errors are large, and
    // every handler returns this type.
    #[error("store: {0}")]
    Store(#[source] Box<StoreError>),
    #[error(transparent)]
    Action(Box<ActionError>),
}

impl From<ActionError> for ApiError {
    fn from(error: ActionError) -> Self {
        ApiError::Action(Box::new(error))
    }
}

impl ApiError {
    /// The `not found` answer for a ProjectSync, worded as the API server's.
    pub fn resource_not_found(namespace: &str, name: &str) -> Self {
        ApiError::NotFound(format!(
            "projectsyncs.projectsync.dev \"{name}\" not found in namespace {namespace}"
        ))
    }

    fn status(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::Auth(AuthError::MissingToken | AuthError::InvalidToken) => {
                (StatusCode::UNAUTHORIZED, "Unauthorized")
            }
            ApiError::Auth(AuthError::Forbidden { .. }) => (StatusCode::FORBIDDEN, "Forbidden"),
            ApiError::Auth(AuthError::Unavailable(_)) | ApiError::Unavailable(_) => {
                (StatusCode::SERVICE_UNAVAILABLE, "ServiceUnavailable")
            }
            ApiError::BadRequest(_) => (StatusCode::BAD_REQUEST, "BadRequest"),
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "NotFound"),
            ApiError::Action(action) if matches!(**action, ActionError::NotFound { .. }) => {
                (StatusCode::NOT_FOUND, "NotFound")
            }
            ApiError::Conflict(_) => (StatusCode::CONFLICT, "Conflict"),
            ApiError::Upstream(_) => (StatusCode::BAD_GATEWAY, "BadGateway"),
            ApiError::Store(_) | ApiError::Action(_) => {
                (StatusCode::INTERNAL_SERVER_ERROR, "InternalError")
            }
        }
    }

    /// The message a caller sees: the API server's and the database's
    /// failure texts stay in the log.
    fn public_message(&self) -> String {
        match self {
            ApiError::Auth(AuthError::Unavailable(_)) => "cannot review the caller's access".into(),
            ApiError::Store(_) => "the operator's database failed; see the operator's log".into(),
            ApiError::Action(action) => match action.as_ref() {
                ActionError::Kube { action, .. } => {
                    format!("cannot {action} the resource; see the operator's log")
                }
                not_found => not_found.to_string(),
            },
            other => other.to_string(),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::SyncNotFound { sync } => {
                ApiError::NotFound(format!("sync {sync} not found"))
            }
            StoreError::SyncNotCompleted { sync, status, op } => ApiError::Conflict(format!(
                "sync {sync} is {status}: only a COMPLETED run can be {op}"
            )),
            StoreError::SyncPruned { sync, op } => ApiError::Conflict(format!(
                "sync {sync} cannot be {op}: retention pruned its content (raise spec.historyLimit to keep more runs)"
            )),
            other => ApiError::Store(Box::new(other)),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (code, reason) = self.status();
        if code.is_server_error() {
            tracing::warn!(error = %self, "API request failed");
        } else {
            tracing::debug!(error = %self, "API request refused");
        }
        let body = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "status": "Failure",
            "message": self.public_message(),
            "reason": reason,
            "code": code.as_u16(),
        });
        let mut response = (code, Json(body)).into_response();
        if code == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}
