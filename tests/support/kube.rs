//! The real kube-apiserver from `hack/testenv`: an admin client, one namespace
//! per test, and the ProjectSync CRD installed and Established. Does I/O.

use std::time::Duration;

use k8s_openapi::{
    api::core::v1::{Namespace, Secret},
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
};
use kube::{
    Api, Client, Config, ResourceExt,
    api::{Patch, PatchParams, PostParams},
    config::{KubeConfigOptions, Kubeconfig},
    runtime::{conditions, wait::await_condition},
};
use tokio::sync::OnceCell;

use super::{testenv, unique_suffix};

/// A client with the admin identity of the local control plane.
pub async fn kube_client() -> Client {
    let path = &testenv().kubeconfig;
    let kubeconfig = Kubeconfig::read_from(path)
        .unwrap_or_else(|e| panic!("cannot read kubeconfig {}: {e}", path.display()));
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .unwrap_or_else(|e| panic!("invalid kubeconfig {}: {e}", path.display()));
    let client = Client::try_from(config).expect("build kube client");
    client.apiserver_version().await.unwrap_or_else(|e| {
        panic!("the testenv kube-apiserver does not answer: {e}; run `hack/testenv up`")
    });
    client
}

/// A namespace that exists for one test.
pub struct TestNamespace {
    pub client: Client,
    pub name: String,
}

impl TestNamespace {
    /// Creates or replaces Secret `name` with `string_data` (server-side apply).
    pub async fn apply_secret(&self, name: &str, string_data: serde_json::Value) {
        let secret: Secret = serde_json::from_value(serde_json::json!({
            "apiVersion": "v1", "kind": "Secret", "metadata": { "name": name }, "stringData": string_data,
        }))
        .expect("secret manifest");
        Api::<Secret>::namespaced(self.client.clone(), &self.name)
            .patch(
                name,
                &PatchParams::apply("test").force(),
                &Patch::Apply(&secret),
            )
            .await
            .expect("apply secret");
    }
}

/// Creates a namespace named after `label`, with the CRD installed.
pub async fn fresh_namespace(label: &str) -> TestNamespace {
    let client = kube_client().await;
    ensure_crd(&client).await;
    let name = format!("{}-{}", dns_label(label), unique_suffix());
    let namespace: Namespace = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": { "name": name, "labels": { "projectsync.dev/test": "true" } },
    }))
    .expect("namespace manifest");
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &namespace)
        .await
        .unwrap_or_else(|e| panic!("cannot create namespace {name}: {e}"));
    TestNamespace { client, name }
}

/// Applies the CRD generated from the Rust types (server-side apply, once per
/// test binary) and waits until the API server reports it Established.
pub async fn ensure_crd(client: &Client) {
    static INSTALLED: OnceCell<()> = OnceCell::const_new();
    INSTALLED
        .get_or_init(|| async {
            let crd = projectsync::api::crd();
            let name = crd.name_any();
            let crds = Api::<CustomResourceDefinition>::all(client.clone());
            crds.patch(
                &name,
                &PatchParams::apply("projectsync-tests").force(),
                &Patch::Apply(&crd),
            )
            .await
            .unwrap_or_else(|e| panic!("the API server refused the CRD {name}: {e}"));
            let established = await_condition(crds, &name, conditions::is_crd_established());
            tokio::time::timeout(Duration::from_secs(30), established)
                .await
                .unwrap_or_else(|_| panic!("CRD {name} not Established within 30s"))
                .expect("watch CRD");
        })
        .await;
}

fn dns_label(label: &str) -> String {
    let label: String = label
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .take(40)
        .collect();
    label.trim_matches('-').to_string()
}
