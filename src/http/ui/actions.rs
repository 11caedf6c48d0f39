//! The page's controls: sync now, suspend, resume, restore a run and lift
//! a restore, each a form POST. Enforced here, whatever the page showed:
//! the caller must be allowed to `patch` the ProjectSync (a
//! SubjectAccessReview), and a request whose credentials a browser adds by
//! itself (the sign-in cookie, or none with authentication off) must come
//! from this origin, so another site cannot make a signed-in browser act.
//! The change itself is the API's ([`crate::http::actions`]): one patch and
//! one Event naming the user. Does I/O against the API server.

use axum::{
    Form,
    extract::{Path, State},
    http::{HeaderMap, StatusCode, Uri},
    response::{IntoResponse, Redirect, Response},
};
use serde::Deserialize;

use super::{
    UiState, pages,
    session::{self, Source},
    views::{self, Viewer},
};
use crate::{
    http::{AuthError, Caller, ResourceAccess, actions::ActionError},
    store::SyncId,
};

#[derive(Deserialize)]
pub struct ActionForm {
    /// The run to restore (restore only).
    sync: Option<String>,
}

/// `POST .../actions/{action}`.
pub async fn act(
    Path((namespace, name, action)): Path<(String, String, String)>,
    State(state): State<UiState>,
    headers: HeaderMap,
    uri: Uri,
    Form(form): Form<ActionForm>,
) -> Response {
    if !pages::valid_namespace(&namespace) || !pages::valid_name(&name) {
        return (StatusCode::NOT_FOUND, "not a resource name").into_response();
    }
    let (auth_headers, source) = session::credentials(&headers);
    if session::needs_origin_check(source, state.auth().enabled())
        && !session::same_origin(&headers)
    {
        return forbidden(&Viewer::default(), "a control must be used from this page");
    }
    let access = ResourceAccess::project_sync("patch", &namespace, Some(&name));
    let caller = match state.auth().authorize(&auth_headers, &access).await {
        Ok(caller) => caller,
        Err(error @ AuthError::Forbidden { .. }) => {
            return forbidden(
                &Viewer {
                    user: None,
                    signed_in: source == Source::Cookie,
                },
                &error.to_string(),
            );
        }
        Err(error) => return pages::refusal(error, source, &uri),
    };
    let user = match &caller {
        Caller::User(user) => user.clone(),
        Caller::Anonymous => String::new(),
    };
    let actions = &state.api.actions;
    let result = match action.as_str() {
        "sync-now" => actions.sync_now(&namespace, &name, &user).await,
        "suspend" => actions.set_suspend(&namespace, &name, &user, true).await,
        "resume" => actions.set_suspend(&namespace, &name, &user, false).await,
        "lift-restore" => actions.restore(&namespace, &name, &user, None).await,
        "restore" => {
            let Some(sync) = form.sync.as_deref().and_then(|s| s.parse::<SyncId>().ok()) else {
                return bad_request("restore needs the id of a run (the sync field)");
            };
            actions.restore(&namespace, &name, &user, Some(sync)).await
        }
        _ => return (StatusCode::NOT_FOUND, "no such control").into_response(),
    };
    match result {
        Ok(_) => Redirect::to(&format!(
            "{}?done={action}",
            views::resource_url(&namespace, &name)
        ))
        .into_response(),
        Err(error @ ActionError::NotFound { .. }) => {
            (StatusCode::NOT_FOUND, error.to_string()).into_response()
        }
        Err(error) => {
            tracing::warn!(%error, "a control of the web page failed");
            (
                StatusCode::BAD_GATEWAY,
                "the API server refused the change: see the operator's log",
            )
                .into_response()
        }
    }
}

fn forbidden(viewer: &Viewer, message: &str) -> Response {
    super::html_response(
        StatusCode::FORBIDDEN,
        views::error_page(viewer, "Forbidden", message),
    )
}

fn bad_request(message: &str) -> Response {
    (StatusCode::BAD_REQUEST, message.to_string()).into_response()
}
