//! The actions of the API, each allowed to callers who may `patch` the
//! ProjectSync: `POST .../sync` (sync now), `POST .../suspend`,
//! `POST .../resume`, `POST .../restore` with `{"syncId": ...}` (hold the
//! mirror at that run: `spec.restore`) and `DELETE .../restore` (lift the
//! hold). The patches and their events are [`crate::http::actions`]'s; a
//! restore's run is checked here first, so a bad id is refused at once
//! rather than stalling the resource. Answers the patched resource.

use axum::{
    Json,
    extract::{Path, State, rejection::JsonRejection},
    http::HeaderMap,
};

use super::{
    authorize_resource,
    error::ApiError,
    find_run,
    model::{ProjectSyncView, RestoreRequest},
    params, user_of,
};
use crate::{http::ApiState, store::SyncStatus};

/// Asks for a sync now.
pub async fn sync_now(
    Path((namespace, name)): Path<(String, String)>,
    State(state): State<ApiState>,
    headers: HeaderMap,
) -> Result<Json<ProjectSyncView>, ApiError> {
    let (caller, _) = authorize_resource(&state, &headers, "patch", &namespace, &name).await?;
    let obj = state
        .actions
        .sync_now(&namespace, &name, user_of(&caller))
        .await?;
    Ok(Json(ProjectSyncView::build(&obj, None)))
}

/// Suspends syncing.
pub async fn suspend(
    Path((namespace, name)): Path<(String, String)>,
    State(state): State<ApiState>,
    headers: HeaderMap,
) -> Result<Json<ProjectSyncView>, ApiError> {
    set_suspend(namespace, name, state, headers, true).await
}

/// Resumes syncing.
pub async fn resume(
    Path((namespace, name)): Path<(String, String)>,
    State(state): State<ApiState>,
    headers: HeaderMap,
) -> Result<Json<ProjectSyncView>, ApiError> {
    set_suspend(namespace, name, state, headers, false).await
}

async fn set_suspend(
    namespace: String,
    name: String,
    state: ApiState,
    headers: HeaderMap,
    suspend: bool,
) -> Result<Json<ProjectSyncView>, ApiError> {
    let (caller, _) = authorize_resource(&state, &headers, "patch", &namespace, &name).await?;
    let obj = state
        .actions
        .set_suspend(&namespace, &name, user_of(&caller), suspend)
        .await?;
    Ok(Json(ProjectSyncView::build(&obj, None)))
}

/// Holds the mirror at the run the body names.
pub async fn restore(
    Path((namespace, name)): Path<(String, String)>,
    State(state): State<ApiState>,
    headers: HeaderMap,
    body: Result<Json<RestoreRequest>, JsonRejection>,
) -> Result<Json<ProjectSyncView>, ApiError> {
    let Json(body) = body.map_err(|rejection| {
        ApiError::BadRequest(format!(
            "the body must be JSON such as {{\"syncId\": \"<id>\"}}: {}",
            rejection.body_text()
        ))
    })?;
    let sync = params::parse_sync_id(&body.sync_id)?;
    let (caller, obj) = authorize_resource(&state, &headers, "patch", &namespace, &name).await?;
    let record = find_run(&state, &obj, sync).await?;
    if record.status != SyncStatus::Completed {
        return Err(ApiError::Conflict(format!(
            "sync {sync} is {}: only a COMPLETED run can be restored",
            record.status
        )));
    }
    if record.content_pruned {
        return Err(ApiError::Conflict(format!(
            "sync {sync} cannot be restored: retention pruned its content (raise spec.historyLimit to keep more runs restorable)"
        )));
    }
    let obj = state
        .actions
        .restore(&namespace, &name, user_of(&caller), Some(sync))
        .await?;
    Ok(Json(ProjectSyncView::build(&obj, None)))
}

/// Lifts the hold: the branch is followed again.
pub async fn lift_restore(
    Path((namespace, name)): Path<(String, String)>,
    State(state): State<ApiState>,
    headers: HeaderMap,
) -> Result<Json<ProjectSyncView>, ApiError> {
    let (caller, _) = authorize_resource(&state, &headers, "patch", &namespace, &name).await?;
    let obj = state
        .actions
        .restore(&namespace, &name, user_of(&caller), None)
        .await?;
    Ok(Json(ProjectSyncView::build(&obj, None)))
}
