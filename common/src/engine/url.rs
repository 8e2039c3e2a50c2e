//! Server database URLs (`scheme://user:password@host:port/db?k=v`): one
//! parser for MySQL/MariaDB and PostgreSQL, built on the `url` crate.
//!
//! The user, password, path and query values are percent-decoded the same
//! way for every engine; the host is kept as written, since PostgreSQL
//! writes socket directories there (`%2Ftmp`) and may list several hosts
//! (`h1:5432,h2:5433`), a form the `url` crate does not take: the host list
//! is cut out before parsing and handed back as written.

use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

/// Everything but the unreserved characters of RFC 3986 is encoded.
const COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// Who a server URL connects as: its scheme, user and password, as every
/// engine's URL has them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Login {
    /// `postgres`, `mysql`, ... (lower case).
    pub scheme: String,
    /// The user, decoded (`None` when empty).
    pub user: Option<String>,
    /// The password, decoded; never printed.
    pub password: Option<String>,
}

impl Login {
    /// How the URL begins without its password: `scheme://`, and the user
    /// (encoded) with its `@`.
    pub fn prefix(&self) -> String {
        let mut s = format!("{}://", self.scheme);
        if let Some(u) = &self.user {
            s.push_str(&encode(u));
            s.push('@');
        }
        s
    }
}

/// A server URL taken apart, the password held aside.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ServerUrl {
    /// Scheme, user and password.
    pub login: Login,
    /// The host part as written: percent-encoded, IPv6 in brackets, with
    /// its `:port`, possibly empty, and for PostgreSQL possibly a list.
    pub hosts: String,
    /// The path without its leading `/`, decoded.
    pub path: String,
    /// The query's pairs, decoded, in order.
    pub query: Vec<(String, String)>,
    /// The query's pairs as written, in order.
    pub raw_query: Vec<(String, String)>,
}

/// Decodes `%XX` escapes (a lone `%` is an error, as is a result that is not UTF-8).
pub(crate) fn decode(s: &str) -> Result<String, String> {
    let bytes = s.as_bytes();
    let bad_escape = bytes.iter().enumerate().any(|(i, &b)| {
        b == b'%'
            && !bytes
                .get(i + 1..i + 3)
                .is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit))
    });
    if bad_escape {
        return Err("bad percent-encoding".into());
    }
    percent_decode_str(s)
        .decode_utf8()
        .map(|c| c.into_owned())
        .map_err(|_| "percent-encoding is not UTF-8".into())
}

/// Encodes everything but unreserved characters.
pub(crate) fn encode(s: &str) -> String {
    utf8_percent_encode(s, COMPONENT).to_string()
}

/// The authority of `rest` (what follows `scheme://`) and what follows it.
fn split_authority(rest: &str) -> (&str, &str) {
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    rest.split_at(end)
}

impl ServerUrl {
    /// Parses a server URL; the error says what is wrong, for the caller's message.
    pub fn parse(url: &str) -> Result<ServerUrl, String> {
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| "expected scheme://...".to_string())?;
        let (authority, tail) = split_authority(rest);
        let hosts = authority
            .rsplit_once('@')
            .map_or(authority, |(_, h)| h)
            .to_string();
        // The url crate takes exactly one host: a list (or no host, a local
        // socket) stands aside for the parse and is kept as written.
        let for_parse = if hosts.is_empty() || hosts.contains(',') {
            let userinfo = authority.rsplit_once('@').map(|(u, _)| format!("{u}@"));
            format!("{scheme}://{}host-list{tail}", userinfo.unwrap_or_default())
        } else {
            url.to_string()
        };
        let parsed = url::Url::parse(&for_parse).map_err(|e| e.to_string())?;
        let user = Some(decode(parsed.username())?).filter(|u| !u.is_empty());
        let password = parsed.password().map(decode).transpose()?;
        let path = decode(parsed.path().strip_prefix('/').unwrap_or(parsed.path()))?;
        // Pairs are split by hand: form decoding would turn `+` into a space.
        let raw_query: Vec<(String, String)> = parsed
            .query()
            .unwrap_or("")
            .split('&')
            .filter(|p| !p.is_empty())
            .map(|p| {
                let (k, v) = p.split_once('=').unwrap_or((p, ""));
                (k.to_string(), v.to_string())
            })
            .collect();
        let query = raw_query
            .iter()
            .map(|(k, v)| Ok((decode(k)?, decode(v)?)))
            .collect::<Result<_, String>>()?;
        Ok(ServerUrl {
            login: Login {
                scheme: parsed.scheme().to_string(),
                user,
                password,
            },
            hosts,
            path,
            query,
            raw_query,
        })
    }

    /// The first host of the list and its port, the host decoded, without IPv6 brackets.
    pub fn first_host(&self) -> Result<(String, Option<u16>), String> {
        let first = self.hosts.split(',').next().unwrap_or("");
        let (host, port) = if let Some(v6) = first.strip_prefix('[') {
            let (h, after) = v6
                .split_once(']')
                .ok_or_else(|| "unclosed [ in host".to_string())?;
            (h.to_string(), after.strip_prefix(':'))
        } else {
            match first.rsplit_once(':') {
                Some((h, p)) => (decode(h)?, Some(p)),
                None => (decode(first)?, None),
            }
        };
        let port = match port {
            None | Some("") => None,
            Some(p) => Some(
                p.parse::<u16>()
                    .map_err(|_| "the port is not a number".to_string())?,
            ),
        };
        Ok((host, port))
    }

    /// The URL with `path` and the raw query pairs, without the password.
    pub fn display(&self, path: &str, query: &[(String, String)]) -> String {
        let mut s = self.login.prefix();
        s.push_str(&self.hosts);
        s.push('/');
        s.push_str(&encode(path));
        if !query.is_empty() {
            let pairs: Vec<String> = query.iter().map(|(k, v)| format!("{k}={v}")).collect();
            s.push('?');
            s.push_str(&pairs.join("&"));
        }
        s
    }
}

/// `url` with any password taken out (the userinfo's and a `password=`
/// query parameter), for messages about URLs that may not even parse.
pub fn without_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let (authority, tail) = split_authority(rest);
    let authority = crate::output::userinfo_without_password(authority);
    let tail = match tail.split_once('?') {
        Some((path, query)) => {
            let kept: Vec<&str> = query
                .split('&')
                .filter(|p| !p.starts_with("password="))
                .collect();
            if kept.is_empty() {
                path.to_string()
            } else {
                format!("{path}?{}", kept.join("&"))
            }
        }
        None => tail.to_string(),
    };
    format!("{scheme}://{authority}{tail}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_bad_escapes() {
        let s = "Pw-1@/:!x é";
        assert_eq!(decode(&encode(s)).expect("decodes"), s);
        assert_eq!(encode("/a b"), "%2Fa%20b");
        assert!(decode("%zz").is_err());
        assert!(decode("%f").is_err());
        assert!(decode("%ff").is_err());
    }

    #[test]
    fn user_and_password_are_decoded_alike_for_every_scheme() {
        for scheme in ["postgres", "mysql"] {
            let u = ServerUrl::parse(&format!(
                "{scheme}://us%40er:p%40ss%3Aw%2F@db.example:3307/shop%20x?sslmode=require"
            ))
            .expect("valid");
            assert_eq!(u.login.user.as_deref(), Some("us@er"));
            assert_eq!(u.login.password.as_deref(), Some("p@ss:w/"));
            assert_eq!(u.hosts, "db.example:3307");
            assert_eq!(u.path, "shop x");
            assert_eq!(
                u.first_host().expect("host"),
                ("db.example".into(), Some(3307))
            );
            let shown = u.display(&u.path, &u.raw_query);
            assert_eq!(
                shown,
                format!("{scheme}://us%40er@db.example:3307/shop%20x?sslmode=require")
            );
            assert!(!shown.contains("p%40ss") && !shown.contains("p@ss"));
        }
    }

    #[test]
    fn host_lists_sockets_and_ipv6_are_kept_as_written() {
        let u = ServerUrl::parse("postgres://u:pw@h1:5432,h2:5433/d").expect("valid");
        assert_eq!(u.hosts, "h1:5432,h2:5433");
        assert_eq!(u.login.password.as_deref(), Some("pw"));
        assert_eq!(u.first_host().expect("host"), ("h1".into(), Some(5432)));
        let u = ServerUrl::parse("postgres://u@%2Ftmp%2Fsock:5432/d").expect("valid");
        assert_eq!(u.first_host().expect("host").0, "/tmp/sock");
        let u = ServerUrl::parse("mysql://u@[::1]:3306/d").expect("valid");
        assert_eq!(u.first_host().expect("host"), ("::1".into(), Some(3306)));
        assert!(ServerUrl::parse("mysql://u@h:notaport/d").is_err());
    }

    #[test]
    fn passwords_are_taken_out_of_any_url() {
        assert_eq!(
            without_password("mysql://app:s3cret@h:1/d?socket=x&password=s3cret"),
            "mysql://app@h:1/d?socket=x"
        );
        assert_eq!(without_password("sqlite:/x.db"), "sqlite:/x.db");
        assert_eq!(without_password("postgres://a:b:c@h/d"), "postgres://a@h/d");
    }
}
