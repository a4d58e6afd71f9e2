//! Calling one agent with a job and judging its answer.
//!
//! An `openai-chat` agent gets `POST {endpoint}/chat/completions` with the caller's body,
//! `model` set to its `upstream_model` and its upstream key as bearer token; a valid answer is
//! a JSON object with a non-empty `choices` array. A `json` agent gets the job's `input` as
//! the body of `POST {endpoint}`; a valid answer is any JSON. Anything else is a failed
//! attempt, classified for reputation.

use std::time::Duration;

use auction_engine::reputation::Outcome as AttemptOutcome;
use registry::agents::{Agent, AgentKind};
use serde_json::Value;

use crate::egress::{AgentCall, AgentClient, CallError};
use crate::jobs::request::Payload;

/// What one attempt produced.
#[derive(Debug)]
pub enum Delivery {
    /// A valid answer, parsed, and the tokens it reports (prompt, completion).
    Delivered { output: Value, usage: Option<(u64, u64)> },
    /// A failure: how it counts for reputation, the HTTP status if any, and a code.
    Failed { outcome: AttemptOutcome, http_status: Option<u16>, code: String },
}

/// The limits of one attempt.
#[derive(Clone, Copy, Debug)]
pub struct DispatchLimits {
    pub timeout: Duration,
    pub max_response_bytes: usize,
}

/// Sends the job to `agent` and judges the answer. Returns the delivery and the elapsed time.
/// `idempotency_key` goes out as the `Idempotency-Key` header (a batch line's id).
pub async fn dispatch(
    client: &AgentClient,
    agent: &Agent,
    payload: &Payload,
    limits: DispatchLimits,
    idempotency_key: Option<&str>,
) -> (Delivery, Duration) {
    let started = std::time::Instant::now();
    let timeout = agent
        .max_latency_ms
        .map_or(limits.timeout, |ms| Duration::from_millis(u64::from(ms)).min(limits.timeout));
    let (url, body) = match (agent.kind, payload) {
        (AgentKind::OpenAiChat, Payload::Chat(body)) => {
            let mut body = body.clone();
            body.insert(
                "model".into(),
                Value::String(agent.upstream_model.clone().unwrap_or_default()),
            );
            body.insert("stream".into(), Value::Bool(false));
            (
                format!("{}/chat/completions", agent.endpoint.trim_end_matches('/')),
                Value::Object(body),
            )
        }
        (AgentKind::Json, Payload::Chat(body)) => {
            (agent.endpoint.clone(), Value::Object(body.clone()))
        }
        (_, Payload::Json(input)) => (agent.endpoint.clone(), input.clone()),
    };
    let body = match serde_json::to_vec(&body) {
        Ok(bytes) => bytes,
        Err(_) => return (failed(AttemptOutcome::Error, None, "encode_failed"), started.elapsed()),
    };
    let call = AgentCall {
        url: &url,
        body,
        bearer: agent.upstream_api_key.as_ref().map(|key| key.expose()),
        idempotency_key,
        first_byte_timeout: timeout,
        total_timeout: timeout,
        max_response_bytes: limits.max_response_bytes,
    };
    let delivery = match client.post_json(call).await {
        Err(CallError::Timeout) => failed(AttemptOutcome::Timeout, None, "timeout"),
        Err(err @ CallError::TooLarge { .. }) => {
            failed(AttemptOutcome::InvalidOutput, None, err.code())
        }
        Err(err) => failed(AttemptOutcome::Error, None, err.code()),
        Ok(reply) if !(200..300).contains(&reply.status) => {
            failed(AttemptOutcome::Error, Some(reply.status), &format!("http_{}", reply.status))
        }
        Ok(reply) => judge(agent.kind, payload, &reply.body, reply.status),
    };
    (delivery, started.elapsed())
}

/// The URL and body of a call to `agent`. Streaming chat calls ask for a usage chunk.
pub fn upstream_request(
    agent: &Agent,
    payload: &Payload,
    stream: bool,
) -> Option<(String, Vec<u8>)> {
    let (url, body) = match (agent.kind, payload) {
        (AgentKind::OpenAiChat, Payload::Chat(body)) => {
            let mut body = body.clone();
            body.insert(
                "model".into(),
                Value::String(agent.upstream_model.clone().unwrap_or_default()),
            );
            body.insert("stream".into(), Value::Bool(stream));
            if stream {
                body.insert("stream_options".into(), serde_json::json!({"include_usage": true}));
            } else {
                body.remove("stream_options");
            }
            (
                format!("{}/chat/completions", agent.endpoint.trim_end_matches('/')),
                Value::Object(body),
            )
        }
        (AgentKind::Json, Payload::Chat(body)) => {
            (agent.endpoint.clone(), Value::Object(body.clone()))
        }
        (_, Payload::Json(input)) => (agent.endpoint.clone(), input.clone()),
    };
    serde_json::to_vec(&body).ok().map(|bytes| (url, bytes))
}

/// The attempt timeout for `agent`: its declared latency ceiling, never above the default.
pub fn attempt_timeout(agent: &Agent, default: Duration) -> Duration {
    agent.max_latency_ms.map_or(default, |ms| Duration::from_millis(u64::from(ms)).min(default))
}

fn judge(kind: AgentKind, payload: &Payload, body: &[u8], status: u16) -> Delivery {
    let Ok(output) = serde_json::from_slice::<Value>(body) else {
        return failed(AttemptOutcome::InvalidOutput, Some(status), "invalid_json");
    };
    let chat = matches!((kind, payload), (AgentKind::OpenAiChat, Payload::Chat(_)));
    if chat {
        let has_choices =
            output.get("choices").and_then(Value::as_array).is_some_and(|c| !c.is_empty());
        if !has_choices {
            return failed(AttemptOutcome::InvalidOutput, Some(status), "no_choices");
        }
    }
    let usage = output.get("usage").and_then(|usage| {
        let prompt = usage.get("prompt_tokens")?.as_u64()?;
        let completion = usage.get("completion_tokens")?.as_u64()?;
        Some((prompt, completion))
    });
    Delivery::Delivered { output, usage }
}

fn failed(outcome: AttemptOutcome, http_status: Option<u16>, code: &str) -> Delivery {
    Delivery::Failed { outcome, http_status, code: code.to_owned() }
}

/// The record's word for an attempt outcome (the engine's, so the figures read it back alike).
pub fn outcome_word(outcome: AttemptOutcome) -> &'static str {
    outcome.as_str()
}
