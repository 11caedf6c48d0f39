//! The command line of the `projectsync` binary: `run` the operator, print the
//! `crd`, `migrate` the database, and the user commands. Parsing only; `main`
//! dispatches.

use std::{net::SocketAddr, path::PathBuf};

use clap::{Args, Parser, Subcommand};

use crate::telemetry::LogFormat;

/// A positive size: bytes or a Kubernetes quantity (`512Mi`, `4Gi`).
fn parse_cache_size(text: &str) -> Result<u64, String> {
    let value = k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String(text.to_string());
    crate::units::parse_size(&value)
        .ok_or_else(|| format!("{text:?} is not a positive size such as 536870912, 512Mi or 4Gi"))
}

/// A duration such as `60s`, `10m` or `1h30m`; `0` or `0s` for none.
fn parse_flag_duration(text: &str) -> Result<std::time::Duration, String> {
    if text.trim() == "0" {
        return Ok(std::time::Duration::ZERO);
    }
    crate::units::parse_duration(text)
        .ok_or_else(|| format!("{text:?} is not a duration such as 60s, 10m or 1h30m"))
}

/// Project Sync: mirrors code repositories into Postgres, diff-aware.
#[derive(Debug, Parser)]
#[command(name = "projectsync", version, about)]
pub struct Cli {
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "PROJECTSYNC_LOG_FORMAT")]
    pub log_format: LogFormat,

    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the operator: reconcile ProjectSync resources.
    Run(RunArgs),
    /// Print the ProjectSync CustomResourceDefinition as YAML (or, with
    /// `--reference`, its field reference as Markdown).
    Crd(CrdArgs),
    /// Apply the database migrations and exit.
    Migrate(MigrateArgs),
    /// Make an earlier completed sync's files and memory current again (as a
    /// new run). With --server, declaratively: the operator sets
    /// `spec.restore` and holds the sync until it is lifted (`--lift`);
    /// with the database, once: the next sync of a moved branch supersedes
    /// it.
    Restore(RestoreArgs),
    /// List the branches of a repository, or of a ProjectSync's repository.
    Branches(BranchesArgs),
    /// List the sync runs of a project, newest first, from Postgres.
    History(HistoryArgs),
    /// Search a project's active memory entries by text, or by vector
    /// similarity with `--vector`.
    Search(SearchArgs),
    /// Compute the missing embeddings of a project's active memory entries,
    /// reusing stored embeddings of identical content.
    BackfillEmbeddings(BackfillArgs),
    /// Sync one repository into Postgres without a cluster.
    Sync(SyncArgs),
    /// Carry one `git://` connection for git (run by git itself, as
    /// `core.gitProxy`; not for users).
    #[command(hide = true)]
    GitConnect(GitConnectArgs),
}

/// Arguments git gives its `core.gitProxy` command.
#[derive(Debug, Args)]
pub struct GitConnectArgs {
    /// The remote's address (an IP address: names are resolved and checked
    /// by the operator before git runs).
    pub host: String,
    pub port: u16,
}

/// Where the operator may connect on a resource's behalf (GitHub API URLs,
/// git remotes, proxies, embedding endpoints), checked on the resolved
/// addresses of every connection and redirect.
#[derive(Debug, Clone, Args)]
pub struct EgressArgs {
    /// `restricted` refuses loopback, link-local (incl. the cloud metadata
    /// address), private, shared, unspecified and multicast addresses not
    /// allowed below; `unrestricted` connects anywhere.
    #[arg(long, env = "PROJECTSYNC_EGRESS_POLICY", value_enum, default_value_t = crate::egress::EgressMode::Restricted)]
    pub egress_policy: crate::egress::EgressMode,
    /// A network the restricted policy allows although internal, such as
    /// an in-cluster GitHub Enterprise or embedding service (repeatable;
    /// comma-separated in the environment variable).
    #[arg(
        long,
        env = "PROJECTSYNC_EGRESS_ALLOW_CIDR",
        value_name = "CIDR",
        value_delimiter = ','
    )]
    pub egress_allow_cidr: Vec<crate::egress::Cidr>,
    /// A host whose addresses are not checked: an exact name, or
    /// `.example.com` for a domain and its subdomains (repeatable).
    #[arg(
        long,
        env = "PROJECTSYNC_EGRESS_ALLOW_HOST",
        value_name = "HOST",
        value_delimiter = ','
    )]
    pub egress_allow_host: Vec<String>,
}

impl EgressArgs {
    /// The policy these flags describe.
    pub fn policy(&self) -> crate::egress::EgressPolicy {
        crate::egress::EgressPolicy {
            mode: self.egress_policy,
            allow_cidrs: self.egress_allow_cidr.clone(),
            allow_hosts: self.egress_allow_host.clone(),
        }
    }
}

/// Settings of `projectsync crd`.
#[derive(Debug, Args)]
pub struct CrdArgs {
    /// Print the field reference (Markdown, as in docs/crd-reference.md)
    /// instead of the manifest.
    #[arg(long, conflicts_with = "format")]
    pub reference: bool,
    /// Manifest format (both are accepted by `kubectl apply -f -`).
    #[arg(short = 'o', long = "output", value_enum, default_value_t = ManifestFormat::Yaml)]
    pub format: ManifestFormat,
}

/// How `crd` prints the manifest.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum ManifestFormat {
    #[default]
    Yaml,
    Json,
}

/// Settings of `projectsync migrate`.
#[derive(Debug, Args)]
pub struct MigrateArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,
    #[command(flatten)]
    pub output: OutputArgs,
}

/// How results are printed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    /// Aligned columns for a terminal.
    #[default]
    Table,
    /// One JSON document on stdout, for scripts and `jq`.
    Json,
}

/// The output flag every user command takes.
#[derive(Debug, Clone, Copy, Args)]
pub struct OutputArgs {
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = OutputFormat::Table)]
    pub format: OutputFormat,
}

/// A repository named on the command line instead of through a ProjectSync.
#[derive(Debug, Clone, Args)]
pub struct RepositoryArgs {
    /// A GitHub repository, as owner/repo.
    #[arg(long, value_name = "OWNER/REPO", conflicts_with = "git")]
    pub github: Option<String>,
    /// The GitHub API base URL (GitHub Enterprise: https://HOST/api/v3).
    #[arg(long, value_name = "URL", requires = "github")]
    pub api_url: Option<String>,
    /// A git remote URL (https://, ssh://, git://, or a local path).
    #[arg(long, value_name = "URL")]
    pub git: Option<String>,
    /// Name of the environment variable that holds the access token (GitHub
    /// token, or the password for git over https).
    #[arg(long, value_name = "VAR")]
    pub token_env: Option<String>,
    /// Where git sources keep their cache (default: a temporary directory,
    /// removed afterwards).
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
}

/// Settings of `projectsync branches`.
#[derive(Debug, Args)]
pub struct BranchesArgs {
    /// A ProjectSync, as namespace/name (read through the kubeconfig);
    /// or name the repository with --github or --git.
    #[arg(value_name = "NAMESPACE/NAME", required_unless_present_any = ["github", "git"], conflicts_with_all = ["github", "git"])]
    pub project: Option<String>,
    #[command(flatten)]
    pub server: ServerArgs,
    #[command(flatten)]
    pub repository: RepositoryArgs,
    #[command(flatten)]
    pub output: OutputArgs,
}

/// Settings of `projectsync history`.
#[derive(Debug, Args)]
pub struct HistoryArgs {
    #[command(flatten)]
    pub server: ServerArgs,
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// The project, as namespace/name.
    #[arg(value_name = "NAMESPACE/NAME")]
    pub project: String,
    /// Runs to show at most.
    #[arg(long, default_value_t = 20)]
    pub limit: u32,
    #[command(flatten)]
    pub output: OutputArgs,
}

/// An embedding endpoint named on the command line.
#[derive(Debug, Clone, Args)]
pub struct EmbeddingArgs {
    /// OpenAI-compatible embeddings base URL, e.g. https://api.openai.com/v1
    /// (without it: the ProjectSync's `spec.embedding`, read through the
    /// kubeconfig).
    #[arg(long, value_name = "URL", requires = "model")]
    pub endpoint: Option<String>,
    /// The embedding model (the key under which embeddings are stored).
    #[arg(long, requires = "endpoint")]
    pub model: Option<String>,
    /// Name of the environment variable that holds the API key.
    #[arg(long, value_name = "VAR")]
    pub api_key_env: Option<String>,
    /// Inputs per embeddings request.
    #[arg(long, default_value_t = 64)]
    pub batch_size: u32,
}

/// Settings of `projectsync search`.
#[derive(Debug, Args)]
pub struct SearchArgs {
    #[command(flatten)]
    pub server: ServerArgs,
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// The project, as namespace/name.
    #[arg(value_name = "NAMESPACE/NAME")]
    pub project: String,
    /// Text to find (case-insensitive substring), or with --vector the
    /// question to embed.
    pub query: String,
    /// Rank by cosine similarity of embeddings instead of matching text.
    #[arg(long)]
    pub vector: bool,
    #[command(flatten)]
    pub embedding: EmbeddingArgs,
    /// Hits to show at most.
    #[arg(long, default_value_t = 10)]
    pub limit: u32,
    #[command(flatten)]
    pub output: OutputArgs,
}

/// Settings of `projectsync backfill-embeddings`.
#[derive(Debug, Args)]
pub struct BackfillArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// The project, as namespace/name.
    #[arg(value_name = "NAMESPACE/NAME")]
    pub project: String,
    #[command(flatten)]
    pub embedding: EmbeddingArgs,
    #[command(flatten)]
    pub output: OutputArgs,
}

/// Settings of `projectsync sync`.
#[derive(Debug, Args)]
pub struct SyncArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// Run one sync and exit (the only mode: continuous syncing is the
    /// operator's job).
    #[arg(long)]
    pub once: bool,
    #[command(flatten)]
    pub repository: RepositoryArgs,
    /// The branch to sync.
    #[arg(long, default_value = "main")]
    pub branch: String,
    /// Sync this commit instead of the branch head.
    #[arg(long, value_name = "SHA")]
    pub commit: Option<String>,
    /// The project key in the database, as namespace/name (the other
    /// commands take the same key).
    #[arg(long, value_name = "NAMESPACE/NAME")]
    pub project: String,
    /// Only paths matching one of these globs (repeat).
    #[arg(long, value_name = "GLOB")]
    pub include: Vec<String>,
    /// Leave out paths matching one of these globs (repeat).
    #[arg(long, value_name = "GLOB")]
    pub exclude: Vec<String>,
    /// Files larger than this are recorded but not chunked (bytes, or a
    /// quantity such as 512Ki).
    #[arg(long, default_value = "1Mi")]
    pub max_file_size: String,
    /// OpenAI-compatible embeddings base URL (no embeddings without it).
    #[arg(long, value_name = "URL", requires = "embedding_model")]
    pub embedding_endpoint: Option<String>,
    /// The embedding model.
    #[arg(long, requires = "embedding_endpoint")]
    pub embedding_model: Option<String>,
    /// Name of the environment variable that holds the embeddings API key.
    #[arg(long, value_name = "VAR")]
    pub embedding_api_key_env: Option<String>,
    /// Inputs per embeddings request.
    #[arg(long, default_value_t = 64)]
    pub embedding_batch_size: u32,
    /// Completed runs whose rows are kept (older ones are pruned).
    #[arg(long, default_value_t = 10)]
    pub history_limit: u32,
    /// Run even if the commit is already synced, and process every file
    /// again (after changing the embedding model or chunking).
    #[arg(long)]
    pub force: bool,
    #[command(flatten)]
    pub output: OutputArgs,
}

/// Settings of `projectsync restore`.
#[derive(Debug, Args)]
pub struct RestoreArgs {
    #[command(flatten)]
    pub server: ServerArgs,
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// The ProjectSync, as namespace/name.
    #[arg(value_name = "NAMESPACE/NAME")]
    pub project: String,
    /// The id of the completed sync to restore (see `projectsync history`).
    #[arg(required_unless_present = "lift")]
    pub sync: Option<String>,
    /// With --server: remove `spec.restore`, so the resource follows its
    /// branch again.
    #[arg(long, conflicts_with = "sync")]
    pub lift: bool,
    /// With --server: how long to wait for the operator to hold the restored
    /// sync (0: do not wait).
    #[arg(long, default_value = "2m", value_parser = parse_flag_duration)]
    pub wait: std::time::Duration,
    #[command(flatten)]
    pub output: OutputArgs,
}

/// The operator's API, for the commands that can go through it instead of
/// the database.
#[derive(Debug, Clone, Args)]
pub struct ServerArgs {
    /// The operator's API, such as http://localhost:8080 (a port-forward of
    /// its Service) or https://projectsync.example.com: the command goes
    /// through it as you (your kubeconfig's token) and needs no database
    /// URL. Without it the command reads Postgres directly.
    #[arg(long, env = "PROJECTSYNC_SERVER", value_name = "URL")]
    pub server: Option<String>,
    /// The bearer token for --server (default: the kubeconfig user's
    /// `token` or `tokenFile`; for client certificates or exec plugins pass
    /// one, e.g. `$(kubectl create token NAME)`).
    #[arg(long, env = "PROJECTSYNC_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

/// Where the store is, and the limits of its connections.
#[derive(Debug, Args)]
pub struct DatabaseArgs {
    /// Postgres connection URL (required unless the command goes through
    /// the operator's API with --server).
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,

    /// Postgres `statement_timeout` of every connection: a statement
    /// running longer is cancelled (and the run retried). `0` for none.
    #[arg(long, env = "PROJECTSYNC_DB_STATEMENT_TIMEOUT", default_value = "60s", value_parser = parse_flag_duration)]
    pub db_statement_timeout: std::time::Duration,

    /// Postgres `lock_timeout` of every connection: a statement waiting
    /// longer for a lock is cancelled. `0` for none.
    #[arg(long, env = "PROJECTSYNC_DB_LOCK_TIMEOUT", default_value = "10s", value_parser = parse_flag_duration)]
    pub db_lock_timeout: std::time::Duration,

    /// `statement_timeout` of the connection that applies migrations (which
    /// never has a lock timeout: it waits for another replica's migration).
    /// `0` for none.
    #[arg(long, env = "PROJECTSYNC_DB_MIGRATION_STATEMENT_TIMEOUT", default_value = "0", value_parser = parse_flag_duration)]
    pub db_migration_statement_timeout: std::time::Duration,
}

impl DatabaseArgs {
    /// The database URL, or the error that asks for one.
    pub fn url(&self) -> Result<&str, crate::commands::CommandError> {
        self.database_url
            .as_deref()
            .filter(|url| !url.trim().is_empty())
            .ok_or(crate::commands::CommandError::NoDatabase)
    }

    /// The connection limits these flags ask for.
    pub fn limits(&self) -> crate::store::ConnectionLimits {
        crate::store::ConnectionLimits {
            statement_timeout: self.db_statement_timeout,
            lock_timeout: self.db_lock_timeout,
            migration_statement_timeout: self.db_migration_statement_timeout,
        }
    }
}

/// Settings of `projectsync run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,

    /// Address of the API listener: live progress streams (for callers
    /// allowed to `get` the ProjectSync) and webhooks.
    #[arg(long, env = "PROJECTSYNC_HTTP_ADDR", default_value = "0.0.0.0:8080")]
    pub http_addr: SocketAddr,

    #[command(flatten)]
    pub http: HttpArgs,

    /// Namespaces to watch (repeat, or comma-separated); all when empty.
    #[arg(
        long = "namespace",
        env = "PROJECTSYNC_NAMESPACES",
        value_delimiter = ','
    )]
    pub namespaces: Vec<String>,

    /// Syncs running at once, in all namespaces together.
    #[arg(long, env = "PROJECTSYNC_CONCURRENCY", default_value_t = 4)]
    pub concurrency: u16,

    /// Syncs of one namespace running at once: a namespace at its limit
    /// waits (checked again a few seconds later) without holding one of
    /// the `--concurrency` slots, so no tenant can hold them all.
    #[arg(long, env = "PROJECTSYNC_NAMESPACE_CONCURRENCY", default_value_t = 2)]
    pub namespace_concurrency: u16,

    /// Ceiling of every run's deadline (`spec.runTimeout` is capped by it):
    /// a run past its deadline is cancelled and FAILED with reason
    /// RunDeadlineExceeded.
    #[arg(long, env = "PROJECTSYNC_MAX_RUN_DURATION", default_value = "2h", value_parser = parse_flag_duration)]
    pub max_run_duration: std::time::Duration,

    /// Allow `spec.embedding.reuseScope: Cluster`, reuse of embeddings
    /// stored by resources of any namespace (still only from the same
    /// endpoint and model). Off by default: tenants reuse only their own.
    #[arg(
        long,
        env = "PROJECTSYNC_ALLOW_CLUSTER_EMBEDDING_REUSE",
        default_value_t = false
    )]
    pub allow_cluster_embedding_reuse: bool,

    /// The id of this install, recorded on every run it starts: recovery
    /// of abandoned runs (at start-up, shutdown, and per project) fails
    /// only runs with this owner, never those of another install sharing
    /// the database or of `projectsync sync --once`. Defaults to
    /// `LEASE_NAMESPACE/LEASE_NAME` (the chart: the release's namespace and
    /// name). Replicas of one install must share it.
    #[arg(long, env = "PROJECTSYNC_INSTALL_ID")]
    pub install_id: Option<String>,

    /// Elect a leader through a Lease, so that only one replica syncs.
    #[arg(long, env = "PROJECTSYNC_LEADER_ELECTION", default_value_t = true, action = clap::ArgAction::Set)]
    pub leader_election: bool,

    /// Split the resources into this many shards, each a Lease held by one
    /// replica: every replica reconciles the resources of its fair share of
    /// shards (a stable hash of the resource's UID picks its shard). 1
    /// (the default) is one leader for everything (`--leader-election`).
    /// All replicas of an install must run with the same count.
    #[arg(long, env = "PROJECTSYNC_SHARDS", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=256))]
    pub shards: u32,

    /// Watch only ProjectSyncs whose labels match this selector (Kubernetes
    /// syntax, e.g. `sharding.projectsync.dev/key in (a,b)`): several
    /// installs split the resources between them, or a canary install takes
    /// a few. Checked against the API server at start-up.
    #[arg(long, env = "PROJECTSYNC_WATCH_LABEL_SELECTOR")]
    pub watch_label_selector: Option<String>,

    /// Namespace of the leader Lease (in a cluster: the operator's own).
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    pub lease_namespace: String,

    /// Name of the leader Lease.
    #[arg(
        long,
        env = "PROJECTSYNC_LEASE_NAME",
        default_value = "projectsync-leader"
    )]
    pub lease_name: String,

    /// Seconds the Lease stays valid without renewal: the failover time.
    #[arg(long, env = "PROJECTSYNC_LEASE_DURATION", default_value_t = 15)]
    pub lease_duration: u64,

    /// This replica's identity in the election and in events (the pod name).
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,

    /// Directory for git source caches (bounded by the repositories synced).
    #[arg(
        long,
        env = "PROJECTSYNC_CACHE_DIR",
        default_value = "/tmp/projectsync-cache"
    )]
    pub cache_dir: PathBuf,

    /// Limit on the total size of the git caches (bytes, or a quantity such
    /// as 512Mi or 4Gi). Least recently used caches of idle resources are
    /// evicted (and refetched when next needed); a single fetch that would
    /// grow past it is stopped and fails with CacheLimitExceeded.
    #[arg(
        long,
        env = "PROJECTSYNC_GIT_CACHE_MAX_SIZE",
        default_value = "4Gi",
        value_parser = parse_cache_size
    )]
    pub git_cache_max_size: u64,

    /// Git helper processes (`git cat-file --batch-command`, which read
    /// blobs) alive at most, shared by every git resource: opened on demand,
    /// kept per cache repository while idle, the least recently used closed
    /// to make room. A read waits (up to `spec.timeout`) for a free one.
    #[arg(
        long,
        env = "PROJECTSYNC_GIT_HELPERS",
        default_value_t = crate::source::git::pool::DEFAULT_MAX_HELPERS,
        value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=4096)
    )]
    pub git_helpers: usize,

    /// An idle git helper process is closed after this long.
    #[arg(long, env = "PROJECTSYNC_GIT_HELPER_IDLE_TIMEOUT", default_value = "30s", value_parser = parse_flag_duration)]
    pub git_helper_idle_timeout: std::time::Duration,

    /// Ceiling on `spec.maxTreeEntries`: no resource may list a tree with
    /// more entries than this, whatever its spec says (its run ends Stalled
    /// with TreeTooLarge, naming the limit).
    #[arg(
        long,
        env = "PROJECTSYNC_MAX_TREE_ENTRIES",
        default_value_t = crate::source::tree::DEFAULT_TREE_ENTRIES_CEILING,
        value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..)
    )]
    pub max_tree_entries: usize,

    /// File content all running syncs together may hold fetched and not yet
    /// written (bytes, or a quantity such as 64Mi). Batches wait for room.
    #[arg(
        long,
        env = "PROJECTSYNC_MAX_INFLIGHT_BYTES",
        default_value = "64Mi",
        value_parser = parse_cache_size
    )]
    pub max_inflight_bytes: u64,

    /// File content one sync may hold fetched and not yet written (bytes, or
    /// a quantity such as 32Mi).
    #[arg(
        long,
        env = "PROJECTSYNC_MAX_INFLIGHT_BYTES_PER_RUN",
        default_value = "32Mi",
        value_parser = parse_cache_size
    )]
    pub max_inflight_bytes_per_run: u64,

    /// Allow `file://` git sources. They read the operator's own filesystem:
    /// for development only.
    #[arg(long, env = "PROJECTSYNC_ALLOW_FILE_URLS", default_value_t = false)]
    pub allow_file_urls: bool,

    #[command(flatten)]
    pub egress: EgressArgs,

    /// Seconds a running sync may take to finish after SIGTERM before it is
    /// marked FAILED.
    #[arg(long, env = "PROJECTSYNC_SHUTDOWN_GRACE", default_value_t = 25)]
    pub shutdown_grace: u64,
}

/// The HTTP listeners' settings of `projectsync run`.
#[derive(Debug, Args)]
pub struct HttpArgs {
    /// Address of the probe listener: /healthz, /readyz and /metrics only,
    /// so the kubelet and Prometheus are never starved by API clients.
    #[arg(long, env = "PROJECTSYNC_PROBE_ADDR", default_value = "0.0.0.0:8081")]
    pub probe_addr: SocketAddr,

    /// Check callers of the API listener: a TokenReview of their bearer
    /// token and a SubjectAccessReview for the verb on the ProjectSync.
    /// `false` lets anyone read any progress stream: for a local quickstart
    /// only, never on a shared cluster.
    #[arg(long, env = "PROJECTSYNC_HTTP_AUTH", default_value_t = true, action = clap::ArgAction::Set)]
    pub http_auth: bool,

    /// How the web page under /ui on the API listener authenticates:
    /// `token` (sign in with a bearer token, kept in an HttpOnly cookie, or
    /// send `Authorization: Bearer`; every page is then authorized with a
    /// SubjectAccessReview) or `none` (everyone who reaches the listener
    /// sees every resource and may use every control: a local quickstart
    /// only, refused unless `--http-addr` is a loopback address).
    #[arg(long, env = "PROJECTSYNC_UI_AUTH", value_enum, default_value_t = crate::http::ui::UiAuth::Token)]
    pub ui_auth: crate::http::ui::UiAuth,

    /// Allows `--ui-auth=none` on a listener that is not loopback. Anyone
    /// who reaches it can read every mirror and suspend, sync or restore
    /// every resource.
    #[arg(
        long,
        env = "PROJECTSYNC_INSECURE_UI_AUTH_NONE_ON_ANY_ADDRESS",
        default_value_t = false
    )]
    pub insecure_ui_auth_none_on_any_address: bool,

    /// Seconds a client may take to send a request's headers (and to start
    /// the next request on a kept-alive connection) on both listeners.
    #[arg(
        long,
        env = "PROJECTSYNC_HTTP_HEADER_READ_TIMEOUT",
        default_value_t = 10
    )]
    pub http_header_read_timeout: u64,

    /// Seconds without a byte read or written after which a connection is
    /// closed (progress streams write a keep-alive well within it).
    #[arg(long, env = "PROJECTSYNC_HTTP_IDLE_TIMEOUT", default_value_t = 60)]
    pub http_idle_timeout: u64,

    /// Connections the API listener holds at once; more are closed at accept.
    #[arg(long, env = "PROJECTSYNC_HTTP_MAX_CONNECTIONS", default_value_t = 1024)]
    pub http_max_connections: usize,

    /// Connections the probe listener holds at once.
    #[arg(long, env = "PROJECTSYNC_PROBE_MAX_CONNECTIONS", default_value_t = 64)]
    pub probe_max_connections: usize,
}
