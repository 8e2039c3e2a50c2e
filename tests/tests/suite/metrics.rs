//! Prometheus metrics: a textfile every tool merges into, promtool-clean, and a real Pushgateway.

use dbsafe_tests::{
    prune_store, require, snap_to_file, snap_to_store, sqlite, wait_until, Cmd, Scene,
};
use std::time::Duration;

fn promtool_accepts(path: &std::path::Path) {
    require("promtool", "the Debian package prometheus");
    Cmd::sh(&format!("promtool check metrics < {}", path.display())).succeeds();
}

#[test]
fn every_tool_merges_its_series_into_one_promtool_clean_textfile() {
    let (s, _) = sqlite::app_db(10);
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
    prune_store(&store)
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

/// The backup size series in what a Pushgateway serves.
fn pushed_size(metrics: &str) -> String {
    metrics
        .lines()
        .find(|l| l.starts_with("dbsafe_backup_size_bytes{"))
        .unwrap_or_else(|| panic!("no backup size pushed:\n{metrics}"))
        .to_string()
}

/// The Pushgateway binary, and a scene with a small SQLite database to back up.
fn pushgateway_scene() -> (std::path::PathBuf, Scene) {
    let gw = require(
        "prometheus-pushgateway",
        "the Debian package prometheus-pushgateway",
    );
    let (s, _) = sqlite::app_db(10);
    (gw, s)
}

#[test]
fn a_push_reaches_a_real_pushgateway_and_a_dead_one_only_warns() {
    let (gw, s) = pushgateway_scene();
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
    let line = pushed_size(&get().stdout());
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

#[test]
fn a_push_reaches_a_pushgateway_over_https_with_basic_auth_and_the_password_stays_out_of_sight() {
    let (gw, s) = pushgateway_scene();
    let (ca, cert, key) = dbsafe_tests::cloud::private_ca(&s);
    let password = "pg-pw-7f3a91c2e";
    let hash = Cmd::new("python3")
        .args([
            "-c",
            "import bcrypt, sys; print(bcrypt.hashpw(sys.argv[1].encode(), bcrypt.gensalt(4)).decode())",
            password,
        ])
        .succeeds()
        .stdout();
    let web = s.write(
        "web.yml",
        &format!(
            "tls_server_config:\n  cert_file: {}\n  key_file: {}\nbasic_auth_users:\n  pusher: '{}'\n",
            cert.display(),
            key.display(),
            hash.trim()
        ),
    );
    let port = dbsafe_tests::free_port();
    let mut child = Cmd::new(gw)
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg(format!("--web.config.file={}", web.display()))
        .spawn();
    let url = format!("https://127.0.0.1:{port}");
    let get = || {
        Cmd::new("python3")
            .arg("-c")
            .arg(
                "import base64, ssl, sys, urllib.request as u\n\
                 r = u.Request(sys.argv[1] + '/metrics', headers={'Authorization': 'Basic ' + base64.b64encode(sys.argv[3].encode()).decode()})\n\
                 print(u.urlopen(r, context=ssl.create_default_context(cafile=sys.argv[2])).read().decode())",
            )
            .arg(&url)
            .arg(&ca)
            .arg(format!("pusher:{password}"))
            .run()
    };
    wait_until("the pushgateway to start", Duration::from_secs(20), || {
        get().out.status.success()
    });
    let pw_file = s.write("pushgateway.password", &format!("{password}\n"));
    let snap = |out: &str| {
        snap_to_file(sqlite::url(&s.path("app.db")), s.path(out))
            .args(["--env", "staging", "--pushgateway", &url])
            .env("SSL_CERT_FILE", &ca)
            .env("DBSAFE_PUSHGATEWAY_USER", "pusher")
            .env("DBSAFE_PUSHGATEWAY_PASSWORD_FILE", &pw_file)
    };
    let run = snap("a.sqlite.zst").succeeds();
    assert!(!run.stderr().contains("cannot push"), "{}", run.stderr());
    let line = pushed_size(&get().stdout());
    assert!(
        line.contains("job=\"dbsnap\"") && line.contains("env=\"staging\""),
        "{line}"
    );

    // A wrong password is refused: a warning that says so, the backup still done.
    let wrong = s.write("wrong.password", "not-it\n");
    let run = snap("b.sqlite.zst")
        .env("DBSAFE_PUSHGATEWAY_PASSWORD_FILE", &wrong)
        .succeeds()
        .stderr_has("cannot push metrics")
        .stderr_has("HTTP 401 (the credentials were refused)");
    assert!(!run.stderr().contains("not-it"), "{}", run.stderr());
    // Without the private CA the certificate is not trusted.
    snap("c.sqlite.zst")
        .env_remove("SSL_CERT_FILE")
        .succeeds()
        .stderr_has("cannot push metrics");
    // A password in the URL is refused, and not repeated.
    let with_password = format!("https://pusher:{password}@127.0.0.1:{port}");
    let run = snap_to_file(sqlite::url(&s.path("app.db")), s.path("d.sqlite.zst"))
        .args(["--pushgateway", &with_password])
        .env("SSL_CERT_FILE", &ca)
        .succeeds()
        .stderr_has("would be visible in the process list");
    assert!(!run.stderr().contains(password), "{}", run.stderr());
    child.kill().ok();
    child.wait().ok();
}
