//! OAuth 2 bearer tokens for Google Cloud Storage and Azure Blob Storage,
//! fetched as each platform's SDKs fetch them, cached, and fetched again a
//! minute before they expire.
//!
//! - Google: a service-account key (a JWT signed with its RSA key,
//!   exchanged at its `token_uri`), user credentials (`gcloud auth
//!   application-default login`: a refresh token), or the metadata server
//!   of the VM or GKE pod (workload identity), at `GCE_METADATA_HOST`.
//! - Azure: a managed identity, from the App Service / Container Apps
//!   endpoint (`IDENTITY_ENDPOINT` with `IDENTITY_HEADER`) or the instance
//!   metadata service; or workload identity on AKS (`AZURE_FEDERATED_TOKEN_FILE`
//!   exchanged at `AZURE_AUTHORITY_HOST` for `AZURE_TENANT_ID`/`AZURE_CLIENT_ID`).
//!
//! No token, key or assertion ever reaches a message.

use super::Failure;
use crate::http::{answer_text, SourceFailure};
use crate::store::remote::Expiring;
use chrono::{DateTime, Duration, Utc};
/// Google's scope for reading and writing objects.
const GCS_SCOPE: &str = "https://www.googleapis.com/auth/devstorage.read_write";
/// The resource (audience) of Azure Storage tokens.
const AZURE_RESOURCE: &str = "https://storage.azure.com/";
/// Where the instance metadata services answer.
const AZURE_IMDS: &str = "http://169.254.169.254";

/// Where tokens come from.
pub(super) enum Source {
    /// A Google service-account key.
    ServiceAccount {
        email: String,
        key: ring::signature::RsaKeyPair,
        token_uri: String,
    },
    /// Google user credentials (a refresh token).
    User {
        client_id: String,
        client_secret: String,
        refresh_token: String,
        token_uri: String,
    },
    /// The Google metadata server at this host (`metadata.google.internal`).
    GoogleMetadata(String),
    /// An Azure managed identity: the endpoint, and the header it wants.
    AzureIdentity {
        endpoint: String,
        header: Option<(&'static str, String)>,
        client_id: Option<String>,
    },
    /// Azure workload identity: a federated token file exchanged at the authority.
    AzureWorkload {
        authority: String,
        tenant: String,
        client_id: String,
        token_file: String,
    },
}

impl Source {
    /// Reads a Google credentials file (`GOOGLE_APPLICATION_CREDENTIALS`).
    pub fn google_file(path: &str) -> std::result::Result<Source, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read it: {e}"))?;
        let v: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| format!("not JSON: {e}"))?;
        let field = |k: &str| {
            v.get(k)
                .and_then(|x| x.as_str())
                .map(str::to_string)
                .ok_or_else(|| format!("no {k} in it"))
        };
        let token_uri =
            field("token_uri").unwrap_or_else(|_| "https://oauth2.googleapis.com/token".into());
        match field("type")?.as_str() {
            "service_account" => {
                use rustls::pki_types::pem::PemObject;
                let pem = field("private_key")?;
                let der = rustls::pki_types::PrivatePkcs8KeyDer::from_pem_slice(pem.as_bytes())
                    .map_err(|_| "its private_key is not a PKCS#8 PEM key".to_string())?;
                let key = ring::signature::RsaKeyPair::from_pkcs8(der.secret_pkcs8_der())
                    .map_err(|_| "its private_key is not an RSA key".to_string())?;
                Ok(Source::ServiceAccount {
                    email: field("client_email")?,
                    key,
                    token_uri,
                })
            }
            "authorized_user" => Ok(Source::User {
                client_id: field("client_id")?,
                client_secret: field("client_secret")?,
                refresh_token: field("refresh_token")?,
                token_uri,
            }),
            other => Err(format!(
                "credentials of type {other:?} are not supported (use a service-account key, user credentials or the metadata server)"
            )),
        }
    }

    /// The Azure token source the environment names, if any: workload
    /// identity, then the managed identity endpoint, then the instance
    /// metadata service unless `AZURE_IMDS_DISABLED` says there is none.
    pub fn azure(var: &dyn Fn(&str) -> Option<String>) -> Option<Source> {
        let client_id = var("AZURE_CLIENT_ID");
        if let (Some(token_file), Some(tenant), Some(client_id)) = (
            var("AZURE_FEDERATED_TOKEN_FILE"),
            var("AZURE_TENANT_ID"),
            client_id.clone(),
        ) {
            let authority = var("AZURE_AUTHORITY_HOST")
                .unwrap_or_else(|| "https://login.microsoftonline.com/".into());
            return Some(Source::AzureWorkload {
                authority,
                tenant,
                client_id,
                token_file,
            });
        }
        if let (Some(endpoint), Some(secret)) = (var("IDENTITY_ENDPOINT"), var("IDENTITY_HEADER")) {
            return Some(Source::AzureIdentity {
                endpoint: format!("{endpoint}?api-version=2019-08-01"),
                header: Some(("X-IDENTITY-HEADER", secret)),
                client_id,
            });
        }
        if var("AZURE_IMDS_DISABLED").is_some_and(|v| v == "true" || v == "1") {
            return None;
        }
        let host = var("AZURE_POD_IDENTITY_AUTHORITY_HOST").unwrap_or_else(|| AZURE_IMDS.into());
        Some(Source::AzureIdentity {
            endpoint: format!(
                "{}/metadata/identity/oauth2/token?api-version=2018-02-01",
                host.trim_end_matches('/')
            ),
            header: Some(("Metadata", "true".into())),
            client_id,
        })
    }

    /// Where the tokens come from, for messages.
    pub fn describe(&self) -> String {
        match self {
            Source::ServiceAccount { email, .. } => format!("service account {email}"),
            Source::User { client_id, .. } => format!("user credentials of client {client_id}"),
            Source::GoogleMetadata(host) => format!("the metadata server at {host}"),
            Source::AzureIdentity { endpoint, .. } => format!(
                "the managed identity endpoint {}",
                endpoint.split('?').next().unwrap_or_default()
            ),
            Source::AzureWorkload { client_id, .. } => {
                format!("workload identity of client {client_id}")
            }
        }
    }

    /// A fresh token and when it expires.
    fn fetch(
        &self,
        agent: &ureq::Agent,
    ) -> std::result::Result<(String, DateTime<Utc>), SourceFailure> {
        let answer = match self {
            Source::ServiceAccount {
                email,
                key,
                token_uri,
            } => {
                let assertion = jwt(email, key, token_uri)?;
                agent.post(token_uri).send_form(&[
                    ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"),
                    ("assertion", &assertion),
                ])
            }
            Source::User {
                client_id,
                client_secret,
                refresh_token,
                token_uri,
            } => agent.post(token_uri).send_form(&[
                ("grant_type", "refresh_token"),
                ("client_id", client_id),
                ("client_secret", client_secret),
                ("refresh_token", refresh_token),
            ]),
            Source::GoogleMetadata(host) => agent
                .get(&format!(
                    "http://{host}/computeMetadata/v1/instance/service-accounts/default/token"
                ))
                .set("Metadata-Flavor", "Google")
                .call(),
            Source::AzureIdentity {
                endpoint,
                header,
                client_id,
            } => {
                let mut req = agent.get(endpoint).query("resource", AZURE_RESOURCE);
                if let Some(id) = client_id {
                    req = req.query("client_id", id);
                }
                if let Some((name, value)) = header {
                    req = req.set(name, value);
                }
                req.call()
            }
            Source::AzureWorkload {
                authority,
                tenant,
                client_id,
                token_file,
            } => {
                let assertion = std::fs::read_to_string(token_file)
                    .map_err(|e| format!("cannot read AZURE_FEDERATED_TOKEN_FILE: {e}"))?;
                let url = format!(
                    "{}/{tenant}/oauth2/v2.0/token",
                    authority.trim_end_matches('/')
                );
                agent.post(&url).send_form(&[
                    ("grant_type", "client_credentials"),
                    ("client_id", client_id),
                    ("scope", "https://storage.azure.com/.default"),
                    (
                        "client_assertion_type",
                        "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                    ),
                    ("client_assertion", assertion.trim()),
                ])
            }
        };
        // Azure's identity endpoints answer 404 and 410 while an identity
        // is being assigned or the endpoint updated: Microsoft says retry.
        let passing: &[u16] = match self {
            Source::AzureIdentity { .. } => &[404, 410],
            _ => &[],
        };
        let body = answer_text(answer).map_err(|f| f.passing_on(passing))?;
        Ok(token_answer(&body, Utc::now())?)
    }
}

/// The token of an OAuth answer and when it expires: `expires_in` seconds
/// from `now` (a number, or a string as Azure's endpoints write it).
fn token_answer(
    body: &str,
    now: DateTime<Utc>,
) -> std::result::Result<(String, DateTime<Utc>), String> {
    let v: serde_json::Value =
        serde_json::from_str(body).map_err(|e| format!("not a token answer: {e}"))?;
    let token = v
        .get("access_token")
        .and_then(|t| t.as_str())
        .ok_or("no access_token in the answer")?;
    let expires_in = match v.get("expires_in") {
        Some(serde_json::Value::Number(n)) => n.as_i64(),
        Some(serde_json::Value::String(s)) => s.parse().ok(),
        _ => None,
    }
    .unwrap_or(300);
    Ok((token.to_string(), now + Duration::seconds(expires_in)))
}

/// A signed JWT asserting the service account for GCS's scope, valid an hour.
fn jwt(
    email: &str,
    key: &ring::signature::RsaKeyPair,
    audience: &str,
) -> std::result::Result<String, String> {
    use base64::Engine;
    let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let now = Utc::now().timestamp();
    let header = serde_json::json!({"alg": "RS256", "typ": "JWT"});
    let claims = serde_json::json!({
        "iss": email,
        "scope": GCS_SCOPE,
        "aud": audience,
        "iat": now,
        "exp": now + 3600,
    });
    let signed = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    );
    let mut signature = vec![0; key.public().modulus_len()];
    key.sign(
        &ring::signature::RSA_PKCS1_SHA256,
        &ring::rand::SystemRandom::new(),
        signed.as_bytes(),
        &mut signature,
    )
    .map_err(|_| "cannot sign with the service account's key".to_string())?;
    Ok(format!("{signed}.{}", b64(&signature)))
}

/// Tokens of one source, cached until a minute before they expire.
pub(super) struct Tokens {
    source: Source,
    agent: ureq::Agent,
    cached: Expiring<String>,
}

impl Tokens {
    pub fn new(source: Source, agent: ureq::Agent) -> Tokens {
        Tokens {
            source,
            agent,
            cached: Expiring::empty(),
        }
    }

    /// Where the tokens come from, for messages.
    pub fn describe(&self) -> String {
        self.source.describe()
    }

    /// A valid token: the cached one, or a fresh one near its expiry.
    pub fn current(&self) -> std::result::Result<String, Failure> {
        self.cached.current(|| {
            let (token, expires) = self.source.fetch(&self.agent).map_err(|f| {
                Failure::Credentials(
                    f.into_error(&format!("no token from {}", self.source.describe()))
                        .hint("check the credentials this store is given (the ENVIRONMENT section of the man page lists them)"),
                )
            })?;
            Ok((token, Some(expires)))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_answers_give_the_token_and_its_expiry_in_either_spelling() {
        let now = Utc::now();
        let google = r#"{"access_token":"ya29.x","expires_in":3599,"token_type":"Bearer"}"#;
        assert_eq!(
            token_answer(google, now).unwrap(),
            ("ya29.x".into(), now + Duration::seconds(3599))
        );
        let azure = r#"{"access_token":"eyJ0","expires_in":"86399","expires_on":"1","resource":"https://storage.azure.com/","token_type":"Bearer"}"#;
        assert_eq!(
            token_answer(azure, now).unwrap().1,
            now + Duration::seconds(86399)
        );
        assert!(token_answer(r#"{"error":"invalid_grant"}"#, now).is_err());
    }

    #[test]
    fn the_azure_environment_picks_workload_identity_then_the_endpoint_then_imds() {
        let env = crate::store::test_env;
        let workload = env(&[
            ("AZURE_FEDERATED_TOKEN_FILE", "/t"),
            ("AZURE_TENANT_ID", "t"),
            ("AZURE_CLIENT_ID", "c"),
            ("IDENTITY_ENDPOINT", "http://x"),
            ("IDENTITY_HEADER", "h"),
        ]);
        assert!(matches!(
            Source::azure(&workload),
            Some(Source::AzureWorkload { .. })
        ));
        let app = env(&[
            ("IDENTITY_ENDPOINT", "http://x/t"),
            ("IDENTITY_HEADER", "h"),
        ]);
        assert_eq!(
            Source::azure(&app).map(|s| s.describe()).as_deref(),
            Some("the managed identity endpoint http://x/t")
        );
        let vm = env(&[]);
        assert_eq!(
            Source::azure(&vm).map(|s| s.describe()).as_deref(),
            Some("the managed identity endpoint http://169.254.169.254/metadata/identity/oauth2/token")
        );
        assert!(Source::azure(&env(&[("AZURE_IMDS_DISABLED", "true")])).is_none());
    }
}
