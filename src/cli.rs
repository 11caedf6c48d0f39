//! The command line of the `projectsync` binary: `run` the operator, print the
//! `crd`, `migrate` the database, and the user commands. Parsing only; `main`
//! dispatches.

use std::{net::SocketAddr, path::PathBuf};

use clap::{Args, Parser, Subcommand};

use crate::telemetry::LogFormat;

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
    /// Print the ProjectSync CustomResourceDefinition as YAML.
    Crd,
    /// Apply the database migrations and exit.
    Migrate(DatabaseArgs),
    /// Make an earlier completed sync's files and memory current again (as a
    /// new run). While the branch moves on, the next sync supersedes it:
    /// suspend the ProjectSync or pin `spec.commit` to keep it.
    Restore(RestoreArgs),
}

/// Settings of `projectsync restore`.
#[derive(Debug, Args)]
pub struct RestoreArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// The ProjectSync, as namespace/name.
    pub project: String,
    /// The id of the completed sync to restore (see `status.history`).
    pub sync: String,
}

/// Where the store is.
#[derive(Debug, Args)]
pub struct DatabaseArgs {
    /// Postgres connection URL.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: String,
}

/// Settings of `projectsync run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,

    /// Address of the HTTP server (metrics, probes, live progress).
    #[arg(long, env = "PROJECTSYNC_HTTP_ADDR", default_value = "0.0.0.0:8080")]
    pub http_addr: SocketAddr,

    /// Namespaces to watch (repeat, or comma-separated); all when empty.
    #[arg(long = "namespace", env = "PROJECTSYNC_NAMESPACES", value_delimiter = ',')]
    pub namespaces: Vec<String>,

    /// Syncs running at once.
    #[arg(long, env = "PROJECTSYNC_CONCURRENCY", default_value_t = 4)]
    pub concurrency: u16,

    /// Elect a leader through a Lease, so that only one replica syncs.
    #[arg(long, env = "PROJECTSYNC_LEADER_ELECTION", default_value_t = true, action = clap::ArgAction::Set)]
    pub leader_election: bool,

    /// Namespace of the leader Lease (in a cluster: the operator's own).
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    pub lease_namespace: String,

    /// Name of the leader Lease.
    #[arg(long, env = "PROJECTSYNC_LEASE_NAME", default_value = "projectsync-leader")]
    pub lease_name: String,

    /// Seconds the Lease stays valid without renewal: the failover time.
    #[arg(long, env = "PROJECTSYNC_LEASE_DURATION", default_value_t = 15)]
    pub lease_duration: u64,

    /// This replica's identity in the election and in events (the pod name).
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,

    /// Directory for git source caches (bounded by the repositories synced).
    #[arg(long, env = "PROJECTSYNC_CACHE_DIR", default_value = "/tmp/projectsync-cache")]
    pub cache_dir: PathBuf,

    /// Allow `file://` git sources. They read the operator's own filesystem:
    /// for development only.
    #[arg(long, env = "PROJECTSYNC_ALLOW_FILE_URLS", default_value_t = false)]
    pub allow_file_urls: bool,

    /// Seconds a running sync may take to finish after SIGTERM before it is
    /// marked FAILED.
    #[arg(long, env = "PROJECTSYNC_SHUTDOWN_GRACE", default_value_t = 25)]
    pub shutdown_grace: u64,
}
