//! Project Sync: a Kubernetes operator that mirrors code repositories into
//! Postgres, diff-aware, so that only what changed is fetched and processed.
//!
//! The modules follow the architecture: [`api`] holds the `ProjectSync` custom
//! resource types, [`controller`] the kube-runtime glue, [`pipeline`] the four
//! sync stages, [`source`] the repository providers, [`store`] Postgres,
//! [`chunk`] and [`embed`] the processing of file content, and [`http`],
//! [`metrics`], [`progress`] and [`telemetry`] what the operator shows;
//! [`webhook`] receives push notifications from git hosts. Below them all,
//! [`run`] holds the stages, file counts and stage durations of a run that
//! the pipeline, the store and the status share, and [`units`] the durations
//! and sizes that specs and flags are written in.

pub mod api;
pub mod chunk;
pub mod cli;
pub mod commands;
pub mod controller;
pub mod egress;
pub mod embed;
pub mod http;
pub mod metrics;
pub mod pipeline;
pub mod progress;
pub mod retry;
pub mod run;
pub mod source;
pub mod store;
pub mod telemetry;
pub mod units;
pub mod webhook;
