//! Retention: which backups to keep and why, as a pure function.
//!
//! A backup kept by any rule is kept (the rules are a union). Three
//! protections beat every rule: the newest backup of each series, the
//! newest verified backup of each series, and backups pinned by a release
//! manifest. Calendar buckets are UTC; weeks are ISO weeks.

use chrono::{DateTime, Datelike, Timelike, Utc};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// A backup as retention sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    /// What identifies it (the artifact file name).
    pub id: String,
    /// Its series (`env_database_kind`).
    pub series: String,
    /// When it was taken.
    pub time: DateTime<Utc>,
    /// Whether its last verification passed.
    pub verified: bool,
    /// Whether a release manifest pins it.
    pub pinned: bool,
    /// Artifact bytes.
    pub size: u64,
}

/// The rules; `None` leaves a rule out. Also an environment's `retention`
/// in the config file (`keep_within = "30d"`).
#[derive(Debug, Clone, Default, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// Keep the newest N.
    pub keep_last: Option<u32>,
    /// Keep everything younger than this.
    #[serde(default, deserialize_with = "crate::config::optional_duration")]
    pub keep_within: Option<Duration>,
    /// Newest in each of the last N hours that have a backup.
    pub keep_hourly: Option<u32>,
    /// ... days.
    pub keep_daily: Option<u32>,
    /// ... ISO weeks.
    pub keep_weekly: Option<u32>,
    /// ... months.
    pub keep_monthly: Option<u32>,
}

impl Policy {
    /// Whether no rule is set (then only protections keep anything).
    pub fn is_empty(&self) -> bool {
        *self == Policy::default()
    }
    /// The rule for safety backups when none is configured: seven days,
    /// and (as for every series) at least the newest.
    pub fn safety_default() -> Policy {
        Policy {
            keep_within: Some(Duration::from_secs(7 * 86400)),
            ..Policy::default()
        }
    }
}

/// The verdict on one backup.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Decision {
    /// The backup's id.
    pub id: String,
    /// Its series.
    pub series: String,
    /// Keep it?
    pub keep: bool,
    /// Whether a protection (not just a rule) keeps it.
    pub protected: bool,
    /// Every rule or protection that keeps it; for deletions, why.
    pub reasons: Vec<String>,
    /// When it was taken.
    pub time: DateTime<Utc>,
    /// Artifact bytes.
    pub size: u64,
}

type BucketKey = (i32, u32, u32, u32);

fn bucket_rule(
    sorted_newest_first: &[&Candidate],
    n: Option<u32>,
    name: &str,
    key: impl Fn(&DateTime<Utc>) -> BucketKey,
    reasons: &mut BTreeMap<String, Vec<String>>,
) {
    let Some(n) = n else { return };
    let mut seen = BTreeSet::new();
    for c in sorted_newest_first {
        if seen.len() >= n as usize {
            break;
        }
        let k = key(&c.time);
        if seen.insert(k) {
            reasons
                .entry(c.id.clone())
                .or_default()
                .push(format!("{name} {}", fmt_bucket(name, k)));
        }
    }
}

fn fmt_bucket(name: &str, k: BucketKey) -> String {
    match name {
        "hourly" => format!("{:04}-{:02}-{:02}T{:02}", k.0, k.1, k.2, k.3),
        "daily" => format!("{:04}-{:02}-{:02}", k.0, k.1, k.2),
        "weekly" => format!("{:04}-W{:02}", k.0, k.1),
        _ => format!("{:04}-{:02}", k.0, k.1),
    }
}

/// Decides, for every backup, keep or delete and why. `now` anchors `keep_within`.
pub fn decide(backups: &[Candidate], policy: &Policy, now: DateTime<Utc>) -> Vec<Decision> {
    let mut by_series: BTreeMap<&str, Vec<&Candidate>> = BTreeMap::new();
    for b in backups {
        by_series.entry(&b.series).or_default().push(b);
    }
    let mut out = Vec::with_capacity(backups.len());
    for (series, mut list) in by_series {
        list.sort_by(|a, b| b.time.cmp(&a.time).then(b.id.cmp(&a.id)));
        let mut reasons: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let mut protections: BTreeSet<String> = BTreeSet::new();
        let mut protect = |id: &str, why: &str, reasons: &mut BTreeMap<String, Vec<String>>| {
            reasons
                .entry(id.to_string())
                .or_default()
                .push(why.to_string());
            protections.insert(id.to_string());
        };
        if let Some(newest) = list.first() {
            protect(&newest.id, "newest of the series (protected)", &mut reasons);
        }
        if let Some(v) = list.iter().find(|c| c.verified) {
            protect(
                &v.id,
                "newest verified of the series (protected)",
                &mut reasons,
            );
        }
        for c in list.iter().filter(|c| c.pinned) {
            protect(
                &c.id,
                "pinned by a release manifest (protected)",
                &mut reasons,
            );
        }
        if let Some(n) = policy.keep_last {
            for c in list.iter().take(n as usize) {
                reasons
                    .entry(c.id.clone())
                    .or_default()
                    .push(format!("keep-last {n}"));
            }
        }
        if let Some(within) = policy.keep_within {
            let cutoff = now - chrono::Duration::from_std(within).unwrap_or(chrono::Duration::MAX);
            for c in list.iter().filter(|c| c.time >= cutoff) {
                reasons.entry(c.id.clone()).or_default().push(format!(
                    "keep-within {}",
                    crate::units::human_duration(within)
                ));
            }
        }
        bucket_rule(
            &list,
            policy.keep_hourly,
            "hourly",
            |t| (t.year(), t.month(), t.day(), t.hour()),
            &mut reasons,
        );
        bucket_rule(
            &list,
            policy.keep_daily,
            "daily",
            |t| (t.year(), t.month(), t.day(), 0),
            &mut reasons,
        );
        bucket_rule(
            &list,
            policy.keep_weekly,
            "weekly",
            |t| {
                let w = t.iso_week();
                (w.year(), w.week(), 0, 0)
            },
            &mut reasons,
        );
        bucket_rule(
            &list,
            policy.keep_monthly,
            "monthly",
            |t| (t.year(), t.month(), 0, 0),
            &mut reasons,
        );
        for c in list {
            let why = reasons.remove(&c.id);
            out.push(Decision {
                id: c.id.clone(),
                series: series.to_string(),
                keep: why.is_some(),
                protected: protections.contains(&c.id),
                reasons: why.unwrap_or_else(|| vec!["no rule keeps it".into()]),
                time: c.time,
                size: c.size,
            });
        }
    }
    out
}

/// Deletes further unprotected backups, oldest first, while `over(deleted_bytes)`
/// says more room is needed. Returns whether the goal was met.
pub fn make_room(decisions: &mut [Decision], why: &str, mut over: impl FnMut(u64) -> bool) -> bool {
    let mut freed: u64 = decisions.iter().filter(|d| !d.keep).map(|d| d.size).sum();
    let mut order: Vec<usize> = (0..decisions.len())
        .filter(|&i| decisions[i].keep && !decisions[i].protected)
        .collect();
    order.sort_by_key(|&i| decisions[i].time);
    for i in order {
        if !over(freed) {
            return true;
        }
        let d = &mut decisions[i];
        d.keep = false;
        d.reasons = vec![format!(
            "{why} (rules would keep it: {})",
            d.reasons.join(", ")
        )];
        freed += d.size;
    }
    !over(freed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, 0).unwrap()
    }

    fn c(id: &str, t: DateTime<Utc>) -> Candidate {
        Candidate {
            id: id.into(),
            series: "prod_app_full".into(),
            time: t,
            verified: false,
            pinned: false,
            size: 100,
        }
    }

    fn kept(ds: &[Decision]) -> Vec<String> {
        let mut v: Vec<String> = ds.iter().filter(|d| d.keep).map(|d| d.id.clone()).collect();
        v.sort();
        v
    }

    fn now() -> DateTime<Utc> {
        at(2025, 3, 1, 12, 0)
    }

    #[test]
    fn each_rule_alone() {
        struct Case {
            name: &'static str,
            policy: Policy,
            backups: Vec<Candidate>,
            kept: Vec<&'static str>,
        }
        let day = |d: u32, h: u32| at(2025, 2, d, h, 0);
        let cases = vec![
            Case {
                name: "keep_last 2 keeps the two newest",
                policy: Policy {
                    keep_last: Some(2),
                    ..Default::default()
                },
                backups: vec![c("a", day(1, 0)), c("b", day(2, 0)), c("c", day(3, 0))],
                kept: vec!["b", "c"],
            },
            Case {
                name: "keep_within 2d keeps what is younger",
                policy: Policy {
                    keep_within: Some(Duration::from_secs(2 * 86400)),
                    ..Default::default()
                },
                backups: vec![
                    c("old", day(20, 0)),
                    c("edge", at(2025, 2, 27, 12, 0)),
                    c("new", day(28, 0)),
                ],
                kept: vec!["edge", "new"],
            },
            Case {
                name: "keep_daily 2 keeps the newest of each of two days",
                policy: Policy {
                    keep_daily: Some(2),
                    ..Default::default()
                },
                backups: vec![
                    c("d1a", day(1, 1)),
                    c("d1b", day(1, 23)),
                    c("d2a", day(2, 0)),
                    c("d2b", day(2, 5)),
                    c("d3", day(3, 2)),
                ],
                kept: vec!["d2b", "d3"],
            },
            Case {
                name: "keep_hourly 3 keeps the newest of each hour",
                policy: Policy {
                    keep_hourly: Some(3),
                    ..Default::default()
                },
                backups: vec![
                    c("h1", at(2025, 2, 1, 1, 5)),
                    c("h1b", at(2025, 2, 1, 1, 55)),
                    c("h2", at(2025, 2, 1, 2, 0)),
                    c("h3", at(2025, 2, 1, 3, 0)),
                    c("h0", at(2025, 2, 1, 0, 0)),
                ],
                kept: vec!["h1b", "h2", "h3"],
            },
            Case {
                name: "keep_monthly 2 keeps the newest of each month",
                policy: Policy {
                    keep_monthly: Some(2),
                    ..Default::default()
                },
                backups: vec![
                    c("dec", at(2024, 12, 31, 23, 59)),
                    c("jan1", at(2025, 1, 1, 0, 0)),
                    c("jan31", at(2025, 1, 31, 23, 59)),
                    c("feb", day(1, 0)),
                ],
                kept: vec!["feb", "jan31"],
            },
            Case {
                name: "keep_weekly 2 uses ISO weeks (Monday starts the week)",
                policy: Policy {
                    keep_weekly: Some(2),
                    ..Default::default()
                },
                // 2025-02-09 is a Sunday (week 6), 2025-02-10 a Monday (week 7).
                backups: vec![
                    c("w6mon", at(2025, 2, 3, 0, 0)),
                    c("w6sun", at(2025, 2, 9, 23, 59)),
                    c("w7mon", at(2025, 2, 10, 0, 0)),
                    c("w5", at(2025, 1, 28, 0, 0)),
                ],
                kept: vec!["w6sun", "w7mon"],
            },
        ];
        for case in cases {
            // Only the rule under test: make the newest-of-series protection a no-op by checking rule reasons.
            let ds = decide(&case.backups, &case.policy, now());
            let by_rule: Vec<String> = {
                let mut v: Vec<String> = ds
                    .iter()
                    .filter(|d| d.reasons.iter().any(|r| !r.contains("protected")))
                    .filter(|d| d.keep)
                    .map(|d| d.id.clone())
                    .collect();
                v.sort();
                v
            };
            assert_eq!(by_rule, case.kept, "{}", case.name);
        }
    }

    #[test]
    fn rules_are_a_union() {
        let bs = vec![
            c("a", at(2025, 1, 1, 0, 0)),
            c("b", at(2025, 2, 1, 0, 0)),
            c("x", at(2025, 2, 27, 0, 0)),
            c("y", at(2025, 2, 28, 0, 0)),
        ];
        let p = Policy {
            keep_last: Some(1),
            keep_monthly: Some(2),
            ..Default::default()
        };
        assert_eq!(kept(&decide(&bs, &p, now())), vec!["a", "y"]);
    }

    #[test]
    fn bucket_edges_midnight_month_end_leap_day_and_iso_week_53() {
        // Midnight belongs to the new day.
        let bs = vec![
            c("late", at(2024, 2, 28, 23, 59)),
            c("midnight", at(2024, 2, 29, 0, 0)),
            c("leap", at(2024, 2, 29, 18, 0)),
            c("march", at(2024, 3, 1, 0, 0)),
        ];
        let ds = decide(
            &bs,
            &Policy {
                keep_daily: Some(3),
                ..Default::default()
            },
            now(),
        );
        assert_eq!(kept(&ds), vec!["late", "leap", "march"]);
        let ds = decide(
            &bs,
            &Policy {
                keep_monthly: Some(2),
                ..Default::default()
            },
            now(),
        );
        assert_eq!(kept(&ds), vec!["leap", "march"]);
        // 2020-12-31 and 2021-01-03 are both in ISO week 2020-W53; 2021-01-04 starts 2021-W01.
        let bs = vec![
            c("w53a", at(2020, 12, 28, 0, 0)),
            c("w53b", at(2021, 1, 3, 23, 0)),
            c("w01", at(2021, 1, 4, 0, 0)),
        ];
        let ds = decide(
            &bs,
            &Policy {
                keep_weekly: Some(2),
                ..Default::default()
            },
            now(),
        );
        assert_eq!(kept(&ds), vec!["w01", "w53b"]);
        assert!(ds
            .iter()
            .any(|d| d.reasons.iter().any(|r| r == "weekly 2020-W53")));
    }

    #[test]
    fn protections_beat_every_rule() {
        let mut bs = vec![
            c("old-verified", at(2024, 1, 1, 0, 0)),
            c("pinned", at(2024, 2, 1, 0, 0)),
            c("plain", at(2024, 3, 1, 0, 0)),
            c("newest", at(2024, 4, 1, 0, 0)),
        ];
        bs[0].verified = true;
        bs[1].pinned = true;
        let ds = decide(
            &bs,
            &Policy {
                keep_last: Some(0),
                ..Default::default()
            },
            now(),
        );
        assert_eq!(kept(&ds), vec!["newest", "old-verified", "pinned"]);
        assert!(ds.iter().all(|d| d.keep == d.protected));
        // make_room never takes a protected backup, and says when it could not reach its goal.
        let mut ds = decide(
            &bs,
            &Policy {
                keep_last: Some(10),
                ..Default::default()
            },
            now(),
        );
        let met = make_room(&mut ds, "--max-total", |_| true);
        assert!(!met);
        assert_eq!(kept(&ds), vec!["newest", "old-verified", "pinned"]);
    }

    #[test]
    fn make_room_deletes_oldest_unprotected_first_until_enough() {
        let bs: Vec<Candidate> = (1..=5)
            .map(|d| c(&format!("d{d}"), at(2025, 1, d, 0, 0)))
            .collect();
        let mut ds = decide(
            &bs,
            &Policy {
                keep_last: Some(5),
                ..Default::default()
            },
            now(),
        );
        assert!(make_room(&mut ds, "--min-free", |freed| freed < 200));
        assert_eq!(kept(&ds), vec!["d3", "d4", "d5"]);
    }

    #[test]
    fn series_are_decided_separately() {
        let mut other = c("o1", at(2025, 1, 1, 0, 0));
        other.series = "prod_crm_full".into();
        let bs = vec![
            c("a1", at(2025, 1, 1, 0, 0)),
            c("a2", at(2025, 1, 2, 0, 0)),
            other,
        ];
        let ds = decide(
            &bs,
            &Policy {
                keep_last: Some(1),
                ..Default::default()
            },
            now(),
        );
        assert_eq!(kept(&ds), vec!["a2", "o1"]);
    }

    #[test]
    fn empty_store_and_single_backup() {
        assert!(decide(
            &[],
            &Policy {
                keep_last: Some(0),
                ..Default::default()
            },
            now()
        )
        .is_empty());
        let ds = decide(
            &[c("only", at(2020, 1, 1, 0, 0))],
            &Policy::default(),
            now(),
        );
        assert_eq!(kept(&ds), vec!["only"]);
        assert!(ds[0].protected);
    }
}
