//! Per-agent circuit breakers: after `threshold` consecutive failures an agent's circuit opens
//! and it is left out of auctions (exclusion `circuit_open`) for `cooldown`; then it is
//! half-open: it competes again, one success closes the circuit, one failure reopens it.
//!
//! Kept per instance, like a load balancer's outlier detection: each instance learns from its
//! own calls. Reputation (shared, in the database) is the long-term memory; the breaker is the
//! fast reflex that stops hammering an agent that is down right now.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use uuid::Uuid;

/// What the breaker says about an agent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Circuit {
    Closed,
    Open,
    /// Cooling-down is over: the agent may be tried again.
    HalfOpen,
}

#[derive(Clone, Copy, Debug)]
enum State {
    Closed { failures: u32 },
    Open { since: Instant },
    HalfOpen,
}

/// All agents' breakers.
#[derive(Debug)]
pub struct Breakers {
    states: Mutex<HashMap<Uuid, State>>,
    threshold: u32,
    cooldown: Duration,
}

impl Breakers {
    pub fn new(threshold: u32, cooldown: Duration) -> Breakers {
        Breakers { states: Mutex::new(HashMap::new()), threshold: threshold.max(1), cooldown }
    }

    /// The agent's circuit at `now`.
    pub fn circuit(&self, agent: Uuid, now: Instant) -> Circuit {
        let Ok(mut states) = self.states.lock() else { return Circuit::Closed };
        match states.get(&agent).copied() {
            None | Some(State::Closed { .. }) => Circuit::Closed,
            Some(State::HalfOpen) => Circuit::HalfOpen,
            Some(State::Open { since }) if now.duration_since(since) >= self.cooldown => {
                states.insert(agent, State::HalfOpen);
                Circuit::HalfOpen
            }
            Some(State::Open { .. }) => Circuit::Open,
        }
    }

    /// Folds an attempt's result in.
    pub fn record(&self, agent: Uuid, success: bool, now: Instant) {
        let Ok(mut states) = self.states.lock() else { return };
        let current = states.get(&agent).copied().unwrap_or(State::Closed { failures: 0 });
        let next = match (current, success) {
            (_, true) => State::Closed { failures: 0 },
            (State::Closed { failures }, false) if failures + 1 >= self.threshold => {
                State::Open { since: now }
            }
            (State::Closed { failures }, false) => State::Closed { failures: failures + 1 },
            (State::HalfOpen, false) => State::Open { since: now },
            (State::Open { since }, false) => State::Open { since },
        };
        if matches!(next, State::Closed { failures: 0 }) {
            states.remove(&agent);
        } else {
            states.insert(agent, next);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_the_threshold_half_opens_after_the_cooldown_and_closes_on_success() {
        let breakers = Breakers::new(3, Duration::from_secs(30));
        let agent = Uuid::new_v4();
        let t0 = Instant::now();
        for _ in 0..2 {
            breakers.record(agent, false, t0);
        }
        assert_eq!(breakers.circuit(agent, t0), Circuit::Closed);
        breakers.record(agent, false, t0);
        assert_eq!(breakers.circuit(agent, t0), Circuit::Open);
        assert_eq!(breakers.circuit(agent, t0 + Duration::from_secs(29)), Circuit::Open);
        assert_eq!(breakers.circuit(agent, t0 + Duration::from_secs(30)), Circuit::HalfOpen);
        // A failed probe reopens at once.
        breakers.record(agent, false, t0 + Duration::from_secs(31));
        assert_eq!(breakers.circuit(agent, t0 + Duration::from_secs(32)), Circuit::Open);
        assert_eq!(breakers.circuit(agent, t0 + Duration::from_secs(61)), Circuit::HalfOpen);
        breakers.record(agent, true, t0 + Duration::from_secs(62));
        assert_eq!(breakers.circuit(agent, t0 + Duration::from_secs(62)), Circuit::Closed);
    }

    #[test]
    fn a_success_resets_the_count() {
        let breakers = Breakers::new(3, Duration::from_secs(30));
        let agent = Uuid::new_v4();
        let now = Instant::now();
        breakers.record(agent, false, now);
        breakers.record(agent, false, now);
        breakers.record(agent, true, now);
        breakers.record(agent, false, now);
        breakers.record(agent, false, now);
        assert_eq!(breakers.circuit(agent, now), Circuit::Closed);
    }
}
