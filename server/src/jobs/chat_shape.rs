//! OpenAI's wire shape for what Gavel answers a chat caller, whatever the agent sent.
//!
//! Minimal upstreams (and the demo's own agents) omit `created`, never set a `finish_reason`
//! or use their own words for it (`end_turn`, `max_tokens`...). Clients are strict where we
//! are loose: the Node SDK's `finalChatCompletion()` throws without a `finish_reason`, litellm
//! raises when a stream ends without one. So Gavel shapes every answer itself:
//!
//! * every chunk has `id` (Gavel's job id), `object`, `created` and `model` (the agent's slug);
//! * every `finish_reason` is one of OpenAI's (`stop`, `length`, `tool_calls`,
//!   `content_filter`, `function_call`), others are mapped to the nearest;
//! * the last chunk that carries a choice carries its `finish_reason`: when the agent ended
//!   without one, `ChunkShaper::closing` makes the chunk that says `stop` (or `tool_calls`
//!   after tool-call deltas);
//! * a complete (non-streamed) answer gets the same treatment, choice by choice.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

/// OpenAI's word for why a choice ended, from whatever word an agent used.
pub fn finish_reason(agent_said: &str) -> &'static str {
    match agent_said {
        "length" | "max_tokens" | "max_length" | "model_length" | "max_output_tokens" => "length",
        "tool_calls" | "tool_use" | "tool_call" | "tools" => "tool_calls",
        "function_call" => "function_call",
        "content_filter" | "safety" | "recitation" | "content_filtered" | "blocked" => {
            "content_filter"
        }
        // `stop`, `eos`, `end_turn`, `stop_sequence` and anything unknown: a clean stop.
        _ => "stop",
    }
}

/// What one streamed choice has shown so far.
#[derive(Clone, Copy, Debug, Default)]
struct ChoiceState {
    /// The `finish_reason` of the latest chunk that named this choice (`None`: it had none).
    latest: Option<&'static str>,
    /// The last `finish_reason` the agent gave this choice at all.
    given: Option<&'static str>,
    /// Whether a delta carried tool calls.
    tool_calls: bool,
}

/// Reshapes an agent's stream chunk by chunk, and closes it the way OpenAI's streams close.
#[derive(Debug)]
pub struct ChunkShaper {
    id: String,
    model: String,
    created: i64,
    choices: BTreeMap<u64, ChoiceState>,
}

impl ChunkShaper {
    /// A shaper for one relayed stream: `id` is Gavel's job id, `model` the serving agent's
    /// slug, `created` the job's start in Unix seconds.
    pub fn new(id: String, model: String, created: i64) -> ChunkShaper {
        ChunkShaper { id, model, created, choices: BTreeMap::new() }
    }

    /// Rewrites one agent chunk that carries choices into the caller's chunk.
    pub fn shape(&mut self, mut chunk: Map<String, Value>) -> Value {
        chunk.remove("usage");
        if let Some(Value::Array(choices)) = chunk.get_mut("choices") {
            for (position, choice) in choices.iter_mut().enumerate() {
                let Value::Object(choice) = choice else { continue };
                let index = choice.get("index").and_then(Value::as_u64).unwrap_or(position as u64);
                choice.insert("index".into(), json!(index));
                let state = self.choices.entry(index).or_default();
                if choice
                    .get("delta")
                    .and_then(|d| d.get("tool_calls"))
                    .is_some_and(|calls| !calls.is_null())
                {
                    state.tool_calls = true;
                }
                let said = choice.get("finish_reason").and_then(Value::as_str).map(finish_reason);
                state.latest = said;
                if said.is_some() {
                    state.given = said;
                }
                choice.insert("finish_reason".into(), said.map_or(Value::Null, |s| json!(s)));
                choice.entry("delta").or_insert_with(|| json!({}));
            }
        }
        self.stamp(chunk)
    }

    /// Whether every choice seen so far ended with a `finish_reason` in its latest chunk.
    pub fn finished(&self) -> bool {
        !self.choices.is_empty() && self.choices.values().all(|c| c.latest.is_some())
    }

    /// The chunk that ends the choices the agent left open, if any: an empty delta with the
    /// `finish_reason` the agent gave earlier, else `tool_calls` after tool-call deltas, else
    /// `stop`.
    pub fn closing(&mut self) -> Option<Value> {
        let open: Vec<Value> = self
            .choices
            .iter_mut()
            .filter(|(_, state)| state.latest.is_none())
            .map(|(index, state)| {
                let reason =
                    state.given.unwrap_or(if state.tool_calls { "tool_calls" } else { "stop" });
                state.latest = Some(reason);
                json!({"index": index, "delta": {}, "finish_reason": reason})
            })
            .collect();
        if open.is_empty() {
            return None;
        }
        Some(self.stamp(Map::from_iter([("choices".to_owned(), Value::Array(open))])))
    }

    /// The closing usage chunk OpenAI sends when `stream_options.include_usage` is set.
    pub fn usage(&self, prompt: u64, completion: u64, cost: f64) -> Value {
        self.stamp(Map::from_iter([
            ("choices".to_owned(), json!([])),
            (
                "usage".to_owned(),
                json!({
                    "prompt_tokens": prompt,
                    "completion_tokens": completion,
                    "total_tokens": prompt.saturating_add(completion),
                    "cost": cost,
                }),
            ),
        ]))
    }

    fn stamp(&self, mut chunk: Map<String, Value>) -> Value {
        chunk.insert("id".into(), json!(self.id));
        chunk.insert("object".into(), json!("chat.completion.chunk"));
        chunk.insert("created".into(), json!(self.created));
        chunk.insert("model".into(), json!(self.model));
        Value::Object(chunk)
    }
}

/// Reshapes an agent's complete chat answer: `object`, `created` when missing, and each
/// choice's `finish_reason` in OpenAI's words (`stop`, or `tool_calls` when the message calls
/// tools, if the agent gave none). `id` and `model` are the caller's to set.
pub fn shape_completion(body: &mut Map<String, Value>, created: i64) {
    body.insert("object".into(), json!("chat.completion"));
    if !body.get("created").is_some_and(Value::is_i64) {
        body.insert("created".into(), json!(created));
    }
    let Some(Value::Array(choices)) = body.get_mut("choices") else { return };
    for (position, choice) in choices.iter_mut().enumerate() {
        let Value::Object(choice) = choice else { continue };
        choice.entry("index").or_insert_with(|| json!(position));
        let calls_tools = choice
            .get("message")
            .and_then(|m| m.get("tool_calls"))
            .and_then(Value::as_array)
            .is_some_and(|calls| !calls.is_empty());
        let reason = match choice.get("finish_reason").and_then(Value::as_str) {
            Some(said) => finish_reason(said),
            None if calls_tools => "tool_calls",
            None => "stop",
        };
        choice.insert("finish_reason".into(), json!(reason));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(map) => map,
            _ => unreachable!("tests pass objects"),
        }
    }

    fn shaper() -> ChunkShaper {
        ChunkShaper::new("job-1".into(), "acme/chat".into(), 1_700_000_000)
    }

    #[test]
    fn a_stream_without_finish_reason_is_closed_with_stop() {
        let mut shaper = shaper();
        let out = shaper.shape(chunk(json!({"choices": [{"delta": {"content": "Hi"}}]})));
        assert_eq!(out["id"], "job-1");
        assert_eq!(out["object"], "chat.completion.chunk");
        assert_eq!(out["created"], 1_700_000_000);
        assert_eq!(out["model"], "acme/chat");
        assert_eq!(out["choices"][0]["index"], 0);
        assert_eq!(out["choices"][0]["finish_reason"], Value::Null);
        assert!(!shaper.finished());
        let closing = shaper.closing().expect("an open choice is closed");
        assert_eq!(closing["choices"], json!([{"index": 0, "delta": {}, "finish_reason": "stop"}]));
        assert_eq!(closing["created"], 1_700_000_000);
        assert!(shaper.finished());
        assert_eq!(shaper.closing(), None, "closed once");
    }

    #[test]
    fn an_agent_finish_reason_is_kept_in_openai_words_and_nothing_is_added() {
        let mut shaper = shaper();
        shaper.shape(chunk(json!({"choices": [{"index": 0, "delta": {"content": "a"}}]})));
        let out = shaper.shape(chunk(
            json!({"choices": [{"index": 0, "delta": {}, "finish_reason": "max_tokens"}]}),
        ));
        assert_eq!(out["choices"][0]["finish_reason"], "length");
        assert!(shaper.finished());
        assert_eq!(shaper.closing(), None);
    }

    #[test]
    fn content_after_a_finish_reason_reopens_the_choice_and_keeps_the_agents_reason() {
        let mut shaper = shaper();
        shaper.shape(chunk(
            json!({"choices": [{"delta": {"content": "a"}, "finish_reason": "end_turn"}]}),
        ));
        shaper
            .shape(chunk(json!({"choices": [{"delta": {"content": "b"}, "finish_reason": null}]})));
        let closing = shaper.closing().unwrap();
        assert_eq!(closing["choices"][0]["finish_reason"], "stop");
        let mut shaper = ChunkShaper::new("j".into(), "m".into(), 0);
        shaper.shape(chunk(json!({"choices": [{"delta": {}, "finish_reason": "length"}]})));
        shaper.shape(chunk(json!({"choices": [{"delta": {}}]})));
        assert_eq!(shaper.closing().unwrap()["choices"][0]["finish_reason"], "length");
    }

    #[test]
    fn tool_call_deltas_close_with_tool_calls() {
        let mut shaper = shaper();
        shaper.shape(chunk(json!({"choices": [{"index": 0, "delta": {"tool_calls": [
            {"index": 0, "id": "call_1", "type": "function", "function": {"name": "f", "arguments": ""}}]}}]})));
        let closing = shaper.closing().unwrap();
        assert_eq!(closing["choices"][0]["finish_reason"], "tool_calls");
    }

    #[test]
    fn every_open_choice_is_closed() {
        let mut shaper = shaper();
        shaper.shape(chunk(json!({"choices": [
            {"index": 0, "delta": {"content": "a"}},
            {"index": 1, "delta": {"content": "b"}, "finish_reason": "stop"}]})));
        let closing = shaper.closing().unwrap();
        assert_eq!(closing["choices"], json!([{"index": 0, "delta": {}, "finish_reason": "stop"}]));
    }

    #[test]
    fn the_usage_chunk_has_no_choices_and_a_numeric_cost() {
        let usage = shaper().usage(9, 2, 3.5);
        assert_eq!(usage["choices"], json!([]));
        assert_eq!(
            usage["usage"],
            json!({"prompt_tokens": 9, "completion_tokens": 2, "total_tokens": 11, "cost": 3.5})
        );
        assert_eq!(usage["object"], "chat.completion.chunk");
    }

    #[test]
    fn a_complete_answer_gets_openai_fields() {
        let mut body = chunk(json!({"choices": [
            {"message": {"role": "assistant", "content": "x"}, "finish_reason": null},
            {"message": {"role": "assistant", "tool_calls": [{"id": "c"}]}},
            {"index": 2, "message": {}, "finish_reason": "eos"}]}));
        shape_completion(&mut body, 42);
        assert_eq!(body["object"], "chat.completion");
        assert_eq!(body["created"], 42);
        let reasons: Vec<&Value> = (0..3).map(|i| &body["choices"][i]["finish_reason"]).collect();
        assert_eq!(reasons, [&json!("stop"), &json!("tool_calls"), &json!("stop")]);
        assert_eq!(body["choices"][1]["index"], 1);
        let mut body = chunk(json!({"created": 7, "object": "something", "choices": []}));
        shape_completion(&mut body, 42);
        assert_eq!(
            (body["created"].as_i64(), body["object"].as_str()),
            (Some(7), Some("chat.completion"))
        );
    }

    #[test]
    fn unknown_finish_reasons_map_to_openai_words() {
        for (said, expected) in [
            ("stop", "stop"),
            ("end_turn", "stop"),
            ("weird", "stop"),
            ("max_tokens", "length"),
            ("tool_use", "tool_calls"),
            ("function_call", "function_call"),
            ("safety", "content_filter"),
            ("content_filter", "content_filter"),
        ] {
            assert_eq!(finish_reason(said), expected, "{said}");
        }
    }
}
