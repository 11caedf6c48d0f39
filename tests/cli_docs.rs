//! The documentation cannot drift from the code: the CRD reference is the
//! output of `projectsync crd --reference`, docs/cli.md shows every user
//! command and flag, and docs/troubleshooting.md explains every condition
//! reason the code can set. Reads files and runs the binary; no cluster.

use std::{path::Path, process::Command};

use clap::CommandFactory;
use projectsync::api::conditions::reason;

fn read(path: &str) -> String {
    let full = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("cannot read {}: {e}", full.display()))
}

#[test]
fn crd_reference_in_docs_is_what_the_crd_command_generates() {
    let output = Command::new(env!("CARGO_BIN_EXE_projectsync"))
        .args(["crd", "--reference"])
        .output()
        .expect("run projectsync crd --reference");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let generated = String::from_utf8(output.stdout).expect("utf-8");
    assert!(
        read("docs/crd-reference.md") == generated,
        "docs/crd-reference.md is stale: run `{}`",
        projectsync::commands::crd_reference::REGENERATE
    );
}

#[test]
fn every_user_command_and_flag_is_documented_in_docs_cli_md() {
    let doc = read("docs/cli.md");
    let cli = projectsync::cli::Cli::command();
    let mut missing = Vec::new();
    // `run` has docs of its own; hidden commands are run by git, not users.
    for command in cli
        .get_subcommands()
        .filter(|c| c.get_name() != "run" && !c.is_hide_set())
    {
        let name = command.get_name();
        if !doc.contains(&format!("## `projectsync {name}")) {
            missing.push(format!("section `## projectsync {name}`"));
        }
        for arg in command.get_arguments() {
            if let Some(long) = arg.get_long()
                && !["help", "log-format"].contains(&long)
                && !doc.contains(&format!("--{long}"))
            {
                missing.push(format!("{name} --{long}"));
            }
        }
    }
    assert!(missing.is_empty(), "docs/cli.md lacks: {missing:?}");
}

#[test]
fn every_condition_reason_is_explained_in_docs_troubleshooting_md() {
    let doc = read("docs/troubleshooting.md");
    let missing: Vec<&str> = reason::ALL
        .iter()
        .copied()
        .filter(|reason| !doc.contains(&format!("`{reason}`")))
        .collect();
    assert!(
        missing.is_empty(),
        "docs/troubleshooting.md does not explain: {missing:?}"
    );
}

#[test]
fn crd_prints_the_same_definition_as_yaml_and_as_json() {
    let run = |args: &[&str]| {
        let output = Command::new(env!("CARGO_BIN_EXE_projectsync"))
            .args(args)
            .output()
            .expect("run projectsync crd");
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).expect("utf-8")
    };
    let yaml: serde_json::Value = serde_yaml::from_str(&run(&["crd"])).expect("YAML");
    let json: serde_json::Value = serde_json::from_str(&run(&["crd", "-o", "json"])).expect("JSON");
    assert_eq!(yaml, json);
    assert_eq!(json["metadata"]["name"], "projectsyncs.projectsync.dev");
    assert_eq!(
        read("crds/projectsync.dev_projectsyncs.yaml"),
        run(&["crd"])
    );
}
