//! `--history`: an environment's promotions, oldest first.

use crate::Ctx;
use dbsafe::release;
use dbsafe::{ExitCode, Result};

pub(crate) fn run(ctx: &Ctx) -> Result<ExitCode> {
    let target = ctx.target()?;
    let store = dbsafe::store::open(&target.store, false)?;
    let list = release::history(store.as_ref(), &target.name)?;
    if ctx.args.common.json {
        dbsafe::cli::print_json(&list)?;
        return Ok(ExitCode::Success);
    }
    if list.is_empty() {
        ctx.log.info(format!(
            "no promotions of {} in store {}",
            target.name,
            store.describe()
        ));
        return Ok(ExitCode::Success);
    }
    dbsafe::outln!(
        "{:<26} {:<8} {:<12} {:<12} {:<25} {:>8}  BACKUP",
        "VERSION",
        "KIND",
        "FROM",
        "STATUS",
        "STARTED",
        "SECONDS"
    )?;
    for m in &list {
        let backup = m
            .pre_release_backup
            .as_ref()
            .or(m.source_backup.as_ref())
            .map(|b| b.name.as_str())
            .unwrap_or("-");
        dbsafe::outln!(
            "{:<26} {:<8} {:<12} {:<12} {:<25} {:>8.1}  {backup}",
            m.version,
            m.kind.as_str(),
            m.from,
            m.status.as_str(),
            m.started_at,
            m.duration_seconds
        )?;
    }
    Ok(ExitCode::Success)
}
