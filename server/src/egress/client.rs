//! The one HTTP client for calling agents.
//!
//! Guarded resolver (every resolved address vetted, connections only to those), IP-literal
//! hosts vetted before connecting (the connector skips the resolver for them), no redirects
//! (a 3xx is a failed call), no proxy from the environment, no automatic retries (fallback
//! is the auction's business), a connect timeout, a first-byte deadline, a total deadline and
//! a cap on the response size.

use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::header::{CONTENT_TYPE, HeaderValue};

/// The header on every call Gavel makes to an agent; a job request that carries it is refused.
pub const HOP_HEADER: &str = "x-gavel-hop";
use reqwest::redirect::Policy;

use crate::egress::policy::EgressError;
use crate::egress::resolver::GuardedResolver;
use crate::egress::sealing::SecretBox;

/// One call to an agent.
#[derive(Clone, Debug)]
pub struct AgentCall<'a> {
    pub url: &'a str,
    pub body: Vec<u8>,
    /// Sent as `Authorization: Bearer ...` when set.
    pub bearer: Option<&'a str>,
    /// Sent as `Idempotency-Key` when set: a batch line's calls carry the line's id, so an
    /// agent that honours the header does a line's work once even if a crash sends it twice.
    pub idempotency_key: Option<&'a str>,
    /// Until the response head arrives.
    pub first_byte_timeout: Duration,
    /// Until the whole body has arrived.
    pub total_timeout: Duration,
    pub max_response_bytes: usize,
}

/// What the agent answered (any status but a redirect).
#[derive(Clone, Debug)]
pub struct AgentReply {
    pub status: u16,
    pub body: Vec<u8>,
    pub latency: Duration,
}

/// Why a call did not produce a reply. Categories only: an agent owner learns that the call
/// timed out or was refused, never what a refused host would have said.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("destination refused: {0}")]
    Blocked(EgressError),
    #[error("could not connect")]
    Connect,
    #[error("timed out")]
    Timeout,
    #[error("answered with a redirect ({0}), which is not followed")]
    Redirect(u16),
    #[error("response larger than {limit} bytes")]
    TooLarge { limit: usize },
    #[error("the response broke off")]
    Body,
    /// The agent's stored upstream key does not open under this server's secrets key.
    #[error("the agent's upstream key cannot be opened with this server's secrets key")]
    Credential,
}

impl CallError {
    /// A stable snake_case category for records and metrics.
    pub fn code(&self) -> &'static str {
        match self {
            CallError::Blocked(_) => "blocked_destination",
            CallError::Connect => "connect_failed",
            CallError::Timeout => "timeout",
            CallError::Redirect(_) => "redirect",
            CallError::TooLarge { .. } => "response_too_large",
            CallError::Body => "body_failed",
            CallError::Credential => "credential_unreadable",
        }
    }
}

/// The shared agent client.
#[derive(Clone)]
pub struct AgentClient {
    http: reqwest::Client,
    resolver: GuardedResolver,
    /// Opens agents' sealed upstream keys at the moment of the call, and seals new ones.
    secrets: Arc<SecretBox>,
}

impl AgentClient {
    pub fn new(
        resolver: GuardedResolver,
        connect_timeout: Duration,
        secrets: Arc<SecretBox>,
    ) -> Result<AgentClient, reqwest::Error> {
        let http = reqwest::Client::builder()
            .dns_resolver(Arc::new(resolver.clone()))
            .redirect(Policy::none())
            .no_proxy()
            .retry(reqwest::retry::never())
            .connect_timeout(connect_timeout)
            .pool_idle_timeout(Duration::from_secs(60))
            .user_agent(concat!("gavel/", env!("CARGO_PKG_VERSION")))
            // Every call Gavel makes says so: a Gavel that receives it refuses to run it as a
            // job, so an agent pointed back at a Gavel (this one or another) cannot loop.
            .default_headers(reqwest::header::HeaderMap::from_iter([(
                reqwest::header::HeaderName::from_static(HOP_HEADER),
                HeaderValue::from_static("1"),
            )]))
            .build()?;
        Ok(AgentClient { http, resolver, secrets })
    }

    pub fn resolver(&self) -> &GuardedResolver {
        &self.resolver
    }

    /// Seals agents' upstream keys for storage (and opens them for calls).
    pub fn secrets(&self) -> &SecretBox {
        &self.secrets
    }

    /// The bearer token to send: the stored upstream key, opened.
    fn bearer(&self, stored: Option<&str>) -> Result<Option<String>, CallError> {
        stored.map(|stored| self.secrets.open(stored).ok_or(CallError::Credential)).transpose()
    }

    /// POSTs JSON to an agent and reads the whole reply under the call's limits.
    pub async fn post_json(&self, call: AgentCall<'_>) -> Result<AgentReply, CallError> {
        let url = self.resolver.policy().check_url(call.url).map_err(CallError::Blocked)?;
        let started = Instant::now();
        let mut request = self
            .http
            .post(url)
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
            .timeout(call.total_timeout)
            .body(call.body);
        if let Some(token) = self.bearer(call.bearer)? {
            request = request.bearer_auth(token);
        }
        if let Some(key) = call.idempotency_key {
            request = request.header("idempotency-key", key);
        }
        let mut response = match tokio::time::timeout(call.first_byte_timeout, request.send()).await
        {
            Err(_) => return Err(CallError::Timeout),
            Ok(Err(err)) => return Err(classify(&err)),
            Ok(Ok(response)) => response,
        };
        let status = response.status();
        if status.is_redirection() {
            return Err(CallError::Redirect(status.as_u16()));
        }
        if response.content_length().is_some_and(|len| len > call.max_response_bytes as u64) {
            return Err(CallError::TooLarge { limit: call.max_response_bytes });
        }
        let deadline = tokio::time::Instant::from_std(started + call.total_timeout);
        let mut body = Vec::new();
        loop {
            match tokio::time::timeout_at(deadline, response.chunk()).await {
                Err(_) => return Err(CallError::Timeout),
                Ok(Err(err)) => {
                    return Err(if err.is_timeout() {
                        CallError::Timeout
                    } else {
                        CallError::Body
                    });
                }
                Ok(Ok(None)) => break,
                Ok(Ok(Some(chunk))) => {
                    if body.len() + chunk.len() > call.max_response_bytes {
                        return Err(CallError::TooLarge { limit: call.max_response_bytes });
                    }
                    body.extend_from_slice(&chunk);
                }
            }
        }
        Ok(AgentReply { status: status.as_u16(), body, latency: started.elapsed() })
    }
}

impl AgentClient {
    /// POSTs JSON and returns the response as soon as its head has arrived, for streaming. The
    /// first-byte deadline bounds the wait for the head; reading the body is the caller's
    /// business (with its own idle timeouts). A redirect is an error, as for `post_json`.
    pub async fn post_stream(&self, call: AgentCall<'_>) -> Result<reqwest::Response, CallError> {
        let url = self.resolver.policy().check_url(call.url).map_err(CallError::Blocked)?;
        let mut request = self
            .http
            .post(url)
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
            .header(reqwest::header::ACCEPT, HeaderValue::from_static("text/event-stream"))
            .timeout(call.total_timeout)
            .body(call.body);
        if let Some(token) = self.bearer(call.bearer)? {
            request = request.bearer_auth(token);
        }
        if let Some(key) = call.idempotency_key {
            request = request.header("idempotency-key", key);
        }
        let response = match tokio::time::timeout(call.first_byte_timeout, request.send()).await {
            Err(_) => return Err(CallError::Timeout),
            Ok(Err(err)) => return Err(classify(&err)),
            Ok(Ok(response)) => response,
        };
        if response.status().is_redirection() {
            return Err(CallError::Redirect(response.status().as_u16()));
        }
        Ok(response)
    }
}

/// Finds the egress refusal inside a reqwest error (the resolver's), else a category.
fn classify(err: &reqwest::Error) -> CallError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(cause) = source {
        if let Some(egress) = cause.downcast_ref::<EgressError>() {
            return CallError::Blocked(egress.clone());
        }
        source = cause.source();
    }
    if err.is_timeout() { CallError::Timeout } else { CallError::Connect }
}
