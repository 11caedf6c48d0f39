//! The validate step: turns a `ProjectSync` spec into the typed settings a
//! run needs (interval as a `Duration`, `maxFileSize` in bytes, compiled
//! globs). Pure, no I/O. The API server already enforces the CRD's rules;
//! this catches what a schema cannot (globs that do not compile) and gives
//! the rest of the controller values it cannot misread.

use std::time::Duration;

use globset::{GlobSet, GlobSetBuilder};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::api::ProjectSyncSpec;

/// A spec the controller cannot act on; the user must change it.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SpecError {
    #[error("spec.source must set exactly one of github or git")]
    NoSource,
    #[error("spec.interval {value:?} is not a duration such as 30s, 5m or 1h30m")]
    Interval { value: String },
    #[error("spec.timeout {value:?} is not a duration from 1s to 1h such as 30s or 2m")]
    Timeout { value: String },
    #[error(
        "spec.maxFileSize {value:?} is not a positive number of bytes or quantity such as 512Ki"
    )]
    MaxFileSize { value: String },
    #[error("spec.{field}[{index}] {glob:?} is not a valid glob: {message}")]
    Glob {
        field: &'static str,
        index: usize,
        glob: String,
        message: String,
    },
}

/// Path filters from `spec.include` / `spec.exclude`.
#[derive(Debug, Clone)]
pub struct PathFilter {
    include: Option<GlobSet>,
    exclude: Option<GlobSet>,
}

impl PathFilter {
    /// Compiles the globs (`**` spans directories, `*` does not cross `/`).
    pub fn build(include: &[String], exclude: &[String]) -> Result<Self, SpecError> {
        Ok(PathFilter {
            include: build_globset("include", include)?,
            exclude: build_globset("exclude", exclude)?,
        })
    }

    /// A filter that keeps every path.
    pub fn all() -> Self {
        PathFilter {
            include: None,
            exclude: None,
        }
    }

    /// Whether `path` is part of the mirror: included (or no include list)
    /// and not excluded.
    pub fn keeps(&self, path: &str) -> bool {
        self.include.as_ref().is_none_or(|set| set.is_match(path))
            && !self.exclude.as_ref().is_some_and(|set| set.is_match(path))
    }
}

fn build_globset(field: &'static str, globs: &[String]) -> Result<Option<GlobSet>, SpecError> {
    if globs.is_empty() {
        return Ok(None);
    }
    let mut builder = GlobSetBuilder::new();
    for (index, glob) in globs.iter().enumerate() {
        let compiled = globset::GlobBuilder::new(glob)
            .literal_separator(true)
            .build()
            .map_err(|e| SpecError::Glob {
                field,
                index,
                glob: glob.clone(),
                message: e.kind().to_string(),
            })?;
        builder.add(compiled);
    }
    let set = builder.build().map_err(|e| SpecError::Glob {
        field,
        index: 0,
        glob: globs.join(","),
        message: e.to_string(),
    })?;
    Ok(Some(set))
}

/// The settings of a valid spec.
#[derive(Debug, Clone)]
pub struct ValidSpec {
    pub interval: Duration,
    /// Limit of each source request or git command.
    pub timeout: Duration,
    pub max_file_size: u64,
    pub filter: PathFilter,
}

/// Validates `spec`.
pub fn validate(spec: &ProjectSyncSpec) -> Result<ValidSpec, SpecError> {
    Ok(ValidSpec {
        interval: parse_duration(&spec.interval).ok_or_else(|| SpecError::Interval {
            value: spec.interval.clone(),
        })?,
        timeout: validate_timeout(spec)?,
        max_file_size: parse_size(&spec.max_file_size).ok_or_else(|| SpecError::MaxFileSize {
            value: match &spec.max_file_size {
                IntOrString::Int(i) => i.to_string(),
                IntOrString::String(s) => s.clone(),
            },
        })?,
        filter: PathFilter::build(&spec.include, &spec.exclude)?,
    })
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

/// Parses a Go-style duration (`30s`, `5m`, `1h30m`, `1.5h`, `500ms`).
pub fn parse_duration(text: &str) -> Option<Duration> {
    let mut rest = text.trim();
    if rest.is_empty() {
        return None;
    }
    let mut total = 0f64;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let number: f64 = rest[..number_len].parse().ok()?;
        rest = &rest[number_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let seconds = match &rest[..unit_len] {
            "ms" => 0.001,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total += number * seconds;
    }
    Some(Duration::from_secs_f64(total))
}

/// Parses `maxFileSize`: a number of bytes, or a Kubernetes quantity such as
/// `512Ki`, `2Mi`, `1G` or `1e6`. `None` unless the result is positive.
pub fn parse_size(value: &IntOrString) -> Option<u64> {
    let bytes = match value {
        IntOrString::Int(i) => u64::try_from(*i).ok()?,
        IntOrString::String(s) => parse_quantity(s)?,
    };
    (bytes > 0).then_some(bytes)
}

fn parse_quantity(text: &str) -> Option<u64> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+'))
        .unwrap_or(text.len());
    let (number, suffix) = text.split_at(split);
    let number: f64 = number.parse().ok()?;
    let factor: f64 = match suffix {
        "" => 1.0,
        "Ki" => 1024.0,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        exponent if exponent.starts_with(['e', 'E']) => 10f64.powi(exponent[1..].parse().ok()?),
        _ => return None,
    };
    let bytes = (number * factor).ceil();
    (bytes.is_finite() && bytes >= 0.0 && bytes < u64::MAX as f64).then_some(bytes as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_like_go() {
        assert_eq!(parse_duration("30s"), Some(Duration::from_secs(30)));
        assert_eq!(parse_duration("5m"), Some(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h30m"), Some(Duration::from_secs(5400)));
        assert_eq!(parse_duration("1.5h"), Some(Duration::from_secs(5400)));
        assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("soon"), None);
        assert_eq!(parse_duration("5"), None);
        assert_eq!(parse_duration(""), None);
    }

    #[test]
    fn sizes_parse_as_bytes_or_quantities() {
        let s = |v: &str| parse_size(&IntOrString::String(v.to_string()));
        assert_eq!(parse_size(&IntOrString::Int(4096)), Some(4096));
        assert_eq!(s("1Mi"), Some(1 << 20));
        assert_eq!(s("512Ki"), Some(512 << 10));
        assert_eq!(s("2M"), Some(2_000_000));
        assert_eq!(s("1e6"), Some(1_000_000));
        assert_eq!(s("1.5Ki"), Some(1536));
        assert_eq!(parse_size(&IntOrString::Int(0)), None);
        assert_eq!(parse_size(&IntOrString::Int(-1)), None);
        assert_eq!(s("big"), None);
    }

    #[test]
    fn exclude_wins_over_include_and_star_stays_in_its_directory() {
        let filter = PathFilter::build(
            &["src/**/*.rs".into(), "*.md".into()],
            &["src/generated/**".into()],
        )
        .unwrap();
        assert!(filter.keeps("src/lib.rs"));
        assert!(filter.keeps("src/a/b/c.rs"));
        assert!(filter.keeps("README.md"));
        assert!(
            !filter.keeps("docs/guide.md"),
            "* must not cross directories"
        );
        assert!(!filter.keeps("src/generated/x.rs"));
        assert!(!filter.keeps("build.rs"));
        assert!(PathFilter::all().keeps("anything/at/all"));
    }

    #[test]
    fn a_bad_glob_names_the_field_and_index() {
        let err = PathFilter::build(&["src/[".into()], &[]).unwrap_err();
        assert!(
            matches!(
                err,
                SpecError::Glob {
                    field: "include",
                    index: 0,
                    ..
                }
            ),
            "{err}"
        );
    }
}
