//! walship: ship PostgreSQL WAL.
#![forbid(unsafe_code)]

pub mod cli;

use cli::{Cli, Command};
use dbsafe::config::Config;
use dbsafe::pipeline::EncodeOptions;
use dbsafe::wal::WalName;
use dbsafe::walarchive::{self, Fetched, Pushed};
use dbsafe::walspool;
use dbsafe::{Error, ExitCode, Result};

/// How long a background shipper waits for one already at work.
const SHIPPER_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// Runs walship and turns the outcome into an exit status, with `fetch`'s
/// PostgreSQL-specific codes: 1 only for "not archived", 255 for anything else.
pub fn main(cli: Cli) -> std::process::ExitCode {
    if let Command::Fetch { .. } = cli.command {
        dbsafe::cleanup::install_signal_handlers("walship");
        return match run(cli) {
            Ok(ExitCode::Success) => std::process::ExitCode::SUCCESS,
            Ok(ExitCode::NotFound) => std::process::ExitCode::from(1),
            Ok(_) => std::process::ExitCode::from(255),
            Err(e) => {
                dbsafe::errln!("walship: error: {e}");
                std::process::ExitCode::from(255)
            }
        };
    }
    dbsafe::cli::main_with("walship", || run(cli))
}

fn store_of(loc: Option<String>, cfg: &Config, create: bool) -> Result<Box<dyn dbsafe::Store>> {
    dbsafe::store::open(&location_of(loc, cfg)?, create)
}

/// The store named on the command line, else the config's.
fn location_of(loc: Option<String>, cfg: &Config) -> Result<String> {
    loc.or_else(|| cfg.defaults.store.clone())
        .ok_or_else(|| Error::usage("no store: pass --to/--from STORE or set DBSAFE_STORE"))
}

/// zstd's level for WAL unless --level says otherwise: WAL compresses well
/// at 1, and the archiver waits on every push.
const WAL_LEVEL: i32 = 1;

/// Archives `file` into every store; with one store its own error, with
/// several an error naming the stores that do not have it.
fn push_everywhere(
    stores: &[Box<dyn dbsafe::Store>],
    path: &std::path::Path,
    file: &str,
    opts: &EncodeOptions,
) -> Result<Vec<Pushed>> {
    if let [store] = stores {
        return walarchive::push(store.as_ref(), path, file, opts.clone()).map(|p| vec![p]);
    }
    let mut done = Vec::new();
    let mut failed = Vec::new();
    for store in stores {
        match walarchive::push(store.as_ref(), path, file, opts.clone()) {
            Ok(p) => done.push(p),
            Err(e) => failed.push(format!("store {}: {e}", store.describe())),
        }
    }
    if failed.is_empty() {
        return Ok(done);
    }
    Err(Error::failed(format!(
        "{file} is not archived in every store: {}",
        failed.join("; ")
    ))
    .hint("PostgreSQL retries the push; the stores that have it answer it as already archived"))
}

/// Set in the environment of the background shipper an async push starts.
const SHIPPER: &str = "DBSAFE_WAL_SHIPPER";

/// Starts the shipper of the spool: this program again, with the same
/// arguments, in a process group of its own (so the archiver's end does not
/// end it), its errors appended to `DIR/shipper.log`. A shipper already
/// running makes the new one return at once.
fn start_shipper(dir: &std::path::Path) -> Result<()> {
    use std::os::unix::process::CommandExt;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("shipper.log"))
        .map_err(|e| Error::io(format!("opening {}/shipper.log", dir.display()), e))?;
    let exe =
        std::env::current_exe().map_err(|e| Error::io("finding walship's own executable", e))?;
    std::process::Command::new(exe)
        .args(std::env::args_os().skip(1))
        .env(SHIPPER, "1")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .process_group(0)
        .spawn()
        .map(drop)
        .map_err(|e| Error::io("starting the spool's shipper", e))
}

/// Runs walship with parsed arguments.
pub fn run(cli: Cli) -> Result<ExitCode> {
    let log = cli.common.log("walship");
    let cfg = Config::load(cli.common.config.as_deref())?;
    let env = std::env::var("DBSAFE_ENV")
        .ok()
        .or_else(|| cfg.defaults.env.clone())
        .unwrap_or_else(|| "default".into());
    match cli.command {
        Command::Push {
            path,
            file,
            to,
            asynchronous,
            spool,
            spool_max,
            encode,
        } => {
            let locations = match to.is_empty() {
                true => vec![location_of(None, &cfg)?],
                false => to,
            };
            let compression = encode.compression(&cfg, &env)?;
            let opts = EncodeOptions {
                compression,
                // zstd WAL is compressed at a fixed level (1 unless a level, or
                // auto, is given): segments are small and pushed one at a time,
                // so there is nothing to adapt to. gzip keeps its own default.
                level: match (&encode.level, cfg.defaults.level) {
                    (None, None) if compression == dbsafe::Compression::Zstd => Some(WAL_LEVEL),
                    _ => encode.level_for(&cfg),
                },
                threads: encode.threads(),
                encryption: encode.encryption_for(
                    &cfg,
                    &env,
                    Some(&format!("store {}", locations.join(", store "))),
                )?,
                max_size: None,
            };
            // An async push acknowledges without the stores: they are opened by the shipper.
            let open_stores = || {
                locations
                    .iter()
                    .map(|loc| dbsafe::store::open(loc, true))
                    .collect::<Result<Vec<_>>>()
            };
            let clock = std::time::Instant::now();
            let sink = cli.common.metrics(&cfg);
            let database = std::env::var("DBSAFE_DATABASE").unwrap_or_else(|_| "cluster".into());
            // The WAL metrics of a push by this process, or of a round of
            // the shipper's (counters are read and added to).
            let record = |round: walspool::Round| {
                let sample = |n, h, v| dbsafe::metrics::Sample::new(n, h, &env, &database, v);
                let mut samples = vec![sample(
                    "dbsafe_wal_push_failures_total",
                    "WAL pushes that failed.",
                    round.failed as f64,
                )];
                if round.shipped > 0 {
                    samples.push(sample(
                        "dbsafe_wal_last_archived_timestamp_seconds",
                        "When walship last archived a WAL file (Unix time).",
                        chrono::Utc::now().timestamp() as f64,
                    ));
                }
                if round.failed > 0 {
                    samples.push(sample(
                        "dbsafe_wal_last_failure_timestamp_seconds",
                        "When a WAL push last failed (Unix time).",
                        chrono::Utc::now().timestamp() as f64,
                    ));
                }
                sink.record("walship", &samples);
            };
            let record_push = |ok: bool| {
                record(walspool::Round {
                    shipped: usize::from(ok),
                    failed: usize::from(!ok),
                })
            };
            if let (true, Some(dir)) = (asynchronous, &spool) {
                let max = spool_max
                    .as_deref()
                    .map(dbsafe::units::parse_size)
                    .transpose()?
                    .unwrap_or(walspool::DEFAULT_MAX);
                let spool = walspool::Spool::open(dir, max)?;
                if std::env::var_os(SHIPPER).is_some() {
                    // The background shipper: the queue to every store, four at a time.
                    // An async push reports to the metrics when it is shipped;
                    // the stores are opened only by the process that ships.
                    spool.waiting(SHIPPER_WAIT).ship(
                        4,
                        open_stores,
                        &|stores, p, f| push_everywhere(stores, p, f, &opts).map(drop),
                        &record,
                    )?;
                    return Ok(ExitCode::Success);
                }
                // A full spool still gets a shipper: once the stores take
                // the queue again, PostgreSQL's retry of this push succeeds.
                let queued = spool.enqueue(&path, &file);
                start_shipper(dir)?;
                queued?;
                log.debug(format!("{file} is durable in the spool {}", dir.display()));
                return Ok(ExitCode::Success);
            }
            let stores = open_stores()?;
            let described: Vec<String> = stores.iter().map(|s| s.describe()).collect();
            let pushed = push_everywhere(&stores, &path, &file, &opts);
            record_push(pushed.is_ok());
            for (store, pushed) in described.iter().zip(pushed?) {
                match pushed {
                    Pushed::Archived { key, size } => log.debug(format!(
                        "archived {file} as {key} ({}) in store {store} in {:.0} ms",
                        dbsafe::units::human_bytes(size),
                        clock.elapsed().as_secs_f64() * 1000.0
                    )),
                    Pushed::AlreadyArchived => log.info(format!(
                        "{file} is already archived with identical contents in store {store}"
                    )),
                }
            }
            Ok(ExitCode::Success)
        }
        Command::Fetch {
            file,
            path,
            from,
            keys,
        } => {
            // A store that does not exist is an error (255), never "not archived".
            let store = store_of(from, &cfg, false)?;
            let keyring = keys.keyring(&cfg)?;
            match walarchive::fetch(store.as_ref(), &file, &path, &keyring)? {
                Fetched::Restored => {
                    log.debug(format!("restored {file}"));
                    Ok(ExitCode::Success)
                }
                Fetched::Missing => Ok(ExitCode::NotFound),
            }
        }
        Command::RestorePoint { name, url, to } => {
            let url = url
                .or_else(|| cfg.env(&env).and_then(|e| e.url.clone()))
                .ok_or_else(|| {
                    Error::usage("restore-point needs the server's URL").hint(format!(
                        "give it, or set url in [env.{env}] of the config file"
                    ))
                })?;
            let engine = dbsafe::engine::open(&url)?;
            let (lsn, timeline) = engine.restore_point(&name)?;
            if let Some(loc) = to.or_else(|| cfg.defaults.store.clone()) {
                let store = dbsafe::store::open(&loc, false)?;
                walarchive::record_restore_point(
                    store.as_ref(),
                    &walarchive::RestorePoint {
                        name: name.clone(),
                        lsn,
                        timeline,
                        created_at: chrono::Utc::now().to_rfc3339(),
                    },
                )?;
            }
            log.info(format!(
                "restore point {name:?} created at {lsn} on {}; recover to it with dbrestore --target-name {name}",
                engine.url()
            ));
            if cli.common.json {
                dbsafe::cli::print_json(
                    &serde_json::json!({"name": name, "lsn": lsn, "server": engine.url()}),
                )?;
            }
            Ok(ExitCode::Success)
        }
        Command::List { from } => {
            let store = store_of(from, &cfg, false)?;
            let files = walarchive::list(store.as_ref())?;
            if cli.common.json {
                dbsafe::cli::print_json(&files)?;
            } else {
                for f in &files {
                    dbsafe::outln!("{}\t{}\t{}", f.wal_file, f.size, f.modified.to_rfc3339())?;
                }
            }
            Ok(ExitCode::Success)
        }
        Command::Status {
            from,
            max_lag,
            spool,
        } => {
            let store = store_of(from, &cfg, false)?;
            let health = dbsafe::health::wal_health(store.as_ref(), chrono::Utc::now())?;
            let max_lag = max_lag
                .as_deref()
                .map(dbsafe::units::parse_duration)
                .transpose()?;
            let mut problems = Vec::new();
            match &health {
                None => problems.push("the WAL archive is empty".to_string()),
                Some(h) => {
                    problems.extend(h.tip.gap_problem());
                    problems.extend(max_lag.and_then(|max| h.tip.lag_problem(max, "--max-lag")));
                }
            }
            let queued = match spool {
                Some(dir) => {
                    let spool = walspool::Spool::open(&dir, walspool::DEFAULT_MAX)?;
                    for (file, said) in spool.conflicts()? {
                        problems.push(format!("the spool cannot ship {file}: {said}"));
                    }
                    Some(spool.queued()?.len())
                }
                None => None,
            };
            if cli.common.json {
                dbsafe::cli::print_json(
                    &serde_json::json!({"wal": health, "spool_queued": queued, "problems": problems, "ok": problems.is_empty()}),
                )?;
            } else {
                if let Some(h) = &health {
                    dbsafe::outln!("{}", h.summary())?;
                    for t in &h.timelines {
                        dbsafe::outln!("  {}", t.summary())?;
                    }
                }
                if let Some(n) = queued {
                    dbsafe::outln!("spool: {n} files queued")?;
                }
            }
            for p in &problems {
                log.warn(p);
            }
            Ok(if problems.is_empty() {
                ExitCode::Success
            } else {
                ExitCode::Failure
            })
        }
        Command::Prune {
            from,
            before,
            keep_for_backups,
            dry_run,
        } => {
            let store = store_of(from, &cfg, false)?;
            let cutoff = match (before, keep_for_backups) {
                (Some(seg), _) => {
                    WalName::parse(&seg)
                        .ok_or_else(|| {
                            Error::usage(format!("--before {seg:?} is not a WAL segment name"))
                        })?
                        .segno
                }
                (None, true) => {
                    match dbsafe::walarchive::oldest_needed(store.as_ref(), &Default::default())? {
                        Some(s) => s,
                        None => {
                            log.warn("no base backup in the store: nothing can be pruned safely");
                            return Ok(ExitCode::Success);
                        }
                    }
                }
                (None, false) => {
                    return Err(Error::usage(
                        "walship prune needs --before SEGMENT or --keep-for-backups",
                    ))
                }
            };
            let mut n = 0;
            for f in walarchive::list(store.as_ref())? {
                let name = WalName::parse(&f.wal_file).expect("listed names parse");
                if dbsafe::wal::prunable(&name, cutoff) {
                    if dry_run {
                        log.info(format!("would delete {}", f.wal_file));
                    } else {
                        walarchive::delete(store.as_ref(), &f.key)?;
                        log.debug(format!("deleted {}", f.wal_file));
                    }
                    n += 1;
                }
            }
            log.info(format!(
                "{} {n} WAL files before {}",
                if dry_run { "would delete" } else { "deleted" },
                WalName::segment_name(1, cutoff).get(8..).unwrap_or("")
            ));
            Ok(ExitCode::Success)
        }
    }
}
