//! Building a source from command-line flags (`--github owner/repo` or
//! `--git URL`, a token from the variable `--token-env` names), and the cache
//! directory git sources need. Building makes no request.

use std::{path::PathBuf, sync::Arc};

use crate::{
    cli::RepositoryArgs,
    source::{
        Credentials, Source,
        git::{GitConfig, GitRemote},
        github::{GitHubConfig, GitHubRepo},
    },
    store::ProjectSource,
};

use super::{CommandError, read_env};

/// A directory for git caches: the one given, or a temporary one removed
/// when this value is dropped.
pub struct CacheDir {
    path: PathBuf,
    _temporary: Option<TempDir>,
}

impl CacheDir {
    pub fn new(given: Option<&PathBuf>) -> Result<Self, CommandError> {
        match given {
            Some(path) => Ok(CacheDir {
                path: path.clone(),
                _temporary: None,
            }),
            None => {
                let temporary = TempDir::create()?;
                Ok(CacheDir {
                    path: temporary.0.clone(),
                    _temporary: Some(temporary),
                })
            }
        }
    }

    pub fn path(&self) -> &std::path::Path {
        &self.path
    }
}

/// A directory under the system temporary directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn create() -> Result<Self, CommandError> {
        let path =
            std::env::temp_dir().join(format!("projectsync-cli-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&path).map_err(|source| CommandError::Io {
            action: format!("create the cache directory {}", path.display()),
            source,
        })?;
        Ok(TempDir(path))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The source the flags name, and its store identity.
pub fn build_source(
    args: &RepositoryArgs,
    cache: &CacheDir,
) -> Result<(Arc<dyn Source>, ProjectSource), CommandError> {
    let credentials = match &args.token_env {
        Some(var) => Credentials::Token(read_env(var, "--token-env")?),
        None => Credentials::Anonymous,
    };
    match (&args.github, &args.git) {
        (Some(github), None) => {
            let (owner, repo) = github
                .split_once('/')
                .filter(|(o, r)| !o.is_empty() && !r.is_empty() && !r.contains('/'))
                .ok_or_else(|| {
                    CommandError::Usage(format!("--github {github:?} is not owner/repo"))
                })?;
            let mut config = GitHubConfig::new(owner, repo);
            // The user's own command, from the user's own network position.
            config.egress = crate::egress::EgressPolicy::unrestricted();
            if let Some(api_url) = &args.api_url {
                config.api_url = api_url.clone();
            }
            config.credentials = credentials;
            let source = GitHubRepo::new(config).map_err(|e| CommandError::Source(e.into()))?;
            Ok((
                Arc::new(source),
                ProjectSource::GitHub {
                    owner: owner.into(),
                    repo: repo.into(),
                },
            ))
        }
        (None, Some(url)) => {
            let mut config = GitConfig::new(url, cache.path().join("git"));
            config.credentials = credentials;
            config.allow_file_urls = true;
            config.egress = crate::egress::EgressPolicy::unrestricted();
            let source = GitRemote::new(config).map_err(|e| CommandError::Source(e.into()))?;
            Ok((Arc::new(source), ProjectSource::Git { url: url.clone() }))
        }
        _ => Err(CommandError::Usage(
            "name the repository with --github OWNER/REPO or --git URL".into(),
        )),
    }
}
