//! walship's contract with PostgreSQL: archive_command and restore_command exit codes.

use dbsafe_tests::{assert_wal_fetches_as, files_under, wait_until, wal_status, Cmd, Scene};
use std::path::Path;
use std::time::Duration;

const SEG: &str = "000000010000000000000003";

fn segment(s: &Scene, name: &str, seed: u8) -> std::path::PathBuf {
    let data: Vec<u8> = (0..16u32 << 20)
        .map(|i| ((i.wrapping_mul(2654435761) >> 13) as u8) ^ seed)
        .collect();
    let p = s.path(name);
    std::fs::write(&p, data).unwrap();
    p
}

fn push(store: &Path, path: &Path, file: &str) -> Cmd {
    dbsafe_tests::push_wal(path, file, store)
}

/// `walship push PATH FILE --to STORE -r PUBLIC`: a push encrypted to `public`.
fn push_encrypted(store: &Path, path: &Path, file: &str, public: &str) -> Cmd {
    dbsafe_tests::push_wal_keyed(path, file, store, Some(public))
}

/// Asserts that `name` fetches from the local `store` as `seg`'s bytes.
fn fetches_whole(s: &Scene, store: &Path, name: &str, seg: &Path) {
    let back = s.path(&format!("back-{:x}", dbsafe_tests::rand_u64()));
    let store = store.display().to_string();
    assert_wal_fetches_as(Cmd::tool("walship"), name, &store, &back, seg);
}

fn fetch(store: &Path, file: &str, dest: &Path) -> Cmd {
    dbsafe_tests::fetch_wal(file, dest, store)
}

fn wal_dir_listing(store: &Path) -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<(String, Vec<u8>)> = std::fs::read_dir(store.join("wal"))
        .unwrap()
        .flatten()
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect();
    v.sort();
    v
}

#[test]
fn push_is_idempotent_for_identical_bytes_and_never_overwrites_different_ones() {
    let s = Scene::new();
    let store = s.path("store");
    let (_, public) = s.age_key("key.txt");
    let a = segment(&s, "a", 1);
    push_encrypted(&store, &a, SEG, &public).succeeds();
    let archived = wal_dir_listing(&store);
    assert_eq!(
        archived.len(),
        3,
        "object, .sha256, .meta.json: {:?}",
        archived.iter().map(|x| &x.0).collect::<Vec<_>>()
    );
    push_encrypted(&store, &a, SEG, &public).succeeds();
    assert_eq!(
        wal_dir_listing(&store),
        archived,
        "an identical re-push changes nothing"
    );
    let b = segment(&s, "b", 2);
    push_encrypted(&store, &b, SEG, &public).fails_with(1, "different contents");
    assert_eq!(
        wal_dir_listing(&store),
        archived,
        "the archived copy is kept"
    );
    // sha256sum -c accepts the WAL sidecar too.
    Cmd::new("sha256sum")
        .args(["-c", &format!("{SEG}.zst.age.sha256")])
        .current_dir(store.join("wal"))
        .succeeds();
}

#[test]
fn sigkill_during_push_leaves_nothing_visible_and_a_repush_succeeds() {
    let s = Scene::new();
    let store = s.path("store");
    let big = s.path("big");
    // A "segment" large enough to catch the push in the middle.
    let data: Vec<u8> = (0..400u32 << 20)
        .map(|i| (i.wrapping_mul(2654435761) >> 7) as u8)
        .collect();
    std::fs::write(&big, data).unwrap();
    let mut child = push(&store, &big, SEG).args(["--compress", "none"]).spawn();
    wait_until("push to start writing", Duration::from_secs(60), || {
        !dbsafe_tests::temporaries(&store).is_empty()
    });
    child.kill().unwrap();
    child.wait().unwrap();
    let visible: Vec<String> = std::fs::read_dir(store.join("wal"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.'))
        .collect();
    assert!(
        !visible.iter().any(|n| n == SEG || n.ends_with(".sha256")),
        "a partial segment is visible: {visible:?}"
    );
    push(&store, &big, SEG)
        .args(["--compress", "none"])
        .succeeds();
    fetch(&store, SEG, &s.path("back")).succeeds();
    assert_eq!(
        dbsafe_tests::sha256_file(&s.path("back")),
        dbsafe_tests::sha256_file(&big)
    );
}

#[test]
fn fetch_exits_1_for_missing_and_255_for_every_other_failure() {
    let s = Scene::new();
    let store = s.path("store");
    let (key, public) = s.age_key("key.txt");
    let (other, _) = s.age_key("other.txt");
    let a = segment(&s, "a", 1);
    push_encrypted(&store, &a, SEG, &public).succeeds();
    // Good.
    let out = s.path("out");
    fetch(&store, SEG, &out).arg("-i").arg(&key).succeeds();
    assert_eq!(
        dbsafe_tests::sha256_file(&out),
        dbsafe_tests::sha256_file(&a)
    );
    // Missing: 1, quietly.
    let r = fetch(&store, "000000010000000000000004", &s.path("x"))
        .arg("-i")
        .arg(&key)
        .fails_with_code(1);
    assert!(r.stderr().is_empty(), "quiet: {}", r.stderr());
    fetch(&store, "00000002.history", &s.path("x"))
        .arg("-i")
        .arg(&key)
        .fails_with_code(1);
    // Wrong key, no key: 255.
    fetch(&store, SEG, &s.path("x"))
        .arg("-i")
        .arg(&other)
        .fails_with_code(255);
    fetch(&store, SEG, &s.path("x")).fails_with_code(255);
    // A store that does not exist, or is not a directory: 255, never "missing".
    fetch(&s.path("no-such-store"), SEG, &s.path("x"))
        .arg("-i")
        .arg(&key)
        .fails_with_code(255);
    fetch(&a, SEG, &s.path("x"))
        .arg("-i")
        .arg(&key)
        .fails_with_code(255);
    // A store whose WAL cannot be read (here its wal/ is no directory: the
    // file system answers ENOTDIR, as it answers EACCES or EIO): 255.
    let unreadable = s.mkdir("unreadable-store");
    std::fs::write(unreadable.join("wal"), b"not a directory").unwrap();
    for _ in 0..2 {
        fetch(&unreadable, SEG, &s.path("x"))
            .arg("-i")
            .arg(&key)
            .fails_with_code(255);
    }
    // Corrupted archived copy: 255, and nothing written at %p.
    let obj = store.join("wal").join(format!("{SEG}.zst.age"));
    let mut b = std::fs::read(&obj).unwrap();
    let n = b.len() / 2;
    b[n] ^= 0xff;
    std::fs::write(&obj, b).unwrap();
    let dest = s.path("corrupt-dest");
    fetch(&store, SEG, &dest)
        .arg("-i")
        .arg(&key)
        .fails_with_code(255);
    assert!(!dest.exists());
    assert!(dbsafe_tests::temporaries(s.dir.path()).is_empty());
}

#[test]
fn list_status_and_prune() {
    let s = Scene::new();
    let store = s.path("store");
    let a = segment(&s, "a", 1);
    for seg in [
        "000000010000000000000001",
        "000000010000000000000002",
        "000000010000000000000004",
    ] {
        push(&store, &a, seg).succeeds();
    }
    let small = s.write("h", "1\t0/3000000\tno recovery target specified\n");
    push(&store, &small, "00000002.history").succeeds();
    let list = Cmd::tool("walship")
        .args(["list", "--json", "--from"])
        .arg(&store)
        .succeeds()
        .json();
    assert_eq!(list.as_array().unwrap().len(), 4);
    let st = wal_status(&store).arg("--json").fails_with_code(1).json();
    assert_eq!(
        st["wal"]["gaps"][0],
        "000000010000000000000003..000000010000000000000003"
    );
    push(&store, &a, "000000010000000000000003").succeeds();
    wal_status(&store).succeeds();
    // Once the newest segment is older than 500ms, by status's own clock,
    // --max-lag 500ms fails.
    wait_until(
        "the newest WAL to be 500ms old",
        Duration::from_secs(10),
        || {
            let st = wal_status(&store).arg("--json").run().json();
            st["wal"]["newest_age_seconds"]
                .as_f64()
                .unwrap_or_else(|| panic!("no newest_age_seconds: {st}"))
                > 0.5
        },
    );
    wal_status(&store)
        .args(["--max-lag", "500ms"])
        .fails_with(1, "--max-lag");
    Cmd::tool("walship")
        .args(["prune", "--before", "000000010000000000000003", "--from"])
        .arg(&store)
        .succeeds();
    let left = Cmd::tool("walship")
        .args(["list", "--json", "--from"])
        .arg(&store)
        .succeeds()
        .json();
    let names: Vec<&str> = left
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["wal_file"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        vec![
            "000000010000000000000003",
            "000000010000000000000004",
            "00000002.history"
        ]
    );
    Cmd::tool("walship")
        .args(["push", "a", "not-a-wal-name", "--to"])
        .arg(&store)
        .current_dir(s.dir.path())
        .fails_with_code(2);
}

#[test]
fn a_segment_counts_as_archived_only_once_every_store_has_it() {
    let s = Scene::new();
    let (first, second) = (s.path("first"), s.path("second"));
    let _disk = dbsafe_tests::Tmpfs::mount(&second, "size=1m,mode=0700");
    // Incompressible: it cannot fit in the second store's megabyte.
    let a = s.path("a");
    let mut bytes = vec![0u8; 16 << 20];
    std::io::Read::read_exact(
        &mut std::fs::File::open("/dev/urandom").unwrap(),
        &mut bytes,
    )
    .unwrap();
    std::fs::write(&a, bytes).unwrap();
    let push_both = || push(&first, &a, SEG).arg("--to").arg(&second);
    push_both()
        .fails_with_code(1)
        .stderr_has("is not archived in every store")
        .stderr_has(&format!("store {}", second.display()));
    assert_eq!(wal_dir_listing(&first).len(), 3, "the first store has it");
    // The archiver retries once the second store has room again.
    Cmd::new("mount")
        .args(["-o", "remount,size=64m"])
        .arg(&second)
        .succeeds();
    push_both().succeeds();
    assert_eq!(wal_dir_listing(&first).len(), 3);
    assert_eq!(wal_dir_listing(&second).len(), 3);
    for store in [&first, &second] {
        fetches_whole(&s, store, SEG, &a);
    }
}

/// `walship push --async` of segment `n` (16 MiB, its own bytes) through `spool` into `store`.
fn push_async(s: &Scene, spool: &Path, store: &Path, n: u8) -> (Cmd, String, std::path::PathBuf) {
    let name = format!("0000000100000000000000{n:02X}");
    let seg = s.path(&format!("seg{n}"));
    if !seg.exists() {
        segment(s, &format!("seg{n}"), n);
    }
    let cmd = push(store, &seg, &name)
        .arg("--async")
        .arg("--spool")
        .arg(spool);
    (cmd, name, seg)
}

/// Waits until the spool's queue is empty (its shipper done).
fn spool_drains(spool: &Path) {
    let queue = spool.join("queue");
    let drained = dbsafe_tests::poll_until(Duration::from_secs(60), || {
        dbsafe_tests::files_under(&queue).is_empty()
    });
    assert!(
        drained,
        "the spool still holds {:?}; shipper.log:\n{}",
        dbsafe_tests::files_under(&queue),
        std::fs::read_to_string(spool.join("shipper.log")).unwrap_or_default()
    );
}

#[test]
fn async_pushes_are_acknowledged_from_the_spool_and_shipped_to_every_store() {
    let s = Scene::new();
    let (spool, store, second) = (s.path("spool"), s.path("store"), s.path("second"));
    let mut pushed = Vec::new();
    for n in 1..=6 {
        let (cmd, name, seg) = push_async(&s, &spool, &store, n);
        cmd.arg("--to").arg(&second).succeeds();
        pushed.push((name, seg));
    }
    spool_drains(&spool);
    for store in [&store, &second] {
        for (name, seg) in &pushed {
            fetches_whole(&s, store, name, seg);
        }
    }
}

#[test]
fn a_full_spool_makes_an_async_push_fail_and_nothing_is_dropped() {
    let s = Scene::new();
    let spool = s.path("spool");
    // A store that takes nothing: its disk is read-only.
    let store = s.path("store");
    let _disk = dbsafe_tests::Tmpfs::mount(&store, "ro,size=1m,mode=0700");
    let (first, name1, seg1) = push_async(&s, &spool, &store, 1);
    first.args(["--spool-max", "20M"]).succeeds();
    let (second, name2, seg2) = push_async(&s, &spool, &store, 2);
    second.args(["--spool-max", "20M"]).fails_with(1, "is full");
    wait_until("the shipper to give up", Duration::from_secs(30), || {
        std::fs::read_to_string(spool.join("shipper.log")).is_ok_and(|l| !l.is_empty())
    });
    assert!(
        spool.join("queue").join(&name1).exists(),
        "the first stays queued"
    );
    assert!(
        !spool.join("queue").join(&name2).exists(),
        "the second was refused"
    );
    // The store comes back: the archiver's retries go on failing until the
    // shipper they start has emptied the spool, then the second is queued.
    Cmd::new("mount")
        .args(["-o", "remount,rw"])
        .arg(&store)
        .succeeds();
    wait_until(
        "a retried push to be taken",
        Duration::from_secs(60),
        || {
            let (retry, _, _) = push_async(&s, &spool, &store, 2);
            retry
                .args(["--spool-max", "20M"])
                .run()
                .out
                .status
                .success()
        },
    );
    spool_drains(&spool);
    // Both reach the store whole: the one queued before, and the refused
    // one once PostgreSQL's retry was taken.
    for (name, seg) in [(&name1, &seg1), (&name2, &seg2)] {
        fetches_whole(&s, &store, name, seg);
    }
}

/// A segment the store holds with other bytes (two clusters archiving into
/// one store) cannot be shipped by any retry: once the shipper finds it,
/// every push fails (exit 1) naming it, and `walship status` reports it,
/// until it is resolved; then pushes are taken again.
#[test]
fn an_async_push_the_store_holds_other_bytes_of_makes_the_next_pushes_fail_until_resolved() {
    let s = Scene::new();
    let (spool, store) = (s.path("spool"), s.path("store"));
    let (_, name1, _) = push_async(&s, &spool, &store, 1);
    // The store has segment 1 already, from another cluster.
    push(&store, &segment(&s, "other", 99), &name1).succeeds();
    let (first, _, _) = push_async(&s, &spool, &store, 1);
    first.succeeds();
    wait_until(
        "the shipper to find the conflict",
        Duration::from_secs(60),
        || !dbsafe_tests::files_under(&spool.join("conflicts")).is_empty(),
    );
    let status = || {
        Cmd::tool("walship")
            .args(["status", "--from"])
            .arg(&store)
            .arg("--spool")
            .arg(&spool)
    };
    for n in 2..=3 {
        let (next, name, _) = push_async(&s, &spool, &store, n);
        next.fails_with(1, &format!("cannot ship {name1}"));
        assert!(
            !spool.join("queue").join(name).exists(),
            "nothing more queued"
        );
        status().fails_with(1, "different contents");
    }
    // Resolved: the queued copy is the one to drop (the store's is right).
    std::fs::remove_file(spool.join("queue").join(&name1)).unwrap();
    let (next, name2, seg2) = push_async(&s, &spool, &store, 2);
    next.succeeds();
    spool_drains(&spool);
    fetches_whole(&s, &store, &name2, &seg2);
    status().succeeds();
}

#[test]
fn async_pushes_killed_at_random_points_lose_no_acknowledged_segment() {
    let s = Scene::new();
    let (spool, store) = (s.path("spool"), s.path("store"));
    let mut delays = dbsafe_tests::Delays::new();
    let (mut acknowledged, mut killed) = (Vec::new(), Vec::new());
    for n in 1..=8u8 {
        let (cmd, name, seg) = push_async(&s, &spool, &store, n);
        let mut child = cmd.spawn();
        let deadline = delays.next(150);
        std::thread::sleep(deadline);
        match child.try_wait().unwrap() {
            Some(st) if st.success() => acknowledged.push((name, seg)),
            Some(st) => panic!("push of {name} failed: {st}"),
            None => {
                dbsafe_tests::kill_and_reap(&mut child);
                killed.push((name, seg));
            }
        }
    }
    // Shippers killed too, mid-shipment: the next push starts another.
    Cmd::new("pkill")
        .args(["-KILL", "-f"])
        .arg(spool.display().to_string())
        .run();
    let (last, name, seg) = push_async(&s, &spool, &store, 9);
    last.succeeds();
    acknowledged.push((name, seg));
    spool_drains(&spool);
    // A push killed before it answered may or may not have queued its
    // segment; if the archive has it, it has it whole.
    for (name, seg) in &killed {
        let back = s.path("back");
        let r = fetch(&store, name, &back).run();
        match r.out.status.code() {
            Some(0) => assert!(
                std::fs::read(&back).unwrap() == std::fs::read(seg).unwrap(),
                "{name} archived torn"
            ),
            code => assert_eq!(code, Some(1), "{name}: {}", r.stderr()),
        }
        let _ = std::fs::remove_file(&back);
    }
    for (name, seg) in &acknowledged {
        fetches_whole(&s, &store, name, seg);
    }
}

/// WAL's own fast zstd level applies to zstd only: gzip keeps its default
/// (the gzip header's XFL byte is 4 for the fastest level, 0 for the default).
#[test]
fn gzip_wal_keeps_gzips_default_level_unless_one_is_given() {
    let s = Scene::new();
    let store = s.path("store");
    let seg = segment(&s, "seg", 7);
    push(&store, &seg, SEG)
        .args(["--compress", "gzip"])
        .succeeds();
    let gz = std::fs::read(store.join("wal").join(format!("{SEG}.gz"))).unwrap();
    assert_eq!(
        (gz[0], gz[1], gz[8]),
        (0x1f, 0x8b, 0),
        "gzip at its default level"
    );
    let fast = "000000010000000000000004";
    push(&store, &seg, fast)
        .args(["--compress", "gzip", "--level", "1"])
        .succeeds();
    let gz = std::fs::read(store.join("wal").join(format!("{fast}.gz"))).unwrap();
    assert_eq!(gz[8], 4, "gzip at the level asked for");
    // The config file's level is asked for too.
    let config = s.write("dbsafe.toml", "[defaults]\nlevel = 1\n");
    let configured = "000000010000000000000005";
    push(&store, &seg, configured)
        .args(["--compress", "gzip"])
        .env("DBSAFE_CONFIG", &config)
        .succeeds();
    let gz = std::fs::read(store.join("wal").join(format!("{configured}.gz"))).unwrap();
    assert_eq!(gz[8], 4, "gzip at the config file's level");
}

/// An async push updates the WAL metrics when its shipper archives the
/// file, as a synchronous push does when it returns: the archive-lag alert
/// reads them.
#[test]
fn async_pushes_record_the_wal_metrics_when_they_are_shipped() {
    let s = Scene::new();
    let (spool, store, prom) = (s.path("spool"), s.path("store"), s.path("wal.prom"));
    for n in 1..=2 {
        let (cmd, _, _) = push_async(&s, &spool, &store, n);
        cmd.env("DBSAFE_METRICS_FILE", &prom).succeeds();
    }
    spool_drains(&spool);
    wait_until("the shipper's metrics", Duration::from_secs(30), || {
        std::fs::read_to_string(&prom)
            .is_ok_and(|t| t.contains("dbsafe_wal_last_archived_timestamp_seconds{"))
    });
    let text = std::fs::read_to_string(&prom).unwrap();
    let failures = text
        .lines()
        .find(|l| l.starts_with("dbsafe_wal_push_failures_total{"))
        .unwrap_or_else(|| panic!("no failure counter in:\n{text}"));
    assert!(failures.ends_with(" 0"), "{failures}");
}

/// The shipper records the WAL metrics once a round, not once a file: a
/// Pushgateway that is slow to answer cannot hold a backlog's shipping to
/// one file a push.
#[test]
fn a_shipper_records_the_wal_metrics_once_for_a_round_of_queued_files() {
    let s = Scene::new();
    let (spool, store) = (s.path("spool"), s.path("store"));
    let gateway = dbsafe_tests::receiver::Receiver::start(true);
    // Another shipper holds the spool: each push queues its file, and its
    // own shipper leaves the queue to the holder.
    let holder = dbsafe_tests::LockHolder::take(&spool.join("ship.lock"));
    let queued = 6;
    for n in 1..=queued {
        let (cmd, _, _) = push_async(&s, &spool, &store, n);
        cmd.env("DBSAFE_PUSHGATEWAY", &gateway.base).succeeds();
    }
    assert_eq!(files_under(&spool.join("queue")).len(), usize::from(queued));
    holder.kill();
    // The next push's shipper (or a late one of the queued pushes) ships
    // the backlog in one round; the last push may make a second.
    let (cmd, _, _) = push_async(&s, &spool, &store, queued + 1);
    cmd.env("DBSAFE_PUSHGATEWAY", &gateway.base).succeeds();
    spool_drains(&spool);
    let archived = files_under(&store.join("wal"))
        .iter()
        .filter(|f| f.ends_with(".zst"))
        .count();
    assert_eq!(archived, usize::from(queued) + 1);
    wait_until("the shipper's push", Duration::from_secs(30), || {
        !gateway.requests().is_empty()
    });
    let pushes = gateway.requests();
    assert!(
        (1..=2).contains(&pushes.len()),
        "{} pushes to the gateway for {} files: {:?}",
        pushes.len(),
        queued + 1,
        pushes.iter().map(|r| &r.line).collect::<Vec<_>>()
    );
    assert!(
        pushes[0].line.contains("/metrics/job/walship"),
        "{}",
        pushes[0].line
    );
    assert!(String::from_utf8_lossy(&pushes[0].body)
        .contains("dbsafe_wal_last_archived_timestamp_seconds"));
}
