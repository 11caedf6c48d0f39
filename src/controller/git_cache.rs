//! The controller's side of the bounded git cache (filesystem and API
//! server I/O): a run leases its resource's cache so it is never evicted
//! under it, the limit is enforced after each run, a deleted resource's
//! cache goes with it, and at start-up caches of resources that no longer
//! exist are removed. The policy itself is in [`crate::source::git::cache`].

use std::{collections::HashSet, sync::Arc};

use kube::{Api, Client, api::ListParams};

use crate::{
    api::ProjectSync,
    metrics::Metrics,
    source::git::cache::{CacheLease, Eviction, GitCache},
};

use super::{context::Context, dereference::cache_name_for};

/// Holds `obj`'s git cache for the length of a run (`None` for GitHub
/// sources and when the cache is unbounded).
pub fn lease_for(ctx: &Context, obj: &ProjectSync) -> Option<CacheLease> {
    let cache = ctx.settings.git_cache.as_ref()?;
    obj.spec.source.git.as_ref()?;
    Some(cache.lease(&cache_name_for(obj)))
}

/// Measures the caches and evicts idle ones over the limit; drops the built
/// sources of evicted caches and closes their idle `cat-file` helpers (they
/// hold the deleted packs open). A failure is logged: it never fails a run.
pub async fn enforce_limit(ctx: &Context) {
    let Some(cache) = ctx.settings.git_cache.clone() else {
        return;
    };
    let root = cache.root().to_path_buf();
    let result = tokio::task::spawn_blocking(move || cache.enforce_limit()).await;
    match result {
        Ok(Ok(eviction)) => {
            record(&ctx.metrics, &eviction);
            if !eviction.evicted.is_empty() {
                tracing::info!(evicted = ?eviction.evicted, bytes = eviction.bytes, "evicted least recently used git caches");
                ctx.forget_sources_with_cache(&eviction.evicted);
                for name in &eviction.evicted {
                    ctx.settings.git_helpers.discard(&git_dir_of(&root, name));
                }
            }
        }
        Ok(Err(error)) => tracing::warn!(%error, "could not measure the git caches"),
        Err(error) => tracing::warn!(%error, "the git cache measurement panicked"),
    }
}

/// Removes a deleted resource's git cache and closes its idle helpers.
pub async fn remove_for(ctx: &Context, obj: &ProjectSync) {
    let Some(cache) = ctx.settings.git_cache.clone() else {
        return;
    };
    let name = cache_name_for(obj);
    ctx.settings
        .git_helpers
        .discard(&git_dir_of(cache.root(), &name));
    match tokio::task::spawn_blocking(move || cache.remove(&name)).await {
        Ok(Ok(_)) => {}
        Ok(Err(error)) => {
            tracing::warn!(%error, "could not remove the git cache of a deleted resource")
        }
        Err(error) => tracing::warn!(%error, "removing a git cache panicked"),
    }
}

/// At start-up: removes the caches of resources that no longer exist in the
/// watched namespaces, then measures the rest.
pub async fn prune_git_cache(
    client: &Client,
    namespaces: &[String],
    cache: &Arc<GitCache>,
    metrics: &Metrics,
) -> Result<(), kube::Error> {
    let apis: Vec<Api<ProjectSync>> = if namespaces.is_empty() {
        vec![Api::all(client.clone())]
    } else {
        namespaces
            .iter()
            .map(|ns| Api::namespaced(client.clone(), ns))
            .collect()
    };
    let mut keep = HashSet::new();
    for api in apis {
        for obj in api.list(&ListParams::default()).await? {
            keep.insert(cache_name_for(&obj));
        }
    }
    let cache = cache.clone();
    let result = tokio::task::spawn_blocking(move || {
        cache
            .retain(&keep)
            .and_then(|removed| Ok((removed, cache.enforce_limit()?)))
    })
    .await
    .map_err(std::io::Error::other)
    .and_then(|r| r);
    match result {
        Ok((removed, eviction)) => {
            if !removed.is_empty() {
                tracing::info!(
                    ?removed,
                    "removed the git caches of resources that no longer exist"
                );
            }
            record(metrics, &eviction);
        }
        Err(error) => tracing::warn!(%error, "could not prune the git caches"),
    }
    Ok(())
}

/// The cache repository of cache `name` (the key of its helpers).
fn git_dir_of(root: &std::path::Path, name: &str) -> std::path::PathBuf {
    root.join(name).join("repo.git")
}

/// Publishes the cache's size and counts its evictions.
fn record(metrics: &Metrics, eviction: &Eviction) {
    metrics
        .git_cache_bytes
        .set(i64::try_from(eviction.bytes).unwrap_or(i64::MAX));
    metrics
        .git_cache_evictions
        .inc_by(eviction.evicted.len() as u64);
}
