//! dbsafe: the shared library of the dbsafe tools.
//!
//! A backup is a stream: an [`Engine`] turns a database into payload bytes,
//! the [`pipeline`] wraps them in compression (zstd by default), encryption
//! (age) and a running sha256 on their way to a destination, and a [`Store`]
//! makes the finished artifact appear atomically under its final name, with
//! its `.sha256` and `.meta.json` sidecars. Reading goes the other way: the
//! layers are sniffed from their magic bytes and peeled off as the bytes
//! stream past, so verification and restore need no format flags and no
//! memory proportional to the database. Every artifact is plain standard
//! formats (age, zstd, gzip, pg_dump, SQLite), so it restores without dbsafe.
//!
//! Tools depend on this facade only: they ask for the engine of a URL and
//! the store of a location, never for a particular implementation. Errors
//! carry their exit code ([`ExitCode`], the table of SPEC §1).
#![deny(missing_docs)]

pub mod artifact;
pub mod audit;
pub mod catalog;
pub mod cleanup;
pub mod cli;
pub mod config;
pub mod engine;
pub mod error;
pub mod fsutil;
pub mod health;
pub mod http;
mod idle;
pub mod keys;
pub mod listing;
pub mod lock;
pub mod meta;
pub mod metrics;
pub mod name;
pub mod notify;
pub mod output;
pub mod pipeline;
pub mod progress;
pub mod release;
pub mod restore;
pub mod retention;
pub mod snapshot;
pub mod store;
pub mod term;
#[cfg(test)]
mod testing;
pub mod timeline;
pub mod units;
pub mod verify;
pub mod wal;
pub mod walarchive;
pub mod walspool;

pub use engine::Engine;
pub use error::{Context, Error, ExitCode, Result};
pub use keys::{Encryption, Keyring};
pub use name::{ArtifactName, Compression, Kind, Payload};
pub use store::Store;
