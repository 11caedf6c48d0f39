//! `GET .../projectsyncs/{name}/search?q=`: chunks of the resource's active
//! memory (the latest completed sync's picture only) whose content contains
//! the text, case-insensitive, by path and position. Reads the store after a
//! review for `get`; the text is a bound parameter, never part of the SQL.

use axum::{
    Json,
    extract::{Path, Query, State, rejection::QueryRejection},
    http::HeaderMap,
};
use serde::Deserialize;

use super::{
    authorize_resource,
    error::ApiError,
    find_project,
    model::{HitView, SearchView},
    params,
    projectsyncs::query,
};
use crate::http::ApiState;

/// Most hits per answer.
pub const MAX_HITS: u32 = 100;
/// Hits when `limit` is not given.
const DEFAULT_HITS: u32 = 20;

/// `?q=&limit=&mode=`.
#[derive(Debug, Deserialize)]
pub struct SearchQuery {
    pub q: Option<String>,
    pub limit: Option<u32>,
    /// `text` (the default) or `vector`.
    pub mode: Option<String>,
}

/// Searches the resource's active memory.
pub async fn search(
    Path((namespace, name)): Path<(String, String)>,
    State(state): State<ApiState>,
    headers: HeaderMap,
    search: Result<Query<SearchQuery>, QueryRejection>,
) -> Result<Json<SearchView>, ApiError> {
    let search = query(search)?;
    let text = params::check_query(search.q.as_deref())?.to_string();
    let limit = params::page_limit(Some(search.limit.unwrap_or(DEFAULT_HITS)), MAX_HITS)?;
    match search.mode.as_deref().unwrap_or("text") {
        "text" => {}
        "vector" => {
            return Err(ApiError::BadRequest(
                "mode=vector is not served by the API: embedding the query needs the resource's embedding credentials; use `projectsync search --vector` against the database".into(),
            ));
        }
        other => {
            return Err(ApiError::BadRequest(format!(
                "mode {:?} is not text or vector",
                other.chars().take(32).collect::<String>()
            )));
        }
    }
    let (_, obj) = authorize_resource(&state, &headers, "get", &namespace, &name).await?;
    let items = match find_project(&state, &obj).await? {
        Some(project) => state
            .store
            .search_text(project.id, &text, limit)
            .await?
            .into_iter()
            .map(HitView::from)
            .collect(),
        None => Vec::new(),
    };
    Ok(Json(SearchView {
        query: text,
        mode: "text".into(),
        model: None,
        items,
    }))
}
