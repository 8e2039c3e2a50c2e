//! PostgreSQL timelines in a WAL archive, and which of them a recovery
//! target lies on, as pure functions.
//!
//! Every promotion starts a timeline and archives its `.history` file: one
//! line per ancestor, `parent_tli <TAB> switch_lsn <TAB> reason`. A recovery
//! that follows "latest" walks into the newest timeline even when the target
//! lies on an older branch, and lands on the branch point instead: dbsafe
//! never lets PostgreSQL choose. It works out which timelines reachable from
//! the base backup contain the target, sets that one explicitly, and refuses
//! when there are several.

use chrono::{DateTime, Utc};
use std::collections::BTreeMap;
use std::fmt;

/// A WAL position (`16/B374D848`), written as PostgreSQL writes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Lsn(pub u64);

impl Lsn {
    /// Parses `X/Y` (hex halves).
    pub fn parse(s: &str) -> Option<Lsn> {
        let (hi, lo) = s.trim().split_once('/')?;
        let hi = u64::from_str_radix(hi, 16).ok()?;
        let lo = u64::from_str_radix(lo, 16).ok()?;
        (hi <= u32::MAX as u64 && lo <= u32::MAX as u64).then_some(Lsn(hi << 32 | lo))
    }
}

impl serde::Serialize for Lsn {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Lsn {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Lsn, D::Error> {
        let s = String::deserialize(d)?;
        Lsn::parse(&s).ok_or_else(|| serde::de::Error::custom(format!("not a WAL position: {s}")))
    }
}

impl Lsn {
    /// The start of segment position `pos` (see [`crate::wal`]).
    pub fn of_segment(pos: u64, size: crate::wal::SegSize) -> Lsn {
        let (log, seg) = (
            pos / crate::wal::POSITIONS_PER_LOG,
            pos % crate::wal::POSITIONS_PER_LOG,
        );
        Lsn((log << 32) + seg * size.bytes())
    }
}

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xFFFF_FFFF)
    }
}

/// One ancestor line of a history file: the timeline `parent` was left at `switch`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Switch {
    /// The ancestor timeline.
    pub parent: u32,
    /// Where the child left it.
    pub switch: Lsn,
}

/// Parses a `.history` file: its ancestors, oldest first.
pub fn parse_history(text: &str) -> Result<Vec<Switch>, String> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut fields = line.split_whitespace();
        let parent = fields
            .next()
            .and_then(|f| f.parse::<u32>().ok())
            .ok_or_else(|| format!("line {}: no timeline number", i + 1))?;
        let switch = fields
            .next()
            .and_then(Lsn::parse)
            .ok_or_else(|| format!("line {}: no switch position", i + 1))?;
        out.push(Switch { parent, switch });
    }
    Ok(out)
}

/// What the archive says of one timeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timeline {
    /// Its number.
    pub id: u32,
    /// Its ancestors, oldest first (empty for timeline 1).
    pub ancestors: Vec<Switch>,
    /// When it began: its history file was archived (`None` for timeline 1).
    pub created: Option<DateTime<Utc>>,
    /// Its newest archived segment, and when that was archived.
    pub newest: Option<(String, DateTime<Utc>)>,
    /// The end of its newest archived segment.
    pub end: Option<Lsn>,
}

impl Timeline {
    /// The timeline it branched from, and where.
    pub fn parent(&self) -> Option<&Switch> {
        self.ancestors.last()
    }
    /// Whether `other` is this timeline or one of its ancestors.
    pub fn descends_from(&self, other: u32) -> bool {
        self.id == other || self.ancestors.iter().any(|s| s.parent == other)
    }
    /// Where this timeline left `ancestor` (`None`: it did not, or it is itself).
    fn left(&self, ancestor: u32) -> Option<Lsn> {
        self.ancestors
            .iter()
            .find(|s| s.parent == ancestor)
            .map(|s| s.switch)
    }
}

/// A recovery target, as far as choosing a timeline goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// A time.
    Time(DateTime<Utc>),
    /// A WAL position.
    Lsn(Lsn),
    /// The end of the archived WAL.
    Latest,
}

/// The timelines of an archive, by number.
#[derive(Debug, Clone, Default)]
pub struct Timelines(pub BTreeMap<u32, Timeline>);

impl Timelines {
    /// Timelines a recovery from a base backup taken on `base` (at `base_start`)
    /// can reach: `base` itself and its descendants that left `base` (and every
    /// timeline in between) after the backup began.
    pub fn reachable(&self, base: u32, base_start: Lsn) -> Vec<&Timeline> {
        self.0
            .values()
            .filter(|t| {
                t.descends_from(base)
                    && (t.id == base || t.left(base).is_some_and(|at| at >= base_start))
            })
            .collect()
    }

    /// The reachable timelines that contain `target`.
    ///
    /// A time lies on a timeline from the moment the timeline began (its
    /// history file was archived; before that, recovering along it stops at
    /// the branch point) until its newest archived WAL, and on an ancestor
    /// as long as that ancestor went on writing. A position lies on a
    /// timeline from where the timeline left its parent (the base backup's
    /// own timeline: from the backup) to the end of its archived WAL.
    pub fn containing(&self, base: u32, base_start: Lsn, target: Target) -> Vec<u32> {
        let reachable = self.reachable(base, base_start);
        match target {
            Target::Latest => reachable
                .iter()
                .filter(|t| {
                    // An end of the archive's history: no reachable timeline
                    // descends from it, or it went on writing after the
                    // newest that does began (a drill promoted beside a
                    // primary that runs on). A primary that stopped before
                    // its successor began is no end.
                    let last_branch = reachable
                        .iter()
                        .filter(|o| o.id != t.id && o.descends_from(t.id))
                        .map(|o| o.created)
                        .max();
                    match last_branch {
                        None => true,
                        Some(began) => t
                            .newest
                            .as_ref()
                            .is_some_and(|n| began.is_some_and(|b| n.1 > b)),
                    }
                })
                .map(|t| t.id)
                .collect(),
            Target::Time(at) => reachable
                .iter()
                .filter(|t| {
                    t.created.is_none_or(|c| c <= at)
                        && t.newest.as_ref().is_some_and(|n| n.1 >= at)
                })
                .map(|t| t.id)
                .collect(),
            Target::Lsn(lsn) => reachable
                .iter()
                .filter(|t| t.id == base || t.parent().is_some_and(|p| p.switch <= lsn))
                .filter(|t| t.end.is_some_and(|end| end >= lsn))
                .map(|t| t.id)
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().expect("time")
    }

    /// The incident: timeline 1 runs on; a recovery to 10:30 promoted at
    /// 11:00 as timeline 2, which wrote until 12:00; timeline 1 until 12:30.
    fn incident() -> Timelines {
        let mut m = BTreeMap::new();
        m.insert(
            1,
            Timeline {
                id: 1,
                ancestors: vec![],
                created: None,
                newest: Some((
                    "000000010000000000000020".into(),
                    at("2026-12-01T12:30:00Z"),
                )),
                end: Lsn::parse("0/21000000"),
            },
        );
        m.insert(
            2,
            Timeline {
                id: 2,
                ancestors: parse_history("1\t0/9000120\tbefore 2026-12-01 10:30:00+00\n").unwrap(),
                created: Some(at("2026-12-01T11:00:00Z")),
                newest: Some((
                    "00000002000000000000000C".into(),
                    at("2026-12-01T12:00:00Z"),
                )),
                end: Lsn::parse("0/D000000"),
            },
        );
        Timelines(m)
    }

    #[test]
    fn history_files_and_positions_parse() {
        let h =
            parse_history("1\t0/3000158\tno recovery target specified\n\n2\t1/5000000\tbefore x\n")
                .unwrap();
        assert_eq!(h.len(), 2);
        assert_eq!(h[1].parent, 2);
        assert_eq!(h[1].switch, Lsn((1 << 32) | 0x500_0000));
        assert_eq!(
            Lsn::parse("16/B374D848").unwrap().to_string(),
            "16/B374D848"
        );
        assert!(Lsn::parse("zz/1").is_none());
        assert!(parse_history("x\t0/1\n").is_err());
    }

    #[test]
    fn a_time_on_both_branches_is_ambiguous_and_one_before_the_branch_is_not() {
        let t = incident();
        let start = Lsn::parse("0/2000028").unwrap();
        // 11:30 happened on timeline 1 (still writing) and on timeline 2.
        assert_eq!(
            t.containing(1, start, Target::Time(at("2026-12-01T11:30:00Z"))),
            [1, 2]
        );
        // 10:45: after the branch point but before timeline 2 began: only 1.
        assert_eq!(
            t.containing(1, start, Target::Time(at("2026-12-01T10:45:00Z"))),
            [1]
        );
        // 12:15: timeline 2 had stopped writing; only 1 reaches it.
        assert_eq!(
            t.containing(1, start, Target::Time(at("2026-12-01T12:15:00Z"))),
            [1]
        );
        // After everything archived: nowhere.
        assert!(t
            .containing(1, start, Target::Time(at("2026-12-01T13:00:00Z")))
            .is_empty());
        // Latest: timeline 1 wrote on after timeline 2 began, so both are
        // ends of the archive's history, and "latest" does not choose.
        assert_eq!(t.containing(1, start, Target::Latest), [1, 2]);
    }

    #[test]
    fn latest_is_the_successor_of_a_primary_that_stopped_before_it_began() {
        let mut t = incident();
        // Timeline 1's last segment was archived before timeline 2 began.
        t.0.get_mut(&1).unwrap().newest = Some((
            "000000010000000000000009".into(),
            at("2026-12-01T10:59:00Z"),
        ));
        let start = Lsn::parse("0/2000028").unwrap();
        assert_eq!(t.containing(1, start, Target::Latest), [2]);
        // From a base backup on timeline 2, timeline 1 is out of reach.
        assert_eq!(t.containing(2, start, Target::Latest), [2]);
    }

    #[test]
    fn a_position_past_the_branch_point_is_on_every_branch_that_reaches_it() {
        let t = incident();
        let start = Lsn::parse("0/2000028").unwrap();
        let on = |l: &str| t.containing(1, start, Target::Lsn(Lsn::parse(l).unwrap()));
        assert_eq!(on("0/5000000"), [1], "before the branch: timeline 1 only");
        assert_eq!(on("0/A000000"), [1, 2], "after the branch, within both");
        assert_eq!(on("0/F000000"), [1], "past timeline 2's archived WAL");
        assert!(on("0/30000000").is_empty(), "past everything archived");
    }

    #[test]
    fn a_branch_that_left_before_the_backup_is_out_of_reach() {
        let t = incident();
        let late_start = Lsn::parse("0/A000028").unwrap();
        let ids: Vec<u32> = t.reachable(1, late_start).iter().map(|t| t.id).collect();
        assert_eq!(ids, [1]);
        let from_two: Vec<u32> = t.reachable(2, late_start).iter().map(|t| t.id).collect();
        assert_eq!(from_two, [2]);
    }
}
