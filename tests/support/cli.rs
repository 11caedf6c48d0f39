//! Runs the real `projectsync` binary as a user would at a terminal (well,
//! through a pipe: stdout and stderr are not terminals, so no progress bars),
//! with the testenv's kubeconfig and a test's own database. Spawns a process.

use std::process::Stdio;

use serde_json::Value;

use super::{projectsync_binary, testenv};

/// What one invocation returned.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// Asserts success and returns stdout.
    pub fn ok(&self) -> &str {
        assert_eq!(
            self.code, 0,
            "projectsync failed:\nstdout: {}\nstderr: {}",
            self.stdout, self.stderr
        );
        &self.stdout
    }

    /// Asserts success and parses stdout as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_str(self.ok())
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{}", self.stdout))
    }

    /// Asserts failure with `code`, and that the error is the last line of
    /// stderr (after any progress lines), one line starting with `error: `;
    /// returns that line.
    pub fn error(&self, code: i32) -> &str {
        assert_eq!(
            self.code, code,
            "expected exit code {code}:\nstdout: {}\nstderr: {}",
            self.stdout, self.stderr
        );
        let line = self
            .stderr
            .trim_end_matches('\n')
            .lines()
            .last()
            .unwrap_or_default();
        assert_eq!(
            self.stderr.matches("error").count(),
            line.matches("error").count(),
            "the error is not one line:\n{}",
            self.stderr
        );
        assert!(
            line.starts_with("error: "),
            "stderr does not start with `error: `: {line}"
        );
        line
    }
}

/// `projectsync args...` with `DATABASE_URL` set to `database_url` and the
/// extra environment `env`.
pub async fn projectsync(database_url: &str, args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut command = tokio::process::Command::new(projectsync_binary());
    command
        .args(args)
        .env("DATABASE_URL", database_url)
        .env("KUBECONFIG", &testenv().kubeconfig)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (key, value) in env {
        command.env(key, value);
    }
    let output = tokio::time::timeout(std::time::Duration::from_secs(120), command.output())
        .await
        .expect("projectsync finished within 120s")
        .expect("run the projectsync binary");
    Run {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// Asserts that every non-empty line of a table puts column `n` (0-based,
/// by the header's word positions) at the same character offset.
pub fn assert_aligned(table: &str) {
    let mut lines = table.lines().filter(|l| !l.is_empty());
    let header = lines.next().expect("a header line");
    let starts: Vec<usize> = header
        .char_indices()
        .filter(|(i, c)| !c.is_whitespace() && (*i == 0 || header[..*i].ends_with("  ")))
        .map(|(i, _)| i)
        .collect();
    for line in lines {
        let chars: Vec<char> = line.chars().collect();
        for &start in &starts[1..] {
            if start < chars.len() {
                assert!(
                    chars[start - 1] == ' ' && chars[start] != ' ',
                    "column at {start} is not aligned in:\n{table}"
                );
            }
        }
    }
}
