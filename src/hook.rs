//! The monitoring hooks (`backup.on_success_url`, `backup.on_failure_url`, e.g. healthchecks.io):
//! GET on success, POST with a JSON body that names what failed otherwise. A hook that does
//! not answer within 10 s is logged and otherwise ignored: monitoring never fails a backup.

/// Calls `url`: GET without a body, POST with `body` as JSON.
pub async fn call(url: &str, body: Option<serde_json::Value>) {
    let url = url.to_string();
    let done = tokio::task::spawn_blocking(move || {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(std::time::Duration::from_secs(10)))
            .build()
            .into();
        match body {
            None => agent.get(&url).call(),
            Some(b) => agent
                .post(&url)
                .header("Content-Type", "application/json")
                .send(b.to_string().as_bytes()),
        }
        .map(|_| ())
        .map_err(|e| e.to_string())
    })
    .await;
    match done {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!("the hook did not answer: {e}"),
        Err(e) => tracing::warn!("hook: {e}"),
    }
}

/// This host's name, for hook bodies.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}
