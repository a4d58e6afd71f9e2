//! Reputation: how likely an agent is to deliver, and how fast.
//!
//! * **Reliability** is a Beta posterior over the success probability: a prior plus the
//!   agent's success and failure counts, which decay with a half-life, so last week's outage
//!   weighs half of today's. The auction scores the posterior *mean* on a prior taken from
//!   the category (see the crate docs); `min_reputation` and the public reputation score use
//!   a **lower bound** of the agent's own evidence (the mean minus 1.645 standard deviations,
//!   a normal approximation of the 5% quantile, clamped to 0..1): an agent with 3 successes
//!   out of 3 is not trusted like one with 3,000 out of 3,000.
//! * **Exploration**: in a fraction of auctions (decided from the seed, never from bids)
//!   unmeasured agents are scored on a Thompson draw from their posterior instead, so
//!   newcomers get a chance to earn a record. Because the draw does not depend on any bid,
//!   bidding your cost stays the best strategy in every auction.
//! * **Latency** is a peak EWMA (it jumps up at once on a slow call and decays back with a
//!   time constant of one minute) plus a streaming estimate of the 95th percentile.
//!
//! Everything here is pure: time is passed in as Unix milliseconds.

use rand::Rng;
use rand_distr::{Beta, Distribution};

/// Time constant of the latency peak EWMA, in milliseconds.
const LATENCY_TAU_MS: f64 = 60_000.0;
/// Learning rate of the streaming p95 estimate.
const P95_RATE: f64 = 0.01;
/// z-score of the 5% one-sided quantile.
const LOWER_BOUND_Z: f64 = 1.645;

/// What happened when an agent was called.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Success,
    /// The agent answered with an error status or the connection failed.
    Error,
    Timeout,
    /// The agent answered 2xx with something that is not a valid answer.
    InvalidOutput,
}

impl Outcome {
    /// The word records use for it: `success`, `error`, `timeout`, `invalid_output`.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Error => "error",
            Outcome::Timeout => "timeout",
            Outcome::InvalidOutput => "invalid_output",
        }
    }

    /// The outcome a record's word names; `None` for any other word.
    pub fn parse(word: &str) -> Option<Outcome> {
        [Outcome::Success, Outcome::Error, Outcome::Timeout, Outcome::InvalidOutput]
            .into_iter()
            .find(|outcome| outcome.as_str() == word)
    }
}

/// How far callers' ratings can move an agent's quality factor, either way.
pub const RATING_WEIGHT: f64 = 0.1;
/// Ratings the rating factor's prior is worth: a handful of ratings moves it a little, many a
/// little more, never past [`RATING_WEIGHT`].
pub const RATING_PRIOR: f64 = 10.0;

/// Callers' ratings of an agent's delivered jobs, as they count (the registry leaves out an
/// owner's ratings of their own agent and caps each caller's net weight).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Ratings {
    pub up: u32,
    pub down: u32,
}

impl Ratings {
    /// `1 + RATING_WEIGHT x (up - down) / (up + down + RATING_PRIOR)`: 1 with no ratings,
    /// always strictly between `1 - RATING_WEIGHT` and `1 + RATING_WEIGHT`.
    pub fn factor(self) -> f64 {
        let (up, down) = (f64::from(self.up), f64::from(self.down));
        1.0 + RATING_WEIGHT * (up - down) / (up + down + RATING_PRIOR)
    }
}

/// One agent's reputation evidence, as stored between auctions.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ReputationStats {
    /// Decayed success count as of `updated_at_ms`.
    pub successes: f64,
    /// Decayed failure count as of `updated_at_ms`.
    pub failures: f64,
    pub updated_at_ms: i64,
    /// Peak-EWMA latency in milliseconds; 0 when never observed.
    pub latency_ewma_ms: f64,
    /// Streaming 95th-percentile latency estimate in milliseconds.
    pub latency_p95_ms: f64,
    /// Attempts ever observed (not decayed), by outcome.
    pub total_successes: u64,
    pub total_errors: u64,
    pub total_timeouts: u64,
    pub total_invalid: u64,
}

/// The Beta posterior of an agent's success probability at some moment.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Posterior {
    pub alpha: f64,
    pub beta: f64,
}

impl Posterior {
    pub fn mean(&self) -> f64 {
        self.alpha / (self.alpha + self.beta)
    }

    /// The 5% lower bound used for scoring (normal approximation), in 0..=1.
    pub fn lower_bound(&self) -> f64 {
        let n = self.alpha + self.beta;
        let variance = self.alpha * self.beta / (n * n * (n + 1.0));
        (self.mean() - LOWER_BOUND_Z * variance.sqrt()).clamp(0.0, 1.0)
    }

    /// A Thompson draw from the posterior.
    pub fn sample(&self, rng: &mut impl Rng) -> f64 {
        match Beta::new(self.alpha, self.beta) {
            Ok(beta) => beta.sample(rng),
            Err(_) => self.mean(),
        }
    }
}

impl ReputationStats {
    /// The evidence decayed from `updated_at_ms` to `now_ms`: (successes, failures).
    pub fn evidence(&self, now_ms: i64, half_life_ms: i64) -> (f64, f64) {
        self.decayed_counts(now_ms, half_life_ms)
    }

    /// The evidence decayed from `updated_at_ms` to `now_ms`.
    fn decayed_counts(&self, now_ms: i64, half_life_ms: i64) -> (f64, f64) {
        let factor = decay_factor(self.updated_at_ms, now_ms, half_life_ms);
        (self.successes * factor, self.failures * factor)
    }

    /// The posterior at `now_ms`.
    pub fn posterior(&self, now_ms: i64, half_life_ms: i64, prior: (f64, f64)) -> Posterior {
        let (s, f) = self.decayed_counts(now_ms, half_life_ms);
        Posterior { alpha: prior.0.max(1e-6) + s, beta: prior.1.max(1e-6) + f }
    }

    /// The latency estimate used for eligibility and scoring: the larger of the peak EWMA and
    /// the agent's p95, so one lucky fast call does not hide a slow tail. `None` if unobserved.
    pub fn expected_latency_ms(&self) -> Option<f64> {
        let latency = self.latency_ewma_ms.max(self.latency_p95_ms);
        (latency > 0.0).then_some(latency)
    }

    /// Folds one attempt into the evidence. `latency_ms` is recorded for successes only: an
    /// error's speed says nothing about how fast the agent delivers.
    pub fn record(
        &self,
        outcome: Outcome,
        latency_ms: f64,
        now_ms: i64,
        half_life_ms: i64,
    ) -> ReputationStats {
        let (s, f) = self.decayed_counts(now_ms, half_life_ms);
        let mut next = *self;
        next.updated_at_ms = now_ms.max(self.updated_at_ms);
        match outcome {
            Outcome::Success => {
                next.successes = s + 1.0;
                next.failures = f;
                next.total_successes += 1;
                next.observe_latency(latency_ms.max(0.0), now_ms - self.updated_at_ms);
            }
            Outcome::Error | Outcome::Timeout | Outcome::InvalidOutput => {
                next.successes = s;
                next.failures = f + 1.0;
                match outcome {
                    Outcome::Error => next.total_errors += 1,
                    Outcome::Timeout => {
                        next.total_timeouts += 1;
                        // A timeout is at least as slow as the time waited.
                        next.latency_ewma_ms = next.latency_ewma_ms.max(latency_ms);
                    }
                    _ => next.total_invalid += 1,
                }
            }
        }
        next
    }

    fn observe_latency(&mut self, latency_ms: f64, elapsed_ms: i64) {
        if self.latency_ewma_ms <= 0.0 {
            self.latency_ewma_ms = latency_ms;
            self.latency_p95_ms = latency_ms;
            return;
        }
        if latency_ms > self.latency_ewma_ms {
            // Peak: slow news is believed at once.
            self.latency_ewma_ms = latency_ms;
        } else {
            let elapsed = elapsed_ms.max(0) as f64;
            let keep = (-elapsed / LATENCY_TAU_MS).exp().clamp(0.5, 1.0);
            self.latency_ewma_ms = self.latency_ewma_ms * keep + latency_ms * (1.0 - keep);
        }
        // Stochastic-approximation quantile: up by 0.95 steps when above, down by 0.05 when
        // below, so it settles where 5% of observations exceed it.
        let step = P95_RATE * self.latency_p95_ms.max(1.0);
        if latency_ms > self.latency_p95_ms {
            self.latency_p95_ms += step * 0.95;
        } else {
            self.latency_p95_ms = (self.latency_p95_ms - step * 0.05).max(0.0);
        }
    }
}

/// `0.5^(elapsed / half_life)`, 1 for no or negative elapsed time.
fn decay_factor(from_ms: i64, to_ms: i64, half_life_ms: i64) -> f64 {
    if half_life_ms <= 0 || to_ms <= from_ms {
        return 1.0;
    }
    let elapsed = (to_ms - from_ms) as f64;
    // exp2 is several times cheaper than powf, and this runs once per candidate per auction.
    (-elapsed / half_life_ms as f64).exp2()
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 24 * 3600 * 1000;

    #[test]
    fn each_outcome_word_reads_back_as_its_outcome() {
        for outcome in [Outcome::Success, Outcome::Error, Outcome::Timeout, Outcome::InvalidOutput]
        {
            assert_eq!(Outcome::parse(outcome.as_str()), Some(outcome));
        }
        assert_eq!(Outcome::parse("invalid"), None);
    }

    #[test]
    fn evidence_halves_every_half_life() {
        let stats = ReputationStats {
            successes: 8.0,
            failures: 4.0,
            updated_at_ms: 0,
            ..Default::default()
        };
        let posterior = stats.posterior(7 * DAY, 7 * DAY, (0.0, 0.0));
        assert!((posterior.alpha - 4.0).abs() < 1e-3 && (posterior.beta - 2.0).abs() < 1e-3);
    }

    #[test]
    fn more_evidence_raises_the_lower_bound_at_the_same_mean() {
        let few = Posterior { alpha: 3.0, beta: 1.0 };
        let many = Posterior { alpha: 300.0, beta: 100.0 };
        assert!((few.mean() - many.mean()).abs() < 1e-9);
        assert!(many.lower_bound() > few.lower_bound() + 0.2);
    }

    #[test]
    fn a_newcomer_ranks_below_a_proven_agent() {
        let prior = (2.0, 2.0);
        let newcomer = ReputationStats::default().posterior(0, DAY, prior);
        let mut proven = ReputationStats::default();
        for i in 0..50 {
            proven = proven.record(Outcome::Success, 100.0, i, DAY);
        }
        assert!(proven.posterior(50, DAY, prior).lower_bound() > newcomer.lower_bound() + 0.4);
    }

    #[test]
    fn failures_of_every_kind_count_and_are_tallied() {
        let mut stats = ReputationStats::default();
        for outcome in [Outcome::Error, Outcome::Timeout, Outcome::InvalidOutput, Outcome::Success]
        {
            stats = stats.record(outcome, 500.0, 0, DAY);
        }
        assert_eq!((stats.successes, stats.failures), (1.0, 3.0));
        assert_eq!(
            (stats.total_errors, stats.total_timeouts, stats.total_invalid, stats.total_successes),
            (1, 1, 1, 1)
        );
    }

    #[test]
    fn latency_jumps_up_at_once_and_decays_slowly() {
        let mut stats = ReputationStats::default();
        stats = stats.record(Outcome::Success, 100.0, 0, DAY);
        stats = stats.record(Outcome::Success, 1000.0, 1000, DAY);
        assert_eq!(stats.latency_ewma_ms, 1000.0);
        stats = stats.record(Outcome::Success, 100.0, 2000, DAY);
        assert!(stats.latency_ewma_ms > 900.0, "{}", stats.latency_ewma_ms);
        for i in 0..200 {
            stats = stats.record(Outcome::Success, 100.0, 3000 + i * 60_000, DAY);
        }
        assert!(stats.latency_ewma_ms < 150.0, "{}", stats.latency_ewma_ms);
    }

    #[test]
    fn the_p95_estimate_settles_near_the_95th_percentile() {
        let mut stats = ReputationStats::default();
        // Latencies spread evenly over 1..=1000 ms in a scrambled order: the true p95 is 950 ms,
        // the median 500 ms, so an estimate that tracked the middle or the mean would fail.
        for i in 0..20_000_i64 {
            let latency = ((i * 337) % 1000 + 1) as f64;
            stats = stats.record(Outcome::Success, latency, i * 10, DAY);
        }
        assert!((900.0..=1000.0).contains(&stats.latency_p95_ms), "{}", stats.latency_p95_ms);
    }
}
