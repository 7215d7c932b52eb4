//! The host lock: a second mutating command waits, then fails clearly; a lock left by a dead
//! process is recovered.

use std::process::{Command, Stdio};

use crate::harness::{rig, Host};

#[test]
fn lock_is_exclusive_and_recovered_from_a_dead_holder() {
    let Some(rig) = rig() else { return };
    let host = Host::new(&rig);
    let cfg = std::fs::read_to_string(&host.config)
        .unwrap()
        .replace("lock_timeout = 300", "lock_timeout = 1");
    std::fs::write(&host.config, cfg).unwrap();
    std::fs::create_dir_all(host.state_dir()).unwrap();
    let lock = host.state_dir().join("sp.lock");
    // Another process takes the same flock and never lets go.
    // --no-fork: the flock process itself becomes `sleep`, so killing it frees the lock.
    let mut holder = Command::new("flock")
        .arg("--no-fork")
        .arg(&lock)
        .args(["sleep", "60"])
        .stdout(Stdio::null())
        .spawn()
        .expect("flock");
    let held = crate::harness::eventually(5, || {
        let out = host.sp(&["apply"]);
        (out.status.code() == Some(75)).then(|| String::from_utf8_lossy(&out.stderr).into_owned())
    });
    let err = held.expect("apply did not report the held lock");
    assert!(
        err.contains("another sp command holds the host lock"),
        "{err}"
    );
    // Read-only commands do not need the lock.
    host.sp_ok(&["site", "list"]);
    // The holder dies without cleaning up; the next command goes through.
    holder.kill().unwrap();
    holder.wait().unwrap();
    let out = crate::harness::eventually(5, || {
        let o = host.sp(&["apply"]);
        o.status.success().then_some(o)
    });
    assert!(out.is_some(), "lock not recovered after its holder died");
}
