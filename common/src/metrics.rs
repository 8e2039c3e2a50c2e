//! Prometheus metrics (SPEC §7): a textfile for node_exporter's textfile
//! collector, and a push to a Pushgateway.
//!
//! The textfile is merged, not overwritten: series from other jobs (other
//! databases, other tools) stay, a series of the same name and labels is
//! replaced, and `_total` counters carry on from the value in the file. The
//! file is written atomically so the collector never reads half of it.

use crate::error::{Error, Result};
use std::collections::BTreeMap;
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

/// Pushes samples to a Pushgateway (`http://host:port` or `https://...`),
/// grouped by job, env and database. Basic auth comes from
/// `DBSAFE_PUSHGATEWAY_USER` (or the URL's user name) and
/// `DBSAFE_PUSHGATEWAY_PASSWORD_FILE` (or `DBSAFE_PUSHGATEWAY_PASSWORD`),
/// never from the URL: a password there would be in the process list.
pub fn push(url: &str, job: &str, samples: &[Sample]) -> Result<()> {
    let Some(first) = samples.first() else {
        return Ok(());
    };
    let shown = crate::output::redact_urls(url);
    let mut target = url::Url::parse(url)
        .ok()
        .filter(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
        .ok_or_else(|| {
            Error::usage(format!(
                "--pushgateway {shown}: not an http:// or https:// URL"
            ))
        })?;
    if target.password().is_some() {
        return Err(Error::usage(format!(
            "--pushgateway {shown}: a password in the URL would be visible in the process list"
        ))
        .hint("set DBSAFE_PUSHGATEWAY_USER and DBSAFE_PUSHGATEWAY_PASSWORD_FILE instead"));
    }
    let auth = pushgateway_auth(&target)?;
    let group = |k: &str| first.labels.get(k).cloned().unwrap_or_default();
    target
        .path_segments_mut()
        .map_err(|()| Error::usage(format!("--pushgateway {shown}: not a base URL")))?
        .pop_if_empty()
        .extend([
            "metrics",
            "job",
            job,
            "env",
            &group("env"),
            "database",
            &group("database"),
        ]);
    let _ = target.set_username("");
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
    let agent = crate::http::agent_builder()?
        .timeout(std::time::Duration::from_secs(10))
        .redirects(0)
        .build();
    let mut req = agent
        .post(target.as_str())
        .set("content-type", "text/plain; version=0.0.4");
    if let Some(value) = &auth {
        req = req.set("authorization", value);
    }
    match req.send_string(&body) {
        Ok(_) => Ok(()),
        Err(ureq::Error::Status(code, _)) => Err(Error::failed(format!(
            "pushgateway {shown} answered HTTP {code}{}",
            match (code, auth.is_some()) {
                (401, false) => " (it asks for credentials: DBSAFE_PUSHGATEWAY_USER, DBSAFE_PUSHGATEWAY_PASSWORD_FILE)",
                (401, true) => " (the credentials were refused)",
                _ => "",
            }
        ))),
        Err(e) => Err(Error::failed(format!(
            "pushgateway {shown}: {}",
            crate::http::failure_message(&e)
        ))),
    }
}

/// The Pushgateway's basic auth, when a user is set.
fn pushgateway_auth(url: &url::Url) -> Result<Option<String>> {
    let user = std::env::var("DBSAFE_PUSHGATEWAY_USER")
        .ok()
        .filter(|u| !u.is_empty())
        .or_else(|| Some(url.username().to_string()).filter(|u| !u.is_empty()));
    let Some(user) = user else {
        return Ok(None);
    };
    let password = match std::env::var_os("DBSAFE_PUSHGATEWAY_PASSWORD_FILE") {
        Some(f) => {
            let text = std::fs::read_to_string(&f).map_err(|e| {
                Error::usage(format!(
                    "DBSAFE_PUSHGATEWAY_PASSWORD_FILE={}: {e}",
                    std::path::Path::new(&f).display()
                ))
            })?;
            text.trim_end_matches(['\n', '\r']).to_string()
        }
        None => std::env::var("DBSAFE_PUSHGATEWAY_PASSWORD").map_err(|_| {
            Error::usage(format!("a Pushgateway user ({user}) without a password"))
                .hint("set DBSAFE_PUSHGATEWAY_PASSWORD_FILE (or DBSAFE_PUSHGATEWAY_PASSWORD)")
        })?,
    };
    Ok(Some(crate::http::basic_auth(&user, &password)))
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
