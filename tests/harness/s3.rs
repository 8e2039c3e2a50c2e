//! A real S3 server per test: `s3s-fs` (which verifies SigV4) on a free
//! 127.0.0.1 port, storing into the test's own directory, with its own
//! credentials; stopped when dropped.
//!
//! `server.tool("dbsnap")` is a dbsafe command with the environment that
//! reaches the server (endpoint, credentials, path style), and nothing from
//! the developer's own AWS configuration; `server.aws()` is the aws CLI
//! with the same.

use crate::{require, Cmd, Scene};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The bucket every test server starts with.
pub const BUCKET: &str = "dbsafe";

/// Starts the server `command(port)` makes on a free port and waits until
/// it listens; another test may take the port between the probe and the
/// bind, so a server that exits early is tried again on another.
pub(crate) fn listening(
    scene: &Scene,
    name: &str,
    command: impl Fn(u16) -> Command,
) -> (Child, u16) {
    let mut last_log = String::new();
    for _ in 0..5 {
        let port = crate::free_port();
        let log = scene.path(&format!("{name}-{port}.log"));
        let mut child = command(port)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log).expect("log"))
            .stderr(std::fs::File::create(&log).expect("log"))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        let mut up = false;
        crate::poll_until(Duration::from_secs(30), || {
            up = TcpStream::connect(("127.0.0.1", port)).is_ok();
            up || child.try_wait().ok().flatten().is_some()
        });
        if up {
            return (child, port);
        }
        crate::kill_and_reap(&mut child);
        last_log = std::fs::read_to_string(&log).unwrap_or_default();
    }
    panic!("{name} did not start:\n{last_log}");
}

/// A running S3 server: s3s-fs, or moto's (the second implementation).
pub struct S3Server {
    child: Child,
    /// moto keeps its objects in memory: keys are listed through the API.
    moto: bool,
    /// Where s3s-fs keeps the buckets (`root/BUCKET/KEY`) and its upload state.
    pub root: PathBuf,
    /// Its port on 127.0.0.1.
    pub port: u16,
    /// The access key id it accepts.
    pub access_key: String,
    /// The secret key it accepts.
    pub secret_key: String,
    home: PathBuf,
}

/// A test's directory with an s3s-fs server in it, for tests that need
/// nothing else first. Bound as `let (s, server)`, the server is dropped
/// (stopped) before the directory is removed.
pub fn scene() -> (Scene, S3Server) {
    let s = Scene::new();
    let server = S3Server::start(&s);
    (s, server)
}

impl S3Server {
    /// Starts s3s-fs in `scene`'s directory with an empty bucket [`BUCKET`].
    pub fn start(scene: &Scene) -> S3Server {
        let bin = require(
            "s3s-fs",
            "s3s-fs: cargo install s3s-fs --version 0.14.1 --features binary --locked",
        );
        let root = scene.path("s3");
        std::fs::create_dir_all(root.join(BUCKET)).expect("s3 root");
        let home = scene.path("s3-home");
        std::fs::create_dir_all(&home).expect("s3 home");
        let access_key = format!("DBSAFETEST{:08X}", (crate::rand_u64() as u32));
        let secret_key = format!(
            "secret-{:016x}{:016x}",
            crate::rand_u64(),
            crate::rand_u64()
        );
        let (child, port) = listening(scene, "s3s-fs", |port| {
            let mut c = Command::new(&bin);
            c.args(["--host", "127.0.0.1", "--port", &port.to_string()])
                .args(["--access-key", &access_key, "--secret-key", &secret_key])
                .arg(&root);
            c
        });
        S3Server {
            child,
            moto: false,
            root,
            port,
            access_key,
            secret_key,
            home,
        }
    }

    /// Starts moto's S3 server (`moto_server`, from PyPI), a second S3
    /// implementation with conditional writes, with an empty bucket [`BUCKET`].
    pub fn start_moto(scene: &Scene) -> S3Server {
        let bin = require("moto_server", "moto's server: pip install 'moto[server]'");
        let home = scene.path("s3-home");
        std::fs::create_dir_all(&home).expect("s3 home");
        let (child, port) = listening(scene, "moto_server", |port| {
            let mut c = Command::new(&bin);
            c.args(["-H", "127.0.0.1", "-p", &port.to_string()]);
            c
        });
        let server = S3Server {
            child,
            moto: true,
            root: scene.path("moto-has-no-files"),
            port,
            access_key: "dbsafe-moto".into(),
            secret_key: format!("secret-{:016x}", crate::rand_u64()),
            home,
        };
        server
            .aws()
            .args(["s3api", "create-bucket", "--bucket", BUCKET])
            .succeeds();
        server
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// `s3://BUCKET/prefix`.
    pub fn url(&self, prefix: &str) -> String {
        format!("s3://{BUCKET}/{prefix}")
    }

    /// The environment that reaches this server through `endpoint`.
    pub fn env_via(&self, endpoint: &str) -> Vec<(String, String)> {
        let none = self.home.join("none");
        [
            ("AWS_ENDPOINT_URL", endpoint.to_string()),
            ("AWS_ACCESS_KEY_ID", self.access_key.clone()),
            ("AWS_SECRET_ACCESS_KEY", self.secret_key.clone()),
            ("AWS_REGION", "us-east-1".into()),
            ("AWS_DEFAULT_REGION", "us-east-1".into()),
            ("DBSAFE_S3_PATH_STYLE", "1".into()),
            ("AWS_CONFIG_FILE", none.display().to_string()),
            ("AWS_SHARED_CREDENTIALS_FILE", none.display().to_string()),
            ("AWS_EC2_METADATA_DISABLED", "true".into()),
            // Locks and the audit log stay inside the test's directory.
            ("XDG_RUNTIME_DIR", self.home.display().to_string()),
            (
                "DBSAFE_AUDIT_LOG",
                self.home.join("audit.log").display().to_string(),
            ),
            ("HOME", self.home.display().to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    /// Applies [`S3Server::env_via`] to a command, removing what could leak in.
    pub fn apply(&self, cmd: Cmd, endpoint: &str) -> Cmd {
        let mut cmd = cmd;
        for k in [
            "AWS_PROFILE",
            "AWS_DEFAULT_PROFILE",
            "AWS_SESSION_TOKEN",
            "AWS_ENDPOINT_URL_S3",
            "DBSAFE_S3_PART_SIZE",
            "DBSAFE_S3_PARTS_IN_FLIGHT",
            "DBSAFE_S3_RETRIES",
            "DBSAFE_S3_TIMEOUT",
        ] {
            cmd = cmd.env_remove(k);
        }
        for (k, v) in self.env_via(endpoint) {
            cmd = cmd.env(k, v);
        }
        cmd
    }

    /// A dbsafe tool that talks to this server.
    pub fn tool(&self, name: &str) -> Cmd {
        self.apply(Cmd::tool(name), &self.endpoint())
    }

    /// A dbsafe tool that talks to this server through another endpoint (a proxy).
    pub fn tool_via(&self, name: &str, endpoint: &str) -> Cmd {
        self.apply(Cmd::tool(name), endpoint)
    }

    /// The aws CLI, talking to this server.
    pub fn aws(&self) -> Cmd {
        require("aws", "the aws CLI: pip install awscli");
        self.apply(Cmd::new("aws"), &self.endpoint())
            .args(["--endpoint-url", &self.endpoint()])
    }

    /// The file of an object, as s3s-fs stores it.
    pub fn object_path(&self, key: &str) -> PathBuf {
        self.root.join(BUCKET).join(key)
    }

    /// Every object key under `prefix/`, sorted: from s3s-fs's files, or
    /// listed through the API from moto.
    pub fn keys(&self, prefix: &str) -> Vec<String> {
        if self.moto {
            let out = self
                .aws()
                .args(["s3api", "list-objects-v2", "--bucket", BUCKET, "--prefix"])
                .arg(format!("{prefix}/"))
                .args(["--query", "Contents[].Key", "--output", "text"])
                .succeeds()
                .stdout();
            let mut keys: Vec<String> = out
                .split_whitespace()
                .filter(|k| *k != "None")
                .map(str::to_string)
                .collect();
            keys.sort();
            return keys;
        }
        crate::files_under(&self.root.join(BUCKET).join(prefix))
            .into_iter()
            .map(|k| format!("{prefix}/{k}"))
            .collect()
    }

    /// Ids of the multipart uploads s3s-fs holds open (it has no ListMultipartUploads).
    pub fn pending_uploads(&self) -> Vec<String> {
        let mut out: Vec<String> = std::fs::read_dir(&self.root)
            .map(|rd| {
                rd.flatten()
                    .filter_map(|e| {
                        let n = e.file_name().to_string_lossy().into_owned();
                        n.strip_prefix(".upload-")
                            .and_then(|n| n.strip_suffix(".json"))
                            .map(str::to_string)
                    })
                    .collect()
            })
            .unwrap_or_default();
        out.sort();
        out
    }

    /// Artifact keys (no sidecars, no pointers) under `prefix/backups`.
    pub fn artifact_keys(&self, prefix: &str) -> Vec<String> {
        self.keys(&format!("{prefix}/backups"))
            .into_iter()
            .filter(|k| crate::is_artifact(k))
            .collect()
    }

    /// Parts s3s-fs holds for open uploads.
    pub fn pending_parts(&self) -> Vec<String> {
        std::fs::read_dir(&self.root)
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n.starts_with(".upload_id-"))
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        crate::kill_and_reap(&mut self.child);
    }
}

/// A local EC2 instance metadata service (IMDSv2: a session token first,
/// then the role's temporary credentials), serving `key`/`secret` with a
/// fresh session token and an expiry `lifetime` seconds ahead at each fetch.
/// The same server answers as a container credentials endpoint
/// (`/ecs/credentials`, authorization `container-token`) and as STS
/// (`AssumeRoleWithWebIdentity` with the token `web-identity-token`).
pub struct MetadataEndpoint {
    child: Child,
    port: u16,
    log: PathBuf,
}

const METADATA_SERVER: &str = r#"
import datetime, http.server, json, secrets, sys
key, secret, lifetime, log, port = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], int(sys.argv[5])
tokens = set()
def refused():
    with open(log, "a") as f:
        f.write("refused\n")
def credentials():
    exp = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=lifetime)
    with open(log, "a") as f:
        f.write(exp.isoformat() + "\n")
    return key, secret, "session-" + secrets.token_hex(4), exp.strftime("%Y-%m-%dT%H:%M:%SZ")
class H(http.server.BaseHTTPRequestHandler):
    def log_message(self, *a):
        pass
    def reply(self, code, body, ctype="text/plain"):
        b = body.encode()
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(b)))
        self.end_headers()
        self.wfile.write(b)
    def do_POST(self):
        # STS AssumeRoleWithWebIdentity: the token file's contents must arrive.
        body = self.rfile.read(int(self.headers.get("Content-Length", "0"))).decode()
        form = dict(p.split("=", 1) for p in body.split("&") if "=" in p)
        if form.get("Action") != "AssumeRoleWithWebIdentity" or form.get("WebIdentityToken") != "web-identity-token":
            refused()
            return self.reply(403, "<ErrorResponse/>", "text/xml")
        k, s, t, e = credentials()
        self.reply(200, "<AssumeRoleWithWebIdentityResponse><AssumeRoleWithWebIdentityResult><Credentials>"
            f"<AccessKeyId>{k}</AccessKeyId><SecretAccessKey>{s}</SecretAccessKey><SessionToken>{t}</SessionToken>"
            f"<Expiration>{e}</Expiration></Credentials></AssumeRoleWithWebIdentityResult></AssumeRoleWithWebIdentityResponse>", "text/xml")
    def do_PUT(self):
        if self.path != "/latest/api/token" or not self.headers.get("X-aws-ec2-metadata-token-ttl-seconds"):
            return self.reply(400, "")
        t = secrets.token_hex(8)
        tokens.add(t)
        self.reply(200, t)
    def do_GET(self):
        if self.path == "/ecs/credentials":
            # Container credentials: the authorization token must arrive.
            if self.headers.get("Authorization") != "container-token":
                refused()
                return self.reply(401, "")
            k, s, t, e = credentials()
            return self.reply(200, json.dumps({"AccessKeyId": k, "SecretAccessKey": s, "Token": t, "Expiration": e}), "application/json")
        if self.headers.get("X-aws-ec2-metadata-token") not in tokens:
            return self.reply(401, "")
        base = "/latest/meta-data/iam/security-credentials/"
        if self.path == base:
            return self.reply(200, "dbsafe-role")
        if self.path == base + "dbsafe-role":
            k, s, t, e = credentials()
            return self.reply(200, json.dumps({"Code": "Success", "AccessKeyId": k, "SecretAccessKey": s,
                "Token": t, "Expiration": e}), "application/json")
        self.reply(404, "")
http.server.ThreadingHTTPServer(("127.0.0.1", port), H).serve_forever()
"#;

impl MetadataEndpoint {
    /// Starts it on loopback in `scene`'s directory.
    pub fn start(scene: &Scene, key: &str, secret: &str, lifetime: u32) -> MetadataEndpoint {
        let log = scene.path("imds-fetches.log");
        let (child, port) = listening(scene, "imds", |port| {
            let mut c = Command::new("python3");
            c.arg("-c")
                .arg(METADATA_SERVER)
                .args([key, secret, &lifetime.to_string()])
                .arg(&log)
                .arg(port.to_string());
            c
        });
        MetadataEndpoint { child, port, log }
    }

    /// `http://127.0.0.1:PORT`, for `AWS_EC2_METADATA_SERVICE_ENDPOINT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// How many times credentials were fetched.
    pub fn fetches(&self) -> usize {
        self.logged().iter().filter(|l| *l != "refused").count()
    }

    /// How many requests for credentials were refused (a wrong container
    /// or web identity token).
    pub fn refusals(&self) -> usize {
        self.logged().iter().filter(|l| *l == "refused").count()
    }

    fn logged(&self) -> Vec<String> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }
}

impl Drop for MetadataEndpoint {
    fn drop(&mut self) {
        crate::kill_and_reap(&mut self.child);
    }
}
