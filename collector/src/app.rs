//! The collector's life cycle: database (managed or given), migrations, services, and a
//! clean shutdown on SIGTERM/SIGINT.

use std::{path::PathBuf, sync::Arc, time::Duration};

use anyhow::Context;
use tokio::{signal::unix::SignalKind, sync::watch};

use crate::{
    config::{Cli, Command, Config},
    ingest::BatchWriter,
    metrics::{CollectorMetrics, serve_metrics},
    postgres::{Launcher, ManagedPostgres},
    server,
    storage::{Stores, partitions::PartitionManager, retention::run_maintenance},
};

/// How long in-flight work may take to finish after a shutdown signal.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
/// How often the managed PostgreSQL is checked for life.
const SUPERVISE_INTERVAL: Duration = Duration::from_secs(2);

fn default_postgres_root() -> Option<PathBuf> {
    std::env::var_os("HOME")
        .map(|home| PathBuf::from(home).join(".cache/tapwire/pg-trixie-tsdb"))
        .filter(|root| root.exists())
}

/// Runs the collector (or the `migrate` subcommand) until a shutdown signal.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let config = cli.config;
    config.validate()?;
    let data_dir = config.data_dir()?;
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("creating the data folder {}", data_dir.display()))?;

    let managed = match &config.database_url {
        Some(_) => None,
        None => {
            let root = config.postgres_root.clone().or_else(default_postgres_root);
            let launcher = Launcher::choose(config.postgres_bin.as_deref(), root.as_deref())?;
            tracing::info!(?launcher, "starting the managed PostgreSQL");
            Some(Arc::new(ManagedPostgres::start(&data_dir, launcher).await?))
        }
    };
    let result = match cli.command {
        Some(Command::Migrate) => migrate_only(&config, managed.as_deref()).await,
        None => serve(&config, managed.clone()).await,
    };
    if let Some(pg) = managed
        && let Err(e) = pg.stop().await
    {
        tracing::error!(error = %e, "stopping the managed PostgreSQL failed");
    }
    result
}

fn database_url(config: &Config, managed: Option<&ManagedPostgres>) -> anyhow::Result<String> {
    config
        .database_url
        .clone()
        .or_else(|| managed.map(ManagedPostgres::database_url))
        .context("no database")
}

async fn migrate_only(config: &Config, managed: Option<&ManagedPostgres>) -> anyhow::Result<()> {
    let stores = Stores::open(&database_url(config, managed)?, &config.payload_store()?).await?;
    tracing::info!(flavor = ?stores.flavor, "schema is up to date");
    Ok(())
}

async fn serve(config: &Config, managed: Option<Arc<ManagedPostgres>>) -> anyhow::Result<()> {
    let url = database_url(config, managed.as_deref())?;
    let stores = Arc::new(Stores::open(&url, &config.payload_store()?).await?);
    tracing::info!(flavor = ?stores.flavor, "storage ready");
    let metrics = Arc::new(CollectorMetrics::new().context("registering metrics")?);
    let partitions = Arc::new(PartitionManager::default());
    let writer = Arc::new(BatchWriter::new(
        Arc::clone(&stores),
        Arc::clone(&partitions),
    ));
    let (stop, shutdown) = watch::channel(false);

    let mut tasks = Vec::new();
    tasks.push(tokio::spawn(run_maintenance(
        Arc::clone(&stores),
        partitions,
        config.retention(),
        config.maintenance_interval,
        shutdown.clone(),
    )));
    if let Some(pg) = managed {
        let mut quit = shutdown.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(SUPERVISE_INTERVAL) => {}
                    _ = quit.wait_for(|s| *s) => return,
                }
                if let Err(e) = pg.restart_if_dead().await {
                    tracing::error!(error = %e, "restarting the managed PostgreSQL failed");
                }
            }
        }));
    }
    if let Some(addr) = config.metrics_addr {
        let (m, s, quit) = (Arc::clone(&metrics), Arc::clone(&stores), shutdown.clone());
        tasks.push(tokio::spawn(async move {
            if let Err(e) = serve_metrics(addr, m, s, quit).await {
                tracing::error!(error = %e, "metrics endpoint failed");
            }
        }));
    }

    let mut grpc = tokio::spawn({
        let config = config.clone();
        async move { server::serve(&config, stores, writer, metrics, shutdown).await }
    });
    let mut sigterm =
        tokio::signal::unix::signal(SignalKind::terminate()).context("SIGTERM handler")?;
    let early = tokio::select! {
        _ = sigterm.recv() => None,
        _ = tokio::signal::ctrl_c() => None,
        result = &mut grpc => Some(result),
    };
    tracing::info!("shutting down: finishing in-flight batches");
    let _ = stop.send(true);
    let served = match early {
        Some(result) => result,
        None => match tokio::time::timeout(DRAIN_TIMEOUT, &mut grpc).await {
            Ok(result) => result,
            Err(_) => {
                tracing::warn!("in-flight requests did not finish in time");
                grpc.abort();
                Ok(Ok(()))
            }
        },
    };
    for task in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
    }
    served.context("gRPC server task")?
}
