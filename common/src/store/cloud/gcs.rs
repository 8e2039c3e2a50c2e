//! Google Cloud Storage over its JSON API.
//!
//! Small objects are one media upload; larger ones a resumable upload whose
//! object appears only when its last chunk arrives. A create-only write
//! sends `ifGenerationMatch=0`; a resumed download `ifGenerationMatch` of
//! the generation it started with.
//!
//! Credentials as Google's client libraries find them: no credentials
//! against an emulator (`STORAGE_EMULATOR_HOST`), else the key file named
//! by `GOOGLE_APPLICATION_CREDENTIALS`, else gcloud's application default
//! credentials, else the metadata server (`GCE_METADATA_HOST`, by default
//! `metadata.google.internal`), which is also how GKE workload identity
//! hands out tokens. `DBSAFE_GCS_ENDPOINT` names another endpoint that
//! still wants credentials (Private Service Connect, tests).

use super::auth::{Source, Tokens};
use super::{encode, found, object_url, plain_error, send, Chunk, Failure, Op, ReadFrom, Service};
use crate::error::{Error, Result};
use crate::store::ObjectInfo;
use chrono::{DateTime, Utc};

/// The public endpoint.
const ENDPOINT: &str = "https://storage.googleapis.com";

/// A bucket in Google Cloud Storage.
pub(super) struct Gcs {
    agent: ureq::Agent,
    endpoint: String,
    bucket: String,
    /// `None` against an emulator.
    tokens: Option<Tokens>,
}

impl Gcs {
    /// The bucket `bucket` with the endpoint and credentials the environment gives.
    pub fn from_env(bucket: &str, var: &dyn Fn(&str) -> Option<String>) -> Result<Gcs> {
        let agent = super::agent()?;
        let with_scheme = |h: String| {
            if h.contains("://") {
                h
            } else {
                format!("http://{h}")
            }
        };
        let (endpoint, tokens) = match var("STORAGE_EMULATOR_HOST") {
            Some(host) => (with_scheme(host), None),
            None => {
                let endpoint = var("DBSAFE_GCS_ENDPOINT").unwrap_or_else(|| ENDPOINT.into());
                (
                    endpoint,
                    Some(Tokens::new(google_source(var)?, agent.clone())),
                )
            }
        };
        Ok(Gcs {
            agent,
            endpoint: endpoint.trim_end_matches('/').to_string(),
            bucket: bucket.to_string(),
            tokens,
        })
    }

    /// A request with the current token.
    fn request(&self, method: &str, url: &str) -> std::result::Result<ureq::Request, Failure> {
        let req = self.agent.request(method, url);
        Ok(match &self.tokens {
            Some(t) => req.set("Authorization", &format!("Bearer {}", t.current()?)),
            None => req,
        })
    }

    fn object(&self, key: &str) -> String {
        format!(
            "{}/storage/v1/b/{}/o/{}",
            self.endpoint,
            encode(&self.bucket),
            encode(key)
        )
    }

    fn upload_url(&self, key: &str, kind: &str, new: bool) -> String {
        format!(
            "{}/upload/storage/v1/b/{}/o?uploadType={kind}&name={}{}",
            self.endpoint,
            encode(&self.bucket),
            encode(key),
            if new { "&ifGenerationMatch=0" } else { "" }
        )
    }

    /// Sends a chunk of a resumable upload: `bytes a-b/*`, or with the
    /// total for the last one. A chunk sent again (its last attempt got no
    /// answer, or an error) may be partly held already: the session is
    /// asked first how many bytes it holds, and only the rest is sent, as
    /// the resumable protocol requires.
    fn chunk(
        &self,
        part: &Chunk<'_>,
        total: Option<u64>,
    ) -> std::result::Result<ureq::Response, Failure> {
        let mut skip = 0;
        if part.again {
            match self.held(part.upload, total)? {
                // The lost answer was the one that completed the upload.
                Held::Complete(resp) => return Ok(*resp),
                Held::Bytes(held) => {
                    skip = held.saturating_sub(part.offset).min(part.data.len() as u64)
                }
            }
        }
        let (offset, data) = (part.offset + skip, &part.data[skip as usize..]);
        let total = total.map_or("*".to_string(), |t| t.to_string());
        let range = if data.is_empty() {
            format!("bytes */{total}")
        } else {
            format!("bytes {offset}-{}/{total}", offset + data.len() as u64 - 1)
        };
        let req = self
            .request("PUT", part.upload)?
            .set("Content-Range", &range);
        send(req, Some(data), error_of)
    }

    /// How many bytes a resumable session holds (a status query: `bytes
    /// */*`, answered 308 with `Range: bytes=0-N`, or no Range for none),
    /// or its object when the upload is complete.
    fn held(&self, session: &str, total: Option<u64>) -> std::result::Result<Held, Failure> {
        let range = format!(
            "bytes */{}",
            total.map_or("*".to_string(), |t| t.to_string())
        );
        let req = self.request("PUT", session)?.set("Content-Range", &range);
        let resp = send(req, Some(&[]), error_of)?;
        if resp.status() != 308 {
            return Ok(Held::Complete(Box::new(resp)));
        }
        let end = resp
            .header("range")
            .and_then(|r| r.strip_prefix("bytes=0-"))
            .and_then(|n| n.parse::<u64>().ok());
        Ok(Held::Bytes(end.map_or(0, |n| n + 1)))
    }
}

/// What a resumable session holds.
enum Held {
    /// This many bytes, from the start.
    Bytes(u64),
    /// The whole object: the upload is complete (its answer).
    Complete(Box<ureq::Response>),
}

/// The token source the environment names.
fn google_source(var: &dyn Fn(&str) -> Option<String>) -> Result<Source> {
    let from_file = |path: String, what: &str| {
        Source::google_file(&path).map_err(|e| {
            Error::usage(format!("{what} {path}: {e}"))
                .hint("use a service-account key (JSON) or `gcloud auth application-default login`")
        })
    };
    if let Some(path) = var("GOOGLE_APPLICATION_CREDENTIALS") {
        return from_file(path, "GOOGLE_APPLICATION_CREDENTIALS");
    }
    let gcloud =
        var("CLOUDSDK_CONFIG").or_else(|| var("HOME").map(|h| format!("{h}/.config/gcloud")));
    if let Some(path) = gcloud
        .map(|dir| format!("{dir}/application_default_credentials.json"))
        .filter(|p| std::path::Path::new(p).exists())
    {
        return from_file(path, "gcloud's application default credentials");
    }
    let host = var("GCE_METADATA_HOST").unwrap_or_else(|| "metadata.google.internal".into());
    Ok(Source::GoogleMetadata(host))
}

/// The reason and message of a JSON API error answer.
fn error_of(body: &str) -> (String, String) {
    let v: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
    let e = &v["error"];
    let reason = e["errors"][0]["reason"].as_str().unwrap_or_default();
    let message = e["message"].as_str().unwrap_or_default();
    (reason.to_string(), message.to_string())
}

/// A resumable session's answer to a chunk that is not the last: 308.
fn accepted(resp: &ureq::Response) -> std::result::Result<(), Failure> {
    if resp.status() == 308 || (200..300).contains(&resp.status()) {
        Ok(())
    } else {
        Err(Failure::Transport(format!(
            "unexpected answer HTTP {}",
            resp.status()
        )))
    }
}

impl Service for Gcs {
    fn url(&self, key: &str) -> String {
        object_url("gs", &self.bucket, key)
    }

    fn put(&self, key: &str, data: &[u8], new: bool) -> std::result::Result<(), Failure> {
        let req = self
            .request("POST", &self.upload_url(key, "media", new))?
            .set("Content-Type", "application/octet-stream");
        send(req, Some(data), error_of).map(drop)
    }

    fn start(&self, key: &str, new: bool) -> std::result::Result<String, Failure> {
        let req = self
            .request("POST", &self.upload_url(key, "resumable", new))?
            .set("X-Upload-Content-Type", "application/octet-stream");
        let resp = send(req, Some(&[]), error_of)?;
        resp.header("location")
            .map(str::to_string)
            .ok_or_else(|| Failure::Transport("no resumable session in the answer".into()))
    }

    fn put_part(&self, _key: &str, part: &Chunk<'_>) -> std::result::Result<(), Failure> {
        accepted(&self.chunk(part, None)?)
    }

    fn finish(&self, _key: &str, last: &Chunk<'_>, _new: bool) -> std::result::Result<(), Failure> {
        let total = last.offset + last.data.len() as u64;
        if self.chunk(last, Some(total))?.status() == 308 {
            return Err(Failure::Transport(
                "the upload is incomplete after its last chunk".into(),
            ));
        }
        Ok(())
    }

    fn abort(&self, _key: &str, upload: &str) {
        if let Ok(req) = self.request("DELETE", upload) {
            let _ = send(req, None, error_of);
        }
    }

    fn version_header(&self) -> &'static str {
        "x-goog-generation"
    }

    fn get(&self, key: &str, from: &ReadFrom<'_>) -> std::result::Result<ureq::Response, Failure> {
        let (version, from) = (from.version, from.offset);
        let mut url = format!("{}?alt=media", self.object(key));
        if let Some(g) = version {
            url.push_str(&format!("&ifGenerationMatch={}", encode(g)));
        }
        let mut req = self.request("GET", &url)?;
        if from > 0 {
            req = req.set("Range", &format!("bytes={from}-"));
        }
        send(req, None, error_of)
    }

    fn exists(&self, key: &str) -> std::result::Result<bool, Failure> {
        found(
            send(self.request("GET", &self.object(key))?, None, error_of),
            |_| true,
        )
    }

    fn list_page(
        &self,
        prefix: &str,
        token: Option<&str>,
    ) -> std::result::Result<(Vec<ObjectInfo>, Option<String>), Failure> {
        let mut url = format!(
            "{}/storage/v1/b/{}/o?prefix={}",
            self.endpoint,
            encode(&self.bucket),
            encode(prefix)
        );
        if let Some(t) = token {
            url.push_str(&format!("&pageToken={}", encode(t)));
        }
        let body = send(self.request("GET", &url)?, None, error_of)?
            .into_string()
            .map_err(|e| Failure::Transport(e.to_string()))?;
        let page: serde_json::Value = serde_json::from_str(&body)
            .map_err(|e| Failure::Transport(format!("not a listing: {e}")))?;
        let objects = page["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|o| {
                Some(ObjectInfo {
                    key: o["name"].as_str()?.to_string(),
                    size: o["size"].as_str().and_then(|s| s.parse().ok()).unwrap_or(0),
                    modified: o["updated"]
                        .as_str()
                        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
                        .map_or_else(Utc::now, |t| t.with_timezone(&Utc)),
                })
            })
            .collect();
        let next = page["nextPageToken"].as_str().map(str::to_string);
        Ok((objects, next))
    }

    fn delete(&self, key: &str) -> std::result::Result<(), Failure> {
        found(
            send(self.request("DELETE", &self.object(key))?, None, error_of),
            |_| true,
        )
        .map(drop)
    }

    fn error(&self, op: &Op<'_>, f: &Failure, attempts: u32) -> Error {
        let url = self.url(op.key);
        let who = self
            .tokens
            .as_ref()
            .map_or("anonymous requests".to_string(), |t| t.describe());
        match f.status() {
            Some(404) if op.verb == "list" => Error::not_found(format!(
                "bucket {} does not exist at {} (list {url})",
                self.bucket, self.endpoint
            ))
            .hint("create it (gcloud storage buckets create gs://BUCKET) or check the store URL"),
            Some(401) => Error::failed(format!(
                "{} rejected the credentials of {who} ({} {url})",
                self.endpoint, op.verb
            ))
            .hint("check GOOGLE_APPLICATION_CREDENTIALS, or the service account of this machine"),
            Some(403) => Error::failed(format!(
                "access denied to {who}: cannot {} {url} ({})",
                op.verb,
                f.describe()
            ))
            .hint("grant the account roles/storage.objectAdmin on the bucket"),
            _ => plain_error(&url, op, f, attempts, &self.endpoint),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_errors_give_their_reason_and_message() {
        let body = r#"{"error":{"code":403,"message":"x@y does not have storage.objects.create access","errors":[{"message":"...","domain":"global","reason":"forbidden"}]}}"#;
        assert_eq!(
            error_of(body),
            (
                "forbidden".into(),
                "x@y does not have storage.objects.create access".into()
            )
        );
        assert_eq!(error_of("<html>"), (String::new(), String::new()));
    }

    #[test]
    fn the_emulator_needs_no_credentials_and_a_key_file_must_be_readable() {
        let emulator =
            |k: &str| (k == "STORAGE_EMULATOR_HOST").then(|| "127.0.0.1:9023".to_string());
        let gcs = Gcs::from_env("b", &emulator).expect("an emulator store");
        assert_eq!(gcs.endpoint, "http://127.0.0.1:9023");
        assert!(gcs.tokens.is_none());
        let missing = |k: &str| {
            (k == "GOOGLE_APPLICATION_CREDENTIALS").then(|| "/nonexistent/key.json".to_string())
        };
        let e = Gcs::from_env("b", &missing)
            .err()
            .expect("an unreadable key file");
        assert!(
            e.message.starts_with(
                "GOOGLE_APPLICATION_CREDENTIALS /nonexistent/key.json: cannot read it"
            ),
            "{}",
            e.message
        );
    }
}
