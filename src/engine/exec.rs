//! `docker exec` sessions: output streamed back, stdin copied in (and closed at its end), a
//! terminal sized like the caller's and resized on SIGWINCH.

use bollard::container::LogOutput;
use bollard::exec::{CreateExecOptions, ResizeExecOptions, StartExecOptions, StartExecResults};
use futures_util::StreamExt;

use super::Engine;
use crate::error::{Error, Result};

impl Engine {
    /// Runs `cmd` in a running container as `user`, streaming output; returns the exit code.
    pub async fn exec(
        &self,
        id: &str,
        cmd: &[String],
        user: Option<&str>,
        out: &mut (dyn std::io::Write + Send),
        err: &mut (dyn std::io::Write + Send),
    ) -> Result<i64> {
        let session = ExecSession {
            stdin: None,
            tty: None,
            out,
            err,
        };
        self.exec_session(id, cmd, user, session).await
    }

    /// Runs `cmd` in a running container as `user` and returns its exit code: its output
    /// streams to `session.out`/`err`; with `session.stdin` that is copied to the command's
    /// stdin (closed at its end); with `session.tty` the command gets a terminal of the size
    /// the callback says, resized on SIGWINCH.
    pub async fn exec_session(
        &self,
        id: &str,
        cmd: &[String],
        user: Option<&str>,
        session: ExecSession<'_>,
    ) -> Result<i64> {
        let ExecSession {
            stdin,
            tty,
            out,
            err,
        } = session;
        let created = self
            .docker
            .create_exec(
                id,
                CreateExecOptions {
                    cmd: Some(cmd.to_vec()),
                    user: user.map(str::to_string),
                    attach_stdin: Some(stdin.is_some()),
                    attach_stdout: Some(true),
                    attach_stderr: Some(true),
                    tty: Some(tty.is_some()),
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| Error::docker("exec", e))?;
        let start = StartExecOptions {
            detach: false,
            tty: tty.is_some(),
            output_capacity: None,
        };
        let started = self
            .docker
            .start_exec(&created.id, Some(start))
            .await
            .map_err(|e| Error::docker("exec", e))?;
        if let StartExecResults::Attached { mut output, input } = started {
            let pump = stdin.map(|reader| tokio::spawn(pump_stdin(reader, input)));
            let mut winch = match tty {
                Some(_) => {
                    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::window_change())
                        .ok()
                }
                None => None,
            };
            if let Some(size) = tty {
                self.resize_exec(&created.id, size()).await;
            }
            loop {
                let next = tokio::select! {
                    chunk = output.next() => chunk,
                    Some(()) = async { match winch.as_mut() { Some(w) => w.recv().await, None => None } } => {
                        if let Some(size) = tty {
                            self.resize_exec(&created.id, size()).await;
                        }
                        continue;
                    }
                };
                let Some(chunk) = next else { break };
                match chunk.map_err(|e| Error::docker("exec output", e))? {
                    LogOutput::StdErr { message } => {
                        let _ = err.write_all(&message);
                        let _ = err.flush();
                    }
                    other => {
                        let _ = out.write_all(&other.into_bytes());
                        let _ = out.flush();
                    }
                }
            }
            if let Some(p) = pump {
                p.abort();
            }
        }
        let _ = out.flush();
        let inspect = self
            .docker
            .inspect_exec(&created.id)
            .await
            .map_err(|e| Error::docker("exec", e))?;
        Ok(inspect.exit_code.unwrap_or(-1))
    }

    /// Tells Docker the size of an exec's terminal (columns, rows); a failure only means a
    /// wrongly sized terminal.
    async fn resize_exec(&self, exec_id: &str, size: Option<(u16, u16)>) {
        if let Some((width, height)) = size.filter(|(w, h)| *w > 0 && *h > 0) {
            let _ = self
                .docker
                .resize_exec(exec_id, ResizeExecOptions { height, width })
                .await;
        }
    }
}

/// The streams of an exec session.
pub struct ExecSession<'a> {
    /// Copied to the command's stdin (read on a thread of its own, since it blocks).
    pub stdin: Option<Box<dyn std::io::Read + Send>>,
    /// Give the command a terminal; the callback says its size (columns, rows).
    pub tty: Option<&'a (dyn Fn() -> Option<(u16, u16)> + Send + Sync)>,
    pub out: &'a mut (dyn std::io::Write + Send),
    pub err: &'a mut (dyn std::io::Write + Send),
}

/// Copies `reader` into an exec's stdin and closes it (half-close) at the reader's end, so
/// the command sees end of input. The blocking reads run on a thread of their own.
async fn pump_stdin(
    mut reader: Box<dyn std::io::Read + Send>,
    mut input: std::pin::Pin<Box<dyn tokio::io::AsyncWrite + Send>>,
) {
    use tokio::io::AsyncWriteExt;
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<u8>>(4);
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 8192];
        loop {
            match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    if tx.blocking_send(buf[..n].to_vec()).is_err() {
                        break;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            }
        }
    });
    while let Some(chunk) = rx.recv().await {
        if input.write_all(&chunk).await.is_err() || input.flush().await.is_err() {
            return;
        }
    }
    let _ = input.shutdown().await;
}
