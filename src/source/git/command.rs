//! Running the git CLI safely (I/O), and classifying remote URLs (pure).
//!
//! Every git process gets a sealed environment: no system or global config,
//! no credential helpers, no terminal prompts, no hooks, and an explicit
//! allow-list of transports. Credentials travel in environment variables
//! read by an askpass script or by ssh's own options, never on the command
//! line, so they do not show in process lists or in git's messages.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::process::Command;

use super::error::{GitError, build_error_from_stderr};
use crate::source::{Credentials, proxy::ProxySettings};

/// The transport a remote URL uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    Https,
    Http,
    Ssh,
    Git,
    File,
}

/// Classifies a remote URL, refusing remote helpers (`ext::`, `fd::`),
/// option-like URLs and, unless allowed, local paths and `file://`.
pub fn classify_url(url: &str, allow_file_urls: bool) -> Result<Transport, GitError> {
    let unsupported = |detail| {
        Err(GitError::UnsupportedUrl {
            url: redact_url(url),
            detail,
        })
    };
    if url.is_empty() || url.starts_with('-') || url.chars().any(|c| c.is_control()) {
        return unsupported("empty, starts with '-' or contains control characters");
    }
    let transport = if let Some((scheme, _)) = url.split_once("://") {
        match scheme.to_ascii_lowercase().as_str() {
            "https" => Transport::Https,
            "http" => Transport::Http,
            "ssh" | "git+ssh" | "ssh+git" => Transport::Ssh,
            "git" => Transport::Git,
            "file" => Transport::File,
            _ => return unsupported("unknown scheme (use https, http, ssh, git or file)"),
        }
    } else if url.contains("::") {
        return unsupported("remote helpers (transport::address) are not allowed");
    } else if url.starts_with('/') || url.starts_with('.') || url.starts_with('~') {
        Transport::File
    } else if let Some(colon) = url.find(':') {
        // scp-like `user@host:path`; git treats it as a path when a slash
        // comes before the colon.
        if url[..colon].contains('/') {
            Transport::File
        } else {
            Transport::Ssh
        }
    } else {
        Transport::File
    };
    if transport == Transport::File && !allow_file_urls {
        return Err(GitError::FileUrlNotAllowed {
            url: url.to_string(),
        });
    }
    Ok(transport)
}

/// The URL with any `user:password@` removed, for logs and errors.
pub fn redact_url(url: &str) -> String {
    if let Some((scheme, rest)) = url.split_once("://") {
        let host_end = rest.find('/').unwrap_or(rest.len());
        if let Some(at) = rest[..host_end].rfind('@') {
            return format!("{scheme}://***@{}", &rest[at + 1..]);
        }
    }
    url.to_string()
}

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
        let cache_err = |source| GitError::CacheDirectory {
            path: state_dir.display().to_string(),
            source,
        };
        std::fs::create_dir_all(state_dir).map_err(cache_err)?;
        let mut config: Vec<(&str, String)> = vec![
            ("protocol.allow", "never".into()),
            ("protocol.https.allow", "always".into()),
            ("protocol.http.allow", "always".into()),
            ("protocol.ssh.allow", "always".into()),
            ("protocol.git.allow", "always".into()),
            (
                "protocol.file.allow",
                if transport == Transport::File {
                    "always"
                } else {
                    "never"
                }
                .into(),
            ),
            ("protocol.version", "2".into()),
            ("core.hooksPath", "/dev/null".into()),
            ("core.fsmonitor", "false".into()),
            ("credential.helper", String::new()),
            ("gc.auto", "0".into()),
            ("maintenance.auto", "false".into()),
            ("fetch.recurseSubmodules", "false".into()),
            ("http.followRedirects", "initial".into()),
        ];
        let mut env: Vec<(OsString, OsString)> = vec![
            ("GIT_CONFIG_NOSYSTEM".into(), "1".into()),
            ("GIT_CONFIG_GLOBAL".into(), "/dev/null".into()),
            ("GIT_TERMINAL_PROMPT".into(), "0".into()),
            ("GIT_PROTOCOL_FROM_USER".into(), "0".into()),
            ("GIT_NO_REPLACE_OBJECTS".into(), "1".into()),
            ("HOME".into(), state_dir.as_os_str().to_owned()),
            ("XDG_CONFIG_HOME".into(), state_dir.as_os_str().to_owned()),
            ("LC_ALL".into(), "C".into()),
            ("SSH_ASKPASS".into(), "/bin/false".into()),
        ];
        match credentials {
            Credentials::Anonymous => env.push(("GIT_ASKPASS".into(), "/bin/false".into())),
            Credentials::Token(token) => {
                let script = write_askpass(state_dir).map_err(cache_err)?;
                env.push(("GIT_ASKPASS".into(), script.into()));
                env.push(("PROJECTSYNC_GIT_USERNAME".into(), "x-access-token".into()));
                env.push(("PROJECTSYNC_GIT_PASSWORD".into(), token.into()));
            }
            Credentials::Basic { username, password } => {
                let script = write_askpass(state_dir).map_err(cache_err)?;
                env.push(("GIT_ASKPASS".into(), script.into()));
                env.push(("PROJECTSYNC_GIT_USERNAME".into(), username.into()));
                env.push(("PROJECTSYNC_GIT_PASSWORD".into(), password.into()));
            }
            Credentials::SshKey {
                private_key,
                known_hosts,
            } => {
                let key = state_dir.join("identity");
                let hosts = state_dir.join("known_hosts");
                write_private(&key, private_key.as_bytes()).map_err(cache_err)?;
                write_private(&hosts, known_hosts.as_bytes()).map_err(cache_err)?;
                config.push((
                    "core.sshCommand",
                    format!(
                        "ssh -F /dev/null -i '{}' -o IdentitiesOnly=yes -o UserKnownHostsFile='{}' \
                         -o StrictHostKeyChecking=yes -o BatchMode=yes",
                        key.display(),
                        hosts.display()
                    ),
                ));
                env.push(("GIT_ASKPASS".into(), "/bin/false".into()));
            }
            Credentials::GithubApp(_) => {
                return Err(GitError::AuthenticationFailed {
                    url: redact_url(url),
                    detail: "GitHub App credentials work with source.github only".into(),
                });
            }
        }
        // http(s) remotes only: curl tunnels https with CONNECT and sends
        // plain http in absolute form. ssh and git:// never use it.
        if let Some(proxy) = proxy
            && matches!(transport, Transport::Https | Transport::Http)
        {
            config.push(("http.proxy", proxy.url_with_credentials()));
            config.push(("http.proxyAuthMethod", "basic".into()));
            env.push(("no_proxy".into(), proxy.no_proxy.clone().into()));
            env.push(("NO_PROXY".into(), proxy.no_proxy.clone().into()));
        }
        env.push(("GIT_CONFIG_COUNT".into(), config.len().to_string().into()));
        for (i, (key, value)) in config.into_iter().enumerate() {
            env.push((format!("GIT_CONFIG_KEY_{i}").into(), key.into()));
            env.push((format!("GIT_CONFIG_VALUE_{i}").into(), value.into()));
        }
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
fn kill_group(leader: Option<u32>) {
    if let Some(pid) = leader.and_then(|p| i32::try_from(p).ok()) {
        // SAFETY: killpg only sends a signal; the group is the one this
        // runner created for the child, which has not been reaped yet.
        unsafe {
            libc::killpg(pid, libc::SIGKILL);
        }
    }
}

/// The askpass script: answers git's username and password prompts from
/// the environment, so secrets never reach argv or the script file.
fn write_askpass(dir: &Path) -> std::io::Result<PathBuf> {
    let path = dir.join("askpass.sh");
    let script = "#!/bin/sh\ncase \"$1\" in\n  Username*) printf '%s\\n' \"$PROJECTSYNC_GIT_USERNAME\" ;;\n  *) printf '%s\\n' \"$PROJECTSYNC_GIT_PASSWORD\" ;;\nesac\n";
    write_file(&path, script.as_bytes(), 0o700)?;
    Ok(path)
}

fn write_private(path: &Path, content: &[u8]) -> std::io::Result<()> {
    let mut content = content.to_vec();
    if !content.ends_with(b"\n") {
        content.push(b'\n');
    }
    write_file(path, &content, 0o600)
}

fn write_file(path: &Path, content: &[u8], mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)?;
    std::io::Write::write_all(&mut file, content)?;
    file.set_permissions(std::fs::Permissions::from_mode(mode))?;
    std::fs::rename(tmp, path)
}

/// Git's branch name rules (`git check-ref-format --branch`), checked
/// before a name reaches a command line.
pub fn is_valid_branch_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with(['-', '/', '.'])
        && !name.ends_with(['/', '.'])
        && !name.ends_with(".lock")
        && !name.contains("..")
        && !name.contains("@{")
        && !name.contains("//")
        && !name.contains("/.")
        && name != "@"
        && !name
            .chars()
            .any(|c| c.is_control() || matches!(c, ' ' | '~' | '^' | ':' | '?' | '*' | '[' | '\\'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remote_urls_are_classified_by_transport() {
        assert_eq!(
            classify_url("https://github.com/o/r.git", false).unwrap(),
            Transport::Https
        );
        assert_eq!(
            classify_url("git@github.com:o/r.git", false).unwrap(),
            Transport::Ssh
        );
        assert_eq!(
            classify_url("ssh://git@host:22/r.git", false).unwrap(),
            Transport::Ssh
        );
        assert_eq!(
            classify_url("git://127.0.0.1:9418/r.git", false).unwrap(),
            Transport::Git
        );
        assert_eq!(
            classify_url("file:///srv/r.git", true).unwrap(),
            Transport::File
        );
        assert_eq!(classify_url("/srv/r.git", true).unwrap(), Transport::File);
    }

    #[test]
    fn local_paths_and_file_urls_are_refused_without_the_flag() {
        for url in ["file:///etc", "/etc", "./r", "../r", "dir/sub:x", "r.git"] {
            let err = classify_url(url, false).unwrap_err();
            assert_eq!(err.reason(), "FileUrlNotAllowed", "{url}");
        }
    }

    #[test]
    fn remote_helpers_options_and_unknown_schemes_are_refused() {
        for url in [
            "ext::sh -c touch% /tmp/pwned",
            "fd::3",
            "-uhttps://x",
            "ftp://x/r.git",
            "",
            "https://x/\nr",
        ] {
            assert_eq!(
                classify_url(url, true).unwrap_err().reason(),
                "UnsupportedUrl",
                "{url:?}"
            );
        }
    }

    #[test]
    fn userinfo_is_redacted_from_urls() {
        assert_eq!(
            redact_url("https://bot:s3cret@host/r.git"),
            "https://***@host/r.git"
        );
        assert_eq!(redact_url("https://host/r.git"), "https://host/r.git");
    }

    #[test]
    fn branch_names_follow_gits_rules() {
        for ok in [
            "main",
            "feature/x",
            "release-1.2",
            "feature/#123-fragment-url",
            "ünï",
        ] {
            assert!(is_valid_branch_name(ok), "{ok}");
        }
        for bad in [
            "",
            "-x",
            "--upload-pack=sh",
            "a..b",
            "a b",
            "a:b",
            "x.lock",
            "a/",
            "/a",
            "a//b",
            "a/.b",
            "@",
            "a@{1}",
            "a\nb",
        ] {
            assert!(!is_valid_branch_name(bad), "{bad:?}");
        }
    }

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
