//! Starts the simulator: binds loopback, routes the endpoints to their
//! handlers, and serves until the handle is dropped.

use std::net::Ipv4Addr;
use std::sync::Arc;

use axum::Router;
use axum::routing::{get, post};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::config::SimConfig;
use super::handlers::{download, stats, submit, task_result, test_image_file};
use super::state::{SimHandle, SimState};

/// Starts the simulator on 127.0.0.1 (`port` 0 picks a free one), serving
/// on the current tokio runtime.
pub async fn start(config: SimConfig, port: u16) -> std::io::Result<SimHandle> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, port)).await?;
    let addr = listener.local_addr()?;
    let state = Arc::new(SimState::new(config, format!("http://{addr}")));
    let app = Router::new()
        .route("/v3/async/pixverse-v6-i2v", post(submit))
        .route("/v3/async/task-result", get(task_result))
        .route("/files/{name}", get(download))
        .route("/_simulator/stats", get(stats))
        .route("/test-images/{name}", get(test_image_file))
        .with_state(state.clone());
    let shutdown = CancellationToken::new();
    let stop = shutdown.clone();
    tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(async move { stop.cancelled().await })
            .await;
        if let Err(error) = served {
            tracing::error!("simulator stopped: {error}");
        }
    });
    Ok(SimHandle {
        addr,
        state,
        shutdown,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_simulator_listens_on_loopback_only() {
        let handle = start(SimConfig::default(), 0).await.unwrap();
        assert!(handle.addr.ip().is_loopback(), "{}", handle.addr);
        assert!(handle.base_url().starts_with("http://127.0.0.1:"));
    }

    #[tokio::test]
    async fn task_ids_never_repeat_across_restarts() {
        let body = r#"{"image":"https://x.io/a.png","prompt":"p"}"#;
        let mut ids = std::collections::HashSet::new();
        for _ in 0..3 {
            // Same seed each time, as after a restart.
            let handle = start(SimConfig::default(), 0).await.unwrap();
            let timeout = std::time::Duration::from_secs(10);
            let client = crate::api::ApiClient::new(
                url::Url::parse(&handle.base_url()).unwrap(),
                crate::api::ApiKey::new("k".into()),
                crate::api::Timeouts {
                    connect: timeout,
                    read: timeout,
                    json_request: timeout,
                },
            );
            let task_id = client.submit(body).await.unwrap();
            assert!(
                ids.insert(task_id.0.clone()),
                "{task_id} was handed out before"
            );
        }
    }
}
