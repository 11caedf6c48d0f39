//! Runs the pinned promtool (`hack/promtool`, built once from its Go module
//! and cached) on alert rules. Spawns a process; no network.

use std::{
    path::Path,
    process::{Command, Stdio},
};

use super::repo_root;

/// What one `promtool` invocation returned.
#[derive(Debug)]
pub struct PromtoolOutput {
    pub success: bool,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `hack/promtool args...` in `dir` (which builds promtool on first use).
pub fn promtool(dir: &Path, args: &[&str]) -> PromtoolOutput {
    let script = repo_root().join("hack/promtool");
    let output = Command::new(&script)
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
    PromtoolOutput {
        success: output.status.success(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}
