//! The engines this build knows, one entry each, restic-style: everything
//! that depends on which engine a URL or a payload belongs to is looked up
//! here, and nowhere else compares engine names or URL schemes.
//!
//! Adding an engine is a folder under `engine/` and a line in [`ENGINES`].

use super::side::{FileHome, Home};
use super::{dir, duckdb, file, mysql, postgres, sqlite};
use super::{Engine, Origin, PayloadCheck};
use crate::error::{Error, Result};
use crate::name::Payload;
use std::io::Read;
use std::path::Path;

/// Opens the database of a URL.
type Open = fn(&str) -> Result<Box<dyn Engine>>;
/// Checks a payload's structure: the payload, its origin, the stream, a private directory.
type Check = fn(Payload, &Origin, &mut dyn Read, &Path) -> Result<PayloadCheck>;
/// A scratch target for a payload: the payload, its origin, `--scratch`, a private directory.
type Scratch = fn(Payload, &Origin, Option<&str>, &Path) -> Result<Box<dyn Engine>>;
/// The home of a target URL, where its side databases go.
type HomeOf = fn(&str) -> Result<Box<dyn Home>>;

/// One engine: its names, its URLs, its payloads and what it supplies.
pub(crate) struct Entry {
    /// The engine's name, as [`Engine::engine`] and the metadata give it.
    pub name: &'static str,
    /// What messages call it.
    pub label: &'static str,
    /// The URL schemes it answers to (the first is its own).
    pub schemes: &'static [&'static str],
    /// The form of its URLs, for hints.
    pub form: &'static str,
    /// The payloads its snapshots have.
    pub payloads: &'static [Payload],
    /// The payloads a bare stream (no metadata) is taken to be this engine's.
    pub bare: &'static [Payload],
    /// Opens a URL.
    pub open: Open,
    /// `dbverify --level full`.
    pub check: Check,
    /// `dbverify --level restore`.
    pub scratch: Scratch,
    /// Side databases and swaps (dbpromote), where the engine has them.
    pub home: Option<HomeOf>,
}

/// The entry of a database file engine: type `$engine` of module `$m`,
/// whose name is its URL scheme (`$m:PATH`), with one payload, a structural
/// check that works in a private directory, a scratch file `$scratch` there,
/// and side files next to the target.
macro_rules! file_entry {
    ($m:ident, $engine:ident, $label:literal, $payload:expr, $scratch:literal) => {
        Entry {
            name: stringify!($m),
            label: $label,
            schemes: &[stringify!($m)],
            form: concat!(stringify!($m), ":PATH"),
            payloads: &[$payload],
            bare: &[$payload],
            open: |url| Ok(Box::new($m::$engine::new(file::path_of(url)))),
            check: |_, _, input, tmpdir| $m::check(input, tmpdir),
            scratch: |_, _, _, tmpdir| Ok(Box::new($m::$engine::new(tmpdir.join($scratch)))),
            home: Some(FileHome::<$m::$engine>::boxed),
        }
    };
}

/// The engines of this build.
pub(crate) static ENGINES: &[Entry] = &[
    Entry {
        name: "postgres",
        label: "PostgreSQL",
        schemes: &["postgres", "postgresql"],
        form: "postgres://user@host:port/db (or postgresql://...)",
        payloads: &[Payload::Pgdump, Payload::Tar],
        bare: &[Payload::Pgdump],
        open: postgres::open,
        check: |payload, origin, input, tmpdir| match payload {
            Payload::Tar => postgres::data::check(input, origin, tmpdir),
            _ => postgres::check(input),
        },
        scratch: |payload, origin, url, tmpdir| match payload {
            Payload::Tar => postgres::data::PgData::scratch(tmpdir, origin.clone()).map(box_engine),
            _ => postgres::scratch_dump(payload, url),
        },
        home: Some(postgres::home),
    },
    Entry {
        name: "mysql",
        label: "MySQL/MariaDB",
        schemes: &["mysql", "mariadb"],
        form: "mysql://user@host:port/db (or mariadb://...)",
        payloads: &[Payload::Sql],
        bare: &[Payload::Sql],
        open: mysql::open,
        check: |_, _, input, _| mysql::check(input),
        scratch: mysql::scratch,
        home: None,
    },
    file_entry!(sqlite, Sqlite, "SQLite", Payload::Sqlite, "scratch.sqlite"),
    file_entry!(duckdb, Duckdb, "DuckDB", Payload::Duckdb, "scratch.duckdb"),
    Entry {
        name: "dir",
        label: "directory tree",
        schemes: &["dir"],
        form: "dir:PATH",
        payloads: &[Payload::Tar],
        bare: &[Payload::Tar],
        open: |url| Ok(Box::new(dir::Dir::new(file::path_of(url)))),
        check: |_, _, input, _| dir::check(input),
        scratch: |_, _, _, tmpdir| Ok(Box::new(dir::Dir::new(tmpdir.join("scratch-tree")))),
        home: None,
    },
];

fn box_engine(e: impl Engine + 'static) -> Box<dyn Engine> {
    Box::new(e)
}

/// The scheme of a URL: what comes before its first `:`.
fn scheme_of(url: &str) -> &str {
    url.split(':').next().unwrap_or("")
}

/// The engine a URL belongs to.
fn of_url(url: &str) -> Option<&'static Entry> {
    let scheme = scheme_of(url).to_ascii_lowercase();
    ENGINES
        .iter()
        .find(|e| e.schemes.contains(&scheme.as_str()))
}

/// The engine a metadata engine name (or one of its schemes) belongs to.
fn of_name(name: &str) -> Option<&'static Entry> {
    ENGINES
        .iter()
        .find(|e| e.name == name || e.schemes.contains(&name))
}

/// The payload of the engine `name`'s snapshots: its first, or for a base
/// backup (`base`) a tar where the engine has one.
pub(crate) fn payload(name: &str, base: bool) -> Payload {
    let entry = of_name(name).expect("a registered engine");
    match entry.payloads {
        p if base && p.contains(&Payload::Tar) => Payload::Tar,
        p => p[0],
    }
}

/// Whether the engine `name` answers to the scheme of `url`.
pub(crate) fn answers(name: &str, url: &str) -> bool {
    of_url(url).is_some_and(|e| e.name == name)
}

/// The URL forms of the engines that `has` holds for, for hints.
fn forms(has: impl Fn(&Entry) -> bool) -> String {
    let forms: Vec<&str> = ENGINES.iter().filter(|e| has(e)).map(|e| e.form).collect();
    forms.join(", ")
}

/// The engine of a database URL.
pub(crate) fn open(url: &str) -> Result<Box<dyn Engine>> {
    match of_url(url) {
        Some(e) => (e.open)(url),
        None => Err(Error::usage(format!(
            "unsupported database URL scheme {:?}",
            scheme_of(url)
        ))
        .hint(format!("use {}", forms(|_| true)))),
    }
}

/// The engine that reads `payload` made by `origin`'s engine: the one
/// the metadata names, or for a bare stream the one that owns such payloads.
pub(crate) fn reader(payload: Payload, origin: &Origin) -> Result<&'static Entry> {
    let found = match origin.engine.as_deref() {
        Some(name) => of_name(name).filter(|e| e.payloads.contains(&payload)),
        None => ENGINES.iter().find(|e| e.bare.contains(&payload)),
    };
    found.ok_or_else(|| {
        Error::usage(format!(
            "a {} payload from engine {:?} is not supported by this build",
            payload.ext(),
            origin.engine.as_deref().unwrap_or("unknown")
        ))
    })
}

/// The `--scratch` server URL a server engine (`name`) restores `payload`
/// into: required, and one of that engine's (the message never shows a password).
pub(crate) fn scratch_server<'a>(
    name: &str,
    payload: Payload,
    url: Option<&'a str>,
) -> Result<&'a str> {
    let entry = of_name(name).expect("a registered engine");
    let url = url.ok_or_else(|| {
        Error::usage(format!(
            "restoring a {} payload needs a {} server to restore into",
            payload.ext(),
            entry.label
        ))
        .hint(format!("pass --scratch URL, e.g. --scratch {}", entry.form))
    })?;
    if !answers(entry.name, url) {
        return Err(Error::usage(format!(
            "--scratch {:?} is not a {} URL",
            super::url::without_password(url),
            entry.label
        ))
        .hint(format!("pass --scratch {}", entry.form)));
    }
    Ok(url)
}

/// The home of the target at `url`.
pub(crate) fn home(url: &str) -> Result<Box<dyn Home>> {
    match of_url(url).and_then(|e| e.home) {
        Some(home) => home(url),
        None => Err(Error::usage(format!(
            "side databases and swaps are not supported for {:?} URLs",
            scheme_of(url)
        ))
        .hint(format!(
            "dbpromote works with {} targets",
            forms(|e| e.home.is_some())
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EVERY_PAYLOAD: [Payload; 5] = [
        Payload::Pgdump,
        Payload::Sql,
        Payload::Sqlite,
        Payload::Duckdb,
        Payload::Tar,
    ];

    #[test]
    fn snapshots_have_the_first_payload_and_base_backups_a_tar_where_there_is_one() {
        let cases = [
            ("postgres", Payload::Pgdump, Payload::Tar),
            ("mysql", Payload::Sql, Payload::Sql),
            ("sqlite", Payload::Sqlite, Payload::Sqlite),
            ("duckdb", Payload::Duckdb, Payload::Duckdb),
            ("dir", Payload::Tar, Payload::Tar),
        ];
        for (name, logical, base) in cases {
            assert_eq!(
                (payload(name, false), payload(name, true)),
                (logical, base),
                "{name}"
            );
        }
    }

    #[test]
    fn every_payload_kind_has_an_engine_and_a_bare_default() {
        for p in EVERY_PAYLOAD {
            // A new Payload variant must be added here: this match has no wildcard.
            match p {
                Payload::Pgdump
                | Payload::Sql
                | Payload::Sqlite
                | Payload::Duckdb
                | Payload::Tar => {}
            }
            assert!(
                ENGINES.iter().any(|e| e.payloads.contains(&p)),
                "no engine writes {p:?}"
            );
            let bare: Vec<&str> = ENGINES
                .iter()
                .filter(|e| e.bare.contains(&p))
                .map(|e| e.name)
                .collect();
            assert_eq!(bare.len(), 1, "{p:?}: bare streams go to {bare:?}");
            let owner = reader(p, &Origin::default()).expect("a reader");
            assert!(owner.payloads.contains(&p));
        }
        for e in ENGINES {
            for p in e.bare {
                assert!(
                    e.payloads.contains(p),
                    "{} reads bare {p:?} it never writes",
                    e.name
                );
            }
        }
    }

    #[test]
    fn every_scheme_round_trips_to_its_engine() {
        let mut seen = Vec::new();
        for e in ENGINES {
            for scheme in e.schemes {
                assert!(!seen.contains(scheme), "scheme {scheme} registered twice");
                seen.push(scheme);
                let url = if e.form.contains("://") {
                    format!("{scheme}://u:secret@h:1/db")
                } else {
                    format!("{scheme}:/tmp/dbsafe-registry-test/db")
                };
                let engine = open(&url).expect("opens");
                assert_eq!(engine.engine(), e.name, "{url}");
                assert!(e.payloads.contains(&engine.payload(false)), "{url}");
                let shown = engine.url();
                assert!(!shown.contains("secret"), "{shown}");
                let again = of_url(&shown).expect("its own URL is registered");
                assert!(std::ptr::eq(again, e), "{url} -> {shown}");
                assert_eq!(open(&shown).expect("reopens").url(), shown);
                assert!(std::ptr::eq(of_name(e.name).expect("by name"), e));
            }
        }
    }

    #[test]
    fn payloads_go_to_the_engine_their_metadata_names() {
        let from = |engine: &str| Origin {
            engine: Some(engine.into()),
            ..Default::default()
        };
        assert_eq!(
            reader(Payload::Tar, &from("postgres")).expect("pg").name,
            "postgres"
        );
        assert_eq!(reader(Payload::Tar, &from("dir")).expect("dir").name, "dir");
        assert_eq!(
            reader(Payload::Sql, &from("mariadb")).expect("my").name,
            "mysql"
        );
        let e = reader(Payload::Sql, &from("oracle"))
            .map(|e| e.name)
            .unwrap_err();
        assert_eq!(e.code(), crate::ExitCode::Usage);
        assert!(reader(Payload::Tar, &from("sqlite")).is_err());
    }

    #[test]
    fn a_wrong_scratch_url_is_refused_without_its_password() {
        let e = scratch_server("postgres", Payload::Pgdump, Some("mysql://root:hunter2@h/"))
            .unwrap_err();
        assert_eq!(e.code(), crate::ExitCode::Usage);
        assert!(!e.to_string().contains("hunter2"), "{e}");
        assert!(e.message.contains("mysql://root@h/"), "{e}");
        let e = scratch_server("mysql", Payload::Sql, None).unwrap_err();
        assert!(e.to_string().contains("--scratch"), "{e}");
        assert_eq!(
            scratch_server("mysql", Payload::Sql, Some("mariadb://r@h/")).expect("fits"),
            "mariadb://r@h/"
        );
    }

    #[test]
    fn urls_that_do_not_parse_are_refused_without_their_password() {
        for bad in [
            "postgres://u:s3cret@h:port/d",
            "postgres://u:s3cret@h/d%zz",
            "mysql://u:s3cret@h/d?sslmode=x",
            "mariadb://u:s3cret@h1,h2/d",
        ] {
            let e = open(bad).err().expect("refused");
            assert_eq!(e.code(), crate::ExitCode::Usage, "{bad}");
            assert!(!e.to_string().contains("s3cret"), "{bad}: {e}");
        }
    }

    #[test]
    fn unknown_schemes_are_usage_errors() {
        let e = open("oracle://db/x").err().expect("refused");
        assert_eq!(e.code(), crate::ExitCode::Usage);
        assert!(e.message.contains("unsupported database URL"));
        assert!(home("mysql://u@h/d").is_err());
    }
}
