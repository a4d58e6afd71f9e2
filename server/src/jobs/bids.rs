//! Live bids: agents with a `bid_url` are asked for a price for this job, all at once, with
//! one shared deadline. Whatever has not answered by then has no bid; the job never waits
//! past the deadline for bids.
//!
//! Wire contract: Gavel POSTs `{auction_id, category, deadline_ms, estimate: {input_tokens,
//! output_tokens}, reserve}`; the agent answers `{"price": "0.8"}` (a decimal string or
//! number of credits) or 204 for no bid. A bid above the agent's sheet is refused by the
//! engine (`live_bid_above_sheet`).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use auction_engine::{LiveBid, MicroCredits, NoBidReason};
use registry::agents::Agent;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::egress::{AgentCall, AgentClient, CallError};

/// Most bidders asked per auction; the rest bid their sheet.
pub const MAX_LIVE_BIDDERS: usize = 32;
/// Largest bid answer accepted, in bytes.
const MAX_BID_BYTES: usize = 4096;

/// What the auction tells bidders.
#[derive(Clone, Debug)]
pub struct BidRequest {
    pub auction_id: Uuid,
    pub category: String,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub reserve: Option<MicroCredits>,
}

/// Asks every agent with a bid URL, concurrently, under one deadline.
pub async fn collect(
    client: &AgentClient,
    bidders: &[Arc<Agent>],
    request: &BidRequest,
    deadline: Duration,
) -> HashMap<Uuid, LiveBid> {
    let body = json!({
        "auction_id": request.auction_id,
        "category": request.category,
        "deadline_ms": deadline.as_millis() as u64,
        "estimate": {"input_tokens": request.input_tokens, "output_tokens": request.output_tokens},
        "reserve": request.reserve.map(|r| r.to_string()),
    });
    let body = serde_json::to_vec(&body).unwrap_or_default();
    let asks = bidders.iter().take(MAX_LIVE_BIDDERS).filter_map(|agent| {
        let url = agent.bid_url.clone()?;
        let body = body.clone();
        Some(async move {
            let call = AgentCall {
                url: &url,
                body,
                bearer: agent.upstream_api_key.as_ref().map(|k| k.expose()),
                idempotency_key: None,
                first_byte_timeout: deadline,
                total_timeout: deadline,
                max_response_bytes: MAX_BID_BYTES,
            };
            (agent.id, judge(client.post_json(call).await))
        })
    });
    // Every ask carries the same deadline, so this join ends by it; the outer timeout is a
    // belt for the braces, and anything it cuts off counts as late.
    let mut bids: HashMap<Uuid, LiveBid> = HashMap::new();
    let all = futures::future::join_all(asks);
    if let Ok(answers) = tokio::time::timeout(deadline + Duration::from_millis(50), all).await {
        bids.extend(answers);
    }
    for agent in bidders.iter().take(MAX_LIVE_BIDDERS) {
        if agent.bid_url.is_some() {
            bids.entry(agent.id).or_insert(LiveBid::NoBid(NoBidReason::Late));
        }
    }
    bids
}

fn judge(answer: Result<crate::egress::AgentReply, CallError>) -> LiveBid {
    let reply = match answer {
        Err(CallError::Timeout) => return LiveBid::NoBid(NoBidReason::Late),
        Err(_) => return LiveBid::NoBid(NoBidReason::Unreachable),
        Ok(reply) => reply,
    };
    match reply.status {
        204 => return LiveBid::NoBid(NoBidReason::Declined),
        200..=299 => {}
        _ => return LiveBid::NoBid(NoBidReason::Unreachable),
    }
    let price =
        serde_json::from_slice::<Value>(&reply.body).ok().and_then(|v| match v.get("price") {
            Some(Value::String(text)) => MicroCredits::parse_decimal(text).ok(),
            Some(Value::Number(number)) => MicroCredits::parse_decimal(&number.to_string()).ok(),
            _ => None,
        });
    match price {
        Some(price) if !price.is_negative() => LiveBid::Price(price),
        _ => LiveBid::NoBid(NoBidReason::Malformed),
    }
}
