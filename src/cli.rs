//! Command-line definitions (clap) only: no behaviour lives here.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// sp — run several web sites on one host, each a container with its own directory and
/// database, and bring them all back from a snapshot when the host dies.
#[derive(Debug, Parser)]
#[command(name = "sp", version, propagate_version = true, max_term_width = 100)]
pub struct Cli {
    /// Config file (TOML).
    #[arg(long, global = true, env = "SP_CONFIG", default_value = crate::config::DEFAULT_PATH)]
    pub config: PathBuf,
    /// Print results as JSON.
    #[arg(long, global = true)]
    pub json: bool,
    /// More log output (-v info, -vv debug).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Only errors.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Write a commented default config and create sp's directories (never overwrites).
    Init(InitArgs),
    /// Check Docker, MySQL, directories and disk space; non-zero exit if anything fails.
    Doctor,
    /// Registry credentials used for every pull.
    #[command(subcommand)]
    Registry(RegistryCommand),
    /// Add, deploy and manage sites.
    #[command(subcommand)]
    Site(SiteCommand),
    /// Converge containers, databases and users to the site.toml files (idempotent).
    Apply {
        /// Only this site.
        name: Option<String>,
    },
    /// Take one snapshot of the host: config, credentials, each site's files and database dump.
    Backup {
        /// Only this site (repeatable); all sites by default.
        #[arg(long = "site", value_name = "NAME")]
        sites: Vec<String>,
    },
    /// List snapshots (id, kind, time, size, verified, sites), oldest first.
    Snapshots(crate::ops::snapshots::ListOpts),
    /// Pin or unpin a snapshot.
    #[command(subcommand)]
    Snapshot(SnapshotCommand),
    /// Check the signature, re-hash every file, walk every archive, check every dump; non-zero exit on any fault.
    Verify(crate::ops::verify::VerifyOpts),
    /// Delete snapshots the [retention] policy does not keep (never pinned ones, never the newest verified);
    /// an encrypted backup_dir ([encryption] local = true) too, with its plaintext ones from before.
    Prune {
        /// Show what would be deleted; delete nothing.
        #[arg(long)]
        dry_run: bool,
        /// Prune only this [[destination]] (a name or an s3:// URL), by its own policy; or
        /// backup_dir itself (only it, as without --from).
        #[arg(long, value_name = "NAME|URL|BACKUP_DIR")]
        from: Option<PathBuf>,
    },
    /// Rebuild sites from a snapshot: files, database + user, image by digest, container.
    Restore(crate::ops::restore::RestoreOpts),
    /// Restore a snapshot into a scratch namespace, check every table and health, remove every trace.
    Drill(crate::ops::drill::DrillOpts),
    /// The key that signs every snapshot (verify, restore and drill refuse unsigned ones).
    #[command(subcommand)]
    Key(KeyCommand),
    /// The HTTPS front door: Caddy in a container, routes from the site specs, certificates
    /// from the ACME CA (`[proxy]` in the config).
    #[command(subcommand)]
    Proxy(ProxyCommand),
    /// Backup schedule and site jobs.
    #[command(subcommand)]
    Schedule(ScheduleCommand),
    /// Per site: newest snapshot and its age, next backup, last failures; non-zero exit when one is too old or a backup, drill or prune failed.
    Status,
    /// Who changed what: the audit log of every command that changes the host, oldest first.
    Log(crate::ops::log::LogOpts),
    /// Print shell completions.
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff), or with --dir write one page per command into DIR.
    Man {
        /// Write sp.1 and a page per subcommand (sp-site-add.1, ...) into this directory.
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// Print this host's public key and where the secret key is kept.
    Show,
    /// Make a new key for the snapshots to come; the old one stays trusted for older snapshots.
    Rotate,
    /// Print the secret key (to keep off the host), or with --public the public key.
    Export {
        /// Only the public key: enough to verify and restore, not to sign.
        #[arg(long)]
        public: bool,
    },
    /// Write a new age identity (0600) for encrypting off-host snapshots and print its
    /// recipient (for [encryption] recipients); keep the identity off this host.
    Generate {
        /// Where to write the identity; an existing file is never overwritten.
        #[arg(long, value_name = "FILE")]
        output: PathBuf,
    },
    /// Make the secret key in FILE (from `sp key export` on the old host) this host's key.
    Import {
        /// The secret key file.
        file: PathBuf,
        /// Replace a key this host already has (its public key stays trusted).
        #[arg(long)]
        replace: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum ProxyCommand {
    /// Start the proxy (pulling and pinning its image the first time), join every site's
    /// network and load the routes; run it again any time, it changes only what differs.
    Up,
    /// Each domain: its site, its upstream container, and its certificate's issuer and expiry.
    Status,
    /// Regenerate the routes from the specs and load them; a config Caddy rejects changes
    /// nothing and the command fails with Caddy's reason.
    Reload,
}

#[derive(Debug, Subcommand)]
pub enum SnapshotCommand {
    /// Keep this snapshot whatever the retention policy says.
    Pin { id: String },
    /// Let the retention policy decide again.
    Unpin { id: String },
}

#[derive(Debug, Subcommand)]
pub enum ScheduleCommand {
    /// Print the next runs of the backup and of every site job.
    Show,
    /// Write the system cron file that runs them, or with --systemd a .service and .timer per
    /// job; never both (what the other kind wrote before is removed). `sp status` checks it.
    Install {
        /// Cron file to write.
        #[arg(long, value_name = "PATH", default_value = crate::schedule::DEFAULT_CRON_FILE, conflicts_with = "systemd")]
        cron_file: PathBuf,
        /// Write systemd timers instead of the cron file.
        #[arg(long)]
        systemd: bool,
        /// Directory for the systemd units (with --systemd).
        #[arg(long, value_name = "DIR", default_value = crate::schedule::DEFAULT_SYSTEMD_DIR, requires = "systemd")]
        systemd_dir: PathBuf,
    },
}

#[derive(Debug, Args)]
pub struct InitArgs {
    /// Label value that keeps this sp's containers apart from other instances on the engine.
    #[arg(long)]
    pub instance: Option<String>,
    #[arg(long, value_name = "DIR")]
    pub sites_dir: Option<PathBuf>,
    #[arg(long, value_name = "DIR")]
    pub backup_dir: Option<PathBuf>,
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Admin connection URL (mysql://USER@HOST:PORT), without a password: argv is visible to
    /// every local user, so one in the URL is refused.
    #[arg(long, value_name = "URL")]
    pub mysql_url: Option<String>,
    /// Read the admin password from stdin; it is stored root-only (0600) beside the config
    /// as mysql-admin.password and named by mysql.password_file.
    #[arg(long, conflicts_with = "mysql_password_file")]
    pub mysql_password_stdin: bool,
    /// A root-only file (mode 0600) holding the admin password; stored as mysql.password_file.
    #[arg(long, value_name = "PATH")]
    pub mysql_password_file: Option<PathBuf>,
    /// HOST:PORT containers use to reach MySQL.
    #[arg(long, value_name = "HOST:PORT")]
    pub mysql_host_for_containers: Option<String>,
    /// Host ports to publish sites on, FIRST-LAST.
    #[arg(long, value_name = "FIRST-LAST")]
    pub port_range: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum RegistryCommand {
    /// Store credentials (mode 0600) for pulls from HOST, e.g. a GitLab deploy token.
    Login {
        /// Registry host[:port], e.g. registry.gitlab.com.
        host: String,
        #[arg(long, short)]
        username: String,
        /// Read the password or token from stdin (the only way: argv is visible to all).
        #[arg(long, required = true)]
        password_stdin: bool,
        /// Store without checking them against the registry.
        #[arg(long)]
        no_verify: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum SiteCommand {
    /// Create a site: spec, data dir, database + user, container.
    Add(SiteAddArgs),
    /// List sites.
    List,
    /// Show one site: the whole effective spec (image, digest, domains, env, memory, health,
    /// jobs, uid, paths) and its last deploys; secret env values masked unless --reveal.
    Show {
        name: String,
        /// Show secret env values.
        #[arg(long)]
        reveal: bool,
    },
    /// A site's env: list (default), set KEY=VALUE..., set --stdin [KEY] (secrets), unset KEY...;
    /// a change rolls out like a deploy.
    Env(crate::ops::site_env::EnvOpts),
    /// Pull, run the release command, start the new container, wait for health, retire the old.
    Deploy(crate::ops::deploy::DeployOpts),
    /// Redeploy an earlier image: the deploy before the current one, or --to a history entry or digest.
    Rollback(crate::ops::rollback::RollbackOpts),
    /// Every deploy of the site: time, actor, image, digest, result, duration (the last 50).
    History { name: String },
    /// Start the site's container.
    Start { name: String },
    /// Stop the site's container (sp apply leaves it stopped).
    Stop { name: String },
    /// Restart the site's container.
    Restart { name: String },
    /// Print the container's output (--previous: the container the last deploy replaced).
    Logs(crate::ops::control::LogsOpts),
    /// Run a command in the running container as the site's user; -i attaches stdin, -t a terminal.
    Exec(crate::ops::control::ExecOpts),
    /// Run one of the site's [[jobs]] now, in a one-off container of its image.
    Job { name: String, job: String },
    /// Remove the container (after a final snapshot); --purge also deletes the database, user and files.
    Remove {
        name: String,
        /// Also delete the database, its user and /sites/NAME (asks for the name).
        #[arg(long)]
        purge: bool,
        /// Do not ask.
        #[arg(long, short)]
        yes: bool,
    },
}

#[derive(Debug, Args)]
pub struct SiteAddArgs {
    /// Site name: lowercase letters, digits and '-', starting with a letter, at most 32.
    pub name: String,
    /// Image reference, e.g. registry.gitlab.com/acme/blog:main.
    #[arg(long, value_name = "REF")]
    pub image: String,
    /// A domain the site answers to (repeatable).
    #[arg(long = "domain", value_name = "DOMAIN")]
    pub domains: Vec<String>,
    /// Port the app listens on inside the container (default: the image's EXPOSE, else 8000).
    #[arg(long)]
    pub port: Option<u16>,
    /// Environment variable KEY=VALUE (repeatable).
    #[arg(long = "env", value_name = "KEY=VALUE")]
    pub env: Vec<String>,
    /// No database or database user for this site.
    #[arg(long)]
    pub no_db: bool,
    /// Memory limit, e.g. 512m.
    #[arg(long)]
    pub memory: Option<String>,
    /// HTTP path that answers 2xx/3xx when the app is healthy.
    #[arg(long, value_name = "PATH")]
    pub health_path: Option<String>,
}
