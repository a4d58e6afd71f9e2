//! Per-key rate limiting: a GCRA bucket of `per_second` sustained requests with `burst` room,
//! kept in this process (governor) or, when `redis.url` is set, in Redis so that every
//! instance shares one budget per key.
//!
//! The Redis variant runs GCRA as one Lua script with Redis' own clock, so instances with
//! skewed clocks still agree. If Redis cannot be reached the request is let through and the
//! failure logged: rate limiting protects capacity, it is not what keeps money correct.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};
use redis::Script;
use redis::aio::ConnectionManager;

use crate::configuration::RateLimitSettings;
use crate::error::ApiError;

/// A GCRA budget: one request per `interval` sustained, `burst` at once.
#[derive(Clone, Copy, Debug)]
pub struct Budget {
    pub interval: Duration,
    pub burst: u32,
}

impl Budget {
    /// The API's budget per key.
    pub fn api(settings: &RateLimitSettings) -> Budget {
        Budget {
            interval: Duration::from_secs(1) / settings.per_second.max(1),
            burst: settings.burst,
        }
    }

    /// The sign-up and log-in budget per IP and per account.
    pub fn auth(settings: &RateLimitSettings) -> Budget {
        Budget {
            interval: Duration::from_secs(60) / settings.auth_per_minute.max(1),
            burst: settings.auth_burst,
        }
    }
}

/// Where rate-limit state lives: a closed set, matched exhaustively.
#[derive(Clone)]
pub enum RateLimiter {
    InProcess {
        limiter: Arc<DefaultKeyedRateLimiter<String>>,
    },
    Redis {
        connection: ConnectionManager,
        script: Arc<Script>,
        key_prefix: String,
        interval_us: u64,
        tolerance_us: u64,
    },
}

/// GCRA over Redis' clock. KEYS[1]: the bucket. ARGV: emission interval and burst tolerance,
/// in microseconds. Returns 0 when allowed, else the microseconds to wait.
const GCRA_SCRIPT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local new_tat = tat + interval
local allow_at = new_tat - tolerance
if allow_at > now then return allow_at - now end
redis.call('SET', KEYS[1], new_tat, 'PX', math.ceil((new_tat - now) / 1000) + 1)
return 0
";

impl RateLimiter {
    /// The API's budget: `per_second` with `burst`.
    pub fn in_process(settings: &RateLimitSettings) -> RateLimiter {
        RateLimiter::in_process_with(Budget::api(settings))
    }

    /// The API's budget, shared through Redis.
    pub fn redis(
        connection: ConnectionManager,
        key_prefix: &str,
        settings: &RateLimitSettings,
    ) -> RateLimiter {
        RateLimiter::redis_with(connection, key_prefix, Budget::api(settings))
    }

    pub fn in_process_with(budget: Budget) -> RateLimiter {
        let burst = NonZeroU32::new(budget.burst).unwrap_or(NonZeroU32::MIN);
        let quota = Quota::with_period(budget.interval)
            .unwrap_or_else(|| Quota::per_second(NonZeroU32::MAX))
            .allow_burst(burst);
        RateLimiter::InProcess { limiter: Arc::new(DefaultKeyedRateLimiter::keyed(quota)) }
    }

    pub fn redis_with(
        connection: ConnectionManager,
        key_prefix: &str,
        budget: Budget,
    ) -> RateLimiter {
        let interval_us = (budget.interval.as_micros() as u64).max(1);
        let tolerance_us = interval_us * u64::from(budget.burst.max(1));
        RateLimiter::Redis {
            connection,
            script: Arc::new(Script::new(GCRA_SCRIPT)),
            key_prefix: key_prefix.to_owned(),
            interval_us: interval_us.max(1),
            tolerance_us,
        }
    }

    /// Takes one request from `key`'s budget, or says how long to wait.
    pub async fn check(&self, key: &str) -> Result<(), ApiError> {
        let wait = match self {
            RateLimiter::InProcess { limiter } => match limiter.check_key(&key.to_owned()) {
                Ok(()) => return Ok(()),
                Err(not_until) => not_until.wait_time_from(DefaultClock::default().now()),
            },
            RateLimiter::Redis { connection, script, key_prefix, interval_us, tolerance_us } => {
                let mut connection = connection.clone();
                let result: Result<u64, redis::RedisError> = script
                    .key(format!("{key_prefix}rl:{key}"))
                    .arg(*interval_us)
                    .arg(*tolerance_us)
                    .invoke_async(&mut connection)
                    .await;
                match result {
                    Ok(0) => return Ok(()),
                    Ok(wait_us) => Duration::from_micros(wait_us),
                    Err(err) => {
                        tracing::warn!(error = %err, "rate limiter: redis unavailable, letting the request through");
                        return Ok(());
                    }
                }
            }
        };
        Err(ApiError::RateLimited { retry_after_secs: wait.as_secs_f64().ceil().max(1.0) as u64 })
    }

    /// Drops idle in-process buckets so memory does not grow with every key ever seen.
    pub fn forget_idle(&self) {
        match self {
            RateLimiter::InProcess { limiter } => limiter.retain_recent(),
            RateLimiter::Redis { .. } => {}
        }
    }
}
