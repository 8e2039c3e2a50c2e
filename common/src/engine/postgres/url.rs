//! libpq connection URIs (`postgres://`, `postgresql://`), the password held aside.

use crate::engine::url::{decode, encode, Login, ServerUrl};
use crate::error::{Error, Result};

/// A libpq connection URI taken apart, with the password held aside.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ConnUrl {
    /// Scheme, user and password (from the userinfo or a `password` parameter).
    pub login: Login,
    /// The host list as written: `host[:port][,host[:port]...]`, percent-encoded.
    pub hosts: String,
    /// The database name, decoded, as the URL gives it.
    pub dbname: Option<String>,
    /// Query parameters other than `password` and `dbname`, as written.
    pub params: Vec<(String, String)>,
}

impl ConnUrl {
    pub fn parse(url: &str) -> Result<ConnUrl> {
        let bad = |why: &str| {
            Error::usage(format!("invalid PostgreSQL URL: {why}"))
                .hint("use postgres://user@host:port/db (percent-encode special characters)")
        };
        if !crate::engine::registry::answers("postgres", url) {
            return Err(bad("the scheme must be postgres:// or postgresql://"));
        }
        let u = ServerUrl::parse(url).map_err(|why| bad(&why))?;
        let mut conn = ConnUrl {
            login: u.login,
            hosts: u.hosts,
            dbname: Some(u.path).filter(|d| !d.is_empty()),
            params: Vec::new(),
        };
        for ((k, v), raw) in u.query.into_iter().zip(u.raw_query) {
            match k.as_str() {
                "password" => conn.login.password = Some(v),
                "dbname" => conn.dbname = Some(v),
                _ => conn.params.push(raw),
            }
        }
        Ok(conn)
    }

    fn param(&self, key: &str) -> Option<String> {
        self.params
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| decode(v).unwrap_or_else(|_| v.clone()))
    }

    /// The user libpq will connect as.
    pub fn effective_user(&self) -> String {
        self.login
            .user
            .clone()
            .or_else(|| self.param("user"))
            .or_else(|| std::env::var("PGUSER").ok())
            .unwrap_or_else(crate::fsutil::current_user)
    }

    /// The database libpq will connect to: the URL's, else `PGDATABASE`, else the user's name.
    pub fn effective_db(&self) -> String {
        self.dbname
            .clone()
            .or_else(|| std::env::var("PGDATABASE").ok().filter(|d| !d.is_empty()))
            .unwrap_or_else(|| self.effective_user())
    }

    fn server_url(&self, password: Option<String>) -> ServerUrl {
        ServerUrl {
            login: Login {
                password,
                ..self.login.clone()
            },
            hosts: self.hosts.clone(),
            path: String::new(),
            query: Vec::new(),
            raw_query: Vec::new(),
        }
    }

    /// A password-free URI for database `db`.
    pub fn uri(&self, db: &str) -> String {
        self.server_url(None).display(db, &self.params)
    }

    /// The URI for database `db` with the password, for a child's environment only.
    pub fn uri_with_password(&self, db: &str) -> String {
        let plain = self.uri(db);
        let (Some(user), Some(pw)) = (&self.login.user, &self.login.password) else {
            return plain;
        };
        match plain.strip_prefix(&self.login.prefix()) {
            Some(rest) => format!(
                "{}://{}:{}@{rest}",
                self.login.scheme,
                encode(user),
                encode(pw)
            ),
            None => plain,
        }
    }

    /// The first host, or the local host for a unix socket.
    pub fn host(&self) -> String {
        let url = self.server_url(None);
        let host = url.first_host().map(|(h, _)| h).unwrap_or_default();
        let host = Some(host)
            .filter(|h| !h.is_empty())
            .or_else(|| self.param("host"))
            .or_else(|| std::env::var("PGHOST").ok())
            .unwrap_or_default();
        let host = host.split(',').next().unwrap_or("").to_string();
        if host.is_empty() || host.starts_with('/') || host.starts_with('@') {
            crate::fsutil::host_name()
        } else {
            host
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_password_is_taken_out_and_decoded() {
        let c = ConnUrl::parse("postgres://app:p%40ss%2Fw@db.example:5433/shop?sslmode=require")
            .expect("valid");
        assert_eq!(c.login.password.as_deref(), Some("p@ss/w"));
        assert_eq!(
            c.uri("shop"),
            "postgres://app@db.example:5433/shop?sslmode=require"
        );
        assert_eq!(
            c.uri_with_password("shop"),
            "postgres://app:p%40ss%2Fw@db.example:5433/shop?sslmode=require"
        );
        assert_eq!(c.host(), "db.example");
        assert_eq!(c.effective_db(), "shop");
    }

    #[test]
    fn a_percent_encoded_user_is_decoded_like_the_password() {
        let c = ConnUrl::parse("postgres://us%40er:pw@h/d").expect("valid");
        assert_eq!(c.login.user.as_deref(), Some("us@er"));
        assert_eq!(c.effective_user(), "us@er");
        assert_eq!(c.uri("d"), "postgres://us%40er@h/d");
        assert!(!c.uri("d").contains("pw"));
    }

    #[test]
    fn url_query_password_and_dbname_are_taken_out() {
        let c = ConnUrl::parse("postgresql:///?host=/run/pg&password=secret&dbname=app&port=5432")
            .expect("valid");
        assert_eq!(c.login.password.as_deref(), Some("secret"));
        assert_eq!(c.effective_db(), "app");
        assert_eq!(c.uri("other"), "postgresql:///other?host=/run/pg&port=5432");
        assert_eq!(c.host(), crate::fsutil::host_name());
    }

    #[test]
    fn url_socket_host_ipv6_and_host_lists() {
        let c = ConnUrl::parse("postgres://u@%2Ftmp%2Fsock:5432/d").expect("valid");
        assert_eq!(c.host(), crate::fsutil::host_name());
        assert_eq!(c.uri("x y"), "postgres://u@%2Ftmp%2Fsock:5432/x%20y");
        let c = ConnUrl::parse("postgres://u@[::1]:5432/d").expect("valid");
        assert_eq!(c.host(), "::1");
        let c = ConnUrl::parse("postgres://u:secret@h1:5432,h2:5433/d").expect("valid");
        assert_eq!(c.uri("d"), "postgres://u@h1:5432,h2:5433/d");
        assert_eq!(c.host(), "h1");
    }

    #[test]
    fn url_rejects_other_schemes() {
        assert!(ConnUrl::parse("mysql://u@h/d").is_err());
        assert!(ConnUrl::parse("postgres://u@h/d%zz").is_err());
    }
}
