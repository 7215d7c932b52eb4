//! What sp asks Docker to create, as pure builders (unit-tested for exact output): the
//! container plan and its create body, and the per-site network.
//!
//! Every site container runs confined: on a network of its own (so sites cannot reach one
//! another), as the site's uid, with every capability dropped (the spec may add some back),
//! `no-new-privileges`, a pids limit and rotated json-file logs.

use std::collections::{BTreeMap, HashMap};

use bollard::models::{
    ContainerCreateBody, HostConfig, HostConfigLogConfig, NetworkCreateRequest, PortBinding,
    RestartPolicy, RestartPolicyNameEnum,
};
use sha2::{Digest, Sha256};

pub const LABEL_INSTANCE: &str = "sp.instance";
pub const LABEL_SITE: &str = "sp.site";
pub const LABEL_ROLE: &str = "sp.role";
pub const LABEL_CONFIG: &str = "sp.config";
pub const LABEL_IMAGE: &str = "sp.image";

/// What a site container is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The long-running app.
    Web,
    /// A one-off release command before a deploy.
    Release,
    /// A scheduled per-site job.
    Job,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Web => "web",
            Role::Release => "release",
            Role::Job => "job",
        }
    }
}

/// How far a container is confined beyond its uid; the site spec's `[container]` decides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Confinement {
    /// Capabilities added back after `ALL` is dropped (e.g. `NET_BIND_SERVICE`).
    pub cap_add: Vec<String>,
    pub no_new_privileges: bool,
    /// Most processes (and threads) the container may have.
    pub pids_limit: i64,
    /// json-file log rotation: size of one file (`10m`) and how many files are kept.
    pub log_max_size: String,
    pub log_max_files: u32,
}

/// Everything that decides how a site container is created.
#[derive(Debug, Clone)]
pub struct ContainerPlan {
    pub instance: String,
    pub site: String,
    pub role: Role,
    /// The local image id (`sha256:…`) the container is created from.
    pub image: String,
    /// The registry reference pinned by digest, for people (a label; not hashed).
    pub image_ref: String,
    /// `uid:gid` the process runs as.
    pub user: String,
    pub env: BTreeMap<String, String>,
    /// `host_path:container_path[:ro]`.
    pub binds: Vec<String>,
    /// The site's own network ([`site_network`]); created with the container if missing.
    pub network: String,
    /// Container port and the 127.0.0.1 host port it is published on.
    pub publish: Option<(u16, u16)>,
    pub memory: Option<i64>,
    /// Overrides the image's command (release containers).
    pub cmd: Option<Vec<String>>,
    pub confinement: Confinement,
}

impl ContainerPlan {
    /// A hash of everything except the host port: when it changes, `sp apply` recreates.
    pub fn config_hash(&self) -> String {
        let mut h = Sha256::new();
        let text = format!(
            "{}\n{}\n{:?}\n{:?}\n{}\n{:?}\n{:?}\n{:?}\n{:?}",
            self.image,
            self.user,
            self.env,
            self.binds,
            self.network,
            self.publish.map(|p| p.0),
            self.memory,
            self.cmd,
            self.confinement,
        );
        h.update(text.as_bytes());
        hex::encode(&h.finalize()[..8])
    }
}

/// The network a site's containers run on: `sp-INSTANCE-SITE`, one per site, so a site's
/// container cannot reach another site's.
pub fn site_network(instance: &str, site: &str) -> String {
    format!("sp-{instance}-{site}")
}

/// The create request of a plan's network, labelled like its containers.
pub fn network_spec(plan: &ContainerPlan) -> NetworkCreateRequest {
    NetworkCreateRequest {
        name: plan.network.clone(),
        driver: Some("bridge".into()),
        labels: Some(HashMap::from([
            (LABEL_INSTANCE.to_string(), plan.instance.clone()),
            (LABEL_SITE.to_string(), plan.site.clone()),
        ])),
        ..Default::default()
    }
}

/// The bollard create body for a plan.
pub fn container_spec(plan: &ContainerPlan) -> ContainerCreateBody {
    let labels: HashMap<String, String> = [
        (LABEL_INSTANCE, plan.instance.clone()),
        (LABEL_SITE, plan.site.clone()),
        (LABEL_ROLE, plan.role.as_str().to_string()),
        (LABEL_CONFIG, plan.config_hash()),
        (LABEL_IMAGE, plan.image_ref.clone()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let (exposed, port_bindings) = match plan.publish {
        Some((inner, host)) => {
            let key = format!("{inner}/tcp");
            let binding = PortBinding {
                host_ip: Some("127.0.0.1".into()),
                host_port: Some(host.to_string()),
            };
            (
                Some(vec![key.clone()]),
                Some(HashMap::from([(key, Some(vec![binding]))])),
            )
        }
        None => (None, None),
    };
    let restart = match plan.role {
        Role::Web => RestartPolicyNameEnum::UNLESS_STOPPED,
        Role::Release | Role::Job => RestartPolicyNameEnum::NO,
    };
    let c = &plan.confinement;
    ContainerCreateBody {
        image: Some(plan.image.clone()),
        user: Some(plan.user.clone()),
        env: Some(plan.env.iter().map(|(k, v)| format!("{k}={v}")).collect()),
        labels: Some(labels),
        exposed_ports: exposed,
        cmd: plan.cmd.clone(),
        host_config: Some(HostConfig {
            binds: Some(plan.binds.clone()),
            port_bindings,
            network_mode: Some(plan.network.clone()),
            restart_policy: Some(RestartPolicy {
                name: Some(restart),
                maximum_retry_count: None,
            }),
            extra_hosts: Some(vec!["host.docker.internal:host-gateway".into()]),
            memory: plan.memory,
            cap_drop: Some(vec!["ALL".into()]),
            cap_add: (!c.cap_add.is_empty()).then(|| c.cap_add.clone()),
            security_opt: c
                .no_new_privileges
                .then(|| vec!["no-new-privileges".into()]),
            pids_limit: Some(c.pids_limit),
            log_config: Some(HostConfigLogConfig {
                typ: Some("json-file".into()),
                config: Some(HashMap::from([
                    ("max-size".to_string(), c.log_max_size.clone()),
                    ("max-file".to_string(), c.log_max_files.to_string()),
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

    fn plan() -> ContainerPlan {
        ContainerPlan {
            instance: "t1".into(),
            site: "blog".into(),
            role: Role::Web,
            image: format!("sha256:{}", "b".repeat(64)),
            image_ref: format!("reg.example.com/blog@sha256:{}", "a".repeat(64)),
            user: "20001:20001".into(),
            env: [("A".to_string(), "1".to_string())].into(),
            binds: vec!["/sites/blog/data:/data".into()],
            network: site_network("t1", "blog"),
            publish: Some((8000, 20001)),
            memory: Some(256 << 20),
            cmd: None,
            confinement: Confinement {
                cap_add: Vec::new(),
                no_new_privileges: true,
                pids_limit: 512,
                log_max_size: "10m".into(),
                log_max_files: 3,
            },
        }
    }

    #[test]
    fn web_container_publishes_on_loopback_only() {
        let body = container_spec(&plan());
        let hc = body.host_config.unwrap();
        let b = &hc.port_bindings.unwrap()["8000/tcp"];
        let b = &b.as_ref().unwrap()[0];
        assert_eq!(b.host_ip.as_deref(), Some("127.0.0.1"));
        assert_eq!(b.host_port.as_deref(), Some("20001"));
        assert_eq!(body.exposed_ports.unwrap(), vec!["8000/tcp".to_string()]);
        assert_eq!(
            hc.restart_policy.unwrap().name,
            Some(RestartPolicyNameEnum::UNLESS_STOPPED)
        );
        assert_eq!(body.user.as_deref(), Some("20001:20001"));
        let labels = body.labels.unwrap();
        assert_eq!(labels[LABEL_SITE], "blog");
        assert_eq!(labels[LABEL_INSTANCE], "t1");
        assert_eq!(labels[LABEL_ROLE], "web");
        assert_eq!(body.env.unwrap(), vec!["A=1".to_string()]);
    }

    #[test]
    fn containers_are_confined_on_their_own_network() {
        let hc = container_spec(&plan()).host_config.unwrap();
        assert_eq!(hc.network_mode.as_deref(), Some("sp-t1-blog"));
        assert_eq!(hc.cap_drop, Some(vec!["ALL".to_string()]));
        assert_eq!(hc.cap_add, None);
        assert_eq!(hc.security_opt, Some(vec!["no-new-privileges".to_string()]));
        assert_eq!(hc.pids_limit, Some(512));
        assert_eq!(
            hc.log_config,
            Some(HostConfigLogConfig {
                typ: Some("json-file".into()),
                config: Some(HashMap::from([
                    ("max-size".to_string(), "10m".to_string()),
                    ("max-file".to_string(), "3".to_string()),
                ])),
            })
        );
        assert_eq!(
            hc.extra_hosts,
            Some(vec!["host.docker.internal:host-gateway".to_string()])
        );
    }

    #[test]
    fn the_spec_can_loosen_and_tighten_the_confinement() {
        let mut p = plan();
        p.confinement = Confinement {
            cap_add: vec!["NET_BIND_SERVICE".into()],
            no_new_privileges: false,
            pids_limit: 64,
            log_max_size: "1m".into(),
            log_max_files: 2,
        };
        let hc = container_spec(&p).host_config.unwrap();
        assert_eq!(hc.cap_drop, Some(vec!["ALL".to_string()]));
        assert_eq!(hc.cap_add, Some(vec!["NET_BIND_SERVICE".to_string()]));
        assert_eq!(hc.security_opt, None);
        assert_eq!(hc.pids_limit, Some(64));
        let log = hc.log_config.unwrap().config.unwrap();
        assert_eq!(log["max-size"], "1m");
        assert_eq!(log["max-file"], "2");
        assert_ne!(p.config_hash(), plan().config_hash());
    }

    #[test]
    fn the_network_is_the_sites_own_and_labelled() {
        let n = network_spec(&plan());
        assert_eq!(n.name, "sp-t1-blog");
        assert_eq!(n.driver.as_deref(), Some("bridge"));
        let labels = n.labels.unwrap();
        assert_eq!(labels.len(), 2);
        assert_eq!(labels[LABEL_INSTANCE], "t1");
        assert_eq!(labels[LABEL_SITE], "blog");
        assert_eq!(n.internal, None);
    }

    #[test]
    fn config_hash_ignores_host_port_but_not_env() {
        let a = plan();
        let mut b = plan();
        b.publish = Some((8000, 20002));
        assert_eq!(a.config_hash(), b.config_hash());
        b.env.insert("B".into(), "2".into());
        assert_ne!(a.config_hash(), b.config_hash());
    }
}
