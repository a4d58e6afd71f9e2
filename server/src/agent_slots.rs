//! How many batch lines one agent serves at once in this process (`batch.per_agent_concurrency`).
//!
//! A batch can queue tens of thousands of lines for one category; without a bound per agent,
//! the process's whole batch concurrency could land on the one agent that wins every auction.
//! A batch line takes a slot of its auction's winner after the auction and before its hold
//! (so the wait never eats into the hold's lifetime), and keeps it until its job ends. The
//! auction's outcome is not changed: a busy winner is waited for, not passed over. Real-time
//! jobs take no slot.
//!
//! Absent on purpose: a bound across instances. Each instance bounds its own lines; on
//! Postgres, `batch.per_batch_concurrency` still bounds one batch over all of them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use uuid::Uuid;

/// Agents whose slots are all free are forgotten once this many are remembered, so the map
/// holds at most the agents serving batch lines right now plus this.
const REMEMBERED: usize = 1_024;

/// Each agent's batch slots.
pub struct AgentSlots {
    per_agent: usize,
    slots: Mutex<HashMap<Uuid, Arc<Semaphore>>>,
}

impl AgentSlots {
    pub fn new(per_agent: usize) -> AgentSlots {
        AgentSlots { per_agent: per_agent.max(1), slots: Mutex::default() }
    }

    /// Waits for one of `agent`'s slots; the slot is free again when the permit is dropped.
    pub async fn acquire(&self, agent: Uuid) -> Option<OwnedSemaphorePermit> {
        let semaphore = {
            let mut slots = self.slots.lock().ok()?;
            if slots.len() >= REMEMBERED {
                let per_agent = self.per_agent;
                slots.retain(|_, semaphore| semaphore.available_permits() < per_agent);
            }
            Arc::clone(
                slots.entry(agent).or_insert_with(|| Arc::new(Semaphore::new(self.per_agent))),
            )
        };
        semaphore.acquire_owned().await.ok()
    }

    /// How many of `agent`'s slots are taken now.
    pub fn taken(&self, agent: Uuid) -> usize {
        self.slots
            .lock()
            .ok()
            .and_then(|slots| {
                slots.get(&agent).map(|semaphore| self.per_agent - semaphore.available_permits())
            })
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::AgentSlots;

    #[tokio::test]
    async fn an_agent_serves_at_most_its_slots_and_others_are_not_held_up() {
        let slots = AgentSlots::new(2);
        let (busy, other) = (uuid::Uuid::now_v7(), uuid::Uuid::now_v7());
        let first = slots.acquire(busy).await.unwrap();
        let _second = slots.acquire(busy).await.unwrap();
        assert_eq!(slots.taken(busy), 2);
        let third = tokio::time::timeout(std::time::Duration::from_millis(50), slots.acquire(busy));
        assert!(third.await.is_err(), "a third line waits");
        assert!(slots.acquire(other).await.is_some(), "another agent is not held up");
        drop(first);
        assert!(slots.acquire(busy).await.is_some(), "a freed slot is taken");
    }
}
