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

    /// A video far larger than anything the test holds is sent whole,
    /// with its length announced, and starts with the playable clip.
    #[tokio::test]
    async fn a_large_video_is_streamed_with_its_length() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        const LEN: u64 = 256 << 20;
        let config = SimConfig {
            video_bytes: LEN as usize,
            ..SimConfig::default()
        };
        let handle = start(config, 0).await.unwrap();
        let task_id = handle.state.create_task("{}", &serde_json::json!({}));
        let url = handle.state.video_url(&task_id);
        let path = url.strip_prefix(&handle.base_url()).unwrap();
        let mut stream = tokio::net::TcpStream::connect(handle.addr).await.unwrap();
        let request =
            format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut received = Vec::new();
        let mut buffer = vec![0; 1 << 20];
        let mut body_len = 0u64;
        let mut header_end = None;
        loop {
            let n = stream.read(&mut buffer).await.unwrap();
            if n == 0 {
                break;
            }
            match header_end {
                Some(_) => body_len += n as u64,
                None => {
                    received.extend_from_slice(&buffer[..n]);
                    if let Some(at) = received.windows(4).position(|w| w == b"\r\n\r\n") {
                        header_end = Some(at + 4);
                        body_len = (received.len() - at - 4) as u64;
                    }
                }
            }
        }
        let header_end = header_end.expect("a complete header");
        let head = String::from_utf8_lossy(&received[..header_end]).to_lowercase();
        assert!(head.starts_with("http/1.1 200"), "{head}");
        assert!(
            head.contains(&format!("content-length: {LEN}\r\n")),
            "{head}"
        );
        assert_eq!(body_len, LEN);
        let clip = super::super::video::CLIP;
        assert!(received[header_end..].starts_with(clip));
    }
}
