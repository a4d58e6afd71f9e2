//! Callers' ratings of delivered jobs: one per job, by its caller, within
//! [`RATING_WINDOW_DAYS`] of delivery.
//!
//! A rating names the agent that served the job and that agent's owner at the time, so the
//! ratings that feed reputation ([`agent_ratings`]) can leave out an owner rating their own
//! agent and cap what one caller can weigh on one agent. Absent on purpose: ratings of failed
//! or recommended jobs (nothing was delivered to judge), editing or withdrawing a rating.

use chrono::{DateTime, Duration, Utc};
use std::collections::HashMap;

use auction_engine::Ratings;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, DatabaseConnection, EntityTrait, QueryFilter, Set,
    TransactionTrait,
};
use uuid::Uuid;

use crate::agents::store::bump_generation;
use crate::entity::job_feedback;
use crate::jobs::{JobStatus, find_job};
use crate::{RegistryError, UserId};

/// How long after delivery a job may be rated.
pub const RATING_WINDOW_DAYS: i64 = 7;
/// The longest reason a rating may carry, in characters.
pub const MAX_REASON_CHARS: usize = 500;
/// The most one caller's ratings count, net, for or against one agent.
pub const MAX_RATINGS_PER_CALLER: i64 = 3;

/// Thumbs up or down.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rating {
    Up,
    Down,
}

impl Rating {
    pub fn parse(text: &str) -> Result<Rating, RegistryError> {
        match text {
            "up" => Ok(Rating::Up),
            "down" => Ok(Rating::Down),
            other => Err(RegistryError::invalid(
                "rating",
                format!("`{}` is not one of: up, down", other.chars().take(20).collect::<String>()),
            )),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Rating::Up => "up",
            Rating::Down => "down",
        }
    }
}

/// A reason: trimmed, at most [`MAX_REASON_CHARS`], no control characters; empty is none.
pub fn parse_reason(text: Option<&str>) -> Result<Option<String>, RegistryError> {
    let Some(text) = text.map(str::trim).filter(|t| !t.is_empty()) else { return Ok(None) };
    if text.chars().count() > MAX_REASON_CHARS {
        return Err(RegistryError::invalid(
            "reason",
            format!("must be at most {MAX_REASON_CHARS} characters"),
        ));
    }
    if text.chars().any(|c| c.is_control() && c != '\n') {
        return Err(RegistryError::invalid("reason", "must not contain control characters"));
    }
    Ok(Some(text.to_owned()))
}

/// A stored rating.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Feedback {
    pub job_id: Uuid,
    pub agent_id: Uuid,
    pub rating: Rating,
    pub reason: Option<String>,
    pub created_at: DateTime<Utc>,
}

/// Rates the caller's delivered job. Another user's job is not found; a job not delivered,
/// or delivered more than [`RATING_WINDOW_DAYS`] ago, is refused naming why; a second
/// rating of one job is [`RegistryError::AlreadyRated`].
pub async fn rate_job(
    db: &DatabaseConnection,
    caller: UserId,
    job_id: Uuid,
    rating: Rating,
    reason: Option<String>,
    now: DateTime<Utc>,
) -> Result<Feedback, RegistryError> {
    let job = find_job(db, caller, job_id).await?.ok_or(RegistryError::NotFound { what: "job" })?;
    let (Some(served), Some(finished_at)) = (job.served, job.finished_at) else {
        return Err(RegistryError::invalid("job", "only a delivered job can be rated"));
    };
    if job.status != JobStatus::Delivered.as_str() {
        return Err(RegistryError::invalid("job", "only a delivered job can be rated"));
    }
    if now - finished_at > Duration::days(RATING_WINDOW_DAYS) {
        return Err(RegistryError::invalid(
            "job",
            format!("a job can be rated within {RATING_WINDOW_DAYS} days of delivery"),
        ));
    }
    if find_feedback(db, caller, job_id).await?.is_some() {
        return Err(RegistryError::AlreadyRated { job_id });
    }
    let row = job_feedback::ActiveModel {
        job_id: Set(job_id),
        caller_id: Set(caller.0),
        agent_id: Set(served.agent_id),
        owner_id: Set(served.owner.0),
        rating: Set(rating.as_str().to_owned()),
        reason: Set(reason.clone()),
        created_at: Set(now),
    };
    // The agent's ratings moved: the registry's generation tells every instance's index to
    // reload them. Two racing ratings of one job: the primary key lets one in; the other is
    // told so.
    let txn = db.begin().await?;
    if let Err(err) = row.insert(&txn).await {
        txn.rollback().await?;
        return match find_feedback(db, caller, job_id).await? {
            Some(_) => Err(RegistryError::AlreadyRated { job_id }),
            None => Err(err.into()),
        };
    }
    bump_generation(&txn).await?;
    txn.commit().await?;
    Ok(Feedback { job_id, agent_id: served.agent_id, rating, reason, created_at: now })
}

/// The caller's rating of one of their jobs, if they gave one.
pub async fn find_feedback(
    db: &DatabaseConnection,
    caller: UserId,
    job_id: Uuid,
) -> Result<Option<Feedback>, RegistryError> {
    let row = job_feedback::Entity::find_by_id(job_id)
        .filter(job_feedback::Column::CallerId.eq(caller.0))
        .one(db)
        .await?;
    Ok(row.map(|row| Feedback {
        job_id: row.job_id,
        agent_id: row.agent_id,
        rating: if row.rating == Rating::Up.as_str() { Rating::Up } else { Rating::Down },
        reason: row.reason,
        created_at: row.created_at,
    }))
}

/// An agent's ratings as reputation counts them: owners' ratings of their own agent left
/// out, and each caller's net (ups minus downs) capped at [`MAX_RATINGS_PER_CALLER`] either
/// way, so no one caller can make or break an agent.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AgentRatings {
    /// Counted thumbs up, after the caps.
    pub up: i64,
    /// Counted thumbs down, after the caps.
    pub down: i64,
    /// Every rating given, counted or not.
    pub given: i64,
}

impl AgentRatings {
    /// As the auction takes them.
    pub fn counted(self) -> Ratings {
        let count = |n: i64| u32::try_from(n).unwrap_or(u32::MAX);
        Ratings { up: count(self.up), down: count(self.down) }
    }
}

/// Folds ratings rows `(agent, caller, owner, up)` by the rules of [`AgentRatings`].
fn fold(rows: impl Iterator<Item = (Uuid, Uuid, Uuid, bool)>) -> HashMap<Uuid, AgentRatings> {
    let mut net: HashMap<(Uuid, Uuid), i64> = HashMap::new();
    let mut ratings: HashMap<Uuid, AgentRatings> = HashMap::new();
    for (agent, caller, owner, up) in rows {
        ratings.entry(agent).or_default().given += 1;
        if caller != owner {
            *net.entry((agent, caller)).or_default() += if up { 1 } else { -1 };
        }
    }
    for ((agent, _), net) in net {
        let net = net.clamp(-MAX_RATINGS_PER_CALLER, MAX_RATINGS_PER_CALLER);
        let entry = ratings.entry(agent).or_default();
        if net > 0 {
            entry.up += net;
        } else {
            entry.down -= net;
        }
    }
    ratings
}

fn row_tuple(row: job_feedback::Model) -> (Uuid, Uuid, Uuid, bool) {
    (row.agent_id, row.caller_id, row.owner_id, row.rating == Rating::Up.as_str())
}

/// The ratings of one agent, folded by the rules of [`AgentRatings`].
pub async fn agent_ratings(
    db: &DatabaseConnection,
    agent: Uuid,
) -> Result<AgentRatings, RegistryError> {
    let rows = job_feedback::Entity::find()
        .filter(job_feedback::Column::AgentId.eq(agent))
        .all(db)
        .await?;
    Ok(fold(rows.into_iter().map(row_tuple)).remove(&agent).unwrap_or_default())
}

/// Every rated agent's ratings as the auction counts them: read when the agent index
/// reloads (on a change of the registry's generation, which every rating bumps).
pub(crate) async fn counted_ratings(
    db: &DatabaseConnection,
) -> Result<HashMap<Uuid, Ratings>, RegistryError> {
    let rows = job_feedback::Entity::find().all(db).await?;
    Ok(fold(rows.into_iter().map(row_tuple))
        .into_iter()
        .map(|(agent, ratings)| (agent, ratings.counted()))
        .collect())
}
