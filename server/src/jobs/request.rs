//! Parsing what a caller sends into a `JobRequest`: the OpenAI chat body with Gavel's
//! extensions (`models`, `provider`, `auction`), or a `/v1/jobs` body. Every refusal names the
//! field (`auction.max_price`, `provider.sort`...).

use auction_engine::{MicroCredits, Objective, Routing, SortBy};
use registry::jobs::JobKind;
use serde::Deserialize;
use serde_json::{Map, Value};
use utoipa::ToSchema;

use crate::error::ApiError;
use crate::input::{decimal_text, parse_body};
use crate::vocabulary::{
    CategoryWord, ModeWord, ObjectiveWord, RoleWord, SortWord, credits_schema,
};

/// Largest `max_tokens` a caller may ask for.
pub const MAX_TOKENS_CEILING: u64 = 1_000_000;
/// Expected output tokens when the caller gives no `max_tokens`.
pub const DEFAULT_OUTPUT_TOKENS: u64 = 1024;
/// Most agents a caller may name in `models` or a `provider` list.
const MAX_NAMED_AGENTS: usize = 100;
/// Longest agent slug a caller may name (`handle/name`).
const MAX_NAME_LEN: usize = 200;
/// Most features or regions a caller may require.
const MAX_TAGS: usize = 32;
/// Longest feature or region name.
const MAX_TAG_LEN: usize = 64;

/// Every list a caller sends is capped, and every string in it: a request is a few kilobytes
/// of intent, and what it names ends up in the auction's record.
fn bounded(field: &str, list: &[String], most: usize, longest: usize) -> Result<(), ApiError> {
    if list.len() > most {
        return Err(ApiError::validation(field, format!("may hold at most {most} entries")));
    }
    if let Some(idx) = list.iter().position(|item| item.is_empty() || item.len() > longest) {
        return Err(ApiError::validation(
            format!("{field}[{idx}]"),
            format!("must be 1 to {longest} characters"),
        ));
    }
    Ok(())
}

/// Most messages in one chat request.
const MAX_MESSAGES: usize = 2_048;

/// One chat message, as OpenAI accepts it: an object with a known `role` and a `content` that
/// is a string, an array of parts, or null (an assistant's tool call). A malformed message is
/// refused here, naming it, rather than sent to an agent that would refuse it.
fn check_message(idx: usize, message: &Value) -> Result<(), ApiError> {
    let field = |name: &str| format!("messages[{idx}]{name}");
    let Value::Object(message) = message else {
        return Err(ApiError::validation(field(""), "must be an object with `role` and `content`"));
    };
    match message.get("role").and_then(Value::as_str) {
        Some("system" | "developer" | "user" | "assistant" | "tool" | "function") => {}
        Some(other) => {
            return Err(ApiError::validation(
                field(".role"),
                format!(
                    "`{}` is not one of: system, developer, user, assistant, tool, function",
                    other.chars().take(40).collect::<String>()
                ),
            ));
        }
        None => return Err(ApiError::validation(field(".role"), "is required, a string")),
    }
    match message.get("content") {
        Some(Value::String(_) | Value::Array(_) | Value::Null) | None => Ok(()),
        Some(_) => Err(ApiError::validation(
            field(".content"),
            "must be a string, an array of content parts, or null",
        )),
    }
}

/// Largest `top_k` for recommendations.
const MAX_TOP_K: usize = 50;

/// Execute the job, or only say who would win.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Execute,
    Recommend,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Execute => "execute",
            Mode::Recommend => "recommend",
        }
    }
}

/// Which agents may compete.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// Every agent of the category.
    Category,
    /// These agents, in this order (a named agent plus its `models` fallbacks).
    Direct(Vec<String>),
}

/// What the job sends to the agent that wins.
#[derive(Clone, Debug)]
pub enum Payload {
    /// An OpenAI chat body without Gavel's extensions; `model` is replaced per agent.
    Chat(Map<String, Value>),
    /// Any JSON, POSTed as is.
    Json(Value),
}

/// A parsed job request.
#[derive(Clone, Debug)]
pub struct JobRequest {
    pub kind: JobKind,
    pub category: String,
    pub requested_model: String,
    pub target: Target,
    pub max_price: Option<MicroCredits>,
    pub objective: Objective,
    pub routing: Routing,
    pub allow_fallbacks: bool,
    pub only: Vec<String>,
    pub ignore: Vec<String>,
    pub regions: Vec<String>,
    pub required_features: Vec<String>,
    pub max_latency_ms: Option<u32>,
    pub min_reputation: Option<f64>,
    pub mode: Mode,
    pub top_k: usize,
    pub input_tokens: u64,
    pub output_tokens: u64,
    /// The most output tokens an agent may bill: the caller's `max_tokens`, else the ceiling.
    pub max_output_tokens: u64,
    pub payload: Payload,
    /// Relay the answer as server-sent events.
    pub stream: bool,
    /// The caller asked for a closing usage chunk (`stream_options.include_usage`).
    pub include_usage: bool,
    /// The batch line this job runs, when a batch worker runs it (never from a request body).
    pub batch_line: Option<BatchLineRef>,
    /// A batch auction's line: each agent's final batch bid, used instead of asking for live
    /// bids (never from a request body).
    pub batch_bids: Option<std::collections::HashMap<uuid::Uuid, MicroCredits>>,
}

/// A batch line a job runs: its id, and its share of the batch's reservation when the line's
/// claim saw it still held (the job's hold draws on it first).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchLineRef {
    pub id: uuid::Uuid,
    pub share: Option<MicroCredits>,
}

/// OpenRouter's routing controls.
#[derive(Deserialize, Default, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProviderBody {
    /// Try these agents, in this order, instead of the auction's ranking.
    #[schema(max_items = 100)]
    order: Option<Vec<String>>,
    /// Only these agents may compete.
    #[schema(max_items = 100)]
    only: Option<Vec<String>>,
    /// These agents may not compete.
    #[schema(max_items = 100)]
    ignore: Option<Vec<String>>,
    allow_fallbacks: Option<bool>,
    #[schema(value_type = Option<SortWord>)]
    sort: Option<String>,
    #[schema(schema_with = credits_schema)]
    max_price: Option<Value>,
}

/// What an agent must have to compete.
#[derive(Deserialize, Default, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RequireBody {
    #[schema(max_items = 32)]
    features: Option<Vec<String>>,
    #[schema(max_items = 32)]
    regions: Option<Vec<String>>,
    max_latency_ms: Option<u32>,
    #[schema(minimum = 0, maximum = 1)]
    min_reputation: Option<f64>,
}

/// Gavel's auction controls.
#[derive(Deserialize, Default, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AuctionBody {
    /// The most the caller will pay the agent; the auction never clears above it.
    #[schema(schema_with = credits_schema)]
    max_price: Option<Value>,
    #[schema(value_type = Option<ObjectiveWord>)]
    objective: Option<String>,
    /// `recommend` runs the auction only and returns the shortlist.
    #[schema(value_type = Option<ModeWord>)]
    mode: Option<String>,
    /// The shortlist's length in `recommend` mode (default 5).
    #[schema(minimum = 1, maximum = 50)]
    top_k: Option<usize>,
    require: Option<RequireBody>,
}

/// `POST /v1/jobs`: any JSON job for the agents of a category.
#[derive(Deserialize, ToSchema)]
#[schema(example = json!({"category": "ocr", "input": {"image_url": "https://example.com/receipt.png"}}))]
#[serde(deny_unknown_fields)]
pub struct JobBody {
    #[schema(value_type = CategoryWord)]
    category: String,
    /// Any JSON: POSTed to the winning agent as is.
    input: Value,
    /// Name one agent (its slug) instead of holding an auction.
    agent: Option<String>,
    auction: Option<AuctionBody>,
    provider: Option<ProviderBody>,
}

/// One chat message, as OpenAI accepts it. Fields beyond `role` and `content` (`name`,
/// `tool_calls`, `tool_call_id`, ...) are passed to the agent.
#[derive(ToSchema)]
#[expect(dead_code, reason = "describes the wire format; messages are checked as JSON values")]
pub struct ChatMessage {
    #[schema(value_type = RoleWord)]
    role: String,
    /// A string, an array of content parts, or null (an assistant's tool call).
    content: Option<Value>,
}

#[derive(ToSchema)]
#[expect(dead_code, reason = "describes the wire format; the body is read as a JSON object")]
pub struct StreamOptions {
    /// Send a closing chunk with the usage and its cost.
    include_usage: Option<bool>,
}

/// `POST /v1/chat/completions`: OpenAI's body plus Gavel's `models`, `provider` and
/// `auction`. Every field not listed here (`temperature`, `tools`, `response_format`, ...) is
/// passed to the agent as sent. `parse_chat` reads these fields from the body's JSON object,
/// because the rest must reach the agent untouched.
#[derive(ToSchema)]
#[expect(dead_code, reason = "describes the wire format; `parse_chat` reads the JSON object")]
pub struct ChatCompletionRequest {
    /// `auction`, `auction/<category>`, or an agent's slug.
    #[schema(min_length = 1, max_length = 200, example = "auction")]
    model: String,
    #[schema(min_items = 1, max_items = 2048)]
    messages: Vec<ChatMessage>,
    /// Fallback agents (slugs) after `model`.
    #[schema(max_items = 100)]
    models: Option<Vec<String>>,
    stream: Option<bool>,
    stream_options: Option<StreamOptions>,
    #[schema(minimum = 1, maximum = 1000000)]
    max_tokens: Option<u64>,
    #[schema(minimum = 1, maximum = 1000000)]
    max_completion_tokens: Option<u64>,
    provider: Option<ProviderBody>,
    auction: Option<AuctionBody>,
}

/// Parses a chat completion request body.
pub fn parse_chat(mut body: Map<String, Value>) -> Result<JobRequest, ApiError> {
    let model = match body.remove("model") {
        Some(Value::String(model)) if !model.is_empty() && model.len() <= 200 => model,
        Some(_) => {
            return Err(ApiError::validation(
                "model",
                "must be a non-empty string of at most 200 characters",
            ));
        }
        None => {
            return Err(ApiError::validation(
                "model",
                "is required (\"auction\", \"auction/<category>\" or an agent slug)",
            ));
        }
    };
    match body.get("messages") {
        Some(Value::Array(messages)) if !messages.is_empty() && messages.len() <= MAX_MESSAGES => {
            for (idx, message) in messages.iter().enumerate() {
                check_message(idx, message)?;
            }
        }
        _ => {
            return Err(ApiError::validation(
                "messages",
                format!("must be a non-empty array of at most {MAX_MESSAGES} messages"),
            ));
        }
    }
    let stream = match body.get("stream") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(stream)) => *stream,
        Some(_) => return Err(ApiError::validation("stream", "must be true or false")),
    };
    let include_usage = match body.get("stream_options") {
        None | Some(Value::Null) => false,
        Some(Value::Object(options)) => match options.get("include_usage") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(include)) => *include,
            Some(_) => {
                return Err(ApiError::validation(
                    "stream_options.include_usage",
                    "must be true or false",
                ));
            }
        },
        Some(_) => return Err(ApiError::validation("stream_options", "must be an object")),
    };
    let fallbacks = match body.remove("models") {
        None | Some(Value::Null) => Vec::new(),
        Some(value) => parse_body::<Vec<String>>(value)
            .map_err(|_| ApiError::validation("models", "must be a list of agent slugs"))?,
    };
    bounded("models", &fallbacks, MAX_NAMED_AGENTS, MAX_NAME_LEN)?;
    let provider: ProviderBody = take_object(&mut body, "provider")?;
    let auction: AuctionBody = take_object(&mut body, "auction")?;
    let asked_tokens = body.get("max_completion_tokens").or_else(|| body.get("max_tokens"));
    let max_output_tokens = asked_tokens.and_then(Value::as_u64).unwrap_or(MAX_TOKENS_CEILING);
    let output_tokens = match asked_tokens {
        None | Some(Value::Null) => DEFAULT_OUTPUT_TOKENS,
        Some(value) => {
            value.as_u64().filter(|n| (1..=MAX_TOKENS_CEILING).contains(n)).ok_or_else(|| {
                ApiError::validation(
                    "max_tokens",
                    format!("must be an integer from 1 to {MAX_TOKENS_CEILING}"),
                )
            })?
        }
    };
    let input_tokens = estimate_tokens(body.get("messages").unwrap_or(&Value::Null));
    let (category, target) = match model.strip_prefix("auction") {
        Some("") => ("chat".to_owned(), Target::Category),
        Some(rest) if rest.starts_with('/') => {
            let category = rest[1..].to_owned();
            if !registry::agents::CATEGORIES.contains(&category.as_str()) {
                return Err(ApiError::validation(
                    "model",
                    format!("`{category}` is not a category"),
                ));
            }
            (category, Target::Category)
        }
        _ => {
            let mut slugs = vec![model.clone()];
            slugs.extend(fallbacks);
            ("chat".to_owned(), Target::Direct(slugs))
        }
    };
    let mut job = build(
        JobKind::Chat,
        category,
        model,
        target,
        provider,
        auction,
        input_tokens,
        output_tokens,
        Payload::Chat(body),
    )?;
    job.stream = stream;
    job.include_usage = include_usage;
    job.max_output_tokens = max_output_tokens.min(MAX_TOKENS_CEILING);
    Ok(job)
}

/// Parses a `/v1/jobs` body.
pub fn parse_job(value: Value) -> Result<JobRequest, ApiError> {
    let body: JobBody = parse_body(value)?;
    if !registry::agents::CATEGORIES.contains(&body.category.as_str()) {
        return Err(ApiError::validation(
            "category",
            format!(
                "`{}` is not one of: {}",
                body.category,
                registry::agents::CATEGORIES.join(", ")
            ),
        ));
    }
    let (requested_model, target) = match body.agent {
        Some(slug) => (slug.clone(), Target::Direct(vec![slug])),
        None => (format!("auction/{}", body.category), Target::Category),
    };
    let input_tokens = estimate_tokens(&body.input);
    build(
        JobKind::Json,
        body.category,
        requested_model,
        target,
        body.provider.unwrap_or_default(),
        body.auction.unwrap_or_default(),
        input_tokens,
        0,
        Payload::Json(body.input),
    )
}

#[expect(clippy::too_many_arguments, reason = "one private assembly step shared by both routes")]
fn build(
    kind: JobKind,
    category: String,
    requested_model: String,
    target: Target,
    provider: ProviderBody,
    auction: AuctionBody,
    input_tokens: u64,
    output_tokens: u64,
    payload: Payload,
) -> Result<JobRequest, ApiError> {
    let auction_max = price("auction.max_price", auction.max_price)?;
    let provider_max = price("provider.max_price", provider.max_price)?;
    let max_price = match (auction_max, provider_max) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    let objective = match auction.objective.as_deref() {
        None | Some("balanced") => Objective::Balanced,
        Some("cost") => Objective::Cost,
        Some("quality") => Objective::Quality,
        Some("latency") => Objective::Latency,
        Some(other) => {
            return Err(ApiError::validation(
                "auction.objective",
                format!("`{other}` is not one of: balanced, cost, quality, latency"),
            ));
        }
    };
    let mode = match auction.mode.as_deref() {
        None | Some("execute") => Mode::Execute,
        Some("recommend") => Mode::Recommend,
        Some(other) => {
            return Err(ApiError::validation(
                "auction.mode",
                format!("`{other}` is not one of: execute, recommend"),
            ));
        }
    };
    let top_k = auction.top_k.unwrap_or(5);
    if !(1..=MAX_TOP_K).contains(&top_k) {
        return Err(ApiError::validation(
            "auction.top_k",
            format!("must be from 1 to {MAX_TOP_K}"),
        ));
    }
    let sort = match provider.sort.as_deref() {
        None => None,
        Some("price") => Some(SortBy::Price),
        Some("latency") => Some(SortBy::Latency),
        Some("throughput") | Some("reputation") => Some(SortBy::Reputation),
        Some(other) => {
            return Err(ApiError::validation(
                "provider.sort",
                format!("`{other}` is not one of: price, latency, reputation"),
            ));
        }
    };
    let routing = match (&target, provider.order, sort) {
        (Target::Direct(slugs), _, _) => Routing::Order(slugs.clone()),
        (_, Some(order), _) if !order.is_empty() => Routing::Order(order),
        (_, _, Some(sort)) => Routing::Sort(sort),
        _ => Routing::Auction,
    };
    let require = auction.require.unwrap_or_default();
    if let Some(min) = require.min_reputation
        && !(0.0..=1.0).contains(&min)
    {
        return Err(ApiError::validation("auction.require.min_reputation", "must be from 0 to 1"));
    }
    let mut only = provider.only.unwrap_or_default();
    if let Target::Direct(slugs) = &target {
        only.extend(slugs.iter().cloned());
    }
    bounded("provider.only", &only, MAX_NAMED_AGENTS, MAX_NAME_LEN)?;
    let ignore = provider.ignore.unwrap_or_default();
    bounded("provider.ignore", &ignore, MAX_NAMED_AGENTS, MAX_NAME_LEN)?;
    if let Routing::Order(order) = &routing {
        let field = if matches!(target, Target::Direct(_)) { "models" } else { "provider.order" };
        bounded(field, order, MAX_NAMED_AGENTS, MAX_NAME_LEN)?;
    }
    let regions = require.regions.unwrap_or_default();
    bounded("auction.require.regions", &regions, MAX_TAGS, MAX_TAG_LEN)?;
    let required_features = require.features.unwrap_or_default();
    bounded("auction.require.features", &required_features, MAX_TAGS, MAX_TAG_LEN)?;
    Ok(JobRequest {
        kind,
        category,
        requested_model,
        target,
        max_price,
        objective,
        routing,
        allow_fallbacks: provider.allow_fallbacks.unwrap_or(true),
        only,
        ignore,
        regions,
        required_features,
        max_latency_ms: require.max_latency_ms,
        min_reputation: require.min_reputation,
        mode,
        top_k,
        input_tokens,
        output_tokens,
        payload,
        stream: false,
        include_usage: false,
        max_output_tokens: MAX_TOKENS_CEILING,
        batch_line: None,
        batch_bids: None,
    })
}

fn take_object<T: serde::de::DeserializeOwned + Default>(
    body: &mut Map<String, Value>,
    field: &'static str,
) -> Result<T, ApiError> {
    match body.remove(field) {
        None | Some(Value::Null) => Ok(T::default()),
        Some(value) => serde_path_to_error::deserialize(value).map_err(|err| {
            let path = err.path().to_string();
            let message = err.into_inner().to_string();
            let name = if path == "." { field.to_owned() } else { format!("{field}.{path}") };
            ApiError::validation(name, message)
        }),
    }
}

/// A price in credits (a decimal string or a number) at `field`: not negative, at most a
/// million credits.
pub(crate) fn price(
    field: &'static str,
    value: Option<Value>,
) -> Result<Option<MicroCredits>, ApiError> {
    let Some(text) = decimal_text(field, value)? else { return Ok(None) };
    let amount = MicroCredits::parse_decimal(&text)
        .map_err(|e| ApiError::validation(field, e.to_string()))?;
    if amount.is_negative() {
        return Err(ApiError::validation(field, "must not be negative"));
    }
    // The same bound as a price sheet's: no job is worth more, and `/openapi.json` says so.
    if amount > MicroCredits::from_micros(1_000_000 * 1_000_000) {
        return Err(ApiError::validation(field, "must be at most 1000000 credits"));
    }
    Ok(Some(amount))
}

impl JobRequest {
    /// The usage Gavel settles on and shows: what the agent reported, clamped to what the job
    /// could have used (completion to `max_tokens`, prompt to twice the estimate plus a margin,
    /// since real tokenizers run from about two to six characters a token). An agent cannot
    /// inflate its bill by reporting more.
    pub fn validated_usage(&self, reported: (u64, u64)) -> (u64, u64) {
        let prompt_bound = self.input_tokens.saturating_mul(2).saturating_add(64);
        (reported.0.min(prompt_bound), reported.1.min(self.max_output_tokens))
    }
}

/// About four characters per token: what the auction ranks token prices on. Settlement uses
/// the agent's reported usage when it gives one.
fn estimate_tokens(value: &Value) -> u64 {
    fn chars(value: &Value) -> usize {
        match value {
            Value::String(text) => text.len(),
            Value::Array(items) => items.iter().map(chars).sum(),
            Value::Object(map) => map.values().map(chars).sum(),
            _ => 0,
        }
    }
    (chars(value) as u64).div_ceil(4)
}
