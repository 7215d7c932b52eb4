//! Bad input gets a clear one-line error, a usage exit code, and changes nothing.

use crate::harness::{rig, Host};

#[test]
fn bad_inputs_are_rejected_with_nothing_created() {
    let Some(rig) = rig() else { return };
    let host = Host::new(&rig);
    host.login();
    let image = rig.image("v1");
    let long = "a".repeat(33);
    let cases: Vec<Vec<&str>> = vec![
        vec!["site", "add", "Upper", "--image", &image],
        vec!["site", "add", "..", "--image", &image],
        vec!["site", "add", "a/b", "--image", &image],
        vec!["site", "add", "1abc", "--image", &image],
        vec!["site", "add", &long, "--image", &image],
        vec!["site", "add", "mysql", "--image", &image],
        vec![
            "site",
            "add",
            "x'; DROP DATABASE mysql; --",
            "--image",
            &image,
        ],
        vec!["site", "add", "okname", "--image", "Not A Ref"],
        vec![
            "site",
            "add",
            "okname",
            "--image",
            "reg.example.com/x@sha256:1234",
        ],
        vec![
            "site",
            "add",
            "okname",
            "--image",
            &image,
            "--domain",
            "bad_domain.com",
        ],
        vec![
            "site", "add", "okname", "--image", &image, "--domain", "nodots",
        ],
        vec![
            "site", "add", "okname", "--image", &image, "--env", "1BAD=x",
        ],
        vec![
            "site", "add", "okname", "--image", &image, "--env", "NOEQUALS",
        ],
        vec![
            "site",
            "add",
            "okname",
            "--image",
            &image,
            "--env",
            "DATABASE_URL=x",
        ],
        vec![
            "site", "add", "okname", "--image", &image, "--memory", "lots",
        ],
        vec!["site", "deploy", "okname", "--image", "Not A Ref"],
        vec!["site", "show", "../etc"],
    ];
    for args in &cases {
        let out = host.sp(args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} was accepted");
        let code = out.status.code();
        assert!(
            code == Some(2) || code == Some(3),
            "{args:?}: exit {code:?}: {err}"
        );
        let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(lines.len(), 1, "{args:?}: not one line: {err}");
        assert!(lines[0].starts_with("sp: error: "), "{args:?}: {err}");
    }
    let sites: Vec<_> = std::fs::read_dir(host.sites_dir()).unwrap().collect();
    assert!(sites.is_empty(), "something was created under sites/");
    assert!(host.containers().is_empty());
    assert!(!host.database_exists("okname") && !host.user_exists("okname"));

    // A site that exists is not added twice, and the first stays intact.
    let name = host.site_name("dup");
    host.sp_ok(&["site", "add", &name, "--image", &image, "--no-db"]);
    let spec = std::fs::read_to_string(host.sites_dir().join(&name).join("site.toml")).unwrap();
    let (code, err) = host.sp_fail(&["site", "add", &name, "--image", &rig.image("v2")]);
    assert_eq!(code, 4, "{err}");
    assert_eq!(
        std::fs::read_to_string(host.sites_dir().join(&name).join("site.toml")).unwrap(),
        spec
    );
    assert_eq!(host.get(&name, "/").as_deref(), Some("site v1\n"));
    // --no-db: no database, no DATABASE_* env.
    assert!(!host.database_exists(&name));
    let out = host.exec_sh(&name, "env");
    assert!(!String::from_utf8_lossy(&out.stdout).contains("DATABASE_"));

    // A config typo is refused, not silently defaulted.
    std::fs::write(host.dir.path().join("bad.toml"), "sites_dirr = \"/x\"\n").unwrap();
    let out = host
        .cmd(&[
            "--config",
            &host.dir.path().join("bad.toml").to_string_lossy(),
            "site",
            "list",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("sites_dirr"));
}
