//! Prometheus metrics (SPEC §7): a textfile for node_exporter's textfile
//! collector, and a push to a Pushgateway.
//!
//! The textfile is merged, not overwritten: series from other jobs (other
//! databases, other tools) stay, a series of the same name and labels is
//! replaced, and `_total` counters carry on from the value in the file. The
//! file is written atomically so the collector never reads half of it.

use crate::error::{Error, Result};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::Path;

/// One sample to record.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Metric name, e.g. `dbsafe_backup_size_bytes`.
    pub name: &'static str,
    /// Its help text.
    pub help: &'static str,
    /// Labels (`env`, `database`, ...).
    pub labels: BTreeMap<String, String>,
    /// A gauge's value, or what a counter grows by.
    pub value: f64,
}

impl Sample {
    /// A sample labelled with env and database.
    pub fn new(
        name: &'static str,
        help: &'static str,
        env: &str,
        database: &str,
        value: f64,
    ) -> Sample {
        let labels = [
            ("env".to_string(), env.to_string()),
            ("database".to_string(), database.to_string()),
        ]
        .into();
        Sample {
            name,
            help,
            labels,
            value,
        }
    }
    /// Adds a label.
    pub fn label(mut self, k: &str, v: &str) -> Sample {
        self.labels.insert(k.into(), v.into());
        self
    }
    fn is_counter(&self) -> bool {
        self.name.ends_with("_total")
    }
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn series_key(name: &str, labels: &BTreeMap<String, String>) -> String {
    let l: Vec<String> = labels
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
        .collect();
    if l.is_empty() {
        name.to_string()
    } else {
        format!("{name}{{{}}}", l.join(","))
    }
}

/// A parsed textfile: family name → (help, type, series key → value).
type Families = BTreeMap<String, (String, String, BTreeMap<String, String>)>;

fn parse(text: &str) -> Families {
    let mut f: Families = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            if let Some((name, help)) = rest.split_once(' ') {
                f.entry(name.into()).or_default().0 = help.into();
            }
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            if let Some((name, kind)) = rest.split_once(' ') {
                f.entry(name.into()).or_default().1 = kind.into();
            }
        } else if !line.starts_with('#') && !line.trim().is_empty() {
            if let Some(pos) = line.rfind(' ') {
                let (key, value) = (line[..pos].to_string(), line[pos + 1..].to_string());
                let name = key.split('{').next().unwrap_or(&key).to_string();
                f.entry(name).or_default().2.insert(key, value);
            }
        }
    }
    f
}

fn render(f: &Families) -> String {
    let mut out = String::new();
    for (name, (help, kind, series)) in f {
        if series.is_empty() {
            continue;
        }
        out.push_str(&format!(
            "# HELP {name} {help}\n# TYPE {name} {}\n",
            if kind.is_empty() { "gauge" } else { kind }
        ));
        for (k, v) in series {
            out.push_str(&format!("{k} {v}\n"));
        }
    }
    out
}

fn merge(existing: &str, samples: &[Sample]) -> String {
    let mut f = parse(existing);
    for s in samples {
        let e = f.entry(s.name.to_string()).or_default();
        e.0 = s.help.into();
        e.1 = if s.is_counter() { "counter" } else { "gauge" }.into();
        let key = series_key(s.name, &s.labels);
        let value = if s.is_counter() {
            e.2.get(&key)
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(0.0)
                + s.value
        } else {
            s.value
        };
        e.2.insert(key, format_value(value));
    }
    render(&f)
}

fn format_value(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

/// Merges samples into the textfile at `path`, atomically.
pub fn write_textfile(path: &Path, samples: &[Sample]) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        crate::fsutil::create_private_dir(dir)?;
    }
    // One writer at a time, so two jobs sharing a file never lose each other's series.
    let lock_path = path.with_file_name(format!(
        ".{}.lock",
        path.file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default()
    ));
    let _lock = crate::lock::Lock::acquire(
        &lock_path,
        "the metrics file",
        std::time::Duration::from_secs(30),
    )?;
    let existing = std::fs::read_to_string(path).unwrap_or_default();
    let text = merge(&existing, samples);
    crate::fsutil::write_private(path, text.as_bytes())?;
    // The textfile collector runs as another user: the file is not secret.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644))
        .map_err(|e| Error::failed(format!("chmod {}: {e}", path.display())))
}

/// Pushes samples to a Pushgateway (`http://host:port`), grouped by job, env and database.
pub fn push(url: &str, job: &str, samples: &[Sample]) -> Result<()> {
    let Some(first) = samples.first() else {
        return Ok(());
    };
    let rest = url.strip_prefix("http://").ok_or_else(|| {
        Error::usage(format!(
            "--pushgateway {url}: only http:// URLs are supported"
        ))
        .hint("run the Pushgateway on a local or internal address")
    })?;
    let (hostport, base) = rest
        .split_once('/')
        .map(|(h, p)| (h, format!("/{p}")))
        .unwrap_or((rest, String::new()));
    let hostport = if hostport.contains(':') {
        hostport.to_string()
    } else {
        format!("{hostport}:80")
    };
    let group = |k: &str| first.labels.get(k).cloned().unwrap_or_default();
    let enc = |s: &str| -> String {
        s.bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                    (b as char).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect()
    };
    let path = format!(
        "{}/metrics/job/{}/env/{}/database/{}",
        base.trim_end_matches('/'),
        enc(job),
        enc(&group("env")),
        enc(&group("database"))
    );
    // The grouping labels travel in the path, not in the samples.
    let body = {
        let mut f: Families = BTreeMap::new();
        for s in samples {
            let mut labels = s.labels.clone();
            labels.remove("env");
            labels.remove("database");
            let e = f.entry(s.name.to_string()).or_default();
            e.0 = s.help.into();
            e.1 = if s.is_counter() { "counter" } else { "gauge" }.into();
            e.2.insert(series_key(s.name, &labels), format_value(s.value));
        }
        render(&f)
    };
    let addr = std::net::ToSocketAddrs::to_socket_addrs(&hostport)
        .map_err(|e| Error::failed(format!("pushgateway {hostport}: {e}")))?
        .next()
        .ok_or_else(|| Error::failed(format!("pushgateway {hostport}: no address")))?;
    let mut conn = std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_secs(10))
        .map_err(|e| Error::failed(format!("pushgateway {hostport}: {e}")))?;
    conn.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .ok();
    let req = format!(
        "POST {path} HTTP/1.1\r\nHost: {hostport}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    conn.write_all(req.as_bytes())
        .map_err(|e| Error::failed(format!("pushgateway {hostport}: {e}")))?;
    let mut resp = String::new();
    let _ = conn.read_to_string(&mut resp);
    let status = resp.split_whitespace().nth(1).unwrap_or("");
    if status.starts_with('2') {
        Ok(())
    } else {
        Err(Error::failed(format!(
            "pushgateway {hostport} answered {:?}",
            resp.lines().next().unwrap_or("nothing")
        )))
    }
}

/// Where metrics go, from `--metrics-file` and `--pushgateway`.
#[derive(Debug, Clone, Default)]
pub struct Sink {
    /// The textfile.
    pub file: Option<std::path::PathBuf>,
    /// The Pushgateway URL.
    pub pushgateway: Option<String>,
}

impl Sink {
    /// Records samples; failures warn and never fail the job.
    pub fn record(&self, job: &str, samples: &[Sample]) {
        if let Some(f) = &self.file {
            if let Err(e) = write_textfile(f, samples) {
                crate::output::warn(format!("cannot write metrics to {}: {e}", f.display()));
            }
        }
        if let Some(u) = &self.pushgateway {
            if let Err(e) = push(u, job, samples) {
                crate::output::warn(format!("cannot push metrics: {e}"));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merging_replaces_same_series_keeps_others_and_counts_on() {
        let failure = || {
            Sample::new(
                "dbsafe_backup_failures_total",
                "Failures.",
                "prod",
                "app",
                1.0,
            )
        };
        let a = vec![
            Sample::new("dbsafe_backup_size_bytes", "Size.", "prod", "app", 10.0),
            failure(),
        ];
        let t1 = merge("", &a);
        let b = vec![
            Sample::new("dbsafe_backup_size_bytes", "Size.", "prod", "crm", 7.0),
            failure(),
        ];
        let t2 = merge(&t1, &b);
        assert!(
            t2.contains("dbsafe_backup_size_bytes{database=\"app\",env=\"prod\"} 10\n"),
            "{t2}"
        );
        assert!(
            t2.contains("dbsafe_backup_size_bytes{database=\"crm\",env=\"prod\"} 7\n"),
            "{t2}"
        );
        assert!(
            t2.contains("dbsafe_backup_failures_total{database=\"app\",env=\"prod\"} 2\n"),
            "{t2}"
        );
        assert_eq!(
            t2.matches("# TYPE dbsafe_backup_size_bytes gauge").count(),
            1
        );
        assert!(t2.contains("# TYPE dbsafe_backup_failures_total counter"));
        let c = vec![Sample::new(
            "dbsafe_backup_size_bytes",
            "Size.",
            "prod",
            "app",
            12.5,
        )];
        assert!(merge(&t2, &c)
            .contains("dbsafe_backup_size_bytes{database=\"app\",env=\"prod\"} 12.5\n"));
    }
}
