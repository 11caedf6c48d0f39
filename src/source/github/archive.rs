//! A commit's files in one download (I/O): `GET /repos/{o}/{r}/tarball/{sha}`
//! answers a redirect to the archive (on github.com, codeload), which is
//! read as it arrives and handed over as an [`Archive`]. Two requests
//! instead of one per file, and two of the rate limit instead of thousands.

use http::{StatusCode, header};
use tokio_util::io::{StreamReader, SyncIoBridge};

use super::client::Request;
use super::error::Missing;
use super::{GitHubError, GitHubRepo, JSON};
use crate::source::Archive;

pub(super) async fn fetch_archive(
    src: &GitHubRepo,
    commit: &str,
) -> Result<Option<Archive>, GitHubError> {
    src.require_object_id(commit)?;
    let path = format!("{}/tarball/{commit}", src.repo_path());
    let req = Request {
        endpoint: "tarball",
        path: &path,
        accept: JSON,
        if_none_match: None,
        body_limit: 64 * 1024,
    };
    let answer = src.client.get(req).await?;
    let redirected = matches!(
        answer.status,
        StatusCode::FOUND
            | StatusCode::MOVED_PERMANENTLY
            | StatusCode::SEE_OTHER
            | StatusCode::TEMPORARY_REDIRECT
    );
    if !redirected {
        return Err(src.error_for("tarball", &answer, Missing::Commit(commit)));
    }
    let Some(location) = answer.header(header::LOCATION) else {
        return Err(GitHubError::InvalidResponse {
            repo: src.repo(),
            endpoint: "tarball",
            detail: format!("a {} without a Location header", answer.status),
        });
    };
    // The archive URL carries its own authorization (a token parameter for
    // private repositories); the API credentials are not sent along to
    // another host.
    let body = match src
        .client
        .get_streaming("archive", location, "application/x-gzip")
        .await?
    {
        Ok(body) => body,
        Err(answer) => return Err(src.error_for("archive", &answer, Missing::Commit(commit))),
    };
    Ok(Some(Archive::from_gzip(SyncIoBridge::new(
        StreamReader::new(body),
    ))))
}
