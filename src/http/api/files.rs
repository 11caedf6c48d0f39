//! `GET .../projectsyncs/{name}/syncs/{id}/files`: the files of a completed
//! run's picture (path, size, kind), in path order, paged, optionally only
//! those under a path prefix. Reads the store after a review for `get`.

use axum::{
    Json,
    extract::{Path, Query, State, rejection::QueryRejection},
    http::HeaderMap,
};
use serde::{Deserialize, Serialize};

use super::{
    authorize_resource,
    error::ApiError,
    find_run,
    model::{FileView, Page},
    params,
    projectsyncs::query,
};
use crate::http::ApiState;

/// Most files per page.
pub const MAX_FILES_LIMIT: u32 = 1000;

/// `?prefix=&limit=&continue=`.
#[derive(Debug, Deserialize)]
pub struct FilesQuery {
    pub prefix: Option<String>,
    pub limit: Option<u32>,
    #[serde(rename = "continue")]
    pub continue_token: Option<String>,
}

/// The last path of a page, in a continue token.
#[derive(Serialize, Deserialize)]
struct Cursor(String);

/// The files of run `id`.
pub async fn list(
    Path((namespace, name, id)): Path<(String, String, String)>,
    State(state): State<ApiState>,
    headers: HeaderMap,
    page: Result<Query<FilesQuery>, QueryRejection>,
) -> Result<Json<Page<FileView>>, ApiError> {
    let page = query(page)?;
    let sync = params::parse_sync_id(&id)?;
    let limit = params::page_limit(page.limit, MAX_FILES_LIMIT)?;
    let prefix = params::check_prefix(page.prefix.as_deref())?;
    let after = params::decode_continue::<Cursor>(page.continue_token.as_deref())?;
    if let Some(Cursor(path)) = &after {
        params::check_prefix(Some(path))?;
    }
    let (_, obj) = authorize_resource(&state, &headers, "get", &namespace, &name).await?;
    let record = find_run(&state, &obj, sync).await?;
    let mut files = state
        .store
        .files_page(
            record.id,
            prefix,
            after.as_ref().map(|c| c.0.as_str()),
            limit + 1,
        )
        .await?;
    let more = files.len() > limit as usize;
    files.truncate(limit as usize);
    let continue_token = more
        .then(|| files.last())
        .flatten()
        .map(|last| params::encode_continue(&Cursor(last.path.clone())));
    Ok(Json(Page {
        items: files.iter().map(FileView::from).collect(),
        continue_token,
    }))
}
