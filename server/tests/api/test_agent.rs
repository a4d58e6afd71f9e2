//! Real HTTP agents on loopback for tests: a TCP listener on 127.0.0.1:0 that answers every
//! request the same scripted way, counts connections and requests, and keeps the last request
//! it received, so a test can prove what was (or was not) sent.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// How a test agent answers.
#[derive(Clone, Debug)]
pub(crate) enum Behaviour {
    /// `status` with a JSON body.
    Json(u16, String),
    /// An OpenAI chat completion saying `content`, reporting the given token usage.
    Chat { content: String, prompt_tokens: u64, completion_tokens: u64 },
    /// Echoes the request body back as `{"echo": <body>}`.
    Echo,
    /// 200 with a body that is not JSON.
    Garbage,
    /// A redirect to `location`.
    Redirect(String),
    /// Waits before answering 200 `{}`.
    Slow(Duration),
    /// A 200 whose body is `n` bytes.
    Big(usize),
    /// An SSE chat stream: waits `first_after`, then sends `pieces` `gap` apart; then, unless
    /// `cut`, a usage chunk and `[DONE]`. The connection closes at the end either way.
    Stream {
        pieces: Vec<String>,
        first_after: Duration,
        gap: Duration,
        cut: bool,
        usage: Option<(u64, u64)>,
    },
    /// An SSE stream of these `data:` payloads as they are, then `data: [DONE]` if `done`;
    /// for upstreams as minimal as they come (no `created`, no `finish_reason`, no usage).
    Sse { events: Vec<String>, done: bool },
    /// An SSE response that starts with `head` and then writes `unit` over and over, as fast
    /// as the reader takes it, until the reader goes away: a malicious stream.
    Flood { head: String, unit: String },
}

/// One request as the agent saw it.
#[derive(Clone, Debug, Default)]
pub(crate) struct SeenRequest {
    pub(crate) head: String,
    pub(crate) body: String,
}

pub(crate) struct TestAgent {
    pub(crate) url: String,
    connections: Arc<AtomicUsize>,
    pieces_sent: Arc<AtomicUsize>,
    requests: Arc<AtomicUsize>,
    last: Arc<Mutex<Option<SeenRequest>>>,
    /// Requests being answered now, and the most there ever were at once.
    in_flight: Arc<(AtomicUsize, AtomicUsize)>,
}

impl TestAgent {
    pub(crate) async fn start(behaviour: Behaviour) -> TestAgent {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let connections = Arc::new(AtomicUsize::new(0));
        let requests = Arc::new(AtomicUsize::new(0));
        let last = Arc::new(Mutex::new(None));
        let (connections_seen, requests_seen, last_seen) =
            (Arc::clone(&connections), Arc::clone(&requests), Arc::clone(&last));
        let pieces_sent = Arc::new(AtomicUsize::new(0));
        let pieces_seen = Arc::clone(&pieces_sent);
        let in_flight: Arc<(AtomicUsize, AtomicUsize)> = Arc::default();
        let in_flight_seen = Arc::clone(&in_flight);
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                connections_seen.fetch_add(1, Ordering::SeqCst);
                let behaviour = behaviour.clone();
                let requests = Arc::clone(&requests_seen);
                let last = Arc::clone(&last_seen);
                let pieces = Arc::clone(&pieces_seen);
                let in_flight = Arc::clone(&in_flight_seen);
                tokio::spawn(serve(socket, behaviour, requests, last, pieces, in_flight));
            }
        });
        TestAgent { url, connections, pieces_sent, requests, last, in_flight }
    }

    /// The most requests this agent was answering at one time.
    pub(crate) fn most_at_once(&self) -> usize {
        self.in_flight.1.load(Ordering::SeqCst)
    }

    /// Connections accepted so far.
    pub(crate) fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    /// Stream pieces written so far (a stream stops when its reader goes away).
    pub(crate) fn pieces_sent(&self) -> usize {
        self.pieces_sent.load(Ordering::SeqCst)
    }

    /// Requests received so far.
    pub(crate) fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }

    /// The most recent request.
    pub(crate) fn last_request(&self) -> Option<SeenRequest> {
        self.last.lock().unwrap().clone()
    }

    /// The listener's port.
    pub(crate) fn port(&self) -> u16 {
        self.url.rsplit(':').next().unwrap().parse().unwrap()
    }
}

/// Counts a request as no longer in flight when its answer is done (or abandoned).
struct Answered<'a>(&'a AtomicUsize);

impl Drop for Answered<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Serves requests on one connection until the client closes it (keep-alive aware).
async fn serve(
    mut socket: TcpStream,
    behaviour: Behaviour,
    requests: Arc<AtomicUsize>,
    last: Arc<Mutex<Option<SeenRequest>>>,
    pieces_sent: Arc<AtomicUsize>,
    in_flight: Arc<(AtomicUsize, AtomicUsize)>,
) {
    let mut buffer = Vec::new();
    loop {
        let Some(request) = read_request(&mut socket, &mut buffer).await else { return };
        requests.fetch_add(1, Ordering::SeqCst);
        let now = in_flight.0.fetch_add(1, Ordering::SeqCst) + 1;
        in_flight.1.fetch_max(now, Ordering::SeqCst);
        let _answered = Answered(&in_flight.0);
        if let Behaviour::Stream { pieces, first_after, gap, cut, usage } = &behaviour {
            *last.lock().unwrap() = Some(request);
            stream(&mut socket, pieces, *first_after, *gap, *cut, *usage, &pieces_sent).await;
            return;
        }
        if let Behaviour::Flood { head, unit } = &behaviour {
            *last.lock().unwrap() = Some(request);
            flood(&mut socket, head, unit, &pieces_sent).await;
            return;
        }
        if let Behaviour::Sse { events, done } = &behaviour {
            *last.lock().unwrap() = Some(request);
            sse(&mut socket, events, *done).await;
            return;
        }
        let response = match &behaviour {
            Behaviour::Json(status, body) => http_response(*status, "application/json", body, None),
            Behaviour::Chat { content, prompt_tokens, completion_tokens } => {
                let body = serde_json::json!({
                    "id": "upstream-id",
                    "object": "chat.completion",
                    "created": 1,
                    "model": "upstream-model",
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
                    "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens, "total_tokens": prompt_tokens + completion_tokens},
                });
                http_response(200, "application/json", &body.to_string(), None)
            }
            Behaviour::Echo => {
                let echoed: serde_json::Value =
                    serde_json::from_str(&request.body).unwrap_or(serde_json::Value::Null);
                http_response(
                    200,
                    "application/json",
                    &serde_json::json!({"echo": echoed}).to_string(),
                    None,
                )
            }
            Behaviour::Garbage => http_response(200, "text/plain", "this is not json", None),
            Behaviour::Redirect(location) => http_response(302, "text/plain", "", Some(location)),
            Behaviour::Slow(delay) => {
                tokio::time::sleep(*delay).await;
                http_response(200, "application/json", "{}", None)
            }
            Behaviour::Big(n) => http_response(200, "application/json", &"x".repeat(*n), None),
            Behaviour::Stream { .. } | Behaviour::Sse { .. } | Behaviour::Flood { .. } => {
                unreachable!("handled above")
            }
        };
        *last.lock().unwrap() = Some(request);
        if socket.write_all(response.as_bytes()).await.is_err() {
            return;
        }
    }
}

async fn stream(
    socket: &mut TcpStream,
    pieces: &[String],
    first_after: Duration,
    gap: Duration,
    cut: bool,
    usage: Option<(u64, u64)>,
    sent: &AtomicUsize,
) {
    let head = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n";
    if socket.write_all(head.as_bytes()).await.is_err() {
        return;
    }
    tokio::time::sleep(first_after).await;
    for (idx, piece) in pieces.iter().enumerate() {
        if idx > 0 {
            tokio::time::sleep(gap).await;
        }
        let chunk = serde_json::json!({
            "id": "upstream", "object": "chat.completion.chunk", "model": "upstream-model",
            "choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": null}],
        });
        if socket.write_all(format!("data: {chunk}\n\n").as_bytes()).await.is_err() {
            return;
        }
        sent.fetch_add(1, Ordering::SeqCst);
    }
    if !cut {
        if let Some((prompt, completion)) = usage {
            let chunk = serde_json::json!({"id": "upstream", "object": "chat.completion.chunk", "choices": [],
                "usage": {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}});
            let _ = socket.write_all(format!("data: {chunk}\n\n").as_bytes()).await;
        }
        let _ = socket.write_all(b"data: [DONE]\n\n").await;
    }
    let _ = socket.shutdown().await;
}

async fn sse(socket: &mut TcpStream, events: &[String], done: bool) {
    let mut body = String::from(
        "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n",
    );
    for event in events {
        body.push_str(&format!("data: {event}\n\n"));
    }
    if done {
        body.push_str("data: [DONE]\n\n");
    }
    let _ = socket.write_all(body.as_bytes()).await;
    let _ = socket.shutdown().await;
}

async fn flood(socket: &mut TcpStream, head: &str, unit: &str, sent: &AtomicUsize) {
    let start = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n{head}"
    );
    if socket.write_all(start.as_bytes()).await.is_err() {
        return;
    }
    let block = unit.repeat((64 * 1024 / unit.len().max(1)).max(1));
    while socket.write_all(block.as_bytes()).await.is_ok() {
        sent.fetch_add(block.len(), Ordering::SeqCst);
    }
}

/// Reads one HTTP/1.1 request (head and `content-length` body).
async fn read_request(socket: &mut TcpStream, buffer: &mut Vec<u8>) -> Option<SeenRequest> {
    let mut chunk = [0_u8; 16 * 1024];
    loop {
        if let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buffer[..end]).to_string();
            let length = head
                .lines()
                .find_map(|line| {
                    let (name, value) = line.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse::<usize>().ok())?
                })
                .unwrap_or(0);
            while buffer.len() < end + 4 + length {
                let n = socket.read(&mut chunk).await.ok().filter(|n| *n > 0)?;
                buffer.extend_from_slice(&chunk[..n]);
            }
            let body = String::from_utf8_lossy(&buffer[end + 4..end + 4 + length]).to_string();
            buffer.drain(..end + 4 + length);
            return Some(SeenRequest { head, body });
        }
        let n = socket.read(&mut chunk).await.ok().filter(|n| *n > 0)?;
        buffer.extend_from_slice(&chunk[..n]);
    }
}

fn http_response(status: u16, content_type: &str, body: &str, location: Option<&str>) -> String {
    let location = location.map(|l| format!("location: {l}\r\n")).unwrap_or_default();
    format!(
        "HTTP/1.1 {status} X\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\n{location}\r\n{body}",
        body.len()
    )
}
