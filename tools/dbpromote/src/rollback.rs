//! Rollback: undo the last successful promotion of an environment.
//!
//! A refresh is undone by swapping the previous database back in; a release
//! by its downgrade command, or by restoring its pre-release backup into a
//! side database and swapping that in. Whatever was live before the swap is
//! kept as `<db>_dbpromote_rolledback_<stamp>`, so the writes a rollback
//! undoes are set aside, not destroyed.

use crate::ops::{self, SideDb};
use crate::record::Recorder;
use crate::refresh::swap_detail;
use crate::{Ctx, EnvSpec, Plan};
use dbsafe::engine::side::{self, Home};
use dbsafe::engine::Engine;
use dbsafe::meta::TableCount;
use dbsafe::release::{self as rel, Kind, Manifest, Rollback, Status};
use dbsafe::{Error, ExitCode, Result, Store};

/// How a promotion is undone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Method {
    SwapPrevious,
    Downgrade,
    RestoreBackup,
}

impl Method {
    fn as_str(self) -> &'static str {
        match self {
            Method::SwapPrevious => "swap-previous",
            Method::Downgrade => "downgrade",
            Method::RestoreBackup => "restore-backup",
        }
    }
}

pub(crate) fn run(ctx: &Ctx) -> Result<ExitCode> {
    let a = &ctx.args;
    let target = ctx.target()?;
    let b = target.name.clone();
    let engine = dbsafe::engine::open(&target.url)?;
    let home = side::home(&target.url)?;
    let store = dbsafe::store::open(&target.store, false)?;
    ctx.args.change.require_confirmation_possible(&b)?;
    let hold = ops::lock_target(ctx, Some(store.as_ref()), home.as_ref(), &b)?;
    let history = rel::history(store.as_ref(), &b)?;
    let m = rel::rollback_candidate(&history, a.version.as_deref(), &b)?.clone();
    // After the rollback the environment is back on the release before this one.
    let previous = history
        .iter()
        .rfind(|h| {
            h.kind == Kind::Release
                && h.status == Status::Success
                && h.version != m.version
                && h.started() < m.started()
        })
        .map(|h| h.version.clone())
        .unwrap_or_default();
    let method = match m.kind {
        Kind::Refresh => Method::SwapPrevious,
        Kind::Release if !a.restore_backup && target.commands.downgrade.is_some() => {
            Method::Downgrade
        }
        Kind::Release => Method::RestoreBackup,
    };
    if method == Method::Downgrade && m.downgraded() {
        return Err(Error::refused(format!(
            "{} failed, and its downgrade ran already: running it again would undo the release before it too",
            m.version
        ))
        .hint("check the target; to put back the database from before the release: --restore-backup"));
    }
    if m.kind == Kind::Refresh && (a.restore_backup || a.commands.downgrade.is_some()) {
        return Err(Error::usage(format!(
            "{} was a refresh: it is rolled back by swapping the previous database back, not by --restore-backup or --downgrade",
            m.version
        )));
    }
    let kept = home.side_name(&side::stamped_tag("rolledback"));
    let backup = match method {
        Method::SwapPrevious => {
            let prev = named(&m.previous_database, &m.version, "previous database")?;
            if !home.exists(&prev)? {
                return Err(Error::not_found(format!(
                    "the previous database {prev} of refresh {} no longer exists",
                    m.version
                ))
                .hint("restore a backup of the environment instead (dbrestore)"));
            }
            None
        }
        Method::RestoreBackup => {
            let pre = named(&m.pre_release_backup, &m.version, "pre-release backup")?;
            Some(ops::existing_backup(
                store.as_ref(),
                &b,
                &engine.database(),
                Some(&pre.name),
            )?)
        }
        Method::Downgrade => None,
    };
    let loss = match method {
        Method::Downgrade => None,
        Method::SwapPrevious => Some(format!(
            "writes to {b} since the refresh {} finished ({}) will not be in the database swapped back in",
            m.version,
            m.finished_at.as_deref().unwrap_or("?")
        )),
        Method::RestoreBackup => {
            let bk = backup.as_ref().expect("restore-backup has a backup");
            let now = engine.tables().unwrap_or_default();
            let then = bk.meta.as_ref().map(|m| m.tables.clone()).unwrap_or_default();
            Some(format!(
                "writes to {b} since the pre-release backup {} was taken ({}) will be lost from the live database{}",
                bk.r.name,
                bk.r.taken_at,
                table_changes(&then, &now)
            ))
        }
    };
    if let Some(l) = &loss {
        ctx.log
            .warn(format!("{l}; the current database will be kept as {kept}"));
    }
    if a.change.dry_run {
        return plan(
            ctx,
            &m,
            method,
            &target,
            engine.as_ref(),
            &kept,
            loss.as_deref(),
        )
        .print(ctx);
    }
    let mut m = m;
    m.rollback = Some(Rollback {
        method: method.as_str().into(),
        user: dbsafe::fsutil::current_user(),
        host: dbsafe::fsutil::host_name(),
        started_at: rel::now(),
        finished_at: String::new(),
        status: "running".into(),
        steps: Vec::new(),
        kept_database: None,
    });
    let audit_log = &hold.as_ref().expect("held outside dry runs").audit;
    let mut rec = Recorder::new(ctx, m, vec![store.as_ref()], audit_log, "rollback");
    let outcome = execute(
        ctx,
        &mut rec,
        method,
        &target,
        home.as_ref(),
        store.as_ref(),
        backup,
        &kept,
        loss.as_deref(),
        &previous,
    );
    rec.conclude_rollback(outcome)
}

/// How row counts moved between the backup and now, for the warning.
fn table_changes(then: &[TableCount], now: &[TableCount]) -> String {
    let mut changes = Vec::new();
    for t in now {
        match then.iter().find(|x| x.name == t.name) {
            Some(x) if x.rows != t.rows => {
                changes.push(format!("{} {} → {} rows", t.name, x.rows, t.rows))
            }
            Some(_) => {}
            None => changes.push(format!("{} is new ({} rows)", t.name, t.rows)),
        }
    }
    for t in then
        .iter()
        .filter(|t| !now.iter().any(|x| x.name == t.name))
    {
        changes.push(format!("{} is gone", t.name));
    }
    if changes.is_empty() {
        " (row counts are unchanged since then)".into()
    } else {
        format!(" (since then: {})", changes.join(", "))
    }
}

#[allow(clippy::too_many_arguments)]
fn execute(
    ctx: &Ctx,
    rec: &mut Recorder<'_>,
    method: Method,
    target: &EnvSpec,
    home: &dyn Home,
    store: &dyn Store,
    backup: Option<ops::Backup>,
    kept: &str,
    loss: Option<&str>,
    previous: &str,
) -> Result<()> {
    let b = &target.name;
    let version = rec.m.version.clone();
    let action = match (method, loss) {
        (Method::Downgrade, _) => format!(
            "roll {b} back from {version} with `{}`",
            target.commands.downgrade.as_deref().unwrap_or("")
        ),
        (_, Some(l)) => {
            format!("roll {b} back from {version}: {l}; the current database is kept as {kept}")
        }
        (_, None) => format!("roll {b} back from {version}"),
    };
    rec.confirm(&action, b)?;
    match method {
        Method::Downgrade => {
            let env = ops::command_env(home, &home.target(), b, &version, "rollback");
            let cmd = target.commands.downgrade.clone().unwrap_or_default();
            rec.shell("downgrade", "downgrade", &cmd, &env)?;
            // The health check checks the version the environment is back on.
            let env = ops::command_env(home, &home.target(), b, previous, "rollback");
            rec.health_check(target, &env)
        }
        Method::SwapPrevious => {
            let prev = rec.m.previous_database.clone().unwrap_or_default();
            let swap = rec.step("swap", |d| {
                let s = home.swap(&prev, kept, ctx.grace)?;
                *d = swap_detail(&s, &home.target(), kept);
                Ok(s)
            })?;
            if let Some(r) = &mut rec.m.rollback {
                r.kept_database = Some(kept.to_string());
            }
            ctx.log.info(format!(
                "swapped {prev} back in as {} in {} ms",
                home.target(),
                swap.duration.as_millis()
            ));
            Ok(())
        }
        Method::RestoreBackup => {
            let backup = backup.expect("restore-backup has a backup");
            rec.verify(store, &backup)?;
            let side = SideDb::new(home, home.side_name(&side::owned_tag("restore")))?;
            let swapped = (|| {
                rec.restore("restore", store, &backup, side.engine())?;
                rec.step("swap", |d| {
                    let s = home.swap(&side.name, kept, ctx.grace)?;
                    *d = swap_detail(&s, &home.target(), kept);
                    Ok(s)
                })
            })();
            match swapped {
                Ok(_) => {
                    side.keep();
                    if let Some(r) = &mut rec.m.rollback {
                        r.kept_database = Some(kept.to_string());
                    }
                    Ok(())
                }
                Err(e) => {
                    let _ = rec.step("drop-side", |d| {
                        *d = side.remove()?;
                        Ok(())
                    });
                    Err(e.context(format!("{b} was not changed")))
                }
            }
        }
    }
}

fn plan(
    ctx: &Ctx,
    m: &Manifest,
    method: Method,
    target: &EnvSpec,
    engine: &dyn Engine,
    kept: &str,
    loss: Option<&str>,
) -> Plan {
    let b = &target.name;
    let mut steps = vec![format!(
        "roll back the {} {} of {b} (status {}, finished {}) by {}",
        m.kind.as_str(),
        m.version,
        m.status.as_str(),
        m.finished_at.as_deref().unwrap_or("?"),
        method.as_str()
    )];
    if let Some(l) = loss {
        steps.push(format!("warn: {l}"));
    }
    steps.push(ctx.args.change.confirm_step(b));
    match method {
        Method::Downgrade => {
            steps.push(format!(
                "run `{}` on {}",
                target.commands.downgrade.as_deref().unwrap_or(""),
                engine.url()
            ));
            if let Some(h) = &target.commands.health_check {
                steps.push(format!("run `{h}`"));
            }
        }
        Method::SwapPrevious => steps.push(format!(
            "swap: rename {} to {kept} and {} back to {}",
            engine.database(),
            m.previous_database.as_deref().unwrap_or("?"),
            engine.database()
        )),
        Method::RestoreBackup => {
            let name = m
                .pre_release_backup
                .as_ref()
                .map(|r| r.name.as_str())
                .unwrap_or("?");
            steps.push(format!("verify {name} (level full)"));
            steps.push(format!(
                "restore {name} into a side database next to {}",
                engine.database()
            ));
            steps.push(format!(
                "swap: rename {} to {kept} and the side database to {}",
                engine.database(),
                engine.database()
            ));
        }
    }
    steps.push(format!(
        "record the rollback in {} and the audit log",
        m.key()
    ));
    Plan {
        dry_run: true,
        kind: format!("rollback ({})", method.as_str()),
        version: m.version.clone(),
        from: None,
        to: b.clone(),
        target: engine.url(),
        store: target.store.clone(),
        steps,
    }
}

/// What the manifest of `version` records as `what`; a manifest without it is an error.
fn named<T: Clone>(field: &Option<T>, version: &str, what: &str) -> Result<T> {
    field
        .clone()
        .ok_or_else(|| Error::failed(format!("the manifest of {version} names no {what}")))
}
