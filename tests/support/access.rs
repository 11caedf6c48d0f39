//! Callers of the operator's HTTP API as Kubernetes identities: a
//! ServiceAccount in a test namespace, a TokenRequest token for it (created
//! through the API, as `kubectl create token` does), and optionally a Role
//! that grants `get` on ProjectSyncs. Does I/O against the testenv API server.

use std::time::{Duration, Instant};

use k8s_openapi::api::{
    authentication::v1::TokenRequest,
    authorization::v1::{ResourceAttributes, SubjectAccessReview},
    core::v1::ServiceAccount,
    rbac::v1::{Role, RoleBinding},
};
use kube::{Api, api::PostParams};
use serde_json::json;

use super::TestNamespace;

/// A ServiceAccount `name` in `ns` and a one-hour token for it.
pub async fn service_account_token(ns: &TestNamespace, name: &str) -> String {
    let accounts: Api<ServiceAccount> = Api::namespaced(ns.client.clone(), &ns.name);
    let account: ServiceAccount =
        serde_json::from_value(json!({ "metadata": { "name": name } })).expect("manifest");
    accounts
        .create(&PostParams::default(), &account)
        .await
        .expect("create ServiceAccount");
    let request: TokenRequest =
        serde_json::from_value(json!({ "spec": { "audiences": [], "expirationSeconds": 3600 } }))
            .expect("manifest");
    let issued = accounts
        .create_token_request(name, &PostParams::default(), &request)
        .await
        .expect("TokenRequest");
    issued.status.expect("token status").token
}

/// A Role in `ns` granting `get` on the ProjectSyncs `names` (all when
/// empty) to the ServiceAccount `account` of `account_namespace`; waits until
/// the authorizer agrees.
pub async fn grant_get(ns: &TestNamespace, account_namespace: &str, account: &str, names: &[&str]) {
    let role_name = format!("get-{account}");
    let mut rule = json!({ "apiGroups": ["projectsync.dev"], "resources": ["projectsyncs"], "verbs": ["get"] });
    if !names.is_empty() {
        rule["resourceNames"] = json!(names);
    }
    let role: Role = serde_json::from_value(json!({
        "metadata": { "name": role_name }, "rules": [rule],
    }))
    .expect("manifest");
    Api::<Role>::namespaced(ns.client.clone(), &ns.name)
        .create(&PostParams::default(), &role)
        .await
        .expect("create Role");
    let binding: RoleBinding = serde_json::from_value(json!({
        "metadata": { "name": role_name },
        "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": role_name },
        "subjects": [{ "kind": "ServiceAccount", "name": account, "namespace": account_namespace }],
    }))
    .expect("manifest");
    Api::<RoleBinding>::namespaced(ns.client.clone(), &ns.name)
        .create(&PostParams::default(), &binding)
        .await
        .expect("create RoleBinding");
    let user = format!("system:serviceaccount:{account_namespace}:{account}");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let review = SubjectAccessReview {
            spec: k8s_openapi::api::authorization::v1::SubjectAccessReviewSpec {
                user: Some(user.clone()),
                resource_attributes: Some(ResourceAttributes {
                    verb: Some("get".into()),
                    group: Some("projectsync.dev".into()),
                    resource: Some("projectsyncs".into()),
                    namespace: Some(ns.name.clone()),
                    name: names.first().map(|n| n.to_string()),
                    ..Default::default()
                }),
                ..Default::default()
            },
            ..Default::default()
        };
        let answer = Api::<SubjectAccessReview>::all(ns.client.clone())
            .create(&PostParams::default(), &review)
            .await
            .expect("SubjectAccessReview");
        if answer.status.is_some_and(|s| s.allowed) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the Role did not take effect within 10s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A Role `role` in `ns` granting `verbs` on every ProjectSync there to the
/// ServiceAccount `account` of `account_namespace`; waits until the
/// authorizer allows the first verb.
pub async fn grant_verbs(
    ns: &TestNamespace,
    account_namespace: &str,
    account: &str,
    role: &str,
    verbs: &[&str],
) {
    let rule =
        json!({ "apiGroups": ["projectsync.dev"], "resources": ["projectsyncs"], "verbs": verbs });
    let manifest: Role =
        serde_json::from_value(json!({ "metadata": { "name": role }, "rules": [rule] }))
            .expect("manifest");
    Api::<Role>::namespaced(ns.client.clone(), &ns.name)
        .create(&PostParams::default(), &manifest)
        .await
        .expect("create Role");
    let binding: RoleBinding = serde_json::from_value(json!({
        "metadata": { "name": role },
        "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": role },
        "subjects": [{ "kind": "ServiceAccount", "name": account, "namespace": account_namespace }],
    }))
    .expect("manifest");
    Api::<RoleBinding>::namespaced(ns.client.clone(), &ns.name)
        .create(&PostParams::default(), &binding)
        .await
        .expect("create RoleBinding");
    let user = format!("system:serviceaccount:{account_namespace}:{account}");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let review = SubjectAccessReview {
            spec: k8s_openapi::api::authorization::v1::SubjectAccessReviewSpec {
                user: Some(user.clone()),
                resource_attributes: Some(ResourceAttributes {
                    verb: verbs.first().map(|v| v.to_string()),
                    group: Some("projectsync.dev".into()),
                    resource: Some("projectsyncs".into()),
                    namespace: Some(ns.name.clone()),
                    ..Default::default()
                }),
                ..Default::default()
            },
            ..Default::default()
        };
        let answer = Api::<SubjectAccessReview>::all(ns.client.clone())
            .create(&PostParams::default(), &review)
            .await
            .expect("SubjectAccessReview");
        if answer.status.is_some_and(|s| s.allowed) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the Role did not take effect within 10s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
