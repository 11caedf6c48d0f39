//! A long-lived `git cat-file --batch-command` for one cache repository
//! (I/O): objects are read, and asked about, without a process per
//! question, and `info` gives an object's size before `contents` reads it,
//! so an oversized one is never loaded. Besides blobs, a run asks it
//! whether a commit is cached, for a commit's header and for the sizes of
//! the blobs a change set names: each of those was a git process of its
//! own, a few milliseconds apiece on every run. The operator keeps these in
//! [`super::pool`], a few dozen for all resources.

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
pub(crate) enum ObjectRead {
    Object(Bytes),
    Missing,
    /// The object is of this other type.
    WrongKind(String),
    TooLarge(u64),
}

/// Questions asked at once by [`CatFile::infos`]: their answers (about 60
/// bytes each) fit in a pipe's buffer, so git never waits for the reader
/// while the writer is still writing.
const INFO_BATCH: usize = 500;

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

    /// The type and size of object `name` (any name git resolves: an id,
    /// `<id>^{commit}`, a ref), or `None` when there is none. An `Err` means
    /// the protocol stream is broken and the process must be replaced.
    pub async fn info(&mut self, name: &str) -> io::Result<Option<(String, u64)>> {
        Ok(self.infos(&[name]).await?.pop().flatten())
    }

    /// [`Self::info`] of every name, in order, [`INFO_BATCH`] per write.
    pub async fn infos(&mut self, names: &[&str]) -> io::Result<Vec<Option<(String, u64)>>> {
        let mut answers = Vec::with_capacity(names.len());
        for batch in names.chunks(INFO_BATCH) {
            let questions: String = batch.iter().map(|n| format!("info {n}\n")).collect();
            self.stdin.write_all(questions.as_bytes()).await?;
            self.stdin.flush().await?;
            for _ in batch {
                answers.push(self.read_header().await?);
            }
        }
        Ok(answers)
    }

    /// Reads object `name` if it is of type `kind` and at most `max_size`
    /// bytes. An `Err` means the protocol stream is broken and the process
    /// must be replaced.
    pub async fn read(&mut self, name: &str, kind: &str, max_size: u64) -> io::Result<ObjectRead> {
        let Some((found, size)) = self.info(name).await? else {
            return Ok(ObjectRead::Missing);
        };
        if found != kind {
            return Ok(ObjectRead::WrongKind(found));
        }
        if size > max_size {
            return Ok(ObjectRead::TooLarge(size));
        }
        self.stdin
            .write_all(format!("contents {name}\n").as_bytes())
            .await?;
        self.stdin.flush().await?;
        match self.read_header().await? {
            Some((again, n)) if again == kind && n == size => {}
            _ => return Err(io::Error::other("object changed between info and contents")),
        }
        let len = usize::try_from(size).map_err(io::Error::other)?;
        let mut content = vec![0u8; len + 1];
        self.stdout.read_exact(&mut content).await?;
        if content.pop() != Some(b'\n') {
            return Err(io::Error::other("contents not terminated by a newline"));
        }
        Ok(ObjectRead::Object(Bytes::from(content)))
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
