//! The OpenAPI 3.1 document of the API, written by hand as data (the API is
//! small, and a derive crate would put attributes on every handler for the
//! same result), served at `GET /api/v1/openapi.json`. A test checks that
//! its paths and methods are exactly the router's ([`super::route_table`]).
//! Pure, but for serving.

use axum::{Json, response::IntoResponse};
use serde_json::{Value, json};

use super::{files::MAX_FILES_LIMIT, params, search::MAX_HITS};

/// Serves the document (no authorization: it describes routes, not data).
pub async fn serve() -> impl IntoResponse {
    Json(build_document())
}

fn path_param(name: &str, description: &str) -> Value {
    json!({"name": name, "in": "path", "required": true, "description": description,
           "schema": {"type": "string"}})
}

fn query_param(name: &str, description: &str, schema: Value) -> Value {
    json!({"name": name, "in": "query", "required": false, "description": description, "schema": schema})
}

fn resource_params() -> Vec<Value> {
    vec![
        path_param("namespace", "the ProjectSync's namespace"),
        path_param("name", "the ProjectSync's name"),
    ]
}

fn page_params(max: u32) -> Vec<Value> {
    vec![
        query_param(
            "limit",
            "items per page",
            json!({"type": "integer", "minimum": 1, "maximum": max, "default": params::DEFAULT_LIMIT.min(max)}),
        ),
        query_param(
            "continue",
            "the `continue` of the previous page",
            json!({"type": "string"}),
        ),
    ]
}

fn json_response(description: &str, schema: &str) -> Value {
    json!({"description": description,
           "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{schema}")}}}})
}

/// The failures every authorized route can answer.
fn failures(mut responses: Value) -> Value {
    let status = |description: &str| json_response(description, "Status");
    let map = responses.as_object_mut().expect("responses are an object");
    map.insert(
        "400".into(),
        status("a parameter is malformed or out of range"),
    );
    map.insert(
        "401".into(),
        status("no bearer token, or the TokenReview rejected it"),
    );
    map.insert(
        "403".into(),
        status("the SubjectAccessReview denied the verb on the ProjectSync"),
    );
    map.insert(
        "404".into(),
        status("no such ProjectSync (or run), answered only to callers allowed to see it"),
    );
    map.insert(
        "503".into(),
        status("the operator is starting, or the API server cannot review the caller"),
    );
    responses
}

fn operation(id: &str, summary: &str, verb: &str, parameters: Vec<Value>, ok: Value) -> Value {
    json!({
        "operationId": id,
        "summary": summary,
        "description": format!("Authorized with a SubjectAccessReview for `{verb}` on the ProjectSync."),
        "security": [{"bearer": []}],
        "parameters": parameters,
        "responses": failures(json!({"200": ok})),
    })
}

fn action(id: &str, summary: &str) -> Value {
    operation(
        id,
        summary,
        "patch",
        resource_params(),
        json_response(
            "the patched resource; an Event names the user",
            "ProjectSync",
        ),
    )
}

fn sse(description: &str) -> Value {
    json!({"description": description, "content": {"text/event-stream": {"schema": {"type": "string"}}}})
}

/// The document.
pub fn build_document() -> Value {
    let resource = "/api/v1/namespaces/{namespace}/projectsyncs/{name}";
    let run_params = || {
        let mut p = resource_params();
        p.push(path_param("id", "a sync run id (UUID)"));
        p
    };
    let mut restore = action(
        "restoreProjectSync",
        "Hold the mirror at a completed run (sets spec.restore)",
    );
    restore["requestBody"] = json!({"required": true, "content": {"application/json": {"schema": {
        "$ref": "#/components/schemas/RestoreRequest"}}}});
    restore["responses"]["409"] =
        json_response("the run is not completed, or retention pruned it", "Status");
    let mut files_params = run_params();
    files_params.push(query_param(
        "prefix",
        "only paths starting with this",
        json!({"type": "string", "maxLength": params::MAX_PREFIX_BYTES}),
    ));
    files_params.extend(page_params(MAX_FILES_LIMIT));
    let mut search_params = resource_params();
    search_params.push(json!({"name": "q", "in": "query", "required": true, "description": "text to find (case-insensitive)",
        "schema": {"type": "string", "minLength": 1, "maxLength": params::MAX_QUERY_CHARS}}));
    search_params.push(query_param(
        "limit",
        "hits at most",
        json!({"type": "integer", "minimum": 1, "maximum": MAX_HITS, "default": 20}),
    ));
    search_params.push(query_param(
        "mode",
        "`text` (vector search is served by the CLI against the database)",
        json!({"type": "string", "enum": ["text", "vector"]}),
    ));
    let mut search = operation(
        "searchMemory",
        "Search the active memory entries",
        "get",
        search_params,
        json_response("the hits", "Search"),
    );
    search["responses"]["502"] =
        json_response("the embedding endpoint of a vector search failed", "Status");
    let mut list_params = vec![path_param("namespace", "the namespace")];
    list_params.extend(page_params(params::MAX_LIMIT));
    let mut history_params = resource_params();
    history_params.extend(page_params(params::MAX_LIMIT));

    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Project Sync API",
            "version": "v1",
            "description": "The operator's API. Every route but this document takes `Authorization: Bearer <token>` (a ServiceAccount token, `kubectl create token`, an OIDC token), reviewed by the API server (TokenReview, then SubjectAccessReview on the ProjectSync: get/list for reads, patch for actions). Errors are Kubernetes `Status` objects."
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": schemas(),
        },
        "paths": {
            "/api/v1/openapi.json": {"get": {
                "operationId": "getOpenApi", "summary": "This document",
                "responses": {"200": {"description": "the OpenAPI document", "content": {"application/json": {}}}}}},
            "/api/v1/namespaces/{namespace}/projectsyncs": {"get": operation(
                "listProjectSyncs", "The ProjectSyncs of a namespace the caller may see", "list (or get on each)",
                list_params, json_response("a page of resources", "ProjectSyncPage"))},
            resource: {"get": operation("getProjectSync", "A ProjectSync: spec, status and the newest run", "get",
                resource_params(), json_response("the resource", "ProjectSync"))},
            format!("{resource}/history"): {"get": operation("listRuns", "The resource's runs, newest first", "get",
                history_params, json_response("a page of runs", "RunPage"))},
            format!("{resource}/syncs/{{id}}"): {"get": operation("getRun", "One run", "get",
                run_params(), json_response("the run", "Run"))},
            format!("{resource}/syncs/{{id}}/files"): {"get": operation("listRunFiles", "The files of a completed run's picture, by path", "get",
                files_params, json_response("a page of files", "FilePage"))},
            format!("{resource}/search"): {"get": search},
            format!("{resource}/branches"): {"get": operation("listBranches", "The repository's branches as last discovered (at most 100)", "get",
                resource_params(), json_response("the branches", "BranchPage"))},
            format!("{resource}/sync"): {"post": action("syncProjectSync", "Sync now (sets the projectsync.dev/requested-at annotation)")},
            format!("{resource}/suspend"): {"post": action("suspendProjectSync", "Suspend syncing (spec.suspend: true)")},
            format!("{resource}/resume"): {"post": action("resumeProjectSync", "Resume syncing (spec.suspend: false)")},
            format!("{resource}/restore"): {
                "post": restore,
                "delete": action("liftRestore", "Lift the hold (removes spec.restore): follow the branch again"),
            },
            "/api/v1/events/project-sync/{namespace}/{name}": {"get": operation(
                "streamProjectSync", "Live progress of the resource's runs (Server-Sent Events)", "get",
                resource_params(), sse("`snapshot`, then `started`, `stageStarted`, `progress`, `stageFinished`, until `completed`, `failed` or `unchanged`"))},
            "/api/v1/events/project-sync/{syncId}": {"get": operation(
                "streamRun", "Live progress of one run by id (Server-Sent Events); a finished run answers one `completed` or `failed` event with the run", "get",
                vec![path_param("syncId", "a sync run id (UUID)")],
                sse("the run's events until its final one"))},
        },
    })
}

fn schemas() -> Value {
    let page = |item: &str| {
        json!({"type": "object", "required": ["items"], "properties": {
        "items": {"type": "array", "items": {"$ref": format!("#/components/schemas/{item}")}},
        "continue": {"type": "string", "description": "pass back as ?continue= for the next page"}}})
    };
    json!({
        "Status": {"type": "object", "description": "a failure, as the API server writes it", "properties": {
            "kind": {"const": "Status"}, "apiVersion": {"const": "v1"}, "status": {"const": "Failure"},
            "message": {"type": "string"}, "reason": {"type": "string"}, "code": {"type": "integer"}}},
        "ProjectSync": {"type": "object", "required": ["namespace", "name", "spec"], "properties": {
            "namespace": {"type": "string"}, "name": {"type": "string"}, "generation": {"type": "integer"},
            "spec": {"type": "object", "description": "the ProjectSync spec (see the CRD reference)"},
            "status": {"type": "object", "description": "the ProjectSync status (see the CRD reference)"},
            "latestRun": {"$ref": "#/components/schemas/Run"}}},
        "ProjectSyncPage": page("ProjectSync"),
        "Run": {"type": "object", "required": ["id", "status", "branch", "trigger", "startedAt", "counts", "durations"], "properties": {
            "id": {"type": "string"}, "status": {"enum": ["PENDING", "IN_PROGRESS", "COMPLETED", "FAILED"]},
            "stage": {"type": ["string", "null"]}, "branch": {"type": "string"}, "commit": {"type": ["string", "null"]},
            "trigger": {"type": "string"}, "startedAt": {"type": "string", "format": "date-time"},
            "finishedAt": {"type": ["string", "null"], "format": "date-time"}, "durationMs": {"type": ["integer", "null"]},
            "counts": {"type": "object", "properties": {"added": {"type": "integer"}, "modified": {"type": "integer"},
                "deleted": {"type": "integer"}, "unchanged": {"type": "integer"}, "skipped": {"type": "integer"}, "total": {"type": "integer"}}},
            "durations": {"type": "object", "properties": {"prepareMs": {"type": ["integer", "null"]}, "scanMs": {"type": ["integer", "null"]},
                "importMs": {"type": ["integer", "null"]}, "finalizeMs": {"type": ["integer", "null"]}}},
            "memoryEntriesWritten": {"type": "integer"}, "bytesFetched": {"type": "integer"}, "apiCalls": {"type": "integer"},
            "restoredFrom": {"type": ["string", "null"]}, "contentPruned": {"type": "boolean"}, "error": {"type": ["string", "null"]}}},
        "RunPage": page("Run"),
        "File": {"type": "object", "properties": {"path": {"type": "string"}, "size": {"type": "integer"},
            "kind": {"enum": ["file", "symlink", "submodule", "lfs"]}, "blobSha": {"type": "string"}, "mode": {"type": "string"}}},
        "FilePage": page("File"),
        "Hit": {"type": "object", "properties": {"path": {"type": "string"}, "chunkIndex": {"type": "integer"},
            "startLine": {"type": "integer"}, "endLine": {"type": "integer"}, "language": {"type": ["string", "null"]},
            "score": {"type": ["number", "null"]}, "content": {"type": "string"}}},
        "Search": {"type": "object", "properties": {"query": {"type": "string"}, "mode": {"type": "string"},
            "model": {"type": ["string", "null"]}, "items": {"type": "array", "items": {"$ref": "#/components/schemas/Hit"}}}},
        "Branch": {"type": "object", "properties": {"name": {"type": "string"}, "tracked": {"type": "boolean"}}},
        "BranchPage": page("Branch"),
        "RestoreRequest": {"type": "object", "required": ["syncId"], "additionalProperties": false,
            "properties": {"syncId": {"type": "string", "description": "a COMPLETED run of this resource"}}},
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::api::route_table;
    use std::collections::BTreeSet;

    #[test]
    fn the_document_lists_exactly_the_routes_the_router_serves() {
        let doc = build_document();
        let documented: BTreeSet<(String, String)> = doc["paths"]
            .as_object()
            .unwrap()
            .iter()
            .flat_map(|(path, ops)| {
                ops.as_object()
                    .unwrap()
                    .keys()
                    .map(move |method| (method.clone(), path.clone()))
            })
            .collect();
        let served: BTreeSet<(String, String)> = route_table()
            .into_iter()
            .map(|r| (r.method.to_string(), r.path.to_string()))
            .collect();
        assert_eq!(
            documented.difference(&served).collect::<Vec<_>>(),
            Vec::<&(String, String)>::new(),
            "documented but not served"
        );
        assert_eq!(
            served.difference(&documented).collect::<Vec<_>>(),
            Vec::<&(String, String)>::new(),
            "served but not documented"
        );
    }

    #[test]
    fn every_schema_reference_resolves() {
        let doc = build_document();
        let text = doc.to_string();
        for reference in text.split("\"#/components/schemas/").skip(1) {
            let name = reference.split('"').next().unwrap();
            assert!(
                doc["components"]["schemas"].get(name).is_some(),
                "{name} is referenced but not defined"
            );
        }
    }
}
