//! S3-compatible buckets (AWS S3, Backblaze B2, MinIO, Garage, Wasabi) through opendal: no
//! protocol code of our own. Writes stream in 8 MiB parts (multipart upload, so memory stays
//! bounded and an object appears only once its upload completes); every request is retried
//! with exponential backoff.

use std::io::{Read, Write};
use std::time::Duration;

use opendal::blocking;

use super::{check_path, Object, Pending, Store, Upload};
use crate::config::DestinationConfig;
use crate::error::{Error, Result};

/// Bytes per multipart part (S3 refuses parts under 5 MiB but the last).
pub const PART: usize = 8 << 20;

pub struct RemoteStore {
    op: blocking::Operator,
    /// The same operator, async: writes use it so an unfinished one can be aborted.
    aop: opendal::Operator,
    handle: tokio::runtime::Handle,
    what: String,
    segment: Option<u64>,
}

/// Default `segment_mib` for S3: one part, so each 8 MiB piece of a file goes up in one
/// request (no multipart upload for the server to assemble) while the next is read and
/// encrypted; pieces grow past the first 8 GiB of a file (see
/// [`super::offsite::segment_limit`]).
pub const SEGMENT_MIB: u64 = (PART >> 20) as u64;

/// The S3 options a destination sets, as opendal's builder takes them (pure, for tests).
#[derive(Debug, PartialEq, Eq)]
pub struct S3Options {
    pub bucket: String,
    pub root: String,
    pub endpoint: Option<String>,
    pub region: String,
    pub virtual_host_style: bool,
}

pub fn s3_options(cfg: &DestinationConfig, bucket: &str, prefix: &str) -> S3Options {
    S3Options {
        bucket: bucket.to_string(),
        root: format!("/{prefix}"),
        endpoint: cfg.endpoint.clone(),
        region: cfg.region.clone().unwrap_or_else(|| "us-east-1".into()),
        virtual_host_style: !cfg.path_style,
    }
}

/// Opens an S3 destination. Credentials: `access_key_id` with `secret_access_key` or
/// `secret_access_key_file`, else the usual AWS environment variables.
pub fn s3(cfg: &DestinationConfig, bucket: &str, prefix: &str) -> Result<RemoteStore> {
    let o = s3_options(cfg, bucket, prefix);
    let mut b = opendal::services::S3::default()
        .bucket(&o.bucket)
        .root(&o.root)
        .region(&o.region)
        .disable_ec2_metadata();
    if let Some(e) = &o.endpoint {
        b = b.endpoint(e);
    }
    if o.virtual_host_style {
        b = b.enable_virtual_host_style();
    }
    if let Some(id) = &cfg.access_key_id {
        b = b.access_key_id(id);
    }
    if let Some(secret) = cfg.secret()? {
        b = b.secret_access_key(&secret);
    }
    let op = opendal::Operator::new(b)
        .map_err(|e| Error::Invalid(format!("destination {}: {e}", cfg.name)))?
        .layer(
            opendal::layers::RetryLayer::new()
                .with_jitter()
                .with_min_delay(Duration::from_millis(200))
                .with_max_delay(Duration::from_secs(10))
                .with_max_times(5),
        )
        .layer(opendal::layers::TimeoutLayer::new().with_io_timeout(Duration::from_secs(60)))
        .finish();
    let handle = tokio::runtime::Handle::try_current()
        .map_err(|e| Error::Other(format!("open {}: {e}", cfg.url)))?;
    let aop = op.clone();
    let op =
        blocking::Operator::new(op).map_err(|e| Error::Other(format!("open {}: {e}", cfg.url)))?;
    Ok(RemoteStore {
        op,
        aop,
        handle,
        what: format!("{} ({})", cfg.name, cfg.url),
        segment: match cfg.segment_mib.unwrap_or(SEGMENT_MIB) {
            0 => None,
            n => Some(n << 20),
        },
    })
}

impl RemoteStore {
    fn err(&self, what: &str, path: &str, e: opendal::Error) -> Error {
        if e.kind() == opendal::ErrorKind::NotFound {
            return Error::NotFound(format!("{}: no object {path}", self.what));
        }
        // opendal's message names the request and the server's answer, never the credentials.
        Error::Other(format!("{}: {what} {path}: {e}", self.what))
    }
}

/// A multipart upload in progress. Committed, it completes the object; dropped without
/// that (a failed or abandoned file), it aborts the upload so the server frees the parts it
/// holds instead of keeping (and billing) them until a lifecycle rule expires them.
struct RemoteUpload {
    w: Option<opendal::Writer>,
    handle: tokio::runtime::Handle,
}

impl Write for RemoteUpload {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        // opendal's writer panics on an empty write ("frozen buffer must be valid").
        if b.is_empty() {
            return Ok(0);
        }
        match &mut self.w {
            Some(w) => {
                let bytes = bytes::Bytes::copy_from_slice(b);
                self.handle
                    .block_on(w.write(bytes))
                    .map_err(std::io::Error::other)?;
                Ok(b.len())
            }
            None => Err(std::io::Error::other("upload already committed")),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Completes `w`'s object (an object smaller than a part goes up here, in one request);
/// aborts it when that fails.
async fn close(mut w: opendal::Writer) -> Result<()> {
    match w.close().await {
        Ok(_) => Ok(()),
        Err(e) => {
            let _ = w.abort().await;
            Err(Error::io("complete the upload", std::io::Error::other(e)))
        }
    }
}

impl Upload for RemoteUpload {
    fn commit(mut self: Box<Self>) -> Result<()> {
        match self.w.take() {
            Some(w) => self.handle.block_on(close(w)),
            None => Ok(()),
        }
    }

    /// The request completing the object runs on the runtime while the caller goes on.
    fn commit_later(mut self: Box<Self>) -> Result<Pending> {
        let Some(w) = self.w.take() else {
            return Ok(Pending::ready());
        };
        let task = self.handle.spawn(close(w));
        let handle = self.handle.clone();
        Ok(Pending::new(move || {
            handle
                .block_on(task)
                .map_err(|e| Error::Other(format!("the upload task failed: {e}")))?
        }))
    }
}

impl Drop for RemoteUpload {
    fn drop(&mut self) {
        if let Some(mut w) = self.w.take() {
            // Best effort: a server that is gone cannot be told (SETUP's lifecycle rule
            // covers that case).
            if let Err(e) = self.handle.block_on(w.abort()) {
                tracing::debug!("aborting an unfinished upload: {e}");
            }
        }
    }
}

impl Store for RemoteStore {
    fn describe(&self) -> String {
        self.what.clone()
    }

    fn list(&self, prefix: &str) -> Result<Vec<Object>> {
        let entries = self.op.list_options(
            prefix,
            opendal::options::ListOptions {
                recursive: true,
                ..Default::default()
            },
        );
        let entries = match entries {
            Ok(e) => e,
            Err(e) if e.kind() == opendal::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(self.err("list", prefix, e)),
        };
        let mut out: Vec<Object> = entries
            .into_iter()
            .filter(|e| e.metadata().is_file() && e.path().starts_with(prefix))
            .map(|e| Object {
                path: e.path().to_string(),
                size: e.metadata().content_length(),
            })
            .collect();
        out.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(out)
    }

    /// One listing of the root with a delimiter (a page per 1,000 folders), not of every object.
    fn folders(&self) -> Result<Vec<String>> {
        let entries = match self.op.list("") {
            Ok(e) => e,
            Err(e) if e.kind() == opendal::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(self.err("list", "", e)),
        };
        let mut out: Vec<String> = entries
            .into_iter()
            .filter(|e| e.metadata().is_dir())
            .map(|e| e.path().trim_end_matches('/').to_string())
            .filter(|p| !p.is_empty() && !p.contains('/'))
            .collect();
        out.sort();
        out.dedup();
        Ok(out)
    }

    fn stat(&self, path: &str) -> Result<Option<u64>> {
        check_path(path)?;
        match self.op.stat(path) {
            Ok(m) => Ok(Some(m.content_length())),
            Err(e) if e.kind() == opendal::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(self.err("stat", path, e)),
        }
    }

    fn read(&self, path: &str) -> Result<Box<dyn Read + Send>> {
        check_path(path)?;
        let r = self
            .op
            .reader_options(
                path,
                opendal::options::ReaderOptions {
                    chunk: Some(PART),
                    ..Default::default()
                },
            )
            .and_then(|r| r.into_std_read(..))
            .map_err(|e| self.err("read", path, e))?;
        Ok(Box::new(r))
    }

    fn write(&self, path: &str) -> Result<Box<dyn Upload>> {
        check_path(path)?;
        let w = self
            .handle
            .block_on(self.aop.writer_options(
                path,
                opendal::options::WriteOptions {
                    chunk: Some(PART),
                    // One part in flight: memory stays near two parts per upload.
                    concurrent: 1,
                    ..Default::default()
                },
            ))
            .map_err(|e| self.err("write", path, e))?;
        Ok(Box::new(RemoteUpload {
            w: Some(w),
            handle: self.handle.clone(),
        }))
    }

    fn delete(&self, path: &str) -> Result<()> {
        check_path(path)?;
        self.op
            .delete(path)
            .map_err(|e| self.err("delete", path, e))
    }

    fn segment_size(&self) -> Option<u64> {
        self.segment
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s3_options_follow_the_destination() {
        let mut cfg = DestinationConfig {
            name: "off".into(),
            url: "s3://b/p".into(),
            endpoint: Some("http://127.0.0.1:9000".into()),
            path_style: true,
            ..Default::default()
        };
        assert_eq!(
            s3_options(&cfg, "bkt", "sp/h1"),
            S3Options {
                bucket: "bkt".into(),
                root: "/sp/h1".into(),
                endpoint: Some("http://127.0.0.1:9000".into()),
                region: "us-east-1".into(),
                virtual_host_style: false,
            }
        );
        cfg.path_style = false;
        cfg.region = Some("eu-central-003".into());
        let o = s3_options(&cfg, "bkt", "");
        assert!(o.virtual_host_style);
        assert_eq!(o.region, "eu-central-003");
        assert_eq!(o.root, "/");
    }
}
