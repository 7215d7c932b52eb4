//! sp's own nftables table, `inet sp_isolation`: nothing leaves a site's network for another
//! Docker network (another site's, the default bridge's).
//!
//! Docker keeps its networks apart with iptables rules of its own, but while it creates or
//! removes any network it deletes and re-inserts the jump to them, and in that moment a
//! container can open a connection into another network (seen on this project's engine:
//! 4 of 40 tries got through while networks were being created). A table of sp's own hooks
//! the forward path separately, Docker never touches it, and every change to it is one
//! atomic `nft -f` transaction. Traffic to the host (MariaDB) and to the internet is not
//! affected; the host reaches containers as before (published ports, health checks).
//!
//! The scripts are pure builders (unit-tested); [`admit`] and [`forget`] run `nft`. The table
//! lives in the kernel only: after a reboot, `sp apply` puts it back.

use std::io::Write;
use std::process::{Command, Stdio};

use crate::error::{Error, Result};

/// The table's name (family `inet`).
pub const TABLE: &str = "sp_isolation";
/// The set of site bridges whose traffic may not reach another Docker network.
pub const SET: &str = "site_bridges";
/// Pairs `bridge . bridge`: traffic within one site's network stays allowed.
pub const SAME: &str = "same_bridge";

/// The Linux bridge Docker makes for a network: `br-` and the first 12 hex digits of its id.
pub fn bridge_of(network_id: &str) -> Option<String> {
    let hex = network_id.get(..12)?;
    hex.bytes()
        .all(|b| b.is_ascii_hexdigit())
        .then(|| format!("br-{}", hex.to_ascii_lowercase()))
}

fn valid_bridge(name: &str) -> bool {
    name.strip_prefix("br-")
        .map(|h| h.len() == 12 && h.bytes().all(|b| b.is_ascii_hexdigit()))
        .unwrap_or(false)
}

/// The transaction that (re)declares the table and its rules and adds `bridge` to the set,
/// dropping `stale` bridges (gone from the host) from it.
pub fn admit_script(bridge: &str, stale: &[String]) -> String {
    let mut s = format!(
        "table inet {TABLE} {{\n  set {SET} {{ type ifname; }}\n  set {SAME} {{ type ifname . ifname; }}\n  chain forward {{ type filter hook forward priority filter - 1; policy accept; }}\n}}\n\
         flush chain inet {TABLE} forward\n\
         table inet {TABLE} {{\n  chain forward {{\n    iifname . oifname @{SAME} accept\n    iifname @{SET} oifname \"docker0\" drop\n    iifname @{SET} oifname \"br-*\" drop\n  }}\n}}\n\
         add element inet {TABLE} {SET} {{ \"{bridge}\" }}\n\
         add element inet {TABLE} {SAME} {{ \"{bridge}\" . \"{bridge}\" }}\n"
    );
    for b in stale.iter().filter(|b| *b != bridge && valid_bridge(b)) {
        s.push_str(&forget_script(b));
    }
    s
}

/// The commands that take `bridge` out of both sets.
pub fn forget_script(bridge: &str) -> String {
    format!(
        "delete element inet {TABLE} {SET} {{ \"{bridge}\" }}\ndelete element inet {TABLE} {SAME} {{ \"{bridge}\" . \"{bridge}\" }}\n"
    )
}

/// The bridges named in `nft list set` output.
pub fn listed_bridges(listing: &str) -> Vec<String> {
    let Some(start) = listing.find("elements") else {
        return Vec::new();
    };
    let body = &listing[start..];
    let body = &body[..body.find('}').unwrap_or(body.len())];
    body.split('"')
        .skip(1)
        .step_by(2)
        .filter(|b| valid_bridge(b))
        .map(str::to_string)
        .collect()
}

fn nft(script: &str) -> Result<std::process::Output> {
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                Error::NotFound(
                    "nft is not installed: sp keeps the sites' networks apart with an nftables table of its own (apt-get install nftables)".into(),
                )
            } else {
                Error::io("start nft", e)
            }
        })?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(script.as_bytes())
            .map_err(|e| Error::io("write to nft", e))?;
    }
    child
        .wait_with_output()
        .map_err(|e| Error::io("wait for nft", e))
}

fn first_line(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    text.lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("no message")
        .trim()
        .to_string()
}

/// Puts `bridge` (a site's network) behind sp's table, creating the table if needed.
pub fn admit(bridge: &str) -> Result<()> {
    if !valid_bridge(bridge) {
        return Err(Error::Other(format!(
            "{bridge:?} is not a Docker bridge name"
        )));
    }
    let listing = Command::new("nft")
        .args(["list", "set", "inet", TABLE, SET])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let stale: Vec<String> = listed_bridges(&listing)
        .into_iter()
        .filter(|b| !std::path::Path::new("/sys/class/net").join(b).exists())
        .collect();
    let mut out = nft(&admit_script(bridge, &stale))?;
    if !out.status.success() && !stale.is_empty() {
        // Another sp took a stale entry out meanwhile; the transaction failed as a whole.
        out = nft(&admit_script(bridge, &[]))?;
    }
    if !out.status.success() {
        return Err(Error::Other(format!(
            "nft could not keep {bridge} apart from the other networks: {}",
            first_line(&out.stderr)
        )));
    }
    Ok(())
}

/// Takes `bridge` out of sp's table; one that is not there is fine (and a later [`admit`]
/// drops bridges that are gone anyway).
pub fn forget(bridge: &str) -> Result<()> {
    if !valid_bridge(bridge) {
        return Ok(());
    }
    nft(&forget_script(bridge)).map(|_| ())
}

/// Whether `bridge` is behind sp's table now (for `sp doctor`).
pub fn admitted(bridge: &str) -> Result<bool> {
    let out = Command::new("nft")
        .args(["list", "set", "inet", TABLE, SET])
        .output()
        .map_err(|e| Error::io("run nft", e))?;
    Ok(listed_bridges(&String::from_utf8_lossy(&out.stdout)).contains(&bridge.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bridges_are_named_after_the_network_id() {
        assert_eq!(
            bridge_of("3C793844f614aaaabbbbcccc").as_deref(),
            Some("br-3c793844f614")
        );
        assert_eq!(bridge_of("short"), None);
        assert_eq!(bridge_of("zz793844f614aaaa"), None);
    }

    #[test]
    fn the_admit_transaction_declares_flushes_and_adds() {
        let s = admit_script(
            "br-3c793844f614",
            &[
                "br-000000000001".into(),
                "br-3c793844f614".into(),
                "bad\"x".into(),
            ],
        );
        assert_eq!(
            s,
            "table inet sp_isolation {\n  set site_bridges { type ifname; }\n  set same_bridge { type ifname . ifname; }\n  chain forward { type filter hook forward priority filter - 1; policy accept; }\n}\n\
             flush chain inet sp_isolation forward\n\
             table inet sp_isolation {\n  chain forward {\n    iifname . oifname @same_bridge accept\n    iifname @site_bridges oifname \"docker0\" drop\n    iifname @site_bridges oifname \"br-*\" drop\n  }\n}\n\
             add element inet sp_isolation site_bridges { \"br-3c793844f614\" }\n\
             add element inet sp_isolation same_bridge { \"br-3c793844f614\" . \"br-3c793844f614\" }\n\
             delete element inet sp_isolation site_bridges { \"br-000000000001\" }\n\
             delete element inet sp_isolation same_bridge { \"br-000000000001\" . \"br-000000000001\" }\n"
        );
    }

    #[test]
    fn listed_elements_are_read_back() {
        let listing = "table inet sp_isolation {\n\tset site_bridges {\n\t\ttype ifname\n\t\telements = { \"br-3c793844f614\",\n\t\t\t     \"br-54aa7ca0ffd5\" }\n\t}\n}\n";
        assert_eq!(
            listed_bridges(listing),
            vec!["br-3c793844f614".to_string(), "br-54aa7ca0ffd5".to_string()]
        );
        assert!(listed_bridges(
            "table inet sp_isolation {\n\tset site_bridges {\n\t\ttype ifname\n\t}\n}\n"
        )
        .is_empty());
    }
}
