//! A real OpenSSH server on loopback for source tests: Debian's
//! `/usr/sbin/sshd -D -e` as a child process with its own host key, its own
//! `sshd_config` and one authorized client key, all in a temporary
//! directory. Git runs over it exactly as against a hosted remote
//! (`git-upload-pack` through the login shell). Stops when dropped.
//!
//! Runs as the current user and only admits that user (root in CI: key
//! login only). As root, sshd needs its privilege separation directory
//! `/run/sshd`, which only Debian's init scripts create; it is created here.
//! As another user no privilege is needed, but with `UsePAM no` sshd refuses
//! accounts whose password field is locked (`!`, as `useradd` leaves it).

use std::fs::File;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use projectsync::source::Credentials;

const SSHD: &str = "/usr/sbin/sshd";
const PRIVSEP_DIR: &str = "/run/sshd";

/// An ed25519 key pair made by `ssh-keygen`, as text.
#[derive(Clone)]
pub struct SshKeyPair {
    /// The OpenSSH private key file (what a Secret's `identity` holds).
    pub private_key: String,
    /// `ssh-ed25519 AAAA…`, without the comment.
    pub public_key: String,
}

impl SshKeyPair {
    /// A fresh key pair with no passphrase.
    pub fn generate() -> Self {
        let dir = tempfile::tempdir().expect("temporary directory");
        generate_key(&dir.path().join("key"))
    }
}

/// Runs `ssh-keygen` writing `path` and `path.pub`; returns both as text.
fn generate_key(path: &Path) -> SshKeyPair {
    let out = Command::new("ssh-keygen")
        .args([
            "-q",
            "-t",
            "ed25519",
            "-N",
            "",
            "-C",
            "projectsync-test",
            "-f",
        ])
        .arg(path)
        .stdin(Stdio::null())
        .output()
        .expect("run ssh-keygen (install openssh-client)");
    assert!(
        out.status.success(),
        "ssh-keygen failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let private_key = std::fs::read_to_string(path).expect("private key");
    let public = std::fs::read_to_string(path.with_extension("pub")).expect("public key");
    let public_key = public
        .split_ascii_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ");
    SshKeyPair {
        private_key,
        public_key,
    }
}

/// The name of the user running the tests (the only one sshd admits).
fn current_user() -> String {
    let out = Command::new("id").arg("-un").output().expect("run id -un");
    assert!(out.status.success(), "id -un failed");
    String::from_utf8(out.stdout)
        .expect("user name is UTF-8")
        .trim()
        .to_string()
}

/// A free loopback port (bound and released; a lost race is retried).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind loopback")
        .local_addr()
        .expect("address")
        .port()
}

/// `sshd` serving the whole filesystem to one key of the current user.
pub struct SshServer {
    dir: tempfile::TempDir,
    child: Child,
    port: u16,
    user: String,
    host_public_key: String,
    client: SshKeyPair,
}

impl SshServer {
    /// Starts sshd like a typical git host: it accepts `GIT_PROTOCOL`, so
    /// git speaks protocol v2 over it.
    pub fn start() -> Self {
        Self::start_with(true)
    }

    /// Starts sshd with a stock configuration that drops `GIT_PROTOCOL`
    /// (Debian's default `AcceptEnv LANG LC_*`), so git falls back to
    /// protocol v0, where only advertised commits may be fetched by id.
    pub fn start_without_protocol_v2() -> Self {
        Self::start_with(false)
    }

    fn start_with(accept_git_protocol: bool) -> Self {
        assert!(
            Path::new(SSHD).exists(),
            "{SSHD} is missing: apt-get install openssh-server (.ci/run does)"
        );
        let user = current_user();
        if user == "root" {
            std::fs::create_dir_all(PRIVSEP_DIR).expect("create /run/sshd");
        }
        let dir = tempfile::tempdir().expect("temporary directory");
        let host = generate_key(&dir.path().join("host_ed25519"));
        let client = generate_key(&dir.path().join("client_ed25519"));
        let authorized = dir.path().join("authorized_keys");
        std::fs::write(&authorized, format!("{}\n", client.public_key)).expect("authorized_keys");
        let mut last_log = String::new();
        for _ in 0..3 {
            let port = free_port();
            let config = dir.path().join("sshd_config");
            std::fs::write(
                &config,
                sshd_config(dir.path(), port, &authorized, &user, accept_git_protocol),
            )
            .expect("sshd_config");
            let log = dir.path().join("sshd.log");
            let mut child = Command::new(SSHD)
                .arg("-D")
                .arg("-e")
                .arg("-f")
                .arg(&config)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(File::create(&log).expect("sshd log"))
                .spawn()
                .expect("start sshd");
            if wait_for_port(SocketAddr::from(([127, 0, 0, 1], port)), &mut child) {
                return SshServer {
                    dir,
                    child,
                    port,
                    user,
                    host_public_key: host.public_key,
                    client,
                };
            }
            let _ = child.kill();
            let _ = child.wait();
            last_log = std::fs::read_to_string(&log).unwrap_or_default();
        }
        panic!("sshd did not start on loopback; its log:\n{last_log}");
    }

    /// `ssh://<user>@127.0.0.1:<port>/<absolute path>`.
    pub fn url(&self, repo_path: &Path) -> String {
        let path = std::path::absolute(repo_path).expect("absolute path");
        format!(
            "ssh://{}@127.0.0.1:{}{}",
            self.user,
            self.port,
            path.display()
        )
    }

    /// The `known_hosts` line for this server's real host key.
    pub fn known_hosts(&self) -> String {
        self.known_hosts_with(&self.host_public_key)
    }

    /// A `known_hosts` line claiming this server has `public_key`.
    pub fn known_hosts_with(&self, public_key: &str) -> String {
        format!("[127.0.0.1]:{} {public_key}\n", self.port)
    }

    /// The key pair whose public half is authorized.
    pub fn client_key(&self) -> &SshKeyPair {
        &self.client
    }

    /// The authorized key and the real host key, as a source receives them.
    pub fn credentials(&self) -> Credentials {
        Credentials::SshKey {
            private_key: self.client.private_key.clone(),
            known_hosts: self.known_hosts(),
        }
    }

    /// What sshd logged so far (for assertion messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("sshd.log")).unwrap_or_default()
    }
}

impl Drop for SshServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn sshd_config(
    dir: &Path,
    port: u16,
    authorized: &Path,
    user: &str,
    accept_git_protocol: bool,
) -> String {
    let accept_env = if accept_git_protocol {
        "GIT_PROTOCOL"
    } else {
        "LANG LC_*"
    };
    format!(
        "ListenAddress 127.0.0.1\n\
         Port {port}\n\
         HostKey {host}\n\
         PidFile {pid}\n\
         AuthorizedKeysFile {authorized}\n\
         AllowUsers {user}\n\
         PubkeyAuthentication yes\n\
         PasswordAuthentication no\n\
         KbdInteractiveAuthentication no\n\
         PermitRootLogin prohibit-password\n\
         StrictModes no\n\
         UsePAM no\n\
         AcceptEnv {accept_env}\n\
         LogLevel VERBOSE\n",
        host = dir.join("host_ed25519").display(),
        pid = dir.join("sshd.pid").display(),
        authorized = authorized.display(),
    )
}

/// Polls until sshd accepts connections on `addr` (true), or it exits or
/// 10s pass (false: the caller retries on another port).
fn wait_for_port(addr: SocketAddr, child: &mut Child) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return true;
        }
        if let Ok(Some(_)) = child.try_wait() {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}
