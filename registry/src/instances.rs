//! Server instances and the work they leave behind when they die.
//!
//! Every process registers an instance at start and renews its heartbeat every few seconds.
//! Jobs and in-flight idempotency keys name the instance that runs them. An instance whose
//! heartbeat is older than the lease is dead: its running jobs are failed, their holds
//! released and its in-flight keys freed, by whichever live instance notices first (the
//! updates are conditional, so two that notice at once do the work once). On SQLite there is
//! one node, so a start ends every earlier instance's work at once, lease or not.

use chrono::{DateTime, Utc};
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, Condition, DatabaseConnection, EntityTrait, QueryFilter, Set,
};
use uuid::Uuid;

use crate::entity::{idempotency_keys, instances, jobs};
use crate::jobs::JobStatus;
use crate::{RegistryError, ledger};

/// What ending dead instances' work came to.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Reaped {
    pub instances: u64,
    pub jobs: u64,
    pub holds: u64,
    pub keys: u64,
}

/// Registers this process.
pub async fn register(
    db: &DatabaseConnection,
    id: Uuid,
    now: DateTime<Utc>,
) -> Result<(), RegistryError> {
    instances::ActiveModel { id: Set(id), started_at: Set(now), heartbeat_at: Set(now) }
        .insert(db)
        .await?;
    Ok(())
}

/// Renews this process's heartbeat.
pub async fn heartbeat(
    db: &DatabaseConnection,
    id: Uuid,
    now: DateTime<Utc>,
) -> Result<(), RegistryError> {
    instances::Entity::update_many()
        .col_expr(instances::Column::HeartbeatAt, Expr::value(now))
        .filter(instances::Column::Id.eq(id))
        .exec(db)
        .await?;
    Ok(())
}

/// Ends the work of every instance but `me` whose heartbeat is older than `stale_before` (all
/// of them with `stale_before = None`), and of work no instance claims (rows from before
/// instances existed, opened before `stale_before` or `now`).
pub async fn reap_dead(
    db: &DatabaseConnection,
    me: Uuid,
    stale_before: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Result<Reaped, RegistryError> {
    let mut query = instances::Entity::find().filter(instances::Column::Id.ne(me));
    if let Some(cutoff) = stale_before {
        query = query.filter(instances::Column::HeartbeatAt.lt(cutoff));
    }
    let dead: Vec<Uuid> = query.all(db).await?.into_iter().map(|row| row.id).collect();
    let unclaimed_before = stale_before.unwrap_or(now);
    let owned_by_dead = || {
        Condition::any().add(jobs::Column::InstanceId.is_in(dead.clone())).add(
            Condition::all()
                .add(jobs::Column::InstanceId.is_null())
                .add(jobs::Column::CreatedAt.lt(unclaimed_before)),
        )
    };
    let orphans: Vec<Uuid> = jobs::Entity::find()
        .filter(jobs::Column::Status.eq(JobStatus::Running.as_str()))
        .filter(owned_by_dead())
        .all(db)
        .await?
        .into_iter()
        .map(|job| job.id)
        .collect();
    let mut reaped = Reaped { instances: dead.len() as u64, ..Reaped::default() };
    for job in orphans {
        // The hold first: a job marked failed with its hold still active would strand credits
        // if this process died in between; the other way round the next reap finishes it.
        if ledger::release(db, job, now).await? == ledger::Applied::Done {
            reaped.holds += 1;
        }
        let failed = jobs::Entity::update_many()
            .col_expr(jobs::Column::Status, Expr::value(JobStatus::Failed.as_str()))
            .col_expr(
                jobs::Column::Error,
                Expr::value("the server process running this job stopped before it finished"),
            )
            .col_expr(jobs::Column::FinishedAt, Expr::value(now))
            .filter(jobs::Column::Id.eq(job))
            .filter(jobs::Column::Status.eq(JobStatus::Running.as_str()))
            .exec(db)
            .await?;
        reaped.jobs += failed.rows_affected;
    }
    let keys = idempotency_keys::Entity::delete_many()
        .filter(idempotency_keys::Column::Status.eq("in_flight"))
        .filter(
            Condition::any().add(idempotency_keys::Column::InstanceId.is_in(dead.clone())).add(
                Condition::all()
                    .add(idempotency_keys::Column::InstanceId.is_null())
                    .add(idempotency_keys::Column::CreatedAt.lt(unclaimed_before)),
            ),
        )
        .exec(db)
        .await?;
    reaped.keys = keys.rows_affected;
    if !dead.is_empty() {
        instances::Entity::delete_many().filter(instances::Column::Id.is_in(dead)).exec(db).await?;
    }
    Ok(reaped)
}
