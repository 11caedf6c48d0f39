//! A private etcd + kube-apiserver for tests that must break the API server
//! (the shared testenv one serves every other test). Same binary and
//! certificates as `hack/testenv` (the serving certificate names
//! 127.0.0.1, whatever the port), its own ports and etcd data directory.
//! The API server can be SIGKILLed and started again on the same port with
//! the same etcd. Spawns processes; kills them when dropped.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use kube::{
    Client, Config,
    config::{KubeConfigOptions, Kubeconfig},
};

use super::env::{env_file, repo_root};
use super::git_server::free_port;

/// The control-plane binary `hack/testenv` built (cached; `build` only
/// prints its path when it exists).
fn controlplane_bin() -> PathBuf {
    let script = repo_root().join("hack/testenv");
    let out = Command::new(script)
        .arg("build")
        .stderr(Stdio::inherit())
        .output()
        .expect("run hack/testenv build");
    assert!(out.status.success(), "hack/testenv build failed");
    let path = String::from_utf8(out.stdout).expect("utf-8");
    PathBuf::from(path.lines().last().expect("a path").trim())
}

/// etcd and a kube-apiserver of our own.
pub struct PrivateControlPlane {
    dir: tempfile::TempDir,
    bin: PathBuf,
    pki: PathBuf,
    etcd: Child,
    etcd_port: u16,
    apiserver: Option<Child>,
    /// The API server's port (kept across restarts).
    pub port: u16,
    /// An admin kubeconfig for it.
    pub kubeconfig: PathBuf,
}

impl PrivateControlPlane {
    /// Starts etcd and the API server; waits until `/readyz` answers.
    pub async fn start() -> Self {
        let bin = controlplane_bin();
        let pki = env_file().parent().expect("testenv state").join("pki");
        assert!(
            pki.join("admin.crt").exists(),
            "no testenv certificates in {}: run `hack/testenv up`",
            pki.display()
        );
        let dir = tempfile::tempdir().expect("temporary directory");
        let (etcd_port, peer) = (free_port(), free_port());
        let client_url = format!("http://127.0.0.1:{etcd_port}");
        let peer_url = format!("http://127.0.0.1:{peer}");
        let etcd = Command::new(&bin)
            .arg("etcd")
            .args(["--name", "private", "--data-dir"])
            .arg(dir.path().join("etcd"))
            .args([
                "--listen-client-urls",
                &client_url,
                "--advertise-client-urls",
                &client_url,
            ])
            .args([
                "--listen-peer-urls",
                &peer_url,
                "--initial-advertise-peer-urls",
                &peer_url,
            ])
            .args(["--initial-cluster", &format!("private={peer_url}")])
            .args(["--unsafe-no-fsync", "--log-level", "warn"])
            .stdin(Stdio::null())
            .stdout(log_file(dir.path(), "etcd.log"))
            .stderr(log_file(dir.path(), "etcd.log"))
            .spawn()
            .expect("start etcd");
        let port = free_port();
        let kubeconfig = dir.path().join("kubeconfig");
        write_kubeconfig(&kubeconfig, &pki, port);
        let mut plane = PrivateControlPlane {
            dir,
            bin,
            pki,
            etcd,
            etcd_port,
            apiserver: None,
            port,
            kubeconfig,
        };
        plane.start_apiserver().await;
        plane
    }

    /// Starts the API server (again) on the same port and etcd, and waits
    /// until `/readyz` answers 200.
    pub async fn start_apiserver(&mut self) {
        let pki = &self.pki;
        let child = Command::new(&self.bin)
            .arg("kube-apiserver")
            .args([
                "--etcd-servers",
                &format!("http://127.0.0.1:{}", self.etcd_port),
            ])
            .args([
                "--bind-address",
                "127.0.0.1",
                "--advertise-address",
                "127.0.0.1",
            ])
            .args(["--secure-port", &self.port.to_string(), "--cert-dir"])
            .arg(self.dir.path().join("apiserver-certs"))
            .arg("--tls-cert-file")
            .arg(pki.join("serving.crt"))
            .arg("--tls-private-key-file")
            .arg(pki.join("serving.key"))
            .arg("--client-ca-file")
            .arg(pki.join("ca.crt"))
            .args(["--authorization-mode", "RBAC"])
            .args([
                "--service-account-issuer",
                "https://kubernetes.default.svc.cluster.local",
            ])
            .arg("--service-account-key-file")
            .arg(pki.join("sa.pub"))
            .arg("--service-account-signing-key-file")
            .arg(pki.join("sa.key"))
            .args(["--service-cluster-ip-range", "10.0.0.0/24"])
            .args(["--endpoint-reconciler-type", "none"])
            .args([
                "--disable-admission-plugins",
                "ServiceAccount",
                "--profiling=false",
            ])
            .stdin(Stdio::null())
            .stdout(log_file(self.dir.path(), "apiserver.log"))
            .stderr(log_file(self.dir.path(), "apiserver.log"))
            .spawn()
            .expect("start kube-apiserver");
        self.apiserver = Some(child);
        let client = self.client().await;
        let deadline = Instant::now() + Duration::from_secs(180);
        loop {
            let request = http::Request::get("/readyz")
                .body(Vec::new())
                .expect("request");
            if client
                .request_text(request)
                .await
                .is_ok_and(|body| body.trim() == "ok")
            {
                return;
            }
            if let Some(Ok(Some(status))) = self.apiserver.as_mut().map(Child::try_wait) {
                panic!("kube-apiserver exited ({status}):\n{}", self.log_tail());
            }
            assert!(
                Instant::now() < deadline,
                "kube-apiserver not ready within 180s:\n{}",
                self.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// SIGKILLs the API server (etcd keeps running).
    pub fn kill_apiserver(&mut self) {
        if let Some(mut child) = self.apiserver.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// An admin client.
    pub async fn client(&self) -> Client {
        let kubeconfig = Kubeconfig::read_from(&self.kubeconfig).expect("kubeconfig");
        let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
            .await
            .expect("kubeconfig");
        Client::try_from(config).expect("client")
    }

    fn log_tail(&self) -> String {
        let text =
            std::fs::read_to_string(self.dir.path().join("apiserver.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

impl Drop for PrivateControlPlane {
    fn drop(&mut self) {
        self.kill_apiserver();
        let _ = self.etcd.kill();
        let _ = self.etcd.wait();
    }
}

fn log_file(dir: &Path, name: &str) -> std::fs::File {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(name))
        .expect("log file")
}

fn write_kubeconfig(path: &Path, pki: &Path, port: u16) {
    let b64 = |name: &str| {
        base64::engine::general_purpose::STANDARD
            .encode(std::fs::read(pki.join(name)).expect("certificate"))
    };
    let text = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: private\n  cluster:\n    server: https://127.0.0.1:{port}\n    certificate-authority-data: {}\nusers:\n- name: admin\n  user:\n    client-certificate-data: {}\n    client-key-data: {}\ncontexts:\n- name: private\n  context:\n    cluster: private\n    user: admin\n    namespace: default\ncurrent-context: private\n",
        b64("ca.crt"),
        b64("admin.crt"),
        b64("admin.key")
    );
    std::fs::write(path, text).expect("write kubeconfig");
}
