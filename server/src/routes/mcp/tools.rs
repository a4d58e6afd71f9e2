//! The MCP tools: a job by auction, a recommendation, a job on named agents, discovery, the
//! balance and a past job's record.
//!
//! Each job tool turns its arguments into the body `/v1` would take (`/v1/chat/completions`
//! for `prompt`/`messages`, `/v1/jobs` for `input`) and parses it with the same parser, then
//! runs it with [`run_job`]: an MCP auction is the same job as an HTTP one, charged, recorded
//! and listed in activity the same way. A failure the calling model can act on (credits
//! short, nobody eligible under `max_price`, a bad field) comes back as a tool result with
//! `isError` whose text names the cause, not as a protocol error.

use actix_web::web;
use registry::agents::Agent;
use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{Implementation, ServerCapabilities, ServerConfig};
use rmcp::service::RequestContext;
use rmcp::{Json, RoleServer, ServerHandler, tool, tool_handler, tool_router};
use rmcp_actix_web::transport::on_request_extensions;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use uuid::Uuid;

use crate::auth::Caller;
use crate::discovery::{DiscoveryFilter, discover_agents};
use crate::error::ApiError;
use crate::jobs::request::{self, JobRequest};
use crate::jobs::service::{JobResult, Shortlisted, run_job};
use crate::routes::agents::{ReputationView, status_word};
use crate::routes::records::{AuctionRecord, auction_record};
use crate::state::AppState;

/// What a tool that failed says: the error's code, its message, and the field at fault.
type ToolError = String;

/// The MCP server of one request (rmcp builds one per request: nothing is kept between them).
#[derive(Clone)]
pub(crate) struct GavelTools {
    tool_router: ToolRouter<GavelTools>,
}

/// Requirements an agent must meet to compete.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Requirements {
    /// Features the agent must declare (e.g. `json_mode`).
    features: Option<Vec<String>>,
    /// Regions the agent must run in.
    regions: Option<Vec<String>>,
    /// The slowest declared latency accepted, in milliseconds.
    max_latency_ms: Option<u32>,
    /// The lowest reputation accepted, from 0 to 1.
    min_reputation: Option<f64>,
}

/// A job by auction: what it sends the winner, the most it may cost, how the winner is chosen.
///
/// The three job tools take overlapping arguments, each declared in full: serde cannot refuse
/// unknown fields through `#[serde(flatten)]`, and a misspelt argument must be an error, not a
/// default (a `max_prise` ignored would spend more than the caller meant).
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct AuctionArgs {
    /// For chat agents: the user's message (or give `messages`).
    prompt: Option<String>,
    /// For chat agents: an OpenAI-style conversation, `[{"role": "user", "content": "..."}]`.
    messages: Option<Vec<Value>>,
    /// For JSON agents (OCR, scrapers, ...): any JSON, posted to the agent as is. Needs
    /// `category`.
    input: Option<Value>,
    /// The market to run in (`chat` by default for `prompt`/`messages`).
    category: Option<String>,
    /// The most you will pay the agent, in credits (a decimal string such as "0.5", or a
    /// number). The auction never clears above it.
    #[schemars(with = "Option<CreditsArg>")]
    max_price: Option<Value>,
    /// For chat agents: the most output tokens to bill.
    max_tokens: Option<u64>,
    /// What the auction optimises: `balanced` (default), `cost`, `quality` or `latency`.
    objective: Option<String>,
    /// Requirements an agent must meet.
    require: Option<Requirements>,
}

/// A number of credits: a decimal string or a number.
#[derive(JsonSchema)]
#[serde(untagged)]
#[expect(dead_code, reason = "describes the argument's JSON Schema only")]
enum CreditsArg {
    Text(String),
    Number(f64),
}

/// A recommendation: `gavel_auction`'s arguments and the shortlist's length.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RecommendArgs {
    /// For chat agents: the user's message (or give `messages`).
    prompt: Option<String>,
    /// For chat agents: an OpenAI-style conversation.
    messages: Option<Vec<Value>>,
    /// For JSON agents: the JSON the job would send. Needs `category`.
    input: Option<Value>,
    /// The market (`chat` by default for `prompt`/`messages`).
    category: Option<String>,
    /// The most you would pay the agent, in credits.
    #[schemars(with = "Option<CreditsArg>")]
    max_price: Option<Value>,
    /// For chat agents: the most output tokens that would be billed.
    max_tokens: Option<u64>,
    /// `balanced` (default), `cost`, `quality` or `latency`.
    objective: Option<String>,
    /// Requirements an agent must meet.
    require: Option<Requirements>,
    /// How many agents to list, best first (1 to 50, default 5).
    top_k: Option<usize>,
}

/// A job on named agents, in order, without an auction.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RouteArgs {
    /// The agent's slug (from `gavel_discover`).
    agent: String,
    /// Agents to try next if it fails, in order.
    fallbacks: Option<Vec<String>>,
    /// For chat agents: the user's message (or give `messages`).
    prompt: Option<String>,
    /// For chat agents: an OpenAI-style conversation.
    messages: Option<Vec<Value>>,
    /// For JSON agents: any JSON, posted to the agent as is. Needs `category`.
    input: Option<Value>,
    /// The market of a JSON job (`chat` by default for `prompt`/`messages`).
    category: Option<String>,
    /// The most you will pay, in credits.
    #[schemars(with = "Option<CreditsArg>")]
    max_price: Option<Value>,
    /// For chat agents: the most output tokens to bill.
    max_tokens: Option<u64>,
}

impl RecommendArgs {
    fn into_auction(self) -> (AuctionArgs, usize) {
        let auction = AuctionArgs {
            prompt: self.prompt,
            messages: self.messages,
            input: self.input,
            category: self.category,
            max_price: self.max_price,
            max_tokens: self.max_tokens,
            objective: self.objective,
            require: self.require,
        };
        (auction, self.top_k.unwrap_or(5))
    }
}

impl RouteArgs {
    /// The job, and the agents named for it in order.
    fn into_auction(self) -> (AuctionArgs, Vec<String>) {
        let mut named = vec![self.agent];
        named.extend(self.fallbacks.unwrap_or_default());
        let auction = AuctionArgs {
            prompt: self.prompt,
            messages: self.messages,
            input: self.input,
            category: self.category,
            max_price: self.max_price,
            max_tokens: self.max_tokens,
            ..AuctionArgs::default()
        };
        (auction, named)
    }
}

/// Search public agents.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct DiscoverArgs {
    /// Only agents of this category.
    category: Option<String>,
    /// Words to find in an agent's slug, description or tags.
    text: Option<String>,
    /// Only agents whose per-call price is at most this many credits.
    #[schemars(with = "Option<CreditsArg>")]
    max_price: Option<Value>,
    /// Only agents whose reputation score is at least this (0 to 1).
    min_reputation: Option<f64>,
    /// `newest` (default), `price` or `reputation`.
    sort: Option<String>,
    /// How many agents to list (1 to 100, default 20).
    limit: Option<usize>,
}

/// A past job, by id.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct JobArgs {
    /// The job's id (`job_id` of a `gavel_auction` or `gavel_route` result).
    id: String,
}

/// A job's result. Amounts are decimal strings of credits.
#[derive(Debug, Serialize, JsonSchema)]
pub(crate) struct JobOutput {
    /// The job's id, for `gavel_job`.
    job_id: Uuid,
    /// The auction's id (its audit record).
    auction_id: Uuid,
    /// The slug of the agent that delivered.
    winner: Option<String>,
    /// What the winning agent bid for this job.
    clearing_price: Option<String>,
    /// What you paid in all (the agent's price and the call fee).
    cost: String,
    /// For chat agents: the assistant's reply.
    text: Option<String>,
    /// The agent's whole answer (for chat agents, the completion).
    output: Value,
    /// How many agents competed.
    candidates: usize,
}

/// A recommendation: who would win, nothing executed.
#[derive(Debug, Serialize, JsonSchema)]
pub(crate) struct RecommendOutput {
    job_id: Uuid,
    auction_id: Uuid,
    /// What you paid (the call fee).
    cost: String,
    candidates: usize,
    /// Best first.
    shortlist: Vec<Shortlisted>,
}

/// Agents found by `gavel_discover`.
#[derive(Debug, Serialize, JsonSchema)]
pub(crate) struct DiscoverOutput {
    agents: Vec<DiscoveredAgent>,
    /// More agents matched than `limit`.
    has_more: bool,
}

/// One public agent.
#[derive(Debug, Serialize, JsonSchema)]
pub(crate) struct DiscoveredAgent {
    /// What to name in `gavel_route`.
    slug: String,
    name: String,
    description: String,
    /// `openai-chat` or `json`.
    kind: String,
    categories: Vec<String>,
    /// Credits per call.
    price_per_call: String,
    /// Credits per million input tokens.
    price_per_million_input_tokens: String,
    /// Credits per million output tokens.
    price_per_million_output_tokens: String,
    /// A lower bound on its success rate, 0 to 1: what the auction ranks by.
    reputation: f64,
    /// Its observed latency (moving average), in milliseconds.
    latency_ms: Option<f64>,
    /// `active`, `paused` or `circuit_open`.
    status: String,
}

/// The caller's wallet. Amounts are decimal strings of credits.
#[derive(Debug, Serialize, JsonSchema)]
pub(crate) struct BalanceOutput {
    balance: String,
    /// Reserved by jobs in flight.
    held: String,
    /// What the next job may spend.
    available: String,
    /// Credited on the first request of each month.
    monthly_grant: String,
}

/// A past job and its auction's transcript.
#[derive(Serialize, JsonSchema)]
pub(crate) struct JobRecordOutput {
    job_id: Uuid,
    /// `delivered`, `failed`, `recommended` or `running`.
    status: String,
    /// What the caller paid, in credits.
    cost: String,
    /// The agent that delivered.
    agent: Option<String>,
    error: Option<String>,
    /// The auction's whole record: every candidate with its bid, quality and score, or why it
    /// was excluded; the clearing price and its basis; the attempts and the settlement.
    #[schemars(with = "Value")]
    auction: AuctionRecord,
}

#[tool_router]
impl GavelTools {
    pub(crate) fn new() -> GavelTools {
        GavelTools { tool_router: GavelTools::tool_router() }
    }

    /// Runs a job by auction.
    #[tool(
        name = "gavel_auction",
        description = "Hire an AI agent through a sealed-bid auction and run the job. Give \
            `prompt` (or `messages`) for a chat agent, or `input` with a `category` for a JSON \
            agent (ocr, transcription, scraping, ...). The eligible agents compete on price, \
            reputation and your constraints; the winner runs the job, and if it fails the \
            next-ranked one does. Returns the output, the winner, the clearing price, what you \
            paid and the auction id. Costs the call fee plus the winner's price, never more \
            than `max_price` for the agent.",
        annotations(read_only_hint = false, destructive_hint = false, open_world_hint = true)
    )]
    async fn gavel_auction(
        &self,
        Parameters(args): Parameters<AuctionArgs>,
        context: RequestContext<RoleServer>,
    ) -> Result<Json<JobOutput>, ToolError> {
        let (state, caller) = admitted(&context)?;
        let job = job_request(&args, None, None).map_err(tool_error)?;
        let result =
            run_job(&state, crate::routes::payer(&caller), job).await.map_err(tool_error)?;
        job_output(&result).map(Json)
    }

    /// Ranks the agents without running anything.
    #[tool(
        name = "gavel_recommend",
        description = "Run the auction without executing the job: the ranked shortlist of \
            agents (bid, price, reputation, expected latency), best first. Takes the same \
            arguments as gavel_auction plus `top_k`. Costs the call fee only.",
        // Not read-only: it charges the call fee. Live bidders are asked for bids.
        annotations(read_only_hint = false, destructive_hint = false, open_world_hint = true)
    )]
    async fn gavel_recommend(
        &self,
        Parameters(args): Parameters<RecommendArgs>,
        context: RequestContext<RoleServer>,
    ) -> Result<Json<RecommendOutput>, ToolError> {
        let (state, caller) = admitted(&context)?;
        let (auction, top_k) = args.into_auction();
        let job = job_request(&auction, Some(top_k), None).map_err(tool_error)?;
        let result =
            run_job(&state, crate::routes::payer(&caller), job).await.map_err(tool_error)?;
        Ok(Json(RecommendOutput {
            job_id: result.job_id,
            auction_id: result.auction_id,
            cost: result.total_cost.to_string(),
            candidates: result.candidates,
            shortlist: result.shortlist.unwrap_or_default(),
        }))
    }

    /// Runs a job on a named agent, with fallbacks.
    #[tool(
        name = "gavel_route",
        description = "Run a job on a named agent (its slug, from gavel_discover), trying \
            `fallbacks` in order if it fails. No auction: the agent is paid its own price. \
            Give `prompt` (or `messages`) for a chat agent, or `input` with a `category` for a \
            JSON agent.",
        annotations(read_only_hint = false, destructive_hint = false, open_world_hint = true)
    )]
    async fn gavel_route(
        &self,
        Parameters(args): Parameters<RouteArgs>,
        context: RequestContext<RoleServer>,
    ) -> Result<Json<JobOutput>, ToolError> {
        let (state, caller) = admitted(&context)?;
        let (auction, named) = args.into_auction();
        // Here `/v1`'s `model` is the agent named, and `models` its fallbacks.
        let route_error = |err: ApiError| match err {
            ApiError::Validation { field, message } if field == "model" => {
                tool_error(ApiError::validation("agent", message))
            }
            other => tool_error(other),
        };
        let job = job_request(&auction, None, Some(&named)).map_err(route_error)?;
        let result =
            run_job(&state, crate::routes::payer(&caller), job).await.map_err(route_error)?;
        job_output(&result).map(Json)
    }

    /// Searches public agents.
    #[tool(
        name = "gavel_discover",
        description = "Search the marketplace's public agents by category, text, price and \
            reputation. Free.",
        annotations(read_only_hint = true, open_world_hint = false)
    )]
    async fn gavel_discover(
        &self,
        Parameters(args): Parameters<DiscoverArgs>,
        context: RequestContext<RoleServer>,
    ) -> Result<Json<DiscoverOutput>, ToolError> {
        let (state, _) = admitted(&context)?;
        let limit = args.limit.unwrap_or(20);
        if !(1..=100).contains(&limit) {
            return Err(tool_error(ApiError::validation("limit", "must be from 1 to 100")));
        }
        let max_price = match &args.max_price {
            None | Some(Value::Null) => None,
            Some(value) => request::price("max_price", Some(value.clone())).map_err(tool_error)?,
        };
        if let Some(min) = args.min_reputation
            && !(0.0..=1.0).contains(&min)
        {
            return Err(tool_error(ApiError::validation("min_reputation", "must be from 0 to 1")));
        }
        if args.text.as_ref().is_some_and(|text| text.len() > 200) {
            return Err(tool_error(ApiError::validation("text", "must be at most 200 characters")));
        }
        let filter = DiscoveryFilter {
            category: args.category,
            text: args.text,
            sort: args.sort,
            max_price,
            min_reputation: args.min_reputation,
        };
        let found = discover_agents(&state, filter).await.map_err(tool_error)?;
        let has_more = found.len() > limit;
        let agents = found.iter().take(limit).map(|agent| discovered(&state, agent)).collect();
        Ok(Json(DiscoverOutput { agents, has_more }))
    }

    /// The caller's credits.
    #[tool(
        name = "gavel_balance",
        description = "Your credits: balance, held by jobs in flight, available, and the free \
            monthly grant. Free.",
        annotations(read_only_hint = true, open_world_hint = false)
    )]
    async fn gavel_balance(
        &self,
        context: RequestContext<RoleServer>,
    ) -> Result<Json<BalanceOutput>, ToolError> {
        let (state, caller) = admitted(&context)?;
        let balance = state.bank.balance(caller.user_id).await.map_err(|e| tool_error(e.into()))?;
        Ok(Json(BalanceOutput {
            balance: balance.balance.to_string(),
            held: balance.held.to_string(),
            available: balance.available.to_string(),
            monthly_grant: state.monthly_grant().to_string(),
        }))
    }

    /// A past job and its transcript.
    #[tool(
        name = "gavel_job",
        description = "A past job of yours: its status, what it cost, and its auction's \
            transcript (every candidate with its bid, quality and score or why it was \
            excluded, the clearing price and why, each attempt, the settlement). Free.",
        annotations(read_only_hint = true, open_world_hint = false)
    )]
    async fn gavel_job(
        &self,
        Parameters(args): Parameters<JobArgs>,
        context: RequestContext<RoleServer>,
    ) -> Result<Json<JobRecordOutput>, ToolError> {
        let (state, caller) = admitted(&context)?;
        let not_found = || tool_error(ApiError::NotFound { what: "job" });
        let id = Uuid::parse_str(args.id.trim_start_matches("gen-")).map_err(|_| not_found())?;
        let job = registry::jobs::find_job(&state.db, caller.user_id, id)
            .await
            .map_err(|e| tool_error(e.into()))?
            .ok_or_else(not_found)?;
        let auction =
            auction_record(&state, caller.user_id, job.auction_id).await.map_err(tool_error)?;
        Ok(Json(JobRecordOutput {
            job_id: job.id,
            status: job.status,
            cost: job.total_cost.to_string(),
            agent: job.served.map(|s| s.agent_slug),
            error: job.error,
            auction,
        }))
    }
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for GavelTools {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("gavel", env!("CARGO_PKG_VERSION")))
            .with_instructions(
                "Gavel is a marketplace of AI agents. gavel_discover finds agents, \
                 gavel_recommend ranks them for a job without running it, gavel_auction hires \
                 the best one by auction and runs the job, gavel_route runs it on an agent you \
                 name, gavel_balance shows your credits and gavel_job a past job's record.",
            )
    }
}

/// The state and the caller `admit` let in. Absent only if the route were mounted without it.
fn admitted(
    context: &RequestContext<RoleServer>,
) -> Result<(web::Data<AppState>, Caller), ToolError> {
    let extensions = on_request_extensions(&context.extensions);
    let caller = extensions.and_then(|extensions| extensions.get::<Caller>()).copied();
    let state = extensions.and_then(|extensions| extensions.get::<web::Data<AppState>>()).cloned();
    match (state, caller) {
        (Some(state), Some(caller)) => Ok((state, caller)),
        _ => Err(tool_error(ApiError::Unauthenticated)),
    }
}

/// The tool error for `err`: its code and message, naming the argument at fault in the
/// tool's own terms (the job was parsed as a `/v1` body, whose field names differ).
fn tool_error(err: ApiError) -> ToolError {
    if let ApiError::Internal(cause) = &err {
        tracing::error!(error.cause_chain = %crate::error::CauseChain(cause.as_ref()), "internal error in an MCP tool");
    }
    let argument = err.param().map(argument_of);
    match (&err, argument) {
        (ApiError::Validation { message, .. }, Some(argument)) => {
            format!("{}: {argument}: {message}", err.code())
        }
        (_, Some(argument)) => format!("{}: {err} (because of `{argument}`)", err.code()),
        (_, None) => format!("{}: {err}", err.code()),
    }
}

/// The tool argument behind a `/v1` body field.
fn argument_of(field: &str) -> String {
    let field = field.strip_prefix("auction.").unwrap_or(field);
    match field {
        "model" => "category".to_owned(),
        "models" | "provider.order" | "provider.only" => "fallbacks".to_owned(),
        "provider.max_price" => "max_price".to_owned(),
        other => other.to_owned(),
    }
}

/// The `/v1` body for a tool's arguments, parsed by `/v1`'s own parser. `top_k` makes it a
/// recommendation; `named` runs it on those agents in order.
fn job_request(
    args: &AuctionArgs,
    top_k: Option<usize>,
    named: Option<&[String]>,
) -> Result<JobRequest, ApiError> {
    let work = args;
    let mut auction = Map::new();
    if let Some(max_price) = &work.max_price {
        auction.insert("max_price".into(), max_price.clone());
    }
    if let Some(objective) = &args.objective {
        auction.insert("objective".into(), json!(objective));
    }
    if let Some(top_k) = top_k {
        auction.insert("mode".into(), json!("recommend"));
        auction.insert("top_k".into(), json!(top_k));
    }
    if let Some(require) = &args.require {
        let mut wanted = Map::new();
        if let Some(features) = &require.features {
            wanted.insert("features".into(), json!(features));
        }
        if let Some(regions) = &require.regions {
            wanted.insert("regions".into(), json!(regions));
        }
        if let Some(latency) = require.max_latency_ms {
            wanted.insert("max_latency_ms".into(), json!(latency));
        }
        if let Some(min) = require.min_reputation {
            wanted.insert("min_reputation".into(), json!(min));
        }
        auction.insert("require".into(), Value::Object(wanted));
    }
    let chat = work.prompt.is_some() || work.messages.is_some();
    match (chat, &work.input) {
        (true, Some(_)) => Err(ApiError::validation(
            "input",
            "give either `prompt`/`messages` (a chat agent) or `input` (a JSON agent), not both",
        )),
        (false, None) => Err(ApiError::validation(
            "prompt",
            "is required: give `prompt` or `messages` (a chat agent) or `input` (a JSON agent)",
        )),
        (true, None) => {
            if work.prompt.is_some() && work.messages.is_some() {
                return Err(ApiError::validation(
                    "messages",
                    "give `prompt` or `messages`, not both",
                ));
            }
            let messages = match (&work.prompt, &work.messages) {
                (Some(prompt), _) => json!([{"role": "user", "content": prompt}]),
                (None, messages) => json!(messages),
            };
            let mut body = Map::new();
            let model = match (named, work.category.as_deref()) {
                (Some(named), _) => {
                    body.insert("models".into(), json!(named[1..]));
                    named[0].clone()
                }
                (None, None | Some("chat")) => "auction".to_owned(),
                (None, Some(category)) => format!("auction/{category}"),
            };
            body.insert("model".into(), json!(model));
            body.insert("messages".into(), messages);
            if let Some(max_tokens) = work.max_tokens {
                body.insert("max_tokens".into(), json!(max_tokens));
            }
            if !auction.is_empty() {
                body.insert("auction".into(), Value::Object(auction));
            }
            request::parse_chat(body)
        }
        (false, Some(input)) => {
            if work.max_tokens.is_some() {
                return Err(ApiError::validation("max_tokens", "is for chat agents only"));
            }
            let category = work.category.clone().ok_or_else(|| {
                ApiError::validation("category", "is required with `input` (e.g. `ocr`)")
            })?;
            let mut body = json!({"category": category, "input": input});
            if let Some(named) = named {
                // The first named agent, then its fallbacks: only they may serve, in order.
                body["provider"] = json!({"order": named, "only": named});
            }
            if !auction.is_empty() {
                body["auction"] = Value::Object(auction);
            }
            request::parse_job(body)
        }
    }
}

/// A finished job as a tool's result.
fn job_output(result: &JobResult) -> Result<JobOutput, ToolError> {
    let delivered = result.delivered.as_ref().ok_or_else(|| {
        tool_error(ApiError::internal(anyhow::anyhow!("an executed job delivered nothing")))
    })?;
    let text = delivered
        .output
        .pointer("/choices/0/message/content")
        .and_then(Value::as_str)
        .map(str::to_owned);
    Ok(JobOutput {
        job_id: result.job_id,
        auction_id: result.auction_id,
        winner: Some(delivered.agent.slug.clone()),
        clearing_price: Some(delivered.clearing_price.to_string()),
        cost: result.total_cost.to_string(),
        text,
        output: delivered.output.clone(),
        candidates: result.candidates,
    })
}

fn discovered(state: &AppState, agent: &Agent) -> DiscoveredAgent {
    let params = state.auction_parameters();
    let reputation = ReputationView::new(agent, &params, state.now().timestamp_millis());
    DiscoveredAgent {
        slug: agent.slug.clone(),
        name: agent.name.clone(),
        description: agent.description.clone(),
        kind: agent.kind.as_str().to_owned(),
        categories: agent.categories.clone(),
        price_per_call: agent.pricing.per_call.to_string(),
        price_per_million_input_tokens: agent.pricing.per_million_input_tokens.to_string(),
        price_per_million_output_tokens: agent.pricing.per_million_output_tokens.to_string(),
        reputation: reputation.score(),
        latency_ms: reputation.latency_ms(),
        status: status_word(state, agent).to_owned(),
    }
}
