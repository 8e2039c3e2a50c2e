//! PostgreSQL WAL file names and their arithmetic, as pure functions.
//!
//! A segment name is 24 hex digits: timeline, log and segment
//! (`000000010000000A000000FF`). How many segments a log holds depends on
//! the cluster's segment size (`initdb --wal-segsize`, 1 MiB to 1 GiB):
//! 256 for the default 16 MiB, 64 for 64 MiB. A [`WalName`] keeps a
//! position that orders segments whatever the size; whether two positions
//! are neighbours, and so where the gaps are, needs the [`SegSize`].

use std::collections::BTreeMap;

/// Positions reserved per log: enough for the smallest segment size (1 MiB,
/// 4096 segments a log), so a position is exact for every size.
pub const POSITIONS_PER_LOG: u64 = 0x1000;

/// A cluster's WAL segment size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegSize(u64);

impl Default for SegSize {
    fn default() -> SegSize {
        SegSize::DEFAULT
    }
}

impl SegSize {
    /// PostgreSQL's default, 16 MiB.
    pub const DEFAULT: SegSize = SegSize(16 << 20);

    /// A segment size in bytes: a power of two from 1 MiB to 1 GiB.
    pub fn new(bytes: u64) -> Option<SegSize> {
        (bytes.is_power_of_two() && ((1 << 20)..=(1 << 30)).contains(&bytes))
            .then_some(SegSize(bytes))
    }
    /// The size in bytes.
    pub fn bytes(self) -> u64 {
        self.0
    }
    /// Segments in one log file number (`0x1_0000_0000 / size`).
    pub fn per_log(self) -> u64 {
        0x1_0000_0000 / self.0
    }
    /// The position of the segment after `pos`.
    pub fn next(self, pos: u64) -> u64 {
        let (log, seg) = (pos / POSITIONS_PER_LOG, pos % POSITIONS_PER_LOG);
        if seg + 1 >= self.per_log() {
            (log + 1) * POSITIONS_PER_LOG
        } else {
            pos + 1
        }
    }
    /// The position of the segment before `pos` (a log's first segment's is
    /// the previous log's last).
    pub fn prev(self, pos: u64) -> u64 {
        let (log, seg) = (pos / POSITIONS_PER_LOG, pos % POSITIONS_PER_LOG);
        match (log, seg) {
            (_, s) if s > 0 => pos - 1,
            (0, _) => 0,
            (l, _) => (l - 1) * POSITIONS_PER_LOG + self.per_log() - 1,
        }
    }
    /// Every segment position from `first` to `last`, both included.
    pub fn range(self, first: u64, last: u64) -> impl Iterator<Item = u64> {
        std::iter::successors(Some(first), move |&p| Some(self.next(p)))
            .take_while(move |&p| p <= last)
    }
    /// Whether a segment position can exist with this size.
    pub fn holds(self, pos: u64) -> bool {
        pos % POSITIONS_PER_LOG < self.per_log()
    }
}

/// What a file in the WAL archive is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum WalKind {
    /// A segment.
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
    /// Position: `log * POSITIONS_PER_LOG + seg` (0 for history files).
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
        // The smallest segment size (1 MiB) has 4096 segments a log.
        if seg >= POSITIONS_PER_LOG {
            return None;
        }
        Some(WalName {
            timeline: tli,
            segno: log * POSITIONS_PER_LOG + seg,
            kind,
        })
    }

    /// The 24-digit segment name of a timeline and position.
    pub fn segment_name(timeline: u32, segno: u64) -> String {
        format!(
            "{:08X}{:08X}{:08X}",
            timeline,
            segno / POSITIONS_PER_LOG,
            segno % POSITIONS_PER_LOG
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
pub fn gaps(names: &[WalName], size: SegSize) -> BTreeMap<u32, Vec<(u64, u64)>> {
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
            .filter(|w| size.next(w[0]) != w[1])
            .map(|w| (size.next(w[0]), size.prev(w[1])))
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
            (1, 0xA * POSITIONS_PER_LOG + 0xFF, WalKind::Segment)
        );
        assert_eq!(
            WalName::segment_name(1, 0xA * POSITIONS_PER_LOG + 0xFF),
            "000000010000000A000000FF"
        );
        let next = WalName::parse("000000010000000B00000000").unwrap();
        assert_eq!(SegSize::DEFAULT.next(s.segno), next.segno, "log boundary");
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
            WalName::parse("000000010000000000001000").is_none(),
            "no segment size has segment 0x1000"
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
        let g = gaps(&names, SegSize::DEFAULT);
        assert_eq!(g.get(&1), Some(&vec![(3, 4)]));
        assert!(!g.contains_key(&2));
    }

    #[test]
    fn segment_size_decides_where_a_log_ends() {
        let n = |s: &str| WalName::parse(s).unwrap();
        // 64 MiB segments: 64 a log, so ...0000003F is followed by the next log's 0.
        let big = SegSize::new(64 << 20).unwrap();
        let names = vec![
            n("00000001000000000000003E"),
            n("00000001000000000000003F"),
            n("000000010000000100000000"),
            n("000000010000000100000001"),
        ];
        assert!(
            gaps(&names, big).is_empty(),
            "no false gap at a 64 MiB log boundary"
        );
        // With 16 MiB the same names miss 0x40..0xFF of log 0.
        let g = gaps(&names, SegSize::DEFAULT);
        assert_eq!(
            g[&1]
                .iter()
                .map(|&(a, b)| (WalName::segment_name(1, a), WalName::segment_name(1, b)))
                .collect::<Vec<_>>(),
            vec![(
                "000000010000000000000040".to_string(),
                "0000000100000000000000FF".to_string()
            )]
        );
        let gap = vec![n("000000010000000000000001"), n("000000010000000000000004")];
        assert_eq!(gaps(&gap, big)[&1], vec![(2, 3)]);
        assert_eq!(big.range(0x3E, POSITIONS_PER_LOG + 1).count(), 4);
        assert_eq!(SegSize::new(1 << 20).unwrap().per_log(), 4096);
        assert_eq!(SegSize::new(1 << 30).unwrap().per_log(), 4);
        assert!(SegSize::new(3 << 20).is_none());
        assert!(SegSize::new(2 << 30).is_none());
        assert!(big.holds(0x3F) && !big.holds(0x40));
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
