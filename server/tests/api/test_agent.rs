//! Real HTTP agents on loopback for tests: a raw TCP listener on 127.0.0.1:0 that answers
//! every request the same scripted way and counts the connections it accepted, so a test can
//! prove that a refused destination was never contacted.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// How a test agent answers.
#[derive(Clone, Debug)]
pub(crate) enum Behaviour {
    /// `status` with a JSON body.
    Json(u16, String),
    /// A redirect to `location`.
    Redirect(String),
    /// Waits before answering 200 `{}`.
    Slow(Duration),
    /// A 200 whose body is `n` bytes.
    Big(usize),
}

pub(crate) struct TestAgent {
    pub(crate) url: String,
    connections: Arc<AtomicUsize>,
}

impl TestAgent {
    pub(crate) async fn start(behaviour: Behaviour) -> TestAgent {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let connections = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&connections);
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                counter.fetch_add(1, Ordering::SeqCst);
                let behaviour = behaviour.clone();
                tokio::spawn(async move {
                    // Read the request head and body (enough for the small requests tests send).
                    let mut buffer = vec![0_u8; 64 * 1024];
                    let _ = socket.read(&mut buffer).await;
                    let response = match behaviour {
                        Behaviour::Json(status, body) => {
                            http_response(status, "application/json", &body, None)
                        }
                        Behaviour::Redirect(location) => {
                            http_response(302, "text/plain", "", Some(&location))
                        }
                        Behaviour::Slow(delay) => {
                            tokio::time::sleep(delay).await;
                            http_response(200, "application/json", "{}", None)
                        }
                        Behaviour::Big(n) => {
                            http_response(200, "application/json", &"x".repeat(n), None)
                        }
                    };
                    let _ = socket.write_all(response.as_bytes()).await;
                    let _ = socket.shutdown().await;
                });
            }
        });
        TestAgent { url, connections }
    }

    /// Connections accepted so far.
    pub(crate) fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    /// The listener's port.
    pub(crate) fn port(&self) -> u16 {
        self.url.rsplit(':').next().unwrap().parse().unwrap()
    }
}

fn http_response(status: u16, content_type: &str, body: &str, location: Option<&str>) -> String {
    let location = location.map(|l| format!("location: {l}\r\n")).unwrap_or_default();
    format!(
        "HTTP/1.1 {status} X\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\n{location}connection: close\r\n\r\n{body}",
        body.len()
    )
}
