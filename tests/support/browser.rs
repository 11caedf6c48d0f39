//! A real browser for the web page's tests: Debian's headless Chromium,
//! driven over the W3C WebDriver protocol by `chromedriver`, both started by
//! the test on a free loopback port with a throwaway profile. The protocol
//! is a handful of JSON calls, so this speaks it directly over reqwest
//! (already in the build) rather than through a WebDriver crate. Every
//! command and wait is bounded. Spawns processes; kills them (the whole
//! process group, Chromium included) when dropped.
//!
//! Missing binaries fail the test with the command that installs them.

use std::{
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use base64::Engine;
use serde_json::{Value, json};

/// Debian's paths (`apt-get install chromium chromium-driver`).
pub const CHROMIUM: &str = "/usr/bin/chromium";
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// The W3C key of an element reference.
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";
/// Longest a single WebDriver command may take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// An element of the current page.
#[derive(Debug, Clone)]
pub struct Element(String);

/// A browser session.
pub struct Browser {
    driver: Option<Child>,
    base: String,
    session: String,
    http: reqwest::Client,
    /// chromedriver's log.
    pub log: PathBuf,
    _profile: tempfile::TempDir,
}

fn require(path: &str) {
    assert!(
        Path::new(path).exists(),
        "{path} is missing: the browser tests need Debian's chromium and chromium-driver \
         (apt-get install chromium chromium-driver; .ci/run installs them)"
    );
}

impl Browser {
    /// Starts chromedriver and opens a headless Chromium session with a
    /// `width` x `height` window.
    pub async fn start(width: u32, height: u32) -> Self {
        require(CHROMIUM);
        require(CHROMEDRIVER);
        let port = super::git_server::free_port();
        let profile = tempfile::tempdir().expect("browser profile directory");
        let log = std::env::temp_dir().join(format!("chromedriver-{port}.log"));
        let log_file = std::fs::File::create(&log).expect("chromedriver log");
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().expect("log file"))
            .stderr(log_file)
            // Its own process group, so Drop can kill Chromium with it.
            .process_group(0)
            .spawn()
            .expect("start chromedriver");
        let http = reqwest::Client::builder()
            .timeout(COMMAND_TIMEOUT)
            .no_proxy()
            .build()
            .expect("HTTP client");
        let base = format!("http://127.0.0.1:{port}");
        let mut browser = Browser {
            driver: Some(driver),
            base,
            session: String::new(),
            http,
            log,
            _profile: profile,
        };
        browser.wait_for_driver().await;
        let args = [
            "--headless=new".to_string(),
            "--no-sandbox".to_string(),
            "--disable-gpu".to_string(),
            "--disable-dev-shm-usage".to_string(),
            "--no-first-run".to_string(),
            "--no-default-browser-check".to_string(),
            "--disable-extensions".to_string(),
            "--disable-background-networking".to_string(),
            "--hide-scrollbars".to_string(),
            "--force-device-scale-factor=1".to_string(),
            format!("--window-size={width},{height}"),
            format!("--user-data-dir={}", browser._profile.path().display()),
        ];
        let answer = browser
            .raw(
                reqwest::Method::POST,
                "/session",
                Some(json!({"capabilities": {"alwaysMatch": {
                    "browserName": "chrome",
                    "pageLoadStrategy": "normal",
                    "timeouts": {"pageLoad": 30_000, "script": 10_000, "implicit": 0},
                    "goog:chromeOptions": {"binary": CHROMIUM, "args": args},
                }}})),
            )
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "cannot open a Chromium session: {e}\n{}",
                    browser.log_tail()
                )
            });
        browser.session = answer["sessionId"]
            .as_str()
            .expect("a session id")
            .to_string();
        browser
    }

    async fn wait_for_driver(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(status) = self.raw(reqwest::Method::GET, "/status", None).await
                && status["ready"] == true
            {
                return;
            }
            if let Some(child) = self.driver.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                panic!("chromedriver exited ({status}):\n{}", self.log_tail());
            }
            assert!(
                Instant::now() < deadline,
                "chromedriver was not ready within 20s:\n{}",
                self.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The end of chromedriver's log, for failure messages.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// One WebDriver command: its `value`, or the error it answered.
    async fn raw(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, String> {
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.map_err(|e| e.to_string())?;
        let status = response.status();
        let answer: Value = response.json().await.map_err(|e| e.to_string())?;
        let value = answer.get("value").cloned().unwrap_or(Value::Null);
        if status.is_success() {
            Ok(value)
        } else {
            Err(format!(
                "{}: {}",
                value["error"].as_str().unwrap_or("error"),
                value["message"].as_str().unwrap_or_default()
            ))
        }
    }

    /// A command of this session.
    async fn command(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, String> {
        self.raw(method, &format!("/session/{}{path}", self.session), body)
            .await
    }

    /// Loads `url` and waits for the document to load.
    pub async fn goto(&self, url: &str) {
        self.command(reqwest::Method::POST, "/url", Some(json!({"url": url})))
            .await
            .unwrap_or_else(|e| panic!("navigate to {url}: {e}"));
    }

    /// The URL shown.
    pub async fn current_url(&self) -> String {
        self.command(reqwest::Method::GET, "/url", None)
            .await
            .expect("current URL")
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// The page's HTML as the browser holds it now.
    pub async fn source(&self) -> String {
        self.command(reqwest::Method::GET, "/source", None)
            .await
            .expect("page source")
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// The elements matching a CSS selector (none is no error).
    pub async fn find_all(&self, css: &str) -> Vec<Element> {
        let found = self
            .command(
                reqwest::Method::POST,
                "/elements",
                Some(json!({"using": "css selector", "value": css})),
            )
            .await
            .unwrap_or_else(|e| panic!("find {css}: {e}"));
        found
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|e| e[ELEMENT_KEY].as_str().map(|id| Element(id.to_string())))
            .collect()
    }

    /// The first element matching `css`, if any.
    pub async fn find(&self, css: &str) -> Option<Element> {
        self.find_all(css).await.into_iter().next()
    }

    /// The first element matching `css`, waiting at most `within` for it.
    pub async fn wait_for(&self, css: &str, within: Duration) -> Element {
        let deadline = Instant::now() + within;
        loop {
            if let Some(element) = self.find(css).await {
                return element;
            }
            assert!(
                Instant::now() < deadline,
                "no {css} within {within:?} on {}:\n{}",
                self.current_url().await,
                self.text_of("body").await
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The rendered text of an element.
    pub async fn text(&self, element: &Element) -> String {
        self.command(
            reqwest::Method::GET,
            &format!("/element/{}/text", element.0),
            None,
        )
        .await
        .map(|v| v.as_str().unwrap_or_default().to_string())
        .unwrap_or_else(|e| panic!("text of an element: {e}"))
    }

    /// The text of the first element matching `css` (empty when none).
    pub async fn text_of(&self, css: &str) -> String {
        match self.find(css).await {
            Some(element) => self.text(&element).await,
            None => String::new(),
        }
    }

    /// Types `text` into an input or textarea.
    pub async fn type_into(&self, element: &Element, text: &str) {
        self.command(
            reqwest::Method::POST,
            &format!("/element/{}/value", element.0),
            Some(json!({"text": text})),
        )
        .await
        .unwrap_or_else(|e| panic!("type into an element: {e}"));
    }

    /// Clicks an element (a click that starts a navigation returns once the
    /// new page loaded).
    pub async fn click(&self, element: &Element) {
        self.command(
            reqwest::Method::POST,
            &format!("/element/{}/click", element.0),
            Some(json!({})),
        )
        .await
        .unwrap_or_else(|e| panic!("click: {e}"));
    }

    /// Runs `script` in the page (`return ...` gives its value).
    pub async fn execute(&self, script: &str) -> Value {
        self.command(
            reqwest::Method::POST,
            "/execute/sync",
            Some(json!({"script": script, "args": []})),
        )
        .await
        .unwrap_or_else(|e| panic!("execute script: {e}"))
    }

    /// The text of an open `alert()`, if a script opened one.
    pub async fn alert_text(&self) -> Option<String> {
        self.command(reqwest::Method::GET, "/alert/text", None)
            .await
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
    }

    /// A PNG of the viewport.
    pub async fn screenshot(&self) -> Vec<u8> {
        let data = self
            .command(reqwest::Method::GET, "/screenshot", None)
            .await
            .expect("screenshot");
        base64::engine::general_purpose::STANDARD
            .decode(data.as_str().unwrap_or_default())
            .expect("a base64 PNG")
    }

    /// Ends the session and stops the driver.
    pub async fn quit(mut self) {
        let _ = self
            .raw(
                reqwest::Method::DELETE,
                &format!("/session/{}", self.session),
                None,
            )
            .await;
        self.kill();
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.driver.take() {
            // The group: chromedriver and the Chromium it started.
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{}", child.id())])
                .stderr(Stdio::null())
                .status();
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        self.kill();
    }
}
