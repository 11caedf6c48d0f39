//! The kube-runtime glue: watches ProjectSync resources (their Secrets are
//! read with `get`, never watched), runs the pipeline for each, and reports through status,
//! events and metrics. With one shard only the replica holding the leader
//! Lease reconciles; with `--shards N` every replica reconciles the
//! resources of the shards it holds ([`shards`]).

pub mod context;
pub mod dereference;
pub mod embedding;
pub mod error;
pub mod git_cache;
pub mod leader;
pub mod limits;
pub mod reconcile;
pub mod restore;
pub mod selector;
pub mod shards;
pub mod status;
pub mod sync;
pub mod triggers;
pub mod validate;

use std::{sync::Arc, time::Duration};

use chrono::Utc;
use futures::{FutureExt, StreamExt, future};
use kube::{
    Api, ResourceExt,
    runtime::{
        Controller, WatchStreamExt, predicates,
        reflector::{self, ObjectRef},
        utils::Predicate,
        watcher,
    },
};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::UnboundedReceiverStream;

use crate::api::ProjectSync;

pub use context::Context;
pub use dereference::SourceSettings;
pub use git_cache::prune_git_cache;
pub use leader::{Election, LeaderError, LeaseSettings};
pub use limits::RunLimits;
pub use selector::check_label_selector;
pub use shards::{ShardSettings, Shards};

/// How the controller runs.
#[derive(Debug, Clone)]
pub struct Options {
    /// Namespaces to watch; empty means all.
    pub namespaces: Vec<String>,
    /// Reconciles in flight at once per watched namespace scope. Runs are
    /// bounded by [`RunLimits`] (globally and per namespace); this only has
    /// to leave room for resources that wait for a run slot, and for those
    /// that only poll.
    pub concurrency: u16,
    /// Leader election; `None` runs without it (a single replica, or
    /// shards).
    pub lease: Option<LeaseSettings>,
    /// Shard Leases (`--shards` above 1); the context's [`Shards`] must
    /// have been built with the same count.
    pub shards: Option<ShardSettings>,
    /// Only resources with these labels are watched (`--watch-label-selector`).
    pub label_selector: Option<String>,
    /// How long a running sync may take to finish after SIGTERM before it is
    /// marked FAILED.
    pub shutdown_grace: Duration,
}

/// Why the controller stopped other than by a requested shutdown.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Leader(#[from] LeaderError),
    #[error("cannot mark runs of a previous leader as failed: {0}")]
    Store(#[from] crate::store::StoreError),
}

/// Runs the controller until `shutdown` resolves (then lets running syncs
/// finish within the grace period) or leadership is lost.
pub async fn run(
    ctx: Arc<Context>,
    options: Options,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), RunError> {
    let shutdown = shutdown.shared();
    if let Some(settings) = options.shards.clone() {
        return run_sharded(ctx, &options, settings, shutdown).await;
    }
    let mut election = match options.lease.clone() {
        Some(settings) => {
            let mut election = Election::join(ctx.client.clone(), settings.clone()).await?;
            tracing::info!(lease = %settings.name, identity = %settings.identity, "waiting to lead");
            tokio::select! {
                led = election.leading() => led?,
                () = shutdown.clone() => {
                    election.release().await;
                    return Ok(());
                }
            }
            tracing::info!(lease = %settings.name, "leading");
            Some(election)
        }
        None => None,
    };

    // Runs a previous leader of this install (or this process, before a
    // crash) left behind can never finish: fail them so the next runs chain
    // on the last completed sync. The store touches only runs this install
    // owns: another install on the same database, or a `sync --once`, keeps
    // its runs.
    let abandoned = ctx
        .store
        .fail_abandoned(
            None,
            Utc::now(),
            "the operator restarted (or a new leader took over) before the run finished",
        )
        .await?;
    if !abandoned.is_empty() {
        tracing::warn!(
            count = abandoned.len(),
            owner = ctx.store.owner(),
            "marked runs of a previous operator FAILED"
        );
    }

    let (controllers, _watched) = build_controllers(ctx.clone(), &options, shutdown.clone());
    let grace = options.shutdown_grace;
    let outcome = tokio::select! {
        () = controllers => Ok(()),
        () = async { shutdown.clone().await; tokio::time::sleep(grace).await } => {
            tracing::warn!(grace_secs = grace.as_secs(), "running syncs did not finish within the shutdown grace period");
            Ok(())
        }
        error = async {
            match election.as_mut() {
                Some(election) => election.lost().await,
                None => future::pending().await,
            }
        } => Err(RunError::Leader(error)),
    };

    // Whatever did not finish is FAILED now, never left IN_PROGRESS.
    match ctx
        .store
        .fail_abandoned(
            None,
            Utc::now(),
            "the operator shut down before the run finished",
        )
        .await
    {
        Ok(failed) if !failed.is_empty() => {
            tracing::warn!(count = failed.len(), "marked unfinished runs FAILED")
        }
        Ok(_) => {}
        Err(error) => tracing::error!(%error, "could not mark unfinished runs FAILED"),
    }
    // Only a replica that reconciles may show per-resource gauges: a
    // frozen copy on a replica that stopped would mislead alerts.
    ctx.metrics.resources.forget_all();
    if let Some(election) = election {
        election.release().await;
    }
    outcome
}

/// The sharded run: no leader; the shard manager holds this replica's
/// fair share of shard Leases while the controllers reconcile what those
/// shards own. Abandoned runs are recovered per shard as shards are taken,
/// never install-wide (the other replicas' runs are live). At shutdown the
/// controllers stop first, then the manager fails what was left unfinished
/// in its shards and hands them back, so another replica takes over at once.
async fn run_sharded(
    ctx: Arc<Context>,
    options: &Options,
    settings: ShardSettings,
    shutdown: future::Shared<impl Future<Output = ()> + Send + 'static>,
) -> Result<(), RunError> {
    let (controllers, watched) = build_controllers(ctx.clone(), options, shutdown.clone());
    let (readers, triggers) = watched.into_iter().unzip();
    let manager = shards::ShardManager::new(
        ctx.client.clone(),
        settings,
        ctx.shards.clone(),
        ctx.store.clone(),
        ctx.metrics.clone(),
        readers,
        triggers,
    );
    let (stop, stopped) = watch::channel(false);
    let manager = tokio::spawn(manager.run(stopped));
    let grace = options.shutdown_grace;
    tokio::select! {
        () = controllers => {}
        () = async { shutdown.clone().await; tokio::time::sleep(grace).await } => {
            tracing::warn!(grace_secs = grace.as_secs(), "running syncs did not finish within the shutdown grace period");
        }
    }
    let _ = stop.send(true);
    if let Err(error) = manager.await {
        tracing::error!(%error, "the shard manager failed");
    }
    Ok(())
}

/// What the shard manager needs of one watched scope: its resources, and a
/// way to have some of them reconciled.
type Watched = (
    reflector::Store<ProjectSync>,
    mpsc::UnboundedSender<ObjectRef<ProjectSync>>,
);

/// One Controller per watched namespace (or one for all), sharing `ctx`.
fn build_controllers(
    ctx: Arc<Context>,
    options: &Options,
    shutdown: future::Shared<impl Future<Output = ()> + Send + 'static>,
) -> (impl Future<Output = ()>, Vec<Watched>) {
    let scopes: Vec<Option<String>> = if options.namespaces.is_empty() {
        vec![None]
    } else {
        options.namespaces.iter().cloned().map(Some).collect()
    };
    let mut watched = Vec::new();
    let runs: Vec<_> = scopes
        .into_iter()
        .map(|namespace| {
            // Secrets are not watched: a watch (even of metadata) needs `list`
            // and `watch` on every Secret in scope. A referenced Secret is read
            // with `get` on each reconcile; its resourceVersion is part of the
            // source fingerprint, so a change takes effect at the next interval
            // (or at once with the request annotation).
            let resources: Api<ProjectSync> = match &namespace {
                Some(ns) => Api::namespaced(ctx.client.clone(), ns),
                None => Api::all(ctx.client.clone()),
            };
            let (reader, writer) = reflector::store();
            let (trigger, triggered) = mpsc::unbounded_channel();
            watched.push((reader.clone(), trigger));
            let config = match &options.label_selector {
                Some(selector) => watcher::Config::default().labels(selector),
                None => watcher::Config::default(),
            };
            // Status writes do not trigger reconciles: only spec (generation),
            // annotations (the request annotation) and finalizers do, plus the
            // interval requeue and, with shards, the gain of a shard.
            // managedFields are dropped before the store keeps the object: the
            // controller never reads them, and they are a large part of each
            // object (thousands of resources per replica).
            let changes = watcher(resources, config)
                .default_backoff()
                .modify(|obj| obj.managed_fields_mut().clear())
                .reflect(writer)
                .applied_objects()
                .predicate_filter(
                    predicates::generation
                        .combine(predicates::annotations)
                        .combine(predicates::finalizers),
                    Default::default(),
                );
            Controller::for_stream(changes, reader)
                .with_config(
                    kube::runtime::controller::Config::default().concurrency(options.concurrency),
                )
                .reconcile_on(UnboundedReceiverStream::new(triggered))
                .graceful_shutdown_on(shutdown.clone())
                .run(reconcile::reconcile, reconcile::error_policy, ctx.clone())
                .for_each(|result| {
                    if let Err(error) = result {
                        tracing::debug!(%error, "controller event");
                    }
                    future::ready(())
                })
        })
        .collect();
    (future::join_all(runs).map(|_| ()), watched)
}
