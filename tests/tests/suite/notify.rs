//! Notifications: hooks and webhooks tell how a run ended, and never change it.

use dbsafe_tests::{snap_to_store, sqlite, Cmd};
use std::time::{Duration, Instant};

/// A webhook receiver: each POSTed body, as JSON; `answer: false` never answers.
struct Receiver {
    url: String,
    inner: dbsafe_tests::receiver::Receiver,
}

impl Receiver {
    fn start(answer: bool) -> Receiver {
        let inner = dbsafe_tests::receiver::Receiver::start(answer);
        Receiver {
            url: format!("{}/hook", inner.base),
            inner,
        }
    }

    fn bodies(&self) -> Vec<serde_json::Value> {
        self.inner
            .requests()
            .iter()
            .map(|r| serde_json::from_slice(&r.body).unwrap())
            .collect()
    }
}

#[test]
fn a_failed_and_a_successful_run_call_their_hook_and_post_to_the_webhook() {
    let (s, db) = sqlite::app_db(10);
    let store = s.path("store");
    let hook_out = s.path("hook.txt");
    let hook = format!(
        "echo \"$DBSAFE_TOOL $DBSAFE_ACTION $DBSAFE_RESULT $DBSAFE_EXIT_CODE $DBSAFE_ENV $DBSAFE_DATABASE $DBSAFE_BACKUP\" >> {}",
        hook_out.display()
    );
    let webhook = Receiver::start(true);
    let run = |path: &std::path::Path| {
        snap_to_store(sqlite::url(path), &store)
            .args([
                "--env",
                "production",
                "--on-success",
                &hook,
                "--on-failure",
                &hook,
            ])
            .args(["--notify", &webhook.url])
    };
    run(&db).succeeds();
    run(&s.path("missing.db")).fails_with_code(1);

    let lines: Vec<String> = std::fs::read_to_string(&hook_out)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(
        lines[0].starts_with("dbsnap backup success 0 production app backups/production_app_full_"),
        "{lines:?}"
    );
    assert!(
        lines[1].starts_with("dbsnap backup failure 1 production missing"),
        "{lines:?}"
    );

    let bodies = webhook.bodies();
    assert_eq!(bodies.len(), 2, "{bodies:?}");
    let (ok, failed) = (&bodies[0], &bodies[1]);
    assert_eq!(ok["tool"], "dbsnap");
    assert_eq!(ok["action"], "backup");
    assert_eq!(ok["result"], "success");
    assert_eq!(ok["exit_code"], 0);
    assert_eq!(ok["env"], "production");
    assert_eq!(ok["database"], "app");
    assert_eq!(ok["store"], store.display().to_string());
    assert!(ok["backup"]
        .as_str()
        .unwrap()
        .starts_with("backups/production_app_full_"));
    assert!(ok["duration_seconds"].as_f64().unwrap() > 0.0);
    assert!(
        ok["text"]
            .as_str()
            .unwrap()
            .contains("dbsnap backup success [production]"),
        "{ok}"
    );
    assert_eq!(failed["result"], "failure");
    assert_eq!(failed["exit_code"], 1);
    assert!(
        failed["message"].as_str().unwrap().contains("missing.db"),
        "{failed}"
    );
    assert!(
        failed["text"].as_str().unwrap().contains("failure"),
        "{failed}"
    );
}

#[test]
fn a_dead_webhook_or_failing_hook_changes_neither_the_exit_code_nor_the_backup() {
    let (s, db) = sqlite::app_db(10);
    let store = s.path("store");
    let silent = Receiver::start(false);
    let start = Instant::now();
    // A webhook's path and query are its secret (Slack's): never shown.
    let secret = format!(
        "{}/services/T01/B02/PATHSECRET?token=QUERYSECRET",
        silent.url
    );
    let r = snap_to_store(sqlite::url(&db), &store)
        .args(["--on-success", "exit 7", "--notify", &secret])
        .succeeds();
    let took = start.elapsed();
    assert!(
        !r.stderr().contains("PATHSECRET") && !r.stderr().contains("QUERYSECRET"),
        "{}",
        r.stderr()
    );
    r.stderr_has("the success hook failed")
        .stderr_has("was not reached");
    assert_eq!(dbsafe_tests::artifacts(&store).len(), 1);
    // Two attempts of 3 s, and a pause between: the documented bound.
    assert!(took < Duration::from_secs(12), "held up {took:?}");
    // The same webhook from the config file, per environment.
    let cfg = s.write(
        "dbsafe.toml",
        &format!("[env.production]\nnotify = \"{}\"\n", silent.url),
    );
    dbsafe_tests::next_second();
    snap_to_store(sqlite::url(&db), &store)
        .args(["--env", "production"])
        .env("DBSAFE_CONFIG", &cfg)
        .succeeds()
        .stderr_has("was not reached");
    Cmd::tool("dbverify")
        .arg("--store")
        .arg(&store)
        .args(["--all", "--level", "quick"])
        .succeeds();
}
