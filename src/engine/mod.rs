//! The Docker engine, through bollard.
//!
//! [`plan`] holds the pure builders (unit-tested): [`container_spec`], [`network_spec`];
//! [`Engine`] sends requests. sp finds its containers and networks by labels (`sp.instance`,
//! `sp.site`, `sp.role`), never by stored ids, so two sp instances on one engine never see
//! each other's.

mod exec;
pub mod plan;
pub mod proxy;

pub use exec::ExecSession;

pub use plan::{
    container_spec, network_spec, site_network, Confinement, ContainerPlan, Role, LABEL_CONFIG,
    LABEL_IMAGE, LABEL_INSTANCE, LABEL_ROLE, LABEL_SITE,
};
pub use proxy::ProxyContainer;

use std::collections::HashMap;

use bollard::auth::DockerCredentials;
use bollard::container::LogOutput;
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, CreateImageOptionsBuilder, ListContainersOptionsBuilder,
    LogsOptionsBuilder, RemoveContainerOptionsBuilder, StopContainerOptionsBuilder,
};
use bollard::Docker;
use futures_util::{Stream, StreamExt};

use crate::error::{Error, Result};
use crate::registry::Credential;
use crate::site::ImageRef;

/// One of sp's containers, as listed.
#[derive(Debug, Clone)]
pub struct ContainerInfo {
    pub id: String,
    pub name: String,
    pub site: String,
    pub role: String,
    pub config: String,
    pub image: String,
    /// created, running, exited, paused, ...
    pub state: String,
    pub host_port: Option<u16>,
}

impl ContainerInfo {
    pub fn running(&self) -> bool {
        self.state == "running"
    }
}

/// How a container ended up, for health checks and one-off runs.
#[derive(Debug, Clone)]
pub struct ContainerStatus {
    pub running: bool,
    pub exit_code: Option<i64>,
    pub restarting: bool,
    /// How often Docker restarted it (a crash loop shows here).
    pub restart_count: i64,
}

/// A connection to the Docker engine.
#[derive(Clone)]
pub struct Engine {
    docker: Docker,
}

impl Engine {
    /// Connects to the local engine and negotiates the API version (Debian's engine speaks 1.41).
    /// Connects; every request to the engine gives up after `timeout` (`docker.timeout`).
    pub async fn connect(timeout: std::time::Duration) -> Result<Engine> {
        let docker = Docker::connect_with_local_defaults()
            .map_err(|e| Error::docker("connect", e))?
            .with_timeout(timeout);
        let docker = docker
            .negotiate_version()
            .await
            .map_err(|e| Error::docker("connect to the engine (is dockerd running?)", e))?;
        Ok(Engine { docker })
    }

    /// The engine's version string.
    pub async fn version(&self) -> Result<String> {
        let v = self
            .docker
            .version()
            .await
            .map_err(|e| Error::docker("version", e))?;
        Ok(format!(
            "{} (API {})",
            v.version.unwrap_or_default(),
            v.api_version.unwrap_or_default()
        ))
    }

    /// Pulls `image` with the registry's stored credential and returns it pinned by digest;
    /// `progress(bytes, total)` hears the layers' download as the engine reports it.
    pub async fn pull(
        &self,
        image: &ImageRef,
        cred: Option<&Credential>,
        progress: &mut (dyn FnMut(u64, u64) + Send),
    ) -> Result<String> {
        let tag = image
            .digest
            .clone()
            .unwrap_or_else(|| image.tag_or_latest().to_string());
        let opts = CreateImageOptionsBuilder::default()
            .from_image(&image.repository())
            .tag(&tag)
            .build();
        let creds = cred.map(|c| DockerCredentials {
            username: Some(c.username.clone()),
            password: Some(c.password.clone()),
            serveraddress: Some(image.registry.clone()),
            ..Default::default()
        });
        let mut stream = self.docker.create_image(Some(opts), None, creds);
        // Per layer: bytes downloaded and its size, as the engine reports them.
        let mut layers: std::collections::HashMap<String, (u64, u64)> = Default::default();
        while let Some(item) = stream.next().await {
            let info = item.map_err(|e| Error::docker(format!("pull {image}"), e))?;
            if let (Some(id), Some(status)) = (&info.id, &info.status) {
                let detail = info.progress_detail.as_ref();
                let num = |v: Option<i64>| v.and_then(|n| u64::try_from(n).ok());
                let layer = layers.entry(id.clone()).or_default();
                match status.as_str() {
                    "Downloading" => {
                        layer.0 = num(detail.and_then(|d| d.current)).unwrap_or(layer.0);
                        layer.1 = num(detail.and_then(|d| d.total)).unwrap_or(layer.1);
                    }
                    "Download complete" | "Already exists" | "Pull complete" => layer.0 = layer.1,
                    _ => {}
                }
                let (done, total) = layers.values().fold((0, 0), |(d, t), l| (d + l.0, t + l.1));
                progress(done, total);
            }
            if let Some(err) = info.error_detail.and_then(|d| d.message) {
                return Err(Error::Docker {
                    context: format!("pull {image}"),
                    message: err,
                });
            }
        }
        let local = match &image.digest {
            Some(d) => image.pinned(d),
            None => format!("{}:{tag}", image.repository()),
        };
        self.pinned_ref(&local, image).await
    }

    /// The `repo@sha256:…` of a local image.
    pub async fn pinned_ref(&self, local: &str, image: &ImageRef) -> Result<String> {
        let inspect = self
            .docker
            .inspect_image(local)
            .await
            .map_err(|e| Error::docker(format!("inspect {local}"), e))?;
        let repo = image.repository();
        for rd in inspect.repo_digests.unwrap_or_default() {
            if let Some((name, digest)) = rd.split_once('@') {
                let same = ImageRef::parse(name)
                    .map(|r| r.repository() == repo)
                    .unwrap_or(false);
                if same {
                    return Ok(image.pinned(digest));
                }
            }
        }
        Err(Error::Docker {
            context: format!("inspect {local}"),
            message: "the image has no registry digest for this repository (was it pulled from a registry?)".into(),
        })
    }

    /// The local image id (`sha256:` of the image config) of a reference.
    pub async fn image_id(&self, reference: &str) -> Result<String> {
        let inspect = self
            .docker
            .inspect_image(reference)
            .await
            .map_err(|e| Error::docker(format!("inspect {reference}"), e))?;
        inspect.id.ok_or_else(|| Error::Docker {
            context: format!("inspect {reference}"),
            message: "no image id".into(),
        })
    }

    /// Writes `docker save` of an image, zstd-compressed, to `path` (via a temp file).
    pub async fn save_image(&self, id: &str, path: &std::path::Path, level: i32) -> Result<()> {
        let tmp = path.with_extension("partial");
        let (tx, rx) = std::sync::mpsc::sync_channel::<bytes::Bytes>(16);
        let tmp2 = tmp.clone();
        let writer = tokio::task::spawn_blocking(move || -> std::io::Result<(u64, String)> {
            let mut enc = crate::snapshot::archive::zstd_file(&tmp2, level, 0, Default::default())?;
            for chunk in rx {
                std::io::Write::write_all(&mut enc, &chunk)?;
            }
            crate::snapshot::archive::finish_zstd_file(enc)
        });
        let mut stream = self.docker.export_image(id);
        let mut failed = None;
        while let Some(chunk) = stream.next().await {
            match chunk {
                Ok(b) => {
                    if tx.send(b).is_err() {
                        break;
                    }
                }
                Err(e) => {
                    failed = Some(Error::docker(format!("save {id}"), e));
                    break;
                }
            }
        }
        drop(tx);
        let written = writer
            .await
            .map_err(|e| Error::Other(format!("save {id}: {e}")))?;
        if let Some(e) = failed {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        let (_, sha) = written.map_err(|e| Error::io_path("write", &tmp, e))?;
        // Root only, as every other file beside the snapshots.
        crate::fsutil::write_private(
            &path.with_extension("zst.sha256"),
            format!("{sha}\n").as_bytes(),
        )?;
        std::fs::rename(&tmp, path).map_err(|e| Error::io_path("rename", path, e))?;
        Ok(())
    }

    /// `docker load` of a zstd-compressed `docker save` archive, streamed.
    pub async fn load_image(&self, path: &std::path::Path) -> Result<()> {
        let (tx, rx) =
            tokio::sync::mpsc::channel::<std::result::Result<bytes::Bytes, std::io::Error>>(8);
        let p = path.to_path_buf();
        let reader = tokio::task::spawn_blocking(move || {
            let run = || -> std::io::Result<()> {
                let mut dec = zstd::Decoder::new(std::fs::File::open(&p)?)?;
                loop {
                    let mut buf = vec![0u8; 1 << 20];
                    let n = std::io::Read::read(&mut dec, &mut buf)?;
                    if n == 0 {
                        return Ok(());
                    }
                    buf.truncate(n);
                    if tx.blocking_send(Ok(bytes::Bytes::from(buf))).is_err() {
                        return Ok(());
                    }
                }
            };
            if let Err(e) = run() {
                let _ = tx.blocking_send(Err(e));
            }
        });
        let body =
            futures_util::stream::unfold(
                rx,
                |mut rx| async move { rx.recv().await.map(|x| (x, rx)) },
            );
        let opts = bollard::query_parameters::ImportImageOptionsBuilder::default()
            .quiet(true)
            .build();
        let mut s = self.docker.import_image_stream(opts, body, None);
        while let Some(item) = s.next().await {
            item.map_err(|e| Error::docker(format!("load {}", path.display()), e))?;
        }
        let _ = reader.await;
        Ok(())
    }

    /// Tags a local image as `repo:tag`.
    pub async fn tag(&self, id: &str, repo: &str, tag: &str) -> Result<()> {
        let opts = bollard::query_parameters::TagImageOptionsBuilder::default()
            .repo(repo)
            .tag(tag)
            .build();
        self.docker
            .tag_image(id, Some(opts))
            .await
            .map_err(|e| Error::docker(format!("tag {id}"), e))
    }

    /// True when the image is present locally.
    pub async fn has_image(&self, reference: &str) -> bool {
        self.docker.inspect_image(reference).await.is_ok()
    }

    /// Ports the image EXPOSEs.
    pub async fn exposed_ports(&self, reference: &str) -> Result<Vec<u16>> {
        let inspect = self
            .docker
            .inspect_image(reference)
            .await
            .map_err(|e| Error::docker(format!("inspect {reference}"), e))?;
        let mut ports: Vec<u16> = inspect
            .config
            .and_then(|c| c.exposed_ports)
            .unwrap_or_default()
            .iter()
            .filter_map(|p| p.split('/').next()?.parse().ok())
            .collect();
        ports.sort_unstable();
        ports.dedup();
        Ok(ports)
    }

    /// The id of a network, or None when there is none of that name.
    async fn network_id(&self, name: &str) -> Option<String> {
        self.docker
            .inspect_network(
                name,
                None::<bollard::query_parameters::InspectNetworkOptions>,
            )
            .await
            .ok()
            .and_then(|n| n.id)
    }

    /// Creates the plan's network (labelled like its containers) unless it exists, and puts
    /// its bridge behind sp's own firewall table (see [`crate::firewall`]) either way.
    pub async fn ensure_network(&self, plan: &ContainerPlan) -> Result<()> {
        let name = plan.network.as_str();
        let id = match self.network_id(name).await {
            Some(id) => id,
            None => match self.docker.create_network(network_spec(plan)).await {
                Ok(r) => r.id,
                // Created meanwhile by a concurrent command.
                Err(bollard::errors::Error::DockerResponseServerError {
                    status_code: 409, ..
                }) => self.network_id(name).await.unwrap_or_default(),
                Err(e) => return Err(Error::docker(format!("create network {name}"), e)),
            },
        };
        let bridge = crate::firewall::bridge_of(&id).ok_or_else(|| Error::Docker {
            context: format!("create network {name}"),
            message: format!("unexpected network id {id:?}"),
        })?;
        tokio::task::spawn_blocking(move || crate::firewall::admit(&bridge))
            .await
            .map_err(|e| Error::Other(format!("firewall task: {e}")))?
    }

    /// Names of this instance's networks, optionally of one site.
    pub async fn networks(&self, instance: &str, site: Option<&str>) -> Result<Vec<String>> {
        let mut labels = vec![format!("{LABEL_INSTANCE}={instance}")];
        if let Some(s) = site {
            labels.push(format!("{LABEL_SITE}={s}"));
        }
        let filters = HashMap::from([("label".to_string(), labels)]);
        let opts = bollard::query_parameters::ListNetworksOptionsBuilder::default()
            .filters(&filters)
            .build();
        let list = self
            .docker
            .list_networks(Some(opts))
            .await
            .map_err(|e| Error::docker("list networks", e))?;
        Ok(list.into_iter().filter_map(|n| n.name).collect())
    }

    /// Removes this instance's networks (of one site, or all) and their firewall entries;
    /// remove their containers first.
    pub async fn remove_networks(&self, instance: &str, site: Option<&str>) -> Result<()> {
        for n in self.networks(instance, site).await? {
            let bridge = self
                .network_id(&n)
                .await
                .and_then(|id| crate::firewall::bridge_of(&id));
            // The proxy may still be attached.
            self.disconnect_all(&n).await?;
            self.remove_network(&n).await?;
            if let Some(b) = bridge {
                let _ = tokio::task::spawn_blocking(move || crate::firewall::forget(&b)).await;
            }
        }
        Ok(())
    }

    /// The bridge of a network, if the network exists (for `sp doctor`).
    pub async fn bridge_of(&self, name: &str) -> Option<String> {
        self.network_id(name)
            .await
            .and_then(|id| crate::firewall::bridge_of(&id))
    }

    /// sp's containers of this instance, optionally of one site and role, running or not.
    pub async fn list(
        &self,
        instance: &str,
        site: Option<&str>,
        role: Option<Role>,
    ) -> Result<Vec<ContainerInfo>> {
        let mut labels = vec![format!("{LABEL_INSTANCE}={instance}")];
        if let Some(s) = site {
            labels.push(format!("{LABEL_SITE}={s}"));
        }
        if let Some(r) = role {
            labels.push(format!("{LABEL_ROLE}={}", r.as_str()));
        }
        let list = self.labelled(labels).await?;
        Ok(list
            .into_iter()
            .map(|c| {
                let labels = c.labels.unwrap_or_default();
                let host_port = c
                    .ports
                    .unwrap_or_default()
                    .iter()
                    .find_map(|p| p.public_port);
                ContainerInfo {
                    id: c.id.unwrap_or_default(),
                    name: c
                        .names
                        .and_then(|n| n.first().cloned())
                        .unwrap_or_default()
                        .trim_start_matches('/')
                        .to_string(),
                    site: labels.get(LABEL_SITE).cloned().unwrap_or_default(),
                    role: labels.get(LABEL_ROLE).cloned().unwrap_or_default(),
                    config: labels.get(LABEL_CONFIG).cloned().unwrap_or_default(),
                    image: c.image.unwrap_or_default(),
                    state: c.state.map(|s| s.to_string()).unwrap_or_default(),
                    host_port,
                }
            })
            .collect())
    }

    /// Every container (running or not) that carries all of `labels` (`KEY=VALUE`).
    async fn labelled(
        &self,
        labels: Vec<String>,
    ) -> Result<Vec<bollard::models::ContainerSummary>> {
        let filters = HashMap::from([("label".to_string(), labels)]);
        let opts = ListContainersOptionsBuilder::default()
            .all(true)
            .filters(&filters)
            .build();
        self.docker
            .list_containers(Some(opts))
            .await
            .map_err(|e| Error::docker("list containers", e))
    }

    async fn inspect(&self, id: &str) -> Result<bollard::models::ContainerInspectResponse> {
        self.docker
            .inspect_container(
                id,
                None::<bollard::query_parameters::InspectContainerOptions>,
            )
            .await
            .map_err(|e| Error::docker(format!("inspect {}", short(id)), e))
    }

    /// The container's IP address on `network`.
    pub async fn container_ip(&self, id: &str, network: &str) -> Result<Option<String>> {
        let c = self.inspect(id).await?;
        Ok(c.network_settings
            .and_then(|n| n.networks)
            .and_then(|n| n.get(network).cloned())
            .and_then(|e| e.ip_address)
            .filter(|ip| !ip.is_empty()))
    }

    /// Removes a network; a missing one is not an error.
    pub async fn remove_network(&self, name: &str) -> Result<()> {
        let r = self.docker.remove_network(name).await;
        tolerate(r, 404).map_err(|e| Error::docker(format!("remove network {name}"), e))
    }

    /// Creates a container from a plan (not started), and its network first when missing;
    /// returns its id.
    pub async fn create(&self, name: &str, plan: &ContainerPlan) -> Result<String> {
        self.ensure_network(plan).await?;
        let opts = CreateContainerOptionsBuilder::default().name(name).build();
        let resp = self
            .docker
            .create_container(Some(opts), container_spec(plan))
            .await
            .map_err(|e| Error::docker(format!("create container {name}"), e))?;
        Ok(resp.id)
    }

    /// Starts a container (one that already runs is fine; one left paused — by a backup that
    /// was killed while it had it paused — is unpaused).
    pub async fn start(&self, id: &str) -> Result<()> {
        if let Ok(c) = self.inspect(id).await {
            if c.state.and_then(|s| s.paused) == Some(true) {
                return self.unpause(id).await;
            }
        }
        let r = self
            .docker
            .start_container(id, None::<bollard::query_parameters::StartContainerOptions>)
            .await;
        tolerate(r, 304).map_err(|e| Error::docker(format!("start {}", short(id)), e))
    }

    pub async fn pause(&self, id: &str) -> Result<()> {
        self.docker
            .pause_container(id)
            .await
            .map_err(|e| Error::docker(format!("pause {}", short(id)), e))
    }

    pub async fn unpause(&self, id: &str) -> Result<()> {
        self.docker
            .unpause_container(id)
            .await
            .map_err(|e| Error::docker(format!("unpause {}", short(id)), e))
    }

    /// Stops a container (one that already stopped is fine).
    pub async fn stop(&self, id: &str) -> Result<()> {
        self.stop_within(id, 10).await
    }

    /// Stops a container: SIGTERM, and SIGKILL after `secs` seconds.
    pub async fn stop_within(&self, id: &str, secs: i32) -> Result<()> {
        let opts = StopContainerOptionsBuilder::default().t(secs).build();
        let r = self.docker.stop_container(id, Some(opts)).await;
        tolerate(r, 304).map_err(|e| Error::docker(format!("stop {}", short(id)), e))
    }

    /// Removes a container (forcing a running one); a missing container is not an error.
    pub async fn remove(&self, id: &str) -> Result<()> {
        let opts = RemoveContainerOptionsBuilder::default().force(true).build();
        let r = self.docker.remove_container(id, Some(opts)).await;
        tolerate(r, 404).map_err(|e| Error::docker(format!("remove {}", short(id)), e))
    }

    pub async fn status(&self, id: &str) -> Result<ContainerStatus> {
        let c = self.inspect(id).await?;
        let restart_count = c.restart_count.unwrap_or(0);
        let st = c.state.unwrap_or_default();
        Ok(ContainerStatus {
            restart_count,
            running: st.running.unwrap_or(false),
            exit_code: st.exit_code,
            restarting: st.restarting.unwrap_or(false),
        })
    }

    /// The container's log stream (stdout and stderr interleaved).
    pub fn logs(
        &self,
        id: &str,
        follow: bool,
        tail: Option<u32>,
    ) -> impl Stream<Item = Result<LogOutput>> + '_ {
        self.logs_with(
            id,
            &LogQuery {
                follow,
                tail,
                ..Default::default()
            },
        )
    }

    /// The container's log stream as `query` asks for it.
    pub fn logs_with(
        &self,
        id: &str,
        query: &LogQuery,
    ) -> impl Stream<Item = Result<LogOutput>> + '_ {
        let tail = query
            .tail
            .map(|t| t.to_string())
            .unwrap_or_else(|| "all".into());
        let opts = LogsOptionsBuilder::default()
            .stdout(true)
            .stderr(true)
            .follow(query.follow)
            .tail(&tail)
            .since(query.since.map(clamp_i32).unwrap_or(0))
            .timestamps(query.timestamps)
            .build();
        let id = id.to_string();
        self.docker
            .logs(&id, Some(opts))
            .map(move |r| r.map_err(|e| Error::docker("read logs", e)))
    }

    /// The last `n` log lines as text (for error messages).
    pub async fn tail_logs(&self, id: &str, n: u32) -> String {
        let mut out = Vec::new();
        let mut s = Box::pin(self.logs(id, false, Some(n)));
        while let Some(Ok(chunk)) = s.next().await {
            out.extend_from_slice(&chunk.into_bytes());
        }
        String::from_utf8_lossy(&out).trim().to_string()
    }

    /// Waits until a container stops, returning its exit code.
    pub async fn wait(&self, id: &str) -> Result<i64> {
        let mut s = self
            .docker
            .wait_container(id, None::<bollard::query_parameters::WaitContainerOptions>);
        let mut code = None;
        while let Some(r) = s.next().await {
            match r {
                Ok(w) => code = Some(w.status_code),
                // bollard reports a non-zero exit as an error carrying the code.
                Err(bollard::errors::Error::DockerContainerWaitError { code: c, .. }) => {
                    code = Some(c)
                }
                Err(e) => return Err(Error::docker(format!("wait for {}", short(id)), e)),
            }
        }
        match code {
            Some(c) => Ok(c),
            None => Ok(self.status(id).await?.exit_code.unwrap_or(-1)),
        }
    }
}

/// What a log request asks for.
#[derive(Debug, Clone, Default)]
pub struct LogQuery {
    /// Keep streaming new output.
    pub follow: bool,
    /// Only the last N lines.
    pub tail: Option<u32>,
    /// Only output after this Unix time (seconds).
    pub since: Option<i64>,
    /// Each line starts with Docker's RFC 3339 timestamp and a space.
    pub timestamps: bool,
}

/// A Unix time as Docker's 32-bit `since`.
fn clamp_i32(t: i64) -> i32 {
    t.clamp(0, i64::from(i32::MAX)) as i32
}

/// Treats Docker's answer `status` as success: 304 (already in that state) or 404 (already gone).
fn tolerate(
    r: std::result::Result<(), bollard::errors::Error>,
    status: u16,
) -> std::result::Result<(), bollard::errors::Error> {
    match r {
        Err(bollard::errors::Error::DockerResponseServerError { status_code, .. })
            if status_code == status =>
        {
            Ok(())
        }
        other => other,
    }
}

/// First 12 characters of an id.
pub fn short(id: &str) -> &str {
    &id[..id.len().min(12)]
}
