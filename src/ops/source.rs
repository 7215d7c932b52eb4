//! Where a command that reads snapshots finds them, and what it trusts and decrypts them
//! with: the options `sp verify`, `sp restore` and `sp drill` share (declared once here).

use std::path::PathBuf;

/// `--from`, `--key`, `--identity`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct SourceOpts {
    /// A [[destination]] name, an s3:// URL, or a directory of snapshots (default: backup_dir;
    /// encrypted with [encryption] local = true — `--from BACKUP_DIR` reads its plaintext
    /// snapshots from before).
    #[arg(long, value_name = "NAME|URL|DIR")]
    pub from: Option<PathBuf>,
    /// Also accept snapshots signed by this key (a public key from `sp key export --public`,
    /// or a secret key file); repeatable.
    #[arg(long = "key", value_name = "FILE")]
    pub keys: Vec<PathBuf>,
    /// age identity file (from `sp key generate`) that decrypts snapshots from --from NAME|URL,
    /// and from backup_dir itself with [encryption] local = true (restore and drill need it).
    #[arg(long = "identity", value_name = "FILE")]
    pub identity: Option<PathBuf>,
}
