//! What `latest` means: the whole host is the newest *full* snapshot; one site is the newest
//! snapshot holding it that is not a pre-restore one; running the same restore again leaves
//! the same state.

use crate::harness::Host;
use crate::restore::host_with_sites;

fn kinds(host: &Host, args: &[&str]) -> Vec<(String, String)> {
    let mut a = vec!["snapshots"];
    a.extend_from_slice(args);
    host.json(&a)["snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["id"].as_str().unwrap().to_string(),
                s["kind"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn label_of(host: &Host, site: &str) -> String {
    host.root_sql(&format!("SELECT label FROM `{site}`.items WHERE id = 3"))
        .trim()
        .to_string()
}

/// `restore latest --yes` twice after damage: the good rows both times (the safety snapshot
/// the first run takes is never what `latest` means).
#[test]
fn the_same_restore_twice_leaves_the_good_state_both_times() {
    let Some((host, [a])) = host_with_sites(["twice"]) else {
        return;
    };
    let good = label_of(&host, &a);
    let full = host.json(&["backup"])["id"].as_str().unwrap().to_string();
    host.root_sql(&format!("UPDATE `{a}`.items SET label = 'damaged'"));

    let first = host.json(&["restore", "latest", "--yes"]);
    assert_eq!(first["id"], full.as_str(), "{first}");
    assert_eq!(label_of(&host, &a), good);
    let pre = first["safety_snapshot"].as_str().unwrap().to_string();
    let second = host.json(&["restore", "latest", "--yes"]);
    assert_eq!(second["id"], full.as_str(), "{second}");
    assert_eq!(label_of(&host, &a), good);
    assert_eq!(host.get(&a, "/").as_deref(), Some("site v1\n"));

    let listed = kinds(&host, &[]);
    assert!(
        listed.contains(&(full.clone(), "full".into())),
        "{listed:?}"
    );
    assert!(
        listed.contains(&(pre.clone(), "pre-restore".into())),
        "{listed:?}"
    );
    assert_eq!(
        kinds(&host, &["--kind", "pre-restore"]).len(),
        2,
        "one per --yes run"
    );
    // A pre-restore snapshot is restored only by its id: the damage comes back on request.
    host.json(&["restore", &pre, "--yes"]);
    assert_eq!(label_of(&host, &a), "damaged");
}

/// After `backup --site A` and `site remove B` the newest folders are partial and final ones:
/// the whole host still comes back from the newest full snapshot, B from its final one.
#[test]
fn latest_is_the_newest_full_snapshot_for_the_whole_host() {
    let Some((host, [a, b])) = host_with_sites(["la", "lb"]) else {
        return;
    };
    let full = host.json(&["backup"])["id"].as_str().unwrap().to_string();
    host.sp_ok(&["backup", "--site", &a]);
    host.root_sql(&format!(
        "UPDATE `{b}`.items SET label = 'last words' WHERE id = 3"
    ));
    host.sp_ok(&["site", "remove", &b, "--yes"]);
    let listed = kinds(&host, &[]);
    let k: Vec<&str> = listed.iter().map(|(_, k)| k.as_str()).collect();
    assert_eq!(k, ["full", "partial", "final"], "{listed:?}");
    assert_eq!(kinds(&host, &["--site", &b]).len(), 2);
    assert_eq!(kinds(&host, &["--kind", "final"]).len(), 1);
    let (code, err) = host.sp_fail(&["snapshots", "--kind", "weekly"]);
    assert_eq!(code, 2, "{err}");

    // B's own latest is its final snapshot, even under another name.
    let clone = host.site_name("lc");
    let r = host.json(&["restore", "latest", "--site", &b, "--as", &clone]);
    assert_eq!(r["id"], listed[2].0.as_str(), "{r}");
    assert_eq!(label_of(&host, &clone), "last words");

    let drill = host.json(&["drill", "latest"]);
    assert_eq!(drill["id"], full.as_str(), "{drill}");
    let verify = host.json(&["verify", "latest"]);
    assert_eq!(verify["id"], full.as_str(), "{verify}");
    // The same from a copy of the snapshots elsewhere (the runbook's "verify before you restore").
    let copy = host.dir.path().join("copy");
    let st = std::process::Command::new("cp")
        .arg("-a")
        .arg(host.backup_dir())
        .arg(&copy)
        .status()
        .unwrap();
    assert!(st.success());
    let from = copy.to_string_lossy().to_string();
    let verify = host.json(&["verify", "latest", "--from", &from]);
    assert_eq!(verify["id"], full.as_str(), "{verify}");
    let listed = host.json(&["snapshots", "--from", &from, "--kind", "full"]);
    assert_eq!(listed["snapshots"].as_array().unwrap().len(), 1, "{listed}");
    let all = host.json(&["verify", "all"]);
    assert_eq!(all["snapshots"].as_array().unwrap().len(), 3, "{all}");

    // The whole host from its newest full snapshot: both sites.
    host.sp_ok(&["site", "remove", &a, "--purge", "--yes"]);
    host.sp_ok(&["site", "remove", &b, "--purge", "--yes"]);
    let r = host.json(&["restore", "latest"]);
    assert_eq!(r["id"], full.as_str(), "{r}");
    assert_eq!(r["sites"].as_array().unwrap().len(), 2, "{r}");
    assert_eq!(host.get(&a, "/").as_deref(), Some("site v1\n"));
    assert_eq!(host.get(&b, "/").as_deref(), Some("site v1\n"));
}

/// `--dry-run` shows the plan — each site, what it would replace, where its image comes from —
/// and changes nothing; a conflict is refused from the plan, before any data is read.
#[test]
fn a_dry_run_changes_nothing_and_a_conflict_is_refused_before_reading_data() {
    let Some((host, [a])) = host_with_sites(["dry"]) else {
        return;
    };
    let id = host.json(&["backup"])["id"].as_str().unwrap().to_string();
    let before = (
        host.containers(),
        host.json(&["snapshots"]),
        host.database_exists(&a),
        host.user_exists(&a),
    );
    let r = host.json(&["restore", &id, "--dry-run"]);
    assert_eq!(r["dry_run"], true, "{r}");
    let site = &r["plan"]["sites"][0];
    assert_eq!(site["site"], a.as_str(), "{r}");
    let replaces = site["replaces"].to_string();
    assert!(
        replaces.contains("directory") && replaces.contains("database"),
        "{r}"
    );
    assert_eq!(site["image"]["from"], "local", "{r}");
    assert_eq!(
        r["plan"]["safety_snapshot_of"],
        serde_json::json!([a]),
        "{r}"
    );
    let text = host.sp_ok(&["restore", &id, "--dry-run"]);
    assert!(
        text.contains(&a) && text.contains("replaces") && text.contains("nothing was changed"),
        "{text}"
    );
    let after = (
        host.containers(),
        host.json(&["snapshots"]),
        host.database_exists(&a),
        host.user_exists(&a),
    );
    assert_eq!(after, before, "a dry run changed something");

    // The archive is damaged: a restore that conflicts is refused for the conflict, which it
    // sees before it reads a byte of the snapshot's data.
    let archive = host
        .backup_dir()
        .join(&id)
        .join(format!("sites/{a}.tar.zst"));
    std::fs::write(&archive, b"not zstd at all").unwrap();
    let (code, err) = host.sp_fail(&["restore", &id]);
    assert_eq!(code, 4, "{err}");
    assert!(
        err.contains("--yes") && !err.contains("verification"),
        "{err}"
    );
    // With --yes it gets as far as verifying, and stops there with the site untouched.
    let (code, err) = host.sp_fail(&["restore", &id, "--yes"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("failed verification"), "{err}");
    assert_eq!(host.get(&a, "/").as_deref(), Some("site v1\n"));
    assert_eq!(
        host.json(&["snapshots"]),
        before.1,
        "a pre-restore snapshot was taken"
    );

    // On a host without the site, the plan replaces nothing.
    host.sp_ok(&["site", "remove", &a, "--purge", "--yes"]);
    let r = host.json(&["restore", &id, "--dry-run"]);
    assert_eq!(
        r["plan"]["sites"][0]["replaces"],
        serde_json::json!([]),
        "{r}"
    );
    assert!(!host.sites_dir().join(&a).exists());
    assert!(!host.database_exists(&a));
}
