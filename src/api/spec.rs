//! The desired state a user declares: which repository, which branch, how
//! often, what to keep. Pure types; the API server enforces the validation
//! written here (OpenAPI bounds and CEL rules), so a bad manifest is refused at
//! `kubectl apply` with a message that names the fix.

use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::status::ProjectSyncStatus;

/// A repository kept mirrored into Postgres, diff-aware: each run fetches and
/// processes only the files that changed since the last completed sync.
// kube's `printcolumn(...)` arguments repeat `type_ = ...` by design; clippy
// reads each column as a duplicate of the first.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "projectsync.dev",
    version = "v1alpha1",
    kind = "ProjectSync",
    plural = "projectsyncs",
    shortname = "psync",
    category = "projectsync",
    namespaced,
    status = "ProjectSyncStatus",
    printcolumn(
        name = "Repository",
        type_ = "string",
        json_path = ".status.repository",
        description = "owner/repo on GitHub, or the git URL"
    ),
    printcolumn(name = "Branch", type_ = "string", json_path = ".spec.branch"),
    printcolumn(
        name = "Commit",
        type_ = "string",
        json_path = ".status.lastSync.shortCommit",
        description = "commit of the last completed sync"
    ),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(
        name = "Files",
        type_ = "integer",
        json_path = ".status.lastSync.files.total",
        description = "files in the last completed sync"
    ),
    printcolumn(
        name = "Last Sync",
        type_ = "date",
        json_path = ".status.lastSync.finishedAt"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status",
        priority = 1
    ),
    printcolumn(
        name = "Reason",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].reason",
        priority = 1
    ),
    printcolumn(
        name = "Stage",
        type_ = "string",
        json_path = ".status.progress.stage",
        priority = 1,
        description = "pipeline stage of the run in progress"
    ),
    printcolumn(
        name = "Interval",
        type_ = "string",
        json_path = ".spec.interval",
        priority = 1
    ),
    printcolumn(
        name = "Suspended",
        type_ = "boolean",
        json_path = ".spec.suspend",
        priority = 1
    ),
    printcolumn(
        name = "Restore",
        type_ = "string",
        json_path = ".spec.restore.syncId",
        priority = 1,
        description = "the sync the resource is held at (spec.restore); the phase is Restored meanwhile"
    ),
    printcolumn(
        name = "Message",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].message",
        priority = 1
    )
)]
#[serde(rename_all = "camelCase")]
pub struct ProjectSyncSpec {
    /// Where the repository lives: exactly one of `github` or `git`.
    pub source: SourceSpec,

    /// Branch to follow, for example `main`. Must be a valid git branch name.
    #[schemars(length(min = 1, max = 255))]
    #[x_kube(validation = Rule::new(BRANCH_RULE).message(
        "branch must be a valid git branch name: no spaces, '..', '//', '@{', control characters or any of ~^:?*[\\, must not start with '-', '/' or '.', and must not end with '/', '.' or '.lock'"
    ))]
    pub branch: String,

    /// Pin the sync to this commit (a full 40- or 64-character hex SHA) instead of
    /// following the head of `branch`. The commit should be reachable from the branch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    #[x_kube(validation = Rule::new("self.matches('^([0-9a-f]{40}|[0-9a-f]{64})$')").message(
        "commit must be a full lowercase hex commit SHA (40 characters, or 64 for SHA-256 repositories)"
    ))]
    pub commit: Option<String>,

    /// How often to check the branch for a new commit, as a duration such as
    /// `30s`, `5m` or `1h30m`. At least 30s. An unchanged branch costs one
    /// conditional request per check.
    #[serde(default = "default_interval")]
    #[schemars(length(min = 2, max = 32))]
    #[x_kube(validation = Rule::new(
        "self.matches('^([0-9]+(\\\\.[0-9]+)?(ms|s|m|h))+$') && duration(self) >= duration('30s')"
    ).message("interval must be a duration of at least 30s, such as 30s, 5m or 1h30m"))]
    pub interval: String,

    /// Time limit of each request to the source (GitHub) or each git command
    /// (ls-remote, fetch, ...), as a duration such as `30s` or `2m`. From 1s
    /// to 1h; defaults to 60s. A source that answers no sooner fails the run
    /// with a timeout reason that names the request and the limit.
    #[serde(default = "default_timeout")]
    #[schemars(length(min = 2, max = 32))]
    #[x_kube(validation = Rule::new(
        "self.matches('^([0-9]+(\\\\.[0-9]+)?(ms|s|m|h))+$') && duration(self) >= duration('1s') && duration(self) <= duration('1h')"
    ).message("timeout must be a duration from 1s to 1h, such as 30s, 2m or 1h"))]
    pub timeout: String,

    /// Time limit of a whole run, from the first request to the source to
    /// the completing transaction, as a duration such as `10m` or `1h`.
    /// From 1s to 24h; defaults to 30m. The operator's `--max-run-duration`
    /// caps it. A run past it is cancelled and FAILED with reason
    /// `RunDeadlineExceeded`, naming the limit.
    #[serde(default = "default_run_timeout")]
    #[schemars(length(min = 2, max = 32))]
    #[x_kube(validation = Rule::new(
        "self.matches('^([0-9]+(\\\\.[0-9]+)?(ms|s|m|h))+$') && duration(self) >= duration('1s') && duration(self) <= duration('24h')"
    ).message("runTimeout must be a duration from 1s to 24h, such as 10m or 1h"))]
    pub run_timeout: String,

    /// A Secret in the same namespace naming an HTTP proxy for the source:
    /// `address` (`http://host:port`), optional `username` and `password`,
    /// optional `noProxy` (comma-separated hosts, domains, IPs and CIDRs
    /// that bypass it). https requests are tunnelled with CONNECT. ssh://
    /// and git:// remotes never use the proxy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy_secret_ref: Option<LocalSecretRef>,

    /// Stop syncing while true. The last completed sync stays current.
    #[serde(default)]
    pub suspend: bool,

    /// Hold the mirror at an earlier completed sync: while set, the
    /// operator makes that sync's files and memory current again (once, by
    /// recording a new run with its content) and then neither polls nor
    /// syncs, so new commits and the interval do not undo the restore.
    /// Remove the field to follow `branch` again. Committable to a GitOps
    /// repository; `status.phase` is `Restored` while it holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore: Option<RestoreSpec>,

    /// Only files whose path matches one of these globs are synced (all files
    /// when empty). Globs use `**` for any number of directories, e.g. `src/**/*.rs`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(length(min = 1, max = 1024)))]
    pub include: Vec<String>,

    /// Files whose path matches one of these globs are skipped, even when included.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(length(min = 1, max = 1024)))]
    pub exclude: Vec<String>,

    /// Files larger than this are recorded but not fetched or chunked: a number
    /// of bytes or a quantity such as `512Ki` or `2Mi`, at most 16Mi. Defaults
    /// to 1Mi.
    #[serde(default = "default_max_file_size")]
    #[x_kube(validation = Rule::new(
        "type(self) == int ? (self > 0 && self <= 16777216) : (isQuantity(self) && quantity(self).isGreaterThan(quantity('0')) && !quantity(self).isGreaterThan(quantity('16Mi')))"
    ).message("maxFileSize must be a positive number of bytes or a positive quantity such as 512Ki or 2Mi, at most 16Mi"))]
    pub max_file_size: IntOrString,

    /// The most entries (files, symlinks, submodules) the commit's tree may
    /// list, from 1 to 10,000,000; defaults to 200,000. A larger tree ends
    /// the run Stalled with reason `TreeTooLarge`, before it is read whole.
    /// The operator's `--max-tree-entries` caps it (default 500,000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 10_000_000))]
    pub max_tree_entries: Option<i64>,

    /// How chunks of code get embeddings. Without it, no embeddings are computed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub embedding: Option<EmbeddingSpec>,

    /// How many runs `status.history` keeps, newest first (1 to 100, default 10).
    #[serde(default = "default_history_limit")]
    #[schemars(range(min = 1, max = 100))]
    pub history_limit: i32,

    /// What happens to the rows in Postgres when this resource is deleted:
    /// `Retain` (default) keeps them, `Delete` removes the project's data.
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,

    /// Push notifications from the git host: with it, the operator accepts
    /// signed webhooks at `/hooks/github/{namespace}/{name}` and
    /// `/hooks/generic/{namespace}/{name}` and syncs at once on a push to
    /// `branch` (see docs/webhooks.md). Without it, those paths answer 404.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<WebhookSpec>,
}

/// The sync a resource is held at (`spec.restore`).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RestoreSpec {
    /// The id of a completed sync of this resource (`status.history[].id`,
    /// `projectsync history`), a UUID.
    #[schemars(length(min = 36, max = 36))]
    #[x_kube(validation = Rule::new(
        "self.matches('^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$')"
    ).message("restore.syncId must be the id of a sync run, a UUID such as 0190f3a2-7c1e-7b8a-9d2e-3f4a5b6c7d8e"))]
    pub sync_id: String,
}

/// The webhook receiver of one ProjectSync.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct WebhookSpec {
    /// The Secret key holding the shared secret that signs deliveries
    /// (HMAC-SHA256 in `X-Hub-Signature-256`, as GitHub sends it). The key
    /// defaults to `token`.
    pub secret_ref: SecretKeyRef,
}

/// The largest `maxFileSize` (16Mi): a file is held whole in memory while
/// it is fetched and chunked, so the limit bounds an allocation. The CRD
/// rule says the same; the operator checks it again for objects stored
/// before the rule existed and for the CLI.
pub const MAX_FILE_SIZE_LIMIT: u64 = 16 * 1024 * 1024;

/// The git rules of `git check-ref-format --branch`, as one CEL expression.
const BRANCH_RULE: &str = "!self.startsWith('-') && !self.startsWith('/') && !self.startsWith('.') \
    && !self.endsWith('/') && !self.endsWith('.') && !self.endsWith('.lock') \
    && !self.contains('..') && !self.contains('//') && !self.contains('/.') && !self.contains('@{') \
    && self != '@' && !self.matches('[\\\\x00-\\\\x20\\\\x7f~^:?*\\\\[\\\\\\\\]')";

fn default_interval() -> String {
    "5m".to_string()
}

fn default_timeout() -> String {
    "60s".to_string()
}

fn default_run_timeout() -> String {
    "30m".to_string()
}

fn default_max_file_size() -> IntOrString {
    IntOrString::String("1Mi".to_string())
}

fn default_history_limit() -> i32 {
    10
}

/// Where the repository is read from. Exactly one field is set.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.github) != has(self.git)").message(
    "exactly one of source.github or source.git must be set"
))]
pub struct SourceSpec {
    /// A repository on GitHub or GitHub Enterprise Server, read through the REST
    /// API without cloning.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub github: Option<GitHubSource>,
    /// Any git remote (https, ssh, git, or file when the operator allows it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git: Option<GitSource>,
}

/// A GitHub repository.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct GitHubSource {
    /// The user or organization that owns the repository.
    #[schemars(length(min = 1, max = 39))]
    #[x_kube(validation = Rule::new("self.matches('^[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?$')").message(
        "owner must be a GitHub user or organization name: letters, digits and hyphens, not starting or ending with a hyphen, at most 39 characters"
    ))]
    pub owner: String,

    /// The repository name, without `.git`.
    #[schemars(length(min = 1, max = 100))]
    #[x_kube(validation = Rule::new("self.matches('^[A-Za-z0-9._-]+$') && self != '.' && self != '..' && !self.endsWith('.git')").message(
        "repo must be a GitHub repository name: letters, digits, '.', '-' and '_', at most 100 characters, without a .git suffix"
    ))]
    pub repo: String,

    /// Base URL of the REST API, for GitHub Enterprise Server
    /// (`https://HOST/api/v3`). Defaults to `https://api.github.com`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2048))]
    #[x_kube(validation = Rule::new("isURL(self) && (self.startsWith('https://') || self.startsWith('http://'))").message(
        "apiUrl must be an http(s) URL such as https://github.example.com/api/v3"
    ))]
    pub api_url: Option<String>,

    /// A Secret in the same namespace holding a token under `key`, or a GitHub
    /// App: when the Secret has `githubAppID`, `githubAppInstallationID` and
    /// `githubAppPrivateKey` (the app's PEM key), the operator mints
    /// installation tokens (refreshed before they expire) and `key` is not
    /// read. The app needs read access to Contents and Metadata. Without a
    /// Secret, the repository is read anonymously.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<SecretKeyRef>,
}

/// A plain git remote.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct GitSource {
    /// The remote URL: `https://`, `http://`, `ssh://`, `git://`, scp-like
    /// `user@host:path`, or `file://` (only when the operator allows it).
    /// Without credentials: they would be stored in status and Postgres;
    /// they go in the Secret of `secretRef`.
    #[schemars(length(min = 1, max = 2048))]
    #[x_kube(validation = Rule::new(
        "self.matches('^(https?|ssh|git|file)://[^\\\\s]+$') || self.matches('^[A-Za-z0-9._-]+@[A-Za-z0-9.-]+:[^\\\\s]+$')"
    ).message("url must be a git remote URL: https://, http://, ssh://, git://, file:// or user@host:path"))]
    #[x_kube(validation = Rule::new(
        "!self.matches('^https?://[^/]*@') && !self.matches('^[A-Za-z+]+://[^/@]*:[^/@]*@')"
    ).message("url must not contain credentials: put them in a Secret named by spec.source.git.secretRef (username and password, or token)"))]
    pub url: String,

    /// A Secret in the same namespace with credentials: `username` and
    /// `password` (or `token`) for http(s), `identity` and `known_hosts` for ssh.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<LocalSecretRef>,
}

/// A key of a Secret in the resource's own namespace.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// Name of the Secret.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Key within the Secret. Defaults to `token`.
    #[serde(default = "default_token_key")]
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
}

fn default_token_key() -> String {
    "token".to_string()
}

/// A Secret in the resource's own namespace.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct LocalSecretRef {
    /// Name of the Secret.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// How chunks get embeddings.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.provider == 'None' || (has(self.endpoint) && has(self.model))").message(
    "embedding.endpoint and embedding.model are required when embedding.provider is OpenAI"
))]
pub struct EmbeddingSpec {
    /// `None` (no embeddings) or `OpenAI`: any OpenAI-compatible `/v1/embeddings`
    /// endpoint (OpenAI, Ollama, vLLM, TEI).
    #[serde(default)]
    pub provider: EmbeddingProvider,
    /// Base URL of the endpoint, e.g. `https://api.openai.com/v1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2048))]
    #[x_kube(validation = Rule::new("isURL(self)").message("embedding.endpoint must be a URL"))]
    pub endpoint: Option<String>,
    /// Model name, e.g. `text-embedding-3-small`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256))]
    pub model: Option<String>,
    /// Secret key holding the API key, sent as a bearer token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<SecretKeyRef>,
    /// Chunks per request (1 to 2048, default 64).
    #[serde(default = "default_batch_size")]
    #[schemars(range(min = 1, max = 2048))]
    pub batch_size: i32,
    /// Whose stored embeddings this resource may reuse for chunks of the
    /// same content instead of asking the endpoint: `Project` (default,
    /// only its own), `Namespace` (resources of the same namespace) or
    /// `Cluster` (every resource; only when the operator runs with
    /// `--allow-cluster-embedding-reuse`). In every scope a vector is reused
    /// only if the same endpoint URL computed it under the same model, in a
    /// completed run, with the dimension the endpoint answers with now.
    #[serde(default)]
    pub reuse_scope: EmbeddingReuseScope,
}

/// Whose stored embeddings a resource may reuse.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum EmbeddingReuseScope {
    /// Only this resource's own.
    #[default]
    Project,
    /// Those of resources in the same namespace.
    Namespace,
    /// Those of every resource (the operator must allow it).
    Cluster,
}

fn default_batch_size() -> i32 {
    64
}

/// Which embedding provider computes vectors.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum EmbeddingProvider {
    /// No embeddings.
    #[default]
    None,
    /// An OpenAI-compatible `/v1/embeddings` endpoint.
    OpenAI,
}

/// What happens to a project's rows when its resource is deleted.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DeletionPolicy {
    /// Keep the rows: history stays queryable after the resource is gone.
    #[default]
    Retain,
    /// Remove the project's files, memory entries and sync runs.
    Delete,
}
