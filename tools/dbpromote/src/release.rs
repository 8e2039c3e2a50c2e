//! A release: a schema version moves one step up the chain, rehearsed on a
//! restored copy of the target before it touches the target.

use crate::ops::{self, Backup, Parts, SideDb};
use crate::record::Recorder;
use crate::{Ctx, EnvSpec, Plan};
use dbsafe::engine::side::{self, Home};
use dbsafe::release::{self as rel, Kind, Status};
use dbsafe::{Error, ExitCode, Result, Store};

pub(crate) fn run(ctx: &Ctx) -> Result<ExitCode> {
    let version = ctx
        .args
        .version
        .clone()
        .expect("checked: releases have --version");
    rel::validate_version(&version)?;
    let source = ctx.source()?;
    let target = ctx.target()?;
    let gated = rel::release_route(&ctx.chain(), &source.name, &target.name)?;
    let migrate = target.commands.migrate.clone().ok_or_else(|| {
        Error::usage(format!("no migrate command for {}", target.name)).hint(format!(
            "set migrate in [env.{}] or pass --migrate CMD",
            target.name
        ))
    })?;
    let engine = dbsafe::engine::open(&target.url)?;
    let home = side::home(&target.url)?;
    ctx.require_identity(&target, "rehearsal")?;
    ctx.args
        .change
        .require_confirmation_possible(&target.name)?;
    let store = ops::open_store(&target.store, ctx.args.change.dry_run)?;
    let hold = ops::lock_target(ctx, store.as_deref(), home.as_ref(), &target.name)?;
    let gate = if gated {
        let s = dbsafe::store::open(&source.store, false)
            .map_err(|e| e.context(format!("{}'s store, for the release gate", source.name)))?;
        Some(rel::check_gate(
            rel::read(s.as_ref(), &source.name, &version)?.as_ref(),
            &source.name,
            &version,
            &s.describe(),
        )?)
    } else {
        None
    };
    let existing = match &store {
        Some(s) => rel::read(s.as_ref(), &target.name, &version)?,
        None => None,
    };
    if let Some(m) = &existing {
        if m.status == Status::Success {
            return Err(Error::refused(format!(
                "version {version} was already promoted to {} (finished {})",
                target.name,
                m.finished_at.as_deref().unwrap_or("?")
            ))
            .hint(format!(
                "release a new version, or roll this one back first: dbpromote --rollback --to {}",
                target.name
            )));
        }
    }
    if !engine.exists()? {
        return Err(Error::not_found(format!(
            "the target database {} does not exist",
            engine.url()
        ))
        .hint("a release migrates an existing database; create it (or restore it) first"));
    }
    let parts = Parts {
        version: &version,
        source: &source,
        target: &target,
        engine: engine.as_ref(),
        home: home.as_ref(),
    };
    if ctx.args.change.dry_run {
        return plan(ctx, &parts, gate.as_deref()).print(ctx);
    }
    let store = store.expect("opened with create outside dry runs");
    let audit_log = &hold.as_ref().expect("held outside dry runs").audit;
    let mut m = parts.manifest(Kind::Release);
    m.gate = gate.clone();
    if let Some(prev) = existing {
        m.previous_attempts = prev.previous_attempts.clone();
        m.previous_attempts
            .push(serde_json::to_value(&prev).map_err(|e| Error::failed(e.to_string()))?);
    }
    let mut rec = Recorder::new(ctx, m, vec![store.as_ref()], audit_log, "promote");
    rec.step("gate", |d| {
        *d = gate.unwrap_or_else(|| {
            format!("{} is the chain's first environment: no gate", source.name)
        });
        Ok(())
    })?;
    let outcome = execute(ctx, &mut rec, &parts, &migrate, store.as_ref());
    rec.conclude(outcome)
}

/// The steps, from the pre-release backup (into `store`) to the report of a failure.
fn execute(
    ctx: &Ctx,
    rec: &mut Recorder<'_>,
    parts: &Parts<'_>,
    migrate: &str,
    store: &dyn Store,
) -> Result<()> {
    let Parts {
        version,
        target,
        engine,
        home,
        ..
    } = *parts;
    let b = &target.name;
    let backup = rec.step("backup", |d| {
        let labels = ops::labels("pre-release backup (dbpromote)".into(), "release", version);
        let taken = ops::take_backup(ctx, engine, store, b, labels)?;
        *d = taken.r.name.clone();
        Ok(taken)
    })?;
    rec.pin_verified(store, &backup, |m| &mut m.pre_release_backup)?;

    rehearse(rec, version, target, migrate, home, store, &backup)
        .map_err(|e| e.context(format!("the rehearsal failed; {b} was not changed")))?;

    rec.confirm(
        &format!("migrate {b} ({}) to version {version}", engine.url()),
        b,
    )?;

    let env = ops::command_env(home, &home.target(), b, version, "target");
    let failed_at = match rec.shell("migrate", "migrate", migrate, &env) {
        Err(e) => Some(("migrate", e)),
        Ok(()) => rec
            .health_check(target, &env)
            .err()
            .map(|e| ("health-check", e)),
    };
    let Some((step, err)) = failed_at else {
        return Ok(());
    };
    let downgraded = match &target.commands.downgrade {
        Some(cmd) => {
            let env = ops::command_env(home, &home.target(), b, version, "downgrade");
            Some(rec.shell("downgrade", "downgrade", cmd, &env))
        }
        None => {
            rec.skip("downgrade", "no downgrade command");
            None
        }
    };
    let state = match (step, &downgraded) {
        (_, Some(Ok(()))) => "the downgrade ran and succeeded: it should be back on its previous schema; check it".to_string(),
        (_, Some(Err(e))) => format!("the downgrade failed too ({}): its state is unknown", e.message),
        ("migrate", None) => "the migration failed part-way and there is no downgrade command: it is in whatever state the migration left".to_string(),
        _ => "the migration ran but the health check failed, and there is no downgrade command: it is on the new schema".to_string(),
    };
    let pre = rec
        .m
        .pre_release_backup
        .as_ref()
        .map(|r| r.name.clone())
        .unwrap_or_default();
    let restore = format!(
        "dbrestore --store {} --name {} --target {} --clean --yes",
        dbsafe::fsutil::shell_quote(&store.describe()),
        dbsafe::fsutil::shell_quote(&pre),
        dbsafe::fsutil::shell_quote(&engine.url())
    );
    Err(Error::failed(format!(
        "the {step} step failed on {b}: {}. State of {b}: {state}",
        err.message
    ))
    .hint(format!(
        "to restore the pre-release backup: {restore}   (or: dbpromote --rollback --to {b} --version {version} --restore-backup, which restores it into a side database and swaps it in)"
    )))
}

/// The rehearsal: the pre-release backup restored into a side database,
/// migrated and health-checked there, then dropped whatever happened.
fn rehearse(
    rec: &mut Recorder<'_>,
    version: &str,
    target: &EnvSpec,
    migrate: &str,
    home: &dyn Home,
    store: &dyn Store,
    backup: &Backup,
) -> Result<()> {
    let side = SideDb::new(home, home.side_name(&side::owned_tag("rehearsal")))?;
    let env = ops::command_env(home, &side.name, &target.name, version, "rehearsal");
    let result = (|| -> Result<()> {
        rec.restore("rehearsal-restore", store, backup, side.engine())?;
        rec.shell("rehearsal-migrate", "rehearsal migrate", migrate, &env)?;
        rec.optional_shell(
            "rehearsal-health-check",
            "rehearsal health check",
            target.commands.health_check.as_deref(),
            &env,
            "health_check",
        )
    })();
    let dropped = rec.step("rehearsal-drop", |d| {
        *d = side.remove()?;
        Ok(())
    });
    result?;
    dropped.map_err(|e| e.hint("drop the rehearsal database by hand; the target was not changed"))
}

fn plan(ctx: &Ctx, parts: &Parts<'_>, gate: Option<&str>) -> Plan {
    let (version, source, target, engine) =
        (parts.version, parts.source, parts.target, parts.engine);
    let b = &target.name;
    let mut steps = vec![match gate {
        Some(g) => format!(
            "gate: {version} was promoted successfully to {} ({g})",
            source.name
        ),
        None => format!(
            "gate: none ({} is the chain's first environment)",
            source.name
        ),
    }];
    steps.push(parts.lock_step());
    steps.push(format!(
        "pre-release backup of {} into store {} (pinned by the manifest)",
        engine.url(),
        target.store
    ));
    steps.push("verify it (level full)".into());
    let side = parts.home.side_name("rehearsal_XXXXXXXX");
    steps.push(format!(
        "rehearsal: restore it into the side database {side}"
    ));
    steps.push(format!(
        "rehearsal: run `{}` with DATABASE_URL set to {side}",
        target.commands.migrate.as_deref().unwrap_or("")
    ));
    steps.push(match &target.commands.health_check {
        Some(h) => format!("rehearsal: run `{h}` against {side}"),
        None => "rehearsal: no health check command".into(),
    });
    steps.push(format!(
        "rehearsal: drop {side} (a failure so far leaves {b} untouched)"
    ));
    steps.push(ctx.args.change.confirm_step(b));
    steps.push(format!(
        "run `{}` on {}",
        target.commands.migrate.as_deref().unwrap_or(""),
        engine.url()
    ));
    steps.push(match &target.commands.health_check {
        Some(h) => format!("run `{h}` against {}", engine.url()),
        None => "no health check command".into(),
    });
    steps.push(match &target.commands.downgrade {
        Some(d) => format!("on failure: run `{d}`, report {b}'s state and how to restore the pre-release backup"),
        None => format!("on failure: report {b}'s state and how to restore the pre-release backup (no downgrade command)"),
    });
    steps.push(parts.record_step(None));
    parts.plan("release", steps)
}
