//! The web page under `/ui` against the real operator, API server, Postgres
//! and git daemon: in a real browser (headless Chromium over WebDriver) an
//! editor signs in with a ServiceAccount token, watches the progress bar
//! advance during a sync of a few thousand files, sees the run in the
//! history, restores an earlier run and sees the file list change; a reader
//! sees no controls. Over plain HTTP (as curl would): the pages' own
//! authorization matrix, writes refused to readers and to other origins,
//! and hostile paths shown as text. Loopback only, every wait bounded.
//!
//! `PROJECTSYNC_UPDATE_SCREENSHOTS=1` writes the overview and project page
//! screenshots to docs/ (shown in the README); otherwise they are taken
//! into a temporary directory and only checked to be PNGs.

use std::time::{Duration, Instant};

use kube::Api;
use projectsync::api::ProjectSync;
use serde_json::{Value, json};
use support::{
    TestNamespace,
    access::{grant_verbs, service_account_token},
    browser::Browser,
    fresh_database, fresh_namespace,
    git_server::GitDaemon,
    operator::{Operator, OperatorConfig},
    psync::{create, synced_at, wait_until},
    repo::TestRepo,
};

/// Files of the repository the browser watches being synced.
const FILES: usize = 3_000;

fn page_url(operator: &Operator, ns: &str, name: &str) -> String {
    format!(
        "http://{}/ui/namespaces/{ns}/projectsyncs/{name}",
        operator.addr
    )
}

/// A repository of `FILES` small Rust files in 30 directories.
fn big_repo() -> (TestRepo, String) {
    let mut repo = TestRepo::new("app");
    for i in 0..FILES {
        repo.write(
            &format!("src/m{:02}/f{i:04}.rs", i / 100),
            format!("/// File {i}.\npub fn f{i}() -> usize {{\n    {i}\n}}\n"),
        );
    }
    let head = repo.commit("three thousand files");
    (repo, head)
}

async fn sign_in(browser: &Browser, operator: &Operator, token: &str) {
    browser.goto(&format!("http://{}/ui", operator.addr)).await;
    let field = browser.wait_for("#token", Duration::from_secs(10)).await;
    assert!(
        browser.current_url().await.contains("/ui/sign-in?next="),
        "an unauthenticated visit goes to the sign-in page"
    );
    browser.type_into(&field, token).await;
    let submit = browser
        .wait_for("#sign-in-submit", Duration::from_secs(5))
        .await;
    browser.click(&submit).await;
    browser.wait_for("#sign-out", Duration::from_secs(10)).await;
}

/// Reloads `url` until at least `n` runs of the history are COMPLETED and
/// `also` holds for the page's text; the run ids, newest first.
async fn wait_for_completed_runs(browser: &Browser, url: &str, n: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        browser.goto(url).await;
        let ids = browser
            .execute(
                "return Array.from(document.querySelectorAll('#history tr.run[data-status=COMPLETED]')).map(r => r.dataset.sync);",
            )
            .await;
        let ids: Vec<String> = ids
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect();
        if ids.len() >= n {
            return ids;
        }
        assert!(
            Instant::now() < deadline,
            "fewer than {n} completed runs on {url} within 120s:\n{}",
            browser.text_of("main").await
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn save_screenshot(name: &str, png: &[u8]) {
    assert!(
        png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 10_000,
        "{name} is not a real screenshot ({} bytes)",
        png.len()
    );
    let dir = if std::env::var_os("PROJECTSYNC_UPDATE_SCREENSHOTS").is_some() {
        support::repo_root().join("docs")
    } else {
        std::env::temp_dir()
    };
    std::fs::write(dir.join(name), png).expect("write the screenshot");
}

async fn api_of(ns: &TestNamespace) -> Api<ProjectSync> {
    Api::namespaced(ns.client.clone(), &ns.name)
}

#[tokio::test]
async fn an_editor_watches_a_sync_restores_a_run_and_a_reader_sees_no_controls() {
    let ns = fresh_namespace("ui-browser").await;
    let db = fresh_database("ui_browser").await;
    let (mut repo, first_head) = big_repo();
    let daemon = GitDaemon::start(repo.root());
    let operator = Operator::start(OperatorConfig::new(&ns.name, &db.url)).await;
    let api = api_of(&ns).await;
    // Suspended at first, so the browser is watching when the run starts.
    create(
        &api,
        "app",
        json!({ "source": { "git": { "url": daemon.url("app") } }, "branch": "main",
                "interval": "1h", "suspend": true }),
    )
    .await;
    let editor = service_account_token(&ns, "editor").await;
    grant_verbs(
        &ns,
        &ns.name,
        "editor",
        "ui-editor",
        &["get", "list", "patch"],
    )
    .await;
    let reader = service_account_token(&ns, "reader").await;
    grant_verbs(&ns, &ns.name, "reader", "ui-reader", &["get", "list"]).await;

    let browser = Browser::start(1280, 860).await;
    sign_in(&browser, &operator, &editor).await;
    assert!(
        browser.text_of("#user").await.contains("editor"),
        "the header names the signed-in user"
    );
    let url = page_url(&operator, &ns.name, "app");
    browser.goto(&url).await;
    let resume = browser.wait_for("#resume", Duration::from_secs(10)).await;
    browser.click(&resume).await;

    // The progress bar, sampled while the run goes: the import stage's
    // files done must be seen at two different values short of the total.
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut seen: Vec<(u64, u64)> = Vec::new();
    let mut last_change = Instant::now();
    loop {
        // A page that missed the end of the run (it reloads itself on a
        // live `completed`) is reloaded after a quiet while.
        if last_change.elapsed() > Duration::from_secs(15) {
            browser.goto(&url).await;
            last_change = Instant::now();
        }
        let sample = browser
            .execute(
                "const p = document.querySelector('dl.facts .live progress');\
                 const t = document.querySelector('dl.facts .live .progress-text');\
                 const done = document.querySelectorAll('#history tr.run[data-status=COMPLETED]').length;\
                 return p ? [p.value, p.max, t.textContent, done] : null;",
            )
            .await;
        if let Value::Array(v) = &sample {
            let text = v[2].as_str().unwrap_or_default();
            let (value, max) = (v[0].as_f64().unwrap_or(0.0), v[1].as_f64().unwrap_or(0.0));
            if text.starts_with("import ") && value > 0.0 && value < max {
                let point = (value as u64, max as u64);
                if seen.last() != Some(&point) {
                    seen.push(point);
                    last_change = Instant::now();
                }
            }
            if v[3].as_u64().unwrap_or(0) >= 1 {
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the first run did not appear completed within 120s; progress seen: {seen:?}\n{}",
            operator.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
    assert!(
        seen.len() >= 2 && seen.windows(2).all(|w| w[0].0 < w[1].0),
        "the progress bar advanced during the run: {seen:?}"
    );
    assert_eq!(
        browser.text_of("#commit").await,
        first_head,
        "the page shows the synced commit"
    );
    let first_run = wait_for_completed_runs(&browser, &url, 1).await[0].clone();
    // A second resource that cannot sync, for the overview's failure column.
    create(
        &api,
        "broken",
        json!({ "source": { "git": { "url": daemon.url("app") } }, "branch": "no-such-branch",
                "interval": "1h" }),
    )
    .await;

    // A second commit: 500 files gone, one new.
    for i in 0..500 {
        repo.remove(&format!("src/m{:02}/f{i:04}.rs", i / 100));
    }
    repo.write("NEW.md", "# new\n");
    let second_head = repo.commit("drop five directories, add NEW.md");
    let sync_now = browser.wait_for("#sync-now", Duration::from_secs(5)).await;
    browser.click(&sync_now).await;
    let runs = wait_for_completed_runs(&browser, &url, 2).await;
    wait_until(
        &api,
        "app",
        || operator.log_tail(),
        "synced",
        synced_at(second_head.clone()),
    )
    .await;
    let second_run = runs[0].clone();
    browser.goto(&format!("{url}/syncs/{second_run}")).await;
    assert_eq!(browser.text_of("#files-count").await, "2501 file(s)");
    browser
        .goto(&format!("{url}/syncs/{second_run}?prefix=NEW"))
        .await;
    assert_eq!(browser.text_of("td.path").await, "NEW.md");

    save_screenshot("ui-project.png", &{
        browser.goto(&url).await;
        browser.screenshot().await
    });

    // Restore the first run from its row in the history.
    browser.goto(&url).await;
    let restore = browser
        .wait_for(
            &format!("button.restore[data-sync=\"{first_run}\"]"),
            Duration::from_secs(5),
        )
        .await;
    browser.click(&restore).await;
    // The form posts and the browser follows the redirect: wait for the
    // page that answers it.
    let notice = browser.wait_for("#notice", Duration::from_secs(15)).await;
    let notice = browser.text(&notice).await;
    assert!(
        notice.contains("restore"),
        "the page confirms the restore: {notice:?}"
    );
    let runs = wait_for_completed_runs(&browser, &url, 3).await;
    let restored = runs[0].clone();
    browser.goto(&format!("{url}/syncs/{restored}")).await;
    assert!(
        browser.text_of("#run-trigger").await.contains("restore"),
        "the newest run is the restore"
    );
    assert_eq!(
        browser.text_of("#files-count").await,
        format!("{FILES} file(s)"),
        "the restored picture has the first run's files"
    );
    browser
        .goto(&format!("{url}/syncs/{restored}?prefix=NEW"))
        .await;
    assert_eq!(browser.text_of("#files-count").await, "0 file(s) under NEW");

    browser.goto(&format!("http://{}/ui", operator.addr)).await;
    browser.wait_for("#overview", Duration::from_secs(5)).await;
    wait_until(
        &api,
        "broken",
        || operator.log_tail(),
        "failed",
        |o| o.status.as_ref().and_then(|s| s.phase) == Some(projectsync::api::Phase::Failed),
    )
    .await;
    browser.goto(&format!("http://{}/ui", operator.addr)).await;
    let failure = browser
        .text_of("tr.resource[data-name=broken] .failure .reason")
        .await;
    assert!(
        !failure.is_empty(),
        "the overview shows why a resource fails"
    );
    save_screenshot("ui-overview.png", &browser.screenshot().await);

    // A reader: the same pages, no controls.
    let sign_out = browser.wait_for("#sign-out", Duration::from_secs(5)).await;
    browser.click(&sign_out).await;
    browser.wait_for("#token", Duration::from_secs(5)).await;
    sign_in(&browser, &operator, &reader).await;
    browser.goto(&url).await;
    browser.wait_for("#history", Duration::from_secs(5)).await;
    assert!(
        browser.find("#controls").await.is_none(),
        "no controls for a reader"
    );
    assert!(
        browser.find("button.restore").await.is_none(),
        "no restore for a reader"
    );
    assert!(
        browser
            .find_all("form[action*='/actions/']")
            .await
            .is_empty(),
        "no action form for a reader"
    );
    browser.quit().await;
    drop(daemon);
    drop(db);
}

/// `(status, location, body)` of a request to the operator.
async fn call(request: reqwest::RequestBuilder) -> (u16, Option<String>, String) {
    let response = request.send().await.expect("the operator answers");
    let status = response.status().as_u16();
    let location = response
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    (status, location, response.text().await.unwrap_or_default())
}

#[tokio::test]
async fn pages_are_authorized_per_verb_and_writes_need_patch_and_the_same_origin() {
    let a = fresh_namespace("ui-auth-a").await;
    let b = fresh_namespace("ui-auth-b").await;
    let db = fresh_database("ui_auth").await;
    let mut repo = TestRepo::new("app");
    repo.write("README.md", "# app\n");
    let head = repo.commit("initial");
    let daemon = GitDaemon::start(repo.root());
    let operator = Operator::start(OperatorConfig {
        extra_args: vec!["--namespace".into(), b.name.clone()],
        ..OperatorConfig::new(&a.name, &db.url)
    })
    .await;
    let spec = json!({ "source": { "git": { "url": daemon.url("app") } }, "branch": "main", "interval": "1h" });
    for ns in [&a, &b] {
        let api = api_of(ns).await;
        create(&api, "app", spec.clone()).await;
        wait_until(
            &api,
            "app",
            || operator.log_tail(),
            "synced",
            synced_at(head.clone()),
        )
        .await;
    }
    let reader = service_account_token(&a, "reader").await;
    grant_verbs(&a, &a.name, "reader", "ui-reader", &["get", "list"]).await;
    let editor = service_account_token(&a, "editor").await;
    grant_verbs(
        &a,
        &a.name,
        "editor",
        "ui-editor",
        &["get", "list", "patch"],
    )
    .await;
    let stranger = service_account_token(&a, "stranger").await;

    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let page_a = page_url(&operator, &a.name, "app");
    let page_b = page_url(&operator, &b.name, "app");
    let origin = format!("http://{}", operator.addr);

    let (status, location, _) = call(http.get(&page_a)).await;
    assert_eq!(status, 303, "no credentials: sign in");
    assert!(
        location
            .unwrap_or_default()
            .starts_with("/ui/sign-in?next=/ui/namespaces/")
    );
    assert_eq!(
        call(http.get(&page_a).bearer_auth("not-a-token")).await.0,
        401
    );
    assert_eq!(
        call(http.get(&page_a).bearer_auth(&stranger)).await.0,
        403,
        "no RBAC"
    );

    // curl with the bearer header reads the synced commit.
    let (status, _, body) = call(http.get(&page_a).bearer_auth(&reader)).await;
    assert_eq!(status, 200);
    assert!(
        body.contains(&format!("<code id=\"commit\">{head}</code>")),
        "{body}"
    );
    assert!(!body.contains("/actions/"), "no controls for a reader");
    let (_, _, body) = call(http.get(&page_a).bearer_auth(&editor)).await;
    assert!(body.contains("id=\"sync-now\""), "controls for an editor");

    // Namespace b is not the reader's: its page is forbidden, the overview omits it.
    assert_eq!(call(http.get(&page_b).bearer_auth(&reader)).await.0, 403);
    let (status, _, overview) = call(
        http.get(format!("http://{}/ui", operator.addr))
            .bearer_auth(&reader),
    )
    .await;
    assert_eq!(status, 200);
    assert!(
        overview.contains(&a.name) && !overview.contains(&b.name),
        "{overview}"
    );

    // Writes: patch is needed, and a cookie alone must come from this origin.
    let sync_now = format!("{page_a}/actions/sync-now");
    assert_eq!(
        call(http.post(&sync_now).bearer_auth(&reader).form(&[("x", "")]))
            .await
            .0,
        403,
        "a reader may not act"
    );
    let cookie = format!("{}={editor}", projectsync::http::ui::COOKIE);
    assert_eq!(
        call(
            http.post(&sync_now)
                .header("cookie", &cookie)
                .header("origin", "http://evil.example")
                .form(&[("x", "")])
        )
        .await
        .0,
        403,
        "a cross-site form post with the editor's cookie is refused"
    );
    let (status, location, _) = call(
        http.post(&sync_now)
            .header("cookie", &cookie)
            .header("origin", &origin)
            .form(&[("x", "")]),
    )
    .await;
    assert_eq!(status, 303, "the editor's own page may act");
    assert!(location.unwrap_or_default().ends_with("?done=sync-now"));
    let obj = api_of(&a).await.get("app").await.expect("get");
    assert!(
        obj.metadata
            .annotations
            .unwrap_or_default()
            .contains_key(projectsync::api::REQUESTED_AT_ANNOTATION),
        "sync now set the request annotation"
    );

    // Sign-in: the token is checked, kept HttpOnly and SameSite=Strict.
    let sign_in = format!("http://{}/ui/sign-in", operator.addr);
    let (status, _, _) = call(
        http.post(&sign_in)
            .header("origin", "http://evil.example")
            .form(&[("token", reader.as_str())]),
    )
    .await;
    assert_eq!(status, 403, "a sign-in from another site is refused");
    let (status, _, _) = call(
        http.post(&sign_in)
            .header("origin", &origin)
            .form(&[("token", "nope")]),
    )
    .await;
    assert_eq!(status, 401, "a token the API server rejects is not kept");
    let response = http
        .post(&sign_in)
        .header("origin", &origin)
        .form(&[("token", reader.as_str())])
        .send()
        .await
        .expect("sign in");
    assert_eq!(response.status().as_u16(), 303);
    let set_cookie = response.headers()["set-cookie"]
        .to_str()
        .expect("ascii")
        .to_string();
    assert!(
        set_cookie.contains("HttpOnly") && set_cookie.contains("SameSite=Strict"),
        "{set_cookie}"
    );
    drop(daemon);
}

#[tokio::test]
async fn hostile_paths_and_contents_are_shown_as_text_in_the_browser() {
    let ns = fresh_namespace("ui-hostile").await;
    let db = fresh_database("ui_hostile").await;
    let mut repo = TestRepo::new("app");
    let script_path = "<script>alert(1)</script>.txt";
    let img_path = "\"><img src=x onerror=alert(2)>.md";
    repo.write(script_path, "<script>alert(3)</script> needle\n");
    repo.write(img_path, "x\n");
    let head = repo.commit("<script>alert(4)</script>");
    let daemon = GitDaemon::start(repo.root());
    // Authentication off, on loopback only: the quickstart's mode.
    let operator = Operator::start(OperatorConfig {
        extra_args: vec!["--ui-auth".into(), "none".into()],
        ..OperatorConfig::new(&ns.name, &db.url)
    })
    .await;
    let api = api_of(&ns).await;
    create(
        &api,
        "app",
        json!({ "source": { "git": { "url": daemon.url("app") } }, "branch": "main", "interval": "1h" }),
    )
    .await;
    wait_until(
        &api,
        "app",
        || operator.log_tail(),
        "synced",
        synced_at(head),
    )
    .await;

    let browser = Browser::start(1200, 800).await;
    let url = page_url(&operator, &ns.name, "app");
    let runs = wait_for_completed_runs(&browser, &url, 1).await;
    browser.goto(&format!("{url}/syncs/{}", runs[0])).await;
    let paths = browser
        .execute(
            "return Array.from(document.querySelectorAll('td.path')).map(td => td.textContent);",
        )
        .await;
    let paths: Vec<&str> = paths
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        paths.contains(&script_path) && paths.contains(&img_path),
        "{paths:?}"
    );
    browser.goto(&format!("{url}/search?q=needle")).await;
    let hit = browser.text_of(".hit pre").await;
    assert!(
        hit.contains("<script>alert(3)</script>"),
        "the hit shows the content as text: {hit:?}\n{}",
        browser.source().await
    );
    for page in [
        format!("{url}/syncs/{}", runs[0]),
        format!("{url}/search?q=needle"),
        url.clone(),
    ] {
        browser.goto(&page).await;
        assert_eq!(browser.alert_text().await, None, "no script ran on {page}");
        assert_eq!(
            browser.find_all("script").await.len(),
            1,
            "only ui.js on {page}"
        );
        assert!(
            browser.find_all("img").await.is_empty(),
            "no injected image on {page}"
        );
    }
    browser.quit().await;

    // The same mode on an address others reach is refused at start-up.
    let out = std::process::Command::new(support::projectsync_binary())
        .args(["run", "--ui-auth", "none", "--http-addr", "0.0.0.0:0"])
        .env("DATABASE_URL", &db.url)
        .env("KUBECONFIG", &support::testenv().kubeconfig)
        .output()
        .expect("run the binary");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--insecure-ui-auth-none-on-any-address"),
        "{stderr}"
    );
    drop(daemon);
}
