//! The shared MySQL/MariaDB server: one database and one user per site.
//!
//! **Nothing a tenant or a snapshot controls runs with more privilege than that one site
//! has.** The admin account only creates, grants and drops; a site's dump — its rows,
//! triggers, routines and events are the tenant's own text — is loaded logged in as the
//! site's own user ([`Account`]), split by a real lexer, and never fed to a client program.
//!
//! SQL text is built by the pure functions at the top (unit-tested for exact output); only
//! [`Db`] talks to the server. Identifiers are validated site names and are still quoted;
//! passwords go in as properly escaped string literals, never spliced raw.

mod dump;
mod lex;
mod load;
pub mod split;

pub use dump::{
    dump_args, option_file, sweep_stale_option_files, DumpClient, STALE_OPTION_FILE_PREFIX,
};
pub use load::Account;

use mysql_async::prelude::*;
use mysql_async::{Opts, OptsBuilder, Pool, Value};

use crate::config::MysqlConfig;
use crate::error::{Error, Result};

/// Backtick-quotes an identifier.
pub fn quote_ident(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

/// Quotes a string literal the way the server's parser expects.
pub fn quote_literal(text: &str) -> String {
    Value::from(text).as_sql(false)
}

/// `'user'@'host'`.
pub fn account(user: &str, host: &str) -> String {
    format!("{}@{}", quote_literal(user), quote_literal(host))
}

pub fn create_database_sql(db: &str) -> String {
    format!(
        "CREATE DATABASE IF NOT EXISTS {} CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci",
        quote_ident(db)
    )
}

/// A site user, limited to `max_connections` at once.
pub fn create_user_sql(user: &str, host: &str, password: &str, max_connections: u32) -> String {
    format!(
        "CREATE USER IF NOT EXISTS {} IDENTIFIED BY {} WITH MAX_USER_CONNECTIONS {max_connections}",
        account(user, host),
        quote_literal(password)
    )
}

/// Sets the connection limit of an existing user.
pub fn limit_user_sql(user: &str, host: &str, max_connections: u32) -> String {
    format!(
        "ALTER USER {} WITH MAX_USER_CONNECTIONS {max_connections}",
        account(user, host)
    )
}

pub fn alter_password_sql(user: &str, host: &str, password: &str) -> String {
    format!(
        "ALTER USER {} IDENTIFIED BY {}",
        account(user, host),
        quote_literal(password)
    )
}

/// GRANT on exactly one database. In GRANT, `_` and `%` in a database name are wildcards, so they
/// are escaped: `site_a` must never also match `siteXa`.
pub fn grant_sql(db: &str, user: &str, host: &str) -> String {
    let escaped = db
        .replace('\\', "\\\\")
        .replace('_', "\\_")
        .replace('%', "\\%");
    format!(
        "GRANT ALL PRIVILEGES ON {}.* TO {}",
        quote_ident(&escaped),
        account(user, host)
    )
}

pub fn drop_database_sql(db: &str) -> String {
    format!("DROP DATABASE IF EXISTS {}", quote_ident(db))
}

pub fn drop_user_sql(user: &str, host: &str) -> String {
    format!("DROP USER IF EXISTS {}", account(user, host))
}

/// A generated password: 32 characters of [A-Za-z0-9] (~190 bits).
pub fn generate_password() -> String {
    use rand::distr::{Alphanumeric, SampleString};
    Alphanumeric.sample_string(&mut rand::rng(), 32)
}

/// An admin connection pool to the shared server.
pub struct Db {
    pool: Pool,
    opts: Opts,
    /// Where the server is, for messages (no password).
    pub display: String,
    /// `MAX_USER_CONNECTIONS` of every site user [`Db::ensure_user`] creates or keeps.
    max_user_connections: u32,
    /// Statements of dumps being loaded that may run at once, across all loads: about one per
    /// core, since the server parses and inserts on one thread per statement.
    load_slots: std::sync::Arc<tokio::sync::Semaphore>,
    /// How long connecting, or any statement of sp's own, may take (`mysql.timeout`): a frozen
    /// server fails the command, naming what it waited for, instead of hanging it.
    timeout: std::time::Duration,
}

impl Db {
    /// Opens a pool from the config (`url`, optional `password_file`). Nothing connects yet.
    pub fn open(cfg: &MysqlConfig) -> Result<Db> {
        let opts = Opts::from_url(&cfg.url)
            .map_err(|e| Error::Invalid(format!("mysql.url is not a valid MySQL URL: {e}")))?;
        let mut builder = OptsBuilder::from_opts(opts.clone()).wait_timeout(Some(28800));
        if let Some(path) = &cfg.password_file {
            let pw = std::fs::read_to_string(path)
                .map_err(|e| Error::io_path("read mysql.password_file", path, e))?;
            builder = builder.pass(Some(pw.trim_end_matches(['\n', '\r']).to_string()));
        }
        let display = match opts.socket() {
            Some(sock) => format!("{}@unix:{sock}", opts.user().unwrap_or("")),
            None => format!(
                "{}@{}:{}",
                opts.user().unwrap_or(""),
                opts.ip_or_hostname(),
                opts.tcp_port()
            ),
        };
        let opts = Opts::from(builder);
        let timeout = crate::config::parse_duration(&cfg.timeout)
            .map_err(|e| Error::Invalid(format!("mysql.timeout {e}")))?;
        Ok(Db {
            pool: Pool::new(opts.clone()),
            opts,
            display,
            max_user_connections: cfg.max_user_connections,
            load_slots: std::sync::Arc::new(tokio::sync::Semaphore::new(crate::cores())),
            timeout,
        })
    }

    /// Runs one call to the server within [`Db::timeout`]; `what` names it in the error.
    pub(super) async fn timed<T>(
        &self,
        what: impl Into<String>,
        call: impl std::future::Future<Output = std::result::Result<T, mysql_async::Error>>,
    ) -> Result<T> {
        match tokio::time::timeout(self.timeout, call).await {
            Ok(r) => r.map_err(|e| Error::mysql(what, e)),
            Err(_) => Err(Error::Mysql {
                context: what.into(),
                message: format!(
                    "no answer from {} within {}s (mysql.timeout): is the server running and responsive?",
                    self.display,
                    self.timeout.as_secs()
                ),
            }),
        }
    }

    async fn conn(&self) -> Result<mysql_async::Conn> {
        self.timed(format!("connect to {}", self.display), self.pool.get_conn())
            .await
    }

    async fn exec(&self, sql: &str, what: &str) -> Result<()> {
        let mut c = self.conn().await?;
        self.timed(what.to_string(), c.query_drop(sql)).await
    }

    /// Server version string.
    pub async fn version(&self) -> Result<String> {
        let mut c = self.conn().await?;
        let v: Option<String> = self
            .timed("SELECT VERSION()", c.query_first("SELECT VERSION()"))
            .await?;
        Ok(v.unwrap_or_default())
    }

    /// The admin account's grants, one per line.
    pub async fn grants(&self) -> Result<Vec<String>> {
        let mut c = self.conn().await?;
        self.timed("SHOW GRANTS", c.query("SHOW GRANTS FOR CURRENT_USER()"))
            .await
    }

    /// The server's estimate of a database's data size (what a progress bar expects a dump
    /// to be about).
    pub async fn data_bytes(&self, db: &str) -> Result<u64> {
        let mut c = self.conn().await?;
        let n: Option<Option<u64>> = self
            .timed(
                "size the database",
                c.exec_first(
                    "SELECT CAST(SUM(DATA_LENGTH) AS UNSIGNED) FROM information_schema.TABLES WHERE TABLE_SCHEMA = ?",
                    (db,),
                ),
            )
            .await?;
        Ok(n.flatten().unwrap_or(0))
    }

    pub async fn database_exists(&self, db: &str) -> Result<bool> {
        let mut c = self.conn().await?;
        let n: Option<i64> = self
            .timed(
                "look up database",
                c.exec_first(
                    "SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = ?",
                    (db,),
                ),
            )
            .await?;
        Ok(n.unwrap_or(0) > 0)
    }

    pub async fn user_exists(&self, user: &str, host: &str) -> Result<bool> {
        let mut c = self.conn().await?;
        let n: Option<i64> = self
            .timed(
                "look up user",
                c.exec_first(
                    "SELECT COUNT(*) FROM mysql.user WHERE User = ? AND Host = ?",
                    (user, host),
                ),
            )
            .await?;
        Ok(n.unwrap_or(0) > 0)
    }

    /// Creates the database if missing; true when it was created.
    pub async fn ensure_database(&self, db: &str) -> Result<bool> {
        if self.database_exists(db).await? {
            return Ok(false);
        }
        self.exec(&create_database_sql(db), &format!("create database {db}"))
            .await?;
        Ok(true)
    }

    /// Creates the user with `password` if missing, limits its connections
    /// (`mysql.max_user_connections`) and grants it `db` only; true when created.
    pub async fn ensure_user(
        &self,
        db: &str,
        user: &str,
        host: &str,
        password: &str,
    ) -> Result<bool> {
        let created = !self.user_exists(user, host).await?;
        if created {
            self.exec(
                &create_user_sql(user, host, password, self.max_user_connections),
                &format!("create user {user}"),
            )
            .await?;
        } else {
            self.exec(
                &limit_user_sql(user, host, self.max_user_connections),
                &format!("limit the connections of {user}"),
            )
            .await?;
        }
        self.exec(&grant_sql(db, user, host), &format!("grant {db} to {user}"))
            .await?;
        Ok(created)
    }

    /// Sets the user's password (used when a restore brings back the original one).
    pub async fn set_password(&self, user: &str, host: &str, password: &str) -> Result<()> {
        self.exec(
            &alter_password_sql(user, host, password),
            &format!("set password of {user}"),
        )
        .await
    }

    pub async fn drop_database(&self, db: &str) -> Result<()> {
        self.exec(&drop_database_sql(db), &format!("drop database {db}"))
            .await
    }

    pub async fn drop_user(&self, user: &str, host: &str) -> Result<()> {
        self.exec(&drop_user_sql(user, host), &format!("drop user {user}"))
            .await
    }

    /// Tables and views of a database, sorted: (name, `BASE TABLE` | `VIEW` | ...).
    pub async fn tables(&self, db: &str) -> Result<Vec<(String, String)>> {
        let mut c = self.conn().await?;
        self.timed(format!("list tables of {db}"), c.exec("SELECT TABLE_NAME, TABLE_TYPE FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? ORDER BY TABLE_NAME",
            (db,),)).await
    }

    /// Reads every row of a table or view (proves it is readable); returns the count.
    pub async fn count_rows(&self, db: &str, table: &str) -> Result<u64> {
        let mut c = self.conn().await?;
        let sql = format!(
            "SELECT COUNT(*) FROM {}.{}",
            quote_ident(db),
            quote_ident(table)
        );
        let n: Option<u64> = self
            .timed(format!("read {db}.{table}"), c.query_first(sql))
            .await?;
        Ok(n.unwrap_or(0))
    }

    /// A dump client for this server's admin account.
    pub fn dump_client(&self, private_dir: &std::path::Path) -> Result<DumpClient> {
        let mut c = DumpClient::new(&self.opts, private_dir)?;
        c.stall = self.timeout;
        Ok(c)
    }

    /// Closes the pool.
    pub async fn close(self) {
        let _ = self.pool.disconnect().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_quote_everything() {
        assert_eq!(
            create_database_sql("blog"),
            "CREATE DATABASE IF NOT EXISTS `blog` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci"
        );
        assert_eq!(
            grant_sql("my-blog", "my-blog", "%"),
            "GRANT ALL PRIVILEGES ON `my-blog`.* TO 'my-blog'@'%'"
        );
        assert_eq!(
            grant_sql("a_b", "a_b", "%"),
            "GRANT ALL PRIVILEGES ON `a\\_b`.* TO 'a_b'@'%'"
        );
        assert_eq!(quote_ident("we`ird"), "`we``ird`");
        assert_eq!(quote_literal("it's"), "'it\\'s'");
        assert_eq!(
            create_user_sql("blog", "%", "p'w", 30),
            "CREATE USER IF NOT EXISTS 'blog'@'%' IDENTIFIED BY 'p\\'w' WITH MAX_USER_CONNECTIONS 30"
        );
        assert_eq!(
            limit_user_sql("blog", "%", 12),
            "ALTER USER 'blog'@'%' WITH MAX_USER_CONNECTIONS 12"
        );
        assert_eq!(
            drop_user_sql("blog", "172.17.%"),
            "DROP USER IF EXISTS 'blog'@'172.17.%'"
        );
    }

    #[test]
    fn passwords_are_long_and_alphanumeric() {
        let a = generate_password();
        assert_eq!(a.len(), 32);
        assert!(a.bytes().all(|b| b.is_ascii_alphanumeric()));
        assert_ne!(a, generate_password());
    }
}
