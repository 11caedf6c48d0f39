//! Running the git CLI (I/O): one process per operation in the sealed
//! environment of [`super::environment`], within a time limit, killed with
//! its helpers on timeout or when a fetch outgrows the cache, and its
//! failure classified from stderr.
//!
//! Git makes its own connections, so the egress policy is applied before
//! it runs: every remote operation first resolves the remote's host (and
//! the proxy's) through [`EgressPolicy::resolve`], and git is then pinned
//! to the checked addresses: curl's resolve list (`http.curloptResolve`)
//! for http(s) and the proxy, `HostName=` (with `HostKeyAlias=` so
//! `known_hosts` still matches the name) for ssh, and a `url.insteadOf`
//! rewrite to the address for git://. Redirects are not followed (see
//! `environment`). A tunnelled target is resolved by the proxy.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;

use super::environment::build_environment;
use super::error::{GitError, build_error_from_stderr};
use super::pool::CommandRunning;
use super::remote::{Transport, redact_url};
use crate::egress::{EgressError, EgressPolicy};
use crate::source::{Credentials, proxy::ProxySettings};

/// Runs git for one repository with the sealed environment.
pub(crate) struct GitRunner {
    pub url: String,
    pub display_url: String,
    pub git_dir: PathBuf,
    pub timeout: Duration,
    env: Vec<(OsString, OsString)>,
    transport: Transport,
    proxy: Option<ProxySettings>,
    egress: EgressPolicy,
    /// The `core.gitProxy` script of `git://` remotes ([`super::connector`]).
    connector: Option<PathBuf>,
    /// Counts the commands running (`projectsync_child_processes`).
    commands_gauge: Option<prometheus::IntGauge>,
}

/// Shows no URL userinfo and no environment values (they hold secrets).
impl std::fmt::Debug for GitRunner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GitRunner")
            .field("url", &self.display_url)
            .field("git_dir", &self.git_dir)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// Output of a successful git run.
pub(crate) struct Output {
    pub stdout: Vec<u8>,
}

/// What [`collect`] read of a command.
enum Collected {
    Done(std::process::Output),
    /// stdout went past its limit; the command is still running.
    Overflow,
}

/// Reads the command's stdout (up to `max_stdout` bytes, when given) and
/// stderr side by side, then waits for it. Past the limit it stops at once,
/// without waiting for a command blocked on a full pipe.
async fn collect(
    child: &mut tokio::process::Child,
    max_stdout: Option<usize>,
) -> std::io::Result<Collected> {
    let mut out = child.stdout.take();
    let mut err = child.stderr.take();
    let read_out = async {
        let mut buf = Vec::new();
        if let Some(pipe) = out.as_mut() {
            let cap = max_stdout.map_or(u64::MAX, |m| m as u64 + 1);
            pipe.take(cap).read_to_end(&mut buf).await?;
        }
        match max_stdout {
            Some(max) if buf.len() > max => Err(std::io::Error::other(Overflow)),
            _ => Ok(buf),
        }
    };
    let read_err = async {
        let mut buf = Vec::new();
        if let Some(pipe) = err.as_mut() {
            pipe.read_to_end(&mut buf).await?;
        }
        Ok(buf)
    };
    match tokio::try_join!(read_out, read_err) {
        Ok((stdout, stderr)) => {
            let status = child.wait().await?;
            Ok(Collected::Done(std::process::Output {
                status,
                stdout,
                stderr,
            }))
        }
        Err(error) if error.get_ref().is_some_and(|e| e.is::<Overflow>()) => {
            Ok(Collected::Overflow)
        }
        Err(error) => Err(error),
    }
}

/// The marker of an overflowing stdout inside [`collect`] (it ends the
/// join of both pipes at once).
#[derive(Debug, thiserror::Error)]
#[error("stdout past its limit")]
struct Overflow;

impl GitRunner {
    /// Prepares the environment; writes the askpass script and SSH files
    /// into `state_dir` (owner-only permissions).
    pub fn new(
        url: &str,
        transport: Transport,
        git_dir: PathBuf,
        state_dir: &Path,
        credentials: &Credentials,
        proxy: Option<&ProxySettings>,
        timeout: Duration,
    ) -> Result<Self, GitError> {
        let env = build_environment(url, transport, state_dir, credentials, proxy)?;
        Ok(GitRunner {
            url: url.to_string(),
            display_url: redact_url(url),
            git_dir,
            timeout,
            env,
            transport,
            proxy: proxy
                .filter(|_| matches!(transport, Transport::Https | Transport::Http))
                .cloned(),
            egress: EgressPolicy::default(),
            connector: None,
            commands_gauge: None,
        })
    }

    /// Connects `git://` remotes through `program` (the operator's binary,
    /// whose `git-connect` subcommand is [`super::connector`]); writes the
    /// script git runs into `state_dir`. Other transports set their own
    /// socket options (curl and ssh), so they are left alone.
    pub fn with_connector(
        mut self,
        program: Option<&Path>,
        state_dir: &Path,
    ) -> Result<Self, GitError> {
        if let Some(program) = program
            && self.transport == Transport::Git
        {
            let script =
                super::connector::write_proxy_script(state_dir, program).map_err(|source| {
                    GitError::CacheDirectory {
                        path: state_dir.display().to_string(),
                        source,
                    }
                })?;
            self.connector = Some(script);
        }
        Ok(self)
    }

    /// The egress policy remote operations are checked against (the
    /// default refuses internal addresses).
    pub fn with_egress(mut self, egress: EgressPolicy) -> Self {
        self.egress = egress;
        self
    }

    /// Counts this runner's commands in `gauge` while they run.
    pub fn with_commands_gauge(mut self, gauge: Option<prometheus::IntGauge>) -> Self {
        self.commands_gauge = gauge;
        self
    }

    /// Marks one command running until the guard is dropped.
    pub fn command_running(&self) -> CommandRunning {
        CommandRunning::start(self.commands_gauge.as_ref())
    }

    /// The `-c` options that pin this remote operation to addresses the
    /// egress policy allows; refused when the host (or the proxy) resolves
    /// to none.
    pub async fn build_pinned_options(&self) -> Result<Vec<String>, GitError> {
        if self.transport == Transport::File {
            return Ok(Vec::new());
        }
        let Some(remote) = parse_remote_host(&self.url, self.transport) else {
            return Ok(Vec::new());
        };
        let mut options = Vec::new();
        // A target reached through the proxy is the proxy's to resolve.
        let proxied = self.proxy.as_ref().is_some_and(|proxy| {
            self.url
                .parse::<http::Uri>()
                .is_ok_and(|uri| proxy.matcher().intercept(&uri).is_some())
        });
        if let Some(proxy) = &self.proxy
            && let Some(host) = parse_remote_host(&proxy.address, Transport::Http)
        {
            let addrs = self.resolve(&host).await?;
            if host.is_name() {
                options.push(curl_resolve(&host, &addrs));
            }
        }
        if proxied {
            return Ok(options);
        }
        let addrs = self.resolve(&remote).await?;
        if !remote.is_name() {
            return Ok(options);
        }
        let first = addrs[0].ip();
        match self.transport {
            Transport::Https | Transport::Http => options.push(curl_resolve(&remote, &addrs)),
            Transport::Ssh => {
                let alias = if remote.port == 22 {
                    remote.host.clone()
                } else {
                    format!("[{}]:{}", remote.host, remote.port)
                };
                options.push(format!(
                    "core.sshCommand={} -o HostName={first} -o HostKeyAlias={alias}",
                    self.ssh_command()
                ));
            }
            Transport::Git => {
                let pinned = match first {
                    std::net::IpAddr::V4(ip) => format!("git://{ip}:{}/", remote.port),
                    std::net::IpAddr::V6(ip) => format!("git://[{ip}]:{}/", remote.port),
                };
                options.push(format!("url.{pinned}.insteadOf={}", remote.prefix));
            }
            Transport::File => {}
        }
        Ok(options)
    }

    async fn resolve(&self, remote: &RemoteHost) -> Result<Vec<std::net::SocketAddr>, GitError> {
        match self.egress.resolve(&remote.host, remote.port).await {
            Ok(addrs) => Ok(addrs),
            Err(EgressError::Denied(source)) => Err(GitError::EgressDenied {
                url: self.display_url.clone(),
                source: Box::new(source),
            }),
            Err(error @ EgressError::Resolve { .. }) => Err(GitError::Unreachable {
                url: self.display_url.clone(),
                detail: error.to_string(),
            }),
        }
    }

    /// The ssh command of the sealed environment (`ssh` when it sets none).
    fn ssh_command(&self) -> String {
        let key = self.env.iter().find(|(_, v)| v == "core.sshCommand");
        let value = key.and_then(|(k, _)| {
            let name = k
                .to_string_lossy()
                .replace("GIT_CONFIG_KEY_", "GIT_CONFIG_VALUE_");
            self.env.iter().find(|(k, _)| *k == *name)
        });
        value.map_or_else(|| "ssh".into(), |(_, v)| v.to_string_lossy().into_owned())
    }

    /// A git command against the cache repository.
    pub fn command(&self) -> Command {
        let mut cmd = Command::new("git");
        cmd.env_clear();
        if let Some(path) = std::env::var_os("PATH") {
            cmd.env("PATH", path);
        }
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)));
        cmd.arg("--git-dir").arg(&self.git_dir);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            // Its own process group, so a timeout kills git's helpers
            // (git-remote-https, ssh, index-pack) with it.
            .process_group(0);
        cmd
    }

    /// Runs `args`, optionally feeding `stdin`, within the timeout. A
    /// failure of a remote operation is classified from stderr.
    pub async fn run(
        &self,
        operation: &'static str,
        args: &[&str],
        stdin: Option<&[u8]>,
    ) -> Result<Output, GitError> {
        self.run_bounded(operation, args, stdin, None).await
    }

    /// [`Self::run`] of a listing from the remote (`ls-remote`): its output
    /// is read up to `max_stdout` bytes, and a larger one kills the command
    /// and fails with [`GitError::TooManyBranches`], so a server advertising
    /// millions of refs costs the operator no more than the limit.
    pub async fn run_listing(
        &self,
        operation: &'static str,
        args: &[&str],
        max_stdout: usize,
    ) -> Result<Output, GitError> {
        self.run_inner(operation, args, None, None, Some(max_stdout))
            .await
    }

    /// [`Self::run`], and with `size_limit` the command is killed as soon as
    /// the directory grows past the limit (a fetch larger than the cache).
    pub async fn run_bounded(
        &self,
        operation: &'static str,
        args: &[&str],
        stdin: Option<&[u8]>,
        size_limit: Option<(&Path, u64)>,
    ) -> Result<Output, GitError> {
        self.run_inner(operation, args, stdin, size_limit, None)
            .await
    }

    #[tracing::instrument(level = "debug", name = "git", skip_all, fields(operation = operation))]
    async fn run_inner(
        &self,
        operation: &'static str,
        args: &[&str],
        stdin: Option<&[u8]>,
        size_limit: Option<(&Path, u64)>,
        max_stdout: Option<usize>,
    ) -> Result<Output, GitError> {
        let mut cmd = self.command();
        // Remote operations name the URL; local ones need no pinning.
        if args.contains(&self.url.as_str()) {
            for option in self.build_pinned_options().await? {
                cmd.arg("-c").arg(option);
            }
            if let Some(script) = &self.connector {
                cmd.arg("-c")
                    .arg(format!("core.gitProxy={}", script.display()));
            }
        }
        cmd.args(args);
        if stdin.is_some() {
            cmd.stdin(Stdio::piped());
        }
        let io_err = |source| GitError::Io {
            url: self.display_url.clone(),
            operation,
            source,
        };
        let mut child = cmd.spawn().map_err(io_err)?;
        let _running = self.command_running();
        if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
            pipe.write_all(input).await.map_err(io_err)?;
            drop(pipe);
        }
        let group = child.id();
        let watch = async {
            match size_limit {
                Some((dir, limit)) => watch_size(dir, limit).await,
                None => std::future::pending().await,
            }
        };
        let output = tokio::select! {
            result = tokio::time::timeout(self.timeout, collect(&mut child, max_stdout)) => match result {
                Ok(Ok(Collected::Overflow)) => {
                    kill_group(group);
                    return Err(GitError::TooManyBranches {
                        url: self.display_url.clone(),
                        limit: max_stdout.unwrap_or_default(),
                    });
                }
                Ok(Ok(Collected::Done(output))) => output,
                Ok(Err(error)) => return Err(io_err(error)),
                Err(_) => {
                    kill_group(group);
                    return Err(GitError::Timeout {
                        url: self.display_url.clone(),
                        operation,
                        seconds: self.timeout.as_secs(),
                    });
                }
            },
            bytes = watch => {
                kill_group(group);
                return Err(GitError::CacheLimitExceeded {
                    url: self.display_url.clone(),
                    bytes,
                    limit: size_limit.map(|(_, l)| l).unwrap_or_default(),
                });
            }
        };
        if output.status.success() {
            return Ok(Output {
                stdout: output.stdout,
            });
        }
        let stderr = String::from_utf8_lossy(&output.stderr).replace(&self.url, &self.display_url);
        Err(build_error_from_stderr(
            &self.display_url,
            operation,
            output.status.to_string(),
            &stderr,
        ))
    }
}

/// The host a remote URL connects to, and the URL's prefix up to the path.
#[derive(Debug, PartialEq, Eq)]
struct RemoteHost {
    host: String,
    port: u16,
    /// `scheme://[user@]host[:port]/` as written (for `insteadOf`).
    prefix: String,
}

impl RemoteHost {
    /// A name (resolved, so pinned), not an IP literal.
    fn is_name(&self) -> bool {
        self.host.parse::<std::net::IpAddr>().is_err()
    }
}

/// The host and port of `url` (`scheme://[userinfo@]host[:port]/...` or
/// scp-like `[user@]host:path`), IPv6 without brackets.
fn parse_remote_host(url: &str, transport: Transport) -> Option<RemoteHost> {
    let default_port = match transport {
        Transport::Https => 443,
        Transport::Http => 80,
        Transport::Ssh => 22,
        Transport::Git => 9418,
        Transport::File => return None,
    };
    let (authority, prefix) = match url.split_once("://") {
        Some((scheme, rest)) => {
            let end = rest.find('/').unwrap_or(rest.len());
            (&rest[..end], format!("{scheme}://{}/", &rest[..end]))
        }
        None => {
            // scp-like: the host ends at the first ':' outside brackets.
            let end = if url.contains('[') {
                url.find("]:").map(|i| i + 1)?
            } else {
                url.find(':')?
            };
            (&url[..end], String::new())
        }
    };
    let hostport = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let scp = prefix.is_empty();
    let (host, port) = if let Some(rest) = hostport.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        (host, after.strip_prefix(':'))
    } else if scp {
        (hostport, None)
    } else {
        match hostport.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (hostport, None),
        }
    };
    let port = match port {
        None | Some("") => default_port,
        Some(port) => port.parse().ok()?,
    };
    (!host.is_empty()).then(|| RemoteHost {
        host: host.to_string(),
        port,
        prefix,
    })
}

/// `http.curloptResolve=host:port:addr[,addr]`: curl dials these for the
/// name instead of looking it up again.
fn curl_resolve(remote: &RemoteHost, addrs: &[std::net::SocketAddr]) -> String {
    let list: Vec<String> = addrs
        .iter()
        .map(|a| match a.ip() {
            std::net::IpAddr::V4(ip) => ip.to_string(),
            std::net::IpAddr::V6(ip) => format!("[{ip}]"),
        })
        .collect();
    format!(
        "http.curloptResolve={}:{}:{}",
        remote.host,
        remote.port,
        list.join(",")
    )
}

/// Resolves with the size once `dir` holds more than `limit` bytes.
async fn watch_size(dir: &Path, limit: u64) -> u64 {
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    loop {
        tick.tick().await;
        let dir = dir.to_path_buf();
        let bytes = tokio::task::spawn_blocking(move || super::cache::dir_size(&dir))
            .await
            .unwrap_or(0);
        if bytes > limit {
            return bytes;
        }
    }
}

/// SIGKILL to the process group `leader` started (see [`GitRunner::command`]).
#[allow(unsafe_code)] // the one FFI call of the operator; see SAFETY below
fn kill_group(leader: Option<u32>) {
    if let Some(pid) = leader.and_then(|p| i32::try_from(p).ok()) {
        // SAFETY: killpg only sends a signal; the group is the one this
        // runner created for the child, which has not been reaped yet.
        unsafe {
            libc::killpg(pid, libc::SIGKILL);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::Credentials;
    use crate::source::git::remote::Transport;

    #[test]
    fn ssh_keys_are_written_owner_only_and_host_keys_are_checked_strictly() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let credentials = Credentials::SshKey {
            private_key: "-----BEGIN OPENSSH PRIVATE KEY-----".into(),
            known_hosts: "host ssh-ed25519 AAAA".into(),
        };
        let runner = GitRunner::new(
            "git@host:o/r.git",
            Transport::Ssh,
            dir.path().join("repo.git"),
            dir.path(),
            &credentials,
            None,
            Duration::from_secs(1),
        )
        .unwrap();
        let mode = std::fs::metadata(dir.path().join("identity"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let ssh = runner
            .env
            .iter()
            .find(|(_, v)| v.to_string_lossy().starts_with("ssh "))
            .unwrap();
        let ssh = ssh.1.to_string_lossy();
        assert!(
            ssh.contains("StrictHostKeyChecking=yes") && ssh.contains("BatchMode=yes"),
            "{ssh}"
        );
        assert!(!format!("{runner:?}").contains("PRIVATE KEY"));
    }

    #[test]
    fn remote_hosts_and_ports_are_read_from_every_url_form() {
        let parse = |url, t| {
            parse_remote_host(url, t)
                .map(|r| (r.host, r.port, r.prefix))
                .unwrap()
        };
        assert_eq!(
            parse("https://u:p@git.example:8443/r.git", Transport::Https),
            (
                "git.example".into(),
                8443,
                "https://u:p@git.example:8443/".into()
            )
        );
        assert_eq!(
            parse("git@github.com:o/r.git", Transport::Ssh),
            ("github.com".into(), 22, String::new())
        );
        assert_eq!(parse("ssh://git@[::1]:2222/r.git", Transport::Ssh).0, "::1");
        assert_eq!(
            parse("git://localhost/r.git", Transport::Git),
            ("localhost".into(), 9418, "git://localhost/".into())
        );
    }

    #[tokio::test]
    async fn a_remote_resolving_to_loopback_is_refused_before_git_runs_and_pinned_when_allowed() {
        let dir = tempfile::tempdir().unwrap();
        let runner = |url: &str, transport, egress| {
            GitRunner::new(
                url,
                transport,
                dir.path().join("repo.git"),
                dir.path(),
                &Credentials::Anonymous,
                None,
                Duration::from_secs(1),
            )
            .unwrap()
            .with_egress(egress)
        };
        let denied = runner(
            "https://localhost:1/r.git",
            Transport::Https,
            EgressPolicy::default(),
        )
        .build_pinned_options()
        .await
        .unwrap_err();
        assert_eq!(denied.reason(), "EgressDenied", "{denied}");
        assert!(
            denied.to_string().contains("--egress-allow-cidr"),
            "{denied}"
        );
        let pinned = runner(
            "https://localhost:1/r.git",
            Transport::Https,
            EgressPolicy::allow_loopback(),
        )
        .build_pinned_options()
        .await
        .unwrap();
        assert!(
            pinned[0].starts_with("http.curloptResolve=localhost:1:"),
            "{pinned:?}"
        );
        let git = runner(
            "git://localhost:9/r.git",
            Transport::Git,
            EgressPolicy::allow_loopback(),
        )
        .build_pinned_options()
        .await
        .unwrap();
        assert!(git[0].ends_with(".insteadOf=git://localhost:9/"), "{git:?}");
    }

    #[test]
    fn tokens_travel_in_the_environment_not_in_arguments_or_files() {
        let dir = tempfile::tempdir().unwrap();
        let runner = GitRunner::new(
            "https://host/r.git",
            Transport::Https,
            dir.path().join("repo.git"),
            dir.path(),
            &Credentials::Token("ghp_secret".into()),
            None,
            Duration::from_secs(1),
        )
        .unwrap();
        let script = std::fs::read_to_string(dir.path().join("askpass.sh")).unwrap();
        assert!(!script.contains("ghp_secret"));
        let cmd = format!(
            "{:?}",
            runner.command().as_std().get_args().collect::<Vec<_>>()
        );
        assert!(!cmd.contains("ghp_secret"), "{cmd}");
    }
}
