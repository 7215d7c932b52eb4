//! `sp site add`: validate everything, then create the site step by step, rolling back what
//! was created if any step fails.
//!
//! 1. validate the name, image, domains, env, memory (nothing is touched before this passes);
//! 2. refuse when the site, its containers, its database or its user already exist, or when
//!    another site has one of its domains; pick a uid nothing on the host uses (no spec,
//!    removed ones too, no file under `sites_dir`, no host account);
//! 3. pull the image (the container port defaults to its single EXPOSE, else 8000);
//! 4. write `/sites/NAME/{site.toml,data/,secrets/,tmp/}` (the tree 0700, site.toml 0600);
//! 5. create database NAME and user NAME with a generated password (file mode 0400);
//! 6. roll out the container on the site's own network (see [`super::deploy::rollout`]).

use std::collections::BTreeMap;

use serde::Serialize;

use crate::error::{Error, Result, StepExt};
use crate::site::{
    parse_env_pair, parse_memory, validate_domain, validate_name, DatabaseSpec, Health, ImageRef,
    SiteSpec,
};

use super::deploy::{rollout_recorded, Release, Rollout, Why};
use super::{provision, Ctx};

/// Options of `sp site add`.
#[derive(Debug, Clone, Default)]
pub struct SiteAddOpts {
    pub name: String,
    pub image: String,
    pub domains: Vec<String>,
    /// Port the app listens on inside the container.
    pub port: Option<u16>,
    /// `KEY=VALUE` pairs.
    pub env: Vec<String>,
    pub no_db: bool,
    pub memory: Option<String>,
    pub health_path: Option<String>,
    pub release: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct SiteAddReport {
    pub site: String,
    pub uid: u32,
    /// The port the app listens on inside the container (the host port is in `rollout`).
    pub container_port: u16,
    pub database: Option<String>,
    pub rollout: Rollout,
}

impl std::fmt::Display for SiteAddReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "added site {} (uid {})", self.site, self.uid)?;
        if let Some(db) = &self.database {
            writeln!(f, "database {db}, user {db}")?;
        }
        write!(f, "{}", self.rollout)
    }
}

/// Validates the options and builds the spec (uid filled in later).
fn spec_from(opts: &SiteAddOpts) -> Result<SiteSpec> {
    validate_name(&opts.name)?;
    ImageRef::parse(&opts.image)?;
    for d in &opts.domains {
        validate_domain(d)?;
    }
    let mut env = BTreeMap::new();
    for pair in &opts.env {
        let (k, v) = parse_env_pair(pair)?;
        env.insert(k, v);
    }
    if let Some(m) = &opts.memory {
        parse_memory(m)?;
    }
    if opts.port == Some(0) {
        return Err(Error::Invalid("--port must be 1-65535".into()));
    }
    let spec = SiteSpec {
        name: opts.name.clone(),
        image: opts.image.clone(),
        uid: 0,
        port: opts.port.unwrap_or(8000),
        publish: false,
        domains: opts.domains.clone(),
        memory: opts.memory.clone(),
        data_mount: "/data".into(),
        release: opts.release.clone(),
        health: Health {
            path: opts.health_path.clone(),
            ..Default::default()
        },
        database: DatabaseSpec {
            enabled: !opts.no_db,
        },
        backup: Default::default(),
        container: Default::default(),
        jobs: Vec::new(),
        env,
        secret_env: BTreeMap::new(),
    };
    Ok(spec)
}

/// `sp site add`.
pub async fn run(ctx: &Ctx, opts: &SiteAddOpts) -> Result<SiteAddReport> {
    let mut spec = spec_from(opts)?;
    let name = spec.name.clone();
    let _lock = ctx.lock(&format!("site add {name}"))?;
    let paths = ctx.paths(&name);
    if paths.root.exists() {
        let hint = if paths.root.join("site.toml.removed").exists() {
            " (a removed site's data is kept there; `sp site remove NAME --purge` deletes it)"
        } else {
            ""
        };
        return Err(Error::Conflict(format!(
            "site {name} already exists: {}{hint}",
            paths.root.display()
        )));
    }
    // A uid nothing on the host uses, and domains no other site has.
    spec.uid = provision::next_uid(ctx)?;
    provision::check_unique(ctx, &spec)?;
    let engine = ctx.engine().await?;
    if !engine
        .list(&ctx.config.instance, Some(&name), None)
        .await?
        .is_empty()
    {
        return Err(Error::Conflict(format!(
            "containers for site {name} already exist"
        )));
    }
    let db = if spec.database.enabled {
        let db = ctx.db()?;
        let host = &ctx.config.mysql.user_host;
        if db.database_exists(&name).await.step(&name, "database")? {
            return Err(Error::Conflict(format!(
                "database {name} already exists on {}",
                db.display
            )));
        }
        if db.user_exists(&name, host).await.step(&name, "database")? {
            return Err(Error::Conflict(format!(
                "database user {name}@{host} already exists"
            )));
        }
        Some(db)
    } else {
        None
    };
    let mut created = Created::default();
    let result = async {
        let pinned = provision::pull(ctx, &engine, &spec.image)
            .await
            .step(&name, "pull")?;
        if opts.port.is_none() {
            let exposed = engine.exposed_ports(&pinned).await.step(&name, "pull")?;
            if exposed.len() == 1 {
                spec.port = exposed[0];
            }
        }
        spec.validate()?;
        created.dir = true;
        provision::ensure_dirs(&paths, spec.uid).step(&name, "files")?;
        provision::write_spec(&paths, &spec).step(&name, "files")?;
        if let Some(db) = &db {
            created.db = true;
            provision::ensure_database(ctx, db, &spec)
                .await
                .step(&name, "database")?;
        }
        rollout_recorded(
            ctx,
            &engine,
            &spec,
            &pinned,
            None,
            Release::Run,
            Why::because("add"),
        )
        .await
    }
    .await;
    match result {
        Ok(rollout) => {
            if let Some(db) = db {
                db.close().await;
            }
            Ok(SiteAddReport {
                site: name.clone(),
                uid: spec.uid,
                container_port: spec.port,
                database: spec.database.enabled.then(|| name.clone()),
                rollout,
            })
        }
        Err(e) => {
            ctx.note(&format!("{name}: rolling back what was created"));
            let what = provision::Teardown {
                database: created.db,
                files: created.dir,
            };
            if let Err(t) = provision::teardown_site(ctx, &engine, db.as_ref(), &name, what).await {
                ctx.note(&format!("{name}: warning: rollback incomplete: {t}"));
            }
            if let Some(db) = db {
                db.close().await;
            }
            Err(e)
        }
    }
}

#[derive(Default)]
struct Created {
    dir: bool,
    db: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts() -> SiteAddOpts {
        SiteAddOpts {
            name: "blog".into(),
            image: "registry.example.com/a/blog:1".into(),
            ..Default::default()
        }
    }

    #[test]
    fn bad_inputs_are_refused_before_anything_happens() {
        type Mutate = Box<dyn Fn(&mut SiteAddOpts)>;
        let cases: Vec<Mutate> = vec![
            Box::new(|o| o.name = "Bad".into()),
            Box::new(|o| o.name = "../x".into()),
            Box::new(|o| o.image = "not a ref".into()),
            Box::new(|o| o.domains = vec!["bad_domain".into()]),
            Box::new(|o| o.env = vec!["1X=y".into()]),
            Box::new(|o| o.memory = Some("huge".into())),
            Box::new(|o| o.port = Some(0)),
        ];
        for case in cases {
            let mut o = opts();
            case(&mut o);
            let err = spec_from(&o).unwrap_err();
            assert_eq!(err.exit_code(), 2, "{err}");
        }
        assert!(spec_from(&opts()).is_ok());
    }
}
