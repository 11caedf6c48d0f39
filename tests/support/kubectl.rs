//! Runs the real `kubectl` (the one `hack/testenv` built with the API server)
//! against the testenv control plane, so tests see exactly what a user at a
//! terminal sees. Spawns a process.

use std::{
    io::Write,
    process::{Command, Stdio},
};

use super::testenv;

/// What one `kubectl` invocation returned.
#[derive(Debug)]
pub struct KubectlOutput {
    pub success: bool,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `kubectl args...` with `stdin` piped in.
pub fn kubectl(args: &[&str], stdin: &str) -> KubectlOutput {
    let mut child = Command::new(&testenv().kubectl)
        .args(args)
        .env("KUBECONFIG", &testenv().kubeconfig)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run kubectl (is it installed?): {e}"));
    child
        .stdin
        .take()
        .expect("kubectl stdin")
        .write_all(stdin.as_bytes())
        .expect("write kubectl stdin");
    let output = child.wait_with_output().expect("wait for kubectl");
    KubectlOutput {
        success: output.status.success(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}
