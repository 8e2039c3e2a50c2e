//! HTTP clients for everything dbsafe talks to over HTTP(S): S3-compatible
//! stores, Pushgateways, webhooks, credential endpoints.
//!
//! They trust the public web PKI (webpki-roots) plus the certificates in
//! `SSL_CERT_FILE`, the variable OpenSSL, curl and the AWS SDKs read for a
//! private CA; `AWS_CA_BUNDLE` is read too, as the aws CLI does.

use crate::error::{Error, Result};
use std::sync::Arc;

/// An agent builder with dbsafe's trust roots and user agent.
pub fn agent_builder() -> Result<ureq::AgentBuilder> {
    Ok(ureq::AgentBuilder::new()
        .tls_config(tls_config()?)
        .user_agent(concat!("dbsafe/", env!("CARGO_PKG_VERSION"))))
}

fn tls_config() -> Result<Arc<rustls::ClientConfig>> {
    let mut roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    for var in ["SSL_CERT_FILE", "AWS_CA_BUNDLE"] {
        let Some(path) = std::env::var_os(var).filter(|p| !p.is_empty()) else {
            continue;
        };
        let shown = std::path::Path::new(&path).display().to_string();
        let certs = read_pem_certs(std::path::Path::new(&path))
            .map_err(|e| Error::usage(format!("{var}={shown}: {e}")))?;
        for cert in certs {
            roots
                .add(cert)
                .map_err(|e| Error::usage(format!("{var}={shown}: {e}")))?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::failed(format!("TLS setup: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

fn read_pem_certs(
    path: &std::path::Path,
) -> std::result::Result<Vec<rustls::pki_types::CertificateDer<'static>>, String> {
    use rustls::pki_types::pem::PemObject;
    let certs = rustls::pki_types::CertificateDer::pem_file_iter(path)
        .map_err(|e| e.to_string())?
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;
    if certs.is_empty() {
        return Err("no PEM certificate in it".into());
    }
    Ok(certs)
}

/// An HTTP `Authorization: Basic` value for `user` and `password`.
pub fn basic_auth(user: &str, password: &str) -> String {
    use base64::Engine;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

/// Why a credentials or token endpoint gave nothing usable, and whether
/// asking again may help: no answer, throttling or a server error may pass;
/// a refusal (a wrong token, a role that cannot be assumed), a token file
/// that cannot be read or an answer that is not one will not.
#[derive(Debug)]
pub(crate) struct SourceFailure {
    /// What went wrong, without the URL (it may hold a signature).
    pub message: String,
    /// Whether it will be the same on the next attempt.
    pub lasting: bool,
    /// The HTTP status that said so, if one did.
    pub status: Option<u16>,
    /// The error answer's body, for a source whose errors it tells apart.
    body: String,
}

/// Whether a request answered with `status` may succeed when sent again:
/// a timeout, throttling or a server that is down for now.
pub(crate) fn transient_status(status: u16) -> bool {
    matches!(status, 408 | 429 | 500 | 502 | 503 | 504)
}

impl SourceFailure {
    /// A failure that asking again will not mend.
    pub fn lasting(message: impl Into<String>) -> SourceFailure {
        SourceFailure {
            message: message.into(),
            lasting: true,
            status: None,
            body: String::new(),
        }
    }

    /// A failure that may pass: no answer, or an answer cut short.
    fn passing(message: impl Into<String>) -> SourceFailure {
        SourceFailure {
            lasting: false,
            ..SourceFailure::lasting(message)
        }
    }

    /// The same failure, passing if its answer names one of the error
    /// `codes` (`<Code>...</Code>`): STS throttles with HTTP 400.
    pub fn passing_on_codes(self, codes: &[&str]) -> SourceFailure {
        match codes
            .iter()
            .find(|c| self.body.contains(&format!("<Code>{c}</Code>")))
        {
            Some(c) => SourceFailure {
                message: format!("{} ({c})", self.message),
                lasting: false,
                ..self
            },
            None => self,
        }
    }

    /// The same failure, passing if its status is one of `statuses`: what a
    /// source answers while it is busy or being updated (Azure's identity
    /// endpoint says 404 and 410 then).
    pub fn passing_on(self, statuses: &[u16]) -> SourceFailure {
        let passing = self.status.is_some_and(|s| statuses.contains(&s));
        SourceFailure {
            lasting: self.lasting && !passing,
            ..self
        }
    }

    /// The same failure, its message following `what`.
    pub fn within(self, what: &str) -> SourceFailure {
        SourceFailure {
            message: format!("{what}: {}", self.message),
            ..self
        }
    }

    /// The error of a source described by `context`: a lasting failure is
    /// the configuration's (exit 2, never retried); another leaves the
    /// store out of reach for now (exit 2, retried by the store's layer).
    pub fn into_error(self, context: &str) -> Error {
        let message = format!("{context}: {}", self.message);
        match self.lasting {
            true => Error::usage(message),
            false => Error::unavailable(message),
        }
    }
}

impl From<String> for SourceFailure {
    /// A message of a source's own checks: lasting.
    fn from(message: String) -> SourceFailure {
        SourceFailure::lasting(message)
    }
}

/// The body of a successful answer; `HTTP N` or the transport error
/// (without its URL) otherwise: for the small answers of credential and
/// token endpoints. Timeouts, throttling and servers down for now pass
/// ([`transient_status`]); other refusals last, unless their source says
/// otherwise ([`SourceFailure::passing_on`], [`SourceFailure::passing_on_codes`]).
pub(crate) fn answer_text(
    answer: std::result::Result<ureq::Response, ureq::Error>,
) -> std::result::Result<String, SourceFailure> {
    match answer {
        Ok(r) => r
            .into_string()
            .map_err(|e| SourceFailure::passing(e.to_string())),
        Err(ureq::Error::Status(code, r)) => Err(SourceFailure {
            message: format!("HTTP {code}"),
            lasting: !transient_status(code),
            status: Some(code),
            body: r.into_string().unwrap_or_default(),
        }),
        Err(ureq::Error::Transport(t)) => Err(SourceFailure::passing(transport_message(&t))),
    }
}

/// A URL as messages show it: its scheme, host and port only. A webhook's
/// path (Slack's) or query (a token) is its secret.
pub(crate) fn origin_of(url: &str) -> String {
    url::Url::parse(url)
        .map(|u| u.origin().ascii_serialization())
        .unwrap_or_else(|_| "(an invalid URL)".into())
}

/// A failed request, as messages say it: its status, or the transport
/// error without its URL.
pub(crate) fn failure_message(e: &ureq::Error) -> String {
    match e {
        ureq::Error::Status(code, _) => format!("HTTP {code}"),
        ureq::Error::Transport(t) => transport_message(t),
    }
}

/// A transport error without its URL: a presigned URL or a SAS token holds
/// a signature.
pub(crate) fn transport_message(t: &ureq::Transport) -> String {
    let mut s = t.kind().to_string();
    if let Some(m) = t.message() {
        s.push_str(": ");
        s.push_str(m);
    }
    if let Some(src) = std::error::Error::source(t) {
        let src = src.to_string();
        if !s.contains(&src) {
            s.push_str(": ");
            s.push_str(&src);
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_auth_is_base64_of_user_colon_password() {
        assert_eq!(
            basic_auth("Aladdin", "open sesame"),
            "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ=="
        );
    }

    #[test]
    fn a_ca_file_without_certificates_is_an_error_naming_it() {
        let (_dir, f) = crate::testing::temp_file("ca.pem", "not a certificate\n");
        assert!(read_pem_certs(&f)
            .unwrap_err()
            .contains("no PEM certificate"));
    }

    #[test]
    fn a_refused_request_lasts_and_throttling_or_a_server_error_may_pass() {
        let answered = |code: u16| {
            let response = ureq::Response::new(code, "status", "").expect("a response");
            answer_text(Err(ureq::Error::Status(code, response))).expect_err("a failure")
        };
        for code in [400, 401, 403, 404] {
            let f = answered(code);
            assert!(f.lasting, "HTTP {code}");
            assert_eq!(
                f.within("token").into_error("source").kind,
                crate::error::Kind::Usage
            );
        }
        for code in [408, 429, 500, 503] {
            let f = answered(code);
            assert!(!f.lasting, "HTTP {code}");
            let e = f.within("token").into_error("source");
            assert_eq!(
                (e.kind, e.message.as_str()),
                (
                    crate::error::Kind::Unavailable,
                    format!("source: token: HTTP {code}").as_str()
                )
            );
        }
        assert!(SourceFailure::from("no access_token in the answer".to_string()).lasting);
        // STS throttles with a 400 that names it; other 400s are refusals.
        let sts = |code: &str| {
            let body = format!("<ErrorResponse><Error><Type>Sender</Type><Code>{code}</Code><Message>m</Message></Error></ErrorResponse>");
            let response = ureq::Response::new(400, "Bad Request", &body).expect("a response");
            answer_text(Err(ureq::Error::Status(400, response)))
                .expect_err("a failure")
                .passing_on_codes(&["Throttling", "IDPCommunicationError"])
        };
        let throttled = sts("Throttling");
        assert!(!throttled.lasting);
        assert_eq!(throttled.message, "HTTP 400 (Throttling)");
        assert!(!sts("IDPCommunicationError").lasting);
        assert!(sts("InvalidIdentityToken").lasting);
        assert!(sts("AccessDenied").lasting);
        // A source that says 404 or 410 while it is being updated.
        assert!(!answered(404).passing_on(&[404, 410]).lasting);
        assert!(!answered(410).passing_on(&[404, 410]).lasting);
        assert!(answered(403).passing_on(&[404, 410]).lasting);
        assert!(
            SourceFailure::lasting("no token file")
                .passing_on(&[404])
                .lasting,
            "no status: it lasts"
        );
    }
}
