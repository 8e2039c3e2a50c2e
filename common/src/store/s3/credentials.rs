//! Temporary S3 credentials, fetched and refreshed as the AWS SDKs do when
//! neither the environment nor a profile holds keys: a web identity token
//! exchanged with STS (EKS), the container credentials endpoint (ECS), or
//! the EC2 instance metadata service (IMDSv2, with its session token).
//!
//! Credentials are cached until a minute before they expire, then fetched
//! again, so a backup that outlives them keeps signing with valid ones.

use super::config::Credentials;
use crate::error::{Error, Result};
use crate::http::{answer_text, SourceFailure};
use crate::store::remote::Expiring;
use chrono::{DateTime, Utc};
use std::time::Duration;

/// The instance metadata service's default address.
pub const IMDS_ENDPOINT: &str = "http://169.254.169.254";
/// The container credentials endpoint's host for relative URIs.
const ECS_HOST: &str = "http://169.254.170.2";

/// Where temporary credentials come from.
#[derive(Clone)]
pub enum Provider {
    /// STS AssumeRoleWithWebIdentity with the token in `token_file`.
    WebIdentity {
        /// `AWS_WEB_IDENTITY_TOKEN_FILE`.
        token_file: std::path::PathBuf,
        /// `AWS_ROLE_ARN`.
        role_arn: String,
        /// `AWS_ROLE_SESSION_NAME`.
        session: String,
        /// `AWS_ENDPOINT_URL_STS`, or STS's regional endpoint.
        sts: String,
    },
    /// The container credentials endpoint.
    Container {
        /// The full URL.
        url: String,
        /// `AWS_CONTAINER_AUTHORIZATION_TOKEN` (a secret).
        token: Option<String>,
        /// `AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE`, read at each fetch.
        token_file: Option<std::path::PathBuf>,
    },
    /// The instance metadata service (IMDSv2).
    Instance {
        /// `AWS_EC2_METADATA_SERVICE_ENDPOINT`, or 169.254.169.254.
        endpoint: String,
    },
}

impl std::fmt::Debug for Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

/// Error codes that STS answers with HTTP 400 and the AWS SDKs retry.
const STS_PASSING: [&str; 4] = [
    "Throttling",
    "IDPCommunicationError",
    "ServiceUnavailable",
    "RequestLimitExceeded",
];

impl Provider {
    /// The provider as a message names it (never a secret).
    pub fn describe(&self) -> String {
        match self {
            Provider::WebIdentity { role_arn, .. } => format!("web identity for {role_arn}"),
            Provider::Container { url, .. } => format!("container credentials at {url}"),
            Provider::Instance { endpoint } => format!("instance metadata at {endpoint}"),
        }
    }

    /// The provider the environment configures, in the SDKs' order, when
    /// neither the environment nor a profile has keys.
    pub fn from_env(var: &dyn Fn(&str) -> Option<String>, region: &str) -> Option<Provider> {
        if let (Some(token_file), Some(role_arn)) =
            (var("AWS_WEB_IDENTITY_TOKEN_FILE"), var("AWS_ROLE_ARN"))
        {
            return Some(Provider::WebIdentity {
                token_file: token_file.into(),
                role_arn,
                session: var("AWS_ROLE_SESSION_NAME")
                    .unwrap_or_else(|| format!("dbsafe-{}", std::process::id())),
                sts: var("AWS_ENDPOINT_URL_STS")
                    .unwrap_or_else(|| format!("https://sts.{region}.amazonaws.com")),
            });
        }
        let container = var("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI")
            .map(|rel| format!("{ECS_HOST}{rel}"))
            .or_else(|| var("AWS_CONTAINER_CREDENTIALS_FULL_URI"));
        if let Some(url) = container {
            return Some(Provider::Container {
                url,
                token: var("AWS_CONTAINER_AUTHORIZATION_TOKEN"),
                token_file: var("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE").map(Into::into),
            });
        }
        if var("AWS_EC2_METADATA_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
            return None;
        }
        Some(Provider::Instance {
            endpoint: var("AWS_EC2_METADATA_SERVICE_ENDPOINT")
                .unwrap_or_else(|| IMDS_ENDPOINT.into())
                .trim_end_matches('/')
                .to_string(),
        })
    }

    /// Fetches a fresh set of credentials and their expiry.
    fn fetch(&self) -> Result<(Credentials, Option<DateTime<Utc>>)> {
        let fail = |f: SourceFailure| {
            f.into_error(&format!("S3 credentials from {}", self.describe())).hint(
                "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE with ~/.aws/credentials",
            )
        };
        let agent = crate::http::agent_builder()?
            .timeout_connect(Duration::from_secs(2))
            .timeout(Duration::from_secs(10))
            .redirects(0)
            .build();
        let read_token = |path: &std::path::Path| {
            std::fs::read_to_string(path)
                .map_err(|e| fail(SourceFailure::lasting(format!("{}: {e}", path.display()))))
        };
        let answer = match self {
            Provider::Instance { endpoint } => {
                let token = agent
                    .put(&format!("{endpoint}/latest/api/token"))
                    .set("x-aws-ec2-metadata-token-ttl-seconds", "21600")
                    .call();
                let token =
                    answer_text(token).map_err(|e| fail(e.within("no IMDSv2 session token")))?;
                let base = format!("{endpoint}/latest/meta-data/iam/security-credentials/");
                let get = |url: &str| {
                    answer_text(
                        agent
                            .get(url)
                            .set("x-aws-ec2-metadata-token", token.trim())
                            .call(),
                    )
                };
                let role = get(&base).map_err(|e| fail(e.within("no instance role")))?;
                let role = role.lines().next().unwrap_or("").trim().to_string();
                if role.is_empty() {
                    return Err(fail(SourceFailure::lasting("the instance has no role")));
                }
                Json::parse(&get(&format!("{base}{role}")).map_err(fail)?)
            }
            Provider::Container {
                url,
                token,
                token_file,
            } => {
                let mut req = agent.get(url);
                let token = match token_file {
                    Some(f) => Some(read_token(f)?.trim().to_string()),
                    None => token.clone(),
                };
                if let Some(t) = &token {
                    req = req.set("authorization", t);
                }
                Json::parse(&answer_text(req.call()).map_err(fail)?)
            }
            Provider::WebIdentity {
                token_file,
                role_arn,
                session,
                sts,
            } => {
                let token = read_token(token_file)?;
                let body = answer_text(agent.post(sts).send_form(&[
                    ("Action", "AssumeRoleWithWebIdentity"),
                    ("Version", "2011-06-15"),
                    ("RoleArn", role_arn),
                    ("RoleSessionName", session),
                    ("WebIdentityToken", token.trim()),
                ]))
                .map_err(|f| fail(f.passing_on_codes(&STS_PASSING)))?;
                Sts::parse(&body)
            }
        }
        .map_err(|e| fail(e.into()))?;
        let expires = match &answer.expiration {
            Some(t) => Some(
                DateTime::parse_from_rfc3339(t)
                    .map_err(|e| fail(format!("expiration {t:?}: {e}").into()))?
                    .with_timezone(&Utc),
            ),
            None => None,
        };
        Ok((
            Credentials {
                key_id: answer.key_id,
                secret: answer.secret,
                token: answer.token,
                source: self.describe(),
            },
            expires,
        ))
    }
}

/// What a credentials endpoint answered.
struct Answer {
    key_id: String,
    secret: String,
    token: Option<String>,
    expiration: Option<String>,
}

/// The JSON of the instance metadata service and the container endpoint.
struct Json;

impl Json {
    fn parse(body: &str) -> std::result::Result<Answer, String> {
        let v: serde_json::Value =
            serde_json::from_str(body).map_err(|e| format!("not credentials: {e}"))?;
        let field = |k: &str| v.get(k).and_then(|x| x.as_str()).map(str::to_string);
        Ok(Answer {
            key_id: field("AccessKeyId").ok_or("no AccessKeyId in the answer")?,
            secret: field("SecretAccessKey").ok_or("no SecretAccessKey in the answer")?,
            token: field("Token"),
            expiration: field("Expiration"),
        })
    }
}

/// STS's AssumeRoleWithWebIdentity answer.
struct Sts;

impl Sts {
    fn parse(body: &str) -> std::result::Result<Answer, String> {
        #[derive(serde::Deserialize)]
        #[serde(rename_all = "PascalCase")]
        struct Response {
            assume_role_with_web_identity_result: Result_,
        }
        #[derive(serde::Deserialize)]
        #[serde(rename_all = "PascalCase")]
        struct Result_ {
            credentials: Creds,
        }
        #[derive(serde::Deserialize)]
        #[serde(rename_all = "PascalCase")]
        struct Creds {
            access_key_id: String,
            secret_access_key: String,
            session_token: Option<String>,
            expiration: Option<String>,
        }
        let r: Response = quick_xml::de::from_str(body)
            .map_err(|e| format!("not an AssumeRoleWithWebIdentity answer: {e}"))?;
        let c = r.assume_role_with_web_identity_result.credentials;
        Ok(Answer {
            key_id: c.access_key_id,
            secret: c.secret_access_key,
            token: c.session_token,
            expiration: c.expiration,
        })
    }
}

/// Credentials that are fixed, or fetched from a [`Provider`] and fetched
/// again before they expire.
pub struct Refreshing {
    provider: Option<Provider>,
    cached: Expiring<Credentials>,
}

impl Refreshing {
    /// Fixed credentials (environment, profile).
    pub fn fixed(c: Credentials) -> Refreshing {
        Refreshing {
            provider: None,
            cached: Expiring::fixed(c),
        }
    }

    /// Credentials from `provider`, fetched when first needed.
    pub fn from(provider: Provider) -> Refreshing {
        Refreshing {
            provider: Some(provider),
            cached: Expiring::empty(),
        }
    }

    /// Who signs, for messages: the access key id and where it came from.
    pub fn who(&self) -> String {
        match self.cached.peek() {
            Some(c) => format!("access key id {} (from {})", c.key_id, c.source),
            None => self
                .provider
                .as_ref()
                .map(|p| p.describe())
                .unwrap_or_default(),
        }
    }

    /// Valid credentials: the cached ones, or fresh ones once those are
    /// within a minute of their expiry.
    pub fn current(&self) -> Result<Credentials> {
        self.cached.current(|| match &self.provider {
            Some(p) => p.fetch(),
            None => Err(Error::failed("S3 credentials expired")),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_environment_picks_web_identity_then_container_then_instance() {
        let env = crate::store::test_env;
        let p = Provider::from_env(
            &env(&[
                ("AWS_WEB_IDENTITY_TOKEN_FILE", "/t"),
                ("AWS_ROLE_ARN", "arn:aws:iam::1:role/r"),
                ("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "/v2/x"),
            ]),
            "eu-west-3",
        );
        assert!(
            matches!(&p, Some(Provider::WebIdentity { sts, .. }) if sts == "https://sts.eu-west-3.amazonaws.com")
        );
        let p = Provider::from_env(
            &env(&[("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "/v2/x")]),
            "r",
        );
        assert!(
            matches!(&p, Some(Provider::Container { url, .. }) if url == "http://169.254.170.2/v2/x")
        );
        let p = Provider::from_env(&env(&[]), "r");
        assert!(matches!(&p, Some(Provider::Instance { endpoint }) if endpoint == IMDS_ENDPOINT));
        assert!(Provider::from_env(&env(&[("AWS_EC2_METADATA_DISABLED", "true")]), "r").is_none());
    }

    #[test]
    fn answers_of_the_metadata_service_and_sts_are_read() {
        let a = Json::parse(r#"{"Code":"Success","AccessKeyId":"ASIA1","SecretAccessKey":"s","Token":"t","Expiration":"2026-12-01T20:00:00Z"}"#).unwrap();
        assert_eq!(
            (a.key_id.as_str(), a.token.as_deref()),
            ("ASIA1", Some("t"))
        );
        let s = Sts::parse(
            "<AssumeRoleWithWebIdentityResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\"><AssumeRoleWithWebIdentityResult><Credentials><AccessKeyId>ASIA2</AccessKeyId><SecretAccessKey>x</SecretAccessKey><SessionToken>y</SessionToken><Expiration>2026-12-01T20:00:00Z</Expiration></Credentials></AssumeRoleWithWebIdentityResult></AssumeRoleWithWebIdentityResponse>",
        )
        .unwrap();
        assert_eq!(s.key_id, "ASIA2");
        assert_eq!(s.expiration.as_deref(), Some("2026-12-01T20:00:00Z"));
        assert!(Json::parse("{}").is_err());
    }
}
