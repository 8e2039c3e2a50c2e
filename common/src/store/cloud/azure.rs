//! Azure Blob Storage over its REST API.
//!
//! Small objects are one Put Blob; larger ones are staged as blocks (Put
//! Block, ids unique to the upload, so two writers of one name never mix
//! their blocks) and appear only with Put Block List. A create-only write
//! sends `If-None-Match: *`; a resumed download `If-Match` of the ETag it
//! started with. Staged blocks cannot be removed by a client: the service
//! discards those never committed after a week.
//!
//! Credentials as the Azure CLI and SDKs take them:
//! `AZURE_STORAGE_CONNECTION_STRING` (account and key, a SAS, a blob
//! endpoint, or `UseDevelopmentStorage=true` for Azurite); or
//! `AZURE_STORAGE_ACCOUNT` with `AZURE_STORAGE_KEY`, with
//! `AZURE_STORAGE_SAS_TOKEN`, or with neither, a managed or workload
//! identity ([`super::auth`]). `DBSAFE_AZURE_ENDPOINT` names another blob
//! endpoint (sovereign clouds, private endpoints, tests).

use super::auth::{Source, Tokens};
use super::{
    encode, encode_path, found, object_url, plain_error, send, Chunk, Failure, Op, ReadFrom,
    Service,
};
use crate::error::{Error, Result};
use crate::store::ObjectInfo;
use chrono::{DateTime, Utc};
use serde::Deserialize;

/// The REST API version spoken.
const VERSION: &str = "2021-12-02";
/// Azurite's well-known development account and key.
const DEV_ACCOUNT: &str = "devstoreaccount1";
const DEV_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

/// How requests prove who sends them.
enum Auth {
    /// The account key: each request signed (Shared Key).
    SharedKey(Vec<u8>),
    /// A shared access signature, appended to every URL.
    Sas(String),
    /// OAuth tokens of a managed or workload identity.
    Bearer(Box<Tokens>),
}

/// A container in Azure Blob Storage.
pub(super) struct Azure {
    agent: ureq::Agent,
    account: String,
    /// The blob endpoint, without a trailing slash (Azurite's holds the account).
    endpoint: String,
    container: String,
    auth: Auth,
}

impl Azure {
    /// The container `container` with the account and credentials the environment gives.
    pub fn from_env(container: &str, var: &dyn Fn(&str) -> Option<String>) -> Result<Azure> {
        let agent = super::agent()?;
        let (account, endpoint, auth) = match var("AZURE_STORAGE_CONNECTION_STRING") {
            Some(cs) => from_connection_string(&cs)?,
            None => {
                let account = var("AZURE_STORAGE_ACCOUNT").ok_or_else(|| {
                    Error::usage("an az:// store needs AZURE_STORAGE_CONNECTION_STRING or AZURE_STORAGE_ACCOUNT")
                        .hint("set the account (and AZURE_STORAGE_KEY or AZURE_STORAGE_SAS_TOKEN, or run with a managed identity)")
                })?;
                let auth = if let Some(key) = var("AZURE_STORAGE_KEY") {
                    Auth::SharedKey(account_key(&key)?)
                } else if let Some(sas) = var("AZURE_STORAGE_SAS_TOKEN") {
                    Auth::Sas(sas.trim_start_matches('?').to_string())
                } else {
                    let source = Source::azure(var).ok_or_else(|| {
                        Error::usage(format!(
                            "no credentials for storage account {account}: AZURE_IMDS_DISABLED is set and neither AZURE_STORAGE_KEY nor AZURE_STORAGE_SAS_TOKEN is"
                        ))
                    })?;
                    Auth::Bearer(Box::new(Tokens::new(source, agent.clone())))
                };
                let endpoint = format!("https://{account}.blob.core.windows.net");
                (account, endpoint, auth)
            }
        };
        let endpoint = var("DBSAFE_AZURE_ENDPOINT").unwrap_or(endpoint);
        Ok(Azure {
            agent,
            account,
            endpoint: endpoint.trim_end_matches('/').to_string(),
            container: container.to_string(),
            auth,
        })
    }

    /// A signed request to `path` under the container (`""`: the container
    /// itself) with `query` and `headers`, its body `len` bytes long.
    fn request(
        &self,
        method: &str,
        blob: Option<&str>,
        query: &[(&str, &str)],
        headers: &[(&str, &str)],
        len: usize,
    ) -> std::result::Result<ureq::Request, Failure> {
        let mut path = format!("{}/{}", url_path(&self.endpoint), encode(&self.container));
        if let Some(b) = blob {
            path.push('/');
            path.push_str(&encode_path(b));
        }
        let mut q: Vec<String> = query
            .iter()
            .map(|(k, v)| format!("{k}={}", encode(v)))
            .collect();
        if let Auth::Sas(sas) = &self.auth {
            q.push(sas.clone());
        }
        let base = &self.endpoint[..self.endpoint.len() - url_path(&self.endpoint).len()];
        let url = if q.is_empty() {
            format!("{base}{path}")
        } else {
            format!("{base}{path}?{}", q.join("&"))
        };
        let date = Utc::now().format("%a, %d %b %Y %H:%M:%S GMT").to_string();
        let mut all: Vec<(&str, &str)> = vec![("x-ms-date", &date), ("x-ms-version", VERSION)];
        all.extend_from_slice(headers);
        let mut req = self.agent.request(method, &url);
        for (k, v) in &all {
            req = req.set(k, v);
        }
        Ok(match &self.auth {
            Auth::SharedKey(key) => {
                let to_sign = string_to_sign(method, &self.account, &path, query, &all, len);
                req.set(
                    "Authorization",
                    &format!("SharedKey {}:{}", self.account, sign(key, &to_sign)),
                )
            }
            Auth::Sas(_) => req,
            Auth::Bearer(t) => req.set("Authorization", &format!("Bearer {}", t.current()?)),
        })
    }

    /// Put Block List of the blocks `0..count` of `upload`.
    fn block_id(upload: &str, number: u32) -> String {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(format!("{upload}-{number:06}"))
    }

    /// Whether an error code says the credentials themselves were refused.
    /// With the account key, which may do anything in its account, a
    /// refused authorization is a refused key too.
    fn rejects_credentials(&self, code: &str) -> bool {
        matches!(code, "AuthenticationFailed" | "InvalidAuthenticationInfo")
            || (code == "AuthorizationFailure" && matches!(self.auth, Auth::SharedKey(_)))
    }

    fn who(&self) -> String {
        match &self.auth {
            Auth::SharedKey(_) => format!("the key of storage account {}", self.account),
            Auth::Sas(_) => format!("the SAS token for storage account {}", self.account),
            Auth::Bearer(t) => t.describe(),
        }
    }
}

/// The path of a URL (`/devstoreaccount1` for Azurite, `` for Azure).
fn url_path(endpoint: &str) -> &str {
    let after_scheme = endpoint.split_once("://").map_or(endpoint, |(_, r)| r);
    after_scheme.find('/').map_or("", |i| &after_scheme[i..])
}

fn account_key(key: &str) -> Result<Vec<u8>> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(key.trim())
        .map_err(|_| Error::usage("the storage account key is not base64"))
}

/// Account, blob endpoint and credentials of a connection string.
fn from_connection_string(cs: &str) -> Result<(String, String, Auth)> {
    let fields: Vec<(String, String)> = cs
        .split(';')
        .filter_map(|f| f.split_once('='))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let get = |k: &str| fields.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    if get("usedevelopmentstorage").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
        return Ok((
            DEV_ACCOUNT.into(),
            format!("http://127.0.0.1:10000/{DEV_ACCOUNT}"),
            Auth::SharedKey(account_key(DEV_KEY)?),
        ));
    }
    let bad = |what: &str| {
        Error::usage(format!("AZURE_STORAGE_CONNECTION_STRING has no {what}"))
            .hint("copy it from the portal: Storage account > Access keys > Connection string")
    };
    let endpoint = get("blobendpoint");
    let account = match get("accountname") {
        Some(a) => a,
        // A SAS connection string may name only its endpoint.
        None => endpoint
            .as_deref()
            .and_then(|e| e.split_once("://"))
            .and_then(|(_, host)| host.split('.').next())
            .map(str::to_string)
            .ok_or_else(|| bad("AccountName"))?,
    };
    let endpoint = endpoint.unwrap_or_else(|| {
        format!(
            "{}://{account}.blob.{}",
            get("defaultendpointsprotocol").unwrap_or_else(|| "https".into()),
            get("endpointsuffix").unwrap_or_else(|| "core.windows.net".into())
        )
    });
    let auth = match (get("accountkey"), get("sharedaccesssignature")) {
        (Some(key), _) => Auth::SharedKey(account_key(&key)?),
        (None, Some(sas)) => Auth::Sas(sas.trim_start_matches('?').to_string()),
        (None, None) => return Err(bad("AccountKey or SharedAccessSignature")),
    };
    Ok((account, endpoint, auth))
}

/// Shared Key's string to sign (version 2015-02-21 and later): the verb,
/// the standard headers in their order, the `x-ms-` headers sorted, and the
/// resource with its query parameters sorted.
fn string_to_sign(
    method: &str,
    account: &str,
    path: &str,
    query: &[(&str, &str)],
    headers: &[(&str, &str)],
    len: usize,
) -> String {
    let header = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map_or("", |(_, v)| v)
    };
    let length = if len == 0 {
        String::new()
    } else {
        len.to_string()
    };
    let mut s = format!("{method}\n\n\n{length}\n\n{}\n\n\n", header("content-type"));
    for h in ["if-match", "if-none-match", "if-unmodified-since", "range"] {
        s.push_str(header(h));
        s.push('\n');
    }
    let mut ms: Vec<(String, &str)> = headers
        .iter()
        .filter(|(k, _)| k.to_ascii_lowercase().starts_with("x-ms-"))
        .map(|(k, v)| (k.to_ascii_lowercase(), *v))
        .collect();
    ms.sort();
    for (k, v) in ms {
        s.push_str(&format!("{k}:{}\n", v.trim()));
    }
    s.push_str(&format!("/{account}{path}"));
    let mut q: Vec<(String, &str)> = query
        .iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), *v))
        .collect();
    q.sort();
    for (k, v) in q {
        s.push_str(&format!("\n{k}:{v}"));
    }
    s
}

/// Base64 of HMAC-SHA256 of `text` with the account key.
fn sign(key: &[u8], text: &str) -> String {
    use base64::Engine;
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key);
    base64::engine::general_purpose::STANDARD.encode(ring::hmac::sign(&key, text.as_bytes()))
}

/// An error answer's `<Error><Code>` and `<Message>`.
fn error_of(body: &str) -> (String, String) {
    #[derive(Deserialize, Default)]
    #[serde(rename_all = "PascalCase", default)]
    struct AzureError {
        code: String,
        message: String,
    }
    let e: AzureError =
        quick_xml::de::from_str(body.trim_start_matches('\u{feff}')).unwrap_or_default();
    let message = e.message.lines().next().unwrap_or_default().to_string();
    (e.code, message)
}

/// One page of List Blobs.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct EnumerationResults {
    #[serde(default)]
    blobs: Blobs,
    next_marker: Option<String>,
}

#[derive(Deserialize, Default)]
struct Blobs {
    #[serde(rename = "Blob", default)]
    blob: Vec<Blob>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Blob {
    name: String,
    properties: Properties,
}

#[derive(Deserialize)]
struct Properties {
    #[serde(rename = "Content-Length")]
    content_length: u64,
    #[serde(rename = "Last-Modified")]
    last_modified: String,
}

impl Service for Azure {
    fn url(&self, key: &str) -> String {
        object_url("az", &self.container, key)
    }

    fn put(&self, key: &str, data: &[u8], new: bool) -> std::result::Result<(), Failure> {
        let mut headers = vec![("x-ms-blob-type", "BlockBlob")];
        if new {
            headers.push(("If-None-Match", "*"));
        }
        let req = self.request("PUT", Some(key), &[], &headers, data.len())?;
        send(req, Some(data), error_of).map(drop)
    }

    /// Blocks need no server-side start: the upload is its block ids' prefix.
    fn start(&self, _key: &str, _new: bool) -> std::result::Result<String, Failure> {
        use rand::Rng;
        Ok(format!("{:016x}", rand::thread_rng().gen::<u64>()))
    }

    fn put_part(&self, key: &str, part: &Chunk<'_>) -> std::result::Result<(), Failure> {
        let id = Azure::block_id(part.upload, part.number);
        let query = [("comp", "block"), ("blockid", id.as_str())];
        let req = self.request("PUT", Some(key), &query, &[], part.data.len())?;
        send(req, Some(part.data), error_of).map(drop)
    }

    fn finish(&self, key: &str, last: &Chunk<'_>, new: bool) -> std::result::Result<(), Failure> {
        let mut count = last.number;
        if !last.data.is_empty() {
            self.put_part(key, last)?;
            count += 1;
        }
        let mut body = String::from("<?xml version=\"1.0\" encoding=\"utf-8\"?><BlockList>");
        for n in 0..count {
            body.push_str(&format!(
                "<Latest>{}</Latest>",
                Azure::block_id(last.upload, n)
            ));
        }
        body.push_str("</BlockList>");
        let headers: &[(&str, &str)] = if new { &[("If-None-Match", "*")] } else { &[] };
        let req = self.request(
            "PUT",
            Some(key),
            &[("comp", "blocklist")],
            headers,
            body.len(),
        )?;
        send(req, Some(body.as_bytes()), error_of).map(drop)
    }

    /// Nothing a client can do: uncommitted blocks expire on their own.
    fn abort(&self, _key: &str, _upload: &str) {}

    fn version_header(&self) -> &'static str {
        "etag"
    }

    fn get(&self, key: &str, from: &ReadFrom<'_>) -> std::result::Result<ureq::Response, Failure> {
        let (version, from) = (from.version, from.offset);
        let range = format!("bytes={from}-");
        let mut headers = vec![];
        if from > 0 {
            headers.push(("x-ms-range", range.as_str()));
        }
        if let Some(etag) = version {
            headers.push(("If-Match", etag));
        }
        send(
            self.request("GET", Some(key), &[], &headers, 0)?,
            None,
            error_of,
        )
    }

    fn exists(&self, key: &str) -> std::result::Result<bool, Failure> {
        let answer = send(
            self.request("HEAD", Some(key), &[], &[], 0)?,
            None,
            error_of,
        );
        found(answer, |f| f.code() != "ContainerNotFound")
    }

    fn list_page(
        &self,
        prefix: &str,
        token: Option<&str>,
    ) -> std::result::Result<(Vec<ObjectInfo>, Option<String>), Failure> {
        let mut query = vec![("restype", "container"), ("comp", "list")];
        if !prefix.is_empty() {
            query.push(("prefix", prefix));
        }
        if let Some(t) = token {
            query.push(("marker", t));
        }
        let body = send(self.request("GET", None, &query, &[], 0)?, None, error_of)?
            .into_string()
            .map_err(|e| Failure::Transport(e.to_string()))?;
        let page: EnumerationResults = quick_xml::de::from_str(body.trim_start_matches('\u{feff}'))
            .map_err(|e| Failure::Transport(format!("not a blob listing: {e}")))?;
        let objects = page
            .blobs
            .blob
            .into_iter()
            .map(|b| ObjectInfo {
                key: b.name,
                size: b.properties.content_length,
                modified: DateTime::parse_from_rfc2822(&b.properties.last_modified)
                    .map_or_else(|_| Utc::now(), |t| t.with_timezone(&Utc)),
            })
            .collect();
        Ok((objects, page.next_marker.filter(|m| !m.is_empty())))
    }

    fn delete(&self, key: &str) -> std::result::Result<(), Failure> {
        let answer = send(
            self.request("DELETE", Some(key), &[], &[], 0)?,
            None,
            error_of,
        );
        found(answer, |f| f.code() != "ContainerNotFound").map(drop)
    }

    fn error(&self, op: &Op<'_>, f: &Failure, attempts: u32) -> Error {
        let url = self.url(op.key);
        let who = self.who();
        match (f.status(), f.code()) {
            (Some(404), "ContainerNotFound") | (Some(404), "") if op.verb == "list" => {
                Error::not_found(format!(
                    "container {} does not exist in storage account {} ({} {url})",
                    self.container, self.account, op.verb
                ))
                .hint("create it (az storage container create -n CONTAINER) or check the store URL")
            }
            (Some(400 | 403), code) if self.rejects_credentials(code) => Error::failed(format!(
                "storage account {} rejected {who} ({code}; {} {url})",
                self.account, op.verb
            ))
            .hint("check the account key, SAS token or connection string"),
            (Some(403), _) => Error::failed(format!(
                "access denied to {who}: cannot {} {url} ({})",
                op.verb,
                f.describe()
            ))
            .hint("grant the identity the Storage Blob Data Contributor role on the container"),
            _ => plain_error(&url, op, f, attempts, &self.endpoint),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_strings_give_account_endpoint_and_credentials() {
        let (account, endpoint, auth) = from_connection_string(
            "DefaultEndpointsProtocol=https;AccountName=acme;AccountKey=a2V5;EndpointSuffix=core.windows.net",
        )
        .unwrap();
        assert_eq!(
            (account.as_str(), endpoint.as_str()),
            ("acme", "https://acme.blob.core.windows.net")
        );
        assert!(matches!(auth, Auth::SharedKey(k) if k == b"key"));
        let (account, endpoint, _) = from_connection_string("UseDevelopmentStorage=true").unwrap();
        assert_eq!(
            (account.as_str(), endpoint.as_str()),
            (DEV_ACCOUNT, "http://127.0.0.1:10000/devstoreaccount1")
        );
        let (account, _, auth) = from_connection_string(
            "BlobEndpoint=https://acme.blob.core.windows.net/;SharedAccessSignature=sv=2022&sig=x%3D",
        )
        .unwrap();
        assert_eq!(account, "acme");
        assert!(matches!(auth, Auth::Sas(s) if s == "sv=2022&sig=x%3D"));
        let e = from_connection_string("AccountName=acme").err().unwrap();
        assert_eq!(
            e.message,
            "AZURE_STORAGE_CONNECTION_STRING has no AccountKey or SharedAccessSignature"
        );
    }

    #[test]
    fn the_string_to_sign_follows_shared_key_rules() {
        let s = string_to_sign(
            "PUT",
            "devstoreaccount1",
            "/devstoreaccount1/c/backups/x",
            &[("comp", "block"), ("blockid", "YQ==")],
            &[
                ("x-ms-version", VERSION),
                ("x-ms-date", "D"),
                ("If-None-Match", "*"),
            ],
            5,
        );
        assert_eq!(
            s,
            format!("PUT\n\n\n5\n\n\n\n\n\n*\n\n\nx-ms-date:D\nx-ms-version:{VERSION}\n/devstoreaccount1/devstoreaccount1/c/backups/x\nblockid:YQ==\ncomp:block")
        );
        assert_eq!(
            url_path("http://127.0.0.1:10000/devstoreaccount1"),
            "/devstoreaccount1"
        );
        assert_eq!(url_path("https://acme.blob.core.windows.net"), "");
    }

    #[test]
    fn listings_and_errors_are_read() {
        let page = r#"<?xml version="1.0" encoding="utf-8"?><EnumerationResults ServiceEndpoint="http://127.0.0.1:10000/devstoreaccount1" ContainerName="c"><Prefix>p/</Prefix><Blobs><Blob><Name>p/a</Name><Properties><Creation-Time>Tue, 01 Dec 2026 10:00:00 GMT</Creation-Time><Last-Modified>Tue, 01 Dec 2026 10:00:00 GMT</Last-Modified><Etag>0x1</Etag><Content-Length>42</Content-Length><BlobType>BlockBlob</BlobType></Properties></Blob></Blobs><NextMarker/></EnumerationResults>"#;
        let r: EnumerationResults = quick_xml::de::from_str(page).unwrap();
        assert_eq!(r.blobs.blob.len(), 1);
        assert_eq!(
            (
                r.blobs.blob[0].name.as_str(),
                r.blobs.blob[0].properties.content_length
            ),
            ("p/a", 42)
        );
        assert_eq!(r.next_marker.filter(|m| !m.is_empty()), None);
        let e = "\u{feff}<?xml version=\"1.0\" encoding=\"utf-8\"?><Error><Code>BlobAlreadyExists</Code><Message>The specified blob already exists.\nRequestId:1</Message></Error>";
        assert_eq!(
            error_of(e),
            (
                "BlobAlreadyExists".into(),
                "The specified blob already exists.".into()
            )
        );
    }
}
