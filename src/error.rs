//! Errors of the sp library.
//!
//! Policy: every fallible library function returns [`Result`]. Each variant says what kind of
//! failure it is (so `main` can pick an exit code) and carries enough context — the site, the
//! step, the path or the server — for a one-line message that tells the user what went wrong.
//! Secrets never go into an error message.

use std::path::Path;

/// The library's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in sp.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The user gave input sp refuses (bad name, domain, image, flag). Nothing was changed.
    #[error("{0}")]
    Invalid(String),
    /// Something the user named does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The request clashes with what exists (a site that is already there, ...).
    #[error("{0}")]
    Conflict(String),
    /// Another sp command holds the host lock.
    #[error("{0}")]
    Locked(String),
    /// A snapshot is not signed by a key this host trusts. Nothing from it was used.
    #[error("{0}")]
    Unauthentic(String),
    /// SIGINT or SIGTERM: what was half-done has been undone.
    #[error("{0}")]
    Interrupted(String),
    /// The config file is missing or wrong.
    #[error("config {path}: {message}")]
    Config { path: String, message: String },
    /// A file-system operation failed.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    /// The Docker engine refused or failed.
    #[error("docker: {context}: {message}")]
    Docker { context: String, message: String },
    /// The MySQL/MariaDB server refused or failed.
    #[error("mysql: {context}: {message}")]
    Mysql { context: String, message: String },
    /// A multi-step operation failed at a named step.
    #[error("{site}: step '{step}' failed: {source}")]
    Step {
        site: String,
        step: &'static str,
        #[source]
        source: Box<Error>,
    },
    /// Anything else, already phrased for the user.
    #[error("{0}")]
    Other(String),
}

impl Error {
    /// Wraps an I/O error with what sp was doing.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    /// Wraps an I/O error about a path.
    pub fn io_path(what: &str, path: &Path, source: std::io::Error) -> Self {
        Error::io(format!("{what} {}", path.display()), source)
    }

    /// Wraps a bollard error with what sp asked Docker to do.
    pub fn docker(context: impl Into<String>, err: bollard::errors::Error) -> Self {
        let message = match &err {
            bollard::errors::Error::DockerResponseServerError { message, .. } => message.clone(),
            other => other.to_string(),
        };
        Error::Docker {
            context: context.into(),
            message,
        }
    }

    /// Wraps a mysql_async error with what sp asked the server to do.
    pub fn mysql(context: impl Into<String>, err: mysql_async::Error) -> Self {
        Error::Mysql {
            context: context.into(),
            message: err.to_string(),
        }
    }

    /// Marks this error as the failure of `step` while working on `site`.
    pub fn at_step(self, site: &str, step: &'static str) -> Self {
        Error::Step {
            site: site.to_string(),
            step,
            source: Box::new(self),
        }
    }

    /// The innermost error, past any step wrappers.
    pub fn root(&self) -> &Error {
        match self {
            Error::Step { source, .. } => source.root(),
            other => other,
        }
    }

    /// Exit code for this error: 2 bad input, 3 not found, 4 conflict, 5 a snapshot that does
    /// not authenticate, 75 lock busy, 130 interrupted, 1 otherwise.
    pub fn exit_code(&self) -> i32 {
        match self.root() {
            Error::Invalid(_) | Error::Config { .. } => 2,
            Error::NotFound(_) => 3,
            Error::Conflict(_) => 4,
            Error::Unauthentic(_) => 5,
            Error::Interrupted(_) => 130,
            Error::Locked(_) => 75,
            _ => 1,
        }
    }
}

/// Adds a step name to errors of a fallible call.
pub trait StepExt<T> {
    /// On error, record that `step` of `site` failed.
    fn step(self, site: &str, step: &'static str) -> Result<T>;
}

impl<T> StepExt<T> for Result<T> {
    fn step(self, site: &str, step: &'static str) -> Result<T> {
        self.map_err(|e| e.at_step(site, step))
    }
}
