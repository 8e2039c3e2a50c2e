//! dbsnap: take a snapshot.
#![forbid(unsafe_code)]

pub mod cli;

use dbsafe::config::Config;
use dbsafe::engine::SnapshotOptions;
use dbsafe::metrics::Sample;
use dbsafe::notify::About;
use dbsafe::progress::Progress;
use dbsafe::snapshot::{self, Destination, SnapshotRequest};
use dbsafe::{units, ExitCode, Result};

/// Runs dbsnap with parsed arguments, recording the outcome in the metrics.
pub fn run(args: cli::Cli) -> Result<ExitCode> {
    let cfg = Config::load(args.common.config.as_deref())?;
    let env = args
        .env
        .clone()
        .or_else(|| cfg.defaults.env.clone())
        .unwrap_or_else(|| "default".into());
    let source = match &args.source {
        Some(s) => s.clone(),
        None => cfg.env(&env).and_then(|e| e.url.clone()).ok_or_else(|| {
            dbsafe::Error::usage(format!("no SOURCE_URL, and the config file has no url for environment {env:?}"))
                .hint("name the database URL, or set url in [env.NAME] of the config file and pass --env NAME")
        })?,
    };
    let engine = dbsafe::engine::open(&source)?;
    let sink = args.common.metrics(&cfg);
    let database = engine.database();
    let result = snap(&args, &cfg, &env, engine.as_ref());
    let sample = |name, help, v| Sample::new(name, help, &env, &database, v);
    match &result {
        Ok(m) => sink.record(
            "dbsnap",
            &[
                sample(
                    "dbsafe_backup_last_success_timestamp_seconds",
                    "When the last successful backup finished (Unix time).",
                    chrono::DateTime::parse_from_rfc3339(&m.finished_at)
                        .map(|t| t.timestamp() as f64)
                        .unwrap_or(0.0),
                ),
                sample(
                    "dbsafe_backup_duration_seconds",
                    "How long the last successful backup took.",
                    m.duration_seconds,
                ),
                sample(
                    "dbsafe_backup_size_bytes",
                    "Size of the last successful backup's artifact.",
                    m.size_bytes as f64,
                ),
                sample("dbsafe_backup_failures_total", "Backups that failed.", 0.0),
            ],
        ),
        Err(_) => sink.record(
            "dbsnap",
            &[
                sample("dbsafe_backup_failures_total", "Backups that failed.", 1.0),
                // What the failure alert reads: a failure newer than the last
                // success, the first one included, pushed or in a textfile.
                sample(
                    "dbsafe_backup_last_failure_timestamp_seconds",
                    "When the last backup failed (Unix time).",
                    chrono::Utc::now().timestamp() as f64,
                ),
            ],
        ),
    }
    result.map(|_| ExitCode::Success)
}

fn snap(
    args: &cli::Cli,
    cfg: &Config,
    env: &str,
    engine: &dyn dbsafe::Engine,
) -> Result<dbsafe::meta::Metadata> {
    let log = args.common.log("dbsnap");
    let env = env.to_string();
    // What is wrong with the command line first, before what it would write.
    dbsafe::name::validate_env(&env)?;
    let compression = args.encode.compression(cfg, &env)?;
    let lock_timeout = dbsafe::cli::lock_timeout(args.lock_timeout.as_deref(), cfg)?;
    let tmpdir = args.tmpdir.dir();
    let max_size = args
        .max_size
        .as_deref()
        .map(units::parse_size)
        .transpose()?;
    let labels = dbsafe::cli::parse_labels(&args.labels)?;
    let store_locs: Vec<String> = match (&args.output, args.to.is_empty()) {
        (None, true) => cfg.store_for(&env).into_iter().collect(),
        _ => args.to.clone(),
    };
    let stores = store_locs
        .iter()
        .map(|loc| dbsafe::store::open(loc, true))
        .collect::<Result<Vec<_>>>()?;
    let described: Vec<String> = stores.iter().map(|s| s.describe()).collect();
    if let Some(twice) = described
        .iter()
        .enumerate()
        .find_map(|(i, d)| described[..i].contains(d).then_some(d))
    {
        return Err(dbsafe::Error::usage(format!("--to {twice} is given twice")));
    }
    let dest = match &args.output {
        Some(p) if p.as_os_str() == "-" => Destination::Stdout {
            meta: args.meta.clone(),
        },
        Some(p) => Destination::File(p.clone()),
        None if !stores.is_empty() => Destination::Store {
            stores: stores.iter().map(|s| s.as_ref()).collect(),
            update_latest: true,
            min_free: args
                .min_free
                .as_deref()
                .map(units::parse_size)
                .transpose()?,
            lock_timeout,
        },
        None => Destination::Stdout {
            meta: args.meta.clone(),
        },
    };
    let written_to = match &dest {
        Destination::Stdout { .. } => None,
        Destination::File(p) => Some(p.display().to_string()),
        Destination::Store { .. } => Some(format!("store {}", described.join(", store "))),
    };
    let req = SnapshotRequest {
        env: env.clone(),
        compression,
        level: args.encode.level_for(cfg),
        threads: args.encode.threads(),
        encryption: args
            .encode
            .encryption_for(cfg, &env, written_to.as_deref())?,
        max_size,
        labels,
        engine: SnapshotOptions {
            tables: args.tables.clone(),
            exclude_tables: args.exclude_tables.clone(),
            base: args.base,
            tmpdir,
        },
        tool: "dbsnap",
        progress: Progress::new("dbsnap", None, args.common.quiet),
    };
    if args.common.json && matches!(dest, Destination::Stdout { .. }) {
        return Err(dbsafe::Error::usage(
            "--json prints the report on stdout, which already carries the artifact",
        )
        .hint("use -o FILE or --to STORE with --json"));
    }
    dbsafe::notify::configure_from(cfg, &env);
    let database = engine.database();
    let store_list = store_locs.join(" ");
    dbsafe::notify::about(About {
        store: (!store_locs.is_empty()).then_some(store_list.as_str()),
        env: Some(&env),
        database: Some(&database),
        ..About::default()
    });
    let report = snapshot::take(engine, req, dest)?;
    log.info(report.summary_line());
    if !report.failed.is_empty() {
        for (store, e) in &report.failed {
            log.warn(format!("store {store} does not have the backup: {e}"));
        }
        return Err(dbsafe::Error::failed(format!(
            "{} is in store {}, but not in store {}",
            report.location,
            report.stores.join(", store "),
            report
                .failed
                .iter()
                .map(|(s, _)| s.as_str())
                .collect::<Vec<_>>()
                .join(", store ")
        ))
        .hint("the stores that have it keep it; rerun once the failed store is back"));
    }
    dbsafe::notify::about(About {
        backup: Some(&report.location),
        ..About::default()
    });
    dbsafe::notify::summary(&report.summary_line());
    if args.common.json {
        dbsafe::cli::print_json(&serde_json::json!({
            "location": report.location,
            "metadata": report.meta,
        }))?;
    }
    Ok(report.meta)
}
