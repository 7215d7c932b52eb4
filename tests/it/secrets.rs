//! Secrets stay private: site trees 0700 and specs 0600, the host lock 0600, the admin
//! password never in argv, and no admin option file on disk — not even after a killed run.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::harness::{rig, Host};
use crate::isolation::{add, mode};

/// The pid of a `mariadb-dump` whose parent is `parent`, if one runs.
fn dump_child(parent: u32) -> Option<u32> {
    for e in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // pid (comm) state ppid ...
        let Some((comm, rest)) = stat.split_once(") ") else {
            continue;
        };
        let ppid: Option<u32> = rest.split_whitespace().nth(1).and_then(|p| p.parse().ok());
        if ppid == Some(parent) && comm.ends_with("mariadb-dump") {
            return Some(pid);
        }
    }
    None
}

/// Every file under `dir` whose name looks like a client option file.
fn option_files(dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(p) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&p) else {
            continue;
        };
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if e.path().is_dir() {
                stack.push(e.path());
            } else if name.ends_with(".cnf") || name.starts_with(".sp-client-") {
                found.push(e.path().display().to_string());
            }
        }
    }
    found
}

#[test]
fn secrets_are_private_and_a_killed_dump_leaves_no_option_file() {
    let Some(rig) = rig() else { return };
    let host = Host::new(&rig);
    host.login();
    let a = host.site_name("sa");
    add(&host, &a, &["--env", "API_KEY=s3cret"]);
    let root = host.sites_dir().join(&a);
    assert_eq!(mode(&root.join("site.toml")), 0o600);
    assert_eq!(mode(&root), 0o700);
    assert_eq!(mode(&root.join("secrets")), 0o700);
    assert_eq!(mode(&root.join("secrets/db_password")), 0o400);
    assert_eq!(mode(&host.state_dir()), 0o700);
    assert_eq!(mode(&host.state_dir().join("sp.lock")), 0o600);
    // init stored the admin password in a root-only file, not in the config.
    let (_, admin_pw) = rig.mysql_admin();
    let config = std::fs::read_to_string(&host.config).unwrap();
    assert!(
        !config.contains(&admin_pw),
        "the config holds the admin password"
    );
    let pw_file = host.config.parent().unwrap().join("mysql-admin.password");
    assert!(config.contains(&format!("password_file = \"{}\"", pw_file.display())));
    assert_eq!(mode(&pw_file), 0o600);
    // The site's user may hold only so many connections.
    assert_eq!(
        host.root_sql(&format!(
            "SELECT max_user_connections FROM mysql.user WHERE User = '{a}'"
        ))
        .trim(),
        "30"
    );
    // apply tightens a tree left open by an older sp.
    std::fs::set_permissions(
        root.join("site.toml"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o755)).unwrap();
    host.sp_ok(&["apply", &a]);
    assert_eq!(mode(&root.join("site.toml")), 0o600);
    assert_eq!(mode(&root), 0o700);

    // Enough rows that the dump is still running when sp is killed.
    let ok = host.sql_as_site(
        &a,
        "CREATE TABLE big (id INT PRIMARY KEY, b LONGTEXT);
         INSERT INTO big SELECT seq, REPEAT(MD5(seq), 2000) FROM seq_1_to_600;",
    );
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let mut sp = host
        .cmd(&["backup"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn sp backup");
    let end = Instant::now() + Duration::from_secs(60);
    let dumper = loop {
        if let Some(pid) = dump_child(sp.id()) {
            break pid;
        }
        assert!(
            sp.try_wait().unwrap().is_none(),
            "sp backup ended before its dump was seen"
        );
        assert!(Instant::now() < end, "no mariadb-dump appeared");
        std::thread::sleep(Duration::from_millis(2));
    };
    sp.kill().expect("SIGKILL sp");
    sp.wait().unwrap();
    // The orphaned dump dies of the closed pipe.
    let gone = crate::harness::eventually(20, || {
        (!Path::new(&format!("/proc/{dumper}")).exists()).then_some(())
    });
    assert!(gone.is_some(), "mariadb-dump {dumper} outlived sp");
    let left = option_files(host.dir.path());
    assert!(left.is_empty(), "option files left behind: {left:?}");
    // The lock went with the killed process, and the next backup works.
    host.sp_ok(&["backup"]);
    assert!(option_files(host.dir.path()).is_empty());
    host.sp_ok(&["site", "remove", &a, "--purge", "--yes"]);
}

#[test]
fn init_refuses_a_password_in_the_url_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("etc/config.toml");
    let sp = |args: &[&str], input: &str| {
        let mut child = Command::new(env!("CARGO_BIN_EXE_sp"))
            .arg("--config")
            .arg(&config)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn sp");
        std::io::Write::write_all(&mut child.stdin.take().unwrap(), input.as_bytes()).unwrap();
        child.wait_with_output().unwrap()
    };
    let sites = dir.path().join("sites");
    let sites_arg = sites.to_string_lossy().into_owned();
    let out = sp(
        &[
            "init",
            "--sites-dir",
            &sites_arg,
            "--mysql-url",
            "mysql://sp_admin:PW123@127.0.0.1:3306",
        ],
        "",
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert_eq!(
        err.lines().filter(|l| !l.trim().is_empty()).count(),
        1,
        "{err}"
    );
    assert!(err.contains("--mysql-password-stdin"), "{err}");
    assert!(!err.contains("PW123"), "{err}");
    assert!(!config.exists() && !config.parent().unwrap().exists() && !sites.exists());

    // A password file others may read is refused too.
    let pw = dir.path().join("pw");
    std::fs::write(&pw, "PW123").unwrap();
    std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o644)).unwrap();
    let pw_arg = pw.to_string_lossy().into_owned();
    let url = ["--mysql-url", "mysql://sp_admin@127.0.0.1:3306"];
    let mut args = vec!["init", "--sites-dir", &sites_arg];
    args.extend_from_slice(&url);
    args.extend_from_slice(&["--mysql-password-file", &pw_arg]);
    let out = sp(&args, "");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("chmod 600"));
    assert!(!config.exists() && !sites.exists());
    // A private one is named in the config.
    std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o600)).unwrap();
    let out = sp(&args, "");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&config).unwrap();
    assert!(
        text.contains(&format!("password_file = \"{pw_arg}\"")),
        "{text}"
    );
    assert!(!text.contains("PW123"));
}
