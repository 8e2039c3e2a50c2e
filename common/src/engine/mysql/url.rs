//! MySQL/MariaDB URLs (`mysql://`, `mariadb://`), the password held aside.

use crate::engine::url::{encode, Login, ServerUrl};
use crate::error::{Error, Result};

/// A MySQL/MariaDB URL taken apart, with the password held aside.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ConnUrl {
    /// Scheme, user and password.
    pub login: Login,
    /// Decoded host (IPv6 without brackets), or empty.
    pub host: String,
    pub port: Option<u16>,
    pub socket: Option<String>,
    pub db: String,
}

impl ConnUrl {
    pub fn parse(url: &str) -> Result<ConnUrl> {
        let bad = |why: &str| {
            Error::usage(format!("invalid MySQL URL: {why}")).hint(
                "use mysql://user@host:port/db or mariadb://user@host/db?socket=/run/mysqld/mysqld.sock (percent-encode special characters)",
            )
        };
        if !crate::engine::registry::answers("mysql", url) {
            return Err(bad("the scheme must be mysql:// or mariadb://"));
        }
        let u = ServerUrl::parse(url).map_err(|why| bad(&why))?;
        if u.hosts.contains(',') {
            return Err(bad("a MySQL URL names one host"));
        }
        let (host, port) = u.first_host().map_err(|why| bad(&why))?;
        let mut socket = host.starts_with('/').then(|| host.clone());
        for (k, v) in u.query {
            match k.as_str() {
                "socket" => socket = Some(v),
                _ => return Err(bad(&format!("unknown parameter {k:?} (supported: socket)"))),
            }
        }
        let db = u.path.trim_end_matches('/').to_string();
        if db.contains('/') {
            return Err(bad("the database name cannot contain /"));
        }
        Ok(ConnUrl {
            login: u.login,
            host,
            port,
            socket,
            db,
        })
    }

    /// The URL for `db`, without the password.
    pub fn display(&self, db: &str) -> String {
        let mut s = self.login.prefix();
        if self.host.contains(':') {
            s.push_str(&format!("[{}]", self.host));
        } else {
            s.push_str(&encode(&self.host));
        }
        if let Some(p) = self.port {
            s.push_str(&format!(":{p}"));
        }
        s.push('/');
        s.push_str(&encode(db));
        if let (Some(sock), false) = (&self.socket, self.host.starts_with('/')) {
            s.push_str(&format!("?socket={}", encode(sock).replace("%2F", "/")));
        }
        s
    }

    /// Connection options for the client tools (no password: it goes in
    /// the environment, see `Mysql::command`).
    pub fn args(&self) -> Vec<String> {
        let mut a = Vec::new();
        if let Some(u) = &self.login.user {
            a.push(format!("--user={u}"));
        }
        if let Some(sock) = &self.socket {
            a.push("--protocol=socket".into());
            a.push(format!("--socket={sock}"));
        } else if !self.host.is_empty() {
            a.push(format!("--host={}", self.host));
            if self.host != "localhost" {
                a.push("--protocol=tcp".into());
            }
        }
        if let Some(p) = self.port {
            a.push(format!("--port={p}"));
        }
        a.push("--default-character-set=utf8mb4".into());
        a
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_password_is_held_aside() {
        let c = ConnUrl::parse("mysql://app:p%40ss%3Aw@db.example:3307/shop").expect("valid");
        assert_eq!(c.login.password.as_deref(), Some("p@ss:w"));
        assert_eq!(c.display("shop"), "mysql://app@db.example:3307/shop");
        assert!(!c.args().iter().any(|a| a.contains("p@ss")));
        assert!(c.args().contains(&"--protocol=tcp".to_string()));
        let c = ConnUrl::parse("mariadb://root@/x?socket=%2Ftmp%2Fm.sock").expect("valid");
        assert_eq!(c.socket.as_deref(), Some("/tmp/m.sock"));
        assert_eq!(c.display("x"), "mariadb://root@/x?socket=/tmp/m.sock");
        assert!(ConnUrl::parse("mysql://u@h/d?sslmode=x").is_err());
        assert!(ConnUrl::parse("postgres://u@h/d").is_err());
    }

    #[test]
    fn a_percent_encoded_user_is_decoded_like_the_password() {
        let c = ConnUrl::parse("mysql://us%40er%2Fx:pw@[::1]:3306/d").expect("valid");
        assert_eq!(c.login.user.as_deref(), Some("us@er/x"));
        assert!(c.args().contains(&"--user=us@er/x".to_string()));
        assert_eq!(c.display("d"), "mysql://us%40er%2Fx@[::1]:3306/d");
        assert!(!c.display("d").contains("pw"));
        assert!(ConnUrl::parse("mysql://u@h1,h2/d").is_err());
    }
}
