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
