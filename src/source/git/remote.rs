//! What the git source accepts before anything reaches a command line
//! (pure): remote URLs, classified by transport and redacted for messages,
//! and branch names.

use super::error::GitError;
use crate::source::Credentials;

/// The transport a remote URL uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    Https,
    Http,
    Ssh,
    Git,
    File,
}

/// Classifies a remote URL, refusing remote helpers (`ext::`, `fd::`),
/// option-like URLs and, unless allowed, local paths and `file://`.
pub fn classify_url(url: &str, allow_file_urls: bool) -> Result<Transport, GitError> {
    let unsupported = |detail| {
        Err(GitError::UnsupportedUrl {
            url: redact_url(url),
            detail,
        })
    };
    if url.is_empty() || url.starts_with('-') || url.chars().any(|c| c.is_control()) {
        return unsupported("empty, starts with '-' or contains control characters");
    }
    let transport = if let Some((scheme, _)) = url.split_once("://") {
        match scheme.to_ascii_lowercase().as_str() {
            "https" => Transport::Https,
            "http" => Transport::Http,
            "ssh" | "git+ssh" | "ssh+git" => Transport::Ssh,
            "git" => Transport::Git,
            "file" => Transport::File,
            _ => return unsupported("unknown scheme (use https, http, ssh, git or file)"),
        }
    } else if url.contains("::") {
        return unsupported("remote helpers (transport::address) are not allowed");
    } else if url.starts_with('/') || url.starts_with('.') || url.starts_with('~') {
        Transport::File
    } else if let Some(colon) = url.find(':') {
        // scp-like `user@host:path`; git treats it as a path when a slash
        // comes before the colon.
        if url[..colon].contains('/') {
            Transport::File
        } else {
            Transport::Ssh
        }
    } else {
        Transport::File
    };
    if transport == Transport::File && !allow_file_urls {
        return Err(GitError::FileUrlNotAllowed {
            url: url.to_string(),
        });
    }
    Ok(transport)
}

/// The URL with any `user:password@` removed, for logs and errors.
pub fn redact_url(url: &str) -> String {
    if let Some((scheme, rest)) = url.split_once("://") {
        let host_end = rest.find('/').unwrap_or(rest.len());
        if let Some(at) = rest[..host_end].rfind('@') {
            return format!("{scheme}://***@{}", &rest[at + 1..]);
        }
    }
    url.to_string()
}

/// Splits `user:password@` out of an http(s) URL.
pub(super) fn split_userinfo(url: &str) -> (String, Option<Credentials>) {
    let Some((scheme, rest)) = url.split_once("://") else {
        return (url.to_string(), None);
    };
    if !matches!(scheme.to_ascii_lowercase().as_str(), "http" | "https") {
        return (url.to_string(), None);
    }
    let host_end = rest.find('/').unwrap_or(rest.len());
    let Some(at) = rest[..host_end].rfind('@') else {
        return (url.to_string(), None);
    };
    let (username, password) = rest[..at].split_once(':').unwrap_or((&rest[..at], ""));
    let credentials = match (username, password) {
        ("", "") => None,
        ("", token) | (token, "") => Some(Credentials::Token(token.to_string())),
        (user, pass) => Some(Credentials::Basic {
            username: user.to_string(),
            password: pass.to_string(),
        }),
    };
    (format!("{scheme}://{}", &rest[at + 1..]), credentials)
}

/// Git's branch name rules (`git check-ref-format --branch`), checked
/// before a name reaches a command line.
pub fn is_valid_branch_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with(['-', '/', '.'])
        && !name.ends_with(['/', '.'])
        && !name.ends_with(".lock")
        && !name.contains("..")
        && !name.contains("@{")
        && !name.contains("//")
        && !name.contains("/.")
        && name != "@"
        && !name
            .chars()
            .any(|c| c.is_control() || matches!(c, ' ' | '~' | '^' | ':' | '?' | '*' | '[' | '\\'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remote_urls_are_classified_by_transport() {
        assert_eq!(
            classify_url("https://github.com/o/r.git", false).unwrap(),
            Transport::Https
        );
        assert_eq!(
            classify_url("git@github.com:o/r.git", false).unwrap(),
            Transport::Ssh
        );
        assert_eq!(
            classify_url("ssh://git@host:22/r.git", false).unwrap(),
            Transport::Ssh
        );
        assert_eq!(
            classify_url("git://127.0.0.1:9418/r.git", false).unwrap(),
            Transport::Git
        );
        assert_eq!(
            classify_url("file:///srv/r.git", true).unwrap(),
            Transport::File
        );
        assert_eq!(classify_url("/srv/r.git", true).unwrap(), Transport::File);
    }

    #[test]
    fn local_paths_and_file_urls_are_refused_without_the_flag() {
        for url in ["file:///etc", "/etc", "./r", "../r", "dir/sub:x", "r.git"] {
            let err = classify_url(url, false).unwrap_err();
            assert_eq!(err.reason(), "FileUrlNotAllowed", "{url}");
        }
    }

    #[test]
    fn remote_helpers_options_and_unknown_schemes_are_refused() {
        for url in [
            "ext::sh -c touch% /tmp/pwned",
            "fd::3",
            "-uhttps://x",
            "ftp://x/r.git",
            "",
            "https://x/\nr",
        ] {
            assert_eq!(
                classify_url(url, true).unwrap_err().reason(),
                "UnsupportedUrl",
                "{url:?}"
            );
        }
    }

    #[test]
    fn userinfo_is_redacted_from_urls() {
        assert_eq!(
            redact_url("https://bot:s3cret@host/r.git"),
            "https://***@host/r.git"
        );
        assert_eq!(redact_url("https://host/r.git"), "https://host/r.git");
    }

    #[test]
    fn branch_names_follow_gits_rules() {
        for ok in [
            "main",
            "feature/x",
            "release-1.2",
            "feature/#123-fragment-url",
            "ünï",
        ] {
            assert!(is_valid_branch_name(ok), "{ok}");
        }
        for bad in [
            "",
            "-x",
            "--upload-pack=sh",
            "a..b",
            "a b",
            "a:b",
            "x.lock",
            "a/",
            "/a",
            "a//b",
            "a/.b",
            "@",
            "a@{1}",
            "a\nb",
        ] {
            assert!(!is_valid_branch_name(bad), "{bad:?}");
        }
    }
}
