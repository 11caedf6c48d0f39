//! A long-lived `git cat-file --batch-command` for one cache repository
//! (I/O): blobs are read without a process per object, and `info` gives a
//! blob's size before `contents` reads it, so an oversized blob is never
//! loaded. The operator keeps these in [`super::pool`], a few dozen for
//! all resources.

use std::io;
use std::process::Stdio;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout};

use super::command::GitRunner;
use super::error::GitError;
use super::pool::Helper;

/// What reading one object gave.
pub(crate) enum BlobRead {
    Blob(Bytes),
    Missing,
    NotABlob(String),
    TooLarge(u64),
}

#[derive(Debug)]
pub(crate) struct CatFile {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl CatFile {
    pub fn spawn(runner: &GitRunner) -> Result<Self, GitError> {
        let mut cmd = runner.command();
        cmd.args(["cat-file", "--batch-command"])
            .stdin(Stdio::piped());
        let mut child = cmd.spawn().map_err(|source| GitError::Io {
            url: runner.display_url.clone(),
            operation: "cat-file",
            source,
        })?;
        let stdin = child.stdin.take().expect("stdin is piped");
        let stdout = BufReader::new(child.stdout.take().expect("stdout is piped"));
        Ok(CatFile {
            child,
            stdin,
            stdout,
        })
    }

    /// Reads blob `sha` if it is at most `max_size` bytes. An `Err` means
    /// the protocol stream is broken and the process must be replaced.
    pub async fn read_blob(&mut self, sha: &str, max_size: u64) -> io::Result<BlobRead> {
        self.stdin
            .write_all(format!("info {sha}\n").as_bytes())
            .await?;
        self.stdin.flush().await?;
        let header = self.read_header().await?;
        let Some((kind, size)) = header else {
            return Ok(BlobRead::Missing);
        };
        if kind != "blob" {
            return Ok(BlobRead::NotABlob(kind));
        }
        if size > max_size {
            return Ok(BlobRead::TooLarge(size));
        }
        self.stdin
            .write_all(format!("contents {sha}\n").as_bytes())
            .await?;
        self.stdin.flush().await?;
        match self.read_header().await? {
            Some((kind, n)) if kind == "blob" && n == size => {}
            _ => return Err(io::Error::other("object changed between info and contents")),
        }
        let len = usize::try_from(size).map_err(io::Error::other)?;
        let mut content = vec![0u8; len + 1];
        self.stdout.read_exact(&mut content).await?;
        if content.pop() != Some(b'\n') {
            return Err(io::Error::other("contents not terminated by a newline"));
        }
        Ok(BlobRead::Blob(Bytes::from(content)))
    }

    /// `<sha> <type> <size>` or `<sha> missing`.
    async fn read_header(&mut self) -> io::Result<Option<(String, u64)>> {
        let mut line = String::new();
        if self.stdout.read_line(&mut line).await? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "cat-file exited",
            ));
        }
        let fields: Vec<&str> = line.trim_end().split(' ').collect();
        match fields[..] {
            [_, "missing"] | [_, "ambiguous"] => Ok(None),
            [_, kind, size] => {
                let size = size
                    .parse()
                    .map_err(|_| io::Error::other(format!("bad cat-file header {line:?}")))?;
                Ok(Some((kind.to_string(), size)))
            }
            _ => Err(io::Error::other(format!("bad cat-file header {line:?}"))),
        }
    }
}

impl Helper for CatFile {
    /// End of input ends `cat-file`; one that does not exit within a
    /// second is killed.
    async fn close(self) {
        let CatFile {
            mut child,
            stdin,
            stdout,
        } = self;
        drop(stdin);
        drop(stdout);
        if tokio::time::timeout(Duration::from_secs(1), child.wait())
            .await
            .is_err()
        {
            let _ = child.kill().await;
        }
    }
}
