//! `GET .../projectsyncs/{name}/search?q=`: chunks of the resource's active
//! memory (the latest completed sync's picture only) whose content contains
//! the text, case-insensitive, by path and position; with `mode=vector`, the
//! chunks most similar to the embedded text, embedded by the resource's own
//! `spec.embedding` (its endpoint, model and key, under the operator's egress
//! policy). Reads the store after a review for `get`; the text is a bound
//! parameter, never part of the SQL.

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
use crate::{
    api::{EmbeddingProvider, ProjectSync},
    controller::dereference::resolve_embedder,
    http::ApiState,
    store::Project,
};
use kube::ResourceExt;

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
    let vector = match search.mode.as_deref().unwrap_or("text") {
        "text" => false,
        "vector" => true,
        other => {
            return Err(ApiError::BadRequest(format!(
                "mode {:?} is not text or vector",
                other.chars().take(32).collect::<String>()
            )));
        }
    };
    let (_, obj) = authorize_resource(&state, &headers, "get", &namespace, &name).await?;
    let project = find_project(&state, &obj).await?;
    if vector {
        return search_vector(&state, &obj, project, text, limit).await;
    }
    let items = match project {
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

/// Embeds `text` with the resource's embedding spec and ranks by cosine
/// similarity among entries embedded by the same model.
async fn search_vector(
    state: &ApiState,
    obj: &ProjectSync,
    project: Option<Project>,
    text: String,
    limit: u32,
) -> Result<Json<SearchView>, ApiError> {
    let enabled = obj
        .spec
        .embedding
        .as_ref()
        .is_some_and(|e| e.provider != EmbeddingProvider::None);
    if !enabled {
        return Err(ApiError::BadRequest(format!(
            "ProjectSync {}/{} has no spec.embedding: search it with mode=text",
            obj.namespace().unwrap_or_default(),
            obj.name_any()
        )));
    }
    let embedder = resolve_embedder(&state.client, obj, &state.egress)
        .await
        .map_err(|error| ApiError::Upstream(format!("cannot embed the query: {error}")))?;
    let model = embedder.model().to_string();
    let vector = embedder
        .embed(std::slice::from_ref(&text))
        .await
        .map_err(|error| ApiError::Upstream(format!("cannot embed the query: {error}")))?
        .into_iter()
        .next()
        .ok_or_else(|| ApiError::Upstream("the embedding endpoint returned no vector".into()))?;
    let items = match project {
        Some(project) => state
            .store
            .search_vector(project.id, &model, &vector, limit)
            .await?
            .into_iter()
            .map(HitView::from)
            .collect(),
        None => Vec::new(),
    };
    Ok(Json(SearchView {
        query: text,
        mode: "vector".into(),
        model: Some(model),
        items,
    }))
}
