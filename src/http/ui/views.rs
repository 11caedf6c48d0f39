//! The web page's HTML, as maud templates: every value spliced in is
//! escaped by the macro (paths, commit messages, triggers and failure
//! messages come from tenants' repositories and servers), URLs are built
//! from validated names and percent-encoded query values, and no inline
//! script or style is emitted (the Content-Security-Policy forbids both).
//! Pure: values in, markup out.

use maud::{DOCTYPE, Markup, html};

use super::model::{FilePage, HitRow, ResourceRow, RunRow, short, short_run};

/// Who is looking, for the header.
#[derive(Debug, Clone, Default)]
pub struct Viewer {
    /// The user the TokenReview named (`None` with authentication off).
    pub user: Option<String>,
    /// Signed in through the cookie (so a sign-out button makes sense).
    pub signed_in: bool,
}

/// The frame of every page.
pub fn layout(title: &str, viewer: &Viewer, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · Project Sync" }
                link rel="stylesheet" href="/ui/assets/ui.css";
                script src="/ui/assets/ui.js" defer {}
            }
            body {
                header.top {
                    a.brand href="/ui" { "Project Sync" }
                    span.who {
                        @if let Some(user) = &viewer.user {
                            span #user { (user) }
                        } @else {
                            span #user { "authentication off" }
                        }
                        @if viewer.signed_in {
                            form.inline method="post" action="/ui/sign-out" {
                                button #sign-out type="submit" { "Sign out" }
                            }
                        }
                    }
                }
                main { (body) }
            }
        }
    }
}

/// The sign-in form, as the Kubernetes Dashboard's: paste a bearer token.
pub fn sign_in(error: Option<&str>, next: &str) -> Markup {
    let body = html! {
        h1 { "Sign in" }
        p {
            "Paste a bearer token for the Kubernetes API server, for example from "
            code { "kubectl create token NAME -n NAMESPACE" }
            ". The operator checks it with a TokenReview and shows only what its user may see."
        }
        @if let Some(error) = error {
            p.error #sign-in-error { (error) }
        }
        form #sign-in method="post" action="/ui/sign-in" {
            input type="hidden" name="next" value=(next);
            label for="token" { "Token" }
            textarea #token name="token" rows="6" cols="80" autocomplete="off" spellcheck="false" required {}
            button #sign-in-submit type="submit" { "Sign in" }
        }
    };
    layout("Sign in", &Viewer::default(), body)
}

/// An error page (404, 403, ...).
pub fn error_page(viewer: &Viewer, title: &str, message: &str) -> Markup {
    layout(
        title,
        viewer,
        html! {
            h1 { (title) }
            p.error #error { (message) }
            p { a href="/ui" { "Back to the overview" } }
        },
    )
}

/// The URL of a resource's page.
pub fn resource_url(namespace: &str, name: &str) -> String {
    format!("/ui/namespaces/{namespace}/projectsyncs/{name}")
}

fn progress_cell(row: &ResourceRow) -> Markup {
    let stream = format!("{}/events", resource_url(&row.namespace, &row.name));
    let (value, max, text, class) = match &row.progress {
        Some(p) => (
            p.done,
            p.total.max(1),
            format!("{} {} / {}", p.stage, p.done, p.total),
            "live running",
        ),
        None => (0, 1, String::new(), "live idle"),
    };
    html! {
        div class=(class) data-stream=(stream) data-phase=(row.phase) {
            progress value=(value) max=(max) {}
            span.progress-text { (text) }
        }
    }
}

fn failure_cell(row: &ResourceRow) -> Markup {
    html! {
        @if let Some(failure) = &row.failure {
            div.failure {
                span.reason { (failure.reason) }
                @if failure.stalled { " (stalled)" }
                div.message { (failure.message) }
            }
        }
    }
}

/// The overview: every ProjectSync the viewer may list.
pub fn overview(viewer: &Viewer, scope: Option<&str>, rows: &[ResourceRow]) -> Markup {
    let title = match scope {
        Some(ns) => format!("ProjectSyncs in {ns}"),
        None => "ProjectSyncs".to_string(),
    };
    let body = html! {
        h1 { (title) }
        @if rows.is_empty() {
            p #empty { "No ProjectSync that you may list." }
        } @else {
            table #overview {
                thead { tr {
                    th { "Namespace" } th { "Name" } th { "Repository" } th { "Branch" }
                    th { "Phase" } th { "Commit" } th { "Progress" } th { "Last sync" } th { "Failure" }
                } }
                tbody {
                    @for row in rows {
                        tr.resource data-namespace=(row.namespace) data-name=(row.name) {
                            td { a href={ "/ui/namespaces/" (row.namespace) } { (row.namespace) } }
                            td { a.resource-link href=(resource_url(&row.namespace, &row.name)) { (row.name) } }
                            td { (row.repository) }
                            td { (row.branch) }
                            td.phase { (row.phase) @if row.suspended { " (suspended)" } }
                            td.commit { @if let Some(c) = &row.commit { code title=(c) { (short(c)) } } }
                            td { (progress_cell(row)) }
                            td { @if let Some(t) = &row.last_sync { time datetime=(t) { (t) } } }
                            td { (failure_cell(row)) }
                        }
                    }
                }
            }
        }
    };
    layout(&title, viewer, body)
}

/// What the project page shows besides the resource's row.
pub struct ProjectPage<'a> {
    pub row: &'a ResourceRow,
    pub history: &'a [RunRow],
    pub can_patch: bool,
    /// A message after an action (`?done=`), or why the store had nothing.
    pub notice: Option<&'a str>,
}

fn controls(row: &ResourceRow) -> Markup {
    let base = resource_url(&row.namespace, &row.name);
    html! {
        section #controls {
            h2 { "Controls" }
            form.inline method="post" action={ (base) "/actions/sync-now" } {
                button #sync-now type="submit" { "Sync now" }
            }
            @if row.suspended {
                form.inline method="post" action={ (base) "/actions/resume" } {
                    button #resume type="submit" { "Resume" }
                }
            } @else {
                form.inline method="post" action={ (base) "/actions/suspend" } {
                    button #suspend type="submit" { "Suspend" }
                }
            }
            @if row.restore.is_some() {
                form.inline method="post" action={ (base) "/actions/lift-restore" } {
                    button #lift-restore type="submit" { "Follow the branch again" }
                }
            }
        }
    }
}

fn history_table(row: &ResourceRow, runs: &[RunRow], can_patch: bool) -> Markup {
    let base = resource_url(&row.namespace, &row.name);
    html! {
        table #history {
            thead { tr {
                th { "Run" } th { "Status" } th { "Commit" } th { "Trigger" } th { "Started" }
                th { "+" } th { "~" } th { "−" } th { "Files" } th { "Took" } th { "Error" }
                @if can_patch { th { "" } }
            } }
            tbody {
                @for run in runs {
                    tr.run data-sync=(run.id) data-status=(run.status) {
                        td { a.run-link href={ (base) "/syncs/" (run.id) } { code { (short_run(&run.id)) } } }
                        td.status { (run.status) @if let Some(stage) = &run.stage { " (" (stage) ")" } }
                        td { @if let Some(c) = &run.commit { code title=(c) { (short(c)) } } }
                        td.trigger { (run.trigger) }
                        td { time datetime=(run.started_at) { (run.started_at) } }
                        td { (run.added) } td { (run.modified) } td { (run.deleted) } td { (run.total) }
                        td { @if let Some(ms) = run.duration_ms { (ms) " ms" } }
                        td.error { @if let Some(e) = &run.error { (e) } }
                        @if can_patch {
                            td { @if run.readable { (restore_form(&base, &run.id)) } }
                        }
                    }
                }
            }
        }
    }
}

fn restore_form(base: &str, sync: &str) -> Markup {
    html! {
        form.inline method="post" action={ (base) "/actions/restore" } {
            input type="hidden" name="sync" value=(sync);
            button.restore type="submit" data-sync=(sync) { "Restore" }
        }
    }
}

fn search_form(row: &ResourceRow, query: &str) -> Markup {
    html! {
        form #search method="get" action={ (resource_url(&row.namespace, &row.name)) "/search" } {
            input #q type="search" name="q" value=(query) maxlength="256" placeholder="Search the synced content";
            button type="submit" { "Search" }
        }
    }
}

fn resource_header(row: &ResourceRow) -> Markup {
    html! {
        h1 { (row.namespace) "/" (row.name) }
        dl.facts {
            dt { "Repository" } dd #repository { (row.repository) }
            dt { "Branch" } dd #branch { (row.branch) }
            dt { "Phase" } dd #phase { (row.phase) @if row.suspended { " (suspended)" } }
            dt { "Synced commit" }
            dd { @if let Some(c) = &row.commit { code #commit { (c) } } @else { "none yet" } }
            @if let Some(pin) = &row.pinned { dt { "Pinned to" } dd { code #pinned { (pin) } } }
            @if let Some(held) = &row.restore { dt { "Held at run" } dd { code #restore-held { (held) } } }
            dt { "Interval" } dd { (row.interval) }
            dt { "Last sync" }
            dd { @if let Some(t) = &row.last_sync { time datetime=(t) { (t) } } @else { "never" } }
            dt { "Progress" } dd { (progress_cell(row)) }
        }
        (failure_cell(row))
    }
}

/// A ProjectSync's page: status, controls, history and search.
pub fn project(viewer: &Viewer, page: &ProjectPage<'_>) -> Markup {
    let row = page.row;
    let body = html! {
        (resource_header(row))
        @if let Some(notice) = page.notice { p.notice #notice { (notice) } }
        @if page.can_patch { (controls(row)) }
        (search_form(row, ""))
        h2 { "History" }
        @if page.history.is_empty() {
            p #no-history { "No run recorded yet." }
        } @else {
            (history_table(row, page.history, page.can_patch))
        }
    };
    layout(&format!("{}/{}", row.namespace, row.name), viewer, body)
}

/// One run: its details and a file browser at its picture.
pub fn run(
    viewer: &Viewer,
    row: &ResourceRow,
    run: &RunRow,
    files: Result<&FilePage, &str>,
    can_patch: bool,
) -> Markup {
    let base = resource_url(&row.namespace, &row.name);
    let body = html! {
        p { a #back href=(base) { "← " (row.namespace) "/" (row.name) } }
        h1 { "Run " code #run-id { (run.id) } }
        dl.facts {
            dt { "Status" } dd #run-status { (run.status) }
            dt { "Commit" } dd { @if let Some(c) = &run.commit { code #run-commit { (c) } } }
            dt { "Trigger" } dd #run-trigger { (run.trigger) }
            dt { "Started" } dd { (run.started_at) }
            dt { "Finished" } dd { @if let Some(t) = &run.finished_at { (t) } }
            dt { "Files" } dd {
                (run.added) " added, " (run.modified) " modified, " (run.deleted) " deleted, "
                (run.unchanged) " unchanged; " (run.total) " in all"
            }
            @if let Some(ms) = run.duration_ms { dt { "Took" } dd { (ms) " ms" } }
            @if let Some(from) = &run.restored_from { dt { "Restored from" } dd { code { (from) } } }
            @if let Some(e) = &run.error { dt { "Error" } dd.error #run-error { (e) } }
        }
        @if can_patch && run.readable { (restore_form(&base, &run.id)) }
        h2 { "Files" }
        @match files {
            Err(why) => { p.note #files-unavailable { (why) } }
            Ok(page) => { (file_browser(&base, run, page)) }
        }
    };
    layout(&format!("Run {}", short_run(&run.id)), viewer, body)
}

fn file_browser(base: &str, run: &RunRow, page: &FilePage) -> Markup {
    let url = format!("{base}/syncs/{}", run.id);
    html! {
        form #files-filter method="get" action=(url) {
            input #prefix type="text" name="prefix" value=(page.prefix) maxlength="1024" placeholder="Path prefix";
            button type="submit" { "Filter" }
        }
        p #files-count { (page.matching) " file(s)" @if !page.prefix.is_empty() { " under " code { (page.prefix) } } }
        table #files {
            thead { tr { th { "Path" } th { "Size" } th { "Kind" } th { "Blob" } } }
            tbody {
                @for file in &page.files {
                    tr.file { td.path { (file.path) } td { (file.size) } td { (file.kind) } td { code { (file.blob) } } }
                }
            }
        }
        p.pages {
            @if page.page > 0 {
                a #prev href={ (url) "?prefix=" (query_escape(&page.prefix)) "&page=" (page.page - 1) } { "← previous" }
                " "
            }
            @if page.has_next() {
                a #next href={ (url) "?prefix=" (query_escape(&page.prefix)) "&page=" (page.page + 1) } { "next →" }
            }
        }
    }
}

/// Search results over the current picture.
pub fn search(
    viewer: &Viewer,
    row: &ResourceRow,
    query: &str,
    hits: Result<&[HitRow], &str>,
) -> Markup {
    let body = html! {
        p { a #back href=(resource_url(&row.namespace, &row.name)) { "← " (row.namespace) "/" (row.name) } }
        h1 { "Search" }
        (search_form(row, query))
        @match hits {
            Err(why) => { p.note #search-unavailable { (why) } }
            Ok(hits) => {
                @if hits.is_empty() && !query.is_empty() { p #no-hits { "Nothing found." } }
                @for hit in hits {
                    div.hit {
                        div.where { code.path { (hit.path) } " lines " (hit.lines) }
                        pre { (hit.excerpt) }
                    }
                }
            }
        }
    };
    layout("Search", viewer, body)
}

/// `value` percent-encoded for a query string (everything but unreserved
/// characters and `/`).
pub fn query_escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => {
                out.push(byte as char)
            }
            _ => out.push_str(&format!("%{byte:02X}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row() -> ResourceRow {
        ResourceRow {
            namespace: "team".into(),
            name: "app".into(),
            repository: "<img src=x onerror=alert(1)>".into(),
            branch: "main".into(),
            phase: "Synced".into(),
            commit: Some("a".repeat(40)),
            last_sync: None,
            last_result: None,
            failure: None,
            progress: None,
            suspended: false,
            interval: "5m".into(),
            pinned: None,
            restore: None,
        }
    }

    #[test]
    fn hostile_paths_and_messages_are_escaped_in_every_page() {
        let row = row();
        let page = FilePage {
            prefix: "\"><script>alert(2)</script>".into(),
            page: 0,
            per_page: 10,
            matching: 1,
            files: vec![super::super::model::FileRow {
                path: "<script>alert(3)</script>.rs".into(),
                size: 1,
                kind: "text".into(),
                blob: "abc".into(),
            }],
        };
        let run = RunRow {
            id: "0190".into(),
            commit: None,
            status: "FAILED".into(),
            stage: None,
            trigger: "<b>x</b>".into(),
            started_at: String::new(),
            finished_at: None,
            added: 0,
            modified: 0,
            deleted: 0,
            unchanged: 0,
            total: 0,
            duration_ms: None,
            error: Some("</td><script>alert(4)</script>".into()),
            restored_from: None,
            readable: false,
        };
        let html = run_page_html(&row, &run, &page);
        assert!(!html.contains("<script>alert"), "{html}");
        assert!(!html.contains("<img src=x"), "{html}");
        assert!(html.contains("&lt;script&gt;alert(3)&lt;/script&gt;.rs"));
        let overview = overview(&Viewer::default(), None, &[row]).into_string();
        assert!(overview.contains("&lt;img src=x onerror=alert(1)&gt;"));
    }

    fn run_page_html(row: &ResourceRow, run_row: &RunRow, page: &FilePage) -> String {
        run(&Viewer::default(), row, run_row, Ok(page), true).into_string()
    }

    #[test]
    fn controls_appear_only_for_a_viewer_allowed_to_patch() {
        let row = row();
        let history = [];
        let shown = project(
            &Viewer::default(),
            &ProjectPage {
                row: &row,
                history: &history,
                can_patch: true,
                notice: None,
            },
        )
        .into_string();
        assert!(shown.contains("id=\"sync-now\""));
        let hidden = project(
            &Viewer::default(),
            &ProjectPage {
                row: &row,
                history: &history,
                can_patch: false,
                notice: None,
            },
        )
        .into_string();
        assert!(!hidden.contains("id=\"controls\""));
        assert!(!hidden.contains("/actions/"));
    }

    #[test]
    fn query_values_are_percent_encoded() {
        assert_eq!(query_escape("src/a b&c"), "src/a%20b%26c");
        assert_eq!(query_escape("é"), "%C3%A9");
    }
}
