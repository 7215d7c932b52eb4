//! Reading and writing one file on the server: a reader that streams through pipelined
//! requests, and an upload that writes a `.part-*` file and renames it into place on commit
//! (removed when dropped unfinished).

use std::io::{Read, Write};
use std::sync::Arc;
use std::time::Duration;

use russh_sftp::client::fs::File as SftpFile;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{Conn, WRITE_BUF};
use crate::error::{Error, Result};
use crate::store::Upload;

pub(super) struct SftpReader {
    pub(super) rt: tokio::runtime::Handle,
    pub(super) file: SftpFile,
    pub(super) _conn: Arc<Conn>,
}

impl Read for SftpReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.rt.block_on(self.file.read(buf))
    }
}

pub(super) struct SftpUpload {
    pub(super) rt: tokio::runtime::Handle,
    pub(super) conn: Arc<Conn>,
    pub(super) file: Option<SftpFile>,
    pub(super) buf: Vec<u8>,
    pub(super) part: String,
    pub(super) target: String,
    pub(super) what: String,
}

impl SftpUpload {
    fn push(&mut self) -> std::io::Result<()> {
        let Some(f) = self.file.as_mut() else {
            return Err(std::io::Error::other("upload already committed"));
        };
        if !self.buf.is_empty() {
            self.rt.block_on(f.write_all(&self.buf))?;
            self.buf.clear();
        }
        Ok(())
    }
}

impl Write for SftpUpload {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        if self.file.is_none() {
            return Err(std::io::Error::other("upload already committed"));
        }
        if self.buf.len() + b.len() > WRITE_BUF {
            self.push()?;
        }
        if b.len() >= WRITE_BUF {
            let Some(f) = self.file.as_mut() else {
                return Err(std::io::Error::other("upload already committed"));
            };
            self.rt.block_on(f.write_all(b))?;
        } else {
            self.buf.extend_from_slice(b);
        }
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Upload for SftpUpload {
    fn commit(mut self: Box<Self>) -> Result<()> {
        self.push()
            .map_err(|e| Error::io(format!("{}: upload {}", self.what, self.target), e))?;
        let Some(mut f) = self.file.take() else {
            return Ok(());
        };
        let sftp = &self.conn.sftp;
        let r: std::result::Result<(), String> = self.rt.block_on(async {
            f.flush().await.map_err(|e| e.to_string())?;
            f.shutdown().await.map_err(|e| e.to_string())?;
            if let Err(e) = sftp.rename(self.part.clone(), self.target.clone()).await {
                // SFTP v3's rename refuses an existing target: replace it.
                if sftp.symlink_metadata(self.target.clone()).await.is_err() {
                    return Err(e.to_string());
                }
                sftp.remove_file(self.target.clone())
                    .await
                    .map_err(|e| e.to_string())?;
                sftp.rename(self.part.clone(), self.target.clone())
                    .await
                    .map_err(|e| e.to_string())?;
            }
            Ok(())
        });
        match r {
            Ok(()) => {
                self.part.clear();
                Ok(())
            }
            Err(e) => Err(Error::Other(format!(
                "{}: complete the upload of {}: {}",
                self.what,
                self.target,
                e.replace('\n', " ")
            ))),
        }
    }
}

impl Drop for SftpUpload {
    fn drop(&mut self) {
        if self.part.is_empty() {
            return;
        }
        drop(self.file.take());
        let (rt, conn, part) = (self.rt.clone(), self.conn.clone(), self.part.clone());
        // A thread of its own may block on the runtime wherever this drop runs.
        std::thread::scope(|s| {
            let _ = s
                .spawn(move || {
                    rt.block_on(async {
                        let _ = tokio::time::timeout(
                            Duration::from_secs(10),
                            conn.sftp.remove_file(part),
                        )
                        .await;
                    })
                })
                .join();
        });
    }
}
