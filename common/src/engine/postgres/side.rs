//! PostgreSQL side databases: new databases on the target's server, swapped
//! in by `ALTER DATABASE ... RENAME`.
//!
//! The swap refuses new connections to the target (`ALLOW_CONNECTIONS
//! false`), ends the sessions still there after the grace period with
//! `pg_terminate_backend`, and renames both databases in one transaction,
//! so either both renames happen or neither. The session that does it is
//! connected to a maintenance database, since PostgreSQL renames no
//! database that anyone (itself included) is connected to.

use super::{
    no_session, quote_ident, quote_literal, require_tools, Child, Postgres, Psql, MAINTENANCE_DBS,
};
use crate::cleanup::ActionGuard;
use crate::engine::side::{self, Home, Session, Swap};
use crate::engine::Engine;
use crate::error::{Error, Result};
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

/// How long ended sessions get to go away before the swap gives up.
const TERMINATE_WAIT: Duration = Duration::from_secs(15);

/// A PostgreSQL server holding the target; sides are databases on it.
struct PgHome {
    pg: Postgres,
}

/// The home of a `postgres://` target.
pub(crate) fn home(url: &str) -> Result<Box<dyn Home>> {
    let pg = Postgres::new(url)?;
    let db = pg.db();
    if MAINTENANCE_DBS.contains(&db.as_str()) {
        return Err(Error::usage(format!(
            "{} is a maintenance database; it cannot be the target of a promotion",
            pg.url()
        ))
        .hint("point the environment's url at the application's database"));
    }
    Ok(Box::new(PgHome { pg }))
}

impl PgHome {
    /// The database `name` on the same server, with the same credentials.
    fn at(&self, name: &str) -> Postgres {
        let mut pg = self.pg.clone();
        pg.conn.dbname = Some(name.to_string());
        pg
    }

    /// A session on a maintenance database: the named one, else `postgres`, else `template1`.
    fn maintenance_session(&self) -> Result<Psql> {
        let candidates: Vec<String> = match &self.pg.maintenance {
            Some(db) => vec![db.clone()],
            None => MAINTENANCE_DBS.iter().map(|s| s.to_string()).collect(),
        };
        let mut first_err = None;
        for db in candidates {
            let attempt = self
                .pg
                .psql(&db)
                .and_then(|mut p| p.query("SELECT 1;").map(|_| p));
            match attempt {
                Ok(p) => return Ok(p),
                Err(e) => {
                    let missing = e.is_undefined_object() || no_session(&e);
                    first_err.get_or_insert(e);
                    if !missing {
                        break;
                    }
                }
            }
        }
        Err(first_err.expect("tried at least once"))
    }
}

fn in_list(names: &[&str]) -> String {
    names
        .iter()
        .map(|n| quote_literal(n))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Client sessions on `names`, seen from the session `m`.
fn sessions_in(m: &mut Psql, names: &[&str]) -> Result<Vec<Session>> {
    let lines = m.query(&format!(
        "SELECT json_build_array(pid, datname, coalesce(usename, ''), coalesce(application_name, ''), \
           coalesce(host(client_addr), '')) \
         FROM pg_catalog.pg_stat_activity \
         WHERE datname IN ({}) AND pid <> pg_catalog.pg_backend_pid() AND backend_type = 'client backend' \
         ORDER BY pid;",
        in_list(names)
    ))?;
    lines
        .iter()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let (pid, database, user, application, client): (i64, String, String, String, String) =
                serde_json::from_str(l).map_err(|e| {
                    Error::failed(format!("unexpected session line from psql {l:?}: {e}"))
                })?;
            Ok(Session {
                pid,
                database,
                user,
                application,
                client,
            })
        })
        .collect()
}

fn describe(sessions: &[Session]) -> String {
    sessions
        .iter()
        .map(Session::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

impl PgHome {
    /// Gives `side` the target's owner, database-level settings and grants,
    /// which belong to a database rather than to what a dump holds; what
    /// cannot be carried over (not permitted) is returned as notes.
    fn carry_over(&self, target: &str, side: &str) -> Vec<String> {
        let (t, s) = (quote_literal(target), quote_ident(side));
        let mut notes = Vec::new();
        let owner = self.pg.run_maintenance(&format!(
            "SELECT pg_catalog.pg_get_userbyid(datdba) FROM pg_catalog.pg_database WHERE datname = {t};"
        ));
        match owner
            .as_ref()
            .map(|l| l.first().map(|o| o.trim().to_string()))
        {
            Ok(Some(owner)) if !owner.is_empty() => {
                if let Err(e) = self.pg.run_maintenance(&format!(
                    "ALTER DATABASE {s} OWNER TO {};",
                    quote_ident(&owner)
                )) {
                    notes.push(format!(
                        "the new database could not be given to {target}'s owner {owner}: {}",
                        e.message
                    ));
                }
            }
            _ => notes.push(format!("{target}'s owner could not be read")),
        }
        // Settings (ALTER DATABASE ... SET) and grants, as SQL generated by the server itself.
        let generate = format!(
            "SELECT format('ALTER DATABASE %I SET %s = %L;', {sl}, split_part(c, '=', 1), substr(c, strpos(c, '=') + 1)) \
             FROM pg_catalog.pg_db_role_setting r, unnest(r.setconfig) c \
             WHERE r.setrole = 0 AND r.setdatabase = (SELECT oid FROM pg_catalog.pg_database WHERE datname = {t}) \
             UNION ALL \
             SELECT format('REVOKE ALL ON DATABASE %I FROM PUBLIC;', {sl}) \
             FROM pg_catalog.pg_database WHERE datname = {t} AND datacl IS NOT NULL \
             UNION ALL \
             SELECT format('GRANT %s ON DATABASE %I TO %s%s;', a.privilege_type, {sl}, \
                    CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(pg_catalog.pg_get_userbyid(a.grantee)) END, \
                    CASE WHEN a.is_grantable THEN ' WITH GRANT OPTION' ELSE '' END) \
             FROM pg_catalog.pg_database d, aclexplode(d.datacl) a WHERE d.datname = {t};",
            sl = quote_literal(side)
        );
        match self.pg.run_maintenance(&generate) {
            Ok(lines) if lines.iter().all(|l| l.trim().is_empty()) => {}
            Ok(lines) => {
                if let Err(e) = self.pg.run_maintenance(&lines.join("\n")) {
                    notes.push(format!(
                        "{target}'s settings and grants could not be carried over: {}",
                        e.message
                    ));
                }
            }
            Err(e) => notes.push(format!(
                "{target}'s settings and grants could not be read: {}",
                e.message
            )),
        }
        notes
    }
}

impl Home for PgHome {
    fn target(&self) -> String {
        self.pg.db()
    }

    fn side_name(&self, tag: &str) -> String {
        side::side_name(&self.pg.db(), tag, side::PG_NAME_MAX)
    }

    fn engine_of(&self, name: &str) -> Result<Box<dyn Engine>> {
        Ok(Box::new(self.at(name)))
    }

    fn child_env(&self, name: &str) -> Vec<(String, String)> {
        let conn = &self.at(name).conn;
        let mut env = Vec::new();
        if let Some(pw) = &conn.password {
            env.push(("PGPASSWORD".to_string(), pw.clone()));
        }
        env.push(("DATABASE_URL".to_string(), conn.uri_with_password(name)));
        env.push(("PGDATABASE".to_string(), name.to_string()));
        env
    }

    fn exists(&self, name: &str) -> Result<bool> {
        self.at(name).exists()
    }

    fn sides(&self, kind: &str) -> Result<Vec<String>> {
        let target = self.pg.db();
        let mark = format!("{}{kind}", side::MARK);
        let lines = self
            .pg
            .run_maintenance("SELECT datname FROM pg_catalog.pg_database ORDER BY 1;")?;
        Ok(lines
            .into_iter()
            .map(|l| l.trim().to_string())
            .filter(|n| match n.find(&mark) {
                // A name at the identifier limit may carry a shortened target name.
                Some(i) => {
                    n[..i] == target
                        || (n.len() == side::PG_NAME_MAX && i > 0 && target.starts_with(&n[..i]))
                }
                None => false,
            })
            .collect())
    }

    fn run_sql_file(&self, name: &str, file: &Path) -> Result<()> {
        if !file.is_file() {
            return Err(Error::usage(format!(
                "{}: no such SQL file",
                file.display()
            )));
        }
        require_tools(&["psql"])?;
        let db = self.at(name);
        let mut cmd = db.command("psql");
        cmd.stdin(Stdio::null()).stdout(Stdio::null());
        cmd.args([
            "-X",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            "--single-transaction",
            "-f",
        ])
        .arg(file)
        .arg("-d")
        .arg(db.conn.uri(name));
        Child::spawn("psql", super::CLIENT_PACKAGE_HINT, cmd)?.finish(&format!(
            "{} failed on {} (rolled back)",
            file.display(),
            db.url()
        ))
    }

    fn sessions(&self, names: &[&str]) -> Result<Vec<Session>> {
        let mut m = self.maintenance_session()?;
        let s = sessions_in(&mut m, names)?;
        m.finish()?;
        Ok(s)
    }

    fn swap(&self, side: &str, keep_as: &str, grace: Option<Duration>) -> Result<Swap> {
        let target = self.pg.db();
        if !self.exists(side)? {
            return Err(Error::not_found(format!("database {side} does not exist")));
        }
        if self.exists(keep_as)? {
            return Err(Error::refused(format!(
                "database {keep_as} already exists; nothing was changed"
            )));
        }
        let notes = self.carry_over(&target, side);
        let mut m = self.maintenance_session()?;
        let start = Instant::now();
        let present = sessions_in(&mut m, &[&target])?;
        if !present.is_empty() {
            let Some(grace) = grace else {
                return Err(Error::refused(format!(
                    "{} session(s) connected to {target}: {}; the swap was refused and nothing was changed",
                    present.len(),
                    describe(&present)
                ))
                .hint("stop the clients, or pass --grace D to end their sessions after D"));
            };
            side::wait_for(grace, || Ok(sessions_in(&mut m, &[&target])?.is_empty()))?;
        }
        let waited = start.elapsed();
        let (t, s, k) = (
            quote_ident(&target),
            quote_ident(side),
            quote_ident(keep_as),
        );
        // Whichever of the two is still closed to connections when the swap
        // fails or is interrupted gets opened again.
        let reopen = format!(
            "DO $$DECLARE d text; BEGIN FOR d IN SELECT datname FROM pg_catalog.pg_database \
             WHERE datname IN ({}) AND NOT datallowconn LOOP \
             EXECUTE format('ALTER DATABASE %I ALLOW_CONNECTIONS true', d); END LOOP; END$$;",
            in_list(&[&target, keep_as])
        );
        let _on_interrupt = {
            let (pg, sql) = (self.pg.clone(), reopen.clone());
            ActionGuard::new(move || {
                let _ = pg.run_maintenance(&sql);
            })
        };
        let clock = Instant::now();
        m.query(&format!("ALTER DATABASE {t} ALLOW_CONNECTIONS false;"))?;
        let renamed = (|| {
            let ended = sessions_in(&mut m, &[&target])?;
            if grace.is_none() && !ended.is_empty() {
                // Without a grace period nobody is thrown out, not even a late arrival.
                return Err(Error::refused(format!(
                    "{} session(s) connected to {target} while the swap began: {}; nothing was changed",
                    ended.len(),
                    describe(&ended)
                ))
                .hint("stop the clients, or pass --grace D to end their sessions after D"));
            }
            m.query(&format!(
                "SELECT count(pg_catalog.pg_terminate_backend(pid)) FROM pg_catalog.pg_stat_activity \
                 WHERE datname IN ({}) AND pid <> pg_catalog.pg_backend_pid() AND backend_type = 'client backend';",
                in_list(&[&target, side])
            ))?;
            let gone = side::wait_for(TERMINATE_WAIT, || {
                Ok(sessions_in(&mut m, &[&target, side])?.is_empty())
            })?;
            if !gone {
                return Err(Error::failed(format!(
                    "sessions on {target} did not end within {}s of pg_terminate_backend; nothing was changed",
                    TERMINATE_WAIT.as_secs()
                )));
            }
            m.query(&format!(
                "BEGIN;\nALTER DATABASE {t} RENAME TO {k};\nALTER DATABASE {s} RENAME TO {t};\nCOMMIT;"
            ))?;
            m.query(&format!("ALTER DATABASE {k} ALLOW_CONNECTIONS true;"))?;
            Ok(ended)
        })();
        match renamed {
            Ok(ended) => {
                let duration = clock.elapsed();
                m.finish()?;
                Ok(Swap {
                    waited,
                    ended,
                    duration,
                    notes,
                })
            }
            Err(e) => {
                drop(m);
                if let Err(re) = self.pg.run_maintenance(&reopen) {
                    return Err(e.context(format!(
                        "the swap failed and {target} may still refuse connections ({re}); \
                         run ALTER DATABASE {t} ALLOW_CONNECTIONS true"
                    )));
                }
                Err(e)
            }
        }
    }
}
