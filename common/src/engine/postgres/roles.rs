//! The cluster roles a database depends on, recorded with every logical
//! snapshot and created on restore when missing.
//!
//! A `pg_dump` carries owners and grants by name but not the roles
//! themselves, so a restore into a fresh server fails on the first
//! `ALTER ... OWNER TO app_owner`. The snapshot records the roles that own
//! objects, hold privileges, default privileges or per-database settings in
//! the database, the roles those are members of and the roles that are
//! members of them, with their attributes and memberships, never their
//! passwords. The restore script creates the roles that are missing and
//! grants memberships only to roles it created: an existing role is never
//! altered. The script is plain SQL, so `psql -f` runs it without dbsafe.

use serde::{Deserialize, Serialize};

/// A role as the snapshot records it (no password, ever).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Role {
    /// `rolname`.
    pub name: String,
    /// `rolsuper`.
    pub superuser: bool,
    /// `rolinherit`.
    pub inherit: bool,
    /// `rolcreaterole`.
    pub createrole: bool,
    /// `rolcreatedb`.
    pub createdb: bool,
    /// `rolcanlogin`.
    pub login: bool,
    /// `rolreplication`.
    pub replication: bool,
    /// `rolbypassrls`.
    pub bypassrls: bool,
    /// `rolconnlimit` (-1: none).
    pub connlimit: i32,
    /// `rolvaliduntil`, as the server printed it.
    pub valid_until: Option<String>,
}

/// `member` is a member of `role`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Membership {
    /// The role granted.
    pub role: String,
    /// The role it is granted to.
    pub member: String,
    /// `WITH ADMIN OPTION`.
    pub admin: bool,
}

/// What a snapshot records of the cluster's globals.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Globals {
    /// The roles, by name.
    pub roles: Vec<Role>,
    /// Their memberships among themselves.
    pub memberships: Vec<Membership>,
}

/// The query that returns [`Globals`] as one JSON document, run in the
/// database being snapshotted.
pub const QUERY: &str = r#"
WITH RECURSIVE
direct(oid) AS (
    SELECT relowner FROM pg_class
    UNION SELECT nspowner FROM pg_namespace
    UNION SELECT typowner FROM pg_type
    UNION SELECT proowner FROM pg_proc
    UNION SELECT datdba FROM pg_database WHERE datname = current_database()
    UNION SELECT lomowner FROM pg_largeobject_metadata
    UNION SELECT defaclrole FROM pg_default_acl
    UNION SELECT evtowner FROM pg_event_trigger
    UNION SELECT pubowner FROM pg_publication
    UNION SELECT extowner FROM pg_extension
    UNION SELECT setrole FROM pg_db_role_setting
        WHERE setdatabase = (SELECT oid FROM pg_database WHERE datname = current_database())
    UNION SELECT unnest(polroles) FROM pg_policy
    UNION SELECT (aclexplode(relacl)).grantee FROM pg_class WHERE relacl IS NOT NULL
    UNION SELECT (aclexplode(attacl)).grantee FROM pg_attribute WHERE attacl IS NOT NULL
    UNION SELECT (aclexplode(nspacl)).grantee FROM pg_namespace WHERE nspacl IS NOT NULL
    UNION SELECT (aclexplode(proacl)).grantee FROM pg_proc WHERE proacl IS NOT NULL
    UNION SELECT (aclexplode(typacl)).grantee FROM pg_type WHERE typacl IS NOT NULL
    UNION SELECT (aclexplode(lomacl)).grantee FROM pg_largeobject_metadata WHERE lomacl IS NOT NULL
    UNION SELECT (aclexplode(defaclacl)).grantee FROM pg_default_acl
    UNION SELECT (aclexplode(datacl)).grantee FROM pg_database
        WHERE datname = current_database() AND datacl IS NOT NULL
),
members(oid) AS (
    SELECT oid FROM direct
    UNION SELECT m.member FROM pg_auth_members m JOIN members d ON m.roleid = d.oid
),
needed(oid) AS (
    SELECT oid FROM members
    UNION SELECT m.roleid FROM pg_auth_members m JOIN needed d ON m.member = d.oid
),
roles AS (
    SELECT r.* FROM pg_roles r JOIN needed n ON n.oid = r.oid WHERE r.rolname !~ '^pg_'
)
SELECT jsonb_build_object(
    'roles', coalesce((SELECT json_agg(json_build_object(
        'name', rolname, 'superuser', rolsuper, 'inherit', rolinherit,
        'createrole', rolcreaterole, 'createdb', rolcreatedb, 'login', rolcanlogin,
        'replication', rolreplication, 'bypassrls', rolbypassrls,
        'connlimit', rolconnlimit, 'valid_until', rolvaliduntil::text
    ) ORDER BY rolname) FROM roles), '[]'::json),
    'memberships', coalesce((SELECT json_agg(json_build_object(
        'role', r.rolname, 'member', m.rolname, 'admin', a.admin_option
    ) ORDER BY r.rolname, m.rolname)
        FROM pg_auth_members a
        JOIN roles r ON r.oid = a.roleid
        JOIN roles m ON m.oid = a.member), '[]'::json)
)::text;
"#;

/// `"name"` quoted as a PostgreSQL identifier.
pub fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `'text'` quoted as a PostgreSQL string literal (standard_conforming_strings).
pub fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

fn flag(on: bool, yes: &str, no: &str) -> String {
    if on { yes } else { no }.to_string()
}

impl Role {
    /// `CREATE ROLE` with this role's attributes.
    fn create(&self) -> String {
        let mut attrs = vec![
            flag(self.superuser, "SUPERUSER", "NOSUPERUSER"),
            flag(self.inherit, "INHERIT", "NOINHERIT"),
            flag(self.createrole, "CREATEROLE", "NOCREATEROLE"),
            flag(self.createdb, "CREATEDB", "NOCREATEDB"),
            flag(self.login, "LOGIN", "NOLOGIN"),
            flag(self.replication, "REPLICATION", "NOREPLICATION"),
            flag(self.bypassrls, "BYPASSRLS", "NOBYPASSRLS"),
            format!("CONNECTION LIMIT {}", self.connlimit),
        ];
        if let Some(v) = &self.valid_until {
            attrs.push(format!("VALID UNTIL {}", literal(v)));
        }
        format!("CREATE ROLE {} WITH {}", ident(&self.name), attrs.join(" "))
    }
}

impl Globals {
    /// Whether there is nothing to create.
    pub fn is_empty(&self) -> bool {
        self.roles.is_empty()
    }

    /// The restore script: one `DO` block that creates the missing roles and
    /// grants memberships to the roles it created, and reports them with
    /// `NOTICE`s. Runs with `psql -f` as a role allowed to create roles.
    pub fn script(&self, database: &str) -> String {
        let mut s = format!(
            "-- Roles the database {} needs, recorded by dbsafe (no passwords).\n\
             -- Missing roles are created; existing roles are left exactly as they are.\n\
             DO $dbsafe$\nDECLARE\n    created text[] := '{{}}';\nBEGIN\n",
            database.replace('\n', " ")
        );
        for r in &self.roles {
            s.push_str(&format!(
                "    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = {name}) THEN\n\
                 \x20       EXECUTE {create};\n\
                 \x20       created := created || {name}::text;\n\
                 \x20       RAISE NOTICE 'dbsafe: created role %', {name};\n\
                 \x20   END IF;\n",
                name = literal(&r.name),
                create = literal(&r.create()),
            ));
        }
        for m in &self.memberships {
            let grant = format!(
                "GRANT {} TO {}{}",
                ident(&m.role),
                ident(&m.member),
                if m.admin { " WITH ADMIN OPTION" } else { "" }
            );
            s.push_str(&format!(
                "    IF {member} = ANY (created) THEN\n\
                 \x20       EXECUTE {grant};\n\
                 \x20   END IF;\n",
                member = literal(&m.member),
                grant = literal(&grant),
            ));
        }
        s.push_str("END\n$dbsafe$;\n");
        s
    }

    /// The recorded roles missing from `existing` (role names on the target server).
    pub fn missing<'a>(&'a self, existing: &[String]) -> Vec<&'a str> {
        self.roles
            .iter()
            .map(|r| r.name.as_str())
            .filter(|n| !existing.iter().any(|e| e == n))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn role(name: &str, login: bool) -> Role {
        Role {
            name: name.into(),
            superuser: false,
            inherit: true,
            createrole: false,
            createdb: false,
            login,
            replication: false,
            bypassrls: false,
            connlimit: -1,
            valid_until: None,
        }
    }

    #[test]
    fn the_script_creates_only_missing_roles_and_grants_only_to_those_it_created() {
        let g = Globals {
            roles: vec![role("app_reader", false), role("app \"user\"'s", true)],
            memberships: vec![Membership {
                role: "app_reader".into(),
                member: "app \"user\"'s".into(),
                admin: false,
            }],
        };
        let s = g.script("shop");
        assert!(s.contains(
            "IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'app_reader')"
        ));
        assert!(s.contains(
            "EXECUTE 'CREATE ROLE \"app \"\"user\"\"''s\" WITH NOSUPERUSER INHERIT NOCREATEROLE NOCREATEDB LOGIN"
        ), "{s}");
        assert!(
            s.contains("IF 'app \"user\"''s' = ANY (created) THEN"),
            "{s}"
        );
        assert!(
            s.contains("EXECUTE 'GRANT \"app_reader\" TO \"app \"\"user\"\"''s\"';"),
            "{s}"
        );
        assert!(!s.contains("PASSWORD"), "a role never gets a password");
        assert_eq!(g.missing(&["app_reader".into()]), ["app \"user\"'s"]);
    }

    #[test]
    fn globals_round_trip_as_the_query_returns_them() {
        let json = r#"{"roles":[{"name":"app_owner","superuser":false,"inherit":true,"createrole":false,"createdb":false,"login":true,"replication":false,"bypassrls":false,"connlimit":-1,"valid_until":null}],"memberships":[]}"#;
        let g: Globals = serde_json::from_str(json).expect("parses");
        assert_eq!(g.roles[0].name, "app_owner");
        assert!(g.roles[0].login);
    }
}
