//! Egress: every outbound call Gavel makes goes to a URL an agent owner typed, so every one
//! goes through this module's SSRF guard.
//!
//! * `policy` decides whether a URL and an address may be reached: shape rules (scheme,
//!   userinfo, port, special host names), special-purpose address ranges, the operator's
//!   `egress.allow_cidrs` opening, and metadata addresses that stay closed even inside it.
//! * `resolver` resolves names through the policy: every address of a name must pass, and the
//!   HTTP client connects only to the addresses it returned (no second lookup to rebind).
//! * `client` is the one HTTP client for agents: guarded resolver, IP literals checked before
//!   connecting, no redirects, no proxy from the environment, timeouts and a response cap.
//! * `sealing` seals agents' upstream keys at rest; the client opens one only to call its
//!   agent.
//!
//! Errors say which rule refused a URL, never what a refused host answered.

mod client;
mod policy;
mod resolver;
mod sealing;

pub use client::{AgentCall, AgentClient, AgentReply, CallError, HOP_HEADER};
pub use policy::{EgressError, EgressPolicy};
pub use resolver::{GuardedResolver, Lookup, LookupFuture, StaticLookup, SystemLookup};
pub use sealing::SecretBox;
