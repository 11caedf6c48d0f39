//! Which paths of a tree are part of the mirror: the `include` / `exclude`
//! globs compiled once and asked per path by the scan. Pure, no I/O.

use globset::{GlobSet, GlobSetBuilder};

/// A glob that does not compile, with where it was given.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[error("{field}[{index}] {glob:?} is not a valid glob: {message}")]
pub struct GlobError {
    /// `include` or `exclude`.
    pub field: &'static str,
    pub index: usize,
    pub glob: String,
    pub message: String,
}

/// Path filters from `include` / `exclude` globs.
#[derive(Debug, Clone)]
pub struct PathFilter {
    include: Option<GlobSet>,
    exclude: Option<GlobSet>,
}

impl PathFilter {
    /// Compiles the globs (`**` spans directories, `*` does not cross `/`).
    pub fn build(include: &[String], exclude: &[String]) -> Result<Self, GlobError> {
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

fn build_globset(field: &'static str, globs: &[String]) -> Result<Option<GlobSet>, GlobError> {
    if globs.is_empty() {
        return Ok(None);
    }
    let mut builder = GlobSetBuilder::new();
    for (index, glob) in globs.iter().enumerate() {
        let compiled = globset::GlobBuilder::new(glob)
            .literal_separator(true)
            .build()
            .map_err(|e| GlobError {
                field,
                index,
                glob: glob.clone(),
                message: e.kind().to_string(),
            })?;
        builder.add(compiled);
    }
    let set = builder.build().map_err(|e| GlobError {
        field,
        index: 0,
        glob: globs.join(","),
        message: e.to_string(),
    })?;
    Ok(Some(set))
}

#[cfg(test)]
mod tests {
    use super::*;

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
                GlobError {
                    field: "include",
                    index: 0,
                    ..
                }
            ),
            "{err}"
        );
    }
}
