//! Streaming: `stream: true` on `/v1/chat/completions`, relayed as server-sent events.
//!
//! * The winner's chunks pass through as they arrive, never buffered, reshaped to OpenAI's
//!   form by `chat_shape::ChunkShaper` (Gavel's `id`, `object`, `created`, the agent's slug as
//!   `model`, `finish_reason`s in OpenAI's words).
//! * Until the first chunk, a `: keep-alive` comment goes out every `dispatch.keepalive_ms`;
//!   a failure before the first chunk falls back to the next agent. If nothing has been sent
//!   yet, a total failure is a plain JSON error with a real status; after the first keep-alive
//!   it is an SSE error event (`data: {"error": {...}}`, which the OpenAI SDKs raise).
//! * A stream that ends cleanly ends as OpenAI's do: the last chunk with a choice carries a
//!   `finish_reason` (Gavel adds a closing `stop` chunk when the agent gave none), then the
//!   usage chunk (empty `choices`, tokens and numeric `cost`) only if the caller asked for it
//!   with `stream_options.include_usage`, then `data: [DONE]`. Gavel always asks the agent
//!   for usage, to settle on it.
//! * An agent that cuts its stream is a failed delivery: the caller gets the usage chunk if it
//!   asked for one, then an SSE error event, then `[DONE]`, and pays the per-token price of
//!   what was delivered, nothing else (no per-call price, no fees); the agent's reputation
//!   takes the failure. A body that ends without `[DONE]` after every choice had its
//!   `finish_reason` counts as a clean end.
//! * A caller that disconnects stops the upstream call; the job is settled on what was
//!   delivered, at the agent's prices and with the fees.
//!
//! The relay runs as a tracked task, so a graceful shutdown waits for it to settle.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::web::Bytes;
use actix_web::{HttpResponse, web};
use auction_engine::reputation::Outcome as AttemptOutcome;
use auction_engine::{MicroCredits, PriceSheet, Ranked, settle_on_usage, sheet_price};
use registry::agents::Agent;
use registry::jobs::{Attempt, JobOutcome, JobStatus, ReputationUpdate, Served};
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use crate::egress::AgentCall;
use crate::error::ApiError;
use crate::jobs::chat_shape::ChunkShaper;
use crate::jobs::dispatch::{attempt_timeout, upstream_request};
use crate::jobs::settlement::{
    AttemptFacts, AttemptLog, Conclusion, HeldJob, MAX_STREAM, attempts_summary, conclude,
    delivered_cost, failed_outcome, failure_message, serving_cap,
};
use crate::state::AppState;

/// Starts relaying a held job; answers once it is known whether the caller gets a stream or
/// a plain error.
pub async fn respond(state: web::Data<AppState>, job: HeldJob) -> Result<HttpResponse, ApiError> {
    let (tx, rx) = mpsc::channel::<Bytes>(64);
    let (ready_tx, ready_rx) = oneshot::channel();
    let auction_id = job.auction_id;
    let job_id = job.job_id;
    let relay_state = state.clone();
    state
        .relays
        .spawn(async move { relay(relay_state, job, Sink { tx, ready: Some(ready_tx) }).await });
    match ready_rx.await {
        Ok(Ok(())) => {
            let body = futures::stream::unfold(rx, |mut rx| async move {
                rx.recv().await.map(|bytes| (Ok::<_, Infallible>(bytes), rx))
            });
            Ok(HttpResponse::Ok()
                .content_type("text/event-stream")
                .insert_header(("cache-control", "no-cache"))
                .insert_header(("x-accel-buffering", "no"))
                .insert_header(("x-gavel-auction-id", auction_id.to_string()))
                .insert_header(("x-gavel-job-id", job_id.to_string()))
                .streaming(body))
        }
        Ok(Err(err)) => Err(err),
        Err(_) => {
            Err(ApiError::internal(anyhow::anyhow!("the stream relay stopped before answering")))
        }
    }
}

/// The caller's side: commits to an SSE response on first use.
struct Sink {
    tx: mpsc::Sender<Bytes>,
    ready: Option<oneshot::Sender<Result<(), ApiError>>>,
}

impl Sink {
    /// Sends bytes; `false` once the caller is gone.
    async fn send(&mut self, bytes: impl Into<Bytes>) -> bool {
        if let Some(ready) = self.ready.take()
            && ready.send(Ok(())).is_err()
        {
            return false;
        }
        self.tx.send(bytes.into()).await.is_ok()
    }

    async fn event(&mut self, value: &Value) -> bool {
        self.send(format!("data: {value}\n\n")).await
    }

    /// Answers with a plain error if nothing was sent yet; otherwise as an SSE error event.
    async fn fail(&mut self, err: ApiError) {
        if let Some(ready) = self.ready.take() {
            let _ = ready.send(Err(err));
            return;
        }
        let event = json!({"error": {"message": err.to_string(), "type": "server_error", "code": err.code()}});
        let _ = self.event(&event).await;
        let _ = self.send("data: [DONE]\n\n").await;
    }
}

/// What reading an upstream stream came to.
enum Ending {
    /// `[DONE]` (or a clean end after content).
    Finished,
    /// The agent broke off after the first chunk.
    Cut(String),
    /// The caller went away.
    CallerGone,
}

/// What one attempt came to.
enum AttemptEnd {
    /// Failed before its first chunk: try the next agent.
    Failed(AttemptOutcome, Option<u16>, String),
    /// It streamed; how it ended, and what was delivered.
    Streamed { ending: Ending, delivered: Delivered },
    /// The caller left before anything was delivered.
    CallerGone,
}

/// What an attempt has relayed so far.
struct Delivered {
    content: String,
    usage: Option<(u64, u64)>,
    /// Reshapes the agent's chunks and knows which choices are still open.
    shaper: ChunkShaper,
}

async fn relay(state: web::Data<AppState>, job: HeldJob, mut sink: Sink) {
    let keepalive = Duration::from_millis(state.settings.raw.dispatch.keepalive_ms.max(10));
    let default_timeout = Duration::from_millis(state.settings.raw.dispatch.timeout_ms);
    let mut log = AttemptLog::default();
    for ranked in &job.serving {
        let agent_id = Uuid::from_u128(ranked.agent_id.0);
        let Some(agent) = job.agents.get(&agent_id).cloned() else { continue };
        let started = Instant::now();
        let started_at = state.now();
        let end = attempt(
            &state,
            &job,
            &agent,
            attempt_timeout(&agent, default_timeout),
            keepalive,
            &mut sink,
        )
        .await;
        let latency_ms = started.elapsed().as_millis() as u64;
        let facts = AttemptFacts { ranked, agent: &agent, started_at, latency_ms };
        match end {
            AttemptEnd::Failed(outcome, http_status, code) => {
                log.failed(&state, &job, &facts, (outcome, http_status, code));
            }
            AttemptEnd::CallerGone => {
                log.caller_left(&facts);
                let message = "the caller disconnected before the first chunk";
                abandon(&state, &job, message, log.attempts, log.reputation).await;
                return;
            }
            AttemptEnd::Streamed { ending, delivered } => {
                let outcome = match ending {
                    Ending::Finished => AttemptOutcome::Success,
                    Ending::Cut(_) => AttemptOutcome::Error,
                    // Not the agent's fault: its reputation is left alone.
                    Ending::CallerGone => AttemptOutcome::Success,
                };
                let code = match &ending {
                    Ending::Cut(code) => Some(code.clone()),
                    Ending::CallerGone => Some("caller_disconnected".into()),
                    Ending::Finished => None,
                };
                let judged = !matches!(ending, Ending::CallerGone);
                log.delivered(&state, &job, &facts, (outcome, code), judged);
                let done = Finished {
                    ranked,
                    agent: &agent,
                    ending,
                    delivered,
                    latency_ms,
                    attempts: log.attempts,
                    reputation: log.reputation,
                };
                finish(&state, &job, done, &mut sink).await;
                return;
            }
        }
    }
    // Nobody delivered: nothing is charged.
    let message = failure_message(&log.attempts);
    let summary = attempts_summary(&log.attempts);
    let rejected = log.nobody_delivered(&state, &job);
    abandon(&state, &job, &message, log.attempts, log.reputation).await;
    state.metrics.job_finished("chat", "all_failed");
    let error = if rejected {
        ApiError::RejectedByAgents { message, attempts: summary }
    } else {
        ApiError::UpstreamFailed { message, attempts: summary }
    };
    sink.fail(error).await;
}

/// Releases the hold and records the job as failed, with the reputation of those tried.
async fn abandon(
    state: &AppState,
    job: &HeldJob,
    message: &str,
    attempts: Vec<Attempt>,
    reputation: Vec<ReputationUpdate>,
) {
    let release = if job.hold_amount > MicroCredits::ZERO {
        Conclusion::Release
    } else {
        Conclusion::Nothing
    };
    let outcome = failed_outcome(state, message, attempts);
    if let Err(err) = conclude(state, job.job_id, outcome, release, reputation).await {
        tracing::error!(error = ?err, job = %job.job_id, "could not conclude a failed stream; the reaper will free its hold");
    }
}

/// Calls one agent and relays its stream. Keep-alives go out while waiting for the first chunk.
async fn attempt(
    state: &AppState,
    job: &HeldJob,
    agent: &Agent,
    timeout: Duration,
    keepalive: Duration,
    sink: &mut Sink,
) -> AttemptEnd {
    let Some((url, body)) = upstream_request(agent, &job.request.payload, true) else {
        return AttemptEnd::Failed(AttemptOutcome::Error, None, "encode_failed".into());
    };
    let deadline = tokio::time::Instant::now() + timeout;
    let call = AgentCall {
        url: &url,
        body,
        bearer: agent.upstream_api_key.as_ref().map(|k| k.expose()),
        idempotency_key: None,
        first_byte_timeout: timeout,
        // The whole stream may last long; idleness is bounded chunk by chunk below.
        total_timeout: MAX_STREAM,
        max_response_bytes: state.settings.raw.dispatch.max_response_bytes,
    };
    let open = state.agent_client.post_stream(call);
    let response = match wait(open, deadline, keepalive, sink).await {
        Waited::Ready(Ok(response)) => response,
        Waited::Ready(Err(err)) => {
            let outcome = if matches!(err, crate::egress::CallError::Timeout) {
                AttemptOutcome::Timeout
            } else {
                AttemptOutcome::Error
            };
            return AttemptEnd::Failed(outcome, None, err.code().to_owned());
        }
        Waited::Deadline => {
            return AttemptEnd::Failed(AttemptOutcome::Timeout, None, "timeout".into());
        }
        Waited::CallerGone => return AttemptEnd::CallerGone,
    };
    let status = response.status().as_u16();
    if !(200..300).contains(&status) {
        return AttemptEnd::Failed(AttemptOutcome::Error, Some(status), format!("http_{status}"));
    }
    // Until the first chunk the attempt's own deadline holds; after it, the stream may run up
    // to `MAX_STREAM`, each read bounded by the idle timeout.
    let mut reader = EventReader::new(
        response,
        state.settings.raw.dispatch.max_response_bytes,
        Duration::from_millis(state.settings.raw.dispatch.stream_idle_ms),
        tokio::time::Instant::now() + MAX_STREAM,
    );
    let mut delivered = Delivered {
        content: String::new(),
        usage: None,
        shaper: ChunkShaper::new(job.job_id.to_string(), agent.slug.clone(), job.created),
    };

    // Wait for the first content chunk (keep-alives meanwhile); failures here fall back.
    loop {
        let next = match wait(reader.next_event(), deadline, keepalive, sink).await {
            Waited::Ready(next) => next,
            Waited::Deadline => {
                return AttemptEnd::Failed(AttemptOutcome::Timeout, Some(status), "timeout".into());
            }
            Waited::CallerGone => return AttemptEnd::CallerGone,
        };
        match next {
            Err(code) => return AttemptEnd::Failed(AttemptOutcome::Error, Some(status), code),
            Ok(None) | Ok(Some(UpstreamEvent::Done)) => {
                return AttemptEnd::Failed(
                    AttemptOutcome::InvalidOutput,
                    Some(status),
                    "empty_stream".into(),
                );
            }
            Ok(Some(UpstreamEvent::Data(value))) => match classify_chunk(value, &mut delivered) {
                Chunk::Forward(chunk) => {
                    if !sink.send(chunk).await {
                        return AttemptEnd::Streamed { ending: Ending::CallerGone, delivered };
                    }
                    break;
                }
                Chunk::Skip => {}
                Chunk::Error => {
                    return AttemptEnd::Failed(
                        AttemptOutcome::Error,
                        Some(status),
                        "agent_error_event".into(),
                    );
                }
                Chunk::Invalid => {
                    return AttemptEnd::Failed(
                        AttemptOutcome::InvalidOutput,
                        Some(status),
                        "invalid_chunk".into(),
                    );
                }
            },
        }
    }

    // Relay the rest as it comes; no fallback from here on.
    loop {
        let ending = match reader.next_event().await {
            Err(code) => Some(Ending::Cut(code)),
            // A body that ends after every choice finished is complete, `[DONE]` or not.
            Ok(None) if delivered.shaper.finished() => Some(Ending::Finished),
            Ok(None) => Some(Ending::Cut("stream_ended_without_done".into())),
            Ok(Some(UpstreamEvent::Done)) => Some(Ending::Finished),
            Ok(Some(UpstreamEvent::Data(value))) => match classify_chunk(value, &mut delivered) {
                Chunk::Forward(chunk) => (!sink.send(chunk).await).then_some(Ending::CallerGone),
                Chunk::Skip => None,
                Chunk::Error => Some(Ending::Cut("agent_error_event".into())),
                Chunk::Invalid => Some(Ending::Cut("invalid_chunk".into())),
            },
        };
        if let Some(ending) = ending {
            return AttemptEnd::Streamed { ending, delivered };
        }
    }
}

/// How a relayed stream ended, for `finish`.
struct Finished<'a> {
    ranked: &'a Ranked,
    agent: &'a Arc<Agent>,
    ending: Ending,
    delivered: Delivered,
    latency_ms: u64,
    attempts: Vec<Attempt>,
    reputation: Vec<ReputationUpdate>,
}

/// Settles and records the job, then sends the closing chunks.
async fn finish(state: &AppState, job: &HeldJob, done: Finished<'_>, sink: &mut Sink) {
    let Finished { ranked, agent, ending, delivered, latency_ms, attempts, reputation } = done;
    let reported = delivered.usage.unwrap_or_else(|| {
        (job.request.input_tokens, (delivered.content.len() as u64).div_ceil(4))
    });
    let (prompt, completion) = job.request.validated_usage(reported);
    let cap = serving_cap(job, ranked);
    let (agent_cost, call_fee, win_fee) = match ending {
        // A cut stream: the per-token price of what was delivered, nothing else.
        Ending::Cut(_) => {
            let tokens_only = PriceSheet { per_call: MicroCredits::ZERO, ..agent.pricing };
            let actual =
                sheet_price(&tokens_only, prompt, completion).unwrap_or(MicroCredits::ZERO);
            (
                settle_on_usage(ranked.price, ranked.sheet_price, actual, cap),
                MicroCredits::ZERO,
                MicroCredits::ZERO,
            )
        }
        Ending::Finished | Ending::CallerGone => (
            delivered_cost(job, agent, ranked, Some((prompt, completion))),
            job.call_fee,
            job.win_fee,
        ),
    };
    let (status, error) = match &ending {
        Ending::Finished => (JobStatus::Delivered, None),
        Ending::Cut(code) => {
            (JobStatus::Failed, Some(format!("the agent's stream broke off ({code})")))
        }
        Ending::CallerGone => (JobStatus::Delivered, Some("the caller disconnected".to_owned())),
    };
    let outcome = JobOutcome {
        status,
        served: Some(Served {
            agent_id: agent.id,
            agent_slug: agent.slug.clone(),
            owner: agent.owner_id,
        }),
        clearing_price: Some(ranked.price),
        agent_cost,
        call_fee,
        win_fee,
        total_cost: MicroCredits::ZERO,
        input_tokens: Some(prompt),
        output_tokens: Some(completion),
        latency_ms: Some(latency_ms),
        output: Some(json!({"content": delivered.content}).to_string()),
        error,
        attempts,
        finished_at: state.now(),
    };
    let charge = Conclusion::Charge { agent, held: job.hold_amount > MicroCredits::ZERO };
    let total_cost = match conclude(state, job.job_id, outcome, charge, reputation).await {
        Ok(total) => total,
        Err(err) => {
            tracing::error!(error = ?err, job = %job.job_id, "stream settlement failed; the reaper will free its hold");
            MicroCredits::ZERO
        }
    };
    if matches!(ending, Ending::Finished) {
        state.observe_clearing_price(&job.request.category, ranked);
    }
    let cut = matches!(ending, Ending::Cut(_));
    state.metrics.job_finished("chat", if cut { "stream_cut" } else { "delivered" });

    let mut shaper = delivered.shaper;
    if matches!(ending, Ending::Finished)
        && let Some(closing) = shaper.closing()
    {
        let _ = sink.event(&closing).await;
    }
    if job.request.include_usage {
        let _ = sink.event(&shaper.usage(prompt, completion, total_cost.as_credits_f64())).await;
    }
    if let Ending::Cut(code) = &ending {
        let error = json!({"error": {
            "message": format!("the agent's stream broke off ({code}); only the tokens delivered are charged"),
            "type": "server_error",
            "param": null,
            "code": "agent_stream_cut",
        }});
        let _ = sink.event(&error).await;
    }
    let _ = sink.send("data: [DONE]\n\n").await;
}

enum Waited<T> {
    Ready(T),
    Deadline,
    CallerGone,
}

/// Awaits `future` until `deadline`, sending a keep-alive comment every `keepalive`.
async fn wait<F: std::future::Future>(
    future: F,
    deadline: tokio::time::Instant,
    keepalive: Duration,
    sink: &mut Sink,
) -> Waited<F::Output> {
    tokio::pin!(future);
    loop {
        let tick = tokio::time::sleep(keepalive);
        tokio::select! {
            value = &mut future => return Waited::Ready(value),
            () = tokio::time::sleep_until(deadline) => return Waited::Deadline,
            () = tick => {
                if !sink.send(": keep-alive\n\n").await {
                    return Waited::CallerGone;
                }
            }
        }
    }
}

enum Chunk {
    Forward(String),
    Skip,
    Error,
    Invalid,
}

/// Decides what to do with one upstream `data:` payload.
fn classify_chunk(value: Value, delivered: &mut Delivered) -> Chunk {
    let Value::Object(chunk) = value else { return Chunk::Invalid };
    if chunk.contains_key("error") {
        return Chunk::Error;
    }
    if let Some(usage) = chunk.get("usage").filter(|u| u.is_object()) {
        let prompt = usage.get("prompt_tokens").and_then(Value::as_u64);
        let completion = usage.get("completion_tokens").and_then(Value::as_u64);
        if let (Some(prompt), Some(completion)) = (prompt, completion) {
            delivered.usage = Some((prompt, completion));
        }
    }
    let Some(choices) = chunk.get("choices").and_then(Value::as_array).filter(|c| !c.is_empty())
    else {
        // A usage-only chunk: folded into Gavel's own closing usage chunk.
        return Chunk::Skip;
    };
    for choice in choices {
        if let Some(text) = choice.pointer("/delta/content").and_then(Value::as_str) {
            delivered.content.push_str(text);
        }
    }
    Chunk::Forward(format!("data: {}\n\n", delivered.shaper.shape(chunk)))
}

enum UpstreamEvent {
    Data(Value),
    Done,
}

/// The largest single event an agent may send: a chat chunk is a few hundred bytes.
const MAX_EVENT_BYTES: usize = 256 * 1024;

/// Reads an upstream SSE body as events, with every byte bounded: `sse_parse` scans each byte
/// once (a line that never ends costs linear time, not a rescan per chunk) and holds at most
/// `MAX_EVENT_BYTES` of one event; every byte read, comments and usage-only chunks included,
/// counts against `max_bytes`; each read waits at most `idle`, and nothing past `deadline`.
struct EventReader {
    response: reqwest::Response,
    parser: sse_parse::SseParser,
    read: usize,
    max_bytes: usize,
    idle: Duration,
    deadline: tokio::time::Instant,
    ended: bool,
}

impl EventReader {
    fn new(
        response: reqwest::Response,
        max_bytes: usize,
        idle: Duration,
        deadline: tokio::time::Instant,
    ) -> EventReader {
        EventReader {
            response,
            parser: sse_parse::SseParser::new().max_buffer(MAX_EVENT_BYTES),
            read: 0,
            max_bytes,
            idle,
            deadline,
            ended: false,
        }
    }

    /// The next data event; `Ok(None)` at the end of the body; `Err(code)` on a broken,
    /// oversized, idle or overdue body.
    async fn next_event(&mut self) -> Result<Option<UpstreamEvent>, String> {
        loop {
            if self.parser.overflows() > 0 {
                return Err("event_too_large".into());
            }
            if let Some(event) = self.parser.next_event() {
                if event.data.trim() == "[DONE]" {
                    return Ok(Some(UpstreamEvent::Done));
                }
                return match serde_json::from_str(&event.data) {
                    Ok(value) => Ok(Some(UpstreamEvent::Data(value))),
                    Err(_) => Err("invalid_chunk".into()),
                };
            }
            if self.ended {
                return Ok(None);
            }
            let wait =
                self.idle.min(self.deadline.saturating_duration_since(tokio::time::Instant::now()));
            match tokio::time::timeout(wait, self.response.chunk()).await {
                Err(_) if tokio::time::Instant::now() >= self.deadline => {
                    return Err("stream_deadline".into());
                }
                Err(_) => return Err("stream_idle_timeout".into()),
                Ok(Err(_)) => return Err("stream_broken".into()),
                Ok(Ok(None)) => {
                    self.parser.finish();
                    self.ended = true;
                }
                Ok(Ok(Some(bytes))) => {
                    self.read = self.read.saturating_add(bytes.len());
                    if self.read > self.max_bytes {
                        return Err("response_too_large".into());
                    }
                    self.parser.feed(&bytes);
                }
            }
        }
    }
}
