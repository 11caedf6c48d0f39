//! Entry point of the `projectsync` binary: parse arguments, set up
//! telemetry, connect the store, run the subcommand.

use std::{process::ExitCode, sync::Arc, time::Duration};

use anyhow::Context as _;
use clap::Parser;
use kube::runtime::events::{Recorder, Reporter};
use projectsync::{
    chunk::ChunkerConfig,
    cli::{Cli, Command, CrdArgs, ManifestFormat, RunArgs},
    commands,
    controller::{self, Context, LeaseSettings, Options, SourceSettings},
    http::{self, HttpState, Readiness},
    metrics::Metrics,
    progress::ProgressHub,
    source::git::cache::GitCache,
    store::Store,
};

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    // The operator logs its work; user commands keep stderr for progress
    // and errors unless RUST_LOG asks for more.
    let default_level = match cli.command {
        Command::Run(_) => "info",
        _ => "warn",
    };
    projectsync::telemetry::init_with_default(cli.log_format, default_level);
    let result = match cli.command {
        Command::Run(args) => return exit_from_anyhow(run(args).await),
        Command::Migrate(args) => commands::migrate::run(&args).await,
        Command::Crd(args) => print_crd(&args),
        Command::Restore(args) => commands::restore::run(&args).await,
        Command::Branches(args) => commands::branches::run(&args).await,
        Command::History(args) => commands::history::run(&args).await,
        Command::Search(args) => commands::search::run(&args).await,
        Command::BackfillEmbeddings(args) => commands::backfill::run(&args).await,
        Command::Sync(args) => commands::sync::run(&args).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {}", error.render());
            ExitCode::from(error.exit_code())
        }
    }
}

/// One line on stderr and exit code 1 for the operator's own failures.
fn exit_from_anyhow(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::from(commands::EXIT_FAILURE)
        }
    }
}

fn print_crd(args: &CrdArgs) -> Result<(), commands::CommandError> {
    let text = match (args.reference, args.format) {
        (true, _) => commands::crd_reference::build_crd_reference(),
        (false, ManifestFormat::Yaml) => {
            projectsync::api::crd_yaml().expect("the CRD serializes to YAML")
        }
        (false, ManifestFormat::Json) => {
            let mut json = serde_json::to_string_pretty(&projectsync::api::crd())
                .expect("the CRD serializes to JSON");
            json.push('\n');
            json
        }
    };
    commands::output::write_stdout(text)
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    let store = Store::connect(&args.database.database_url)
        .await
        .context("connecting to Postgres")?;
    store.migrate().await.context("migrating the database")?;
    let client = kube::Client::try_default()
        .await
        .context("connecting to the Kubernetes API")?;
    let identity = args.identity.clone().unwrap_or_else(default_identity);

    let metrics = Metrics::new();
    let hub = ProgressHub::default();
    let readiness = Readiness::default();
    let listener = http::bind(args.http_addr)
        .await
        .with_context(|| format!("binding {}", args.http_addr))?;
    tracing::info!(addr = %listener.local_addr()?, "HTTP server listening");

    let (shutdown_tx, shutdown_rx) = tokio::sync::watch::channel(false);
    let shutdown = move || {
        let mut rx = shutdown_rx.clone();
        async move {
            let _ = rx.wait_for(|stop| *stop).await;
        }
    };
    let http_state = HttpState {
        metrics: metrics.clone(),
        hub: hub.clone(),
        readiness: readiness.clone(),
        webhooks: projectsync::webhook::Receiver::new(
            client.clone(),
            args.namespaces.clone(),
            metrics.clone(),
        ),
    };
    let server = tokio::spawn(http::serve(listener, http_state, shutdown()));
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutting down: letting running syncs finish");
        let _ = shutdown_tx.send(true);
    });

    let git_cache = GitCache::new(&args.cache_dir, args.git_cache_max_size);
    controller::prune_git_cache(&client, &args.namespaces, &git_cache, &metrics)
        .await
        .context("removing the git caches of deleted resources")?;

    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: "projectsync".into(),
            instance: Some(identity.clone()),
        },
    );
    let ctx = Arc::new(Context::new(
        client,
        store,
        metrics,
        hub,
        recorder,
        SourceSettings {
            cache_dir: args.cache_dir.clone(),
            allow_file_urls: args.allow_file_urls,
            git_cache: Some(git_cache),
            egress: args.egress.policy(),
        },
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
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
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
