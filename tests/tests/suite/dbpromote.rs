//! dbpromote against real PostgreSQL clusters: three databases on one
//! throwaway cluster stand for development, staging and production, each
//! environment with its own store, and a config file per test.

use dbsafe_tests::pg::Cluster;
use dbsafe_tests::testdb::{Passwords, TestDb};
use dbsafe_tests::{
    artifacts, has_open, next_second, prune_store, require, sqlite, wait_until, Cmd, Scene,
};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

const ENVS: [&str; 3] = ["development", "staging", "production"];

/// A real migration per version: v1 adds customers.tier and backfills it,
/// v2 adds orders.total_cents and backfills it.
const MIGRATE: &str = r#"#!/bin/sh
set -eu
case "$DBPROMOTE_VERSION" in
  v1) sql="ALTER TABLE customers ADD COLUMN tier text;
           UPDATE customers SET tier = CASE WHEN id % 2 = 0 THEN 'gold' ELSE 'basic' END;
           ALTER TABLE customers ALTER COLUMN tier SET NOT NULL;" ;;
  v2) sql="ALTER TABLE orders ADD COLUMN total_cents bigint;
           UPDATE orders SET total_cents = (total * 100)::bigint;" ;;
  *) sql="SELECT 1;" ;;
esac
echo "migrating $DBPROMOTE_PHASE to $DBPROMOTE_VERSION"
exec psql -X -q -v ON_ERROR_STOP=1 -d "$DATABASE_URL" -c "$sql"
"#;

/// Checks what the migration of each version promises.
const HEALTH: &str = r#"#!/bin/sh
set -eu
q() { psql -X -q -A -t -v ON_ERROR_STOP=1 -d "$DATABASE_URL" -c "$1"; }
case "$DBPROMOTE_VERSION" in
  v1) test "$(q "SELECT count(*) FROM customers WHERE tier IS NULL")" = 0 ;;
  v2) test "$(q "SELECT count(*) FROM orders WHERE total IS NOT NULL AND total_cents IS NULL")" = 0 ;;
esac
"#;

/// One cluster holding `app_development`, `app_staging` and `app_production`.
struct World {
    s: Scene,
    pg: Cluster,
    cfg: PathBuf,
}

impl World {
    /// The three databases (production over TCP with a password, the others
    /// over the socket), the migration and health scripts, and a config file;
    /// `extra` is appended to each environment's table.
    fn new(extra: &[(&str, &str)]) -> World {
        require("psql", "postgresql-client");
        let s = Scene::new();
        let pg = Cluster::start();
        for (i, env) in ENVS.iter().enumerate() {
            pg.fixture(&format!("app_{env}"), 40 + 10 * i as u64);
        }
        s.script("migrate.sh", MIGRATE);
        s.script("health.sh", HEALTH);
        let cfg = s.path("dbsafe.toml");
        let w = World { s, pg, cfg };
        w.write_config(extra);
        w
    }

    fn url(&self, env: &str) -> String {
        if env == "production" {
            self.pg.password_url("app_production")
        } else {
            self.pg.url(&format!("app_{env}"))
        }
    }

    fn write_config(&self, extra: &[(&str, &str)]) {
        let mut text = String::from(
            "[defaults]\nchain = [\"development\", \"staging\", \"production\"]\nencrypt = false\n",
        );
        for env in ENVS {
            text.push_str(&format!(
                "\n[env.{env}]\nurl = {:?}\nstore = {:?}\nmigrate = {:?}\nhealth_check = {:?}\n",
                self.url(env),
                self.store(env).display().to_string(),
                self.s.path("migrate.sh").display().to_string(),
                self.s.path("health.sh").display().to_string(),
            ));
            for (e, line) in extra {
                if *e == env {
                    text.push_str(line);
                    text.push('\n');
                }
            }
        }
        std::fs::write(&self.cfg, text).expect("config");
    }

    fn store(&self, env: &str) -> PathBuf {
        self.s.path(&format!("store-{env}"))
    }

    fn promote(&self) -> Cmd {
        Cmd::tool("dbpromote").env("DBSAFE_CONFIG", &self.cfg)
    }

    fn release(&self, from: &str, to: &str, version: &str) -> Cmd {
        self.promote()
            .args(["--from", from, "--to", to, "--version", version, "--yes"])
    }

    fn manifest(&self, env: &str, version: &str) -> Value {
        let p = self
            .store(env)
            .join(format!("releases/{env}/{version}.json"));
        let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        serde_json::from_str(&text).expect("manifest is JSON")
    }

    fn columns(&self, env: &str, table: &str) -> Vec<String> {
        self.pg
            .psql(
                &format!("app_{env}"),
                &format!("SELECT column_name FROM information_schema.columns WHERE table_name = '{table}' ORDER BY 1;"),
            )
            .lines()
            .map(str::to_string)
            .collect()
    }

    fn sides(&self) -> Vec<String> {
        self.pg
            .databases()
            .into_iter()
            .filter(|d| d.contains("_dbpromote_"))
            .collect()
    }
}

fn step_names(m: &Value) -> Vec<String> {
    m["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .map(|s| s["name"].as_str().expect("name").to_string())
        .collect()
}

fn step<'a>(m: &'a Value, name: &str) -> &'a Value {
    m["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("no step {name} in {m:#}"))
}

fn names(paths: Vec<PathBuf>) -> Vec<String> {
    paths
        .iter()
        .map(|p| p.file_name().expect("name").to_string_lossy().into_owned())
        .collect()
}

#[test]
fn releases_climb_the_chain_and_v2_cannot_skip_staging() {
    let w = World::new(&[]);
    w.release("development", "staging", "v1").succeeds();
    assert!(w
        .columns("staging", "customers")
        .contains(&"tier".to_string()));
    assert!(!w
        .columns("production", "customers")
        .contains(&"tier".to_string()));
    w.release("staging", "production", "v1").succeeds();
    assert!(w
        .columns("production", "customers")
        .contains(&"tier".to_string()));
    assert_eq!(
        w.pg.count("app_production", "customers WHERE tier = 'gold'"),
        30
    );

    // v2 has not reached staging: production is refused, and nothing changes.
    let before = w.pg.digests("app_production");
    let backups_before = artifacts(&w.store("production"));
    w.release("staging", "production", "v2")
        .fails_with(4, "version v2 has not been promoted to staging")
        .stderr_has("releases/staging/v2.json");
    assert_eq!(w.pg.digests("app_production"), before);
    assert_eq!(artifacts(&w.store("production")), backups_before);
    assert!(!w
        .store("production")
        .join("releases/production/v2.json")
        .exists());
    // Nor may a release jump from development straight to production.
    w.release("development", "production", "v2")
        .fails_with(4, "the next environment is staging");

    // A dry run prints every step and changes nothing.
    let plan = w
        .release("development", "staging", "v2")
        .arg("--dry-run")
        .succeeds()
        .stdout();
    assert!(
        plan.contains(
            "rehearsal: restore it into the side database app_staging_dbpromote_rehearsal_"
        ),
        "{plan}"
    );
    assert!(plan.contains("dry run, nothing changed"), "{plan}");
    assert!(!w.store("staging").join("releases/staging/v2.json").exists());
    assert!(!w
        .columns("staging", "orders")
        .contains(&"total_cents".to_string()));

    // Without a terminal and without --yes, the confirmation refuses.
    w.promote()
        .args([
            "--from",
            "development",
            "--to",
            "staging",
            "--version",
            "v2",
        ])
        .fails_with(4, "no terminal to ask on");

    w.release("development", "staging", "v2").succeeds();
    w.release("staging", "production", "v2").succeeds();
    assert!(w
        .columns("production", "orders")
        .contains(&"total_cents".to_string()));
    assert_eq!(
        w.pg.count(
            "app_production",
            "orders WHERE total_cents = (total * 100)::bigint"
        ),
        w.pg.count("app_production", "orders")
    );
    assert_eq!(
        w.manifest("production", "v2")["gate"]
            .as_str()
            .map(|g| g.starts_with("releases/staging/v2.json (success")),
        Some(true)
    );
    assert!(w.sides().is_empty(), "side databases left: {:?}", w.sides());
}

#[test]
fn manifests_record_every_step_pin_their_backups_and_show_in_history_and_audit() {
    require("promtool", "prometheus (promtool)");
    let w = World::new(&[]);
    // An older, unpinned backup of production that pruning may take.
    Cmd::tool("dbsnap")
        .arg("--no-encrypt")
        .arg(w.url("production"))
        .args(["--env", "production", "--to"])
        .arg(w.store("production"))
        .succeeds();
    // Backup names are stamped to the second.
    next_second();
    w.release("development", "staging", "v1").succeeds();
    let metrics = w.s.path("metrics/dbsafe.prom");
    let out = w
        .release("staging", "production", "v1")
        .arg("--metrics-file")
        .arg(&metrics)
        .succeeds()
        .stdout();
    assert!(
        out.contains("release v1: staging → production: success"),
        "{out}"
    );

    let m = w.manifest("production", "v1");
    dbsafe_tests::assert_fields(
        &m,
        &[
            ("format", "dbsafe-release/1"),
            ("kind", "release"),
            ("version", "v1"),
            ("from", "staging"),
            ("to", "production"),
            ("database", "app_production"),
            ("status", "success"),
        ],
    );
    let target = m["target"].as_str().expect("target");
    assert!(
        target.starts_with("postgresql://app@127.0.0.1:") && target.ends_with("/app_production"),
        "{target}"
    );
    let text = std::fs::read_to_string(w.store("production").join("releases/production/v1.json"))
        .expect("manifest");
    assert!(
        !text.contains(&w.pg.password),
        "the manifest holds the password"
    );
    assert!(
        m["gate"]
            .as_str()
            .expect("gate")
            .starts_with("releases/staging/v1.json (success"),
        "{m:#}"
    );
    assert_eq!(m["source_backup"], Value::Null);
    let pre = &m["pre_release_backup"];
    let pre_name = pre["name"]
        .as_str()
        .expect("pre-release backup name")
        .to_string();
    assert!(
        pre_name.starts_with("production_app_production_full_"),
        "{pre_name}"
    );
    let pre_path = w.store("production").join("backups").join(&pre_name);
    assert_eq!(
        pre["checksum"].as_str(),
        Some(dbsafe_tests::sha256_file(&pre_path).as_str())
    );
    assert_eq!(pre["verified"], true);
    assert_eq!(pre["environment"], "production");
    assert!(w
        .store("production")
        .join("backups")
        .join(format!("{pre_name}.verify.json"))
        .exists());
    assert_eq!(
        m["commands"]["migrate"],
        w.s.path("migrate.sh").display().to_string()
    );
    assert!(!m["user"].as_str().expect("user").is_empty());
    assert!(!m["host"].as_str().expect("host").is_empty());
    assert!(m["started_at"].as_str().expect("started").ends_with('Z'));
    assert!(m["finished_at"].as_str().expect("finished").ends_with('Z'));
    assert!(m["duration_seconds"].as_f64().expect("duration") > 0.0);
    assert_eq!(
        step_names(&m),
        [
            "gate",
            "backup",
            "verify",
            "rehearsal-restore",
            "rehearsal-migrate",
            "rehearsal-health-check",
            "rehearsal-drop",
            "confirm",
            "migrate",
            "health-check"
        ]
    );
    for s in m["steps"].as_array().expect("steps") {
        assert_eq!(s["result"], "ok", "{s}");
        assert!(s["duration_seconds"].as_f64().is_some(), "{s}");
        assert!(s["started_at"].as_str().is_some(), "{s}");
    }
    assert!(step(&m, "rehearsal-restore")["detail"]
        .as_str()
        .expect("detail")
        .contains("row counts match"));

    // The audit log has the promotion with every step.
    let audit =
        std::fs::read_to_string(w.store("production").join("audit.log")).expect("audit log");
    let entries: Vec<Value> = audit
        .lines()
        .map(|l| serde_json::from_str(l).expect("audit JSON"))
        .collect();
    let promote: Vec<&Value> = entries
        .iter()
        .filter(|e| e["action"] == "promote")
        .collect();
    assert_eq!(promote.len(), 1, "{audit}");
    assert_eq!(promote[0]["tool"], "dbpromote");
    assert_eq!(promote[0]["result"], "success");
    assert_eq!(promote[0]["backup"], pre_name.as_str());
    assert_eq!(promote[0]["target"], target);
    assert_eq!(
        promote[0]["details"]["steps"].as_array().map(Vec::len),
        Some(10)
    );
    assert!(!audit.contains(&w.pg.password));

    // Metrics: promtool accepts them.
    let prom = std::fs::read_to_string(&metrics).expect("metrics file");
    assert!(
        prom.contains("dbsafe_release_promoted_total{database=\"app_production\",env=\"production\",status=\"success\"} 1"),
        "{prom}"
    );
    assert!(prom.contains("dbsafe_release_step_duration_seconds{database=\"app_production\",env=\"production\",step=\"rehearsal-migrate\"}"), "{prom}");
    Cmd::new("promtool")
        .args(["check", "metrics"])
        .stdin_file(&metrics)
        .succeeds();

    // History lists it; --json too.
    let h = w
        .promote()
        .args(["--history", "--to", "production"])
        .succeeds()
        .stdout();
    assert!(
        h.lines()
            .any(|l| l.starts_with("v1") && l.contains("success") && l.contains(&pre_name)),
        "{h}"
    );
    let hj = w
        .promote()
        .args(["--history", "--to", "production", "--json"])
        .succeeds()
        .json();
    assert_eq!(hj.as_array().map(Vec::len), Some(1));
    assert_eq!(hj[0]["version"], "v1");

    // Pruning to one backup keeps the pinned pre-release backups of both environments.
    let staging_pre = w.manifest("staging", "v1")["pre_release_backup"]["name"]
        .as_str()
        .expect("name")
        .to_string();
    for env in ["production", "staging"] {
        prune_store(w.store(env))
            .args(["--keep-last", "1"])
            .succeeds();
    }
    assert_eq!(names(artifacts(&w.store("production"))), [pre_name]);
    assert_eq!(names(artifacts(&w.store("staging"))), [staging_pre]);
}

#[test]
fn a_failed_rehearsal_leaves_production_untouched_and_drops_the_side_database() {
    let w = World::new(&[]);
    w.release("development", "staging", "v1").succeeds();
    let before = w.pg.digests("app_production");
    let bad = w.s.script(
        "bad-migrate.sh",
        "#!/bin/sh\nset -eu\npsql -X -q -v ON_ERROR_STOP=1 -d \"$DATABASE_URL\" -c 'ALTER TABLE customers ADD COLUMN half_done int'\n\
         psql -X -q -v ON_ERROR_STOP=1 -d \"$DATABASE_URL\" -c 'UPDATE no_such_table SET x = 1'\n",
    );
    let r = w
        .release("staging", "production", "v1")
        .arg("--migrate")
        .arg(&bad)
        .fails_with(1, "the rehearsal failed; production was not changed")
        .stderr_has("no_such_table");
    assert_eq!(w.pg.digests("app_production"), before, "{}", r.stderr());
    assert!(!w
        .columns("production", "customers")
        .contains(&"half_done".to_string()));
    assert!(w.sides().is_empty(), "side databases left: {:?}", w.sides());
    let m = w.manifest("production", "v1");
    assert_eq!(m["status"], "failed");
    assert_eq!(step(&m, "rehearsal-migrate")["result"], "failed");
    assert_eq!(step(&m, "rehearsal-drop")["result"], "ok");
    assert!(!step_names(&m).contains(&"migrate".to_string()), "{m:#}");
    // The failed attempt stays on record when the version is promoted again.
    w.release("staging", "production", "v1").succeeds();
    let m = w.manifest("production", "v1");
    assert_eq!(m["status"], "success");
    assert_eq!(m["previous_attempts"][0]["status"], "failed");
}

#[test]
fn a_health_check_failing_on_the_target_runs_the_downgrade_and_reports() {
    let w = World::new(&[]);
    // Backups encrypted to an age key: the rehearsal decrypts with the identity.
    let (key, public) = w.s.age_key("key.txt");
    let release = |from: &str, to: &str| {
        w.release(from, to, "v1")
            .env("DBSAFE_RECIPIENTS", &public)
            .arg("-i")
            .arg(&key)
    };
    release("development", "staging").succeeds();
    w.release("staging", "production", "v1")
        .env("DBSAFE_RECIPIENTS", &public)
        .fails_with(2, "no identity to decrypt it with");
    // Healthy in the rehearsal, unhealthy on production itself.
    let health = w.s.script("flaky-health.sh", "#!/bin/sh\ntest \"$DBPROMOTE_PHASE\" = rehearsal || { echo 'checkout page returns 500' >&2; exit 1; }\n");
    let down = w.s.script(
        "downgrade.sh",
        "#!/bin/sh\nset -eu\nexec psql -X -q -v ON_ERROR_STOP=1 -d \"$DATABASE_URL\" -c 'ALTER TABLE customers DROP COLUMN tier'\n",
    );
    let before = w.pg.digests("app_production");
    let r = release("staging", "production")
        .arg("--health-check")
        .arg(&health)
        .arg("--downgrade")
        .arg(&down)
        .fails_with(1, "the health-check step failed on production")
        .stderr_has("checkout page returns 500")
        .stderr_has("the downgrade ran and succeeded")
        .stderr_has("dbrestore --store ")
        .stderr_has("--version v1 --restore-backup");
    let m = w.manifest("production", "v1");
    let pre = m["pre_release_backup"]["name"]
        .as_str()
        .expect("pre-release backup")
        .to_string();
    assert!(
        r.stderr().contains(&format!(
            "--name {pre} --target postgresql://app@127.0.0.1:"
        )),
        "{}",
        r.stderr()
    );
    assert!(pre.ends_with(".pgdump.zst.age"), "{pre}");
    assert_eq!(m["status"], "failed");
    assert_eq!(step(&m, "rehearsal-health-check")["result"], "ok");
    assert_eq!(step(&m, "migrate")["result"], "ok");
    assert_eq!(step(&m, "health-check")["result"], "failed");
    assert_eq!(step(&m, "downgrade")["result"], "ok");
    // The flags replace the config file's commands; the one not given stays.
    assert_eq!(
        m["commands"],
        serde_json::json!({
            "migrate": w.s.path("migrate.sh").display().to_string(),
            "health_check": health.display().to_string(),
            "downgrade": down.display().to_string(),
        })
    );
    assert!(!w
        .columns("production", "customers")
        .contains(&"tier".to_string()));
    assert_eq!(w.pg.digests("app_production"), before);
    // A rollback names the failed release, never passes over it; and its
    // downgrade ran already: running it again is refused.
    let rollback = |extra: &[&str]| {
        w.promote()
            .args(["--rollback", "--to", "production", "--yes", "--downgrade"])
            .arg(&down)
            .args(extra)
    };
    for _ in 0..2 {
        rollback(&[]).fails_with(4, "the newest promotion of production, v1, failed");
        rollback(&["--version", "v1"]).fails_with(4, "its downgrade ran already");
        assert_eq!(w.pg.digests("app_production"), before);
    }
}

#[test]
fn a_refresh_brings_masked_production_data_down_and_rolls_back_exactly() {
    let w = World::new(&[("production", "sensitive = true")]);
    let mask = w.s.write(
        "mask.sql",
        "UPDATE customers SET email = 'customer' || id || '@masked.invalid', name = 'Customer ' || id;\n",
    );
    // Database-level settings and grants belong to the database, not the dump:
    // the swap carries them over, with the owner.
    w.pg.psql(
        "postgres",
        "ALTER DATABASE app_staging SET work_mem = '8MB';\n\
         REVOKE CONNECT ON DATABASE app_staging FROM PUBLIC;\n\
         GRANT CONNECT ON DATABASE app_staging TO app;",
    );
    let db_facts = |db: &str| {
        w.pg.scalar(
            "postgres",
            &format!(
                "SELECT pg_get_userbyid(d.datdba) || ' ' || coalesce(array_to_string(s.setconfig, ','), '') || ' ' || \
                 (SELECT string_agg(x, ',' ORDER BY x) FROM (SELECT CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(a.grantee) END || ':' || a.privilege_type AS x \
                  FROM aclexplode(d.datacl) a) q) \
                 FROM pg_database d LEFT JOIN pg_db_role_setting s ON s.setdatabase = d.oid AND s.setrole = 0 \
                 WHERE d.datname = '{db}';"
            ),
        )
    };
    let facts_before = db_facts("app_staging");
    assert!(
        facts_before.starts_with("app work_mem=8MB "),
        "{facts_before}"
    );
    let staging_before = w.pg.digests("app_staging");
    let refresh = || {
        w.promote()
            .args(refresh_args("production", "staging"))
            .arg("--sanitize")
            .arg(&mask)
    };
    // A sensitive source without --sanitize is refused before anything happens.
    w.promote()
        .args(refresh_args("production", "staging"))
        .fails_with(4, "production is marked sensitive");
    assert_eq!(w.pg.digests("app_staging"), staging_before);
    assert!(artifacts(&w.store("production")).is_empty());
    // Data never flows up.
    w.promote()
        .args(refresh_args("staging", "production"))
        .fails_with(4, "data must never flow up");

    // A dry run plans and changes nothing.
    let plan = refresh().arg("--dry-run").succeeds().stdout();
    assert!(
        plan.contains("run ") && plan.contains("mask.sql on app_staging_dbpromote_refresh_"),
        "{plan}"
    );
    assert_eq!(w.pg.digests("app_staging"), staging_before);
    assert!(artifacts(&w.store("production")).is_empty());

    let out = refresh().succeeds().stdout();
    assert!(out.contains("refresh refresh-"), "{out}");
    assert!(!out.contains("warning"), "{out}");
    assert_eq!(db_facts("app_staging"), facts_before);
    assert_eq!(w.pg.counts("app_staging"), w.pg.counts("app_production"));
    assert_eq!(w.pg.count("app_staging", "customers"), 60);
    assert_eq!(
        w.pg.count("app_staging", "customers WHERE email LIKE '%@example.com'"),
        0
    );
    assert_eq!(
        w.pg.count("app_staging", "customers WHERE name LIKE 'Zo%'"),
        0
    );
    assert_eq!(
        w.pg.count(
            "app_production",
            "customers WHERE email LIKE '%@example.com'"
        ),
        60
    );
    // Everything but the masked table is production's, byte for byte.
    let prod = w.pg.digests("app_production");
    let staged = w.pg.digests("app_staging");
    for ((t, a), (_, b)) in prod.iter().zip(&staged) {
        assert_eq!(a == b, t != "public.customers", "{t}");
    }

    let history = std::fs::read_dir(w.store("staging").join("releases/staging"))
        .expect("releases")
        .count();
    assert_eq!(history, 1);
    let version = w
        .promote()
        .args(["--history", "--to", "staging", "--json"])
        .succeeds()
        .json()[0]["version"]
        .as_str()
        .expect("version")
        .to_string();
    let m = w.manifest("staging", &version);
    assert_eq!(m["kind"], "refresh");
    assert_eq!(m["from"], "production");
    // What the refresh ran on the copy; a refresh has no downgrade.
    assert_eq!(
        m["commands"],
        serde_json::json!({
            "migrate": w.s.path("migrate.sh").display().to_string(),
            "health_check": w.s.path("health.sh").display().to_string(),
        })
    );
    assert_eq!(m["status"], "success");
    let prev = m["previous_database"]
        .as_str()
        .expect("previous database")
        .to_string();
    assert!(prev.starts_with("app_staging_dbpromote_prev_"), "{prev}");
    assert_eq!(
        w.pg.digests(&prev),
        staging_before,
        "the old staging database is kept as it was"
    );
    let src = m["source_backup"]["name"].as_str().expect("source backup");
    assert!(w.store("production").join("backups").join(src).exists());
    // The source's store holds the manifest too, so the backup is pinned where it lives.
    assert!(w
        .store("production")
        .join(format!("releases/staging/{version}.json"))
        .exists());
    assert!(m["sanitize"]
        .as_str()
        .expect("sanitize")
        .contains("mask.sql (sha256 "));
    assert!(m["swap_ms"].as_u64().is_some());
    assert_eq!(
        step_names(&m),
        [
            "backup",
            "verify",
            "restore",
            "sanitize",
            "migrate",
            "health-check",
            "confirm",
            "swap",
            "cleanup"
        ]
    );

    w.promote()
        .args(["--rollback", "--to", "staging", "--yes"])
        .succeeds();
    assert_eq!(
        w.pg.digests("app_staging"),
        staging_before,
        "rollback brings the old staging back exactly"
    );
    let m = w.manifest("staging", &version);
    assert_eq!(m["status"], "rolled-back");
    assert_eq!(m["rollback"]["method"], "swap-previous");
    let kept = m["rollback"]["kept_database"].as_str().expect("kept");
    assert_eq!(
        w.pg.count(kept, "customers WHERE email LIKE '%@masked.invalid'"),
        60
    );
    let audit = std::fs::read_to_string(w.store("staging").join("audit.log")).expect("audit");
    assert!(
        audit.contains("\"action\":\"refresh\"") && audit.contains("\"action\":\"rollback\""),
        "{audit}"
    );
    // Nothing is left to roll back.
    w.promote()
        .args(["--rollback", "--to", "staging", "--yes"])
        .fails_with_code(3);
}

#[test]
fn a_session_on_staging_is_ended_after_the_grace_period_or_refuses_the_swap() {
    let w = World::new(&[]);
    // A client holding a session open on staging; its complaint when it is
    // thrown out is expected, so its output is not shown.
    let mut client = Command::new(dbsafe_tests::pg::server_bin("psql"))
        .args(["-X", "-q", "-h"])
        .arg(&w.pg.sock)
        .arg("-p")
        .arg(w.pg.port.to_string())
        .args([
            "-U",
            "postgres",
            "-d",
            "app_staging",
            "-c",
            "SELECT pg_sleep(600)",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start psql");
    let sessions = || {
        w.pg.scalar(
            "postgres",
            "SELECT count(*) FROM pg_stat_activity WHERE datname = 'app_staging';",
        )
    };
    wait_until("the client to connect", Duration::from_secs(30), || {
        sessions() == "1"
    });
    let before = w.pg.digests("app_staging");
    let refresh = || w.promote().args(refresh_args("production", "staging"));
    refresh()
        .fails_with(4, "1 session(s) connected to app_staging")
        .stderr_has("--grace");
    assert_eq!(w.pg.digests("app_staging"), before);
    assert!(w.sides().is_empty(), "{:?}", w.sides());
    assert!(
        client.try_wait().expect("client").is_none(),
        "the client was disconnected without --grace"
    );

    let out = refresh().args(["--grace", "1s"]).succeeds().stdout();
    let status = client.wait().expect("client");
    assert!(!status.success(), "the client's session was ended");
    assert_eq!(w.pg.counts("app_staging"), w.pg.counts("app_production"));
    let swap = out
        .lines()
        .find(|l| l.trim_start().starts_with("swap:"))
        .expect("swap line")
        .trim()
        .to_string();
    let step = out
        .lines()
        .find(|l| l.trim_start().starts_with("swap "))
        .expect("swap step")
        .to_string();
    assert!(step.contains("ended 1 session(s) on app_staging"), "{step}");
    eprintln!("refresh with a connected client: {swap} ({step})");
    let ms: u64 = swap
        .trim_start_matches("swap:")
        .trim()
        .trim_end_matches(" ms")
        .parse()
        .expect("ms");
    assert!(ms < 10_000, "{ms}");

    // The next refresh keeps only its own rollback point (--keep-previous 1).
    let prevs = || -> Vec<String> {
        w.sides()
            .into_iter()
            .filter(|d| d.starts_with("app_staging_dbpromote_prev_"))
            .collect()
    };
    let first = prevs();
    assert_eq!(first.len(), 1, "{first:?}");
    let out = refresh().succeeds().stdout();
    let second = prevs();
    assert_eq!(second.len(), 1, "{second:?}");
    assert_ne!(first, second);
    assert!(
        out.contains(&format!("dropped older previous databases {}", first[0])),
        "{out}"
    );
    let swap = out
        .lines()
        .find(|l| l.trim_start().starts_with("swap:"))
        .expect("swap line");
    eprintln!("refresh without sessions: {}", swap.trim());
}

#[test]
fn an_interrupted_rehearsal_drops_its_side_database_and_leaves_the_target_alone() {
    let w = World::new(&[]);
    let before = w.pg.digests("app_staging");
    let migrating = w.s.path("migrating");
    let stderr = w.s.path("dbpromote.stderr");
    let mut run = w
        .release("development", "staging", "v1")
        .arg("--migrate")
        .arg(format!("touch '{}' && exec sleep 60", migrating.display()))
        .stderr_file(&stderr)
        .spawn();
    // The migration runs on the side database: interrupt it there.
    wait_until(
        "the rehearsal's migration to start",
        Duration::from_secs(60),
        || migrating.exists(),
    );
    assert_eq!(w.sides().len(), 1, "{:?}", w.sides());
    // SAFETY: kill has no memory preconditions; the pid is our own child's.
    unsafe { libc::kill(run.id() as i32, libc::SIGINT) };
    let status = run.wait().expect("dbpromote ends");
    assert_eq!(
        status.code(),
        Some(130),
        "{}",
        std::fs::read_to_string(&stderr).unwrap_or_default()
    );
    wait_until(
        "the side database to be dropped",
        Duration::from_secs(10),
        || w.sides().is_empty(),
    );
    assert_eq!(w.pg.digests("app_staging"), before);
    assert!(!w
        .columns("staging", "customers")
        .contains(&"tier".to_string()));
    // The manifest shows how far it got (still running if the signal handler
    // ended the process first); the next attempt keeps it on record.
    let status = w.manifest("staging", "v1")["status"].clone();
    assert!(status == "running" || status == "failed", "{status}");
    w.release("development", "staging", "v1").succeeds();
    assert_eq!(
        w.manifest("staging", "v1")["previous_attempts"][0]["status"],
        status
    );
}

#[test]
fn two_promotions_of_one_environment_never_run_at_once() {
    let w = World::new(&[]);
    let go = w.s.path("go");
    let slow = w.s.script(
        "slow-migrate.sh",
        &format!(
            "#!/bin/sh\nwhile [ ! -e '{}' ]; do sleep 0.05; done\nexec {}\n",
            go.display(),
            w.s.path("migrate.sh").display()
        ),
    );
    let stderr = w.s.path("first.stderr");
    let mut first = w
        .release("development", "staging", "v1")
        .arg("--migrate")
        .arg(&slow)
        .stderr_file(&stderr)
        .spawn();
    let manifest = w.store("staging").join("releases/staging/v1.json");
    wait_until(
        "the first promotion to start",
        Duration::from_secs(60),
        || manifest.exists(),
    );
    w.release("development", "staging", "v1")
        .fails_with_code(4)
        .stderr_has(&format!(
            "promote-staging is locked by another process (pid {};",
            first.id()
        ));
    // The first one's migration goes on only now that the second was refused.
    std::fs::write(&go, "").expect("go");
    assert!(
        first.wait().expect("first").success(),
        "{}",
        std::fs::read_to_string(&stderr).unwrap_or_default()
    );
    assert_eq!(w.manifest("staging", "v1")["status"], "success");
    // Once done, the version is on record and a second run refuses to repeat it.
    w.release("development", "staging", "v1")
        .fails_with(4, "already promoted");
}

#[test]
fn releases_roll_back_by_downgrade_or_by_restoring_the_pre_release_backup() {
    let w = World::new(&[]);
    let original = w.pg.digests("app_staging");
    let down = w.s.script(
        "downgrade.sh",
        "#!/bin/sh\nset -eu\ntest \"$DBPROMOTE_PHASE\" = rollback\n\
         exec psql -X -q -v ON_ERROR_STOP=1 -d \"$DATABASE_URL\" -c 'ALTER TABLE customers DROP COLUMN tier'\n",
    );
    w.release("development", "staging", "v1").succeeds();
    let plan = w
        .promote()
        .args(["--rollback", "--to", "staging", "--dry-run", "--downgrade"])
        .arg(&down)
        .succeeds()
        .stdout();
    assert!(plan.contains("by downgrade"), "{plan}");
    assert!(w
        .columns("staging", "customers")
        .contains(&"tier".to_string()));
    w.promote()
        .args(["--rollback", "--to", "staging", "--yes", "--downgrade"])
        .arg(&down)
        .succeeds();
    assert!(!w
        .columns("staging", "customers")
        .contains(&"tier".to_string()));
    let m = w.manifest("staging", "v1");
    assert_eq!(m["status"], "rolled-back");
    assert_eq!(m["rollback"]["method"], "downgrade");
    assert_eq!(m["rollback"]["status"], "success");
    assert_eq!(m["rollback"]["steps"][1]["name"], "downgrade");

    // Released again, then written to, then rolled back from the pre-release backup.
    w.release("development", "staging", "v1").succeeds();
    assert_eq!(
        w.manifest("staging", "v1")["previous_attempts"][0]["status"],
        "rolled-back"
    );
    w.pg.psql(
        "app_staging",
        "INSERT INTO events(kind) VALUES ('after the release');",
    );
    let r = w
        .promote()
        .args(["--rollback", "--to", "staging", "--yes", "--restore-backup"])
        .succeeds()
        .stderr_has("will be lost from the live database")
        .stderr_has("public.events 25 → 26 rows");
    assert_eq!(w.pg.digests("app_staging"), original, "{}", r.stderr());
    let m = w.manifest("staging", "v1");
    assert_eq!(m["status"], "rolled-back");
    assert_eq!(m["rollback"]["method"], "restore-backup");
    let kept = m["rollback"]["kept_database"]
        .as_str()
        .expect("kept database");
    assert!(
        kept.starts_with("app_staging_dbpromote_rolledback_"),
        "{kept}"
    );
    assert_eq!(
        w.pg.count(kept, "events WHERE kind = 'after the release'"),
        1
    );
    let audit = std::fs::read_to_string(w.store("staging").join("audit.log")).expect("audit");
    assert_eq!(
        audit.matches("\"action\":\"rollback\"").count(),
        2,
        "{audit}"
    );
    assert!(w.sides().iter().all(|d| d == kept), "{:?}", w.sides());
}

/// The arguments of a confirmed refresh of `to` from `from`.
fn refresh_args<'a>(from: &'a str, to: &'a str) -> [&'a str; 6] {
    ["--refresh", "--from", from, "--to", to, "--yes"]
}

/// A production and a staging database file of one engine (`scheme`,
/// files `app.EXT`), each environment with its own store, in a config file.
struct FileChain {
    _scene: Scene,
    prod: PathBuf,
    staging: PathBuf,
    cfg: PathBuf,
    mask: PathBuf,
}

impl FileChain {
    fn new(scheme: &str, ext: &str, mask: &str) -> FileChain {
        let s = Scene::new();
        let prod = s.path(&format!("prod/app.{ext}"));
        let staging = s.path(&format!("staging/app.{ext}"));
        for p in [&prod, &staging] {
            std::fs::create_dir_all(p.parent().expect("dir")).expect("mkdir");
        }
        let mask = s.write("mask.sql", mask);
        let cfg = s.write(
            "dbsafe.toml",
            &format!(
                "[defaults]\nchain = [\"staging\", \"production\"]\nencrypt = false\n\n\
                 [env.production]\nurl = \"{scheme}:{}\"\nstore = \"{}\"\nsensitive = true\n\n\
                 [env.staging]\nurl = \"{scheme}:{}\"\nstore = \"{}\"\n",
                prod.display(),
                s.path("store-prod").display(),
                staging.display(),
                s.path("store-staging").display()
            ),
        );
        FileChain {
            _scene: s,
            prod,
            staging,
            cfg,
            mask,
        }
    }

    /// A SQLite chain whose refresh masks customers' emails, production
    /// and staging holding [`sqlite::sample`]s of `prod_rows` and `staging_rows` rows.
    fn sqlite_masking_emails(prod_rows: u64, staging_rows: u64) -> FileChain {
        let c = FileChain::new(
            "sqlite",
            "db",
            "UPDATE customers SET email = 'c' || id || '@masked.invalid';",
        );
        sqlite::sample(&c.prod, prod_rows);
        sqlite::sample(&c.staging, staging_rows);
        c
    }

    fn promote(&self) -> Cmd {
        Cmd::tool("dbpromote").env("DBSAFE_CONFIG", &self.cfg)
    }

    /// A sanitized refresh of staging from production.
    fn refresh(&self) -> Cmd {
        self.promote()
            .args(refresh_args("production", "staging"))
            .arg("--sanitize")
            .arg(&self.mask)
    }

    fn rollback(&self) -> Cmd {
        self.promote()
            .args(["--rollback", "--to", "staging", "--yes"])
    }

    /// A release of `version` from staging to production, running `migrate`.
    fn release(&self, version: &str, migrate: &str) -> Cmd {
        self.promote()
            .args([
                "--from",
                "staging",
                "--to",
                "production",
                "--version",
                version,
            ])
            .args(["--yes", "--migrate", migrate])
    }

    /// The names of the files beside staging that contain `part`.
    fn beside_staging(&self, part: &str) -> Vec<String> {
        std::fs::read_dir(self.staging.parent().expect("dir"))
            .expect("list")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains(part))
            .collect()
    }
}

/// An application holding the SQLite database open (idle: no lock) would
/// go on with the old file after the swap, its writes lost to the live
/// database: the refresh refuses, or waits for it with --grace.
#[test]
fn a_sqlite_refresh_waits_for_or_refuses_a_process_that_holds_the_database_open() {
    let c = FileChain::sqlite_masking_emails(10, 3);
    let before = sqlite::contents(&c.staging);
    let staging = std::fs::canonicalize(&c.staging).unwrap();
    // An application that holds the file open for `secs` seconds.
    let hold = |secs: u32| {
        let child = Cmd::sh(&format!("exec 3<'{}'; sleep {secs}", c.staging.display())).spawn();
        wait_until(
            "the application to open it",
            Duration::from_secs(10),
            || dbsafe_tests::has_open(child.id(), &staging),
        );
        child
    };
    let mut app = hold(60);
    for _ in 0..2 {
        c.refresh()
            .fails_with(4, "session(s) connected to app.db: pid");
        assert_eq!(sqlite::contents(&c.staging), before, "nothing was changed");
    }
    // With a grace period it runs out of, the swap itself refuses.
    c.refresh()
        .args(["--grace", "1s"])
        .fails_with(4, "past the grace period");
    assert_eq!(sqlite::contents(&c.staging), before, "nothing was changed");
    dbsafe_tests::kill_and_reap(&mut app);
    // An application that lets go within the grace period is waited for:
    // it is still there when the refresh reaches its swap (a few seconds
    // after it began), gone once the refresh is done.
    let mut brief = hold(8);
    c.refresh().args(["--grace", "60s"]).succeeds();
    assert!(
        brief.try_wait().unwrap().is_some(),
        "the swap waited for the application to let go"
    );
    assert_eq!(sqlite::counts(&c.staging), sqlite::counts(&c.prod));
}

/// A release told to stop (SIGTERM) while its migration runs on the target:
/// the migration and what it started are stopped, nothing more is run, and
/// the manifest and the audit log say how it ended, before exit 130.
#[test]
fn a_release_interrupted_on_the_target_records_how_it_ended_and_stops_its_command() {
    let c = FileChain::sqlite_masking_emails(10, 3);
    let s = &c._scene;
    for round in 1..=2 {
        let (started, pid) = (
            s.path(&format!("started-{round}")),
            s.path(&format!("pid-{round}")),
        );
        let migrate = format!(
            "test \"$DBPROMOTE_PHASE\" = rehearsal && exit 0; \
             sqlite3 \"${{DATABASE_URL#sqlite:}}\" 'CREATE TABLE step{round}(x)'; \
             sleep 60 & echo $! > {}; touch {}; wait",
            pid.display(),
            started.display()
        );
        let version = format!("v{round}");
        let mut run = c.release(&version, &migrate).spawn();
        wait_until(
            "the migration on the target",
            Duration::from_secs(60),
            || started.exists(),
        );
        Cmd::new("kill")
            .args(["-TERM", &run.id().to_string()])
            .succeeds();
        assert_eq!(run.wait().unwrap().code(), Some(130), "round {round}");
        let m: serde_json::Value = serde_json::from_slice(
            &std::fs::read(s.path(&format!("store-prod/releases/production/{version}.json")))
                .unwrap(),
        )
        .unwrap();
        assert_eq!(m["status"], "failed", "{m:#}");
        assert!(m["finished_at"].is_string(), "{m:#}");
        assert_eq!(step(&m, "migrate")["result"], "failed", "{m:#}");
        let (action, result, last) =
            dbsafe_tests::last_audit_entry(&s.path("store-prod/audit.log"));
        assert_eq!(
            (action.as_str(), result.as_str()),
            ("promote", "failure"),
            "{last}"
        );
        let sleeper = std::fs::read_to_string(&pid).unwrap();
        wait_until(
            "the migration's child to end",
            Duration::from_secs(10),
            || !Path::new(&format!("/proc/{}", sleeper.trim())).exists(),
        );
    }
}

#[test]
fn a_promotion_that_would_take_a_plain_backup_is_refused_unless_the_config_allows_it() {
    let chain = FileChain::new("sqlite", "db", "UPDATE customers SET email = 'x';");
    sqlite::sample(&chain.prod, 10);
    sqlite::sample(&chain.staging, 3);
    let text = std::fs::read_to_string(&chain.cfg).unwrap();
    std::fs::write(&chain.cfg, text.replace("encrypt = false\n", "")).unwrap();
    chain
        .refresh()
        .env_remove("DBSAFE_RECIPIENTS")
        .env_remove("DBSAFE_RECIPIENTS_FILE")
        .fails_with(2, "would be written unencrypted to store");
    assert!(
        dbsafe_tests::artifacts(&chain._scene.path("store-prod")).is_empty(),
        "no backup was taken"
    );
    std::fs::write(&chain.cfg, text).unwrap();
    chain.refresh().succeeds();
}

/// A refresh from a non-sensitive environment that names a backup of the
/// sensitive one (the stores shared) would bring its data down unmasked:
/// refused, nothing changed.
#[test]
fn a_refresh_never_takes_another_environments_backup_in_place_of_its_own() {
    let chain = FileChain::sqlite_masking_emails(10, 3);
    let dev = chain._scene.path("dev/app.db");
    std::fs::create_dir_all(dev.parent().unwrap()).unwrap();
    sqlite::sample(&dev, 2);
    let shared = chain._scene.path("store-staging");
    let text = std::fs::read_to_string(&chain.cfg).unwrap().replace(
        "chain = [\"staging\", \"production\"]",
        "chain = [\"development\", \"staging\", \"production\"]",
    );
    std::fs::write(
        &chain.cfg,
        format!(
            "{text}\n[env.development]\nurl = \"sqlite:{}\"\nstore = \"{}\"\n",
            dev.display(),
            shared.display()
        ),
    )
    .unwrap();
    // Production's backup, in the store staging shares.
    Cmd::tool("dbsnap")
        .arg(sqlite::url(&chain.prod))
        .args(["--env", "production", "--no-encrypt", "--to"])
        .arg(&shared)
        .succeeds();
    let name = dbsafe_tests::artifacts(&shared)[0]
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    let before = sqlite::contents(&dev);
    for _ in 0..2 {
        chain
            .promote()
            .args(refresh_args("staging", "development"))
            .args(["--backup", &name])
            .fails_with(
                4,
                "is a backup of production's database app, not of staging's",
            );
        assert_eq!(sqlite::contents(&dev), before);
    }
}

#[test]
fn a_refresh_that_must_restore_an_encrypted_backup_without_an_identity_is_refused_before_it_starts()
{
    let chain = FileChain::new("sqlite", "db", "UPDATE customers SET email = 'x';");
    sqlite::sample(&chain.prod, 10);
    sqlite::sample(&chain.staging, 3);
    let before = sqlite::contents(&chain.staging);
    let (_key, public) = chain._scene.age_key("key.txt");
    for _ in 0..2 {
        chain
            .refresh()
            .env("DBSAFE_RECIPIENTS", &public)
            .env_remove("DBSAFE_IDENTITY_FILE")
            .fails_with(
                2,
                "the refresh must restore one: no identity to decrypt it with",
            );
    }
    assert!(
        dbsafe_tests::artifacts(&chain._scene.path("store-prod")).is_empty(),
        "no backup was taken"
    );
    assert_eq!(sqlite::contents(&chain.staging), before);
}

#[test]
fn a_refresh_killed_at_random_points_leaves_staging_whole_and_the_next_one_succeeds() {
    let c = FileChain::sqlite_masking_emails(300, 5);
    let (prod, staging) = (&c.prod, &c.staging);
    let (before, after) = (sqlite::counts(staging), sqlite::counts(prod));
    let mut delays = dbsafe_tests::Delays::new();
    let seed = delays.0;
    for k in 0..20 {
        dbsafe_tests::kill_after(c.refresh().spawn(), delays.next(1500));
        // Staging is the old database or the refreshed copy, never torn.
        let now = sqlite::counts(staging);
        assert!(
            now == before || now == after,
            "seed {seed}, kill {k}: staging is torn: {now:?}"
        );
        let check = Cmd::new("sqlite3")
            .arg(staging)
            .arg("PRAGMA integrity_check;")
            .succeeds()
            .stdout();
        assert_eq!(check.trim(), "ok", "seed {seed}, kill {k}");
    }
    // The next refresh completes: no lock, side file or manifest of a killed
    // run stands in its way, and it leaves the masked copy in place. (One
    // more killed run's side, whatever the kills above hit.)
    let dir = staging.parent().expect("dir");
    std::fs::write(
        dir.join("app_dbpromote_refresh_4194303-1.db"),
        b"left by a killed run",
    )
    .unwrap();
    c.refresh()
        .succeeds()
        .stderr_has("left by a run that was killed");
    assert_eq!(sqlite::counts(staging), after, "seed {seed}");
    // What killed runs left beside staging is gone: the live file and the
    // one previous database --keep-previous keeps.
    let beside = c.beside_staging("");
    assert!(
        beside.len() == 2
            && beside.contains(&"app.db".to_string())
            && beside.iter().any(|n| n.starts_with("app_dbpromote_prev_")),
        "seed {seed}: {beside:?}"
    );
}

/// A link planted as the target store's audit log: the promotion is
/// refused (exit 4) before any step, and neither staging nor the link's
/// target is written.
#[test]
fn a_link_planted_as_the_target_stores_audit_log_refuses_the_promotion() {
    let c = FileChain::sqlite_masking_emails(30, 5);
    let store = c._scene.path("store-staging");
    std::fs::create_dir_all(&store).expect("store");
    let victim = store.with_file_name("victim.txt");
    std::fs::write(&victim, "precious\n").expect("victim");
    std::os::unix::fs::symlink(&victim, store.join("audit.log")).expect("link");
    let before = std::fs::read(&c.staging).expect("staging bytes");
    c.refresh().fails_with(4, "audit.log is not a regular file");
    assert_eq!(std::fs::read(&c.staging).expect("staging bytes"), before);
    // A rollback takes the same lock and log: refused the same way.
    c.rollback()
        .fails_with(4, "audit.log is not a regular file");
    assert_eq!(std::fs::read(&c.staging).expect("staging bytes"), before);
    assert_eq!(
        std::fs::read_to_string(&victim).expect("victim"),
        "precious\n"
    );
    assert!(
        c.beside_staging("app_dbpromote_").is_empty(),
        "no side database"
    );
}

#[test]
fn sqlite_refreshes_swap_side_files_and_roll_back() {
    let c = FileChain::sqlite_masking_emails(30, 5);
    let (prod, staging) = (&c.prod, &c.staging);
    let count = |path: &Path, sql: &str| -> i64 {
        rusqlite::Connection::open(path)
            .expect("open")
            .query_row(sql, [], |r| r.get(0))
            .expect("query")
    };
    let old = std::fs::read(staging).expect("staging bytes");
    c.refresh().succeeds();
    assert_eq!(count(staging, "SELECT count(*) FROM customers"), 30);
    assert_eq!(
        count(
            staging,
            "SELECT count(*) FROM customers WHERE email LIKE '%@example.com'"
        ),
        0
    );
    // Nor are the masked values left in the file's free pages or its WAL.
    let raw: Vec<u8> = ["", "-wal"]
        .iter()
        .flat_map(|x| std::fs::read(format!("{}{x}", staging.display())).unwrap_or_default())
        .collect();
    assert!(
        !raw.windows(b"@example.com".len())
            .any(|w| w == b"@example.com"),
        "production's emails are still in staging's file"
    );
    let kept: Vec<String> = c
        .beside_staging("app_dbpromote_prev_")
        .into_iter()
        .filter(|n| n.ends_with(".db"))
        .collect();
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert_eq!(
        std::fs::read(staging.parent().expect("dir").join(&kept[0])).expect("kept"),
        old
    );

    // A release on SQLite: rehearsed on a side file, then applied.
    let migrate =
        "sqlite3 \"${DATABASE_URL#sqlite:}\" 'ALTER TABLE customers ADD COLUMN tier TEXT'";
    dbsafe_tests::require("sqlite3", "the Debian package sqlite3");
    {
        c.release("v1", migrate).succeeds();
        assert_eq!(
            count(
                prod,
                "SELECT count(*) FROM pragma_table_info('customers') WHERE name = 'tier'"
            ),
            1
        );
    }

    c.rollback().succeeds();
    assert_eq!(std::fs::read(staging).expect("staging bytes"), old);
}

#[test]
fn the_release_script_runs_the_runbook_from_development_to_production() {
    require("shellcheck", "the Debian package shellcheck");
    let w = World::new(&[]);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/release.sh");
    Cmd::new("shellcheck").arg(&script).succeeds();
    let log = w.s.path("hooks.log");
    let r = Cmd::new(&script)
        .arg("v1")
        .env("DBSAFE_CONFIG", &w.cfg)
        .env("DBSAFE_BIN_DIR", dbsafe_tests::bin_dir())
        .env("RELEASE_HOOK_LOG", &log)
        .env("RELEASE_YES", "1")
        .succeeds();
    for env in ["staging", "production"] {
        assert_eq!(w.manifest(env, "v1")["status"], "success", "{}", r.stderr());
        assert!(w.columns(env, "customers").contains(&"tier".to_string()));
    }
    let hooks = std::fs::read_to_string(&log).expect("hook log");
    let order: Vec<&str> = hooks.lines().collect();
    assert_eq!(
        order,
        [
            "build_image v1",
            "deploy_app staging v1",
            "warm_caches staging",
            "deploy_app production v1",
            "warm_caches production",
        ],
        "{hooks}"
    );
    // A second run of the same version stops at the first refusal.
    Cmd::new(&script)
        .arg("v1")
        .env("DBSAFE_CONFIG", &w.cfg)
        .env("DBSAFE_BIN_DIR", dbsafe_tests::bin_dir())
        .env("RELEASE_YES", "1")
        .fails_with_code(4);
}

#[test]
fn on_s3_stores_manifests_pin_the_source_backup_and_list_in_history() {
    let s = Scene::new();
    let server = dbsafe_tests::s3::S3Server::start(&s);
    let prod = s.path("prod/app.db");
    let staging = s.path("staging/app.db");
    for p in [&prod, &staging] {
        std::fs::create_dir_all(p.parent().expect("dir")).expect("mkdir");
    }
    sqlite::sample(&prod, 20);
    sqlite::sample(&staging, 3);
    let cfg = s.write(
        "dbsafe.toml",
        &format!(
            "[defaults]\nchain = [\"staging\", \"production\"]\nencrypt = false\n\n\
             [env.production]\nurl = \"sqlite:{}\"\nstore = \"{}\"\n\n\
             [env.staging]\nurl = \"sqlite:{}\"\nstore = \"{}\"\n",
            prod.display(),
            server.url("production"),
            staging.display(),
            server.url("staging")
        ),
    );
    let tool = |name: &str| server.tool(name).env("DBSAFE_CONFIG", &cfg);
    tool("dbpromote")
        .args(refresh_args("production", "staging"))
        .succeeds();
    let history = tool("dbpromote")
        .args(["--history", "--to", "staging", "--json"])
        .succeeds()
        .json();
    let version = history[0]["version"].as_str().expect("version").to_string();
    let source = history[0]["source_backup"]["name"]
        .as_str()
        .expect("source backup")
        .to_string();
    let key = format!("releases/staging/{version}.json");
    assert!(server
        .keys("staging/releases")
        .contains(&format!("staging/{key}")));
    assert!(server
        .keys("production/releases")
        .contains(&format!("production/{key}")));

    // A newer, verified backup of production: only the manifest keeps the refresh's source.
    tool("dbsnap")
        .arg(sqlite::url(&prod))
        .args([
            "--env",
            "production",
            "--to",
            &server.url("production"),
            "--no-encrypt",
        ])
        .succeeds();
    tool("dbverify")
        .args(["--store", &server.url("production"), "--latest"])
        .succeeds();
    tool("dbprune")
        .args(["--store", &server.url("production"), "--keep-last", "1"])
        .succeeds();
    let left = server.artifact_keys("production");
    assert_eq!(left.len(), 2, "{left:?}");
    assert!(
        left.contains(&format!("production/backups/{source}")),
        "{left:?}"
    );

    tool("dbpromote")
        .args(["--rollback", "--to", "staging", "--yes"])
        .succeeds();
    let m: Value = serde_json::from_slice(
        &std::fs::read(server.object_path(&format!("staging/{key}"))).expect("manifest object"),
    )
    .expect("JSON");
    assert_eq!(m["status"], "rolled-back");
    let audit_log = server
        .env_via(&server.endpoint())
        .into_iter()
        .find(|(k, _)| k == "DBSAFE_AUDIT_LOG")
        .map(|(_, v)| v)
        .expect("audit log path");
    let audit = std::fs::read_to_string(audit_log).expect("audit log");
    assert!(
        audit.contains("\"action\":\"refresh\"") && audit.contains("\"action\":\"rollback\""),
        "{audit}"
    );
}

#[test]
fn duckdb_refreshes_refuse_a_database_held_open_and_roll_back() {
    use dbsafe_tests::duckdb;
    let c = FileChain::new(
        "duckdb",
        "duckdb",
        "UPDATE customers SET name = 'Customer ' || id;",
    );
    let staging = &c.staging;
    duckdb::fixture(&c.prod, 30);
    duckdb::fixture(staging, 5);
    let digest = |p: &Path| duckdb::sql(p, "SELECT count(*), sum(hash(name)) FROM customers;");
    let refresh = || c.refresh();
    let before = digest(staging);

    // Another process holding staging open refuses the swap, even after a grace period.
    let mut holder = duckdb::session(staging);
    // Opened once it has a descriptor on the file (probing by opening it
    // ourselves could take the lock first and make it give up).
    wait_until("duckdb to open staging", Duration::from_secs(30), || {
        assert!(
            holder.try_wait().expect("holder").is_none(),
            "duckdb exited"
        );
        has_open(holder.id(), staging)
    });
    refresh().fails_with_code(4).stderr_has(&format!(
        "1 session(s) connected to app.duckdb: pid {}",
        holder.id()
    ));
    refresh()
        .args(["--grace", "1s"])
        .fails_with(4, "past the grace period");
    drop(holder.stdin.take());
    holder.wait().expect("duckdb ends");
    assert_eq!(digest(staging), before);
    let leftovers = c.beside_staging("_dbpromote_");
    assert!(leftovers.is_empty(), "{leftovers:?}");

    refresh().succeeds();
    assert_eq!(
        duckdb::sql(staging, "SELECT count(*) FROM customers;").trim(),
        "30"
    );
    assert_eq!(
        duckdb::sql(
            staging,
            "SELECT count(*) FROM customers WHERE name NOT LIKE 'Customer %';"
        )
        .trim(),
        "0"
    );
    c.rollback().succeeds();
    assert_eq!(digest(staging), before);
}
