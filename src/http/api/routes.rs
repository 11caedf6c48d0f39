//! The API's routes, listed once: [`build_router`] serves them and
//! [`route_table`] names them for the OpenAPI check (a route added here and
//! not documented fails a test, and the other way round). Pure wiring.

use axum::{Router, extract::DefaultBodyLimit, handler::Handler, routing};

use super::{controls, events, files, history, openapi, projectsyncs, search};
use crate::http::ApiState;

/// Where every route of the API lives.
pub const ROUTE_PREFIX: &str = "/api/v1";

/// Largest request body (an action's JSON is a few bytes).
pub const MAX_BODY_BYTES: usize = 16 * 1024;

/// One route: an HTTP method (lowercase, as OpenAPI writes it) and a path
/// template (`{param}`, as both axum and OpenAPI write it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Route {
    pub method: &'static str,
    pub path: &'static str,
}

/// Builds the router and the list of its routes side by side, so neither
/// can name a route the other lacks.
struct Table {
    router: Router<ApiState>,
    routes: Vec<Route>,
}

impl Table {
    fn get<H, T>(self, path: &'static str, handler: H) -> Self
    where
        H: Handler<T, ApiState>,
        T: 'static,
    {
        self.add("get", path, routing::get(handler))
    }

    fn post<H, T>(self, path: &'static str, handler: H) -> Self
    where
        H: Handler<T, ApiState>,
        T: 'static,
    {
        self.add("post", path, routing::post(handler))
    }

    fn delete<H, T>(self, path: &'static str, handler: H) -> Self
    where
        H: Handler<T, ApiState>,
        T: 'static,
    {
        self.add("delete", path, routing::delete(handler))
    }

    fn add(
        mut self,
        method: &'static str,
        path: &'static str,
        route: routing::MethodRouter<ApiState>,
    ) -> Self {
        self.routes.push(Route { method, path });
        // The same path with another method merges into one entry.
        self.router = self.router.route(path, route);
        self
    }
}

fn table() -> Table {
    Table {
        router: Router::new(),
        routes: Vec::new(),
    }
    .get("/api/v1/openapi.json", openapi::serve)
    .get(
        "/api/v1/namespaces/{namespace}/projectsyncs",
        projectsyncs::list,
    )
    .get(
        "/api/v1/namespaces/{namespace}/projectsyncs/{name}",
        projectsyncs::get,
    )
    .get(
        "/api/v1/namespaces/{namespace}/projectsyncs/{name}/history",
        history::list,
    )
    .get(
        "/api/v1/namespaces/{namespace}/projectsyncs/{name}/syncs/{id}",
        history::get,
    )
    .get(
        "/api/v1/namespaces/{namespace}/projectsyncs/{name}/syncs/{id}/files",
        files::list,
    )
    .get(
        "/api/v1/namespaces/{namespace}/projectsyncs/{name}/search",
        search::search,
    )
    .get(
        "/api/v1/namespaces/{namespace}/projectsyncs/{name}/branches",
        projectsyncs::branches,
    )
    .post(
        "/api/v1/namespaces/{namespace}/projectsyncs/{name}/sync",
        controls::sync_now,
    )
    .post(
        "/api/v1/namespaces/{namespace}/projectsyncs/{name}/suspend",
        controls::suspend,
    )
    .post(
        "/api/v1/namespaces/{namespace}/projectsyncs/{name}/resume",
        controls::resume,
    )
    .post(
        "/api/v1/namespaces/{namespace}/projectsyncs/{name}/restore",
        controls::restore,
    )
    .delete(
        "/api/v1/namespaces/{namespace}/projectsyncs/{name}/restore",
        controls::lift_restore,
    )
    .get(
        "/api/v1/events/project-sync/{namespace}/{name}",
        crate::http::events,
    )
    .get("/api/v1/events/project-sync/{syncId}", events::run_events)
}

/// The API's router, with its state and the body limit.
pub fn build_router(state: ApiState) -> Router {
    table()
        .router
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

/// Every route the router serves, sorted.
pub fn route_table() -> Vec<Route> {
    let mut routes = table().routes;
    routes.sort();
    routes
}
