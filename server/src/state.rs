//! `AppState`: what every handler shares, built once in `startup`.

use registry::Bank;
use std::collections::HashMap;
use std::sync::Mutex;

use auction_engine::{MicroCredits, Parameters, PriceBasis, Ranked};
use chrono::{DateTime, Utc};
use redis::aio::ConnectionManager;
use registry::agents::AgentIndex;
use registry::ledger::GrantPeriod;
use registry::{DatabaseConnection, UserId};

use crate::auth::{HashingPool, JwtKeys};
use crate::configuration::ResolvedSettings;
use tokio_util::task::TaskTracker;

use crate::egress::AgentClient;
use crate::error::ApiError;
use crate::jobs::breaker::Breakers;
use crate::metrics::Metrics;
use crate::rate_limit::RateLimiter;

pub struct AppState {
    pub db: DatabaseConnection,
    /// This process, as registered in `instances`: its jobs and in-flight keys name it.
    pub instance_id: uuid::Uuid,
    /// Every balance, hold, grant and job settlement goes through it (`registry::Bank`).
    pub bank: Bank,
    /// Every live agent in memory, refreshed when any instance changes one.
    pub agent_index: AgentIndex,
    /// API keys checked in the last minute (used only where this server is the only one).
    pub api_keys: registry::ApiKeyCache,
    /// The SSRF-guarded client for every call to an agent URL.
    pub agent_client: AgentClient,
    /// Per-agent circuit breakers (this instance's view).
    pub breakers: Breakers,
    /// Streaming relays in flight: a graceful shutdown waits for them to settle.
    pub relays: TaskTracker,
    pub redis: Option<ConnectionManager>,
    pub jwt: JwtKeys,
    pub rate_limiter: RateLimiter,
    /// Sign-ups and log-ins: a tight budget per IP and per account, apart from the API's.
    pub auth_limiter: RateLimiter,
    /// Password hashes: one per core at a time on threads of their own; the rest wait briefly
    /// or are shed.
    pub hashing: HashingPool,
    pub settings: ResolvedSettings,
    pub metrics: Metrics,
    /// The token of this run's admin door (`local_admin`); `None` where there is none.
    pub local_admin_token: Option<String>,
    /// Wakes this process's batch worker: a new batch, or a line slot freed.
    pub batch_wake: tokio::sync::Notify,
    /// Batch lines each agent serves at once (`batch.per_agent_concurrency`).
    pub agent_slots: crate::agent_slots::AgentSlots,
    /// Users whose grant for the current month is known to be in. A cache only: the ledger's
    /// conditional update is what makes the grant happen once, across instances too.
    granted: Mutex<HashMap<UserId, GrantPeriod>>,
    /// Per category, a moving average of recent competitive clearing prices: what a lone
    /// bidder is paid (at least its bid, at most the caller's max price). An input of each auction (it is
    /// in the audit record), not needed for correctness, so per instance.
    reference_prices: Mutex<HashMap<String, MicroCredits>>,
}

impl AppState {
    #[expect(clippy::too_many_arguments, reason = "built once, in startup, from its parts")]
    pub fn new(
        db: DatabaseConnection,
        bank: Bank,
        agent_client: AgentClient,
        redis: Option<ConnectionManager>,
        jwt: JwtKeys,
        rate_limiter: RateLimiter,
        auth_limiter: RateLimiter,
        hashing: HashingPool,
        settings: ResolvedSettings,
    ) -> AppState {
        let agent_slots =
            crate::agent_slots::AgentSlots::new(settings.raw.batch.per_agent_concurrency);
        AppState {
            db,
            instance_id: uuid::Uuid::now_v7(),
            bank,
            agent_index: AgentIndex::new(),
            api_keys: registry::ApiKeyCache::default(),
            agent_client,
            relays: TaskTracker::new(),
            breakers: Breakers::new(
                settings.raw.dispatch.breaker_failures,
                std::time::Duration::from_millis(settings.raw.dispatch.breaker_cooldown_ms),
            ),
            redis,
            jwt,
            rate_limiter,
            auth_limiter,
            hashing,
            settings,
            metrics: Metrics::new(),
            local_admin_token: None,
            batch_wake: tokio::sync::Notify::new(),
            agent_slots,
            granted: Mutex::new(HashMap::new()),
            reference_prices: Mutex::new(HashMap::new()),
        }
    }

    /// The wall clock: the one place `server` reads it.
    pub fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }

    /// The parameters for an auction in `category`: with the reference price from recent
    /// clearings there.
    pub fn auction_parameters_for(&self, category: &str) -> Parameters {
        let reference =
            self.reference_prices.lock().ok().and_then(|prices| prices.get(category).copied());
        Parameters { reference_price: reference, ..self.auction_parameters() }
    }

    /// Folds a delivered job's clearing price into its category's reference price (an
    /// exponentially weighted average, weight 1/5 for the newest), but only a price that
    /// competition set: a second-score price against another owner, which the winner's own
    /// bid cannot move. A lone bidder's price or a reserve never feeds it, so no agent's price
    /// feeds on its own past prices.
    pub fn observe_clearing_price(&self, category: &str, ranked: &Ranked) {
        if !matches!(ranked.price_basis, PriceBasis::SecondScore { .. }) {
            return;
        }
        let price = ranked.price;
        if let Ok(mut prices) = self.reference_prices.lock() {
            let next = match prices.get(category) {
                Some(old) => MicroCredits::from_micros((old.micros() * 4 + price.micros()) / 5),
                None => price,
            };
            prices.insert(category.to_owned(), next);
        }
    }

    /// The auction engine's parameters: fees from the configuration, the rest the engine's
    /// documented defaults.
    pub fn auction_parameters(&self) -> Parameters {
        Parameters {
            call_fee: self.settings.call_fee,
            win_fee: self.settings.win_fee,
            ..Parameters::default()
        }
    }

    pub fn monthly_grant(&self) -> MicroCredits {
        self.settings.monthly_grant
    }

    /// Credits the user's free grant for this month if it is not in yet.
    pub async fn ensure_monthly_grant(&self, user: UserId) -> Result<(), ApiError> {
        let now = self.now();
        let period = GrantPeriod::containing(now);
        let cached =
            self.granted.lock().map(|granted| granted.get(&user) == Some(&period)).unwrap_or(false);
        if cached {
            return Ok(());
        }
        let applied = self.bank.ensure_monthly_grant(user, self.monthly_grant(), now).await?;
        if applied == registry::ledger::Applied::Done {
            self.metrics.grants.inc();
        }
        if let Ok(mut granted) = self.granted.lock() {
            // Bounded: a month's active users. Cleared wholesale when it grows past a limit.
            if granted.len() > 100_000 {
                granted.clear();
            }
            granted.insert(user, period);
        }
        Ok(())
    }
}
