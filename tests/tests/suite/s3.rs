//! S3 stores against a real S3 server (s3s-fs, which verifies SigV4): the
//! same guarantees as local stores, multipart uploads, interrupted writers,
//! faults on the wire and credentials errors.

use dbsafe_tests::faultproxy::{Fault, FaultProxy, Gate};
use dbsafe_tests::race::two_hosts_snapshot_one_name;
use dbsafe_tests::s3::{S3Server, BUCKET};
use dbsafe_tests::{assert_wal_fetches_as, next_second, require, sqlite, wait_until, Cmd, Scene};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::Duration;

const PREFIX: &str = "prod";

/// `dbsnap` (as `cmd`) of the SQLite database `db` into `store`, unencrypted.
fn snap_plain(cmd: Cmd, db: &Path, store: &str) -> Cmd {
    cmd.arg(sqlite::url(db))
        .args(["--to", store, "--no-encrypt"])
}

/// `dbsnap` (as `cmd`) of the SQLite database `db` into `store`, uncompressed.
fn snap_uncompressed(cmd: Cmd, db: &Path, store: &str) -> Cmd {
    snap_plain(cmd, db, store).args(["--compress", "none"])
}

/// `dbverify` (as `cmd`) of the newest backup in `store`.
fn verify_latest(cmd: Cmd, store: &str) -> Cmd {
    cmd.args(["--store", store, "--latest"])
}

/// A test's directory with an s3s-fs server in it, `big.db` (`mb` MiB of
/// incompressible blobs) to back up, and the store to back it up into.
fn big_db_and_server(mb: u64) -> (Scene, S3Server, PathBuf, String) {
    let (s, server) = dbsafe_tests::s3::scene();
    let db = sqlite::blobs_in(&s, "big.db", mb);
    let store = server.url(PREFIX);
    (s, server, db, store)
}

/// Writes a 1 MiB WAL segment at `path` whose bytes repeat every `period`.
fn write_segment(path: &Path, period: u32) {
    let bytes: Vec<u8> = (0..(1u32 << 20)).map(|i| (i % period) as u8).collect();
    std::fs::write(path, bytes).unwrap();
}

/// `aws s3 cp` of the object `key` to `to` (a file, or `-`: stdout).
fn aws_cp(server: &S3Server, key: &str, to: impl AsRef<std::ffi::OsStr>) -> Cmd {
    server
        .aws()
        .args(["s3", "cp", &format!("s3://{BUCKET}/{key}")])
        .arg(to)
}

fn markers(server: &S3Server, prefix: &str) -> Vec<String> {
    server.keys(&format!("{prefix}/.dbsafe-uploads"))
}

#[test]
fn snapshot_verify_prune_restore_round_trip_on_s3_keeps_the_layout_and_standard_tools_work() {
    let s = Scene::new();
    round_trip(&s, &S3Server::start(&s));
}

#[test]
fn the_round_trip_holds_on_a_second_s3_implementation_moto() {
    let s = Scene::new();
    round_trip(&s, &S3Server::start_moto(&s));
}

#[test]
fn walship_push_and_fetch_hold_on_both_s3_implementations_under_concurrent_pushes() {
    for moto in [false, true] {
        let s = Scene::new();
        let server = if moto {
            S3Server::start_moto(&s)
        } else {
            S3Server::start(&s)
        };
        let store = server.url("wal");
        let seg = s.path("seg");
        write_segment(&seg, 251);
        for round in 0..10 {
            let name = format!("0000000100000000000000{round:02X}");
            // Three pushes of one segment at once, as a retried archive_command makes them.
            let pushes: Vec<_> = (0..3)
                .map(|_| {
                    server
                        .tool("walship")
                        .arg("push")
                        .arg(&seg)
                        .arg(&name)
                        .args(["--to", &store, "--no-encrypt"])
                        .spawn()
                })
                .collect();
            for mut p in pushes {
                assert!(p.wait().unwrap().success(), "moto={moto} round {round}");
            }
            let back = s.path(&format!("back-{round}"));
            assert_wal_fetches_as(server.tool("walship"), &name, &store, &back, &seg);
        }
        // Different bytes under an archived name: exit 1, the archived copy kept.
        let other = s.write("other", "not the same segment");
        server
            .tool("walship")
            .arg("push")
            .arg(&other)
            .args(["000000010000000000000000", "--to", &store, "--no-encrypt"])
            .fails_with_code(1);
        two_hosts_push_one_name(&s, &server);
        if moto {
            two_hosts_race(&s, &server);
        }
    }
}

/// Snapshot, verify at every level, status, prune, restore, and the
/// artifacts read with aws, age, zstd and sha256sum alone.
fn round_trip(s: &Scene, server: &S3Server) {
    require("sha256sum", "coreutils");
    require("zstd", "the Debian package zstd");
    let (key, public) = s.age_key("key.txt");
    let db = sqlite::sample_in(s, "app.db", 300);
    let store = server.url(PREFIX);
    let snap = || {
        server
            .tool("dbsnap")
            .arg(sqlite::url(&db))
            .args(["--to", &store, "-r", &public])
            .succeeds()
    };
    snap();

    let ls = server
        .aws()
        .args([
            "s3",
            "ls",
            "--recursive",
            &format!("s3://{BUCKET}/{PREFIX}/"),
        ])
        .succeeds()
        .stdout();
    let keys: Vec<&str> = ls
        .lines()
        .filter_map(|l| l.split_whitespace().last())
        .collect();
    let artifact = keys
        .iter()
        .find(|k| k.ends_with(".sqlite.zst.age") && !k.contains("_latest"))
        .unwrap_or_else(|| panic!("no artifact in:\n{ls}"))
        .to_string();
    let name = artifact.rsplit('/').next().unwrap().to_string();
    assert!(name.starts_with("default_app_full_"), "{name}");
    for k in [
        format!("{PREFIX}/backups/{name}"),
        format!("{PREFIX}/backups/{name}.sha256"),
        format!("{PREFIX}/backups/{name}.meta.json"),
        format!("{PREFIX}/backups/default_app_full_latest.sqlite.zst.age"),
    ] {
        assert!(keys.contains(&k.as_str()), "{k} missing from:\n{ls}");
    }
    assert_eq!(keys.len(), 4, "unexpected objects:\n{ls}");
    let pointer = aws_cp(
        server,
        &format!("{PREFIX}/backups/default_app_full_latest.sqlite.zst.age"),
        "-",
    )
    .succeeds()
    .stdout();
    assert_eq!(pointer.trim(), format!("backups/{name}"));

    for level in ["quick", "full", "restore"] {
        server
            .tool("dbverify")
            .args(["--store", &store, "--latest", "--level", level, "-i"])
            .arg(&key)
            .succeeds()
            .stderr_has("PASS");
    }
    assert!(server
        .keys(&format!("{PREFIX}/backups"))
        .contains(&format!("{PREFIX}/backups/{name}.verify.json")));
    let status = server
        .tool("dbverify")
        .args(["--status", "--store", &store])
        .succeeds()
        .stdout();
    assert!(status.contains("good"), "{status}");

    // A second snapshot, verified, lets dbprune delete the first.
    // Artifact names are stamped to the second.
    next_second();
    snap();
    server
        .tool("dbverify")
        .args(["--store", &store, "--latest", "-i"])
        .arg(&key)
        .succeeds();
    let report = server
        .tool("dbprune")
        .args(["--store", &store, "--keep-last", "1", "--json"])
        .succeeds()
        .json();
    assert_eq!(report["deleted"], 1, "{report}");
    let left = server.artifact_keys(PREFIX);
    assert_eq!(left.len(), 1, "{left:?}");
    assert!(
        !left[0].ends_with(&name),
        "the older artifact was kept: {left:?}"
    );
    assert!(!server
        .keys(&format!("{PREFIX}/backups"))
        .contains(&format!("{PREFIX}/backups/{name}.sha256")));

    let target = s.path("restored.db");
    server
        .tool("dbrestore")
        .args(["--store", &store, "--latest", "--yes", "-i"])
        .arg(&key)
        .arg("--target")
        .arg(sqlite::url(&target))
        .succeeds();
    assert_eq!(sqlite::counts(&target), sqlite::counts(&db));

    // Without dbsafe: aws, age, zstd and sha256sum alone.
    let newest = left[0].rsplit('/').next().unwrap().to_string();
    let plain = s.path("plain.db");
    server
        .apply(
            Cmd::sh(&format!(
                "aws --endpoint-url {} s3 cp s3://{BUCKET}/{PREFIX}/backups/{newest} - | age -d -i {} | zstd -d > {}",
                server.endpoint(),
                key.display(),
                plain.display()
            )),
            &server.endpoint(),
        )
        .succeeds();
    assert_eq!(sqlite::counts(&plain), sqlite::counts(&db));
    let dl = s.mkdir("download");
    for suffix in ["", ".sha256"] {
        aws_cp(
            server,
            &format!("{PREFIX}/backups/{newest}{suffix}"),
            dl.join(format!("{newest}{suffix}")),
        )
        .succeeds();
    }
    Cmd::new("sha256sum")
        .args(["-c", &format!("{newest}.sha256")])
        .current_dir(&dl)
        .succeeds();
}

#[test]
fn a_multipart_artifact_uploads_in_parts_verifies_and_leaves_no_upload_behind() {
    let (_s, server, db, store) = big_db_and_server(23);
    snap_in_parts(server.tool("dbsnap"), &db, &store).succeeds();
    let keys = server.artifact_keys(PREFIX);
    assert_eq!(keys.len(), 1, "{keys:?}");
    let head = server
        .aws()
        .args([
            "s3api",
            "head-object",
            "--bucket",
            BUCKET,
            "--key",
            &keys[0],
        ])
        .succeeds()
        .json();
    let etag = head["ETag"].as_str().unwrap().trim_matches('"').to_string();
    let size = head["ContentLength"].as_u64().unwrap();
    let parts = size.div_ceil(5 << 20);
    assert!(parts >= 5, "{size} bytes");
    assert!(
        etag.ends_with(&format!("-{parts}")),
        "not a {parts}-part upload: ETag {etag}"
    );
    let sidecar =
        std::fs::read_to_string(server.object_path(&format!("{}.sha256", keys[0]))).unwrap();
    assert_eq!(
        sidecar.split_whitespace().next().unwrap(),
        dbsafe_tests::sha256_file(&server.object_path(&keys[0]))
    );
    verify_latest(server.tool("dbverify"), &store)
        .args(["--level", "full"])
        .succeeds();
    assert!(server.pending_uploads().is_empty());
    assert!(markers(&server, PREFIX).is_empty());
}

/// A bucket in another region answers 301 PermanentRedirect: a failure
/// that names the region, at once, never an answer read as an object, a
/// listing or "that name is taken" (which kept dbsnap looking for a free
/// name for ever).
#[test]
fn a_bucket_in_another_region_is_named_at_once_never_read_as_an_answer() {
    let (s, server) = dbsafe_tests::s3::scene();
    let body = "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>PermanentRedirect</Code>\
                <Message>The bucket you are attempting to access must be addressed using the specified endpoint.</Message></Error>";
    let elsewhere = dbsafe_tests::receiver::Receiver::answering(&format!(
        "HTTP/1.1 301 Moved Permanently\r\nx-amz-bucket-region: eu-west-3\r\n\
         content-type: application/xml\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    ));
    let db = sqlite::sample_in(&s, "app.db", 5);
    let store = server.url(PREFIX);
    for cmd in [
        server
            .tool_via("dbsnap", &elsewhere.base)
            .arg(sqlite::url(&db))
            .args(["--no-encrypt", "--to", &store]),
        server
            .tool_via("dbverify", &elsewhere.base)
            .args(["--store", &store, "--latest"]),
    ] {
        let mut run = cmd.stderr_file(s.path("stderr")).spawn();
        let ended = dbsafe_tests::ends_within(&mut run, Duration::from_secs(60), "the run");
        assert!(!ended.success());
        let said = std::fs::read_to_string(s.path("stderr")).unwrap();
        assert!(said.contains("AWS_REGION=eu-west-3"), "{said}");
    }
}

/// 1,100 keys (s3s-fs serves its directory, so they are written there
/// directly): listing them takes two pages.
#[test]
fn listing_more_than_a_thousand_keys_follows_continuation_tokens() {
    let (_s, server) = dbsafe_tests::s3::scene();
    let dir = server.object_path(&format!("{PREFIX}/backups"));
    std::fs::create_dir_all(&dir).unwrap();
    let start = chrono::DateTime::parse_from_rfc3339("2024-01-01T00:00:00Z").unwrap();
    for i in 0..1100 {
        let t = start + chrono::Duration::minutes(i);
        let name = format!("default_db_full_{}.sqlite.zst", t.format("%Y%m%d_%H%M%S"));
        std::fs::write(dir.join(format!("{name}.sha256")), format!("00  {name}\n")).unwrap();
    }
    // Older than --stale-tmp: orphans of crashed writers, which dbprune removes.
    Cmd::sh(&format!("touch -d '2 hours ago' {}/*", dir.display())).succeeds();
    let report = server
        .tool("dbprune")
        .args(["--store", &server.url(PREFIX), "--dry-run", "--json"])
        .succeeds()
        .json();
    let orphans = report["orphan_sidecars_removed"].as_array().unwrap();
    assert_eq!(orphans.len(), 1100, "listing stopped after one page");
    server
        .tool("dbprune")
        .args(["--store", &server.url(PREFIX)])
        .succeeds();
    assert!(server.keys(PREFIX).is_empty(), "{:?}", server.keys(PREFIX));
}

/// A child process killed when the test ends, whatever way it ends.
struct Running(Option<std::process::Child>);

impl Running {
    fn child(&mut self) -> &mut std::process::Child {
        self.0.as_mut().expect("running")
    }
    fn take(mut self) -> std::process::Child {
        self.0.take().expect("running")
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(c) = self.0.as_mut() {
            dbsafe_tests::kill_and_reap(c);
        }
    }
}

/// A server, the proxy that slows it down, and a snapshot to it that has
/// uploaded a part and goes on slowly.
fn upload_under_way(s: &Scene) -> (S3Server, FaultProxy, Running) {
    let server = S3Server::start(s);
    let proxy = FaultProxy::slow(server.port, Duration::from_millis(15));
    let mut running = slow_snapshot(s, &server, &proxy);
    wait_for_a_part(&server, running.child());
    (server, proxy, running)
}

/// `dbsnap` (as `cmd`) of `db` into `store`, uncompressed, uploading in 5 MB parts.
fn snap_in_parts(cmd: Cmd, db: &Path, store: &str) -> Cmd {
    snap_uncompressed(cmd, db, store).env("DBSAFE_S3_PART_SIZE", "5M")
}

/// `dbsnap` of `db` through `proxy` to the store, uploading in 5 MB parts.
fn snap_in_parts_via(server: &S3Server, proxy: &FaultProxy, db: &Path) -> Cmd {
    snap_in_parts(
        server.tool_via("dbsnap", &proxy.endpoint()),
        db,
        &server.url(PREFIX),
    )
}

/// Snapshots `db` into `store` in parts through a proxy that injects
/// `fault`, which the writer must overcome. Returns the proxy, which counts
/// what it did, and the writer's run.
fn snap_through(
    server: &S3Server,
    fault: Fault,
    db: &Path,
    store: &str,
) -> (FaultProxy, dbsafe_tests::Run) {
    let proxy = FaultProxy::start(server.port, fault);
    let run = snap_in_parts(server.tool_via("dbsnap", &proxy.endpoint()), db, store).succeeds();
    (proxy, run)
}

/// A writer slowed down by a proxy, so that it is caught mid-upload.
fn slow_snapshot(s: &Scene, server: &S3Server, proxy: &FaultProxy) -> Running {
    let db = sqlite::blobs_in(s, "big.db", 40);
    Running(Some(
        snap_in_parts_via(server, proxy, &db)
            .env("DBSAFE_S3_PARTS_IN_FLIGHT", "1")
            .spawn(),
    ))
}

fn wait_for_a_part(server: &S3Server, child: &mut std::process::Child) {
    wait_until("a part is uploaded", Duration::from_secs(60), || {
        assert!(
            child.try_wait().unwrap().is_none(),
            "dbsnap ended before it was interrupted"
        );
        !server.pending_parts().is_empty()
    });
}

#[test]
fn sigkill_mid_upload_leaves_no_object_and_dbprune_aborts_the_stale_upload() {
    let s = Scene::new();
    let (server, _proxy, running) = upload_under_way(&s);
    let mut child = running.take();
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert!(server.artifact_keys(PREFIX).is_empty());
    assert!(server.keys(&format!("{PREFIX}/backups")).is_empty());
    assert_eq!(server.pending_uploads().len(), 1);
    assert_eq!(markers(&server, PREFIX).len(), 1);

    let store = server.url(PREFIX);
    let young = server
        .tool("dbprune")
        .args(["--store", &store, "--json"])
        .succeeds()
        .json();
    assert_eq!(young["temporaries_removed"], serde_json::json!([]));
    assert_eq!(
        server.pending_uploads().len(),
        1,
        "a young upload was aborted"
    );

    let report = server
        .tool("dbprune")
        .args(["--store", &store, "--stale-tmp", "0s", "--json"])
        .succeeds()
        .json();
    let removed = report["temporaries_removed"].as_array().unwrap();
    assert_eq!(removed.len(), 1, "{report}");
    assert!(removed[0]
        .as_str()
        .unwrap()
        .starts_with("backups/default_big_full_"));
    assert!(server.pending_uploads().is_empty());
    assert!(server.pending_parts().is_empty());
    assert!(markers(&server, PREFIX).is_empty());

    // The local lock died with the writer: the next run is not blocked.
    snap_uncompressed(server.tool("dbsnap"), &s.path("big.db"), &store).succeeds();
    assert_eq!(server.artifact_keys(PREFIX).len(), 1);
}

#[test]
fn sigint_mid_upload_aborts_the_upload_and_exits_130() {
    let s = Scene::new();
    let (server, _proxy, running) = upload_under_way(&s);
    let child = running.take();
    // SAFETY: sending a signal to our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130));
    assert!(server.artifact_keys(PREFIX).is_empty());
    wait_until(
        "s3s-fs has dropped the aborted upload",
        Duration::from_secs(5),
        || server.pending_uploads().is_empty(),
    );
    assert!(
        markers(&server, PREFIX).is_empty(),
        "{:?}",
        markers(&server, PREFIX)
    );
}

#[test]
fn a_second_writer_of_the_series_is_refused_with_exit_4() {
    let s = Scene::new();
    let (server, _proxy, mut running) = upload_under_way(&s);
    let pid = running.child().id();
    // Reached directly, not through the proxy: still the same store, the same lock.
    server
        .tool("dbsnap")
        .arg(sqlite::url(&s.path("big.db")))
        .args([
            "--to",
            &server.url(PREFIX),
            "--compress",
            "none",
            "--no-encrypt",
        ])
        .fails_with(4, &format!("pid {pid}"));
}

#[test]
fn two_hosts_writing_one_name_never_overwrite_each_other() {
    let s = Scene::new();
    two_hosts_race(&s, &S3Server::start(&s));
}

/// Two hosts (two lock directories) archive different bytes under one WAL
/// name at once: the second's link holds its upload until the first has
/// archived the name, after the second found it free. The second fails
/// (exit 1) and changes nothing: the segment fetches as the first host's
/// bytes, and pushes of those bytes keep succeeding.
fn two_hosts_push_one_name(s: &Scene, server: &S3Server) {
    let store = server.url("shared-wal");
    let name = "000000010000000000000042";
    let a = s.path("seg-a");
    let b = s.path("seg-b");
    write_segment(&a, 253);
    write_segment(&b, 241);
    let gate = Gate::new();
    let held = FaultProxy::start(
        server.port,
        Fault::Hold {
            method: "PUT".into(),
            containing: name.into(),
            gate: gate.clone(),
        },
    );
    let host = |n: &str, seg: &std::path::Path, endpoint: &str| {
        let dir = s.path(&format!("wal-host-{n}"));
        std::fs::create_dir_all(&dir).unwrap();
        server
            .tool_via("walship", endpoint)
            .arg("push")
            .arg(seg)
            .arg(name)
            .args(["--to", &store, "--no-encrypt"])
            .env("XDG_RUNTIME_DIR", &dir)
            .stderr_file(dir.join("stderr"))
    };
    let mut second = host("b", &b, &held.endpoint()).spawn();
    wait_until(
        "the second host's upload to be held (or the host to end)",
        Duration::from_secs(60),
        || held.stats.held.load(Ordering::SeqCst) > 0 || second.try_wait().ok().flatten().is_some(),
    );
    assert_eq!(
        held.stats.held.load(Ordering::SeqCst),
        1,
        "the second host's upload was held"
    );
    host("a", &a, &server.endpoint()).succeeds();
    gate.open();
    let code = second.wait().unwrap().code().unwrap_or(-1);
    let err = std::fs::read_to_string(s.path("wal-host-b/stderr")).unwrap_or_default();
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("different contents"), "{err}");
    let back = s.path("wal-back");
    assert_wal_fetches_as(server.tool("walship"), name, &store, &back, &a);
    host("a", &a, &server.endpoint()).succeeds();
    host("b", &b, &server.endpoint()).fails_with_code(1);
}

/// Two hosts snapshot one name at once ([`two_hosts_snapshot_one_name`]):
/// the second is refused, and nothing of the first is touched.
fn two_hosts_race(s: &Scene, server: &S3Server) {
    let db = sqlite::blobs_in(s, "big.db", 8);
    let store = server.url(PREFIX);
    let errs = two_hosts_snapshot_one_name(s, server.port, |proxy| {
        snap_in_parts_via(server, proxy, &db)
    });
    let name = errs[0]
        .split("backups/")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .unwrap_or("?");
    assert!(errs[1].contains(name), "one name: {errs:?}");
    // The first host's backup is whole: artifact, sidecars, verification.
    assert_eq!(server.artifact_keys(PREFIX).len(), 1, "{errs:?}");
    server
        .tool("dbverify")
        .args(["--store", &store, "--all", "--level", "full"])
        .succeeds();
}

#[test]
fn a_connection_reset_mid_part_is_retried_and_the_artifact_verifies() {
    let (_s, server, db, store) = big_db_and_server(16);
    let (proxy, run) = snap_through(&server, Fault::DropAfter(7 << 20), &db, &store);
    run.stderr_has("failed: Network Error")
        .stderr_has("retrying");
    assert_eq!(
        proxy.stats.drops.load(std::sync::atomic::Ordering::SeqCst),
        1
    );
    verify_latest(server.tool("dbverify"), &store)
        .args(["--level", "full"])
        .succeeds();
    assert!(server.pending_uploads().is_empty());
}

/// One flipped byte on the wire, in a single PUT (s3s-fs checks its
/// Content-MD5) and in a part (the client checks the part's ETag).
#[test]
fn a_byte_damaged_on_the_way_is_caught_by_its_md5_and_sent_again() {
    let (s, server) = dbsafe_tests::s3::scene();
    for (prefix, mb) in [("single", 3), ("multi", 12)] {
        let db = sqlite::blobs_in(&s, &format!("{prefix}.db"), mb);
        let store = server.url(prefix);
        let (proxy, run) = snap_through(&server, Fault::CorruptAfter(1 << 20), &db, &store);
        run.stderr_has("BadDigest").stderr_has("retrying");
        assert_eq!(
            proxy
                .stats
                .corrupted
                .load(std::sync::atomic::Ordering::SeqCst),
            1
        );
        verify_latest(server.tool("dbverify"), &store)
            .args(["--level", "quick"])
            .succeeds();
    }
}

#[test]
fn a_download_cut_mid_body_resumes_with_a_range_request() {
    let (_s, server, db, store) = big_db_and_server(12);
    snap_uncompressed(server.tool("dbsnap"), &db, &store).succeeds();
    let proxy = FaultProxy::start(server.port, Fault::DropReplyAfter(6 << 20));
    verify_latest(server.tool_via("dbverify", &proxy.endpoint()), &store)
        .args(["--level", "full"])
        .succeeds()
        .stderr_has("resuming");
    assert_eq!(
        proxy.stats.drops.load(std::sync::atomic::Ordering::SeqCst),
        1
    );
}

#[test]
fn a_stalled_answer_times_out_and_is_retried() {
    let (s, server) = dbsafe_tests::s3::scene();
    let proxy = FaultProxy::start(
        server.port,
        Fault::Delay {
            by: Duration::from_secs(3),
            connections: 1,
        },
    );
    let db = sqlite::sample_in(&s, "app.db", 50);
    snap_plain(
        server.tool_via("dbsnap", &proxy.endpoint()),
        &db,
        &server.url(PREFIX),
    )
    .env("DBSAFE_S3_TIMEOUT", "1s")
    .succeeds()
    .stderr_has("retrying");
    verify_latest(server.tool("dbverify"), &server.url(PREFIX)).succeeds();
}

#[test]
fn service_unavailable_forever_fails_with_exit_1_naming_bucket_key_and_status() {
    let (s, server) = dbsafe_tests::s3::scene();
    let db = sqlite::sample_in(&s, "app.db", 50);
    // Every request refused, then only the uploads (PUT).
    for (filter, verb, answer) in [
        ("", "look up", "HTTP 503 (Slow Down)"),
        (
            "PUT ",
            "upload",
            "HTTP 503 SlowDown (Please reduce your request rate.)",
        ),
    ] {
        let proxy = FaultProxy::start(server.port, Fault::Unavailable(filter.into()));
        let r = snap_plain(
            server.tool_via("dbsnap", &proxy.endpoint()),
            &db,
            &server.url(PREFIX),
        )
        .fails_with_code(1);
        let err = r.stderr();
        let last = err
            .lines()
            .find(|l| l.starts_with("dbsnap: error:"))
            .unwrap_or_default();
        assert!(
            last.contains(&format!(
                "{verb} s3://{BUCKET}/{PREFIX}/backups/default_app_full_"
            )) && last.contains(&format!("failed after 5 attempts; last answer: {answer}")),
            "{err}"
        );
        assert_eq!(
            proxy
                .stats
                .refused
                .load(std::sync::atomic::Ordering::SeqCst),
            5
        );
        assert!(server.keys(PREFIX).is_empty(), "{:?}", server.keys(PREFIX));
    }
}

#[test]
fn parts_refused_forever_abort_the_multipart_upload() {
    let (_s, server, db, _) = big_db_and_server(12);
    let proxy = FaultProxy::start(server.port, Fault::Unavailable("partNumber=".into()));
    snap_in_parts_via(&server, &proxy, &db)
        .env("DBSAFE_S3_RETRIES", "2")
        .fails_with(1, "upload part 1 of")
        .stderr_has("after 2 attempts");
    assert!(server.keys(PREFIX).is_empty(), "{:?}", server.keys(PREFIX));
    assert!(server.pending_uploads().is_empty());
}

#[test]
fn a_wrong_secret_fails_with_exit_1_naming_the_key_id_and_never_the_secret() {
    let (s, server) = dbsafe_tests::s3::scene();
    let db = sqlite::sample_in(&s, "app.db", 20);
    let wrong = "wrong-secret-7f3a9c0d2b";
    let r = snap_plain(server.tool("dbsnap"), &db, &server.url(PREFIX))
        .env("AWS_SECRET_ACCESS_KEY", wrong)
        .fails_with_code(1);
    let err = r.stderr();
    assert!(
        err.contains(&server.access_key) && err.contains("SignatureDoesNotMatch"),
        "{err}"
    );
    assert!(!err.contains(wrong) && !r.stdout().contains(wrong));
    // Readers too, with an unknown key id.
    snap_plain(server.tool("dbsnap"), &db, &server.url(PREFIX)).succeeds();
    let r = verify_latest(server.tool("dbverify"), &server.url(PREFIX))
        .env("AWS_ACCESS_KEY_ID", "NOSUCHKEYID")
        .env("AWS_SECRET_ACCESS_KEY", wrong)
        .fails_with_code(1);
    assert!(r.stderr().contains("NOSUCHKEYID"), "{}", r.stderr());
    assert!(!r.stderr().contains(wrong));
    // Nothing written anywhere holds it: metadata, audit log, locks, the server's files.
    let mut stack = vec![s.dir.path().to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if let Ok(bytes) = std::fs::read(&p) {
                assert!(
                    !bytes.windows(wrong.len()).any(|w| w == wrong.as_bytes()),
                    "{} holds the secret",
                    p.display()
                );
            }
        }
    }
}

#[test]
fn a_missing_bucket_or_an_empty_prefix_is_not_found() {
    let (_s, server) = dbsafe_tests::s3::scene();
    verify_latest(server.tool("dbverify"), "s3://no-such-bucket/x")
        .fails_with(3, "bucket no-such-bucket does not exist");
    verify_latest(server.tool("dbverify"), &server.url("mistyped")).fails_with(3, "does not exist");
    verify_latest(server.tool("dbverify"), "s3://Bad_Bucket/x").fails_with_code(2);
}

#[test]
fn credentials_come_from_an_aws_profile_as_the_aws_cli_reads_them() {
    let (s, server) = dbsafe_tests::s3::scene();
    let creds = s.write(
        "credentials",
        &format!(
            "[default]\naws_access_key_id = WRONG\naws_secret_access_key = wrong\n\n[backup]\naws_access_key_id = {}\naws_secret_access_key = {}\n",
            server.access_key, server.secret_key
        ),
    );
    let db = sqlite::sample_in(&s, "app.db", 20);
    snap_plain(server.tool("dbsnap"), &db, &server.url(PREFIX))
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .env("AWS_SHARED_CREDENTIALS_FILE", &creds)
        .env("AWS_PROFILE", "backup")
        .succeeds();
    assert_eq!(server.artifact_keys(PREFIX).len(), 1);
    verify_latest(server.tool("dbverify"), &server.url(PREFIX))
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .env("AWS_SHARED_CREDENTIALS_FILE", &creds)
        .env("AWS_PROFILE", "nobody")
        .fails_with(2, "profile nobody");
}

/// Artifact file names in a local store and on the server, and whether each has its sidecars.
fn complete_copies(local: &Path, server: &S3Server) -> (Vec<String>, Vec<String>) {
    let local: Vec<String> = dbsafe_tests::artifacts(local)
        .into_iter()
        .map(|p| {
            for side in [".sha256", ".meta.json"] {
                assert!(
                    Path::new(&format!("{}{side}", p.display())).exists(),
                    "{} has its {side}",
                    p.display()
                );
            }
            p.file_name().unwrap().to_string_lossy().into_owned()
        })
        .collect();
    let keys = server.keys(&format!("{PREFIX}/backups"));
    let remote: Vec<String> = server
        .artifact_keys(PREFIX)
        .into_iter()
        .map(|k| {
            for side in [".sha256", ".meta.json"] {
                assert!(keys.contains(&format!("{k}{side}")), "{k} has its {side}");
            }
            k.rsplit('/').next().unwrap().to_string()
        })
        .collect();
    (local, remote)
}

#[test]
fn a_dump_to_two_stores_lands_in_both_and_a_failing_store_is_named_while_the_other_completes() {
    let (s, server) = dbsafe_tests::s3::scene();
    let db = sqlite::blobs_in(&s, "app.db", 1);
    let local = s.path("local");
    let remote = server.url(PREFIX);
    let snap = |cmd: Cmd, local: &Path| {
        snap_uncompressed(cmd, &db, &remote)
            .arg("--to")
            .arg(local)
            .env("DBSAFE_S3_RETRIES", "1")
    };
    snap(server.tool("dbsnap"), &local).succeeds();
    let (here, there) = complete_copies(&local, &server);
    assert_eq!(here.len(), 1);
    assert_eq!(here, there, "one name in both stores");
    let on_server =
        std::fs::read(server.object_path(&format!("{PREFIX}/backups/{}", there[0]))).unwrap();
    assert_eq!(
        std::fs::read(local.join("backups").join(&here[0])).unwrap(),
        on_server
    );

    // The S3 store refuses writes: the local store still gets a complete backup.
    next_second();
    let proxy = FaultProxy::start(server.port, Fault::Unavailable("PUT".into()));
    snap(server.tool_via("dbsnap", &proxy.endpoint()), &local)
        .fails_with_code(1)
        .stderr_has(&format!("but not in store {remote}"));
    let (here, there) = complete_copies(&local, &server);
    assert_eq!((here.len(), there.len()), (2, 1));
    assert!(server.pending_uploads().is_empty());

    // The local store's disk is full: S3 still gets it.
    next_second();
    let small = s.path("small");
    let _disk = dbsafe_tests::Tmpfs::mount(&small, "size=256k,mode=0700");
    snap(server.tool("dbsnap"), &small)
        .fails_with_code(1)
        .stderr_has(&format!("but not in store {}", small.display()));
    let (_, there) = complete_copies(&local, &server);
    assert_eq!(there.len(), 2);
    assert!(dbsafe_tests::artifacts(&small).is_empty());
}

/// `cmd` without the access keys the server's environment gives it: its
/// credentials come from a provider.
fn without_keys(cmd: Cmd) -> Cmd {
    cmd.env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
}

#[test]
fn instance_metadata_credentials_sign_a_backup_and_are_fetched_again_once_they_expire() {
    let (s, server) = dbsafe_tests::s3::scene();
    // Valid one second past the minute before expiry at which they are renewed.
    let imds =
        dbsafe_tests::s3::MetadataEndpoint::start(&s, &server.access_key, &server.secret_key, 61);
    let proxy = FaultProxy::slow(server.port, Duration::from_millis(40));
    let db = sqlite::blobs_in(&s, "app.db", 12);
    let endpoint = imds.endpoint();
    let from_metadata = |cmd: Cmd| {
        without_keys(cmd)
            .env("AWS_EC2_METADATA_DISABLED", "false")
            .env("AWS_EC2_METADATA_SERVICE_ENDPOINT", &endpoint)
            .env("DBSAFE_S3_PART_SIZE", "5M")
    };
    let clock = std::time::Instant::now();
    let run = snap_uncompressed(
        from_metadata(server.tool_via("dbsnap", &proxy.endpoint())),
        &db,
        &server.url(PREFIX),
    )
    .succeeds();
    assert!(
        clock.elapsed() > Duration::from_secs(2),
        "the upload outlived the credentials ({:?})",
        clock.elapsed()
    );
    assert!(
        imds.fetches() >= 2,
        "credentials were fetched again after they expired ({} fetches)",
        imds.fetches()
    );
    assert!(!run.stderr().contains(&server.secret_key));
    assert_eq!(server.artifact_keys(PREFIX).len(), 1);
    // Read back with the same credentials: the backup verifies.
    verify_latest(from_metadata(server.tool("dbverify")), &server.url(PREFIX))
        .args(["--level", "full"])
        .succeeds();
    // Without a metadata service, and nothing else, a clear error.
    drop(imds);
    snap_uncompressed(
        from_metadata(server.tool("dbsnap")).env("DBSAFE_S3_RETRIES", "1"),
        &db,
        &server.url(PREFIX),
    )
    .fails_with(2, "S3 credentials from instance metadata");
}

#[test]
fn container_and_web_identity_credentials_sign_a_backup() {
    let (s, server) = dbsafe_tests::s3::scene();
    let endpoint =
        dbsafe_tests::s3::MetadataEndpoint::start(&s, &server.access_key, &server.secret_key, 3600);
    let db = sqlite::blobs_in(&s, "app.db", 1);
    let token_file = s.write("web-identity-token", "web-identity-token\n");
    let container = |token: &str| {
        without_keys(server.tool("dbsnap"))
            .env(
                "AWS_CONTAINER_CREDENTIALS_FULL_URI",
                format!("{}/ecs/credentials", endpoint.endpoint()),
            )
            .env("AWS_CONTAINER_AUTHORIZATION_TOKEN", token)
    };
    let web_identity = |token: &std::path::Path| {
        without_keys(server.tool("dbsnap"))
            .env("AWS_WEB_IDENTITY_TOKEN_FILE", token)
            .env("AWS_ROLE_ARN", "arn:aws:iam::123456789012:role/dbsafe")
            .env("AWS_ENDPOINT_URL_STS", endpoint.endpoint())
    };
    // ECS: the full URI and its authorization token.
    snap_uncompressed(container("container-token"), &db, &server.url("ecs")).succeeds();
    assert_eq!(endpoint.fetches(), 1);
    // EKS: the web identity token exchanged with STS.
    let run = snap_uncompressed(web_identity(&token_file), &db, &server.url("eks")).succeeds();
    assert_eq!(endpoint.fetches(), 2);
    assert!(!run.stderr().contains(&server.secret_key));
    assert_eq!(server.artifact_keys("ecs").len(), 1);
    assert_eq!(server.artifact_keys("eks").len(), 1);
    // A wrong container token is refused by the endpoint: no backup, a
    // clear error, and no retry (the default retries stay on): a refusal
    // is the configuration's, and asking again gets the same answer.
    let refused = |run: dbsafe_tests::Run, refusals: usize| {
        assert!(!run.stderr().contains("retrying"), "{}", run.stderr());
        assert_eq!(endpoint.refusals(), refusals, "asked once");
        assert_eq!(endpoint.fetches(), 2, "no credentials issued");
    };
    let run = snap_uncompressed(container("wrong"), &db, &server.url("ecs-wrong"))
        .fails_with(2, "container credentials")
        .stderr_has("HTTP 401");
    refused(run, 1);
    // STS refuses a wrong web identity token, once.
    let wrong = s.write("wrong-token", "stolen\n");
    let run = snap_uncompressed(web_identity(&wrong), &db, &server.url("eks-wrong"))
        .fails_with(2, "S3 credentials from web identity")
        .stderr_has("HTTP 403");
    refused(run, 2);
    // A token file that is not there: nothing to ask STS with, no request.
    let run = snap_uncompressed(
        web_identity(&s.path("no-such-token")),
        &db,
        &server.url("eks-wrong"),
    )
    .fails_with(2, "no-such-token");
    refused(run, 2);
    assert!(server.artifact_keys("ecs-wrong").is_empty());
    assert!(server.artifact_keys("eks-wrong").is_empty());
}
