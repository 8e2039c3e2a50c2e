//! Google Cloud Storage and Azure Blob stores against their emulators
//! (gcp-storage-emulator, Azurite, which checks Shared Key signatures and,
//! over HTTPS, OAuth tokens): the round trip of a local store, uploads in
//! parts, a download cut halfway, and each platform's credentials.

use dbsafe_tests::cloud::{service_account, CloudServer, TokenServer};
use dbsafe_tests::faultproxy::{Fault, FaultProxy};
use dbsafe_tests::race::two_hosts_snapshot_one_name;
use dbsafe_tests::{assert_wal_fetches_as, sqlite, Cmd, Scene};
use std::path::Path;

const PREFIX: &str = "prod";

/// Artifacts (no sidecars, no pointers) the emulator holds under `prefix/backups`.
/// Two encrypted snapshots, verified, listed, restored exactly, rotated to one.
fn round_trip(s: &Scene, server: &CloudServer) {
    let (key, public) = s.age_key("key.txt");
    let db = s.path("app.db");
    sqlite::sample(&db, 300);
    let store = server.url(PREFIX);
    for _ in 0..2 {
        dbsafe_tests::next_second();
        server
            .tool("dbsnap")
            .arg(sqlite::url(&db))
            .args(["--to", &store, "-r", &public])
            .succeeds();
    }
    let artifacts = server.artifact_keys(PREFIX);
    assert_eq!(artifacts.len(), 2, "{:?}", server.keys(PREFIX));
    let name = artifacts[1].rsplit('/').next().unwrap().to_string();
    let keys = server.keys(PREFIX);
    for k in [
        format!("{PREFIX}/backups/{name}.sha256"),
        format!("{PREFIX}/backups/{name}.meta.json"),
        format!("{PREFIX}/backups/default_app_full_latest.sqlite.zst.age"),
    ] {
        assert!(keys.contains(&k), "{k} missing from {keys:?}");
    }
    server
        .tool("dbverify")
        .args(["--store", &store, "--latest", "--level", "full", "-i"])
        .arg(&key)
        .succeeds()
        .stderr_has(&name);
    let list = server
        .tool("dbverify")
        .args(["--list", "--json", "--store", &store])
        .succeeds()
        .json();
    let listed: Vec<&str> = list["backups"]
        .as_array()
        .expect("backups")
        .iter()
        .filter_map(|b| b["file"].as_str())
        .collect();
    assert_eq!(listed.len(), 2, "{list}");
    assert!(listed.contains(&name.as_str()), "{list}");
    let restored = s.path("restored.db");
    server
        .tool("dbrestore")
        .args(["--store", &store, "--latest", "--create", "--target"])
        .arg(sqlite::url(&restored))
        .arg("-i")
        .arg(&key)
        .succeeds();
    assert_eq!(sqlite::contents(&restored), sqlite::contents(&db));
    server
        .tool("dbprune")
        .args(["--store", &store, "--keep-last", "1"])
        .succeeds();
    assert_eq!(server.artifact_keys(PREFIX), vec![artifacts[1].clone()]);
    // WAL: archived once, a repeated push answered "already archived",
    // other bytes under that name refused, the segment fetched back whole.
    let seg = s.write("seg", &"wal bytes ".repeat(100_000));
    let other = s.write("other", "other bytes");
    let name = "000000010000000000000001";
    let push = |path: &Path| {
        server
            .tool("walship")
            .arg("push")
            .arg(path)
            .args([name, "--to", &store, "--no-encrypt"])
    };
    push(&seg).succeeds();
    push(&seg).succeeds();
    push(&other).fails_with(1, "different contents");
    let back = s.path("back");
    assert_wal_fetches_as(server.tool("walship"), name, &store, &back, &seg);
}

/// Runs `scenario` against a GCS emulator, then against Azurite.
fn on_both_services(scenario: fn(&Scene, &CloudServer)) {
    let starts: [fn(&Scene) -> CloudServer; 2] =
        [CloudServer::start_gcs, CloudServer::start_azurite];
    for start in starts {
        let s = Scene::new();
        scenario(&s, &start(&s));
    }
}

#[test]
fn gcs_and_azure_stores_back_up_verify_list_restore_exactly_and_prune() {
    on_both_services(round_trip);
}

/// An artifact of several parts uploads through a connection cut in its
/// second part, and a download cut after 10 MiB resumes where it stopped:
/// the checksum still matches and the restore holds the source.
fn parts_and_resume(s: &Scene, server: &CloudServer) {
    let db = s.path("big.db");
    sqlite::blobs(&db, 20);
    let store = server.url(PREFIX);
    // The upload's connection is cut in its second part: the part is sent again.
    let upload = FaultProxy::start(server.port, Fault::DropAfter(12 << 20));
    server
        .tool_via("dbsnap", proxy_port(&upload))
        .arg(sqlite::url(&db))
        .args(["--to", &store, "--compress", "none", "--no-encrypt"])
        .succeeds()
        .stderr_has("retrying");
    assert_eq!(
        upload.stats.drops.load(std::sync::atomic::Ordering::SeqCst),
        1
    );
    // Only the cut part goes again (GCS: only what the session lacks), not
    // the whole upload: the cut came 4 MiB into the second 8 MiB part.
    let sent = upload
        .stats
        .client_bytes
        .load(std::sync::atomic::Ordering::SeqCst);
    let size = std::fs::metadata(&db).unwrap().len();
    assert!(sent < size + (6 << 20), "{sent} bytes sent for {size}");
    let artifact = &server.artifact_keys(PREFIX)[0];
    let proxy = FaultProxy::start(server.port, Fault::DropReplyAfter(10 << 20));
    server
        .tool_via("dbverify", proxy_port(&proxy))
        .args(["--store", &store, "--latest", "--level", "full"])
        .succeeds()
        .stderr_has("resuming");
    assert_eq!(
        proxy.stats.drops.load(std::sync::atomic::Ordering::SeqCst),
        1
    );
    let restored = s.path("restored.db");
    server
        .tool("dbrestore")
        .args(["--store", &store, "--latest", "--create", "--target"])
        .arg(sqlite::url(&restored))
        .succeeds();
    assert_eq!(
        sqlite::contents(&restored),
        sqlite::contents(&db),
        "{artifact}"
    );
}

fn proxy_port(proxy: &FaultProxy) -> u16 {
    let endpoint = proxy.endpoint();
    endpoint
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("a port")
}

#[test]
fn gcs_and_azure_upload_in_parts_through_a_cut_connection_and_resume_a_cut_download() {
    on_both_services(parts_and_resume);
}

fn never_in(run: &dbsafe_tests::Run, secrets: &[&str]) {
    for secret in secrets {
        assert!(
            !run.stderr().contains(secret) && !run.stdout().contains(secret),
            "{secret} leaked"
        );
    }
}

#[test]
fn gcs_tokens_from_a_service_account_key_and_the_metadata_server_reach_the_bucket_and_are_renewed()
{
    let s = Scene::new();
    let gcs = CloudServer::start_gcs(&s);
    // The key pair is made first; its public half checks every assertion.
    let (key_file, public) = service_account(&s, "backup", "http://127.0.0.1:1/token");
    // Tokens live a minute: within dbsafe's renewal margin, so each
    // request renews its token, as one near its expiry would be.
    let tokens = TokenServer::start(&s, &public.display().to_string(), 60, gcs.port);
    let mut sa: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&key_file).unwrap()).unwrap();
    sa["token_uri"] = format!("http://{}/token", tokens.host()).into();
    std::fs::write(&key_file, sa.to_string()).unwrap();
    let db = s.path("app.db");
    sqlite::sample(&db, 50);
    let store = gcs.url(PREFIX);
    let via_gate = |tool: &str| {
        gcs.bare_tool(tool)
            .env("DBSAFE_GCS_ENDPOINT", format!("http://{}", tokens.host()))
    };
    let run = via_gate("dbsnap")
        .env("GOOGLE_APPLICATION_CREDENTIALS", &key_file)
        .arg(sqlite::url(&db))
        .args(["--to", &store, "--no-encrypt"])
        .succeeds();
    let (issued, forwarded) = (tokens.count("google"), tokens.count("forwarded"));
    assert!(forwarded >= 3, "requests through the gate: {forwarded}");
    assert!(
        issued >= 2,
        "a token near its expiry is fetched again: {issued} issued"
    );
    let private = sa["private_key"]
        .as_str()
        .unwrap()
        .lines()
        .nth(1)
        .unwrap()
        .to_string();
    never_in(&run, &[&private, "tok-"]);
    assert_eq!(gcs.artifact_keys(PREFIX).len(), 1);

    // Tokens that live an hour are fetched once for all of a run's requests.
    let lasting = TokenServer::start(&s, &public.display().to_string(), 3600, gcs.port);
    sa["token_uri"] = format!("http://{}/token", lasting.host()).into();
    let lasting_key = s.write("lasting.json", &sa.to_string());
    dbsafe_tests::next_second();
    gcs.bare_tool("dbsnap")
        .env("DBSAFE_GCS_ENDPOINT", format!("http://{}", lasting.host()))
        .env("GOOGLE_APPLICATION_CREDENTIALS", &lasting_key)
        .arg(sqlite::url(&db))
        .args(["--to", &store, "--no-encrypt"])
        .succeeds();
    assert!(lasting.count("forwarded") >= 3);
    assert_eq!(lasting.count("google"), 1, "a valid token is cached");
    assert_eq!(gcs.artifact_keys(PREFIX).len(), 2);

    // The metadata server, as on a VM or with GKE workload identity.
    via_gate("dbverify")
        .env("GCE_METADATA_HOST", tokens.host())
        .args(["--store", &store, "--latest", "--level", "full"])
        .succeeds();
    assert!(tokens.count("metadata") >= 1);

    // A key the token endpoint does not know is refused, naming the
    // account: the configuration's error (exit 2), asked once, not retried.
    let (other, _) = service_account(&s, "stranger", &format!("http://{}/token", tokens.host()));
    let run = via_gate("dbverify")
        .env("GOOGLE_APPLICATION_CREDENTIALS", &other)
        .args(["--store", &store, "--latest"])
        .fails_with(2, "backup@dbsafe-test.iam.gserviceaccount.com");
    never_in(&run, &["BEGIN PRIVATE KEY"]);
    assert!(!run.stderr().contains("retrying"), "{}", run.stderr());
    assert_eq!(tokens.count("google-refused"), 1);
    // Without a token the gate refuses: the emulator is reached only with one.
    Cmd::new("python3")
        .arg("-c")
        .arg("import sys, urllib.request, urllib.error\ntry:\n urllib.request.urlopen(sys.argv[1])\nexcept urllib.error.HTTPError as e:\n sys.exit(0 if e.code == 401 else 1)\nsys.exit(1)")
        .arg(format!("http://{}/storage/v1/b/dbsafe/o", tokens.host()))
        .succeeds();
}

#[test]
fn azure_managed_and_workload_identity_tokens_reach_azurite_over_https() {
    let s = Scene::new();
    let azure = CloudServer::start_azurite_oauth(&s);
    let imds = TokenServer::start(&s, "/dev/null", 3600, azure.port);
    let db = s.path("app.db");
    sqlite::sample(&db, 50);
    let store = azure.url(PREFIX);
    let identity = |tool: &str| {
        azure
            .bare_tool(tool)
            .env_remove("AZURE_IMDS_DISABLED")
            .env("AZURE_STORAGE_ACCOUNT", dbsafe_tests::cloud::AZURE_ACCOUNT)
            .env("DBSAFE_AZURE_ENDPOINT", azure.endpoint())
            .env(
                "AZURE_POD_IDENTITY_AUTHORITY_HOST",
                format!("http://{}", imds.host()),
            )
    };
    identity("dbsnap")
        .arg(sqlite::url(&db))
        .args(["--to", &store, "--no-encrypt"])
        .succeeds();
    identity("dbverify")
        .args(["--store", &store, "--latest", "--level", "full"])
        .succeeds();
    assert!(imds.count("azure") >= 2, "one token per run");
    assert_eq!(azure.artifact_keys(PREFIX).len(), 1);
    // App Service / Container Apps: the identity endpoint and its secret header.
    identity("dbverify")
        .env(
            "IDENTITY_ENDPOINT",
            format!("http://{}/msi/token", imds.host()),
        )
        .env("IDENTITY_HEADER", "identity-secret")
        .args(["--store", &store, "--latest"])
        .succeeds();
    assert_eq!(imds.count("azure-app"), 1);
    // AKS workload identity: the federated token exchanged at the authority.
    let federated = s.write("federated-token", "federated-token\n");
    identity("dbverify")
        .env("AZURE_FEDERATED_TOKEN_FILE", &federated)
        .env("AZURE_TENANT_ID", "test-tenant")
        .env("AZURE_CLIENT_ID", "backup-client")
        .env("AZURE_AUTHORITY_HOST", format!("http://{}/", imds.host()))
        .args(["--store", &store, "--latest"])
        .succeeds();
    assert_eq!(imds.count("azure-workload"), 1);
    // A federated token the authority refuses: exit 2 at once, asked once.
    let workload = |token: &std::path::Path| {
        identity("dbverify")
            .env("AZURE_FEDERATED_TOKEN_FILE", token)
            .env("AZURE_TENANT_ID", "test-tenant")
            .env("AZURE_CLIENT_ID", "backup-client")
            .env("AZURE_AUTHORITY_HOST", format!("http://{}/", imds.host()))
            .args(["--store", &store, "--latest"])
    };
    let stale = s.write("stale-token", "stale-token\n");
    let run = workload(&stale).fails_with(2, "workload identity of client backup-client");
    never_in(&run, &["stale-token"]);
    assert!(!run.stderr().contains("retrying"), "{}", run.stderr());
    assert_eq!(imds.count("azure-workload-refused"), 1);
    // A federated token file that is not there: no request at all.
    workload(&s.path("no-such-token")).fails_with(2, "cannot read AZURE_FEDERATED_TOKEN_FILE");
    assert_eq!(imds.count("azure-workload-refused"), 1);
    assert_eq!(imds.count("azure-workload"), 1);
    // With the metadata service off and no key, nothing to sign with: exit 2.
    identity("dbverify")
        .env("AZURE_IMDS_DISABLED", "true")
        .args(["--store", &store, "--latest"])
        .fails_with(2, "no credentials for storage account devstoreaccount1");
    // A wrong account key is rejected by Azurite, named, never shown.
    let wrong = "d3Jvbmcga2V5IHdyb25nIGtleSB3cm9uZyBrZXk=";
    let run = azure
        .bare_tool("dbverify")
        .env("AZURE_STORAGE_ACCOUNT", dbsafe_tests::cloud::AZURE_ACCOUNT)
        .env("AZURE_STORAGE_KEY", wrong)
        .env("DBSAFE_AZURE_ENDPOINT", azure.endpoint())
        .args(["--store", &store, "--latest"])
        .fails_with(1, "rejected the key of storage account devstoreaccount1");
    never_in(&run, &[wrong]);
}

/// Two hosts (two lock directories) snapshot one series in one second into
/// Azure, so both pick one name; the second reaches the service through a
/// slower link and commits its blocks after the first. Azurite enforces
/// `If-None-Match: *` on the block list: the second is refused (exit 4) and
/// the first host's backup stays whole. (gcp-storage-emulator ignores
/// `ifGenerationMatch`, so this runs against Azure's emulator only.)
#[test]
fn two_hosts_writing_one_name_into_azure_never_overwrite_each_other() {
    let s = Scene::new();
    let azure = CloudServer::start_azurite(&s);
    let db = s.path("big.db");
    sqlite::blobs(&db, 12);
    let store = azure.url(PREFIX);
    let errs = two_hosts_snapshot_one_name(&s, azure.port, |proxy| {
        azure
            .tool_via("dbsnap", proxy_port(proxy))
            .arg(sqlite::url(&db))
            .args(["--to", &store, "--compress", "none", "--no-encrypt"])
    });
    assert_eq!(azure.artifact_keys(PREFIX).len(), 1, "{errs:?}");
    azure
        .tool("dbverify")
        .args(["--store", &store, "--all", "--level", "full"])
        .succeeds();
}

/// A dbsnap killed (SIGKILL) in the middle of an upload in parts leaves no
/// object under its name, nor a pointer to one; the next run succeeds.
fn killed_mid_upload(s: &Scene, server: &CloudServer) {
    let db = s.path("big.db");
    sqlite::blobs(&db, 20);
    let store = server.url(PREFIX);
    let slow = FaultProxy::slow(server.port, std::time::Duration::from_millis(2));
    let snap = |cmd: Cmd| {
        cmd.arg(sqlite::url(&db))
            .args(["--to", &store, "--compress", "none", "--no-encrypt"])
    };
    let mut child = snap(server.tool_via("dbsnap", proxy_port(&slow))).spawn();
    dbsafe_tests::wait_until(
        "the second part under way",
        std::time::Duration::from_secs(60),
        || {
            slow.stats
                .client_bytes
                .load(std::sync::atomic::Ordering::SeqCst)
                > 10 << 20
        },
    );
    dbsafe_tests::kill_and_reap(&mut child);
    assert_eq!(
        server.keys(&format!("{PREFIX}/backups")),
        Vec::<String>::new()
    );
    snap(server.tool("dbsnap")).succeeds();
    assert_eq!(server.artifact_keys(PREFIX).len(), 1);
    server
        .tool("dbverify")
        .args(["--store", &store, "--latest", "--level", "full"])
        .succeeds();
}

#[test]
fn gcs_and_azure_uploads_killed_midway_leave_no_object_and_the_next_run_succeeds() {
    on_both_services(killed_mid_upload);
}

/// A store whose bucket is not there is an error (255 for PostgreSQL's
/// restore_command), never "not archived" (1, which ends a recovery), with
/// a prefix or without one; a segment missing from a bucket that is there
/// is 1.
fn a_missing_bucket_is_never_an_empty_archive(s: &Scene, server: &CloudServer) {
    let wanted = "000000010000000000000001";
    let fetch = |store: &str| {
        server
            .tool("walship")
            .args(["fetch", wanted])
            .arg(s.path("segment"))
            .args(["--from", store])
    };
    let scheme = &server.url("")[..5];
    for store in [
        format!("{scheme}no-such-bucket"),
        format!("{scheme}no-such-bucket/wal"),
    ] {
        fetch(&store).fails_with_code(255);
    }
    let bucket = server.url("");
    fetch(bucket.trim_end_matches('/')).fails_with_code(1);
    assert!(!s.path("segment").exists());
}

#[test]
fn gcs_and_azure_buckets_that_are_not_there_are_errors_never_empty_archives() {
    on_both_services(a_missing_bucket_is_never_an_empty_archive);
}
