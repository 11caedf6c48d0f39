//! `GET /api/v1/events/project-sync/{syncId}`: the live progress of one run
//! by its id, as Server-Sent Events, for callers allowed to `get` the
//! ProjectSync that owns the run. A run still going streams its events
//! until its final one (`completed` or `failed`); a finished run answers
//! one event with the run (the same names, the run as in `.../syncs/{id}`)
//! and ends. An unknown id and a run of a resource the caller may not see
//! get the same 404. Reads the store, the progress hub and the reviews.

use std::convert::Infallible;

use axum::{
    extract::{Path, State},
    http::HeaderMap,
    response::{
        IntoResponse, Response,
        sse::{Event, KeepAlive, Sse},
    },
};
use futures::{StreamExt, stream};

use super::{error::ApiError, model::RunView, params};
use crate::{
    http::{ApiState, AuthError, ResourceAccess, live_until_terminal, sse_event},
    pipeline::SyncEvent,
    store::{SyncRecord, SyncStatus},
};

/// The live stream of run `syncId`.
pub async fn run_events(
    Path(id): Path<String>,
    State(state): State<ApiState>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let sync = params::parse_sync_id(&id)?;
    let not_found = || ApiError::NotFound(format!("sync {sync} not found"));
    let Some((record, key)) = state.store.sync_with_owner(sync).await? else {
        // Unknown to everyone: still 401 for a caller without a valid token.
        state.auth.identify(&headers).await?;
        return Err(not_found());
    };
    let Some((namespace, name)) = key.split_once('/') else {
        // A project of `projectsync sync --once` (no resource owns it).
        state.auth.identify(&headers).await?;
        return Err(not_found());
    };
    let access = ResourceAccess::project_sync("get", namespace, Some(name));
    match state.auth.authorize(&headers, &access).await {
        Ok(_) => {}
        Err(AuthError::Forbidden { .. }) => return Err(not_found()),
        Err(error) => return Err(error.into()),
    }
    if is_final(&record) {
        return Ok(finished(&record));
    }
    if !state.index.is_ready() {
        return Err(ApiError::Unavailable(
            "starting: resources not listed yet".into(),
        ));
    }
    if state.index.get(namespace, name).is_none() {
        return Err(not_found());
    }
    let subscription = state
        .hub
        .subscribe(&key)
        .map_err(|error| ApiError::Unavailable(error.to_string()))?;
    // The run may have ended between the read and the subscription.
    let record = state.store.get_sync(sync).await?;
    if is_final(&record) {
        return Ok(finished(&record));
    }
    // One run at a time per resource: the channel's events are this run's.
    let sync_id = sync.to_string();
    let snapshot = subscription
        .last
        .filter(|event| !event.is_terminal() || event_run(event) == Some(sync_id.as_str()))
        .map(|event| Ok::<_, Infallible>(sse_event("snapshot", &event)));
    let live = live_until_terminal(subscription.live);
    Ok(Sse::new(stream::iter(snapshot).chain(live))
        .keep_alive(KeepAlive::new().interval(state.keep_alive))
        .into_response())
}

fn is_final(record: &SyncRecord) -> bool {
    matches!(record.status, SyncStatus::Completed | SyncStatus::Failed)
}

/// The run id a final event names.
fn event_run(event: &SyncEvent) -> Option<&str> {
    match event {
        SyncEvent::Completed(summary) => Some(summary.sync_id.as_str()),
        SyncEvent::Failed { sync_id, .. } => sync_id.as_deref(),
        SyncEvent::Started { sync_id, .. } => Some(sync_id.as_str()),
        _ => None,
    }
}

/// The one-event stream of a finished run.
fn finished(record: &SyncRecord) -> Response {
    let name = if record.status == SyncStatus::Completed {
        "completed"
    } else {
        "failed"
    };
    let event = Event::default()
        .event(name)
        .json_data(RunView::from(record))
        .unwrap_or_else(|e| Event::default().comment(format!("unserializable run: {e}")));
    Sse::new(stream::iter([Ok::<_, Infallible>(event)])).into_response()
}
