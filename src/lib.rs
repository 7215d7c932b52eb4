//! # sp — a backup-and-restore-centric host manager
//!
//! One host runs several unrelated web sites. Each site is a container pulled from a registry,
//! a directory tree under `/sites/NAME` and its own database and user on one shared
//! MySQL/MariaDB server.
//!
//! ## Map
//! - [`ops`]: one module per verb, and the only place that orchestrates. Start there.
//! - [`site`]: the `site.toml` spec and input validation — the model every layer shares.
//! - [`config`]: the host config. [`registry`]: stored registry credentials.
//! - [`engine`]: Docker (bollard). [`db`]: MySQL (mysql_async). [`lock`]: the host lock.
//! - [`snapshot`]: the snapshot format, verify, safe unpack; [`key`]: the key that signs them.
//!   [`store`]: where snapshots go off the host (S3, directories), [`crypt`]: age encryption.
//!   [`firewall`]: sp's nftables table that keeps the sites' networks apart.
//! - [`proxy`]: the HTTPS front door — the Caddyfile built from the sites' routes (pure).
//! - [`cli`]: clap definitions; [`dispatch`]: command line → op → rendered report;
//!   [`output`]: the `--json` voice (schema, whole seconds, errors as JSON) and man pages.
//! - [`error`]: the error type and its policy. [`ui`]: the binary's terminal front-end.
//! - [`audit`]: the audit log of every command that changes the host (`sp log`).
//!
//! The library never prints: ops return reports (`Display` + `Serialize`) and send progress
//! notes through the [`ops::Notifier`] the binary supplies.

pub mod audit;
pub mod cli;
pub mod config;
pub mod crypt;
pub mod db;
pub mod dispatch;
pub mod engine;
pub mod error;
pub mod firewall;
pub mod fsutil;
pub mod hook;
pub mod interrupt;
pub mod key;
pub mod lock;
pub mod ops;
pub mod output;
pub mod proxy;
pub mod registry;
pub mod schedule;
pub mod site;
pub mod snapshot;
pub mod store;
pub mod ui;

pub use error::{Error, Result};

/// The CPUs this process may use (at least 1): how many archives are checked, sites loaded
/// and rows statements run at once, and backup's zstd threads by default.
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}
