//! Test support shared by every integration test and benchmark: the real
//! control plane and Postgres that `hack/testenv up` started, with one
//! namespace and one database per test so tests run in parallel without
//! seeing each other; stand-ins for the services the operator talks to; the
//! operator and the CLI as processes; and builders and readers for the store.
//!
//! A crate of its own (`projectsync-test-support`, the `support`
//! dev-dependency), so the test binaries share one build of it.
//!
//! Nothing here skips: when the environment is missing or unreachable the
//! test panics with the command that fixes it.

pub mod access;
pub mod browser;
pub mod chart_install;
pub mod cli;
pub mod controlplane;
pub mod convergence;
pub mod embed_server;
pub mod env;
pub mod git_server;
pub mod github;
pub mod helm;
pub mod kube;
pub mod kubectl;
pub mod operator;
pub mod postgres;
pub mod promtool;
pub mod proxy;
pub mod psync;
pub mod repo;
pub mod ssh_server;
pub mod store;
pub mod tls;

pub use env::{projectsync_binary, repo_root, testenv};
pub use kube::{TestNamespace, ensure_crd, fresh_namespace, kube_client};
pub use kubectl::{KubectlOutput, kubectl};
pub use postgres::{TestDb, fresh_database};

/// A short random suffix for names that must be unique across parallel tests.
pub fn unique_suffix() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..10].to_string()
}
