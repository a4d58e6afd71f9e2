//! The candidate index: every live agent in memory, by category, slug and id, so a job finds
//! its candidates without scanning a table.
//!
//! Correct across instances: each `snapshot` call is served by a read of one row (the `agents`
//! generation, bumped in the same transaction as every agent change) that began after the call
//! arrived, and reloads when it moved, so an agent paused, repriced or deleted on any instance
//! is seen by the next job everywhere. Concurrent calls share such reads.
//! Reputation changes with every job and does not bump the generation; it is refreshed at
//! most every `REPUTATION_REFRESH_MS`, which is as fresh as scoring needs.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use auction_engine::ReputationStats;
use sea_orm::DatabaseConnection;
use uuid::Uuid;

use crate::agents::domain::Visibility;
use crate::agents::store::{Agent, agents_generation, load_agents_and_retired, load_reputations};
use crate::{RegistryError, SharedReads, UserId};

/// How long a deleted agent's record is kept for its owner's prior, in milliseconds.
const RETIRED_RECORD_MS: i64 = 90 * 24 * 3600 * 1000;

/// How stale reputation in the index may get, in milliseconds.
pub const REPUTATION_REFRESH_MS: i64 = 1_000;

/// One consistent view of the registry.
#[derive(Debug, Default)]
pub struct Snapshot {
    generation: i64,
    reputation_loaded_ms: i64,
    agents: Vec<Arc<Agent>>,
    by_category: HashMap<String, Vec<Arc<Agent>>>,
    by_slug: HashMap<String, Arc<Agent>>,
    by_id: HashMap<Uuid, Arc<Agent>>,
    /// Deleted agents with a record, by category: (owner, record).
    retired_by_category: HashMap<String, Vec<(UserId, ReputationStats)>>,
}

impl Snapshot {
    fn build(
        generation: i64,
        loaded_ms: i64,
        agents: Vec<Arc<Agent>>,
        retired: &[Agent],
    ) -> Snapshot {
        let mut retired_by_category: HashMap<String, Vec<(UserId, ReputationStats)>> =
            HashMap::new();
        // A record untouched for 90 days (13 half-lives of evidence) weighs nothing any more:
        // dropping it keeps the list, and each auction's work on it, bounded.
        let recent = loaded_ms.saturating_sub(RETIRED_RECORD_MS);
        for agent in retired.iter().filter(|a| a.reputation.updated_at_ms >= recent) {
            for category in &agent.categories {
                retired_by_category
                    .entry(category.clone())
                    .or_default()
                    .push((agent.owner_id, agent.reputation));
            }
        }
        let mut by_category: HashMap<String, Vec<Arc<Agent>>> = HashMap::new();
        let mut by_slug = HashMap::new();
        let mut by_id = HashMap::new();
        for agent in &agents {
            for category in &agent.categories {
                by_category.entry(category.clone()).or_default().push(Arc::clone(agent));
            }
            by_slug.insert(agent.slug.clone(), Arc::clone(agent));
            by_id.insert(agent.id, Arc::clone(agent));
        }
        Snapshot {
            generation,
            reputation_loaded_ms: loaded_ms,
            agents,
            by_category,
            by_slug,
            by_id,
            retired_by_category,
        }
    }

    /// The records of deleted agents that served `category`: (owner, record).
    pub fn retired_in(&self, category: &str) -> &[(UserId, ReputationStats)] {
        self.retired_by_category.get(category).map_or(&[], Vec::as_slice)
    }

    pub fn generation(&self) -> i64 {
        self.generation
    }

    /// Every live agent (public and private, active and paused).
    pub fn agents(&self) -> &[Arc<Agent>] {
        &self.agents
    }

    /// Live agents serving `category`.
    pub fn in_category(&self, category: &str) -> &[Arc<Agent>] {
        self.by_category.get(category).map_or(&[], Vec::as_slice)
    }

    pub fn by_slug(&self, slug: &str) -> Option<&Arc<Agent>> {
        self.by_slug.get(slug)
    }

    pub fn by_id(&self, id: Uuid) -> Option<&Arc<Agent>> {
        self.by_id.get(&id)
    }

    /// Categories with at least one public agent, sorted.
    pub fn public_categories(&self) -> Vec<&str> {
        let mut categories: Vec<&str> = self
            .by_category
            .iter()
            .filter(|(_, agents)| agents.iter().any(|a| a.visibility == Visibility::Public))
            .map(|(category, _)| category.as_str())
            .collect();
        categories.sort_unstable();
        categories
    }
}

/// The shared, self-refreshing index.
///
/// By default every snapshot reads the registry generation, so that a change made by any
/// instance holds on this one from its next request. A server that is the only one on its
/// database (a SQLite file) makes every change itself: it [`announces`](AgentIndex::announce)
/// each one after its commit, and the index reads the generation only after an announcement
/// (or when reputations are due for a refresh), not on every job.
///
/// Concurrent snapshots share reads: one read of the generation (and the reload it may bring)
/// runs at a time, and it serves every call that arrived before it began. A call never takes
/// the result of a read that began before it arrived, so a change committed before a request
/// came in is in that request's snapshot; under load the database is read once per read's
/// length, not once per job.
#[derive(Debug)]
pub struct AgentIndex {
    current: RwLock<Arc<Snapshot>>,
    /// Changes come only from this process, announced.
    announced_only: AtomicBool,
    /// A change was announced since the generation was last read.
    changed: AtomicBool,
    /// Reads of the generation, shared by the calls that arrived before each began.
    reads: SharedReads<(), Arc<Snapshot>>,
}

impl Default for AgentIndex {
    fn default() -> AgentIndex {
        AgentIndex::new()
    }
}

impl AgentIndex {
    pub fn new() -> AgentIndex {
        let empty = Snapshot { generation: -1, ..Snapshot::default() };
        AgentIndex {
            current: RwLock::new(Arc::new(empty)),
            announced_only: AtomicBool::new(false),
            changed: AtomicBool::new(true),
            reads: SharedReads::new(1),
        }
    }

    /// From now on, read the generation only after an [`announce`](AgentIndex::announce).
    /// Only for the one server on its database.
    pub fn trust_announcements(&self) {
        self.announced_only.store(true, Ordering::SeqCst);
    }

    /// An agent changed (its transaction has committed): the next snapshot reloads.
    pub fn announce(&self) {
        self.changed.store(true, Ordering::SeqCst);
    }

    fn current(&self) -> Arc<Snapshot> {
        match self.current.read() {
            Ok(guard) => Arc::clone(&guard),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    /// A snapshot at least as new as the registry at the time of the call.
    pub async fn snapshot(
        &self,
        db: &DatabaseConnection,
        now_ms: i64,
    ) -> Result<Arc<Snapshot>, RegistryError> {
        let current = self.current();
        if self.announced_only.load(Ordering::SeqCst)
            && now_ms - current.reputation_loaded_ms < REPUTATION_REFRESH_MS
            && !self.changed.swap(false, Ordering::SeqCst)
        {
            return Ok(current);
        }
        self.reads.get(&(), async || self.read(db, now_ms).await).await
    }

    /// Reads the generation and, when it moved or reputations are stale, reloads.
    async fn read(
        &self,
        db: &DatabaseConnection,
        now_ms: i64,
    ) -> Result<Arc<Snapshot>, RegistryError> {
        let current = self.current();
        // The generation is read before the agents: a change landing in between makes the
        // snapshot newer than its label, never older, so it is reloaded again next time.
        let generation = match agents_generation(db).await {
            Ok(generation) => generation,
            Err(err) => {
                self.changed.store(true, Ordering::SeqCst);
                return Err(err);
            }
        };
        let fresh_reputation = now_ms - current.reputation_loaded_ms < REPUTATION_REFRESH_MS;
        if current.generation == generation && fresh_reputation {
            return Ok(current);
        }
        let next = if current.generation == generation {
            let mut reputations = load_reputations(db).await?;
            // Ratings only change with the generation: a refresh of reputations keeps them.
            let agents = current
                .agents
                .iter()
                .map(|agent| {
                    let mut agent = Agent::clone(agent);
                    if let Some(stats) = reputations.remove(&agent.id) {
                        agent.reputation = stats;
                    }
                    Arc::new(agent)
                })
                .collect();
            let mut next = Snapshot::build(generation, now_ms, agents, &[]);
            // Deleted agents serve no more jobs: their records cannot have moved.
            next.retired_by_category = current.retired_by_category.clone();
            next
        } else {
            let (live, retired) = load_agents_and_retired(db).await?;
            let mut ratings = crate::feedback::counted_ratings(db).await?;
            let live = live
                .into_iter()
                .map(|mut agent| {
                    agent.ratings = ratings.remove(&agent.id).unwrap_or_default();
                    Arc::new(agent)
                })
                .collect();
            Snapshot::build(generation, now_ms, live, &retired)
        };
        let next = Arc::new(next);
        if let Ok(mut guard) = self.current.write()
            && (guard.generation < next.generation
                || (guard.generation == next.generation
                    && guard.reputation_loaded_ms < next.reputation_loaded_ms))
        {
            *guard = Arc::clone(&next);
        }
        Ok(next)
    }
}
