//! What the proxy needs of the engine: its own network, its container, joining the sites'
//! networks, and running `caddy` inside it.

use bollard::models::{ContainerCreateBody, NetworkConnectRequest, NetworkDisconnectRequest};
use bollard::query_parameters::CreateContainerOptionsBuilder;

use super::{short, Engine, LABEL_CONFIG, LABEL_IMAGE, LABEL_INSTANCE, LABEL_ROLE};
use crate::error::{Error, Result};

/// The proxy container as found.
#[derive(Debug, Clone)]
pub struct ProxyContainer {
    pub id: String,
    pub running: bool,
    /// Its `sp.config` label (the plan's hash).
    pub config: String,
    /// Its `sp.image` label (the pinned reference).
    pub image_ref: String,
    /// Networks it is attached to.
    pub networks: Vec<String>,
}

impl Engine {
    /// Creates a network from `spec` unless one of that name exists. It is not put behind
    /// sp's firewall table: the proxy must reach the ACME CA and the sites' networks.
    pub async fn ensure_plain_network(
        &self,
        spec: bollard::models::NetworkCreateRequest,
    ) -> Result<()> {
        let name = spec.name.clone();
        if self.network_id(&name).await.is_some() {
            return Ok(());
        }
        match self.docker.create_network(spec).await {
            Ok(_)
            | Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 409, ..
            }) => Ok(()),
            Err(e) => Err(Error::docker(format!("create network {name}"), e)),
        }
    }

    /// Creates a container from a ready create body (not started); returns its id.
    pub async fn create_body(&self, name: &str, body: ContainerCreateBody) -> Result<String> {
        let opts = CreateContainerOptionsBuilder::default().name(name).build();
        let resp = self
            .docker
            .create_container(Some(opts), body)
            .await
            .map_err(|e| Error::docker(format!("create container {name}"), e))?;
        Ok(resp.id)
    }

    /// The instance's proxy container (label `sp.role=proxy`), if there is one.
    pub async fn proxy_container(&self, instance: &str) -> Result<Option<ProxyContainer>> {
        let labels = vec![
            format!("{LABEL_INSTANCE}={instance}"),
            format!("{LABEL_ROLE}={}", crate::proxy::container::ROLE),
        ];
        let Some(c) = self.labelled(labels).await?.into_iter().next() else {
            return Ok(None);
        };
        let labels = c.labels.unwrap_or_default();
        let networks = c
            .network_settings
            .and_then(|n| n.networks)
            .map(|n| n.into_keys().collect())
            .unwrap_or_default();
        Ok(Some(ProxyContainer {
            id: c.id.unwrap_or_default(),
            running: c.state.map(|s| s.to_string()).as_deref() == Some("running"),
            config: labels.get(LABEL_CONFIG).cloned().unwrap_or_default(),
            image_ref: labels.get(LABEL_IMAGE).cloned().unwrap_or_default(),
            networks,
        }))
    }

    /// Attaches a container to a network (already attached is fine).
    pub async fn join_network(&self, network: &str, container: &str) -> Result<()> {
        let r = self
            .docker
            .connect_network(
                network,
                NetworkConnectRequest {
                    container: container.to_string(),
                    endpoint_config: None,
                },
            )
            .await;
        match r {
            Ok(()) => Ok(()),
            Err(bollard::errors::Error::DockerResponseServerError { message, .. })
                if message.contains("already exists") =>
            {
                Ok(())
            }
            Err(e) => Err(Error::docker(
                format!("connect {} to network {network}", short(container)),
                e,
            )),
        }
    }

    /// Detaches every container still on a network (the proxy, before a site's network
    /// goes).
    pub async fn disconnect_all(&self, network: &str) -> Result<()> {
        let Ok(n) = self
            .docker
            .inspect_network(
                network,
                None::<bollard::query_parameters::InspectNetworkOptions>,
            )
            .await
        else {
            return Ok(());
        };
        for id in n.containers.unwrap_or_default().into_keys() {
            let r = self
                .docker
                .disconnect_network(
                    network,
                    NetworkDisconnectRequest {
                        container: id.clone(),
                        force: Some(true),
                    },
                )
                .await;
            super::tolerate(r, 404).map_err(|e| {
                Error::docker(format!("disconnect {} from {network}", short(&id)), e)
            })?;
        }
        Ok(())
    }

    /// Runs `cmd` in a running container and returns its exit code and output (stdout then
    /// stderr, as text).
    pub async fn exec_capture(&self, id: &str, cmd: &[String]) -> Result<(i64, String)> {
        let mut out = Vec::new();
        let mut err = Vec::new();
        let code = self.exec(id, cmd, None, &mut out, &mut err).await?;
        out.extend_from_slice(&err);
        Ok((code, String::from_utf8_lossy(&out).into_owned()))
    }
}
