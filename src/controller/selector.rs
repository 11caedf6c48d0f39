//! `--watch-label-selector`: static shards, as Flux does them, so several
//! installs split the resources (or a canary install takes a few). The
//! selector is checked once at start-up by asking the API server for one
//! resource with it: a typo stops the operator with the API server's own
//! message instead of a watch that fails forever. I/O against the API server.

use kube::{Api, Client, api::ListParams};

use crate::api::ProjectSync;

/// Longest selector accepted (the API server's own limit is larger; a
/// selector longer than this is a mistake, not a shard).
pub const MAX_SELECTOR_LEN: usize = 4096;

/// Why a selector cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SelectorError {
    #[error(
        "--watch-label-selector is {len} characters long; at most {MAX_SELECTOR_LEN} are accepted"
    )]
    TooLong { len: usize },
    #[error("the API server refused --watch-label-selector {selector:?}: {source}")]
    Refused {
        selector: String,
        #[source]
        source: kube::Error,
    },
}

/// The selector to watch with: `None` for none (or only blanks), checked
/// against the API server in the first watched scope.
pub async fn check_label_selector(
    client: &Client,
    namespaces: &[String],
    selector: Option<&str>,
) -> Result<Option<String>, SelectorError> {
    let Some(selector) = selector.map(str::trim).filter(|s| !s.is_empty()) else {
        return Ok(None);
    };
    if selector.len() > MAX_SELECTOR_LEN {
        return Err(SelectorError::TooLong {
            len: selector.len(),
        });
    }
    let api: Api<ProjectSync> = match namespaces.first() {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    api.list_metadata(&ListParams::default().labels(selector).limit(1))
        .await
        .map_err(|source| SelectorError::Refused {
            selector: selector.to_string(),
            source,
        })?;
    Ok(Some(selector.to_string()))
}
