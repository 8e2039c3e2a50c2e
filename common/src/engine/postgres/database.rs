//! The database-level properties of a PostgreSQL database: owner, encoding,
//! locale and collation, per-database and per-role-in-database settings,
//! database privileges and the comment.
//!
//! `pg_dump --create` writes them as SQL; a dump of the database with no
//! schema selected (`-n pg_toast`, which pg_dump never dumps) is exactly
//! those statements. The snapshot records them; a restore with `--create`
//! replays them under the target's name, so the application finds the
//! default time zone, collation and search path it had.

/// The statements of a plain `pg_dump --create` output that concern the
/// database itself, each whole (a comment may span lines).
pub fn statements(dump: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    for line in dump.lines() {
        if current.is_empty()
            && (line.starts_with("--") || line.starts_with('\\') || line.trim().is_empty())
        {
            continue;
        }
        current.push_str(line);
        current.push('\n');
        // A statement ends with `;` outside a string literal.
        if line.trim_end().ends_with(';') && current.matches('\'').count() % 2 == 0 {
            let stmt = current.trim_end().to_string();
            current.clear();
            if concerns_database(&stmt) {
                out.push(stmt);
            }
        }
    }
    out
}

fn concerns_database(stmt: &str) -> bool {
    let s = stmt.trim_start();
    s.starts_with("CREATE DATABASE ")
        || s.starts_with("ALTER DATABASE ")
        || s.starts_with("COMMENT ON DATABASE ")
        || s.starts_with("SECURITY LABEL ")
        || (s.starts_with("ALTER ROLE ") && s.contains(" IN DATABASE "))
        || ((s.starts_with("GRANT ") || s.starts_with("REVOKE ")) && s.contains(" ON DATABASE "))
}

/// How pg_dump writes an identifier: bare when it is a plain lower-case
/// word, quoted otherwise.
fn forms(name: &str) -> Vec<String> {
    let quoted = format!("\"{}\"", name.replace('"', "\"\""));
    let plain = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if plain {
        vec![name.to_string(), quoted]
    } else {
        vec![quoted]
    }
}

/// The recorded statements with the database `source` renamed `target`
/// (an identifier, quoted as needed): the first `DATABASE name` of each.
pub fn for_target(statements: &[String], source: &str, target: &str) -> Vec<String> {
    let to = format!("\"{}\"", target.replace('"', "\"\""));
    statements
        .iter()
        .map(|stmt| {
            for form in forms(source) {
                for end in [" ", ";", "\n"] {
                    let from = format!("DATABASE {form}{end}");
                    if let Some(at) = stmt.find(&from) {
                        return format!(
                            "{}DATABASE {to}{end}{}",
                            &stmt[..at],
                            &stmt[at + from.len()..]
                        );
                    }
                }
            }
            stmt.clone()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const DUMP: &str = "--\n-- PostgreSQL database dump\n--\n\\restrict abc\nSET statement_timeout = 0;\n\
SELECT pg_catalog.set_config('search_path', '', false);\n\
CREATE DATABASE shop WITH TEMPLATE = template0 ENCODING = 'UTF8' LOCALE_PROVIDER = libc LOCALE = 'C';\n\n\n\
ALTER DATABASE shop OWNER TO app_owner;\n\\unrestrict abc\n\\connect shop\n\
SET lock_timeout = 0;\n\
COMMENT ON DATABASE shop IS 'the shop;\nwhere DATABASE shop sells';\n\
ALTER DATABASE shop SET \"TimeZone\" TO 'Pacific/Auckland';\n\
ALTER ROLE app_user IN DATABASE shop SET search_path TO 'store', 'public';\n\
REVOKE CONNECT,TEMPORARY ON DATABASE shop FROM PUBLIC;\n\
GRANT CONNECT ON DATABASE shop TO app_user;\n";

    #[test]
    fn only_the_database_statements_are_kept_whole() {
        let s = statements(DUMP);
        assert_eq!(s.len(), 7, "{s:#?}");
        assert!(s[0].starts_with("CREATE DATABASE shop WITH"));
        assert_eq!(
            s[2],
            "COMMENT ON DATABASE shop IS 'the shop;\nwhere DATABASE shop sells';"
        );
        assert!(s
            .iter()
            .all(|l| !l.starts_with("SET ") && !l.starts_with('\\')));
    }

    #[test]
    fn statements_are_renamed_for_the_target_and_nothing_else_changes() {
        let s = for_target(&statements(DUMP), "shop", "shop restored");
        assert!(
            s[0].starts_with("CREATE DATABASE \"shop restored\" WITH TEMPLATE"),
            "{}",
            s[0]
        );
        assert_eq!(s[1], "ALTER DATABASE \"shop restored\" OWNER TO app_owner;");
        assert_eq!(
            s[2],
            "COMMENT ON DATABASE \"shop restored\" IS 'the shop;\nwhere DATABASE shop sells';"
        );
        assert_eq!(
            s[4],
            "ALTER ROLE app_user IN DATABASE \"shop restored\" SET search_path TO 'store', 'public';"
        );
        assert_eq!(
            s[6],
            "GRANT CONNECT ON DATABASE \"shop restored\" TO app_user;"
        );
        let quoted = for_target(
            &["ALTER DATABASE \"Shop\" OWNER TO x;".to_string()],
            "Shop",
            "t",
        );
        assert_eq!(quoted[0], "ALTER DATABASE \"t\" OWNER TO x;");
    }
}
