//! `GET .../projectsyncs/{name}/history` (the resource's runs, newest first,
//! paged) and `GET .../projectsyncs/{name}/syncs/{id}` (one run). Reads the
//! store after the caller passed a review for `get`.

use axum::{
    Json,
    extract::{Path, Query, State, rejection::QueryRejection},
    http::HeaderMap,
};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{
    authorize_resource,
    error::ApiError,
    find_project, find_run,
    model::{Page, RunView},
    params,
    projectsyncs::{PageQuery, query},
};
use crate::{http::ApiState, store::RunCursor};

/// A run cursor in a continue token: start time and id.
#[derive(Serialize, Deserialize)]
struct Cursor(DateTime<Utc>, String);

/// The runs of the resource, newest first.
pub async fn list(
    Path((namespace, name)): Path<(String, String)>,
    State(state): State<ApiState>,
    headers: HeaderMap,
    page: Result<Query<PageQuery>, QueryRejection>,
) -> Result<Json<Page<RunView>>, ApiError> {
    let page = query(page)?;
    let limit = params::page_limit(page.limit, params::MAX_LIMIT)?;
    let after = params::decode_continue::<Cursor>(page.continue_token.as_deref())?
        .map(|Cursor(started_at, id)| {
            params::parse_sync_id(&id).map(|id| RunCursor { started_at, id })
        })
        .transpose()?;
    let (_, obj) = authorize_resource(&state, &headers, "get", &namespace, &name).await?;
    let Some(project) = find_project(&state, &obj).await? else {
        return Ok(Json(Page {
            items: Vec::new(),
            continue_token: None,
        }));
    };
    let mut runs = state
        .store
        .history_page(project.id, after, limit + 1)
        .await?;
    let more = runs.len() > limit as usize;
    runs.truncate(limit as usize);
    let continue_token = more
        .then(|| runs.last())
        .flatten()
        .map(|last| params::encode_continue(&Cursor(last.started_at, last.id.to_string())));
    Ok(Json(Page {
        items: runs.iter().map(RunView::from).collect(),
        continue_token,
    }))
}

/// One run of the resource.
pub async fn get(
    Path((namespace, name, id)): Path<(String, String, String)>,
    State(state): State<ApiState>,
    headers: HeaderMap,
) -> Result<Json<RunView>, ApiError> {
    let sync = params::parse_sync_id(&id)?;
    let (_, obj) = authorize_resource(&state, &headers, "get", &namespace, &name).await?;
    let record = find_run(&state, &obj, sync).await?;
    Ok(Json(RunView::from(&record)))
}
