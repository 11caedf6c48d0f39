//! Where the test environment lives: `KUBECONFIG` and `DATABASE_URL` from the
//! process environment, or else from `target/testenv/env.sh` as written by
//! `hack/testenv up`. Reads a file; no network.

use std::{collections::BTreeMap, path::PathBuf, sync::OnceLock};

/// The endpoints of the local control plane and Postgres.
#[derive(Debug, Clone)]
pub struct TestEnv {
    /// Path of the admin kubeconfig for the local kube-apiserver.
    pub kubeconfig: PathBuf,
    /// Superuser URL of the maintenance database of the local Postgres.
    pub database_url: String,
    /// The kubectl of the same release as the API server.
    pub kubectl: PathBuf,
}

/// The environment, read once per test binary. Panics with the fix when
/// neither the variables nor `target/testenv/env.sh` are there.
pub fn testenv() -> &'static TestEnv {
    static ENV: OnceLock<TestEnv> = OnceLock::new();
    ENV.get_or_init(|| {
        let file = env_file();
        let from_file = std::fs::read_to_string(&file)
            .map(|text| parse_env_sh(&text))
            .unwrap_or_default();
        let lookup = |key: &str| {
            std::env::var(key)
                .ok()
                .filter(|v| !v.is_empty())
                .or_else(|| from_file.get(key).cloned())
        };
        let get = |key: &str| {
            lookup(key).unwrap_or_else(|| {
                panic!(
                    "{key} is not set and {} does not define it: run `hack/testenv up` first \
                         (integration tests need the real control plane and Postgres)",
                    file.display()
                )
            })
        };
        TestEnv {
            kubeconfig: PathBuf::from(get("KUBECONFIG")),
            database_url: get("DATABASE_URL"),
            kubectl: PathBuf::from(lookup("KUBECTL").unwrap_or_else(|| "kubectl".to_string())),
        }
    })
}

/// `target/testenv/env.sh` of this checkout.
pub fn env_file() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/testenv/env.sh")
}

/// Reads `export KEY='value'` lines (the only form `hack/testenv` writes).
fn parse_env_sh(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|line| line.trim().strip_prefix("export "))
        .filter_map(|assignment| assignment.split_once('='))
        .map(|(key, value)| {
            let value = value.trim();
            let value = value
                .strip_prefix('\'')
                .and_then(|v| v.strip_suffix('\''))
                .unwrap_or(value);
            (key.trim().to_string(), value.to_string())
        })
        .collect()
}
