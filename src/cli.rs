//! The command line of the `projectsync` binary: `run` the operator, print the
//! `crd`, `migrate` the database, and the user commands. Parsing only; `main`
//! dispatches.

use clap::{Parser, Subcommand};

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
    /// Print the ProjectSync CustomResourceDefinition as YAML.
    Crd,
}
