//! Running the git CLI (I/O): one process per operation in the sealed
//! environment of [`super::environment`], within a time limit, killed with
//! its helpers on timeout or when a fetch outgrows the cache, and its
//! failure classified from stderr.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::process::Command;

use super::environment::build_environment;
use super::error::{GitError, build_error_from_stderr};
use super::remote::{Transport, redact_url};
use crate::source::{Credentials, proxy::ProxySettings};

/// Runs git for one repository with the sealed environment.
pub(crate) struct GitRunner {
    pub url: String,
    pub display_url: String,
    pub git_dir: PathBuf,
    pub timeout: Duration,
    env: Vec<(OsString, OsString)>,
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
        })
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

    /// [`Self::run`], and with `size_limit` the command is killed as soon as
    /// the directory grows past the limit (a fetch larger than the cache).
    pub async fn run_bounded(
        &self,
        operation: &'static str,
        args: &[&str],
        stdin: Option<&[u8]>,
        size_limit: Option<(&Path, u64)>,
    ) -> Result<Output, GitError> {
        let mut cmd = self.command();
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
            result = tokio::time::timeout(self.timeout, child.wait_with_output()) => match result {
                Ok(result) => result.map_err(io_err)?,
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
