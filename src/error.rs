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
    /// The site's container is not running, so what needs it (exec, ...) cannot happen.
    #[error("{0}")]
    NotRunning(String),
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

    /// Exit code for this error: 2 bad input, 3 not found, 4 already exists (conflict), 5 a
    /// snapshot that does not authenticate, 6 the container is not running, 75 lock busy,
    /// 130 interrupted, 1 otherwise. README's "Exit codes" lists the same.
    pub fn exit_code(&self) -> i32 {
        match self.root() {
            Error::Invalid(_) | Error::Config { .. } => 2,
            Error::NotFound(_) => 3,
            Error::Conflict(_) => 4,
            Error::Unauthentic(_) => 5,
            Error::NotRunning(_) => 6,
            Error::Interrupted(_) => 130,
            Error::Locked(_) => 75,
            _ => 1,
        }
    }
}

impl Error {
    /// A closed pipe on our output (`sp … | head`): not a failure worth a word.
    pub fn is_broken_pipe(&self) -> bool {
        matches!(self.root(), Error::Io { source, .. } if source.kind() == std::io::ErrorKind::BrokenPipe)
    }

    /// What to do next, where sp knows it from the failure alone.
    pub fn hint(&self) -> Option<String> {
        match self.root() {
            Error::Docker { context, message } => docker_hint(context, message),
            Error::Mysql { message, .. } if message.contains("Access denied") => Some(
                "check mysql.url and mysql.password_file in the config; `sp doctor` tests the connection".into(),
            ),
            Error::Mysql { message, .. }
                if message.contains("Connection refused") || message.contains("timed out") =>
            {
                Some("is the MySQL/MariaDB server running? `sp doctor` tests the connection".into())
            }
            _ => None,
        }
    }

    /// The one-line message a person reads: the error, then what to do next (if known).
    pub fn with_hint(&self) -> String {
        match self.hint() {
            Some(h) => format!("{self} — {h}"),
            None => self.to_string(),
        }
    }
}

/// Docker's wording of a refused pull or an absent engine, turned into the next step.
fn docker_hint(context: &str, message: &str) -> Option<String> {
    let m = message.to_ascii_lowercase();
    let auth = m.contains("no basic auth credentials")
        || m.contains("unauthorized")
        || m.contains("authentication required")
        || m.contains("denied: access forbidden");
    if auth {
        let host = context
            .strip_prefix("pull ")
            .and_then(|r| crate::site::ImageRef::parse(r).ok())
            .map(|r| r.registry)
            .unwrap_or_else(|| "HOST".into());
        return Some(format!(
            "store a token for it: `sp registry login {host} --username USER --password-stdin`"
        ));
    }
    if m.contains("manifest unknown") || (m.contains("not found") && context.starts_with("pull ")) {
        return Some(
            "check the image reference and tag (`docker manifest inspect` it), then try again"
                .into(),
        );
    }
    if m.contains("connection refused")
        || (m.contains("no such file or directory") && m.contains("sock"))
    {
        return Some("is the Docker engine running? `sp doctor` checks it".into());
    }
    None
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_are_distinct_for_exists_and_not_running() {
        assert_eq!(Error::Conflict("x".into()).exit_code(), 4);
        assert_eq!(Error::NotRunning("x".into()).exit_code(), 6);
        assert_eq!(
            Error::NotRunning("x".into())
                .at_step("s", "exec")
                .exit_code(),
            6
        );
    }

    #[test]
    fn a_refused_pull_names_the_login_command_and_registry() {
        let e = Error::Docker {
            context: "pull 127.0.0.1:5000/acme/blog:v1".into(),
            message: "Head \"http://127.0.0.1:5000/v2/acme/blog/manifests/v1\": no basic auth credentials".into(),
        };
        let text = e.at_step("blog", "pull").with_hint();
        assert!(
            text.ends_with("`sp registry login 127.0.0.1:5000 --username USER --password-stdin`"),
            "{text}"
        );
        assert_eq!(Error::Invalid("bad".into()).with_hint(), "bad");
    }

    #[test]
    fn broken_pipe_is_recognised_through_steps() {
        let e = Error::io(
            "write output",
            std::io::Error::from(std::io::ErrorKind::BrokenPipe),
        );
        assert!(e.at_step("s", "x").is_broken_pipe());
        assert!(!Error::Other("x".into()).is_broken_pipe());
    }
}
