//! The validate step: turns a `ProjectSync` spec into the typed settings a
//! run needs (interval as a `Duration`, `maxFileSize` in bytes, compiled
//! globs). Pure, no I/O. The API server already enforces the CRD's rules;
//! this catches what a schema cannot (globs that do not compile) and gives
//! the rest of the controller values it cannot misread.

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::{
    api::{ProjectSyncSpec, spec::MAX_FILE_SIZE_LIMIT},
    pipeline::filter::{GlobError, PathFilter},
    units::{parse_duration, parse_size},
};

/// A spec the controller cannot act on; the user must change it.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SpecError {
    #[error("spec.source must set exactly one of github or git")]
    NoSource,
    #[error("spec.interval {value:?} is not a duration such as 30s, 5m or 1h30m")]
    Interval { value: String },
    #[error("spec.timeout {value:?} is not a duration from 1s to 1h such as 30s or 2m")]
    Timeout { value: String },
    #[error("spec.runTimeout {value:?} is not a duration from 1s to 24h such as 10m or 1h")]
    RunTimeout { value: String },
    #[error(
        "spec.maxFileSize {value:?} is not a positive number of bytes or quantity such as 512Ki, at most 16Mi"
    )]
    MaxFileSize { value: String },
    #[error("spec.{0}")]
    Glob(#[from] GlobError),
    #[error(
        "spec.source.git.url {url:?} contains credentials; remove them from the URL and put them in a Secret named by spec.source.git.secretRef (username and password, or token), so they are not stored in status and Postgres"
    )]
    CredentialsInUrl { url: String },
}

/// The settings of a valid spec.
#[derive(Debug, Clone)]
pub struct ValidSpec {
    pub interval: Duration,
    /// Limit of each source request or git command.
    pub timeout: Duration,
    /// Limit of a whole run, as the spec asks (the operator caps it).
    pub run_timeout: Duration,
    pub max_file_size: u64,
    pub filter: PathFilter,
}

/// Validates `spec`.
pub fn validate(spec: &ProjectSyncSpec) -> Result<ValidSpec, SpecError> {
    if let Some(git) = &spec.source.git
        && has_credentials(&git.url)
    {
        return Err(SpecError::CredentialsInUrl {
            url: crate::source::git::redact_url(&git.url),
        });
    }
    Ok(ValidSpec {
        interval: parse_duration(&spec.interval).ok_or_else(|| SpecError::Interval {
            value: spec.interval.clone(),
        })?,
        timeout: validate_timeout(spec)?,
        run_timeout: parse_duration(&spec.run_timeout)
            .filter(|d| *d >= Duration::from_secs(1) && *d <= Duration::from_secs(86_400))
            .ok_or_else(|| SpecError::RunTimeout {
                value: spec.run_timeout.clone(),
            })?,
        max_file_size: parse_max_file_size(&spec.max_file_size).ok_or_else(|| {
            SpecError::MaxFileSize {
                value: match &spec.max_file_size {
                    IntOrString::Int(i) => i.to_string(),
                    IntOrString::String(s) => s.clone(),
                },
            }
        })?,
        filter: PathFilter::build(&spec.include, &spec.exclude)?,
    })
}

/// `maxFileSize` in bytes when it is positive and at most
/// [`MAX_FILE_SIZE_LIMIT`] (it sizes the buffer a blob is read into).
pub fn parse_max_file_size(value: &IntOrString) -> Option<u64> {
    parse_size(value).filter(|n| *n <= MAX_FILE_SIZE_LIMIT)
}

/// Whether a remote URL carries a secret: any userinfo in http(s) (a
/// token alone is a user name there), a password elsewhere (`ssh://git@`
/// names the account, not a secret). The CRD has the same rule.
fn has_credentials(url: &str) -> bool {
    let Some((scheme, rest)) = url.split_once("://") else {
        return false;
    };
    let authority = &rest[..rest.find('/').unwrap_or(rest.len())];
    let Some((userinfo, _)) = authority.rsplit_once('@') else {
        return false;
    };
    matches!(scheme.to_ascii_lowercase().as_str(), "http" | "https") || userinfo.contains(':')
}

/// `spec.timeout` as a `Duration` (the CRD bounds it to 1s..=1h; objects
/// stored before the field existed get the 60s default from the schema).
pub fn validate_timeout(spec: &ProjectSyncSpec) -> Result<Duration, SpecError> {
    parse_duration(&spec.timeout)
        .filter(|d| (Duration::from_secs(1)..=Duration::from_secs(3600)).contains(d))
        .ok_or_else(|| SpecError::Timeout {
            value: spec.timeout.clone(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_in_a_git_url_are_found_but_an_ssh_user_is_not_one() {
        for url in [
            "https://bot:s3cret@host/r.git",
            "https://ghp_token@host/r.git",
            "ssh://git:pw@host/r.git",
        ] {
            assert!(has_credentials(url), "{url}");
        }
        for url in [
            "https://host/r.git",
            "ssh://git@host/r.git",
            "git@host:o/r.git",
            "https://host/a@b",
        ] {
            assert!(!has_credentials(url), "{url}");
        }
    }

    #[test]
    fn a_bad_glob_is_reported_as_the_spec_field_that_holds_it() {
        let err = SpecError::from(PathFilter::build(&["src/[".into()], &[]).unwrap_err());
        assert!(
            err.to_string()
                .starts_with("spec.include[0] \"src/[\" is not a valid glob: "),
            "{err}"
        );
    }
}
