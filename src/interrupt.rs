//! SIGINT and SIGTERM. The first one is recorded, and an op that holds something half-done —
//! a container it paused for a backup — notices ([`wait`]), undoes it and returns
//! [`crate::Error::Interrupted`]; sp exits anyway after a grace period, and at once on a second
//! signal. Without [`install`] (in tests of the library) nothing is ever interrupted.

use std::sync::OnceLock;

use tokio::sync::watch;

static FLAG: OnceLock<watch::Sender<bool>> = OnceLock::new();

/// Seconds an interrupted op gets to undo what it half-made before the process exits.
pub const GRACE_SECS: u64 = 20;

/// Listens for SIGINT and SIGTERM from now on (call once, inside the runtime).
pub fn install() {
    let tx = FLAG.get_or_init(|| watch::channel(false).0).clone();
    tokio::spawn(async move {
        use tokio::signal::unix::{signal, SignalKind};
        let (Ok(mut int), Ok(mut term)) = (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        ) else {
            return;
        };
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
        tracing::warn!("interrupted: undoing what is half-done, then exiting");
        let _ = tx.send(true);
        let grace = tokio::time::sleep(std::time::Duration::from_secs(GRACE_SECS));
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
            _ = grace => {}
        }
        std::process::exit(130);
    });
}

/// Resolves once a signal came (never, without [`install`]).
pub async fn wait() {
    let Some(tx) = FLAG.get() else {
        return std::future::pending().await;
    };
    let mut rx = tx.subscribe();
    if *rx.borrow() {
        return;
    }
    while rx.changed().await.is_ok() {
        if *rx.borrow() {
            return;
        }
    }
    std::future::pending().await
}
