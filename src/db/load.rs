//! Loading a dump fast, reading it once (see [`split`]): each table's structure runs in order
//! on one connection, and its rows — one `INSERT` statement at a time — go to whichever of
//! several more connections is free; triggers, views and routines follow on the first
//! connection once every row is in. The server parses and inserts on every connection at once.
//!
//! Every connection logs in as the site's own account ([`Account`]), never as the admin: a
//! dump is the tenant's text, so whatever it holds can change nothing the site itself could
//! not. No client program reads it, so no client command (`\!`, `system`, `source`) can run.

use std::path::Path;
use std::sync::Arc;

use mysql_async::prelude::*;
use mysql_async::{Conn, OptsBuilder};

use super::split::{self, Definer, Piece};
use super::Db;
use crate::error::{Error, Result};

type Reader = Box<dyn std::io::BufRead + Send>;

fn open(path: &Path, read: Arc<std::sync::atomic::AtomicU64>) -> std::io::Result<Reader> {
    let file = crate::snapshot::archive::Counting::new(std::fs::File::open(path)?, read);
    let dec = zstd::Decoder::new(file)?;
    Ok(Box::new(std::io::BufReader::with_capacity(1 << 20, dec)))
}

impl Db {
    /// Loads the zstd-compressed dump at `path` into the (existing) database `db` in one read,
    /// logged in as `account` (the site's own user, which can touch only `db`): the schema in
    /// order on one connection, the rows over `workers` more, then triggers, views and
    /// routines on the first. `definer` renames the definer of views, triggers and routines
    /// (a dump loaded under a new name). Fails with the first error.
    pub async fn load_dump(
        &self,
        account: &Account,
        db: &str,
        path: &Path,
        workers: usize,
        definer: Option<Definer>,
    ) -> Result<()> {
        self.load_dump_counted(account, db, path, workers, definer, Default::default())
            .await
    }

    /// [`Db::load_dump`], adding the compressed bytes read so far to `read` (progress).
    pub async fn load_dump_counted(
        &self,
        account: &Account,
        db: &str,
        path: &Path,
        workers: usize,
        definer: Option<Definer>,
        read: Arc<std::sync::atomic::AtomicU64>,
    ) -> Result<()> {
        // The reader hands pieces over in order; schema runs here, rows go to the loaders.
        let (tx, mut pieces) = tokio::sync::mpsc::channel::<Piece>(4);
        let reader = {
            let path = path.to_path_buf();
            blocking(move || {
                let read_err = read_err(&path);
                let mut input = open(&path, read).map_err(&read_err)?;
                let mut stopped = false;
                let after = split::pieces(&mut *input, definer.as_ref(), &mut |p| {
                    tx.blocking_send(p).map_err(|_| {
                        stopped = true;
                        std::io::Error::other("the loaders stopped")
                    })
                });
                match after {
                    // A loader failed: its error is the one to report.
                    Err(_) if stopped => Ok(None),
                    other => other.map(Some).map_err(&read_err),
                }
            })
        };
        // The loaders connect on their first statement, when the session is known.
        let session = Arc::new(std::sync::OnceLock::<Vec<Vec<u8>>>::new());
        let workers = workers.max(1);
        let (rows, rx) = tokio::sync::mpsc::channel::<Rows>(workers * 2);
        let rx = Arc::new(tokio::sync::Mutex::new(rx));
        let loaders = futures_util::future::try_join_all(
            (0..workers).map(|_| self.load_rows(account, db, rx.clone(), session.clone())),
        );
        drop(rx);
        let dispatch = async {
            let mut settings = Vec::new();
            let mut schema_conn: Option<Conn> = None;
            let mut result = Ok(());
            // The table rows are going into, and whether its first statement is done.
            let mut table = String::new();
            let mut first_done: Option<tokio::sync::oneshot::Receiver<()>> = None;
            while let Some(piece) = pieces.recv().await {
                match piece {
                    Piece::Session(s) => settings.push(s),
                    Piece::Schema(s) => {
                        let c = match schema_conn.as_mut() {
                            Some(c) => c,
                            None => match self.loading_conn(account, db, &settings).await {
                                Ok(c) => schema_conn.insert(c),
                                Err(e) => {
                                    result = Err(e);
                                    break;
                                }
                            },
                        };
                        if let Err(e) = c.query_drop(s.as_slice()).await {
                            result = Err(Error::mysql(
                                format!("loading the dump into {db} failed (table structure)"),
                                e,
                            ));
                            break;
                        }
                    }
                    Piece::Rows(s) => {
                        if session.get().is_none() {
                            let _ = session.set(settings.clone());
                        }
                        // A table's first statement goes alone: MariaDB bulk-loads into an
                        // empty table under a table lock, and two such inserts at once can
                        // deadlock. Other tables' statements go on meanwhile.
                        let this = split::insert_table(&s);
                        let done = if this != table {
                            table = this;
                            let (tx, rx) = tokio::sync::oneshot::channel();
                            first_done = Some(rx);
                            Some(tx)
                        } else {
                            if let Some(rx) = first_done.take() {
                                let _ = rx.await; // if it failed, its loader says why
                            }
                            None
                        };
                        if rows.send(Rows { stmt: s, done }).await.is_err() {
                            break; // a loader failed and says why
                        }
                    }
                }
            }
            drop(pieces); // stops the reader if we stopped early
            drop(rows); // lets the loaders finish
            result.map(|()| (schema_conn, settings))
        };
        let (result, read, loaded) = tokio::join!(dispatch, reader, loaders);
        let (schema_conn, settings) = result?;
        loaded?;
        let Some(after) = read? else {
            return Err(Error::Other(format!(
                "loading the dump into {db} stopped early"
            )));
        };

        // Triggers, final views, routines, events: in order, on the schema's connection.
        let mut c = match schema_conn {
            Some(c) => c,
            None => self.loading_conn(account, db, &settings).await?,
        };
        let mut result = Ok(());
        for stmt in &after {
            if let Err(e) = c.query_drop(stmt.as_slice()).await {
                result = Err(Error::mysql(
                    format!(
                        "loading the dump into {db} failed (triggers, views, routines or events: {})",
                        head(stmt)
                    ),
                    e,
                ));
                break;
            }
        }
        let _ = c.disconnect().await;
        result
    }

    /// One loading connection: runs statements from `rx` until it is empty. Connects on the
    /// first statement, so a dump without rows opens no connection.
    async fn load_rows(
        &self,
        account: &Account,
        db: &str,
        rx: Arc<tokio::sync::Mutex<tokio::sync::mpsc::Receiver<Rows>>>,
        session: Arc<std::sync::OnceLock<Vec<Vec<u8>>>>,
    ) -> Result<()> {
        let mut conn: Option<Conn> = None;
        let result = async {
            loop {
                let Some(Rows { stmt, done }) = rx.lock().await.recv().await else {
                    return Ok(());
                };
                let c = match conn.as_mut() {
                    Some(c) => c,
                    None => {
                        let settings = session.get().map(Vec::as_slice).unwrap_or_default();
                        conn.insert(self.loading_conn(account, db, settings).await?)
                    }
                };
                let _slot = self.load_slots.acquire().await;
                let mut attempt = 1;
                loop {
                    match c.query_drop(stmt.as_slice()).await {
                        Ok(()) => break,
                        // A statement chosen as a deadlock victim was rolled back whole
                        // (autocommit): running it again is exact.
                        Err(mysql_async::Error::Server(e))
                            if RETRY_CODES.contains(&e.code) && attempt < RETRIES =>
                        {
                            tracing::debug!(db, code = e.code, attempt, "retrying rows");
                            tokio::time::sleep(std::time::Duration::from_millis(20 * attempt))
                                .await;
                            attempt += 1;
                        }
                        Err(e) => {
                            return Err(Error::mysql(
                                format!(
                                    "loading the dump into {db} failed (rows of table `{}`)",
                                    split::insert_table(&stmt)
                                ),
                                e,
                            ))
                        }
                    }
                }
                if let Some(done) = done {
                    let _ = done.send(());
                }
            }
        }
        .await;
        if result.is_err() {
            // Stop the reader and the other connections: nothing more is taken.
            rx.lock().await.close();
        }
        if let Some(c) = conn {
            let _ = c.disconnect().await;
        }
        result
    }

    /// A connection of its own as `account` (never the pool's: it carries the dump's session
    /// settings), over the same socket or address as the admin's.
    async fn loading_conn(&self, account: &Account, db: &str, session: &[Vec<u8>]) -> Result<Conn> {
        let opts = OptsBuilder::from_opts(self.opts.clone())
            .user(Some(account.user.clone()))
            .pass(Some(account.password.clone()))
            .db_name(Some(db));
        let what = format!(
            "log in to {} as the site's own user {:?} to load its dump (mysql.user_host must admit this host's connections, e.g. \"%\")",
            self.display, account.user
        );
        let mut c = self.timed(what, Conn::new(opts)).await?;
        for s in session {
            self.timed(
                format!("set up loading into {db}"),
                c.query_drop(s.as_slice()),
            )
            .await?;
        }
        Ok(c)
    }
}

/// The account a dump loads as: the site's own user, granted that one database only.
#[derive(Clone)]
pub struct Account {
    pub user: String,
    pub password: String,
}

impl std::fmt::Debug for Account {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Account({:?})", self.user) // never the password
    }
}

/// The start of a statement, for messages (one line, at most 80 characters).
fn head(stmt: &[u8]) -> String {
    crate::site::one_line(&String::from_utf8_lossy(&stmt[..stmt.len().min(200)]))
        .chars()
        .take(80)
        .collect()
}

/// One `INSERT` for a loader; `done` is told when it has run (a table's first statement).
struct Rows {
    stmt: Vec<u8>,
    done: Option<tokio::sync::oneshot::Sender<()>>,
}

/// Server errors after which a rows statement runs again: deadlock, lock wait timeout.
const RETRY_CODES: [u16; 2] = [1213, 1205];
const RETRIES: u64 = 5;

fn read_err(path: &Path) -> impl Fn(std::io::Error) -> Error + '_ {
    move |e| Error::io(format!("read the dump {}", path.display()), e)
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Other(format!("load task: {e}")))?
}
