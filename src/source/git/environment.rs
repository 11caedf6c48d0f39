//! The sealed environment every git process runs in (writes files, no
//! process): no system or global config, no credential helpers, no terminal
//! prompts, no hooks, an explicit allow-list of transports, and credentials
//! in environment variables read by an askpass script or by ssh's own
//! options, never on the command line, so they do not show in process lists
//! or in git's messages.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use super::error::GitError;
use super::remote::{Transport, redact_url};
use crate::source::{Credentials, proxy::ProxySettings};

/// The environment variables for git against `url`; writes the askpass
/// script and SSH files into `state_dir` (owner-only permissions), which
/// also serves as git's `HOME`.
pub(super) fn build_environment(
    url: &str,
    transport: Transport,
    state_dir: &Path,
    credentials: &Credentials,
    proxy: Option<&ProxySettings>,
) -> Result<Vec<(OsString, OsString)>, GitError> {
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
        // A redirect would be resolved by curl itself, past the egress
        // check and the pinned addresses (see `command`): none are followed.
        ("http.followRedirects", "false".into()),
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
        Credentials::GitHubApp(_) => {
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
    Ok(env)
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

pub(super) fn write_file(path: &Path, content: &[u8], mode: u32) -> std::io::Result<()> {
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
