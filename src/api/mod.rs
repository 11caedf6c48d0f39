//! The `ProjectSync` custom resource (`projectsync.dev/v1alpha1`): spec,
//! status, conditions and the CRD generated from them. Pure types, no I/O.
//!
//! The CRD is generated from these types (`projectsync crd`); `crds/` holds
//! the committed copy, and a test fails when the two drift.

pub mod conditions;
pub mod spec;
pub mod status;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

pub use spec::{
    DeletionPolicy, EmbeddingProvider, EmbeddingReuseScope, EmbeddingSpec, GitHubSource, GitSource,
    LocalSecretRef, ProjectSync, ProjectSyncSpec, RestoreSpec, SecretKeyRef, SourceSpec,
    WebhookSpec,
};
pub use status::{
    FileCounts, ObservedInputs, Phase, Progress, ProjectSyncStatus, StageDurations, SyncSummary,
};

/// The annotation that requests a sync now; its value (any string, usually a
/// timestamp) is echoed in `status.lastHandledRequestedAt` once handled.
pub const REQUESTED_AT_ANNOTATION: &str = "projectsync.dev/requested-at";

/// The annotation that forces a full re-import: every file fetched and
/// processed again, whatever the recorded inputs say. Its value (any string)
/// is echoed in `status.lastHandledReindexAt` once handled.
pub const REINDEX_ANNOTATION: &str = "projectsync.dev/reindex";

/// The CustomResourceDefinition for `ProjectSync`.
pub fn crd() -> CustomResourceDefinition {
    ProjectSync::crd()
}

/// The CRD as the YAML document committed under `crds/`.
pub fn crd_yaml() -> Result<String, serde_yaml::Error> {
    serde_yaml::to_string(&crd()).map(|yaml| format!("---\n{yaml}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn committed_crd_matches_the_rust_types() {
        let committed = include_str!("../../crds/projectsync.dev_projectsyncs.yaml");
        assert_eq!(
            committed,
            crd_yaml().expect("serialize CRD"),
            "crds/projectsync.dev_projectsyncs.yaml is stale: run `cargo run -- crd > crds/projectsync.dev_projectsyncs.yaml`"
        );
    }
}
