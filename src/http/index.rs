//! The HTTP layer's own view of the ProjectSyncs the operator serves: a
//! reflector (list + watch, the verbs the operator already has) per watched
//! namespace, or one for all. Requests look resources up here, so neither a
//! stream for a made-up name nor an unsigned webhook delivery costs an API
//! call. Network I/O in the background; lookups are in memory.
//!
//! Its own reflector rather than the controller's: the controller runs only
//! on the Lease holder and builds its stores inside `controller::run`, while
//! every replica answers HTTP.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use futures::StreamExt;
use kube::{
    Api, Client, ResourceExt,
    runtime::{
        WatchStreamExt,
        reflector::{self, ObjectRef, Store},
        watcher,
    },
};

use crate::api::ProjectSync;

/// Lookups of served ProjectSyncs. Cheap to clone.
#[derive(Clone)]
pub struct ResourceIndex {
    scopes: Arc<Vec<(Option<String>, Store<ProjectSync>)>>,
    ready: Arc<AtomicUsize>,
}

impl ResourceIndex {
    /// Starts one reflector per namespace in `namespaces` (one for all
    /// namespaces when empty), running until the process ends.
    pub fn spawn(client: Client, namespaces: &[String]) -> Self {
        let scopes: Vec<Option<String>> = if namespaces.is_empty() {
            vec![None]
        } else {
            namespaces.iter().cloned().map(Some).collect()
        };
        let ready = Arc::new(AtomicUsize::new(0));
        let stores = scopes
            .into_iter()
            .map(|scope| {
                let api: Api<ProjectSync> = match &scope {
                    Some(ns) => Api::namespaced(client.clone(), ns),
                    None => Api::all(client.clone()),
                };
                let (reader, writer) = reflector::store();
                let stream = watcher(api, watcher::Config::default())
                    .default_backoff()
                    .modify(|obj| obj.managed_fields_mut().clear())
                    .reflect(writer);
                tokio::spawn(stream.for_each(|_| futures::future::ready(())));
                let counted = reader.clone();
                let ready = ready.clone();
                tokio::spawn(async move {
                    if counted.wait_until_ready().await.is_ok() {
                        ready.fetch_add(1, Ordering::SeqCst);
                    }
                });
                (scope, reader)
            })
            .collect();
        ResourceIndex {
            scopes: Arc::new(stores),
            ready,
        }
    }

    /// Whether every reflector has listed once (before that, a miss proves
    /// nothing).
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst) >= self.scopes.len()
    }

    /// Waits (at most `within`) until [`Self::is_ready`].
    pub async fn wait_until_ready(&self, within: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        while !self.is_ready() {
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        true
    }

    /// Every served ProjectSync (the web page's overview filters them by
    /// what the caller may list).
    pub fn list_all(&self) -> Vec<Arc<ProjectSync>> {
        self.scopes
            .iter()
            .flat_map(|(_, store)| store.state())
            .collect()
    }

    /// The ProjectSync `namespace/name`, if it exists and is served here.
    pub fn get(&self, namespace: &str, name: &str) -> Option<Arc<ProjectSync>> {
        let (_, store) = self
            .scopes
            .iter()
            .find(|(scope, _)| scope.as_deref().is_none_or(|s| s == namespace))?;
        store.get(&ObjectRef::new(name).within(namespace))
    }

    /// The ProjectSyncs of `namespace` served here, in no particular order.
    pub fn list(&self, namespace: &str) -> Vec<Arc<ProjectSync>> {
        let Some((_, store)) = self
            .scopes
            .iter()
            .find(|(scope, _)| scope.as_deref().is_none_or(|s| s == namespace))
        else {
            return Vec::new();
        };
        store
            .state()
            .into_iter()
            .filter(|obj| obj.metadata.namespace.as_deref() == Some(namespace))
            .collect()
    }
}
