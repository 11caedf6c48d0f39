//! Real git servers on loopback for source tests: Debian's `git daemon`
//! (git://) and `git http-backend` (smart HTTP) behind a small CGI bridge,
//! optionally requiring HTTP basic authentication. Each serves every
//! repository below a base directory and stops when dropped.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, Method, Response, StatusCode, Uri};
use base64::Engine;

const HTTP_BACKEND: &str = "/usr/lib/git-core/git-http-backend";

/// A free loopback port (bound and released; the race is acceptable here).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind loopback")
        .local_addr()
        .expect("address")
        .port()
}

/// Polls until something accepts connections on `addr`, within a deadline.
fn wait_for_port(addr: SocketAddr, child: &mut Child) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("git daemon exited early: {status}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("git daemon did not listen on {addr} within 10s");
}

/// `git daemon` exporting every repository under a base path. It logs
/// each request (`--verbose`) to a file, so a test or the benchmark can
/// count what a client asked for.
pub struct GitDaemon {
    child: Child,
    port: u16,
    log: tempfile::NamedTempFile,
}

impl GitDaemon {
    pub fn start(base_path: &Path) -> Self {
        let port = free_port();
        let log = tempfile::NamedTempFile::new().expect("git daemon log file");
        let mut child = Command::new("git")
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .args([
                "daemon",
                "--reuseaddr",
                "--export-all",
                "--verbose",
                "--listen=127.0.0.1",
            ])
            .arg(format!("--port={port}"))
            .arg(format!("--base-path={}", base_path.display()))
            .arg(base_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log.reopen().expect("git daemon log file"))
            .spawn()
            .expect("start git daemon");
        wait_for_port(SocketAddr::from(([127, 0, 0, 1], port)), &mut child);
        GitDaemon { child, port, log }
    }

    /// Requests served so far: each `git ls-remote` or `git fetch` is one
    /// upload-pack request (protocol v2 asks once per connection).
    pub fn request_count(&self) -> usize {
        std::fs::read_to_string(self.log.path())
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("Request upload-pack"))
            .count()
    }

    /// `git://127.0.0.1:<port>/<name>`.
    pub fn url(&self, name: &str) -> String {
        format!("git://127.0.0.1:{}/{name}", self.port)
    }
}

impl Drop for GitDaemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Bridge {
    project_root: PathBuf,
    basic_auth: Option<String>,
}

/// `git http-backend` behind a CGI bridge on an axum server.
pub struct GitHttp {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl GitHttp {
    /// Serves `project_root`; with `credentials`, every request needs that
    /// basic authentication (401 with a challenge otherwise, as real hosts do).
    pub async fn start(project_root: &Path, credentials: Option<(&str, &str)>) -> Self {
        let basic_auth = credentials.map(|(u, p)| {
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"))
            )
        });
        let state = Arc::new(Bridge {
            project_root: project_root.to_path_buf(),
            basic_auth,
        });
        let app = axum::Router::new().fallback(cgi).with_state(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let addr = listener.local_addr().expect("address");
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.expect("serve");
        });
        GitHttp { addr, task }
    }

    /// `http://127.0.0.1:<port>/<name>`.
    pub fn url(&self, name: &str) -> String {
        format!("http://{}/{name}", self.addr)
    }
}

impl Drop for GitHttp {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn cgi(
    State(bridge): State<Arc<Bridge>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response<Body> {
    if let Some(expected) = &bridge.basic_auth {
        let given = headers.get("authorization").and_then(|v| v.to_str().ok());
        if given != Some(expected.as_str()) {
            return Response::builder()
                .status(StatusCode::UNAUTHORIZED)
                .header("www-authenticate", "Basic realm=\"git\"")
                .body(Body::from("authentication required\n"))
                .expect("response");
        }
    }
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    let mut cmd = tokio::process::Command::new(HTTP_BACKEND);
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_PROJECT_ROOT", &bridge.project_root)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("REQUEST_METHOD", method.as_str())
        .env("PATH_INFO", uri.path())
        .env("QUERY_STRING", uri.query().unwrap_or(""))
        .env("CONTENT_TYPE", header("content-type"))
        .env("CONTENT_LENGTH", body.len().to_string())
        .env("HTTP_CONTENT_ENCODING", header("content-encoding"))
        .env("GIT_PROTOCOL", header("git-protocol"))
        .env("REMOTE_ADDR", "127.0.0.1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    if bridge.basic_auth.is_some() {
        cmd.env("REMOTE_USER", "git").env("AUTH_TYPE", "Basic");
    }
    let mut child = cmd.spawn().expect("run git http-backend");
    let mut stdin = child.stdin.take().expect("stdin");
    let writer = tokio::spawn(async move {
        use tokio::io::AsyncWriteExt;
        let _ = stdin.write_all(&body).await;
    });
    let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("http-backend finishes within 60s")
        .expect("http-backend output");
    let _ = writer.await;
    parse_cgi_response(&out.stdout)
}

/// Splits CGI output into status, headers and body.
fn parse_cgi_response(raw: &[u8]) -> Response<Body> {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| (i, 4));
    let split = split.or_else(|| raw.windows(2).position(|w| w == b"\n\n").map(|i| (i, 2)));
    let Some((end, sep)) = split else {
        return Response::builder()
            .status(500)
            .body(Body::from("bad CGI output"))
            .expect("response");
    };
    let mut builder = Response::builder().status(200);
    for line in String::from_utf8_lossy(&raw[..end]).lines() {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("status") {
            let code: u16 = value
                .split(' ')
                .next()
                .and_then(|c| c.parse().ok())
                .unwrap_or(500);
            builder = builder.status(code);
        } else {
            builder = builder.header(name.trim(), value);
        }
    }
    builder
        .body(Body::from(raw[end + sep..].to_vec()))
        .expect("response")
}
