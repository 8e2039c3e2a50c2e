//! The integration suite: one test binary, so every test shares one pool
//! of test threads and the harness is compiled and linked once.

mod cloud;
mod dbpromote;
mod dbprune;
mod dbrestore;
mod dbsnap;
mod dbverify;
mod dir;
mod docs;
mod duckdb;
mod fidelity;
mod hostile;
mod interop;
mod mariadb;
mod metrics;
mod monitoring;
mod notify;
mod package;
mod pitr;
mod postgres;
mod restore_flow;
mod s3;
mod safety;
mod scripts;
mod walship;
