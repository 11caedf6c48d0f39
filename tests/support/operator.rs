//! Runs the real `projectsync run` binary against the testenv control plane
//! and a test's own database, watching only the test's namespace and electing
//! its leader through a Lease in that namespace, so operators of parallel
//! tests never see each other. Spawns a process; kills it when dropped.

use std::{
    net::{SocketAddr, TcpListener},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use super::{projectsync_binary, testenv};

/// A running operator process.
pub struct Operator {
    child: Option<Child>,
    /// The API listener (progress streams, webhooks).
    pub addr: SocketAddr,
    /// The probe listener (`/healthz`, `/readyz`, `/metrics`).
    pub probe_addr: SocketAddr,
    /// stdout and stderr of the process.
    pub log: PathBuf,
    _cache: tempfile::TempDir,
}

/// How to start an operator.
pub struct OperatorConfig<'a> {
    pub namespace: &'a str,
    pub database_url: &'a str,
    /// Replica name (the Lease identity).
    pub identity: &'a str,
    pub extra_args: Vec<String>,
    /// The egress flags: by default loopback is allowed, as every test
    /// server listens there; empty runs the operator's default policy.
    pub egress_args: Vec<String>,
    /// Kubeconfig to run as (e.g. a ServiceAccount token); the admin one when `None`.
    pub kubeconfig: Option<&'a Path>,
    /// Namespace of the leader Lease; `namespace` when `None`.
    pub lease_namespace: Option<&'a str>,
    /// Extra environment variables (e.g. `SSL_CERT_FILE` for a test CA).
    pub env: Vec<(String, String)>,
    /// The cache directory (`--cache-dir`) to keep across operators, as a
    /// persistent volume would; a fresh temporary one when `None`.
    pub cache_dir: Option<&'a Path>,
    /// `--lease-duration` in seconds (6 unless a test needs more slack).
    pub lease_duration_secs: u64,
}

impl<'a> OperatorConfig<'a> {
    pub fn new(namespace: &'a str, database_url: &'a str) -> Self {
        OperatorConfig {
            namespace,
            database_url,
            identity: "replica-a",
            extra_args: Vec::new(),
            egress_args: [
                "--egress-allow-cidr",
                "127.0.0.0/8",
                "--egress-allow-cidr",
                "::1/128",
            ]
            .map(String::from)
            .to_vec(),
            kubeconfig: None,
            lease_namespace: None,
            env: Vec::new(),
            cache_dir: None,
            lease_duration_secs: 6,
        }
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind loopback")
        .local_addr()
        .expect("address")
        .port()
}

impl Operator {
    /// Starts the operator and waits until `/readyz` answers 200.
    pub async fn start(config: OperatorConfig<'_>) -> Self {
        let mut operator = Self::spawn(config);
        operator.wait_ready().await;
        operator
    }

    /// Starts the operator without waiting for it (it may exit, e.g. when
    /// RBAC forbids its Lease).
    pub fn spawn(config: OperatorConfig<'_>) -> Self {
        let cache = tempfile::tempdir().expect("cache directory");
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port())
            .parse()
            .expect("address");
        let probe_addr: SocketAddr = format!("127.0.0.1:{}", free_port())
            .parse()
            .expect("address");
        let log = std::env::temp_dir().join(format!(
            "projectsync-operator-{}-{}.log",
            config.namespace, config.identity
        ));
        let log_file = std::fs::File::create(&log).expect("operator log file");
        let child = Command::new(projectsync_binary())
            .arg("run")
            .args(["--namespace", config.namespace])
            .args(["--http-addr", &addr.to_string()])
            .args(["--probe-addr", &probe_addr.to_string()])
            .args([
                "--lease-namespace",
                config.lease_namespace.unwrap_or(config.namespace),
            ])
            .args(["--lease-duration", &config.lease_duration_secs.to_string()])
            .args(["--identity", config.identity])
            .arg("--cache-dir")
            .arg(config.cache_dir.unwrap_or(cache.path()))
            .args(["--shutdown-grace", "10"])
            .args(&config.egress_args)
            .args(&config.extra_args)
            .env(
                "KUBECONFIG",
                config.kubeconfig.unwrap_or(&testenv().kubeconfig),
            )
            .env("DATABASE_URL", config.database_url)
            .env("RUST_LOG", "info,projectsync=debug")
            .envs(config.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().expect("log file"))
            .stderr(log_file)
            .spawn()
            .expect("start the projectsync binary");
        Operator {
            child: Some(child),
            addr,
            probe_addr,
            log,
            _cache: cache,
        }
    }

    /// The whole log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    async fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(body) = http_get(self.probe_addr, "/readyz").await
                && body.0 == 200
            {
                return;
            }
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                panic!(
                    "the operator exited ({status}) before it was ready:\n{}",
                    self.log_tail()
                );
            }
            assert!(
                Instant::now() < deadline,
                "the operator was not ready within 30s:\n{}",
                self.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The last lines of the operator's log, for failure messages.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(60)..].join("\n")
    }

    /// `GET /metrics`.
    pub async fn metrics(&self) -> String {
        http_get(self.probe_addr, "/metrics")
            .await
            .expect("metrics answer")
            .1
    }

    /// The process id while it runs (benchmarks read its CPU and memory in `/proc`).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether the process is still running (has not exited).
    /// Asserts the process survived whatever the test did to it and its
    /// liveness endpoint answers 200.
    pub async fn assert_alive(&mut self) {
        assert!(
            self.is_running(),
            "the operator exited:\n{}",
            self.log_tail()
        );
        let (code, _) = http_get(self.probe_addr, "/healthz")
            .await
            .expect("/healthz answers");
        assert_eq!(code, 200, "/healthz");
    }

    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|child| matches!(child.try_wait(), Ok(None)))
    }

    /// SIGKILL: no chance to clean up.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, then waits (bounded) for the process to exit; returns whether it did.
    pub async fn terminate(&mut self, within: Duration) -> bool {
        let Some(mut child) = self.child.take() else {
            return true;
        };
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let _ = child.kill();
        let _ = child.wait();
        false
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A minimal HTTP/1.1 GET on loopback: (status, body).
pub async fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await?;
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut response))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no answer within 10s"))??;
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}
