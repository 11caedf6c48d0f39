//! The operator's JSON API under `/api/v1/`: ProjectSyncs, their runs, the
//! files of a run, search and branches for readers (`get`/`list`), and the
//! actions of [`crate::http::actions`] for callers allowed to `patch`. Every
//! route checks its parameters (400), then the caller (401/403, through
//! [`crate::http::Authorizer`]), then existence (404), in that order, so a
//! caller without access learns nothing about which resources exist. The
//! routes are listed once in [`routes`], which builds the router and which
//! the OpenAPI document of [`openapi`] is checked against. Network I/O
//! (API server reviews, Postgres).

pub mod controls;
pub mod error;
pub mod events;
pub mod files;
pub mod history;
pub mod model;
pub mod openapi;
pub mod params;
pub mod projectsyncs;
pub mod routes;
pub mod search;

use std::sync::Arc;

use axum::http::HeaderMap;
use kube::ResourceExt;

use self::error::ApiError;
use super::{ApiState, AuthError, Caller, ResourceAccess};
use crate::{
    api::ProjectSync,
    store::{Project, SyncId, SyncRecord},
};

pub use routes::{ROUTE_PREFIX, build_router, route_table};

/// The user a caller is recorded as in events: the TokenReview's name, or
/// empty when authentication is off.
pub fn user_of(caller: &Caller) -> &str {
    match caller {
        Caller::User(user) => user,
        Caller::Anonymous => "",
    }
}

/// Checks `namespace` and `name`, then that the caller may `verb` the
/// ProjectSync, then that it exists.
pub async fn authorize_resource(
    state: &ApiState,
    headers: &HeaderMap,
    verb: &str,
    namespace: &str,
    name: &str,
) -> Result<(Caller, Arc<ProjectSync>), ApiError> {
    params::check_namespace(namespace)?;
    params::check_name(name)?;
    let access = ResourceAccess::project_sync(verb, namespace, Some(name));
    let caller = state.auth.authorize(headers, &access).await?;
    let obj = find_resource(state, namespace, name)?;
    Ok((caller, obj))
}

/// The ProjectSync from the index: 503 before the first list, 404 if absent.
pub fn find_resource(
    state: &ApiState,
    namespace: &str,
    name: &str,
) -> Result<Arc<ProjectSync>, ApiError> {
    if !state.index.is_ready() {
        return Err(ApiError::Unavailable(
            "starting: resources not listed yet".into(),
        ));
    }
    state
        .index
        .get(namespace, name)
        .ok_or_else(|| ApiError::resource_not_found(namespace, name))
}

/// The store's project of `obj` (`None` before its first run).
pub async fn find_project(
    state: &ApiState,
    obj: &ProjectSync,
) -> Result<Option<Project>, ApiError> {
    let key = format!("{}/{}", obj.namespace().unwrap_or_default(), obj.name_any());
    Ok(state.store.find_project(&key).await?)
}

/// Run `sync` of `obj`: 404 when it is unknown or another resource's (the
/// same answer, so ids of other projects' runs are not confirmed).
pub async fn find_run(
    state: &ApiState,
    obj: &ProjectSync,
    sync: SyncId,
) -> Result<SyncRecord, ApiError> {
    let not_found = || {
        ApiError::NotFound(format!(
            "sync {sync} not found for ProjectSync {}/{}",
            obj.namespace().unwrap_or_default(),
            obj.name_any()
        ))
    };
    let project = find_project(state, obj).await?.ok_or_else(not_found)?;
    match state.store.get_sync(sync).await {
        Ok(record) if record.project == project.id => Ok(record),
        Ok(_) | Err(crate::store::StoreError::SyncNotFound { .. }) => Err(not_found()),
        Err(error) => Err(error.into()),
    }
}

/// A `Forbidden` for listing, kept when no single resource is visible.
fn is_forbidden(error: &AuthError) -> bool {
    matches!(error, AuthError::Forbidden { .. })
}
