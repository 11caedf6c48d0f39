//! Where the test environment lives: `KUBECONFIG` and `DATABASE_URL` from the
//! process environment, or else from `target/testenv/env.sh` as written by
//! `hack/testenv up`; the checkout's root and the `projectsync` binary under
//! test. Reads a file; no network.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    sync::OnceLock,
};

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
    repo_root().join("target/testenv/env.sh")
}

/// The root of this checkout (where `Cargo.toml`, `hack/` and `charts/`
/// are): this crate's manifest is `tests/support/Cargo.toml`.
pub fn repo_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("tests/support sits two levels below the checkout's root")
}

/// The `projectsync` binary cargo built for the running test or benchmark.
///
/// `env!("CARGO_BIN_EXE_projectsync")` exists only in the crate that owns the
/// binary's tests, not in this library, so the path is found at run time:
/// from the same variable when cargo exports it to the test process, or else
/// beside the `deps/` directory that holds the test executable (cargo builds
/// the package's binaries before its integration tests and benchmarks, into
/// that profile's directory).
pub fn projectsync_binary() -> &'static Path {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(|| {
        if let Some(path) = std::env::var_os("CARGO_BIN_EXE_projectsync") {
            return PathBuf::from(path);
        }
        let exe = std::env::current_exe().expect("the test executable's path");
        let profile_dir = exe
            .parent()
            .filter(|dir| dir.ends_with("deps"))
            .and_then(Path::parent)
            .unwrap_or_else(|| panic!("{} is not in a cargo deps/ directory", exe.display()));
        let binary = profile_dir.join(format!("projectsync{}", std::env::consts::EXE_SUFFIX));
        assert!(
            binary.is_file(),
            "{} is missing: run the tests through cargo, which builds it",
            binary.display()
        );
        binary
    })
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
