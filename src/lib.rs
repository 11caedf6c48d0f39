//! Project Sync: a Kubernetes operator that mirrors code repositories into
//! Postgres, diff-aware, so that only what changed is fetched and processed.
//!
//! The modules follow the architecture: [`api`] holds the `ProjectSync` custom
//! resource types, [`controller`] the kube-runtime glue, [`pipeline`] the four
//! sync stages, [`source`] the repository providers, [`store`] Postgres,
//! [`chunk`] and [`embed`] the splitting of files into memory entries and
//! their embeddings, and [`telemetry`] logging and tracing set-up.

pub mod api;
pub mod chunk;
pub mod cli;
pub mod controller;
pub mod embed;
pub mod pipeline;
pub mod source;
pub mod store;
pub mod telemetry;
