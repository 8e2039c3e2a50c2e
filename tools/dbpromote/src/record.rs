//! Recording a promotion as it goes: the manifest (saved after every step,
//! so a run that dies still shows how far it got and pins its backups), the
//! audit log, the metrics, and the report at the end.

use crate::ops::{self, Backup};
use crate::{Ctx, EnvSpec};
use dbsafe::audit::AuditEntry;
use dbsafe::engine::Engine;
use dbsafe::metrics::Sample;
use dbsafe::release::{self, BackupRef, Manifest, Status, Step};
use dbsafe::{Error, ExitCode, Result, Store};
use std::time::Instant;

/// An interrupted run ends as interrupted (exit 130), whatever its step made of it.
fn interruption(outcome: Result<()>) -> Result<()> {
    if !crate::interrupted() {
        return outcome;
    }
    Err(Error::new(
        ExitCode::Interrupted,
        match outcome {
            Ok(()) => "interrupted".to_string(),
            Err(e) => format!("interrupted: {}", e.message),
        },
    ))
}

/// A promotion or rollback under way.
pub(crate) struct Recorder<'a> {
    ctx: &'a Ctx,
    /// The manifest being written.
    pub m: Manifest,
    /// Where the manifest goes: the target's store first, then any store
    /// whose backups it names (the source's, for a refresh), to pin them there.
    stores: Vec<&'a dyn Store>,
    /// The target store's audit log, opened when the run took its lock.
    audit_log: &'a dbsafe::audit::Log,
    clock: Instant,
    /// `promote`, `refresh` or `rollback`.
    action: &'static str,
    /// An interrupt waits for the manifest and the audit entry.
    _finishing: dbsafe::cleanup::Finishing,
}

impl<'a> Recorder<'a> {
    pub fn new(
        ctx: &'a Ctx,
        m: Manifest,
        stores: Vec<&'a dyn Store>,
        audit_log: &'a dbsafe::audit::Log,
        action: &'static str,
    ) -> Recorder<'a> {
        Recorder {
            ctx,
            m,
            stores,
            audit_log,
            clock: Instant::now(),
            action,
            _finishing: dbsafe::cleanup::Finishing::new(),
        }
    }

    fn steps(&mut self) -> &mut Vec<Step> {
        match &mut self.m.rollback {
            Some(r) if self.action == "rollback" => &mut r.steps,
            _ => &mut self.m.steps,
        }
    }

    /// Writes the manifest to every store; a failure warns (the run goes on,
    /// the final save reports it as an error).
    pub fn save(&mut self) -> Result<()> {
        self.m.duration_seconds = self.clock.elapsed().as_secs_f64();
        let mut first_err = None;
        for s in &self.stores {
            if let Err(e) = release::write(*s, &self.m) {
                self.ctx.log.warn(format!(
                    "cannot write the release manifest {} to store {}: {e}",
                    self.m.key(),
                    s.describe()
                ));
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    /// Runs one step and records it; `f` may describe what it did in its `&mut String`.
    pub fn step<T>(&mut self, name: &str, f: impl FnOnce(&mut String) -> Result<T>) -> Result<T> {
        let started_at = release::now();
        let clock = Instant::now();
        self.ctx.log.info(format!("{name} ..."));
        let mut detail = String::new();
        let r = f(&mut detail);
        let (result, detail) = match &r {
            Ok(_) => ("ok", detail),
            Err(e) if detail.is_empty() => ("failed", e.to_string()),
            Err(e) => ("failed", format!("{detail}; {e}")),
        };
        let took = clock.elapsed();
        self.ctx.log.info(format!(
            "{name}: {result} ({}){}",
            dbsafe::units::human_duration(took),
            if detail.is_empty() {
                String::new()
            } else {
                format!(": {detail}")
            }
        ));
        self.steps().push(Step {
            name: name.into(),
            started_at,
            duration_seconds: took.as_secs_f64(),
            result: result.into(),
            detail,
        });
        let _ = self.save();
        r
    }

    /// Records a step that did not run, and why.
    pub fn skip(&mut self, name: &str, why: &str) {
        self.ctx.log.info(format!("{name}: skipped ({why})"));
        self.steps().push(Step {
            name: name.into(),
            started_at: release::now(),
            duration_seconds: 0.0,
            result: "skipped".into(),
            detail: why.into(),
        });
        let _ = self.save();
    }

    /// Asks for the target's name to be typed (or `--yes`), as the `confirm` step.
    pub fn confirm(&mut self, action: &str, name: &str) -> Result<()> {
        let change = &self.ctx.args.change;
        let yes = change.yes;
        self.step("confirm", |d| {
            change.confirm("dbpromote", action, name)?;
            *d = if yes {
                "--yes"
            } else {
                "typed on the terminal"
            }
            .into();
            Ok(())
        })
    }

    /// Runs a configured command as step `name`; `label` prefixes its output.
    pub fn shell(
        &mut self,
        name: &str,
        label: &str,
        cmd: &str,
        env: &[(String, String)],
    ) -> Result<()> {
        let ctx = self.ctx;
        self.step(name, |d| {
            *d = ops::shell(ctx, label, cmd, env)?;
            Ok(())
        })
    }

    /// Like [`Recorder::shell`] for a command that may not be configured:
    /// without one the step is skipped as `no <setting> command`.
    pub fn optional_shell(
        &mut self,
        name: &str,
        label: &str,
        cmd: Option<&str>,
        env: &[(String, String)],
        setting: &str,
    ) -> Result<()> {
        match cmd {
            Some(c) => self.shell(name, label, c, env),
            None => {
                self.skip(name, &format!("no {setting} command"));
                Ok(())
            }
        }
    }

    /// The environment's health check as step `health-check`, skipped when
    /// it has none.
    pub fn health_check(&mut self, target: &EnvSpec, env: &[(String, String)]) -> Result<()> {
        self.optional_shell(
            "health-check",
            "health check",
            target.commands.health_check.as_deref(),
            env,
            "health_check",
        )
    }

    /// Verifies a backup in its store at level full, as the `verify` step.
    pub fn verify(&mut self, store: &dyn Store, backup: &Backup) -> Result<()> {
        let ctx = self.ctx;
        self.step("verify", |d| {
            *d = ops::verify_backup(ctx, store, backup)?;
            Ok(())
        })
    }

    /// Names `backup` in the manifest where `slot` says (which pins it),
    /// verifies it, and records that it passed.
    pub fn pin_verified(
        &mut self,
        store: &dyn Store,
        backup: &Backup,
        slot: fn(&mut Manifest) -> &mut Option<BackupRef>,
    ) -> Result<()> {
        *slot(&mut self.m) = Some(backup.r.clone());
        self.verify(store, backup)?;
        if let Some(r) = slot(&mut self.m) {
            r.verified = true;
        }
        Ok(())
    }

    /// Restores a backup into a side database, as step `name`.
    pub fn restore(
        &mut self,
        name: &str,
        store: &dyn Store,
        backup: &Backup,
        side: &dyn Engine,
    ) -> Result<()> {
        let ctx = self.ctx;
        self.step(name, |d| {
            *d = ops::restore_into(ctx, store, backup, side)?;
            Ok(())
        })
    }

    /// The backup the audit entry names.
    fn backup(&self) -> String {
        self.m
            .source_backup
            .as_ref()
            .or(self.m.pre_release_backup.as_ref())
            .map(|b| b.name.clone())
            .or_else(|| self.m.previous_database.clone())
            .unwrap_or_default()
    }

    /// Ends a promotion: status, manifest, audit entry, metrics, report.
    pub fn conclude(mut self, outcome: Result<()>) -> Result<ExitCode> {
        let outcome = interruption(outcome);
        let status = match &outcome {
            Ok(()) => Status::Success,
            Err(e) if e.code() == ExitCode::Refused => Status::Refused,
            Err(_) => Status::Failed,
        };
        self.m.status = status;
        self.m.finished_at = Some(release::now());
        let saved = self.save();
        let result = match status {
            Status::Success => "success",
            Status::Refused => "refused",
            _ => "failure",
        };
        self.audit(result, outcome.as_ref().err());
        let mut samples = vec![Sample::new(
            "dbsafe_release_promoted_total",
            "Promotions (releases and refreshes) by final status.",
            &self.m.to,
            &self.m.database,
            1.0,
        )
        .label("status", status.as_str())];
        samples.extend(self.step_samples(&self.m.steps));
        if status == Status::Success {
            samples.push(self.sample(
                "dbsafe_release_last_success_timestamp_seconds",
                "When the last successful promotion finished (Unix time).",
                chrono::Utc::now().timestamp() as f64,
            ));
            samples.push(self.sample(
                "dbsafe_release_duration_seconds",
                "How long the last successful promotion took.",
                self.m.duration_seconds,
            ));
        }
        if let Some(ms) = self.m.swap_ms {
            samples.push(self.sample(
                "dbsafe_release_swap_duration_seconds",
                "How long the target was unavailable during the last swap.",
                ms as f64 / 1000.0,
            ));
        }
        self.finish(&samples, outcome, saved)
    }

    /// Ends a rollback: the rollback record, the manifest's status, audit, metrics, report.
    pub fn conclude_rollback(mut self, outcome: Result<()>) -> Result<ExitCode> {
        let outcome = interruption(outcome);
        let ok = outcome.is_ok();
        if let Some(r) = &mut self.m.rollback {
            r.finished_at = release::now();
            r.status = if ok { "success" } else { "failed" }.into();
        }
        if ok {
            self.m.status = Status::RolledBack;
        }
        let saved = self.save();
        let refused = matches!(&outcome, Err(e) if e.code() == ExitCode::Refused);
        self.audit(
            if ok {
                "success"
            } else if refused {
                "refused"
            } else {
                "failure"
            },
            outcome.as_ref().err(),
        );
        let steps = self
            .m
            .rollback
            .as_ref()
            .map(|r| r.steps.clone())
            .unwrap_or_default();
        let mut samples = vec![Sample::new(
            "dbsafe_release_rollbacks_total",
            "Rollbacks of promotions by result.",
            &self.m.to,
            &self.m.database,
            1.0,
        )
        .label(
            "status",
            if ok {
                "success"
            } else if refused {
                "refused"
            } else {
                "failed"
            },
        )];
        samples.extend(self.step_samples(&steps));
        self.finish(&samples, outcome, saved)
    }

    /// What both conclusions end with: metrics, the report, then the
    /// outcome and, when the step succeeded, the final save's error.
    fn finish(
        &self,
        samples: &[Sample],
        outcome: Result<()>,
        saved: Result<()>,
    ) -> Result<ExitCode> {
        self.ctx
            .args
            .common
            .metrics(&self.ctx.cfg)
            .record("dbpromote", samples);
        self.report()?;
        outcome?;
        saved?;
        Ok(ExitCode::Success)
    }

    fn sample(&self, name: &'static str, help: &'static str, v: f64) -> Sample {
        Sample::new(name, help, &self.m.to, &self.m.database, v)
    }

    fn step_samples(&self, steps: &[Step]) -> Vec<Sample> {
        steps
            .iter()
            .filter(|s| s.result != "skipped")
            .map(|s| {
                self.sample(
                    "dbsafe_release_step_duration_seconds",
                    "How long each step of the last promotion or rollback took.",
                    s.duration_seconds,
                )
                .label("step", &s.name)
            })
            .collect()
    }

    fn audit(&self, result: &str, err: Option<&Error>) {
        let mut a = AuditEntry::new("dbpromote", self.action, &self.backup(), &self.m.target);
        a.result = result.into();
        a.duration_seconds = self.clock.elapsed().as_secs_f64();
        let steps = match (&self.m.rollback, self.action) {
            (Some(r), "rollback") => &r.steps,
            _ => &self.m.steps,
        };
        a.details = serde_json::json!({
            "kind": self.m.kind.as_str(),
            "version": self.m.version,
            "from": self.m.from,
            "to": self.m.to,
            "manifest": self.m.key(),
            "status": self.m.status.as_str(),
            "pre_release_backup": self.m.pre_release_backup.as_ref().map(|b| &b.name),
            "source_backup": self.m.source_backup.as_ref().map(|b| &b.name),
            "previous_database": self.m.previous_database,
            "swap_ms": self.m.swap_ms,
            "rollback": self.m.rollback.as_ref().map(|r| serde_json::json!({"method": r.method, "kept_database": r.kept_database})),
            "steps": steps,
            "error": err.map(|e| e.message.clone()),
        });
        if let Err(e) = self.audit_log.append(&a) {
            self.ctx.log.warn(format!(
                "cannot write the audit log {}: {e}",
                self.audit_log.path().display()
            ));
        }
    }

    /// The report on stdout: the manifest as JSON, or a table of steps.
    fn report(&self) -> Result<()> {
        if self.ctx.args.common.json {
            return dbsafe::cli::print_json(&self.m);
        }
        let m = &self.m;
        let (what, steps, status) = match (&m.rollback, self.action) {
            (Some(r), "rollback") => (
                format!(
                    "rollback of {} {} on {} ({})",
                    m.kind.as_str(),
                    m.version,
                    m.to,
                    r.method
                ),
                &r.steps,
                r.status.clone(),
            ),
            _ => (
                format!("{} {}: {} → {}", m.kind.as_str(), m.version, m.from, m.to),
                &m.steps,
                m.status.as_str().to_string(),
            ),
        };
        dbsafe::outln!(
            "{what}: {status} in {:.1}s",
            self.clock.elapsed().as_secs_f64()
        )?;
        for s in steps {
            dbsafe::outln!(
                "  {:<24} {:<8} {:>8.2}s  {}",
                s.name,
                s.result,
                s.duration_seconds,
                s.detail
            )?;
        }
        if self.action != "rollback" {
            if let Some(ms) = m.swap_ms {
                dbsafe::outln!("  swap: {ms} ms")?;
            }
            if let Some(b) = &m.pre_release_backup {
                dbsafe::outln!("  pre-release backup: {} (store {})", b.name, b.store)?;
            }
            if let Some(b) = &m.source_backup {
                dbsafe::outln!("  source backup: {} (store {})", b.name, b.store)?;
            }
            if let Some(p) = &m.previous_database {
                dbsafe::outln!(
                    "  previous database kept as {p} (dbpromote --rollback --to {} swaps it back)",
                    m.to
                )?;
            }
        } else if let Some(k) = m.rollback.as_ref().and_then(|r| r.kept_database.as_ref()) {
            dbsafe::outln!("  the database that was live is kept as {k}")?;
        }
        dbsafe::outln!(
            "  manifest: {} (store {})",
            m.key(),
            self.stores
                .first()
                .map(|s| s.describe())
                .unwrap_or_default()
        )?;
        Ok(())
    }
}
