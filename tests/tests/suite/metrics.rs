//! Prometheus metrics: a textfile every tool merges into, promtool-clean, and a real Pushgateway.

use dbsafe_tests::{require, snap_to_file, snap_to_store, sqlite, wait_until, Cmd, Scene};
use std::time::Duration;

fn promtool_accepts(path: &std::path::Path) {
    require("promtool", "the Debian package prometheus");
    Cmd::sh(&format!("promtool check metrics < {}", path.display())).succeeds();
}

#[test]
fn every_tool_merges_its_series_into_one_promtool_clean_textfile() {
    let s = Scene::new();
    sqlite::sample(&s.path("app.db"), 10);
    let store = s.path("store");
    let prom = s.path("textfile/dbsafe.prom");
    let snap = |db: &str| {
        snap_to_store(sqlite::url(&s.path(db)), &store).env("DBSAFE_METRICS_FILE", &prom)
    };
    snap("app.db").args(["--env", "production"]).succeeds();
    // A failed backup counts, and never erases the last success.
    snap("missing.db")
        .args(["--env", "production"])
        .fails_with_code(1);
    snap("missing.db")
        .args(["--env", "production"])
        .fails_with_code(1);
    Cmd::tool("dbverify")
        .arg("--store")
        .arg(&store)
        .arg("--latest")
        .arg("--metrics-file")
        .arg(&prom)
        .succeeds();
    Cmd::tool("dbprune")
        .arg("--store")
        .arg(&store)
        .args(["--keep-last", "1"])
        .arg("--metrics-file")
        .arg(&prom)
        .succeeds();
    let seg = s.path("seg");
    std::fs::write(&seg, vec![7u8; 1 << 20]).unwrap();
    Cmd::tool("walship")
        .args(["push", "--no-encrypt"])
        .arg(&seg)
        .arg("000000010000000000000001")
        .arg("--to")
        .arg(&store)
        .arg("--metrics-file")
        .arg(&prom)
        .env("DBSAFE_ENV", "production")
        .succeeds();
    let text = std::fs::read_to_string(&prom).unwrap();
    for series in [
        "dbsafe_backup_last_success_timestamp_seconds{database=\"app\",env=\"production\"}",
        "dbsafe_backup_duration_seconds{database=\"app\",env=\"production\"}",
        "dbsafe_backup_size_bytes{database=\"app\",env=\"production\"}",
        "dbsafe_backup_failures_total{database=\"missing\",env=\"production\"} 2",
        "dbsafe_backup_failures_total{database=\"app\",env=\"production\"} 0",
        "dbsafe_verify_last_success_timestamp_seconds{database=\"app\",env=\"production\"}",
        "dbsafe_verify_integrity_score{database=\"app\",env=\"production\",level=\"full\"} 1",
        "dbsafe_prune_deleted_total{database=\"app\",env=\"production\"} 0",
        "dbsafe_wal_last_archived_timestamp_seconds{database=\"cluster\",env=\"production\"}",
    ] {
        assert!(text.contains(series), "{series} missing from:\n{text}");
    }
    promtool_accepts(&prom);
}

#[test]
fn a_push_reaches_a_real_pushgateway_and_a_dead_one_only_warns() {
    let gw = require(
        "prometheus-pushgateway",
        "the Debian package prometheus-pushgateway",
    );
    let s = Scene::new();
    sqlite::sample(&s.path("app.db"), 10);
    let port = dbsafe_tests::free_port();
    let mut child = Cmd::new(gw)
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .spawn();
    let url = format!("http://127.0.0.1:{port}");
    let get = || {
        Cmd::new("python3").arg("-c").arg(format!("import urllib.request; print(urllib.request.urlopen('{url}/metrics').read().decode())")).run()
    };
    wait_until("the pushgateway to start", Duration::from_secs(20), || {
        get().out.status.success()
    });
    snap_to_file(sqlite::url(&s.path("app.db")), s.path("a.sqlite.zst"))
        .args(["--env", "staging", "--pushgateway", &url])
        .succeeds();
    let metrics = get().stdout();
    let line = metrics
        .lines()
        .find(|l| l.starts_with("dbsafe_backup_size_bytes{"))
        .unwrap_or_else(|| panic!("no backup size pushed:\n{metrics}"));
    assert!(
        line.contains("database=\"app\"")
            && line.contains("env=\"staging\"")
            && line.contains("job=\"dbsnap\""),
        "{line}"
    );
    let size = std::fs::metadata(s.path("a.sqlite.zst")).unwrap().len();
    assert!(line.ends_with(&format!(" {size}")), "{line} vs {size}");
    child.kill().ok();
    child.wait().ok();
    // The gateway is gone: the backup still succeeds, with a warning.
    snap_to_file(sqlite::url(&s.path("app.db")), s.path("b.sqlite.zst"))
        .args(["--pushgateway", &url])
        .succeeds()
        .stderr_has("cannot push metrics");
}
