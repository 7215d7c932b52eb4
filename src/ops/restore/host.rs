//! What a restore puts back of the host: its config (local settings win) and the registry
//! credentials (local entries win), planned before anything is written.

use std::path::Path;

use crate::error::{Error, Result};
use crate::snapshot;

use super::Ctx;

/// What a restore puts back of the host, computed before anything is written.
pub(super) struct HostPlan {
    /// The merged config text and its parsed form (whole-host restores only).
    pub config: Option<(String, crate::config::Config)>,
    /// Local credentials with the snapshot's added (local entries win).
    pub credentials: Option<crate::registry::Credentials>,
}

impl HostPlan {
    /// Writes the planned registry credentials (the config is written by
    /// [`Run::publish_config`]).
    pub(super) fn apply_credentials(&mut self, ctx: &Ctx) -> Result<()> {
        if let Some(c) = self.credentials.take() {
            c.save(&ctx.credentials_path())?;
        }
        Ok(())
    }
}

/// Puts the snapshot's proxy state (Caddy's certificates and account keys, the pinned proxy
/// image) in place, before any site starts and so before the proxy does, unless this host's
/// proxy already holds data of its own (local wins, as for the config). The archive is
/// unpacked like a site's: hashed and checked member by member into a staging directory,
/// renamed into place only once proven. Returns whether it restored anything.
pub(super) async fn restore_proxy(
    ctx: &Ctx,
    engine: &crate::engine::Engine,
    dir: &Path,
    files: &[snapshot::FileEntry],
) -> Result<bool> {
    let Some(entry) = files.iter().find(|f| f.path == snapshot::PROXY_ARCHIVE) else {
        return Ok(false);
    };
    let paths = crate::ops::proxy::ProxyPaths::new(ctx);
    let has_own = std::fs::read_dir(paths.data())
        .map(|mut d| d.next().is_some())
        .unwrap_or(false);
    if has_own || !ctx.config.proxy.enabled() {
        return Ok(false);
    }
    // A proxy started without data would keep the empty directory mounted.
    if let Some(c) = engine.proxy_container(&ctx.config.instance).await? {
        engine.remove(&c.id).await?;
    }
    let archive = dir.join(snapshot::PROXY_ARCHIVE);
    let (sha, size) = (entry.sha256.clone(), entry.size);
    let parent = ctx.config.state_dir.clone();
    let root = paths.root.clone();
    tokio::task::spawn_blocking(move || {
        let staged = snapshot::stage::stage(
            &archive,
            snapshot::stage::Expect { size, sha256: &sha },
            &parent,
            "proxy",
        )
        .map_err(|e| {
            Error::Other(format!(
                "{}: {e}; the proxy's certificates were not restored (restore another snapshot, or let the proxy ask its CA again)",
                snapshot::PROXY_ARCHIVE
            ))
        })?;
        // Caddy's data never holds a link; one here would point sp's certificate reader
        // (and Caddy) somewhere the snapshot chose.
        if let Some(link) = first_link(staged.path()) {
            return Err(Error::Other(format!(
                "{}: refused: it holds a symlink ({}), which Caddy's data never does; nothing of the proxy was restored",
                snapshot::PROXY_ARCHIVE,
                link.strip_prefix(staged.path()).unwrap_or(&link).display()
            )));
        }
        staged
            .commit(&root)
            .map_err(|e| Error::io_path("put the proxy's data in place at", &root, e))
    })
    .await
    .map_err(|e| Error::Other(format!("unpack task: {e}")))??;
    Ok(true)
}

/// The first symlink under `dir` (never following one), if any.
fn first_link(dir: &Path) -> Option<std::path::PathBuf> {
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).ok()?.flatten() {
            let t = e.file_type().ok()?;
            if t.is_symlink() {
                return Some(e.path());
            }
            if t.is_dir() {
                todo.push(e.path());
            }
        }
    }
    None
}

/// Plans the host config (local keys win) for a whole-host restore, and the registry
/// credentials (local entries win) always. Writes nothing.
pub(super) fn plan_host(ctx: &Ctx, dir: &Path, whole_host: bool) -> Result<HostPlan> {
    let path = dir.join(snapshot::HOST_ARCHIVE);
    let file = std::fs::File::open(&path).map_err(|e| Error::io_path("open", &path, e))?;
    let mut plan = HostPlan {
        config: None,
        credentials: None,
    };
    let mut config_text = None;
    let mut creds_text = None;
    let mut ar =
        tar::Archive::new(zstd::Decoder::new(file).map_err(|e| Error::io_path("read", &path, e))?);
    for entry in ar.entries().map_err(|e| Error::io_path("read", &path, e))? {
        let mut entry = entry.map_err(|e| Error::io_path("read", &path, e))?;
        let name = entry
            .path()
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut text = String::new();
        if name == "etc/config.toml" || name == "etc/registries.toml" {
            std::io::Read::read_to_string(&mut entry, &mut text)
                .map_err(|e| Error::io_path("read", &path, e))?;
        }
        match name.as_str() {
            "etc/config.toml" => config_text = Some(text),
            "etc/registries.toml" => creds_text = Some(text),
            _ => {}
        }
    }
    if let Some(text) = creds_text {
        let restored: crate::registry::Credentials = toml::from_str(&text).map_err(|e| {
            Error::Other(format!(
                "host.tar.zst: registries.toml: {}",
                crate::site::toml_error(&text, &e)
            ))
        })?;
        let mut local = ctx.credentials()?;
        for (host, c) in restored.registries {
            local.registries.entry(host).or_insert(c);
        }
        plan.credentials = Some(local);
    }
    let (true, Some(text)) = (whole_host, config_text) else {
        return Ok(plan);
    };
    let mut merged: toml::Table = toml::from_str(&text).map_err(|e| {
        Error::Other(format!(
            "host.tar.zst: config.toml: {}",
            crate::site::toml_error(&text, &e)
        ))
    })?;
    let local_text = std::fs::read_to_string(&ctx.config_path)
        .map_err(|e| Error::io_path("read", &ctx.config_path, e))?;
    let local: toml::Table = toml::from_str(&local_text).map_err(|e| Error::Config {
        path: ctx.config_path.display().to_string(),
        message: crate::site::toml_error(&local_text, &e),
    })?;
    merge(&mut merged, local);
    let out = format!(
        "# Restored by `sp restore` from the snapshot's host config; settings of the local config won.\n{}",
        toml::to_string_pretty(&merged).map_err(|e| Error::Other(format!("encode config: {e}")))?
    );
    // Refuse a merged config sp cannot load, before it replaces the local one.
    let config = crate::config::Config::parse(&out, Path::new("the restored config"))?;
    plan.config = Some((out, config));
    Ok(plan)
}

/// Deep-merges `over` into `base`; `over` wins.
fn merge(base: &mut toml::Table, over: toml::Table) {
    for (k, v) in over {
        match (base.get_mut(&k), v) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge(b, o),
            (_, v) => {
                base.insert(k, v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_link_anywhere_in_the_proxy_data_is_found() {
        let d = tempfile::tempdir().unwrap();
        let deep = d.path().join("data/caddy/certificates/ca");
        std::fs::create_dir_all(&deep).unwrap();
        std::fs::write(deep.join("a.crt"), "x").unwrap();
        assert_eq!(first_link(d.path()), None);
        std::os::unix::fs::symlink("/etc", deep.join("a.test")).unwrap();
        assert_eq!(first_link(d.path()), Some(deep.join("a.test")));
    }

    #[test]
    fn local_config_wins_in_the_merge() {
        let mut restored: toml::Table = toml::from_str(
            "instance = \"prod\"\nsites_dir = \"/sites\"\n[mysql]\nurl = \"mysql://old@10.0.0.1\"\nuser_host = \"172.17.%\"\n",
        )
        .unwrap();
        let local: toml::Table =
            toml::from_str("[mysql]\nurl = \"mysql://new@127.0.0.1\"\n").unwrap();
        merge(&mut restored, local);
        assert_eq!(restored["instance"].as_str(), Some("prod"));
        assert_eq!(
            restored["mysql"]["url"].as_str(),
            Some("mysql://new@127.0.0.1")
        );
        assert_eq!(restored["mysql"]["user_host"].as_str(), Some("172.17.%"));
    }
}
