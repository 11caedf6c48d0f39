//! Rebuilds the crate when a migration changes: `sqlx::migrate!` embeds
//! `migrations/` at compile time, and on stable Rust cargo does not notice an
//! edited migration by itself.
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
