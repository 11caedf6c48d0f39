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
    controller::{
        self, Context, LeaseSettings, Options, RunLimits, ShardSettings, Shards, SourceSettings,
    },
    http::{self, ApiState, Authorizer, ProbeState, Readiness, ResourceIndex, ServeLimits},
    metrics::Metrics,
    progress::{ProgressHub, relay::Relay},
    source::git::cache::GitCache,
    store::Store,
};

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Git runs this for every git:// connection: no runtime, no telemetry,
    // nothing to slow the connection's start.
    if let Command::GitConnect(args) = &cli.command {
        return git_connect(args);
    }
    if let Ok(program) = std::env::current_exe() {
        projectsync::source::git::connector::serve_from(program);
    }
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("the tokio runtime starts")
        .block_on(run_command(cli))
}

async fn run_command(cli: Cli) -> ExitCode {
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
        Command::GitConnect(args) => return git_connect(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {}", error.render());
            ExitCode::from(error.exit_code())
        }
    }
}

/// `projectsync git-connect`: one connection, its failure on stderr for git
/// to pass on.
fn git_connect(args: &projectsync::cli::GitConnectArgs) -> ExitCode {
    match projectsync::source::git::connector::relay(&args.host, args.port) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("fatal: {error}");
            ExitCode::from(commands::EXIT_FAILURE)
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
    http::ui::check_ui_auth(
        args.http.ui_auth,
        args.http_addr,
        args.http.insecure_ui_auth_none_on_any_address,
    )?;
    let install_id = args
        .install_id
        .clone()
        .filter(|id| !id.trim().is_empty())
        .unwrap_or_else(|| format!("{}/{}", args.lease_namespace, args.lease_name));
    let store = Store::connect_with(args.database.url()?, args.database.limits())
        .await
        .context("connecting to Postgres")?
        .with_owner(&install_id);
    tracing::info!(install = %install_id, "runs are recorded as owned by this install");
    store.migrate().await.context("migrating the database")?;
    let client = kube::Client::try_default()
        .await
        .context("connecting to the Kubernetes API")?;
    let identity = args.identity.clone().unwrap_or_else(default_identity);

    let metrics = Metrics::new();
    // Progress of this replica's runs goes to the others through Postgres,
    // and theirs comes here: any replica serves any resource's stream.
    let relay = Relay::default();
    let (relay_queue, relayed) = Relay::queue();
    let hub = ProgressHub::default().with_relay(relay_queue);
    tokio::spawn(relay.clone().send(store.pool().clone(), relayed));
    let shards = if args.shards > 1 {
        Shards::fenced(args.shards, Some(metrics.clone()))
    } else {
        Shards::single()
    };
    let readiness = Readiness::default()
        .with_relay(relay.status())
        .with_shards(shards.clone());
    let listener = http::bind(args.http_addr)
        .await
        .with_context(|| format!("binding {}", args.http_addr))?;
    let probe_listener = http::bind(args.http.probe_addr)
        .await
        .with_context(|| format!("binding {}", args.http.probe_addr))?;
    tracing::info!(
        api = %listener.local_addr()?,
        probes = %probe_listener.local_addr()?,
        auth = args.http.http_auth,
        "HTTP servers listening"
    );
    if !args.http.http_auth {
        tracing::warn!(
            "--http-auth=false: progress streams are open to anyone who reaches the API port"
        );
    }

    let (shutdown_tx, shutdown_rx) = tokio::sync::watch::channel(false);
    let shutdown = move || {
        let mut rx = shutdown_rx.clone();
        async move {
            let _ = rx.wait_for(|stop| *stop).await;
        }
    };
    let index = ResourceIndex::spawn(client.clone(), &args.namespaces);
    tokio::spawn({
        let index = index.clone();
        relay.listen(store.pool().clone(), hub.clone(), move |namespace, name| {
            index.get(namespace, name).is_some()
        })
    });
    let limits = |max_connections| ServeLimits {
        header_read_timeout: Duration::from_secs(args.http.http_header_read_timeout.max(1)),
        idle_timeout: Duration::from_secs(args.http.http_idle_timeout.max(1)),
        max_connections,
    };
    let api_limits = limits(args.http.http_max_connections);
    let api_state = ApiState {
        hub: hub.clone(),
        auth: if args.http.http_auth {
            Authorizer::new(client.clone(), metrics.clone())
        } else {
            Authorizer::disabled(metrics.clone())
        },
        index: index.clone(),
        webhooks: projectsync::webhook::Receiver::new(
            client.clone(),
            index.clone(),
            metrics.clone(),
        ),
        store: store.clone(),
        actions: http::actions::Actions::new(client.clone(), &identity),
        client: client.clone(),
        egress: args.egress.policy(),
        keep_alive: ApiState::keep_alive_for(api_limits.idle_timeout),
    };
    let ui_state = http::ui::UiState {
        api: ApiState {
            auth: match args.http.ui_auth {
                // One cache of decisions for the API and the page.
                http::ui::UiAuth::Token if api_state.auth.enabled() => api_state.auth.clone(),
                http::ui::UiAuth::Token => Authorizer::new(client.clone(), metrics.clone()),
                http::ui::UiAuth::None => Authorizer::disabled(metrics.clone()),
            },
            ..api_state.clone()
        },
    };
    if args.http.ui_auth == http::ui::UiAuth::None {
        tracing::warn!("--ui-auth=none: the web page is open to anyone who reaches the API port");
    }
    let probe_state = ProbeState {
        metrics: metrics.clone(),
        readiness: readiness.clone(),
    };
    let api_server = tokio::spawn(http::serve(
        listener,
        http::api_router(api_state).merge(http::ui::router(ui_state)),
        api_limits,
        "api",
        metrics.clone(),
        shutdown(),
    ));
    let probe_server = tokio::spawn(http::serve(
        probe_listener,
        http::probe_router(probe_state),
        limits(args.http.probe_max_connections),
        "probe",
        metrics.clone(),
        shutdown(),
    ));
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutting down: letting running syncs finish");
        let _ = shutdown_tx.send(true);
    });

    let git_cache = GitCache::new(&args.cache_dir, args.git_cache_max_size);
    controller::prune_git_cache(&client, &args.namespaces, &git_cache, &metrics)
        .await
        .context("removing the git caches of deleted resources")?;

    // One pool of cat-file helpers for every git resource.
    let git_helpers = projectsync::source::git::GitHelpers::new(metrics.git_helper_settings(
        args.git_helpers,
        args.git_helper_idle_timeout.max(Duration::from_millis(100)),
    ));
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: "projectsync".into(),
            instance: Some(identity.clone()),
        },
    );
    let ctx = Arc::new(
        Context::new(
            client,
            store,
            metrics,
            hub,
            recorder,
            SourceSettings {
                cache_dir: args.cache_dir.clone(),
                allow_file_urls: args.allow_file_urls,
                git_cache: Some(git_cache),
                git_helpers,
                max_tree_entries: args.max_tree_entries,
                fetch_budget: projectsync::pipeline::FetchBudget::new(
                    args.max_inflight_bytes,
                    args.max_inflight_bytes_per_run,
                ),
                egress: args.egress.policy(),
            },
            ChunkerConfig::default(),
        )
        .with_limits(RunLimits::new(
            usize::from(args.concurrency.max(1)),
            usize::from(args.namespace_concurrency.max(1)),
            args.max_run_duration.max(Duration::from_secs(1)),
            args.allow_cluster_embedding_reuse,
        ))
        .with_shards(shards),
    );
    let label_selector = controller::check_label_selector(
        &ctx.client,
        &args.namespaces,
        args.watch_label_selector.as_deref(),
    )
    .await?;
    let options = Options {
        label_selector,
        shards: (args.shards > 1).then(|| ShardSettings {
            namespace: args.lease_namespace.clone(),
            lease_name: args.lease_name.clone(),
            identity: identity.clone(),
            count: args.shards,
            lease_duration: Duration::from_secs(args.lease_duration.max(5)),
        }),
        namespaces: args.namespaces.clone(),
        // Room for resources waiting for a run slot and for polls; the runs
        // themselves are bounded by the RunLimits above.
        concurrency: args.concurrency.max(1).saturating_mul(4),
        // Shards replace the one leader: each replica holds its share.
        lease: (args.leader_election && args.shards <= 1).then(|| LeaseSettings {
            namespace: args.lease_namespace.clone(),
            name: args.lease_name.clone(),
            identity: identity.clone(),
            duration_secs: args.lease_duration.max(5),
            grace_secs: (args.lease_duration / 3).max(2),
        }),
        shutdown_grace: Duration::from_secs(args.shutdown_grace),
    };
    // Ready once the HTTP layer knows the resources too (a stream or a
    // delivery before that could only be refused).
    if !index.wait_until_ready(Duration::from_secs(30)).await {
        tracing::warn!(
            "the resources are not listed after 30s: streams and webhooks answer 503 until they are"
        );
    }
    readiness.set(true);
    let result = controller::run(ctx, options, shutdown()).await;
    readiness.set(false);
    api_server.abort();
    probe_server.abort();
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
