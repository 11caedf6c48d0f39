//! Entry point of the `projectsync` binary: parse arguments, set up
//! telemetry, run the subcommand.

use clap::Parser;
use projectsync::cli::{Cli, Command};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    projectsync::telemetry::init(cli.log_format);
    match cli.command {
        Command::Crd => print!("{}", projectsync::api::crd_yaml()?),
    }
    Ok(())
}
