//! One fresh Postgres database per test, created on the testenv server (they
//! go away with `hack/testenv down`). Does I/O against the real Postgres.

use sqlx::{Connection, PgConnection, PgPool, postgres::PgPoolOptions};

use super::{testenv, unique_suffix};

/// A database that exists for one test.
pub struct TestDb {
    /// A pool connected to the test's own database.
    pub pool: PgPool,
    /// The URL of the test's own database.
    pub url: String,
    /// The database name.
    pub name: String,
}

/// Creates an empty database named after `label` and connects a pool to it.
/// Panics (never skips) when Postgres cannot be reached.
pub async fn fresh_database(label: &str) -> TestDb {
    let admin_url = &testenv().database_url;
    let name = format!("t_{}_{}", sanitize(label), unique_suffix());
    let mut admin = PgConnection::connect(admin_url).await.unwrap_or_else(|e| {
        panic!("cannot connect to the testenv Postgres at {admin_url}: {e}; run `hack/testenv up`")
    });
    sqlx::query(&format!("CREATE DATABASE \"{name}\""))
        .execute(&mut admin)
        .await
        .unwrap_or_else(|e| panic!("cannot create test database {name}: {e}"));
    let url = database_url_for(admin_url, &name);
    let pool = PgPoolOptions::new()
        .max_connections(8)
        .connect(&url)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to test database {name}: {e}"));
    TestDb { pool, url, name }
}

/// The admin URL with its database path replaced by `name`.
pub fn database_url_for(admin_url: &str, name: &str) -> String {
    let (base, query) = match admin_url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (admin_url, None),
    };
    let scheme_end = base.find("://").map(|i| i + 3).unwrap_or(0);
    let base = match base[scheme_end..].find('/') {
        Some(slash) => &base[..scheme_end + slash],
        None => base,
    };
    match query {
        Some(query) => format!("{base}/{name}?{query}"),
        None => format!("{base}/{name}"),
    }
}

fn sanitize(label: &str) -> String {
    label
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .take(30)
        .collect()
}
