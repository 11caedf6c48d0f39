//! The dereference step: reads the Secrets a ProjectSync references (same
//! namespace only) and builds what a run talks to: the source, with its
//! credentials, and the embedding provider, with its key. I/O against the
//! API server; building the clients makes no request.

use std::{collections::BTreeMap, path::Path, sync::Arc, time::Duration};

use k8s_openapi::api::core::v1::Secret;
use kube::{Api, Client, ResourceExt};

use crate::{
    api::{ProjectSync, SourceSpec},
    embed::{Embedder, build_embedder},
    source::{
        Credentials, CredentialsError, Source, TreeLimit, build_credentials_from_secret,
        build_github_credentials_from_secret,
        git::{GitConfig, GitHelpers, GitRemote, cache::GitCache},
        github::{GitHubConfig, GitHubRepo},
        proxy::{ProxySettings, build_proxy_from_secret},
    },
    store::{ProjectIdentity, ProjectSource},
};

use super::{embedding::build_embedder_config, error::Error, validate::validate_timeout};

/// The operator-wide settings that shape sources.
#[derive(Debug, Clone)]
pub struct SourceSettings {
    /// Where git sources keep their caches (one directory per resource).
    pub cache_dir: std::path::PathBuf,
    /// Whether `file://` git URLs are allowed.
    pub allow_file_urls: bool,
    /// The size-bounded registry of those caches (the operator); `None`
    /// leaves them unbounded (one-off CLI commands).
    pub git_cache: Option<Arc<GitCache>>,
    /// The `cat-file` helper processes every git source shares.
    pub git_helpers: GitHelpers,
    /// The operator's ceiling on `spec.maxTreeEntries`.
    pub max_tree_entries: usize,
    /// Content bytes runs may hold in flight (the operator's and each run's).
    pub fetch_budget: crate::pipeline::FetchBudget,
    /// Where sources, proxies and embedding endpoints may connect.
    pub egress: crate::egress::EgressPolicy,
}

/// What a run of one resource talks to.
pub struct Resolved {
    pub source: Arc<dyn Source>,
    pub embedder: Arc<dyn Embedder>,
    /// Changes whenever the source or its credentials change, so a cached
    /// source (and its remembered branch head) is rebuilt.
    pub fingerprint: String,
}

/// The store identity of a resource: `namespace/name` plus where it reads from.
pub fn build_identity(obj: &ProjectSync) -> ProjectIdentity {
    ProjectIdentity {
        key: project_key(obj),
        source: match &obj.spec.source {
            SourceSpec {
                github: Some(github),
                ..
            } => ProjectSource::GitHub {
                owner: github.owner.clone(),
                repo: github.repo.clone(),
            },
            SourceSpec { git: Some(git), .. } => ProjectSource::Git {
                url: crate::source::git::redact_url(&git.url),
            },
            // The CRD's CEL rule guarantees exactly one source.
            SourceSpec {
                github: None,
                git: None,
            } => ProjectSource::Git { url: String::new() },
        },
        branch: obj.spec.branch.clone(),
    }
}

/// `namespace/name`: the project key in the store and the progress hub.
pub fn project_key(obj: &ProjectSync) -> String {
    format!("{}/{}", obj.namespace().unwrap_or_default(), obj.name_any())
}

/// What `kubectl get` shows as the repository.
pub fn describe_repository(spec: &SourceSpec) -> String {
    match spec {
        SourceSpec {
            github: Some(github),
            ..
        } => format!("{}/{}", github.owner, github.repo),
        // Never credentials in status, even of an object stored before the
        // CRD refused them.
        SourceSpec { git: Some(git), .. } => crate::source::git::redact_url(&git.url),
        SourceSpec { .. } => String::new(),
    }
}

/// What the referenced Secrets hold for a resource, read once per reconcile.
pub struct Dereferenced {
    /// Changes whenever the source spec, the embedding spec or a referenced
    /// Secret changes.
    pub fingerprint: String,
    source_credentials: Credentials,
    api_key: Option<String>,
    /// From `spec.proxySecretRef`.
    proxy: Option<ProxySettings>,
}

/// How one Secret's data becomes credentials (GitHub sources also accept an App).
type BuildCredentials =
    fn(&BTreeMap<String, Vec<u8>>, Option<&str>) -> Result<Credentials, CredentialsError>;

/// Reads the Secrets `obj` references (same namespace only). Builds nothing.
pub async fn dereference(client: &Client, obj: &ProjectSync) -> Result<Dereferenced, Error> {
    let namespace = obj.namespace().unwrap_or_default();
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &namespace);
    let mut fingerprint = serde_json::to_string(&obj.spec.source).unwrap_or_default();
    fingerprint.push_str(&serde_json::to_string(&obj.spec.embedding).unwrap_or_default());
    let mut read =
        async |name: &str, key: Option<&str>, field: &'static str, build: BuildCredentials| {
            let (data, version) = fetch_secret(&secrets, &namespace, name, field).await?;
            fingerprint.push_str(&version);
            build(&data, key).map_err(|source| invalid_secret(&namespace, name, field, source))
        };

    let source_credentials = match &obj.spec.source {
        SourceSpec {
            github: Some(github),
            ..
        } => match &github.secret_ref {
            // A token under `key`, or a GitHub App when the Secret has githubApp* keys.
            Some(r) => {
                read(
                    &r.name,
                    Some(&r.key),
                    "spec.source.github.secretRef",
                    build_github_credentials_from_secret,
                )
                .await?
            }
            None => Credentials::Anonymous,
        },
        SourceSpec { git: Some(git), .. } => match &git.secret_ref {
            Some(r) => {
                read(
                    &r.name,
                    None,
                    "spec.source.git.secretRef",
                    build_credentials_from_secret,
                )
                .await?
            }
            None => Credentials::Anonymous,
        },
        SourceSpec {
            github: None,
            git: None,
        } => return Err(Error::Spec(super::validate::SpecError::NoSource)),
    };
    let api_key = match obj
        .spec
        .embedding
        .as_ref()
        .and_then(|e| e.secret_ref.as_ref())
    {
        Some(r) => match read(
            &r.name,
            Some(&r.key),
            "spec.embedding.secretRef",
            build_credentials_from_secret,
        )
        .await?
        {
            Credentials::Token(key) => Some(key),
            _ => None,
        },
        None => None,
    };
    let proxy = match &obj.spec.proxy_secret_ref {
        Some(r) => {
            let (data, version) =
                fetch_secret(&secrets, &namespace, &r.name, "spec.proxySecretRef").await?;
            fingerprint.push_str(&r.name);
            fingerprint.push_str(&version);
            Some(
                build_proxy_from_secret(&data).map_err(|source| Error::InvalidProxySecret {
                    namespace: namespace.clone(),
                    name: r.name.clone(),
                    source,
                })?,
            )
        }
        None => None,
    };
    // The timeout and the tree limit shape the built clients too.
    fingerprint.push_str(&obj.spec.timeout);
    fingerprint.push_str(&format!("/{:?}", obj.spec.max_tree_entries));
    Ok(Dereferenced {
        fingerprint,
        source_credentials,
        api_key,
        proxy,
    })
}

/// The embedding provider of `obj` alone, with the API key of
/// `spec.embedding.secretRef` (the only Secret read), connecting only where
/// `egress` allows: what the HTTP API embeds a search query with.
pub async fn resolve_embedder(
    client: &Client,
    obj: &ProjectSync,
    egress: &crate::egress::EgressPolicy,
) -> Result<Arc<dyn Embedder>, Error> {
    let namespace = obj.namespace().unwrap_or_default();
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &namespace);
    let field = "spec.embedding.secretRef";
    let api_key = match obj
        .spec
        .embedding
        .as_ref()
        .and_then(|e| e.secret_ref.as_ref())
    {
        Some(r) => {
            let (data, _) = fetch_secret(&secrets, &namespace, &r.name, field).await?;
            match build_credentials_from_secret(&data, Some(&r.key))
                .map_err(|source| invalid_secret(&namespace, &r.name, field, source))?
            {
                Credentials::Token(key) => Some(key),
                _ => None,
            }
        }
        None => None,
    };
    build_embedder_config(obj.spec.embedding.as_ref(), api_key)
        .map(|mut config| {
            if let crate::embed::EmbedderConfig::OpenAi(openai) = &mut config {
                openai.egress = egress.clone();
            }
            config
        })
        .and_then(build_embedder)
        .map_err(Error::Embedding)
}

/// Builds the source and the embedding provider from what the Secrets held,
/// with `timeout` (the validated `spec.timeout`) on every request. No
/// network I/O (a git source prepares its cache with a local `git init`).
pub fn build_clients(
    obj: &ProjectSync,
    timeout: Duration,
    inputs: Dereferenced,
    settings: &SourceSettings,
) -> Result<Resolved, Error> {
    let tree_limit = TreeLimit::new(
        obj.spec
            .max_tree_entries
            .map(|n| u64::try_from(n).unwrap_or(0).max(1)),
        settings.max_tree_entries,
    );
    let source: Arc<dyn Source> = match &obj.spec.source {
        SourceSpec {
            github: Some(github),
            ..
        } => {
            let mut config = GitHubConfig::new(&github.owner, &github.repo);
            if let Some(api_url) = &github.api_url {
                config.api_url = api_url.clone();
            }
            config.credentials = inputs.source_credentials;
            config.request_timeout = timeout;
            config.proxy = inputs.proxy;
            config.tree_limit = tree_limit;
            config.egress = settings.egress.clone();
            Arc::new(GitHubRepo::new(config).map_err(|e| Error::Source(e.into()))?)
        }
        SourceSpec { git: Some(git), .. } => {
            let mut config = GitConfig::new(&git.url, cache_dir_for(&settings.cache_dir, obj));
            config.allow_file_urls = settings.allow_file_urls;
            config.credentials = inputs.source_credentials;
            config.timeout = timeout;
            config.proxy = inputs.proxy;
            config.max_cache_bytes = settings.git_cache.as_ref().map(|c| c.max_bytes());
            config.tree_limit = tree_limit;
            config.egress = settings.egress.clone();
            config.helpers = settings.git_helpers.clone();
            Arc::new(GitRemote::new(config).map_err(|e| Error::Source(e.into()))?)
        }
        SourceSpec {
            github: None,
            git: None,
        } => return Err(Error::Spec(super::validate::SpecError::NoSource)),
    };
    let embedder = build_embedder_config(obj.spec.embedding.as_ref(), inputs.api_key)
        .map(|mut config| {
            if let crate::embed::EmbedderConfig::OpenAi(openai) = &mut config {
                openai.egress = settings.egress.clone();
            }
            config
        })
        .and_then(build_embedder)
        .map_err(Error::Embedding)?;
    Ok(Resolved {
        source,
        embedder,
        fingerprint: inputs.fingerprint,
    })
}

/// Reads the Secrets and builds the source and the embedding provider.
pub async fn resolve(
    client: &Client,
    obj: &ProjectSync,
    settings: &SourceSettings,
) -> Result<Resolved, Error> {
    let inputs = dereference(client, obj).await?;
    build_clients(obj, validate_timeout(&obj.spec)?, inputs, settings)
}

/// The names of the Secrets `obj` references (to map Secret events to it).
pub fn referenced_secrets(obj: &ProjectSync) -> Vec<&str> {
    let spec = &obj.spec;
    [
        spec.source
            .github
            .as_ref()
            .and_then(|g| g.secret_ref.as_ref())
            .map(|r| r.name.as_str()),
        spec.source
            .git
            .as_ref()
            .and_then(|g| g.secret_ref.as_ref())
            .map(|r| r.name.as_str()),
        spec.embedding
            .as_ref()
            .and_then(|e| e.secret_ref.as_ref())
            .map(|r| r.name.as_str()),
        spec.proxy_secret_ref.as_ref().map(|r| r.name.as_str()),
    ]
    .into_iter()
    .flatten()
    .collect()
}

async fn fetch_secret(
    secrets: &Api<Secret>,
    namespace: &str,
    name: &str,
    field: &'static str,
) -> Result<(BTreeMap<String, Vec<u8>>, String), Error> {
    let secret = secrets
        .get_opt(name)
        .await
        .map_err(|source| Error::Kube {
            action: "read a referenced Secret",
            source,
        })?
        .ok_or_else(|| Error::SecretNotFound {
            namespace: namespace.to_string(),
            name: name.to_string(),
            field,
        })?;
    let version = secret.resource_version().unwrap_or_default();
    let mut data: BTreeMap<String, Vec<u8>> = secret
        .data
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, v.0))
        .collect();
    // stringData is write-only in the API, but tolerate objects built by hand.
    for (key, value) in secret.string_data.unwrap_or_default() {
        data.entry(key).or_insert_with(|| value.into_bytes());
    }
    Ok((data, version))
}

fn invalid_secret(
    namespace: &str,
    name: &str,
    field: &'static str,
    source: crate::source::CredentialsError,
) -> Error {
    Error::InvalidSecret {
        namespace: namespace.to_string(),
        name: name.to_string(),
        field,
        source,
    }
}

fn cache_dir_for(root: &Path, obj: &ProjectSync) -> std::path::PathBuf {
    root.join(cache_name_for(obj))
}

/// The name of a resource's git cache directory under the cache root.
pub fn cache_name_for(obj: &ProjectSync) -> String {
    // The uid keeps a deleted-and-recreated resource from reusing a cache.
    obj.uid()
        .unwrap_or_else(|| project_key(obj).replace('/', "_"))
}
