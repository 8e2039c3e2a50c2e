//! PostgreSQL WAL file names and their arithmetic, as pure functions.
//!
//! A segment name is 24 hex digits: timeline, log and segment
//! (`000000010000000A000000FF`). With the default 16 MiB segments there are
//! 256 segments per log, so the position of a segment is `log * 256 + seg`.

use std::collections::BTreeMap;

/// Segments per log file number for 16 MiB segments.
pub const SEGMENTS_PER_LOG: u64 = 0x100;

/// What a file in the WAL archive is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum WalKind {
    /// A 16 MiB segment.
    Segment,
    /// A partial segment left at a timeline switch (`.partial`).
    Partial,
    /// A backup label (`SEGMENT.OFFSET.backup`).
    Backup,
    /// A timeline history file (`TTTTTTTT.history`).
    History,
}

/// A parsed WAL archive file name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct WalName {
    /// Timeline.
    pub timeline: u32,
    /// Position: `log * 256 + seg` (0 for history files).
    pub segno: u64,
    /// What it is.
    pub kind: WalKind,
}

impl WalName {
    /// Parses the PostgreSQL file name (without our `.zst`/`.age` layer extensions).
    pub fn parse(name: &str) -> Option<WalName> {
        let hex = |s: &str| {
            (s.len() == 8 && s.chars().all(|c| c.is_ascii_hexdigit()))
                .then(|| u64::from_str_radix(s, 16).ok())
                .flatten()
        };
        if let Some(tli) = name.strip_suffix(".history") {
            return Some(WalName {
                timeline: hex(tli)? as u32,
                segno: 0,
                kind: WalKind::History,
            });
        }
        let (base, kind) = if let Some(b) = name.strip_suffix(".partial") {
            (b, WalKind::Partial)
        } else if let Some(b) = name.strip_suffix(".backup") {
            (b.split('.').next()?, WalKind::Backup)
        } else {
            (name, WalKind::Segment)
        };
        if base.len() != 24 {
            return None;
        }
        let tli = hex(&base[0..8])? as u32;
        let log = hex(&base[8..16])?;
        let seg = hex(&base[16..24])?;
        if seg >= SEGMENTS_PER_LOG {
            return None;
        }
        Some(WalName {
            timeline: tli,
            segno: log * SEGMENTS_PER_LOG + seg,
            kind,
        })
    }

    /// The 24-digit segment name of a timeline and position.
    pub fn segment_name(timeline: u32, segno: u64) -> String {
        format!(
            "{:08X}{:08X}{:08X}",
            timeline,
            segno / SEGMENTS_PER_LOG,
            segno % SEGMENTS_PER_LOG
        )
    }
}

/// Strips our layer extensions (`.zst`, `.gz`, `.age`) from an archived file name.
pub fn strip_layers(file: &str) -> &str {
    let mut s = file;
    for ext in [".age", ".zst", ".gz"] {
        s = s.strip_suffix(ext).unwrap_or(s);
    }
    s
}

/// Missing segments per timeline: for each timeline, the ranges between the
/// first and the last archived segment that are not in the archive.
pub fn gaps(names: &[WalName]) -> BTreeMap<u32, Vec<(u64, u64)>> {
    let mut per: BTreeMap<u32, Vec<u64>> = BTreeMap::new();
    for n in names.iter().filter(|n| n.kind == WalKind::Segment) {
        per.entry(n.timeline).or_default().push(n.segno);
    }
    let mut out = BTreeMap::new();
    for (tli, mut segs) in per {
        segs.sort_unstable();
        segs.dedup();
        let missing: Vec<(u64, u64)> = segs
            .windows(2)
            .filter(|w| w[1] > w[0] + 1)
            .map(|w| (w[0] + 1, w[1] - 1))
            .collect();
        if !missing.is_empty() {
            out.insert(tli, missing);
        }
    }
    out
}

/// Whether an archived WAL file can go once every kept base backup starts at or
/// after `oldest_needed` (a segment position): history files always stay.
pub fn prunable(name: &WalName, oldest_needed: u64) -> bool {
    name.kind != WalKind::History && name.segno < oldest_needed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_segments_history_backup_and_partial() {
        let s = WalName::parse("000000010000000A000000FF").unwrap();
        assert_eq!(
            (s.timeline, s.segno, s.kind),
            (1, 0xA * 256 + 0xFF, WalKind::Segment)
        );
        assert_eq!(
            WalName::segment_name(1, 0xA * 256 + 0xFF),
            "000000010000000A000000FF"
        );
        let next = WalName::parse("000000010000000B00000000").unwrap();
        assert_eq!(next.segno, s.segno + 1, "log boundary");
        assert_eq!(
            WalName::parse("00000002.history").unwrap().kind,
            WalKind::History
        );
        assert_eq!(
            WalName::parse("000000010000000000000003.00000028.backup")
                .unwrap()
                .segno,
            3
        );
        assert_eq!(
            WalName::parse("000000010000000000000003.partial")
                .unwrap()
                .kind,
            WalKind::Partial
        );
        assert!(
            WalName::parse("000000010000000000000100").is_none(),
            "segment 0x100 does not exist"
        );
        assert!(WalName::parse("nonsense").is_none());
        assert_eq!(
            strip_layers("000000010000000000000003.zst.age"),
            "000000010000000000000003"
        );
    }

    #[test]
    fn finds_gaps_per_timeline() {
        let n = |s: &str| WalName::parse(s).unwrap();
        let names = vec![
            n("000000010000000000000001"),
            n("000000010000000000000002"),
            n("000000010000000000000005"),
            n("000000020000000000000005"),
            n("000000020000000000000006"),
            n("00000002.history"),
        ];
        let g = gaps(&names);
        assert_eq!(g.get(&1), Some(&vec![(3, 4)]));
        assert!(!g.contains_key(&2));
    }

    #[test]
    fn prunes_before_the_oldest_needed_and_never_history() {
        let n = |s: &str| WalName::parse(s).unwrap();
        assert!(prunable(&n("000000010000000000000002"), 3));
        assert!(!prunable(&n("000000010000000000000003"), 3));
        assert!(!prunable(&n("00000001.history"), 3));
        assert!(prunable(&n("000000010000000000000002.00000028.backup"), 3));
    }
}
