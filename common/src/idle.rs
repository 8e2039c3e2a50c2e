//! The idle CPU the adaptive compression level watches: the machine's, from
//! `/proc/stat`, and where a cgroup caps the process (a container's CPU
//! limit), what is left of the cgroup's quota. A container on a large host
//! sees the host's idle cores in `/proc/stat` even while its own quota is
//! spent and the kernel throttles it; there the quota is what counts.

use std::path::{Path, PathBuf};
use std::time::Instant;

/// What an [`IdleGauge`] saw since its previous reading.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Idle {
    /// The machine does not tell (not Linux, no `/proc`).
    Unknown,
    /// Too little time has passed for a reading worth acting on.
    TooSoon,
    /// Cores idle on average.
    Cores(f64),
}

/// The machine's idle CPU between readings.
pub(crate) trait IdleGauge: Send {
    fn read(&mut self) -> Idle;
}

/// Idle CPU from `/proc/stat`'s first line (idle and iowait against all
/// time, of every core): the kernel counts in ticks of 10 ms, so a reading
/// waits for 10 ticks a core. Under cgroup CPU quotas, the idle cores are at
/// most what the quota with the least left leaves unused: not always the
/// smallest one, since an ancestor's quota is shared with its other children.
pub(crate) struct ProcStat {
    last: Option<(u64, u64)>,
    cores: f64,
    /// Each quota, with its usage and when it was read.
    quotas: Vec<(Quota, Option<(u64, Instant)>)>,
}

impl ProcStat {
    pub(crate) fn new() -> ProcStat {
        let text = std::fs::read_to_string("/proc/stat").unwrap_or_default();
        let cores = text
            .lines()
            .skip(1)
            .take_while(|l| l.starts_with("cpu"))
            .count();
        let own = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
        let quotas = Quota::all(&own, &|p| std::fs::read_to_string(p).ok())
            .into_iter()
            .map(|q| {
                let first = q.used_ns().map(|n| (n, Instant::now()));
                (q, first)
            })
            .collect();
        ProcStat {
            last: ticks(&text),
            cores: cores.max(1) as f64,
            quotas,
        }
    }

    /// The least of the quotas' unused cores between the previous reading
    /// and `now`; `None` when no quota binds or none can be read yet.
    fn quota_idle(&mut self, now: Instant) -> Option<f64> {
        let mut least: Option<f64> = None;
        for (quota, last) in &mut self.quotas {
            let Some(used) = quota.used_ns() else {
                continue;
            };
            let Some((used0, at0)) = last.replace((used, now)) else {
                continue;
            };
            let wall = now.saturating_duration_since(at0).as_nanos() as f64;
            if wall > 0.0 {
                let idle = (quota.cores - used.saturating_sub(used0) as f64 / wall).max(0.0);
                least = Some(least.map_or(idle, |l| l.min(idle)));
            }
        }
        least
    }
}

/// (idle, total) ticks of every core so far, from `/proc/stat`'s text.
fn ticks(proc_stat: &str) -> Option<(u64, u64)> {
    let all: Vec<u64> = proc_stat
        .lines()
        .next()?
        .strip_prefix("cpu ")?
        .split_whitespace()
        .take(8)
        .map(|n| n.parse().ok())
        .collect::<Option<_>>()?;
    let idle = all.get(3)? + all.get(4)?;
    Some((idle, all.iter().sum()))
}

impl IdleGauge for ProcStat {
    fn read(&mut self) -> Idle {
        let now = std::fs::read_to_string("/proc/stat").ok();
        let (Some((idle0, total0)), Some((idle, total))) =
            (self.last, now.as_deref().and_then(ticks))
        else {
            return Idle::Unknown;
        };
        let elapsed = total.saturating_sub(total0);
        if (elapsed as f64) < 10.0 * self.cores {
            return Idle::TooSoon;
        }
        self.last = Some((idle, total));
        let machine = idle.saturating_sub(idle0) as f64 / elapsed as f64 * self.cores;
        Idle::Cores(match self.quota_idle(Instant::now()) {
            Some(quota) => machine.min(quota),
            None => machine,
        })
    }
}

/// Where cgroups are mounted.
const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// A cgroup's CPU quota and the counter of the CPU time its processes used.
#[derive(Debug, Clone, PartialEq)]
struct Quota {
    /// Cores the quota allows (quota over period).
    cores: f64,
    /// The usage counter.
    usage: Usage,
}

/// cgroup v2's `cpu.stat` (its `usage_usec` line) or v1's `cpuacct.usage`
/// (nanoseconds).
#[derive(Debug, Clone, PartialEq)]
enum Usage {
    V2(PathBuf),
    V1(PathBuf),
}

impl Quota {
    /// Every CPU quota over the process's cgroups and their ancestors (a
    /// limit set above the process's own cgroup binds it too), from
    /// `/proc/self/cgroup`'s text; `read` reads a cgroup file.
    fn all(own: &str, read: &dyn Fn(&Path) -> Option<String>) -> Vec<Quota> {
        let root = Path::new(CGROUP_ROOT);
        let mut found: Vec<Quota> = Vec::new();
        for line in own.lines() {
            let mut fields = line.splitn(3, ':');
            let (Some(_), Some(controllers), Some(path)) =
                (fields.next(), fields.next(), fields.next())
            else {
                continue;
            };
            let path = path.trim_start_matches('/');
            if controllers.is_empty() {
                // v2: `cpu.max` is "max PERIOD" or "QUOTA PERIOD".
                for dir in within(root, &root.join(path)) {
                    let quota = read(&dir.join("cpu.max")).and_then(|t| {
                        let mut f = t.split_whitespace();
                        cores(f.next()?, f.next()?)
                    });
                    if let Some(cores) = quota {
                        let usage = Usage::V2(dir.join("cpu.stat"));
                        found.push(Quota { cores, usage });
                    }
                }
            } else if controllers.split(',').any(|c| c == "cpu") {
                // v1: the cpu controller, mounted alone or with cpuacct;
                // a quota of -1 is none.
                for mount in ["cpu,cpuacct", "cpu"].map(|m| root.join(m)) {
                    for dir in within(&mount, &mount.join(path)) {
                        let quota = read(&dir.join("cpu.cfs_quota_us")).and_then(|q| {
                            cores(q.trim(), read(&dir.join("cpu.cfs_period_us"))?.trim())
                        });
                        let Some(cores) = quota else { continue };
                        let relative = dir.strip_prefix(&mount).unwrap_or(Path::new(""));
                        let usage = [&dir, &root.join("cpuacct").join(relative)]
                            .map(|d| d.join("cpuacct.usage"))
                            .into_iter()
                            .find(|f| read(f).is_some());
                        if let Some(usage) = usage {
                            found.push(Quota {
                                cores,
                                usage: Usage::V1(usage),
                            });
                        }
                    }
                }
            }
        }
        found
    }

    /// CPU time the cgroup's processes have used, nanoseconds.
    fn used_ns(&self) -> Option<u64> {
        match &self.usage {
            Usage::V2(f) => std::fs::read_to_string(f)
                .ok()?
                .lines()
                .find_map(|l| l.strip_prefix("usage_usec "))?
                .trim()
                .parse::<u64>()
                .ok()
                .map(|us| us * 1000),
            Usage::V1(f) => std::fs::read_to_string(f).ok()?.trim().parse().ok(),
        }
    }
}

/// Cores a quota of `quota` per `period` allows; `None` for no quota.
fn cores(quota: &str, period: &str) -> Option<f64> {
    let (quota, period) = (quota.parse::<f64>().ok()?, period.parse::<f64>().ok()?);
    (quota > 0.0 && period > 0.0).then(|| quota / period)
}

/// `dir` and its ancestors up to `top`, innermost first; just `top` when
/// `dir` is not inside it. In a container, `/proc/self/cgroup` may name the
/// host's path of a cgroup mounted as the container's root.
fn within(top: &Path, dir: &Path) -> Vec<PathBuf> {
    match dir.strip_prefix(top) {
        Ok(_) => dir
            .ancestors()
            .take_while(|d| d.starts_with(top))
            .map(Path::to_path_buf)
            .collect(),
        Err(_) => vec![top.to_path_buf()],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// The quotas `/proc/self/cgroup`'s text `own` finds among `files`.
    fn quota(own: &str, files: &[(&str, &str)]) -> Vec<Quota> {
        let files: HashMap<PathBuf, String> = files
            .iter()
            .map(|(p, t)| (PathBuf::from(p), t.to_string()))
            .collect();
        Quota::all(own, &|p: &Path| files.get(p).cloned())
    }

    fn found(cores: f64, usage: Usage) -> Quota {
        Quota { cores, usage }
    }

    #[test]
    fn v2_quotas_are_found_on_the_process_cgroup_and_its_ancestors() {
        let pod = "/sys/fs/cgroup/kubepods/pod1";
        assert_eq!(
            quota(
                "0::/kubepods/pod1/ctr\n",
                &[
                    (&format!("{pod}/ctr/cpu.max"), "max 100000\n"),
                    (&format!("{pod}/cpu.max"), "150000 100000\n"),
                    ("/sys/fs/cgroup/kubepods/cpu.max", "400000 100000\n"),
                ]
            ),
            [
                found(1.5, Usage::V2(format!("{pod}/cpu.stat").into())),
                found(4.0, Usage::V2("/sys/fs/cgroup/kubepods/cpu.stat".into()))
            ]
        );
        // A container's own namespace: its cgroup is the root.
        let root = |max: &str| quota("0::/\n", &[("/sys/fs/cgroup/cpu.max", max)]);
        assert_eq!(
            root("50000 100000\n"),
            [found(0.5, Usage::V2("/sys/fs/cgroup/cpu.stat".into()))]
        );
        // No quota anywhere, or no cgroup file at all: none.
        assert_eq!(root("max 100000\n"), []);
        assert_eq!(quota("0::/\n", &[]), []);
    }

    #[test]
    fn a_v1_quota_is_read_with_its_period_and_usage_where_cpu_is_mounted() {
        // cpu and cpuacct mounted together; -1 is no quota.
        let both = "/sys/fs/cgroup/cpu,cpuacct";
        let abc = format!("{both}/docker/abc");
        assert_eq!(
            quota(
                "4:memory:/x\n3:cpu,cpuacct:/docker/abc\n",
                &[
                    (&format!("{abc}/cpu.cfs_quota_us"), "200000\n"),
                    (&format!("{abc}/cpu.cfs_period_us"), "100000\n"),
                    (&format!("{abc}/cpuacct.usage"), "123\n"),
                    (&format!("{both}/cpu.cfs_quota_us"), "-1\n"),
                    (&format!("{both}/cpu.cfs_period_us"), "100000\n"),
                ]
            ),
            [found(2.0, Usage::V1(format!("{abc}/cpuacct.usage").into()))]
        );
        // Mounted apart, the container's cgroup as the mount's root: the
        // host's path is not under it, the mount itself is the cgroup.
        let apart = |quota_us: &str| {
            quota(
                "2:cpuacct:/docker/abc\n1:cpu:/docker/abc\n0::/\n",
                &[
                    ("/sys/fs/cgroup/cpu/cpu.cfs_quota_us", quota_us),
                    ("/sys/fs/cgroup/cpu/cpu.cfs_period_us", "100000\n"),
                    ("/sys/fs/cgroup/cpuacct/cpuacct.usage", "5\n"),
                ],
            )
        };
        assert_eq!(
            apart("25000\n"),
            [found(
                0.25,
                Usage::V1("/sys/fs/cgroup/cpuacct/cpuacct.usage".into())
            )]
        );
        // A quota of -1 is none.
        assert_eq!(apart("-1\n"), []);
    }

    #[test]
    fn the_quota_with_the_least_left_sets_the_idle_cores_whatever_the_machine_has() {
        let dir = tempfile::tempdir().unwrap();
        let counter = |name: &str, usec: u64| {
            let f = dir.path().join(name);
            std::fs::write(&f, format!("usage_usec {usec}\nuser_usec 1\n")).unwrap();
            f
        };
        // The process's own cgroup may use 1.5 cores; its parent 2, shared
        // with siblings that keep it busy.
        let (own, parent) = (counter("own", 1000), counter("parent", 1000));
        let quota = |cores, usage: &PathBuf| Quota {
            cores,
            usage: Usage::V2(usage.clone()),
        };
        assert_eq!(quota(1.5, &own).used_ns(), Some(1_000_000));
        let start = Instant::now();
        let mut g = ProcStat {
            last: None,
            cores: 64.0,
            quotas: vec![
                (quota(1.5, &own), Some((1_000_000, start))),
                (quota(2.0, &parent), Some((1_000_000, start))),
            ],
        };
        let ms = std::time::Duration::from_millis;
        // In 100 ms: this cgroup used 50 ms of CPU, the parent 180 ms.
        counter("own", 51_000);
        counter("parent", 181_000);
        let idle = g.quota_idle(start + ms(100)).expect("a reading");
        assert!((idle - 0.2).abs() < 1e-9, "{idle} idle cores, not 1.0");
        // Spent: more than a quota's cores (the kernel's accounting may
        // run ahead of the period), none idle.
        counter("own", 251_000);
        counter("parent", 381_000);
        assert_eq!(g.quota_idle(start + ms(200)), Some(0.0));
        // Nothing used since: the smaller quota is all that is idle.
        assert_eq!(g.quota_idle(start + ms(300)), Some(1.5));
        // No quota: none to say.
        g.quotas.clear();
        assert_eq!(g.quota_idle(start + ms(400)), None);
    }

    #[test]
    fn proc_stat_ticks_are_idle_and_iowait_against_all_time() {
        let text = "cpu  100 5 50 800 40 3 2 0 0 0\ncpu0 50 2 25 400 20 1 1 0 0 0\nintr 1\n";
        assert_eq!(ticks(text), Some((840, 1000)));
        assert_eq!(ticks("cpu0 1 2 3\n"), None, "no total line");
        assert_eq!(ticks("cpu  1 2 x 4 5\n"), None, "not numbers");
    }

    #[test]
    fn proc_stat_reads_idle_cores_within_the_machine() {
        let mut g = ProcStat::new();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let idle = loop {
            match g.read() {
                Idle::TooSoon if std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(20))
                }
                other => break other,
            }
        };
        let Idle::Cores(c) = idle else {
            panic!("no reading from /proc/stat: {idle:?}")
        };
        assert!(
            (0.0..=g.cores).contains(&c),
            "{c} idle of {} cores",
            g.cores
        );
        assert!(g.cores >= 1.0);
    }
}
