//! What the end-to-end benchmarks share: a zero-delay mock agent, reading the address a
//! `gavel serve` child prints, and signing up.

use std::io::{BufRead, BufReader};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Signs up `name`; `(email, access token)`.
pub(crate) async fn signup(client: &reqwest::Client, base: &str, name: &str) -> (String, String) {
    let email = format!("{name}-{}@bench.example.com", std::process::id());
    let body = json!({"email": email, "password": "benchmark password 1"});
    let response: Value = client
        .post(format!("{base}/api/auth/signup"))
        .json(&body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    (email, response["access_token"].as_str().unwrap().to_owned())
}

/// The release binary the benchmarks run (`GAVEL_BIN`, or `target/release/gavel`).
pub(crate) fn gavel_bin() -> String {
    std::env::var("GAVEL_BIN").unwrap_or_else(|_| {
        concat!(env!("CARGO_MANIFEST_DIR"), "/../target/release/gavel").to_owned()
    })
}

/// A benchmark server's settings: loopback agents allowed, every rate limit out of the way,
/// its data in `data_dir`, one JWT secret for all instances of a run.
pub(crate) fn bench_env(data_dir: &std::path::Path) -> Vec<(&'static str, String)> {
    vec![
        ("GAVEL__SERVER__BIND", "127.0.0.1:0".to_owned()),
        ("GAVEL__SERVER__DATA_DIR", data_dir.display().to_string()),
        ("GAVEL__EGRESS__ALLOW_CIDRS", "127.0.0.0/8".to_owned()),
        ("GAVEL__RATE_LIMIT__PER_SECOND", "1000000".to_owned()),
        ("GAVEL__RATE_LIMIT__BURST", "1000000".to_owned()),
        ("GAVEL__RATE_LIMIT__AUTH_PER_MINUTE", "1000000".to_owned()),
        ("GAVEL__RATE_LIMIT__AUTH_BURST", "1000000".to_owned()),
        ("RUST_LOG", "warn,gavel=info".to_owned()),
        ("GAVEL__AUTH__JWT_SECRET", "bench-secret-bench-secret-bench-secret-0".to_owned()),
    ]
}

/// Starts `gavel serve` from `bin` with `env`; the child and its base URL.
pub(crate) fn start_gavel(bin: &str, env: &[(&str, String)]) -> (std::process::Child, String) {
    let mut gavel = std::process::Command::new(bin)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run scripts/bench (it builds target/release/gavel)");
    let base = read_address(gavel.stderr.take().expect("piped stderr"));
    (gavel, base)
}

/// The address a `gavel serve` child says it listens on.
pub(crate) fn read_address(stderr: std::process::ChildStderr) -> String {
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(idx) = line.find("listening on http://") {
                let _ = sender.send(line[idx + "listening on ".len()..].trim().to_owned());
            }
        }
    });
    receiver.recv_timeout(Duration::from_secs(60)).expect("gavel started")
}

/// A zero-delay OpenAI-compatible agent: the same tiny completion for every request, on
/// keep-alive connections.
pub(crate) async fn start_mock_agent() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let body = json!({
        "id": "mock", "object": "chat.completion", "created": 1, "model": "mock",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    })
    .to_string();
    let response: Arc<[u8]> = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
    .into();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let response = Arc::clone(&response);
            tokio::spawn(async move {
                let mut buffer = Vec::with_capacity(8192);
                let mut chunk = [0_u8; 8192];
                loop {
                    // One request: the head, then content-length bytes of body.
                    let request_end = loop {
                        if let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                            let head = String::from_utf8_lossy(&buffer[..end]).to_ascii_lowercase();
                            let length = head
                                .lines()
                                .find_map(|l| {
                                    l.strip_prefix("content-length:")
                                        .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                                })
                                .unwrap_or(0);
                            if buffer.len() >= end + 4 + length {
                                break end + 4 + length;
                            }
                        }
                        match socket.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buffer.extend_from_slice(&chunk[..n]),
                        }
                    };
                    buffer.drain(..request_end);
                    if socket.write_all(&response).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    url
}

/// Ten owners' mock chat agents (the first the cheapest: it wins every auction) and a caller
/// granted a million credits through `bin`'s CLI; `(caller's (email, token), the winning
/// owner's email)`.
pub(crate) async fn seed_market(
    client: &reqwest::Client,
    bin: &str,
    env: &[(&str, String)],
    base: &str,
    agent: &str,
    caller_name: &str,
) -> ((String, String), String) {
    let caller = signup(client, base, caller_name).await;
    let mut winning_owner = String::new();
    for i in 0..10 {
        let owner = signup(client, base, &format!("{caller_name}-owner{i}")).await;
        if i == 0 {
            winning_owner = owner.0.clone();
        }
        let body = json!({
            "name": format!("mock{i}"), "kind": "openai-chat", "categories": ["chat"], "endpoint": agent,
            "upstream_model": "mock", "pricing": {"per_call": format!("1.00{}", i + 1)},
        });
        let response = client
            .post(format!("{base}/api/agents"))
            .bearer_auth(&owner.1)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201, "{}", response.text().await.unwrap());
    }
    let status = std::process::Command::new(bin)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .args(["admin", "grant", "--email", &caller.0, "--credits", "1000000"])
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    (caller, winning_owner)
}
