//! The page handlers: authorize the caller, read the resource from the
//! index and its runs from the store, hand plain values to [`views`]. Each
//! path segment is checked to be a Kubernetes name before it reaches a
//! review, and a run is shown only under the resource that owns it. Does
//! I/O (reviews against the API server, reads from Postgres).

use std::collections::BTreeMap;

use axum::{
    extract::{Path, Query, State},
    http::{HeaderMap, StatusCode, Uri},
    response::{IntoResponse, Redirect, Response},
};
use futures::{StreamExt, stream};
use serde::Deserialize;

use super::{
    UiState, html_response,
    model::{self, ResourceRow},
    session::{self, Source},
    views::{self, Viewer},
};
use crate::{
    api::ProjectSync,
    http::{AuthError, Caller, ResourceAccess},
    store::{Project, StoreError, SyncId},
};

/// Runs shown in the history table.
const HISTORY_ROWS: u32 = 50;
/// Files per page of the browser.
const FILES_PER_PAGE: usize = 200;
/// Longest path prefix filter accepted.
const MAX_PREFIX_BYTES: usize = 1024;
/// Highest page number accepted.
const MAX_PAGE: usize = 100_000;
/// Longest search query accepted.
const MAX_QUERY_BYTES: usize = 256;
/// Search hits shown.
const SEARCH_HITS: u32 = 50;
/// Namespaces reviewed at once for the overview.
const REVIEWS_IN_FLIGHT: usize = 8;

/// A caller who passed the checks for a page.
struct Visit {
    viewer: Viewer,
    /// The request's headers with the cookie's token as a bearer header.
    auth_headers: HeaderMap,
}

/// The answer to a caller who did not pass: sign in again, or an error page.
pub(super) fn refusal(error: AuthError, source: Source, uri: &Uri) -> Response {
    match (&error, source) {
        (AuthError::MissingToken, _) | (AuthError::InvalidToken, Source::Cookie) => {
            let next = session::safe_next(uri.path_and_query().map(|p| p.as_str()));
            Redirect::to(&format!("/ui/sign-in?next={}", views::query_escape(&next)))
                .into_response()
        }
        (AuthError::InvalidToken, _) => page_error(
            StatusCode::UNAUTHORIZED,
            &Viewer::default(),
            "Not signed in",
            "the bearer token is not valid",
        ),
        (AuthError::Forbidden { user, what }, _) => page_error(
            StatusCode::FORBIDDEN,
            &Viewer {
                user: Some(user.clone()),
                signed_in: source == Source::Cookie,
            },
            "Forbidden",
            &format!("{user} may not {what}"),
        ),
        (AuthError::Unavailable(_), _) => page_error(
            StatusCode::SERVICE_UNAVAILABLE,
            &Viewer::default(),
            "Unavailable",
            "cannot review your access now: try again",
        ),
    }
}

fn page_error(status: StatusCode, viewer: &Viewer, title: &str, message: &str) -> Response {
    html_response(status, views::error_page(viewer, title, message))
}

fn viewer_of(caller: &Caller, source: Source) -> Viewer {
    Viewer {
        user: match caller {
            Caller::User(user) => Some(user.clone()),
            Caller::Anonymous => None,
        },
        signed_in: source == Source::Cookie,
    }
}

/// Authorizes `access` for the request's credentials.
async fn visit(
    state: &UiState,
    headers: &HeaderMap,
    uri: &Uri,
    access: &ResourceAccess,
) -> Result<Visit, Response> {
    let (auth_headers, source) = session::credentials(headers);
    match state.auth().authorize(&auth_headers, access).await {
        Ok(caller) => Ok(Visit {
            viewer: viewer_of(&caller, source),
            auth_headers,
        }),
        Err(error) => Err(refusal(error, source, uri)),
    }
}

/// A namespace name (an RFC 1123 label).
pub(super) fn valid_namespace(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// A resource name (an RFC 1123 subdomain).
pub(super) fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
}

fn not_found(viewer: &Viewer, namespace: &str, name: &str) -> Response {
    page_error(
        StatusCode::NOT_FOUND,
        viewer,
        "Not found",
        &format!("projectsyncs.projectsync.dev \"{name}\" not found in {namespace}"),
    )
}

fn starting(viewer: &Viewer) -> Response {
    page_error(
        StatusCode::SERVICE_UNAVAILABLE,
        viewer,
        "Starting",
        "the operator has not listed its resources yet: reload in a moment",
    )
}

/// `GET /ui`: every namespace's resources the caller may list.
pub async fn overview(State(state): State<UiState>, headers: HeaderMap, uri: Uri) -> Response {
    let (auth_headers, source) = session::credentials(&headers);
    let caller = match state.auth().identify(&auth_headers).await {
        Ok(caller) => caller,
        Err(error) => return refusal(error, source, &uri),
    };
    let viewer = viewer_of(&caller, source);
    if !state.api.index.is_ready() {
        return starting(&viewer);
    }
    let mut by_namespace: BTreeMap<String, Vec<std::sync::Arc<ProjectSync>>> = BTreeMap::new();
    for obj in state.api.index.list_all() {
        by_namespace
            .entry(obj.metadata.namespace.clone().unwrap_or_default())
            .or_default()
            .push(obj);
    }
    let auth = state.auth().clone();
    let allowed: Vec<(String, Vec<std::sync::Arc<ProjectSync>>)> = stream::iter(by_namespace)
        .map(|(namespace, objs)| {
            let auth = auth.clone();
            let auth_headers = auth_headers.clone();
            async move {
                let access = ResourceAccess::project_sync("list", &namespace, None);
                match auth.authorize(&auth_headers, &access).await {
                    Ok(_) => Some((namespace, objs)),
                    Err(AuthError::Forbidden { .. }) => None,
                    Err(error) => {
                        tracing::debug!(%namespace, %error, "overview review failed");
                        None
                    }
                }
            }
        })
        .buffered(REVIEWS_IN_FLIGHT)
        .filter_map(|x| async move { x })
        .collect()
        .await;
    let rows = build_rows(allowed.iter().flat_map(|(_, objs)| objs.iter()));
    html_response(StatusCode::OK, views::overview(&viewer, None, &rows))
}

fn build_rows<'a>(objs: impl Iterator<Item = &'a std::sync::Arc<ProjectSync>>) -> Vec<ResourceRow> {
    let mut rows: Vec<ResourceRow> = objs.map(|o| model::build_resource_row(o)).collect();
    rows.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    rows
}

/// `GET /ui/namespaces/{namespace}`: one namespace's resources.
pub async fn namespace_overview(
    Path(namespace): Path<String>,
    State(state): State<UiState>,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    if !valid_namespace(&namespace) {
        return page_error(
            StatusCode::NOT_FOUND,
            &Viewer::default(),
            "Not found",
            "not a namespace name",
        );
    }
    let access = ResourceAccess::project_sync("list", &namespace, None);
    let visit = match visit(&state, &headers, &uri, &access).await {
        Ok(visit) => visit,
        Err(response) => return response,
    };
    if !state.api.index.is_ready() {
        return starting(&visit.viewer);
    }
    let objs = state.api.index.list(&namespace);
    let rows = build_rows(objs.iter());
    html_response(
        StatusCode::OK,
        views::overview(&visit.viewer, Some(&namespace), &rows),
    )
}

/// The resource a page is about, once its caller may `get` it.
struct Resource {
    visit: Visit,
    obj: std::sync::Arc<ProjectSync>,
    row: ResourceRow,
}

async fn resource(
    state: &UiState,
    headers: &HeaderMap,
    uri: &Uri,
    namespace: &str,
    name: &str,
) -> Result<Resource, Response> {
    if !valid_namespace(namespace) || !valid_name(name) {
        return Err(not_found(&Viewer::default(), namespace, name));
    }
    let access = ResourceAccess::project_sync("get", namespace, Some(name));
    let visit = visit(state, headers, uri, &access).await?;
    if !state.api.index.is_ready() {
        return Err(starting(&visit.viewer));
    }
    let Some(obj) = state.api.index.get(namespace, name) else {
        return Err(not_found(&visit.viewer, namespace, name));
    };
    let row = model::build_resource_row(&obj);
    Ok(Resource { visit, obj, row })
}

impl Resource {
    /// Whether the caller may use the controls (`patch` on the resource).
    async fn can_patch(&self, state: &UiState) -> bool {
        let access =
            ResourceAccess::project_sync("patch", &self.row.namespace, Some(&self.row.name));
        state
            .auth()
            .authorize(&self.visit.auth_headers, &access)
            .await
            .is_ok()
    }

    /// The resource's project in the store (`None` before its first run).
    async fn project(&self, state: &UiState) -> Result<Option<Project>, StoreError> {
        let key = crate::controller::dereference::project_key(&self.obj);
        state.api.store.find_project(&key).await
    }
}

/// What a store failure shows: the details stay in the log.
fn store_unavailable(error: &StoreError) -> &'static str {
    tracing::warn!(%error, "the web page could not read the store");
    "the store cannot be read now: try again"
}

#[derive(Deserialize)]
pub struct ProjectQuery {
    done: Option<String>,
}

/// The notice after an action; only known values, never the parameter's text.
fn notice_for(done: Option<&str>) -> Option<&'static str> {
    Some(match done? {
        "sync-now" => "A sync was requested.",
        "suspend" => "Syncing is suspended.",
        "resume" => "Syncing is resumed.",
        "restore" => {
            "The restore was requested: the operator makes that run's picture current and holds it."
        }
        "lift-restore" => "The restore was lifted: the branch is followed again.",
        _ => return None,
    })
}

/// `GET /ui/namespaces/{namespace}/projectsyncs/{name}`.
pub async fn project(
    Path((namespace, name)): Path<(String, String)>,
    Query(query): Query<ProjectQuery>,
    State(state): State<UiState>,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    let resource = match resource(&state, &headers, &uri, &namespace, &name).await {
        Ok(resource) => resource,
        Err(response) => return response,
    };
    let mut notice = notice_for(query.done.as_deref());
    let history = match resource.project(&state).await {
        Ok(Some(project)) => match state.api.store.history(project.id, HISTORY_ROWS).await {
            Ok(runs) => runs.iter().map(model::build_run_row).collect(),
            Err(error) => {
                notice = Some(store_unavailable(&error));
                Vec::new()
            }
        },
        Ok(None) => Vec::new(),
        Err(error) => {
            notice = Some(store_unavailable(&error));
            Vec::new()
        }
    };
    let can_patch = resource.can_patch(&state).await;
    html_response(
        StatusCode::OK,
        views::project(
            &resource.visit.viewer,
            &views::ProjectPage {
                row: &resource.row,
                history: &history,
                can_patch,
                notice,
            },
        ),
    )
}

#[derive(Deserialize)]
pub struct RunQuery {
    prefix: Option<String>,
    page: Option<usize>,
}

/// `GET .../syncs/{sync}`: one run and its files.
pub async fn run(
    Path((namespace, name, sync)): Path<(String, String, String)>,
    Query(query): Query<RunQuery>,
    State(state): State<UiState>,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    let resource = match resource(&state, &headers, &uri, &namespace, &name).await {
        Ok(resource) => resource,
        Err(response) => return response,
    };
    let viewer = &resource.visit.viewer;
    let prefix = query.prefix.unwrap_or_default();
    let page = query.page.unwrap_or(0);
    if prefix.len() > MAX_PREFIX_BYTES || page > MAX_PAGE {
        return page_error(
            StatusCode::BAD_REQUEST,
            viewer,
            "Bad request",
            &format!("a prefix is at most {MAX_PREFIX_BYTES} bytes and a page at most {MAX_PAGE}"),
        );
    }
    let run_missing = || {
        page_error(
            StatusCode::NOT_FOUND,
            viewer,
            "Not found",
            &format!("no run {} of {namespace}/{name}", model::cut(&sync, 40)),
        )
    };
    let Ok(sync_id) = sync.parse::<SyncId>() else {
        return run_missing();
    };
    let project = match resource.project(&state).await {
        Ok(Some(project)) => project,
        Ok(None) => return run_missing(),
        Err(error) => {
            return page_error(
                StatusCode::SERVICE_UNAVAILABLE,
                viewer,
                "Unavailable",
                store_unavailable(&error),
            );
        }
    };
    let record = match state.api.store.get_sync(sync_id).await {
        // A run of another resource is not found here, whoever may read it.
        Ok(record) if record.project == project.id => record,
        Ok(_) | Err(StoreError::SyncNotFound { .. }) => return run_missing(),
        Err(error) => {
            return page_error(
                StatusCode::SERVICE_UNAVAILABLE,
                viewer,
                "Unavailable",
                store_unavailable(&error),
            );
        }
    };
    let row = model::build_run_row(&record);
    let files = if row.readable {
        match state.api.store.files_at(sync_id).await {
            Ok(files) => Ok(model::build_file_page(
                &files,
                &prefix,
                page,
                FILES_PER_PAGE,
            )),
            Err(error) => Err(store_unavailable(&error)),
        }
    } else {
        Err("files are kept only for completed runs whose content was not pruned")
    };
    let can_patch = resource.can_patch(&state).await;
    html_response(
        StatusCode::OK,
        views::run(
            viewer,
            &resource.row,
            &row,
            files.as_ref().map_err(|e| *e),
            can_patch,
        ),
    )
}

#[derive(Deserialize)]
pub struct SearchQuery {
    q: Option<String>,
}

/// `GET .../search?q=`: text search over the current picture.
pub async fn search(
    Path((namespace, name)): Path<(String, String)>,
    Query(query): Query<SearchQuery>,
    State(state): State<UiState>,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    let resource = match resource(&state, &headers, &uri, &namespace, &name).await {
        Ok(resource) => resource,
        Err(response) => return response,
    };
    let viewer = &resource.visit.viewer;
    let q = query.q.unwrap_or_default();
    if q.len() > MAX_QUERY_BYTES {
        return page_error(
            StatusCode::BAD_REQUEST,
            viewer,
            "Bad request",
            &format!("a search is at most {MAX_QUERY_BYTES} bytes"),
        );
    }
    let hits = if q.trim().is_empty() {
        Ok(Vec::new())
    } else {
        match resource.project(&state).await {
            Ok(Some(project)) => match state
                .api
                .store
                .search_text(project.id, q.trim(), SEARCH_HITS)
                .await
            {
                Ok(hits) => Ok(hits.iter().map(model::build_hit_row).collect()),
                Err(error) => Err(store_unavailable(&error)),
            },
            Ok(None) => Ok(Vec::new()),
            Err(error) => Err(store_unavailable(&error)),
        }
    };
    html_response(
        StatusCode::OK,
        views::search(viewer, &resource.row, &q, hits.as_deref().map_err(|e| *e)),
    )
}

/// `GET .../events`: the resource's progress stream, authorized with the
/// page's credentials (the cookie) and its authentication mode; otherwise
/// exactly the API's `/api/v1/events/project-sync/{namespace}/{name}`.
pub async fn events(
    Path((namespace, name)): Path<(String, String)>,
    State(state): State<UiState>,
    headers: HeaderMap,
) -> Response {
    if !valid_namespace(&namespace) || !valid_name(&name) {
        return (StatusCode::NOT_FOUND, "not a resource name").into_response();
    }
    let (auth_headers, _) = session::credentials(&headers);
    crate::http::events(
        Path((namespace, name)),
        State(state.api.clone()),
        auth_headers,
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_kubernetes_names_reach_a_review() {
        assert!(valid_namespace("team-a"));
        assert!(!valid_namespace("Team"));
        assert!(!valid_namespace("a/b"));
        assert!(!valid_namespace(&"a".repeat(64)));
        assert!(valid_name("app.v2"));
        assert!(!valid_name("<script>"));
        assert!(!valid_name(""));
    }

    #[test]
    fn a_notice_is_never_the_parameters_text() {
        assert_eq!(notice_for(Some("<script>")), None);
        assert!(notice_for(Some("sync-now")).is_some());
        assert_eq!(notice_for(None), None);
    }
}
