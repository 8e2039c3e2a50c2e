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
    /// Only this environment's series (and its safety backups).
    pub env: Option<String>,
    /// Only this database's series.
    pub database: Option<String>,
}

impl Thresholds {
    fn covers(&self, e: &Entry) -> bool {
        let env_ok = self.env.as_ref().is_none_or(|v| {
            e.name.env == *v || e.name.env == format!("{v}{}", crate::name::SAFETY_SUFFIX)
        });
        env_ok && self.database.as_ref().is_none_or(|d| e.name.database == *d)
    }
}

/// One series' health.
#[derive(Debug, Clone, Serialize)]
pub struct SeriesHealth {
    /// `env_database_kind`.
    pub series: String,
    /// The payload its artifacts carry (`pgdump`, `sqlite`, ...): part of
    /// what makes a series.
    pub payload: String,
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

/// The head of a line of WAL (the whole archive's, or one timeline's).
#[derive(Debug, Clone, Serialize)]
pub struct WalTip {
    /// Newest segment name.
    pub newest: Option<String>,
    /// Seconds since it was archived.
    pub newest_age_seconds: Option<i64>,
    /// Missing ranges (`first..last` segment names).
    pub gaps: Vec<String>,
}

impl WalTip {
    fn new(
        newest: Option<&(String, DateTime<Utc>)>,
        now: DateTime<Utc>,
        gaps: Vec<String>,
    ) -> WalTip {
        WalTip {
            newest: newest.map(|n| n.0.clone()),
            newest_age_seconds: newest.map(|n| (now - n.1).num_seconds()),
            gaps,
        }
    }

    /// The gaps, if any, as a problem: recovery cannot replay across them.
    pub fn gap_problem(&self) -> Option<String> {
        (!self.gaps.is_empty()).then(|| format!("WAL archive has gaps: {}", self.gaps.join(", ")))
    }

    /// A newest segment older than `max` (the limit `flag` set) as a
    /// problem: archiving has stopped or fallen behind.
    pub fn lag_problem(&self, max: std::time::Duration, flag: &str) -> Option<String> {
        let age = self.newest_age_seconds?;
        (age as f64 > max.as_secs_f64()).then(|| {
            format!(
                "newest archived WAL is {age}s old, more than {flag} {}",
                crate::units::human_duration(max)
            )
        })
    }

    /// One line for people: `newest NAME (Ss old), G gaps`.
    pub fn summary(&self) -> String {
        format!(
            "newest {} ({}s old), {} gaps",
            self.newest.as_deref().unwrap_or("-"),
            self.newest_age_seconds.unwrap_or(0),
            self.gaps.len()
        )
    }
}

/// The WAL archive's health.
#[derive(Debug, Clone, Serialize)]
pub struct WalHealth {
    /// Segments archived.
    pub segments: usize,
    /// The live timeline's newest segment, and the gaps of every timeline.
    #[serde(flatten)]
    pub tip: WalTip,
    /// Each timeline: where it branched, its newest segment, its gaps.
    pub timelines: Vec<TimelineHealth>,
}

impl WalHealth {
    /// One line for people: `N segments, newest NAME (Ss old), G gaps`.
    pub fn summary(&self) -> String {
        format!("{} segments, {}", self.segments, self.tip.summary())
    }
}

/// One timeline of the WAL archive.
#[derive(Debug, Clone, Serialize)]
pub struct TimelineHealth {
    /// Its number.
    pub timeline: u32,
    /// `live` (the timeline archiving now), `ancestor` (of the live one) or
    /// `branch` (a recovery that did not become the primary: a drill, a
    /// copy promoted beside the primary).
    pub role: String,
    /// The timeline it branched from, and where.
    pub parent: Option<u32>,
    /// The position it branched at.
    pub branched_at: Option<String>,
    /// Its newest archived segment and its gaps.
    #[serde(flatten)]
    pub tip: WalTip,
}

impl TimelineHealth {
    /// One line for people: `timeline T (ROLE)[, branched from P at LSN]:
    /// newest NAME (Ss old), G gaps`.
    pub fn summary(&self) -> String {
        let branch = match (self.parent, &self.branched_at) {
            (Some(p), Some(at)) => format!(", branched from {p} at {at}"),
            _ => String::new(),
        };
        format!(
            "timeline {} ({}){branch}: {}",
            self.timeline,
            self.role,
            self.tip.summary()
        )
    }
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
    /// Safety backups taken before restores, per series: listed apart and
    /// never a reason for `degraded` or `critical`.
    pub safety: Vec<SeriesHealth>,
    /// Bytes in all backups.
    pub total_bytes: u64,
    /// WAL archive, when the store has one.
    pub wal: Option<WalHealth>,
}

/// Computes the health of a store.
pub fn assess(store: &dyn Store, t: &Thresholds, now: DateTime<Utc>) -> Result<Health> {
    let mut by_series: BTreeMap<String, Vec<Entry>> = BTreeMap::new();
    for e in catalog::list(store)?.into_iter().filter(|e| t.covers(e)) {
        by_series.entry(e.name.series_id()).or_default().push(e);
    }
    let mut critical = Vec::new();
    let mut degraded = Vec::new();
    let mut series = Vec::new();
    let mut safety = Vec::new();
    let max_age = chrono::Duration::from_std(t.max_age).unwrap_or(chrono::Duration::MAX);
    for list in by_series.values() {
        let newest = list.last().expect("non-empty series");
        let name = newest.name.series();
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
        let health = SeriesHealth {
            series: name.clone(),
            payload: newest.name.payload.ext().to_string(),
            count: list.len(),
            newest: newest.file(),
            newest_age_seconds: age.num_seconds(),
            total_bytes: list.iter().map(|e| e.object.size).sum(),
            verified_count: verified.len(),
            newest_verification: verified.iter().map(|v| v.1.clone()).max(),
            newest_verified_age_seconds: newest_verified.map(|v| (now - v.0).num_seconds()),
        };
        if newest.name.is_safety() {
            safety.push(health);
            continue;
        }
        series.push(health);
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
    }
    if series.is_empty() {
        critical.push("the store holds no backups".into());
    }
    let wal = wal_health(store, now)?;
    if let Some(w) = &wal {
        critical.extend(w.tip.gap_problem());
        degraded.extend(
            t.max_wal_lag
                .and_then(|max| w.tip.lag_problem(max, "--max-wal-lag")),
        );
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
        total_bytes: series.iter().chain(&safety).map(|s| s.total_bytes).sum(),
        series,
        safety,
        wal,
    })
}

fn fmt_age(d: chrono::Duration) -> String {
    crate::units::human_duration(d.to_std().unwrap_or_default())
}

/// The WAL archive per timeline; the store's newest segment is the live
/// timeline's (the one that archived last); `None` when the store has no WAL.
pub fn wal_health(store: &dyn Store, now: DateTime<Utc>) -> Result<Option<WalHealth>> {
    let archived = crate::walarchive::list(store)?;
    let names: Vec<WalName> = archived
        .iter()
        .filter_map(|a| WalName::parse(&a.wal_file))
        .collect();
    if names.is_empty() {
        return Ok(None);
    }
    let size = crate::walarchive::segment_size(store, &archived)?;
    let timelines = crate::walarchive::timelines(store, &archived, size)?;
    let gaps = wal::gaps(&names, size);
    let gap_names = |tli: u32| -> Vec<String> {
        gaps.get(&tli)
            .into_iter()
            .flatten()
            .map(|&(a, b)| {
                format!(
                    "{}..{}",
                    WalName::segment_name(tli, a),
                    WalName::segment_name(tli, b)
                )
            })
            .collect()
    };
    let live = timelines
        .0
        .values()
        .filter_map(|t| t.newest.as_ref().map(|n| (n.1, t.id)))
        .max()
        .map(|(_, id)| id);
    let live_line = live.and_then(|id| timelines.0.get(&id));
    let per: Vec<TimelineHealth> = timelines
        .0
        .values()
        .map(|t| TimelineHealth {
            timeline: t.id,
            role: if Some(t.id) == live {
                "live"
            } else if live_line.is_some_and(|l| l.descends_from(t.id)) {
                "ancestor"
            } else {
                "branch"
            }
            .into(),
            parent: t.parent().map(|p| p.parent),
            branched_at: t.parent().map(|p| p.switch.to_string()),
            tip: WalTip::new(t.newest.as_ref(), now, gap_names(t.id)),
        })
        .collect();
    let newest = live_line.and_then(|t| t.newest.clone());
    Ok(Some(WalHealth {
        segments: names
            .iter()
            .filter(|n| n.kind == wal::WalKind::Segment)
            .count(),
        tip: WalTip::new(
            newest.as_ref(),
            now,
            per.iter().flat_map(|t| t.tip.gaps.clone()).collect(),
        ),
        timelines: per,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::VerifyRecord;

    fn put(store: &dyn Store, file: &str, verified: bool) {
        store
            .write_small(&crate::store::key(crate::store::BACKUPS, file), b"x")
            .expect("artifact");
        if verified {
            let rec = VerifyRecord {
                verified_at: "2026-12-01T00:00:00Z".into(),
                ..VerifyRecord::start(file.into(), "full", "dbverify")
            };
            store
                .write_small(
                    &crate::store::key(crate::store::BACKUPS, &format!("{file}.verify.json")),
                    &serde_json::to_vec(&rec).expect("json"),
                )
                .expect("record");
        }
    }

    #[test]
    fn each_timeline_has_its_role_its_branch_point_and_its_own_gaps() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store =
            crate::store::open(&dir.path().join("s").display().to_string(), true).expect("store");
        let push = |name: &str, bytes: &[u8], at: &str| {
            let f = dir.path().join(name);
            std::fs::write(&f, bytes).expect("segment");
            crate::walarchive::push(
                store.as_ref(),
                &f,
                name,
                crate::pipeline::EncodeOptions {
                    compression: crate::Compression::None,
                    level: None,
                    threads: 0,
                    encryption: crate::Encryption::None,
                    max_size: None,
                },
            )
            .expect("push");
            let t: DateTime<Utc> = at.parse().expect("time");
            let obj = dir.path().join("s/wal").join(name);
            std::fs::File::options()
                .write(true)
                .open(&obj)
                .and_then(|f| f.set_modified(t.into()))
                .expect("mtime");
        };
        let seg = vec![0u8; 1 << 20];
        push("000000010000000000000001", &seg, "2026-12-01T10:00:00Z");
        push("000000010000000000000002", &seg, "2026-12-01T10:10:00Z");
        push("000000010000000000000004", &seg, "2026-12-01T12:00:00Z");
        push(
            "00000002.history",
            b"1\t0/2000120\tbefore 2026-12-01 10:05:00+00\n",
            "2026-12-01T10:30:00Z",
        );
        push("000000020000000000000002", &seg, "2026-12-01T10:40:00Z");
        let h = wal_health(store.as_ref(), "2026-12-01T12:05:00Z".parse().unwrap())
            .expect("health")
            .expect("archive");
        let roles: Vec<(u32, &str)> = h
            .timelines
            .iter()
            .map(|t| (t.timeline, t.role.as_str()))
            .collect();
        assert_eq!(roles, [(1, "live"), (2, "branch")]);
        assert_eq!(h.tip.newest.as_deref(), Some("000000010000000000000004"));
        assert_eq!(h.timelines[1].parent, Some(1));
        assert_eq!(h.timelines[1].branched_at.as_deref(), Some("0/2000120"));
        assert_eq!(
            h.timelines[0].tip.gaps,
            ["000000010000000000000003..000000010000000000000003"]
        );
        assert!(h.timelines[1].tip.gaps.is_empty());
    }

    #[test]
    fn engines_make_separate_series_and_safety_backups_never_degrade_a_store() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = crate::store::open(&dir.path().display().to_string(), true).expect("store");
        put(
            store.as_ref(),
            "production_app_full_20261201_100000.sqlite.zst",
            true,
        );
        put(
            store.as_ref(),
            "production_app_full_20261201_100000.pgdump.zst",
            true,
        );
        put(
            store.as_ref(),
            "production-safety_app_full_20261201_110000.sqlite.zst",
            false,
        );
        let now = "2026-12-01T12:00:00Z".parse().expect("time");
        let t = Thresholds {
            max_age: Duration::from_secs(86400),
            min_count: 1,
            max_wal_lag: None,
            env: None,
            database: None,
        };
        let h = assess(store.as_ref(), &t, now).expect("assess");
        assert_eq!(h.readiness, "good", "{:?}", h.problems);
        let payloads: Vec<&str> = h.series.iter().map(|s| s.payload.as_str()).collect();
        assert_eq!(payloads, ["pgdump", "sqlite"]);
        assert_eq!(h.safety.len(), 1);
        assert_eq!(h.safety[0].series, "production-safety_app_full");
        // A day later the unverified safety backup is old: still not a problem.
        let later = "2026-12-03T12:00:00Z".parse().expect("time");
        let h = assess(store.as_ref(), &t, later).expect("assess");
        assert!(
            h.problems.iter().all(|p| !p.contains("safety")),
            "{:?}",
            h.problems
        );
    }
}
