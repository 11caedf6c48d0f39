//! What verifying a delivery needs, cached: the value of the Secret key that
//! `spec.webhook.secretRef` names, per resource (`namespace/name`), read
//! with a `get` of that one Secret and kept for [`SECRET_TTL`]. A missing
//! Secret or key is cached too, so a flood of deliveries costs at most one
//! read per resource per TTL, and a delivery for a resource without a
//! webhook costs none. Network I/O on a miss.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use k8s_openapi::api::core::v1::Secret;
use kube::{Api, Client};

use crate::{api::ProjectSync, http::cache::TtlCache, metrics::Metrics};

/// How long a read Secret value (or its absence) is reused: a rotated
/// secret takes effect within this time.
pub const SECRET_TTL: Duration = Duration::from_secs(30);
/// Resources whose secret is cached at most.
const SECRET_CAPACITY: usize = 4096;

/// Which Secret key a resource's webhook uses, and its value when read.
#[derive(Clone, PartialEq, Eq)]
struct Cached {
    secret: String,
    key: String,
    value: Option<Arc<[u8]>>,
}

/// The per-resource cache of webhook secrets. Cheap to clone.
#[derive(Clone)]
pub struct SecretCache {
    client: Client,
    metrics: Metrics,
    entries: Arc<Mutex<TtlCache<(String, String), Cached>>>,
}

impl SecretCache {
    pub fn new(client: Client, metrics: Metrics) -> Self {
        SecretCache {
            client,
            metrics,
            entries: Arc::new(Mutex::new(TtlCache::new(SECRET_TTL, SECRET_CAPACITY))),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, TtlCache<(String, String), Cached>> {
        self.entries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The webhook secret of `obj`, or `None` when it has no webhook or its
    /// Secret or key is missing (or cannot be read).
    pub async fn fetch_secret(&self, obj: &ProjectSync) -> Option<Arc<[u8]>> {
        let secret_ref = &obj.spec.webhook.as_ref()?.secret_ref;
        let namespace = obj.metadata.namespace.clone().unwrap_or_default();
        let name = obj.metadata.name.clone().unwrap_or_default();
        let key = (namespace.clone(), name.clone());
        if let Some(cached) = self.lock().get(&key, Instant::now())
            && cached.secret == secret_ref.name
            && cached.key == secret_ref.key
        {
            return cached.value;
        }
        self.metrics.webhook_secret_lookups.inc();
        let secrets: Api<Secret> = Api::namespaced(self.client.clone(), &namespace);
        let value = match secrets.get_opt(&secret_ref.name).await {
            Ok(secret) => secret
                .and_then(|s| s.data)
                .and_then(|mut data| data.remove(&secret_ref.key))
                .map(|v| v.0)
                .filter(|v| !v.is_empty())
                .map(Arc::<[u8]>::from),
            Err(error) => {
                // Not cached: the next delivery tries again.
                tracing::warn!(resource = %format!("{namespace}/{name}"), secret = %secret_ref.name, %error, "cannot read the webhook secret");
                return None;
            }
        };
        if value.is_none() {
            tracing::warn!(resource = %format!("{namespace}/{name}"), secret = %secret_ref.name, key = %secret_ref.key, "the webhook secret or its key is missing");
        }
        self.lock().insert(
            key,
            Cached {
                secret: secret_ref.name.clone(),
                key: secret_ref.key.clone(),
                value: value.clone(),
            },
            Instant::now(),
        );
        value
    }
}
