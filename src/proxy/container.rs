//! The proxy container, as a pure builder (unit-tested for exact output).
//!
//! One per instance: `sp-INSTANCE_proxy` (the underscore keeps it apart from every site's
//! names, which cannot hold one), on a network of its own of the same name, joined to each
//! site's network as sites come. It publishes 80 and 443 (TCP, and UDP for HTTP/3) on
//! `proxy.listen`, restarts unless stopped, and keeps Caddy's state on the host:
//! `/data` (certificates, ACME account keys, OCSP staples: part of every snapshot),
//! `/config` (Caddy's autosave) and `/etc/caddy` (the Caddyfile sp writes, read-only).

use std::collections::HashMap;
use std::path::PathBuf;

use bollard::models::{
    ContainerCreateBody, HostConfig, HostConfigLogConfig, NetworkCreateRequest, PortBinding,
    RestartPolicy, RestartPolicyNameEnum,
};
use sha2::{Digest, Sha256};

use crate::engine::{LABEL_CONFIG, LABEL_IMAGE, LABEL_INSTANCE, LABEL_ROLE};

/// The `sp.role` label of the proxy container.
pub const ROLE: &str = "proxy";

/// The proxy container's name for an instance.
pub fn proxy_name(instance: &str) -> String {
    format!("sp-{instance}_proxy")
}

/// The proxy's own network (it starts on it, then joins the sites' networks).
pub fn proxy_network(instance: &str) -> String {
    format!("sp-{instance}_proxy")
}

/// Everything that decides how the proxy container is created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyPlan {
    pub instance: String,
    /// Local image id (`sha256:…`).
    pub image: String,
    /// The image reference pinned by digest (a label, for people).
    pub image_ref: String,
    /// Host address the ports are published on.
    pub listen: String,
    pub http_port: u16,
    pub https_port: u16,
    /// Host directories mounted at `/data`, `/config` and `/etc/caddy` (read-only).
    pub data_dir: PathBuf,
    pub config_dir: PathBuf,
    pub etc_dir: PathBuf,
}

impl ProxyPlan {
    /// A hash of the whole plan: when it changes, `sp proxy up` recreates the container.
    pub fn config_hash(&self) -> String {
        let mut h = Sha256::new();
        h.update(format!("{self:?}").as_bytes());
        hex::encode(&h.finalize()[..8])
    }
}

/// The create request of the proxy's own network.
pub fn proxy_network_spec(instance: &str) -> NetworkCreateRequest {
    NetworkCreateRequest {
        name: proxy_network(instance),
        driver: Some("bridge".into()),
        labels: Some(HashMap::from([
            (LABEL_INSTANCE.to_string(), instance.to_string()),
            (LABEL_ROLE.to_string(), ROLE.to_string()),
        ])),
        ..Default::default()
    }
}

/// The bollard create body of the proxy container.
pub fn proxy_container_spec(plan: &ProxyPlan) -> ContainerCreateBody {
    let labels: HashMap<String, String> = [
        (LABEL_INSTANCE, plan.instance.clone()),
        (LABEL_ROLE, ROLE.to_string()),
        (LABEL_CONFIG, plan.config_hash()),
        (LABEL_IMAGE, plan.image_ref.clone()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let bind = |port: u16| {
        Some(vec![PortBinding {
            host_ip: Some(plan.listen.clone()),
            host_port: Some(port.to_string()),
        }])
    };
    let port_bindings = HashMap::from([
        ("80/tcp".to_string(), bind(plan.http_port)),
        ("443/tcp".to_string(), bind(plan.https_port)),
        ("443/udp".to_string(), bind(plan.https_port)),
    ]);
    let exposed: Vec<String> = {
        let mut k: Vec<String> = port_bindings.keys().cloned().collect();
        k.sort();
        k
    };
    ContainerCreateBody {
        image: Some(plan.image.clone()),
        labels: Some(labels),
        exposed_ports: Some(exposed),
        host_config: Some(HostConfig {
            binds: Some(vec![
                format!("{}:/data", plan.data_dir.display()),
                format!("{}:/config", plan.config_dir.display()),
                format!("{}:/etc/caddy:ro", plan.etc_dir.display()),
            ]),
            port_bindings: Some(port_bindings),
            network_mode: Some(proxy_network(&plan.instance)),
            restart_policy: Some(RestartPolicy {
                name: Some(RestartPolicyNameEnum::UNLESS_STOPPED),
                maximum_retry_count: None,
            }),
            cap_drop: Some(vec!["ALL".into()]),
            cap_add: Some(vec!["NET_BIND_SERVICE".into()]),
            security_opt: Some(vec!["no-new-privileges".into()]),
            pids_limit: Some(4096),
            log_config: Some(HostConfigLogConfig {
                typ: Some("json-file".into()),
                config: Some(HashMap::from([
                    ("max-size".to_string(), "10m".to_string()),
                    ("max-file".to_string(), "3".to_string()),
                ])),
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan() -> ProxyPlan {
        ProxyPlan {
            instance: "prod".into(),
            image: "sha256:abc".into(),
            image_ref: "caddy@sha256:def".into(),
            listen: "127.0.0.1".into(),
            http_port: 18080,
            https_port: 18443,
            data_dir: "/var/lib/sp/proxy/data".into(),
            config_dir: "/var/lib/sp/proxy/config".into(),
            etc_dir: "/var/lib/sp/proxy/etc".into(),
        }
    }

    #[test]
    fn names_cannot_meet_a_sites() {
        assert_eq!(proxy_name("prod"), "sp-prod_proxy");
        assert_eq!(proxy_network("prod"), "sp-prod_proxy");
        // A site called "proxy" gets sp-prod-proxy: a different network.
        assert_ne!(
            proxy_network("prod"),
            crate::engine::site_network("prod", "proxy")
        );
    }

    #[test]
    fn the_proxy_publishes_web_ports_and_keeps_its_state_on_the_host() {
        let b = proxy_container_spec(&plan());
        assert_eq!(b.image.as_deref(), Some("sha256:abc"));
        let labels = b.labels.unwrap();
        assert_eq!(labels["sp.role"], "proxy");
        assert_eq!(labels["sp.instance"], "prod");
        assert_eq!(labels["sp.image"], "caddy@sha256:def");
        assert_eq!(
            b.exposed_ports.unwrap(),
            vec!["443/tcp", "443/udp", "80/tcp"]
        );
        let h = b.host_config.unwrap();
        assert_eq!(
            h.binds.unwrap(),
            vec![
                "/var/lib/sp/proxy/data:/data",
                "/var/lib/sp/proxy/config:/config",
                "/var/lib/sp/proxy/etc:/etc/caddy:ro"
            ]
        );
        let ports = h.port_bindings.unwrap();
        let one = |k: &str| {
            let b = ports[k].as_ref().unwrap()[0].clone();
            (b.host_ip.unwrap(), b.host_port.unwrap())
        };
        assert_eq!(one("80/tcp"), ("127.0.0.1".into(), "18080".into()));
        assert_eq!(one("443/tcp"), ("127.0.0.1".into(), "18443".into()));
        assert_eq!(h.network_mode.as_deref(), Some("sp-prod_proxy"));
        assert_eq!(
            h.restart_policy.unwrap().name,
            Some(RestartPolicyNameEnum::UNLESS_STOPPED)
        );
        assert_eq!(h.cap_drop.unwrap(), vec!["ALL"]);
        assert_eq!(h.cap_add.unwrap(), vec!["NET_BIND_SERVICE"]);
        assert_eq!(h.security_opt.unwrap(), vec!["no-new-privileges"]);
    }

    #[test]
    fn any_change_to_the_plan_changes_its_hash() {
        let a = plan();
        let mut b = plan();
        b.https_port = 443;
        assert_ne!(a.config_hash(), b.config_hash());
        assert_eq!(a.config_hash(), plan().config_hash());
    }
}
