//! `GET .../projectsyncs` (the ones the caller may see, paged by name),
//! `GET .../projectsyncs/{name}` (spec, status and the newest run) and
//! `GET .../projectsyncs/{name}/branches` (from status: the operator lists
//! them after each completed run, at most 100). Reads the index, the store
//! for the newest run, and the API server for reviews.

use axum::{
    Json,
    extract::{Path, Query, State, rejection::QueryRejection},
    http::HeaderMap,
};
use kube::ResourceExt;
use serde::{Deserialize, Serialize};

use super::{
    authorize_resource,
    error::ApiError,
    find_project, is_forbidden,
    model::{BranchView, Page, ProjectSyncView, RunView},
    params,
};
use crate::http::{ApiState, ResourceAccess};

/// Resources checked one by one (`get` on each) for a caller who may not
/// `list` the namespace; past it, the caller needs `list`.
const MAX_CHECKED_ONE_BY_ONE: usize = 200;

/// `?limit=&continue=`.
#[derive(Debug, Deserialize)]
pub struct PageQuery {
    pub limit: Option<u32>,
    #[serde(rename = "continue")]
    pub continue_token: Option<String>,
}

/// Maps a query-string rejection to a 400 in the API's shape.
pub fn query<T>(query: Result<Query<T>, QueryRejection>) -> Result<T, ApiError> {
    query.map(|Query(q)| q).map_err(|rejection| {
        ApiError::BadRequest(format!("bad query string: {}", rejection.body_text()))
    })
}

#[derive(Serialize, Deserialize)]
struct NameCursor(String);

/// The ProjectSyncs of `namespace` the caller may see, by name.
pub async fn list(
    Path(namespace): Path<String>,
    State(state): State<ApiState>,
    headers: HeaderMap,
    page: Result<Query<PageQuery>, QueryRejection>,
) -> Result<Json<Page<ProjectSyncView>>, ApiError> {
    let page = query(page)?;
    params::check_namespace(&namespace)?;
    let limit = params::page_limit(page.limit, params::MAX_LIMIT)?;
    let after: Option<NameCursor> = params::decode_continue(page.continue_token.as_deref())?;
    let access = ResourceAccess::project_sync("list", &namespace, None);
    let may_list = match state.auth.authorize(&headers, &access).await {
        Ok(_) => Ok(true),
        Err(error) if is_forbidden(&error) => Err(error),
        Err(error) => return Err(error.into()),
    };
    if !state.index.is_ready() {
        return Err(ApiError::Unavailable(
            "starting: resources not listed yet".into(),
        ));
    }
    let mut all = state.index.list(&namespace);
    all.sort_by_key(|obj| obj.name_any());
    if let Some(NameCursor(after)) = &after {
        all.retain(|obj| obj.name_any().as_str() > after.as_str());
    }
    let visible = match may_list {
        Ok(_) => all,
        Err(denied) => {
            // Without `list`, the ones the caller may `get`; none visible is
            // the same 403 whether or not any exist.
            let mut visible = Vec::new();
            for obj in all.into_iter().take(MAX_CHECKED_ONE_BY_ONE) {
                let access = ResourceAccess::project_sync("get", &namespace, Some(&obj.name_any()));
                match state.auth.authorize(&headers, &access).await {
                    Ok(_) => visible.push(obj),
                    Err(error) if is_forbidden(&error) => {}
                    Err(error) => return Err(error.into()),
                }
                if visible.len() > limit as usize {
                    break;
                }
            }
            if visible.is_empty() && after.is_none() {
                return Err(denied.into());
            }
            visible
        }
    };
    let more = visible.len() > limit as usize;
    let items: Vec<ProjectSyncView> = visible
        .iter()
        .take(limit as usize)
        .map(|obj| ProjectSyncView::build(obj, None))
        .collect();
    let continue_token = more
        .then(|| {
            items
                .last()
                .map(|last| params::encode_continue(&NameCursor(last.name.clone())))
        })
        .flatten();
    Ok(Json(Page {
        items,
        continue_token,
    }))
}

/// One ProjectSync with its newest run.
pub async fn get(
    Path((namespace, name)): Path<(String, String)>,
    State(state): State<ApiState>,
    headers: HeaderMap,
) -> Result<Json<ProjectSyncView>, ApiError> {
    let (_, obj) = authorize_resource(&state, &headers, "get", &namespace, &name).await?;
    let latest = match find_project(&state, &obj).await? {
        Some(project) => state
            .store
            .history_page(project.id, None, 1)
            .await?
            .first()
            .map(RunView::from),
        None => None,
    };
    Ok(Json(ProjectSyncView::build(&obj, latest)))
}

/// The repository's branches as last discovered.
pub async fn branches(
    Path((namespace, name)): Path<(String, String)>,
    State(state): State<ApiState>,
    headers: HeaderMap,
) -> Result<Json<Page<BranchView>>, ApiError> {
    let (_, obj) = authorize_resource(&state, &headers, "get", &namespace, &name).await?;
    let tracked = obj.spec.branch.as_str();
    let mut items: Vec<BranchView> = obj
        .status
        .as_ref()
        .map(|s| s.branches.as_slice())
        .unwrap_or_default()
        .iter()
        .take(100)
        .map(|branch| BranchView {
            tracked: branch == tracked,
            name: branch.clone(),
        })
        .collect();
    if !items.iter().any(|b| b.tracked) {
        items.insert(
            0,
            BranchView {
                name: tracked.to_string(),
                tracked: true,
            },
        );
    }
    Ok(Json(Page {
        items,
        continue_token: None,
    }))
}
