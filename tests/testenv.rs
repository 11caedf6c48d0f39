//! The harness itself: the control plane and Postgres that `hack/testenv up`
//! started answer, and each test gets its own database and namespace.

use support::{fresh_database, fresh_namespace, kube_client};

#[tokio::test]
async fn postgres_accepts_a_connection_and_a_query() {
    let db = fresh_database("harness").await;
    let (answer, version): (i32, String) = sqlx::query_as("SELECT 40 + 2, version()")
        .fetch_one(&db.pool)
        .await
        .expect("query runs");
    assert_eq!(answer, 42);
    assert!(
        version.starts_with("PostgreSQL 15"),
        "unexpected server: {version}"
    );
    let current: String = sqlx::query_scalar("SELECT current_database()")
        .fetch_one(&db.pool)
        .await
        .expect("query runs");
    assert_eq!(current, db.name);
}

#[tokio::test]
async fn each_test_database_is_isolated() {
    let first = fresh_database("isolated").await;
    let second = fresh_database("isolated").await;
    assert_ne!(first.name, second.name);
    sqlx::query("CREATE TABLE only_here (id int)")
        .execute(&first.pool)
        .await
        .expect("create table");
    let seen: Option<String> = sqlx::query_scalar("SELECT to_regclass('only_here')::text")
        .fetch_one(&second.pool)
        .await
        .expect("query runs");
    assert_eq!(
        seen, None,
        "a table of one test database is visible in another"
    );
}

#[tokio::test]
async fn the_api_server_is_the_pinned_upstream_release_with_rbac_on() {
    let client = kube_client().await;
    let version = client.apiserver_version().await.expect("version");
    assert_eq!(
        (version.major.as_str(), version.minor.as_str()),
        ("1", "34")
    );
    let ns = fresh_namespace("harness").await;
    // RBAC is on: an identity without bindings is refused, the admin is not.
    let denied = support::kubectl(
        &[
            "auth",
            "can-i",
            "list",
            "secrets",
            "-n",
            &ns.name,
            "--as",
            "system:serviceaccount:default:nobody",
        ],
        "",
    );
    assert_eq!(denied.stdout.trim(), "no", "{}", denied.stderr);
    let admin = support::kubectl(&["auth", "can-i", "list", "secrets", "-n", &ns.name], "");
    assert_eq!(admin.stdout.trim(), "yes", "{}", admin.stderr);
}
