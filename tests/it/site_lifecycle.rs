//! The site lifecycle end to end: login, add two sites, reach the database from a container,
//! per-site database isolation, release failure, deploy, rollback, broken image, stop/start,
//! apply, remove.

use std::os::unix::fs::PermissionsExt;

use crate::harness::{eventually, http_get, rig, Host};

fn add(host: &Host, name: &str, tag: &str) {
    host.sp_ok(&[
        "site",
        "add",
        name,
        "--image",
        &host.rig.image(tag),
        "--health-path",
        "/",
        "--domain",
        &format!("{name}.example.test"),
    ]);
}

#[test]
fn site_lifecycle_on_the_real_rig() {
    let Some(rig) = rig() else { return };
    let host = Host::new(&rig);
    let (a, b) = (host.site_name("a"), host.site_name("b"));

    // Without stored credentials the registry refuses the pull, and nothing is left behind.
    let (code, err) = host.sp_fail(&["site", "add", &a, "--image", &rig.image("v1")]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("step 'pull'"), "{err}");
    assert!(!host.sites_dir().join(&a).exists());
    assert!(!host.database_exists(&a) && !host.user_exists(&a));
    assert!(host.containers().is_empty());

    // A wrong password is refused by the registry and not stored; the right one is, 0600.
    let out = host.sp_in(
        &[
            "registry",
            "login",
            rig.registry(),
            "--username",
            rig.var("SP_RIG_REGISTRY_USER"),
            "--password-stdin",
        ],
        "not-the-password\n",
    );
    assert!(!out.status.success());
    host.login();
    let creds = host.config.parent().unwrap().join("registries.toml");
    assert_eq!(
        std::fs::metadata(&creds).unwrap().permissions().mode() & 0o777,
        0o600
    );

    add(&host, &a, "v1");
    add(&host, &b, "v1");
    assert_eq!(host.get(&a, "/").as_deref(), Some("site v1\n"));
    assert_eq!(host.get(&b, "/").as_deref(), Some("site v1\n"));

    // The site's data dir is what the container serves under /data.
    let data = host.sites_dir().join(&a).join("data");
    std::fs::write(data.join("hello.txt"), "hello from a\n").unwrap();
    std::fs::set_permissions(
        data.join("hello.txt"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    assert_eq!(
        host.get(&a, "/data/hello.txt").as_deref(),
        Some("hello from a\n")
    );

    // list and show agree, and carry no secret.
    let list = host.json(&["site", "list"]);
    assert_eq!(list["schema"], 1, "{list}");
    let names: Vec<&str> = list["sites"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["site"].as_str().unwrap())
        .collect();
    assert_eq!(names.len(), 2);
    assert!(names.contains(&a.as_str()) && names.contains(&b.as_str()));
    let show = host.json(&["site", "show", &a]);
    assert_eq!(show["state"], "running");
    assert!(show["digest"].as_str().unwrap().starts_with("sha256:"));
    assert_eq!(show["domains"][0], format!("{a}.example.test"));
    let pw_a = host.password(&a);
    let pw_b = host.password(&b);
    assert!(!list.to_string().contains(&pw_a) && !show.to_string().contains(&pw_a));
    let inspect = std::process::Command::new("docker")
        .args(["inspect"])
        .args(host.containers())
        .output()
        .unwrap();
    assert!(
        !String::from_utf8_lossy(&inspect.stdout).contains(&pw_a),
        "password visible in docker inspect"
    );

    // From inside the container, DATABASE_HOST:DATABASE_PORT accepts a TCP connection (MariaDB greets).
    let out = host.exec_sh(
        &a,
        "nc -w 3 \"$DATABASE_HOST\" \"$DATABASE_PORT\" </dev/null",
    );
    let greeting = String::from_utf8_lossy(&out.stdout);
    assert!(
        greeting.contains("MariaDB") || greeting.contains("mysql_native_password"),
        "no MySQL greeting: {greeting:?}"
    );
    // The password file is readable by the app, read-only.
    let out = host.exec_sh(&a, "cat \"$DATABASE_PASSWORD_FILE\"");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), pw_a);
    let out = host.exec_sh(&a, "echo x > \"$DATABASE_PASSWORD_FILE\"");
    assert!(!out.status.success());
    // exec passes the command's exit code through.
    assert_eq!(host.exec_sh(&a, "exit 7").status.code(), Some(7));

    // Each site's user reaches its own database and is refused on the other's.
    let ok = host.sql_as(
        &a,
        &pw_a,
        &a,
        "CREATE TABLE t (id INT); INSERT INTO t VALUES (1); SELECT COUNT(*) FROM t",
    );
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&ok.stdout).trim(), "1");
    let denied = host.sql_as(&a, &pw_a, &b, "SELECT 1");
    assert!(!denied.status.success());
    assert!(String::from_utf8_lossy(&denied.stderr).contains("Access denied"));
    assert!(host.sql_as(&b, &pw_b, &b, "SELECT 1").status.success());
    assert!(
        !host.sql_as(&b, &pw_a, &b, "SELECT 1").status.success(),
        "a's password opened b"
    );

    // A failing release command aborts the deploy; v1 keeps serving.
    let spec_path = host.sites_dir().join(&a).join("site.toml");
    let spec = std::fs::read_to_string(&spec_path).unwrap();
    let with_release = spec.replacen(
        "name = ",
        "release = [\"sh\", \"-c\", \"echo migrating; exit 3\"]\nname = ",
        1,
    );
    std::fs::write(&spec_path, &with_release).unwrap();
    let (_, err) = host.sp_fail(&["site", "deploy", &a, "--image", &rig.image("v2")]);
    assert!(
        err.contains("step 'release'") && err.contains("code 3"),
        "{err}"
    );
    assert_eq!(host.get(&a, "/").as_deref(), Some("site v1\n"));
    // A release command that succeeds runs with the site's mounts before the switch.
    let with_release = spec.replacen(
        "name = ",
        "release = [\"sh\", \"-c\", \"echo released > /data/release.txt\"]\nname = ",
        1,
    );
    std::fs::write(&spec_path, &with_release).unwrap();

    // Deploy v2: the served content changes; the previous digest is recorded.
    let v1_digest = host.json(&["site", "show", &a])["digest"]
        .as_str()
        .unwrap()
        .to_string();
    host.sp_ok(&["site", "deploy", &a, "--image", &rig.image("v2")]);
    assert_eq!(host.get(&a, "/").as_deref(), Some("site v2\n"));
    assert_eq!(
        host.get(&a, "/data/release.txt").as_deref(),
        Some("released\n")
    );
    let show = host.json(&["site", "show", &a]);
    assert_eq!(show["previous"].as_str(), Some(v1_digest.as_str()));
    assert_eq!(
        host.containers().len(),
        2,
        "the old container of {a} was not removed"
    );
    std::fs::write(
        &spec_path,
        std::fs::read_to_string(&spec_path).unwrap().replace(
            "release = [\"sh\", \"-c\", \"echo released > /data/release.txt\"]\n",
            "",
        ),
    )
    .unwrap();

    // Rollback: v1 again.
    host.sp_ok(&["site", "rollback", &a]);
    assert_eq!(host.get(&a, "/").as_deref(), Some("site v1\n"));
    assert_eq!(
        host.json(&["site", "show", &a])["digest"].as_str(),
        Some(v1_digest.as_str())
    );

    // A broken image fails its health check; v1 keeps serving on its port.
    let port = host.port(&a);
    let (_, err) = host.sp_fail(&["site", "deploy", &a, "--image", &rig.image("broken")]);
    assert!(err.contains("step 'health'"), "{err}");
    assert_eq!(host.port(&a), port);
    assert_eq!(http_get(port, "/").as_deref(), Some("site v1\n"));
    assert_eq!(
        host.containers().len(),
        2,
        "the broken container was left behind"
    );

    // stop / start.
    host.sp_ok(&["site", "stop", &a]);
    assert_eq!(host.json(&["site", "show", &a])["state"], "stopped");
    assert_eq!(http_get(port, "/"), None);
    // apply leaves a deliberately stopped site stopped.
    host.sp_ok(&["apply", &a]);
    assert_eq!(http_get(port, "/"), None);
    host.sp_ok(&["site", "start", &a]);
    assert_eq!(
        eventually(10, || http_get(port, "/")).as_deref(),
        Some("site v1\n")
    );

    // apply recreates a deleted container, and a second apply changes nothing.
    let b_containers = std::process::Command::new("docker")
        .args([
            "ps",
            "-aq",
            "--filter",
            &format!("label=sp.site={b}"),
            "--filter",
            &format!("label=sp.instance={}", host.instance),
        ])
        .output()
        .unwrap();
    for id in String::from_utf8_lossy(&b_containers.stdout).split_whitespace() {
        assert!(std::process::Command::new("docker")
            .args(["rm", "-f", id])
            .output()
            .unwrap()
            .status
            .success());
    }
    assert_eq!(host.json(&["site", "show", &b])["state"], "missing");
    let first = host.json(&["apply"]);
    let changed: Vec<_> = first["sites"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| !s["changes"].as_array().unwrap().is_empty())
        .collect();
    assert_eq!(changed.len(), 1, "{first}");
    assert_eq!(changed[0]["site"], b.as_str());
    assert_eq!(host.get(&b, "/").as_deref(), Some("site v1\n"));
    let second = host.json(&["apply"]);
    assert!(
        second["sites"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["changes"].as_array().unwrap().is_empty()),
        "{second}"
    );
    // apply also recreates a dropped database user, with the password on file.
    host.root_sql(&format!("DROP USER '{b}'@'%'"));
    host.sp_ok(&["apply", &b]);
    assert!(host.sql_as(&b, &pw_b, &b, "SELECT 1").status.success());

    // remove takes a final snapshot, keeps data and database; --purge deletes them.
    host.sp_ok(&["site", "remove", &a]);
    let snaps = host.json(&["snapshots"]);
    assert!(
        snaps.to_string().contains(&format!("\"{a}\"")),
        "no final snapshot of {a}: {snaps}"
    );
    assert!(host.containers().len() == 1);
    assert!(data.join("hello.txt").exists() && host.database_exists(&a));
    assert!(!host
        .json(&["site", "list"])
        .to_string()
        .contains(&format!("\"{a}\"")));
    let (code, _) = host.sp_fail(&["site", "add", &a, "--image", &rig.image("v1")]);
    assert_eq!(code, 4);
    let out = host.sp_in(&["site", "remove", &a, "--purge"], "wrong-name\n");
    assert!(!out.status.success());
    assert!(host.database_exists(&a));
    let out = host.sp_in(&["site", "remove", &a, "--purge"], &format!("{a}\n"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!host.sites_dir().join(&a).exists());
    assert!(!host.database_exists(&a) && !host.user_exists(&a));
    host.sp_ok(&["site", "remove", &b, "--purge", "--yes"]);
    assert!(host.containers().is_empty());
}
