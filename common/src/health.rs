//! Store health (`dbverify --status`): what a morning check or a monitoring probe asks.

use crate::catalog::{self, Entry};
use crate::error::Result;
use crate::store::Store;
use crate::wal::{self, WalName};
use chrono::{DateTime, Utc};
use serde::Serialize;
use std::collections::BTreeMap;
use std::time::Duration;

/// Thresholds.
#[derive(Debug, Clone)]
pub struct Thresholds {
    /// The newest backup (and the newest verified one) of a series must be younger.
    pub max_age: Duration,
    /// Each series must hold at least this many backups.
    pub min_count: usize,
    /// The newest archived WAL must be younger, when set.
    pub max_wal_lag: Option<Duration>,
}

/// One series' health.
#[derive(Debug, Clone, Serialize)]
pub struct SeriesHealth {
    /// `env_database_kind`.
    pub series: String,
    /// Backups held.
    pub count: usize,
    /// Newest backup's file.
    pub newest: String,
    /// Its age in seconds.
    pub newest_age_seconds: i64,
    /// Bytes held.
    pub total_bytes: u64,
    /// Backups whose last verification passed.
    pub verified_count: usize,
    /// When the newest passing verification ran, if ever.
    pub newest_verification: Option<String>,
    /// Age of the newest verified backup, seconds.
    pub newest_verified_age_seconds: Option<i64>,
}

/// The WAL archive's health.
#[derive(Debug, Clone, Serialize)]
pub struct WalHealth {
    /// Segments archived.
    pub segments: usize,
    /// Newest segment name.
    pub newest: Option<String>,
    /// Seconds since it was archived.
    pub newest_age_seconds: Option<i64>,
    /// Missing ranges per timeline (`first..last` segment names).
    pub gaps: Vec<String>,
}

/// The whole report.
#[derive(Debug, Clone, Serialize)]
pub struct Health {
    /// The store.
    pub store: String,
    /// `good`, `degraded` or `critical`.
    pub readiness: String,
    /// Why it is not good.
    pub problems: Vec<String>,
    /// Per series.
    pub series: Vec<SeriesHealth>,
    /// Bytes in all backups.
    pub total_bytes: u64,
    /// WAL archive, when the store has one.
    pub wal: Option<WalHealth>,
}

/// Computes the health of a store.
pub fn assess(store: &dyn Store, t: &Thresholds, now: DateTime<Utc>) -> Result<Health> {
    let entries = catalog::list(store)?;
    let mut by_series: BTreeMap<String, Vec<Entry>> = BTreeMap::new();
    for e in entries {
        by_series.entry(e.name.series()).or_default().push(e);
    }
    let mut critical = Vec::new();
    let mut degraded = Vec::new();
    let mut series = Vec::new();
    let max_age = chrono::Duration::from_std(t.max_age).unwrap_or(chrono::Duration::MAX);
    for (name, list) in &by_series {
        let newest = list.last().expect("non-empty series");
        let mut verified = Vec::new();
        for e in list {
            if let Some(v) = catalog::read_verify(store, e)? {
                if v.passed() {
                    verified.push((e.name.timestamp, v.verified_at.clone()));
                }
            }
        }
        let newest_verified = verified.iter().max_by_key(|v| v.0);
        let age = now - newest.name.timestamp;
        if age > max_age {
            critical.push(format!(
                "{name}: newest backup is {} old (max {})",
                fmt_age(age),
                crate::units::human_duration(t.max_age)
            ));
        }
        if list.len() < t.min_count {
            degraded.push(format!(
                "{name}: {} backups, fewer than --min-count {}",
                list.len(),
                t.min_count
            ));
        }
        match newest_verified {
            None => degraded.push(format!("{name}: no verified backup")),
            Some((ts, _)) if now - *ts > max_age => degraded.push(format!(
                "{name}: newest verified backup is {} old",
                fmt_age(now - *ts)
            )),
            _ => {}
        }
        series.push(SeriesHealth {
            series: name.clone(),
            count: list.len(),
            newest: newest.file(),
            newest_age_seconds: age.num_seconds(),
            total_bytes: list.iter().map(|e| e.object.size).sum(),
            verified_count: verified.len(),
            newest_verification: verified.iter().map(|v| v.1.clone()).max(),
            newest_verified_age_seconds: newest_verified.map(|v| (now - v.0).num_seconds()),
        });
    }
    if by_series.is_empty() {
        critical.push("the store holds no backups".into());
    }
    let wal = wal_health(store, now)?;
    if let Some(w) = &wal {
        if !w.gaps.is_empty() {
            critical.push(format!("WAL archive has gaps: {}", w.gaps.join(", ")));
        }
        if let (Some(max), Some(age)) = (t.max_wal_lag, w.newest_age_seconds) {
            if age as f64 > max.as_secs_f64() {
                degraded.push(format!(
                    "newest archived WAL is {}s old (max {})",
                    age,
                    crate::units::human_duration(max)
                ));
            }
        }
    }
    let readiness = if !critical.is_empty() {
        "critical"
    } else if !degraded.is_empty() {
        "degraded"
    } else {
        "good"
    };
    critical.extend(degraded);
    Ok(Health {
        store: store.describe(),
        readiness: readiness.into(),
        problems: critical,
        total_bytes: series.iter().map(|s| s.total_bytes).sum(),
        series,
        wal,
    })
}

fn fmt_age(d: chrono::Duration) -> String {
    crate::units::human_duration(d.to_std().unwrap_or_default())
}

/// The WAL archive's newest segment, its age and gaps; `None` when the store has no WAL.
pub fn wal_health(store: &dyn Store, now: DateTime<Utc>) -> Result<Option<WalHealth>> {
    let archived = crate::walarchive::list(store)?;
    let mut names = Vec::new();
    let mut newest: Option<(WalName, &crate::walarchive::Archived)> = None;
    for a in &archived {
        let Some(n) = WalName::parse(&a.wal_file) else {
            continue;
        };
        if n.kind == wal::WalKind::Segment
            && newest
                .as_ref()
                .is_none_or(|(m, _)| (n.timeline, n.segno) > (m.timeline, m.segno))
        {
            newest = Some((n, a));
        }
        names.push(n);
    }
    if names.is_empty() {
        return Ok(None);
    }
    let gaps = wal::gaps(&names)
        .into_iter()
        .flat_map(|(tli, ranges)| {
            ranges.into_iter().map(move |(a, b)| {
                format!(
                    "{}..{}",
                    WalName::segment_name(tli, a),
                    WalName::segment_name(tli, b)
                )
            })
        })
        .collect();
    Ok(Some(WalHealth {
        segments: names
            .iter()
            .filter(|n| n.kind == wal::WalKind::Segment)
            .count(),
        newest: newest.map(|(_, a)| a.wal_file.clone()),
        newest_age_seconds: newest.map(|(_, a)| (now - a.modified).num_seconds()),
        gaps,
    }))
}
