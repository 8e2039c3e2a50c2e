//! Google Cloud Storage and Azure Blob emulators per test, on free
//! 127.0.0.1 ports, each with an empty bucket or container [`BUCKET`]:
//! `gcp-storage-emulator` (PyPI; run threaded, as the real service answers
//! requests at once) and Azurite (npm), storing into the test's directory.
//!
//! [`TokenServer`] stands in for the platforms' token services: Google's
//! token endpoint (it checks the service account's RS256 signature with
//! openssl), the GCE metadata server, and Azure's instance metadata
//! service. In front of the GCS emulator it is also a gate that forwards
//! only requests bearing a token it issued. Azurite checks OAuth tokens
//! itself, over HTTPS ([`CloudServer::start_azurite_oauth`]).
//!
//! An independent Shared Key signer in Python ([`AZURE_CLIENT`]) creates
//! containers and lists blobs, so what the tests see of the store does not
//! come through dbsafe's own client.

use crate::s3::listening;
use crate::{require, Cmd, Scene};
use std::path::PathBuf;
use std::process::{Child, Command};

/// The bucket (GCS) or container (Azure) every emulator starts with.
pub const BUCKET: &str = "dbsafe";
/// Azurite's development account and its well-known key.
pub const AZURE_ACCOUNT: &str = "devstoreaccount1";
const AZURE_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

/// Creates a container (`create ENDPOINT CONTAINER`) or lists blob names
/// under a prefix (`list ENDPOINT CONTAINER PREFIX`), signing with Shared
/// Key; `SSL_CERT_FILE` is trusted for an https endpoint.
const AZURE_CLIENT: &str = r#"
import base64, hashlib, hmac, os, ssl, sys, urllib.parse, urllib.request, xml.etree.ElementTree as ET
from email.utils import formatdate
op, endpoint, container = sys.argv[1:4]
account, key = "devstoreaccount1", os.environ["AZURE_KEY"]
def call(method, query):
    date = formatdate(usegmt=True)
    path = urllib.parse.urlparse(endpoint).path + "/" + container
    canon = "".join("\n%s:%s" % (k, v) for k, v in sorted(query.items()))
    ctype = "application/octet-stream" if method == "PUT" else ""
    to_sign = "%s\n\n\n\n\n%s\n\n\n\n\n\n\nx-ms-date:%s\nx-ms-version:2021-12-02\n/%s%s%s" % (method, ctype, date, account, path, canon)
    sig = base64.b64encode(hmac.new(base64.b64decode(key), to_sign.encode(), hashlib.sha256).digest()).decode()
    headers = {"x-ms-date": date, "x-ms-version": "2021-12-02", "Authorization": "SharedKey %s:%s" % (account, sig)}
    if ctype:
        headers["Content-Type"] = ctype
    url = endpoint + "/" + container + "?" + urllib.parse.urlencode(query)
    ctx = ssl.create_default_context(cafile=os.environ.get("SSL_CERT_FILE") or None)
    req = urllib.request.Request(url, method=method, data=b"" if method == "PUT" else None, headers=headers)
    return urllib.request.urlopen(req, context=ctx).read()
if op == "create":
    call("PUT", {"restype": "container"})
else:
    marker = ""
    while True:
        q = {"restype": "container", "comp": "list", "prefix": sys.argv[4]}
        if marker:
            q["marker"] = marker
        root = ET.fromstring(call("GET", q).decode("utf-8-sig"))
        for name in root.iter("Name"):
            print(name.text)
        marker = root.findtext("NextMarker") or ""
        if not marker:
            break
"#;

/// A server process, killed when its owner is dropped.
struct KilledOnDrop(Child);

impl Drop for KilledOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Which emulator.
enum Kind {
    Gcs,
    Azurite,
}

/// A running emulator.
pub struct CloudServer {
    _child: KilledOnDrop,
    kind: Kind,
    /// Its port on 127.0.0.1.
    pub port: u16,
    /// `https` when Azurite checks OAuth tokens.
    scheme: &'static str,
    /// The certificate to trust over https.
    ca: Option<PathBuf>,
    home: PathBuf,
}

impl CloudServer {
    /// Starts `gcp-storage-emulator` with an empty bucket [`BUCKET`].
    pub fn start_gcs(scene: &Scene) -> CloudServer {
        require(
            "gcp-storage-emulator",
            "the GCS emulator: pip install gcp-storage-emulator",
        );
        let (child, port) = listening(scene, "gcs-emulator", |port| {
            let mut c = Command::new("python3");
            c.arg("-c")
                .arg(
                    "import sys, http.server as h; h.HTTPServer = h.ThreadingHTTPServer; \
                     from gcp_storage_emulator.__main__ import main; main()",
                )
                .args(["start", "--host", "127.0.0.1", "--port", &port.to_string()])
                .args(["--default-bucket", BUCKET, "--in-memory", "-q"]);
            c
        });
        CloudServer::new(scene, child, Kind::Gcs, port)
    }

    /// Starts Azurite's blob service with an empty container [`BUCKET`],
    /// checking Shared Key signatures.
    pub fn start_azurite(scene: &Scene) -> CloudServer {
        CloudServer::azurite(scene, &[], None)
    }

    /// Starts Azurite over HTTPS (certificate `cert`, key `key`), accepting
    /// OAuth tokens as well as Shared Key.
    pub fn start_azurite_oauth(scene: &Scene) -> CloudServer {
        let (ca, cert, key) = private_ca(scene);
        CloudServer::azurite(scene, &["--oauth", "basic"], Some((ca, cert, key)))
    }

    fn azurite(
        scene: &Scene,
        extra: &[&str],
        tls: Option<(PathBuf, PathBuf, PathBuf)>,
    ) -> CloudServer {
        let bin = require("azurite-blob", "Azurite: npm install -g azurite");
        let dir = scene.path("azurite");
        std::fs::create_dir_all(&dir).expect("azurite dir");
        let (child, port) = listening(scene, "azurite", |port| {
            let mut c = Command::new(&bin);
            c.args(["--blobHost", "127.0.0.1", "--blobPort", &port.to_string()])
                .args(["--silent", "--skipApiVersionCheck", "--disableTelemetry"])
                .arg("--location")
                .arg(&dir)
                .args(extra);
            if let Some((_, cert, key)) = &tls {
                c.arg("--cert").arg(cert).arg("--key").arg(key);
            }
            c
        });
        let mut server = CloudServer::new(scene, child, Kind::Azurite, port);
        if let Some((ca, _, _)) = tls {
            server.scheme = "https";
            server.ca = Some(ca);
        }
        server.azure_client("create", &[]).succeeds();
        server
    }

    fn new(scene: &Scene, child: Child, kind: Kind, port: u16) -> CloudServer {
        let home = scene.path("cloud-home");
        std::fs::create_dir_all(&home).expect("cloud home");
        CloudServer {
            _child: KilledOnDrop(child),
            kind,
            port,
            scheme: "http",
            ca: None,
            home,
        }
    }

    /// `http://127.0.0.1:PORT`, with Azurite's account path.
    pub fn endpoint(&self) -> String {
        self.endpoint_via(&format!("127.0.0.1:{}", self.port))
    }

    fn endpoint_via(&self, host: &str) -> String {
        match self.kind {
            Kind::Gcs => format!("http://{host}"),
            Kind::Azurite => format!("{}://{host}/{AZURE_ACCOUNT}", self.scheme),
        }
    }

    /// `gs://BUCKET/prefix` or `az://BUCKET/prefix`.
    pub fn url(&self, prefix: &str) -> String {
        match self.kind {
            Kind::Gcs => format!("gs://{BUCKET}/{prefix}"),
            Kind::Azurite => format!("az://{BUCKET}/{prefix}"),
        }
    }

    /// A dbsafe tool with no credentials or settings from the developer's
    /// environment, and locks and audit log inside the test's directory.
    pub fn bare_tool(&self, name: &str) -> Cmd {
        let mut cmd = Cmd::tool(name);
        for k in [
            "STORAGE_EMULATOR_HOST",
            "GOOGLE_APPLICATION_CREDENTIALS",
            "CLOUDSDK_CONFIG",
            "GCE_METADATA_HOST",
            "DBSAFE_GCS_ENDPOINT",
            "AZURE_STORAGE_CONNECTION_STRING",
            "AZURE_STORAGE_ACCOUNT",
            "AZURE_STORAGE_KEY",
            "AZURE_STORAGE_SAS_TOKEN",
            "AZURE_CLIENT_ID",
            "AZURE_TENANT_ID",
            "AZURE_FEDERATED_TOKEN_FILE",
            "IDENTITY_ENDPOINT",
            "IDENTITY_HEADER",
            "DBSAFE_AZURE_ENDPOINT",
        ] {
            cmd = cmd.env_remove(k);
        }
        if let Some(ca) = &self.ca {
            cmd = cmd.env("SSL_CERT_FILE", ca);
        }
        cmd.env("HOME", &self.home)
            .env("XDG_RUNTIME_DIR", &self.home)
            .env("DBSAFE_AUDIT_LOG", self.home.join("audit.log"))
            .env("AZURE_IMDS_DISABLED", "true")
    }

    /// A dbsafe tool that reaches the emulator with its development
    /// credentials (none for GCS, the connection string for Azurite).
    pub fn tool(&self, name: &str) -> Cmd {
        self.tool_via(name, self.port)
    }

    /// [`CloudServer::tool`] through another port on 127.0.0.1 (a proxy).
    pub fn tool_via(&self, name: &str, port: u16) -> Cmd {
        let host = format!("127.0.0.1:{port}");
        match self.kind {
            Kind::Gcs => self.bare_tool(name).env("STORAGE_EMULATOR_HOST", host),
            Kind::Azurite => self.bare_tool(name).env(
                "AZURE_STORAGE_CONNECTION_STRING",
                format!(
                    "DefaultEndpointsProtocol={};AccountName={AZURE_ACCOUNT};AccountKey={AZURE_KEY};BlobEndpoint={};",
                    self.scheme,
                    self.endpoint_via(&host)
                ),
            ),
        }
    }

    fn azure_client(&self, op: &str, rest: &[&str]) -> Cmd {
        let cmd = Cmd::new("python3")
            .arg("-c")
            .arg(AZURE_CLIENT)
            .args([op, &self.endpoint(), BUCKET])
            .args(rest)
            .env("AZURE_KEY", AZURE_KEY);
        match &self.ca {
            Some(ca) => cmd.env("SSL_CERT_FILE", ca),
            None => cmd.env_remove("SSL_CERT_FILE"),
        }
    }

    /// The backup artifacts under `prefix/backups`, sidecars left out.
    pub fn artifact_keys(&self, prefix: &str) -> Vec<String> {
        self.keys(&format!("{prefix}/backups"))
            .into_iter()
            .filter(|k| crate::is_artifact(k))
            .collect()
    }

    /// Every object name under `prefix/`, sorted, as the emulator lists it.
    pub fn keys(&self, prefix: &str) -> Vec<String> {
        let out = match self.kind {
            Kind::Gcs => Cmd::new("python3")
                .arg("-c")
                .arg(
                    "import json, sys, urllib.request; \
                     d = json.load(urllib.request.urlopen(sys.argv[1])); \
                     print('\\n'.join(o['name'] for o in d.get('items', [])))",
                )
                .arg(format!(
                    "{}/storage/v1/b/{BUCKET}/o?prefix={prefix}/",
                    self.endpoint()
                ))
                .succeeds()
                .stdout(),
            Kind::Azurite => self
                .azure_client("list", &[&format!("{prefix}/")])
                .succeeds()
                .stdout(),
        };
        let mut keys: Vec<String> = out
            .lines()
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect();
        keys.sort();
        keys
    }
}

/// Google's token endpoint, the GCE metadata server and Azure's instance
/// metadata service on one loopback port, handing out tokens valid
/// `lifetime` seconds; and a gate that forwards other requests to
/// `upstream` only with a token it issued (401 otherwise).
pub struct TokenServer {
    _child: KilledOnDrop,
    /// Its port on 127.0.0.1.
    pub port: u16,
    log: PathBuf,
}

const TOKEN_SERVER: &str = r#"
import base64, datetime, http.client, http.server, json, secrets, subprocess, sys, tempfile, time
pubkey, lifetime, log, upstream, port = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
issued = set()
def refused(kind):
    with open(log, "a") as f:
        f.write(kind + "-refused\n")
def b64d(s):
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))
def issue(kind, token=None):
    token = token or "tok-" + secrets.token_hex(8)
    issued.add(token)
    with open(log, "a") as f:
        f.write(kind + "\n")
    return token
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *a):
        pass
    def reply(self, code, body, ctype="application/json", headers=()):
        b = body.encode() if isinstance(body, str) else body
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(b)))
        for k, v in headers:
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(b)
    def token_reply(self, token):
        self.reply(200, json.dumps({"access_token": token, "expires_in": lifetime, "token_type": "Bearer"}))
    def body(self):
        return self.rfile.read(int(self.headers.get("Content-Length", "0")))
    def google_token(self):
        form = dict(p.split("=", 1) for p in self.body().decode().split("&") if "=" in p)
        assertion = form.get("assertion", "")
        if form.get("grant_type") != "urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer" or assertion.count(".") != 2:
            return self.reply(400, '{"error":"invalid_grant"}')
        head, claims, sig = assertion.split(".")
        with tempfile.NamedTemporaryFile() as d, tempfile.NamedTemporaryFile() as s:
            d.write((head + "." + claims).encode()); d.flush()
            s.write(b64d(sig)); s.flush()
            ok = subprocess.run(["openssl", "dgst", "-sha256", "-verify", pubkey, "-signature", s.name, d.name], capture_output=True).returncode == 0
        c = json.loads(b64d(claims))
        if not ok or "devstorage" not in c.get("scope", "") or c.get("exp", 0) < time.time():
            refused("google")
            return self.reply(400, '{"error":"invalid_grant","error_description":"Invalid JWT Signature."}')
        self.token_reply(issue("google"))
    def azure_reply(self, kind):
        now = int(time.time())
        claims = {"aud": "https://storage.azure.com", "iss": "https://sts.windows.net/00000000-0000-0000-0000-000000000000/",
                  "nbf": now - 60, "iat": now - 60, "exp": now + lifetime, "oid": "dbsafe-test"}
        enc = lambda o: base64.urlsafe_b64encode(json.dumps(o).encode()).decode().rstrip("=")
        token = enc({"alg": "RS256", "typ": "JWT"}) + "." + enc(claims) + "." + enc({"sig": secrets.token_hex(8)})
        self.reply(200, json.dumps({"access_token": issue(kind, token), "expires_in": str(lifetime),
                                    "resource": "https://storage.azure.com/", "token_type": "Bearer"}))
    def azure_token(self):
        # The instance metadata service (Metadata: true), or App Service's
        # identity endpoint (its secret header).
        if "resource=https%3A%2F%2Fstorage.azure.com%2F" not in self.path:
            return self.reply(400, '{"error":"invalid_request"}')
        if self.path.startswith("/metadata/identity/oauth2/token") and self.headers.get("Metadata") == "true":
            return self.azure_reply("azure")
        if self.path.startswith("/msi/token") and self.headers.get("X-IDENTITY-HEADER") == "identity-secret":
            return self.azure_reply("azure-app")
        self.reply(400, '{"error":"invalid_request"}')
    def azure_workload(self):
        # AKS workload identity: the federated token file's contents must arrive.
        form = dict(p.split("=", 1) for p in self.body().decode().split("&") if "=" in p)
        if form.get("client_assertion") != "federated-token" or form.get("client_id") != "backup-client":
            refused("azure-workload")
            return self.reply(401, '{"error":"invalid_client"}')
        self.azure_reply("azure-workload")
    def forward(self, method):
        auth = self.headers.get("Authorization", "")
        if not auth.startswith("Bearer ") or auth[7:] not in issued:
            self.body()
            return self.reply(401, '{"error":{"code":401,"message":"Invalid Credentials","errors":[{"reason":"authError"}]}}')
        with open(log, "a") as f:
            f.write("forwarded\n")
        conn = http.client.HTTPConnection("127.0.0.1", upstream, timeout=60)
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("authorization", "host")}
        conn.request(method, self.path, body=self.body() if method in ("POST", "PUT") else None, headers=headers)
        r = conn.getresponse()
        data = r.read()
        self.send_response(r.status)
        for k, v in r.getheaders():
            if k.lower() not in ("content-length", "transfer-encoding", "connection", "location"):
                self.send_header(k, v)
            if k.lower() == "location":
                self.send_header(k, v.replace("127.0.0.1:%d" % upstream, "127.0.0.1:%d" % port))
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
    def do_POST(self):
        if self.path == "/token":
            return self.google_token()
        if self.path == "/test-tenant/oauth2/v2.0/token":
            return self.azure_workload()
        self.forward("POST")
    def do_PUT(self):
        self.forward("PUT")
    def do_DELETE(self):
        self.forward("DELETE")
    def do_GET(self):
        if self.path == "/computeMetadata/v1/instance/service-accounts/default/token":
            if self.headers.get("Metadata-Flavor") != "Google":
                return self.reply(403, "")
            return self.token_reply(issue("metadata"))
        if self.path.startswith(("/metadata/identity/oauth2/token", "/msi/token")):
            return self.azure_token()
        self.forward("GET")
http.server.ThreadingHTTPServer(("127.0.0.1", port), H).serve_forever()
"#;

impl TokenServer {
    /// Starts it: `public_key` (PEM) checks service-account assertions,
    /// tokens live `lifetime` seconds, requests with one go on to `upstream`.
    pub fn start(scene: &Scene, public_key: &str, lifetime: u32, upstream: u16) -> TokenServer {
        require("openssl", "openssl: apt-get install openssl");
        // Its own log: a test may run several.
        let log = scene.path(&format!("tokens-{:x}.log", crate::rand_u64()));
        let (child, port) = listening(scene, "token-server", |port| {
            let mut c = Command::new("python3");
            c.arg("-c")
                .arg(TOKEN_SERVER)
                .args([public_key, &lifetime.to_string()])
                .arg(&log)
                .args([upstream.to_string(), port.to_string()]);
            c
        });
        TokenServer {
            _child: KilledOnDrop(child),
            port,
            log,
        }
    }

    /// `127.0.0.1:PORT`.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// How many lines of the log are `what`: tokens issued (`google`,
    /// `metadata`, `azure`, `azure-app`, `azure-workload`), token requests
    /// refused (`google-refused`, `azure-workload-refused`) or requests
    /// forwarded (`forwarded`).
    pub fn count(&self, what: &str) -> usize {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter(|l| *l == what)
            .count()
    }
}

/// A fresh RSA key pair `name` and a service-account key file for it whose
/// `token_uri` is `token_uri`: (key file, public key PEM).
pub fn service_account(scene: &Scene, name: &str, token_uri: &str) -> (PathBuf, PathBuf) {
    let private = scene.path(&format!("{name}-key.pem"));
    let public = scene.path(&format!("{name}-pub.pem"));
    Cmd::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
        ])
        .arg(&private)
        .succeeds();
    Cmd::new("openssl")
        .args(["pkey", "-pubout", "-in"])
        .arg(&private)
        .arg("-out")
        .arg(&public)
        .succeeds();
    let json = serde_json::json!({
        "type": "service_account",
        "project_id": "dbsafe-test",
        "private_key_id": "k1",
        "private_key": std::fs::read_to_string(&private).expect("private key"),
        "client_email": "backup@dbsafe-test.iam.gserviceaccount.com",
        "client_id": "1",
        "token_uri": token_uri,
    });
    let file = scene.write(&format!("{name}.json"), &json.to_string());
    (file, public)
}

/// A private CA in the scene's directory and a certificate it signed for
/// 127.0.0.1: (ca.pem, cert, key).
pub fn private_ca(s: &Scene) -> (PathBuf, PathBuf, PathBuf) {
    require("openssl", "the Debian package openssl");
    let openssl = |args: &[&str]| {
        Cmd::new("openssl")
            .args(args)
            .current_dir(s.path(""))
            .succeeds();
    };
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-subj",
        "/CN=dbsafe test CA",
        "-days",
        "2",
    ]);
    openssl(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "gw.key",
        "-out",
        "gw.csr",
        "-subj",
        "/CN=127.0.0.1",
    ]);
    s.write("gw.ext", "subjectAltName=IP:127.0.0.1\n");
    openssl(&[
        "x509",
        "-req",
        "-in",
        "gw.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "gw.pem",
        "-days",
        "2",
        "-extfile",
        "gw.ext",
    ]);
    (s.path("ca.pem"), s.path("gw.pem"), s.path("gw.key"))
}
