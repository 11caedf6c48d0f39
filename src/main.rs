//! Entry point of the `projectsync` binary: parse arguments, set up
//! telemetry, connect the store, run the subcommand.

use std::{sync::Arc, time::Duration};

use anyhow::Context as _;
use clap::Parser;
use kube::runtime::events::{Recorder, Reporter};
use projectsync::{
    chunk::ChunkerConfig,
    cli::{Cli, Command, RunArgs},
    controller::{self, Context, LeaseSettings, Options, SourceSettings},
    http::{self, HttpState, Readiness},
    metrics::Metrics,
    progress::ProgressHub,
    store::Store,
};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    projectsync::telemetry::init(cli.log_format);
    match cli.command {
        Command::Crd => print!("{}", projectsync::api::crd_yaml()?),
        Command::Migrate(args) => {
            let store = Store::connect(&args.database_url).await?;
            store.migrate().await?;
            tracing::info!("database migrated");
        }
        Command::Run(args) => run(args).await?,
        Command::Restore(args) => {
            let store = Store::connect(&args.database.database_url).await?;
            let record = projectsync::commands::restore::restore(&store, &args.project, &args.sync).await?;
            println!(
                "restored {} as sync {} (commit {}, {} files)",
                args.sync,
                record.id,
                record.commit.as_deref().unwrap_or("-"),
                record.files.total
            );
        }
    }
    Ok(())
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    let store = Store::connect(&args.database.database_url).await.context("connecting to Postgres")?;
    store.migrate().await.context("migrating the database")?;
    let client = kube::Client::try_default().await.context("connecting to the Kubernetes API")?;
    let identity = args.identity.clone().unwrap_or_else(default_identity);

    let metrics = Metrics::new();
    let hub = ProgressHub::default();
    let readiness = Readiness::default();
    let listener = http::bind(args.http_addr).await.with_context(|| format!("binding {}", args.http_addr))?;
    tracing::info!(addr = %listener.local_addr()?, "HTTP server listening");

    let (shutdown_tx, shutdown_rx) = tokio::sync::watch::channel(false);
    let shutdown = move || {
        let mut rx = shutdown_rx.clone();
        async move {
            let _ = rx.wait_for(|stop| *stop).await;
        }
    };
    let http_state = HttpState { metrics: metrics.clone(), hub: hub.clone(), readiness: readiness.clone() };
    let server = tokio::spawn(http::serve(listener, http_state, shutdown()));
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutting down: letting running syncs finish");
        let _ = shutdown_tx.send(true);
    });

    let recorder = Recorder::new(client.clone(), Reporter { controller: "projectsync".into(), instance: Some(identity.clone()) });
    let ctx = Arc::new(Context::new(
        client,
        store,
        metrics,
        hub,
        recorder,
        SourceSettings { cache_dir: args.cache_dir.clone(), allow_file_urls: args.allow_file_urls },
        ChunkerConfig::default(),
    ));
    let options = Options {
        namespaces: args.namespaces.clone(),
        concurrency: args.concurrency.max(1),
        lease: args.leader_election.then(|| LeaseSettings {
            namespace: args.lease_namespace.clone(),
            name: args.lease_name.clone(),
            identity: identity.clone(),
            duration_secs: args.lease_duration.max(5),
            grace_secs: (args.lease_duration / 3).max(2),
        }),
        shutdown_grace: Duration::from_secs(args.shutdown_grace),
    };
    readiness.set(true);
    let result = controller::run(ctx, options, shutdown()).await;
    readiness.set(false);
    server.abort();
    result.context("the controller stopped")?;
    Ok(())
}

/// SIGTERM (Kubernetes) or Ctrl-C.
async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(term) => term,
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM");
                let _ = ctrl_c.await;
                return;
            }
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

fn default_identity() -> String {
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "projectsync".into());
    format!("{host}-{}", &uuid::Uuid::new_v4().simple().to_string()[..8])
}
