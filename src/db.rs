//! The shared MySQL/MariaDB server: one database and one user per site.
//!
//! SQL text is built by the pure functions at the top (unit-tested for exact output); only
//! [`Db`] talks to the server. Identifiers are validated site names and are still quoted;
//! passwords go in as properly escaped string literals, never spliced raw.

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

pub fn create_user_sql(user: &str, host: &str, password: &str) -> String {
    format!(
        "CREATE USER IF NOT EXISTS {} IDENTIFIED BY {}",
        account(user, host),
        quote_literal(password)
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
    /// Where the server is, for messages (no password).
    pub display: String,
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
        Ok(Db {
            pool: Pool::new(builder),
            display,
        })
    }

    async fn conn(&self) -> Result<mysql_async::Conn> {
        self.pool
            .get_conn()
            .await
            .map_err(|e| Error::mysql(format!("connect to {}", self.display), e))
    }

    async fn exec(&self, sql: &str, what: &str) -> Result<()> {
        let mut c = self.conn().await?;
        c.query_drop(sql)
            .await
            .map_err(|e| Error::mysql(what.to_string(), e))
    }

    /// Server version string.
    pub async fn version(&self) -> Result<String> {
        let mut c = self.conn().await?;
        let v: Option<String> = c
            .query_first("SELECT VERSION()")
            .await
            .map_err(|e| Error::mysql("SELECT VERSION()", e))?;
        Ok(v.unwrap_or_default())
    }

    /// The admin account's grants, one per line.
    pub async fn grants(&self) -> Result<Vec<String>> {
        let mut c = self.conn().await?;
        c.query("SHOW GRANTS FOR CURRENT_USER()")
            .await
            .map_err(|e| Error::mysql("SHOW GRANTS", e))
    }

    pub async fn database_exists(&self, db: &str) -> Result<bool> {
        let mut c = self.conn().await?;
        let n: Option<i64> = c
            .exec_first(
                "SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = ?",
                (db,),
            )
            .await
            .map_err(|e| Error::mysql("look up database", e))?;
        Ok(n.unwrap_or(0) > 0)
    }

    pub async fn user_exists(&self, user: &str, host: &str) -> Result<bool> {
        let mut c = self.conn().await?;
        let n: Option<i64> = c
            .exec_first(
                "SELECT COUNT(*) FROM mysql.user WHERE User = ? AND Host = ?",
                (user, host),
            )
            .await
            .map_err(|e| Error::mysql("look up user", e))?;
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

    /// Creates the user with `password` if missing and grants it `db` only; true when created.
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
                &create_user_sql(user, host, password),
                &format!("create user {user}"),
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
            create_user_sql("blog", "%", "p'w"),
            "CREATE USER IF NOT EXISTS 'blog'@'%' IDENTIFIED BY 'p\\'w'"
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
