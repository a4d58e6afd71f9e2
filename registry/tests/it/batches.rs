//! Batch lines on both backends: concurrent claims never share a line, a lapsed lease frees
//! a line and only its new holder may record it, cancel and the 24-hour expiry end what has
//! not started, and a batch ends when its last line does.

use registry::batches::{self, BatchFile, BatchStatus, ClaimedLine, HeldIn, LineEnd};
use uuid::Uuid;

use crate::helpers::{all_backends, batch_rows, user};

const HOUR_MS: i64 = 3_600_000;

async fn new_batch(
    db: &registry::DatabaseConnection,
    lines: usize,
    now_ms: i64,
) -> (Uuid, registry::UserId) {
    let owner = user(db).await;
    let (batch, lines) = batch_rows(db, owner, lines, 0, now_ms).await;
    let id = batch.id;
    batches::insert_batch(db, batch, lines, HeldIn::Database).await.unwrap();
    (id, owner)
}

/// Records a line's end as `worker`; whether it was recorded.
async fn finish(
    db: &registry::DatabaseConnection,
    worker: Uuid,
    line: &ClaimedLine,
    end: LineEnd,
    now_ms: i64,
) -> bool {
    batches::finish_line(db, worker, line, end, now_ms, HeldIn::Database).await.unwrap().recorded
}

#[tokio::test]
async fn concurrent_workers_never_claim_the_same_line_and_a_lapsed_lease_moves_on() {
    for (backend, test_db) in all_backends().await {
        let db = test_db.db.clone();
        let now = 1_800_000_000_000_i64;
        let (id, owner) = new_batch(&db, 300, now).await;
        // Eight workers claim 50 at a time, all at once.
        let workers: Vec<Uuid> = (0..8).map(|_| Uuid::now_v7()).collect();
        let claims = workers.iter().map(|worker| {
            let db = db.clone();
            let worker = *worker;
            async move {
                (worker, batches::claim_lines(&db, worker, now, 1_000, 50, 1_000).await.unwrap())
            }
        });
        let claimed = futures::future::join_all(claims).await;
        let mut lines: Vec<Uuid> =
            claimed.iter().flat_map(|(_, l)| l.iter().map(|l| l.id)).collect();
        let total = lines.len();
        lines.sort_unstable();
        lines.dedup();
        assert_eq!(lines.len(), total, "{backend}: a line claimed twice");
        assert_eq!(total, 300, "{backend}: 8 x 50 claims cover the 300 lines");
        assert!(claimed.iter().all(|(_, l)| l.iter().all(|l| l.claims == 1 && l.owner == owner)));

        // Nothing is left to claim while the leases hold.
        assert!(
            batches::claim_lines(&db, Uuid::now_v7(), now + 999, 1_000, 50, 1_000)
                .await
                .unwrap()
                .is_empty()
        );
        // Worker 0 renews; the others' leases lapse and a new worker takes their lines.
        let (first, first_lines) = &claimed[0];
        batches::renew_leases(&db, *first, now + 900, 1_000).await.unwrap();
        let taker = Uuid::now_v7();
        let retaken =
            batches::claim_lines(&db, taker, now + 1_500, 1_000, 1_000, 1_000).await.unwrap();
        assert_eq!(retaken.len(), 300 - first_lines.len(), "{backend}");
        assert!(retaken.iter().all(|l| l.claims == 2), "{backend}");
        // The lapsed holder's end is refused; the new holder's is kept.
        let line = retaken[0].clone();
        let lapsed = claimed.iter().find(|(_, l)| l.iter().any(|c| c.id == line.id)).unwrap().0;
        let end = |who: &str| LineEnd::Answered {
            job_id: Uuid::now_v7(),
            body: format!("{{\"by\":\"{who}\"}}"),
        };
        assert!(!finish(&db, lapsed, &line, end("lapsed"), now + 1_600).await);
        assert!(finish(&db, taker, &line, end("taker"), now + 1_600).await);
        let output =
            batches::batch_file_lines(&db, owner, id, BatchFile::Output).await.unwrap().unwrap();
        assert_eq!(output.len(), 1);
        assert_eq!(output[0].response.as_deref(), Some("{\"by\":\"taker\"}"), "{backend}");
        // A stranger sees no such batch.
        let stranger = user(&db).await;
        assert!(batches::find_batch(&db, stranger, id).await.unwrap().is_none());
        assert!(
            batches::batch_file_lines(&db, stranger, id, BatchFile::Output)
                .await
                .unwrap()
                .is_none()
        );
    }
}

#[tokio::test]
async fn cancel_and_expiry_end_unstarted_lines_and_the_batch_ends_with_its_last_line() {
    for (backend, test_db) in all_backends().await {
        let db = test_db.db.clone();
        let now = 1_800_000_000_000_i64;
        // Cancel: 2 of 5 lines running; the other 3 are cancelled at once, the batch is
        // `cancelling` until the running ones end, then `cancelled`. Cancelling again is a no-op.
        let (id, owner) = new_batch(&db, 5, now).await;
        let worker = Uuid::now_v7();
        let running = batches::claim_lines(&db, worker, now, 60_000, 2, 100).await.unwrap();
        let cancel = |at| batches::cancel_batch(&db, owner, id, at, HeldIn::Database);
        let batch = cancel(now + 1).await.unwrap().0.unwrap();
        assert_eq!(batch.status, BatchStatus::Cancelling, "{backend}");
        let again = cancel(now + 2).await.unwrap().0.unwrap();
        assert_eq!(
            again.cancelling_at_ms,
            Some(now + 1),
            "{backend}: the second cancel changed it"
        );
        assert!(
            batches::claim_lines(&db, Uuid::now_v7(), now + 3, 60_000, 10, 100)
                .await
                .unwrap()
                .is_empty()
        );
        for line in &running {
            let end = LineEnd::Answered { job_id: Uuid::now_v7(), body: "{}".into() };
            assert!(finish(&db, worker, line, end, now + 4).await);
        }
        batches::close_finished(&db, now + 5, HeldIn::Database).await.unwrap();
        let ended = batches::find_batch(&db, owner, id).await.unwrap().unwrap();
        assert_eq!(ended.status, BatchStatus::Cancelled, "{backend}");
        assert_eq!((ended.counts.completed, ended.counts.failed), (2, 0), "{backend}");
        let errors =
            batches::batch_file_lines(&db, owner, id, BatchFile::Errors).await.unwrap().unwrap();
        assert_eq!(errors.len(), 3);
        assert!(errors.iter().all(|e| e.error_code.as_deref() == Some("batch_cancelled")));

        // Expiry: after 24 hours the unstarted lines expire; a running one ends first.
        let (id, owner) = new_batch(&db, 4, now).await;
        let running = batches::claim_lines(&db, worker, now, 48 * HOUR_MS, 1, 100).await.unwrap();
        let later = now + 24 * HOUR_MS + 1;
        batches::close_finished(&db, later, HeldIn::Database).await.unwrap();
        let batch = batches::find_batch(&db, owner, id).await.unwrap().unwrap();
        assert_eq!(batch.status, BatchStatus::InProgress, "{backend}: a line still runs");
        assert_eq!(batch.counts.failed, 3, "{backend}: the three unstarted lines expired");
        let end = LineEnd::Refused {
            job_id: None,
            status_code: 502,
            code: "upstream_failed".into(),
            message: "x".into(),
        };
        assert!(finish(&db, worker, &running[0], end, later + 1).await);
        batches::close_finished(&db, later + 2, HeldIn::Database).await.unwrap();
        let batch = batches::find_batch(&db, owner, id).await.unwrap().unwrap();
        assert_eq!(batch.status, BatchStatus::Expired, "{backend}");
        assert_eq!((batch.counts.completed, batch.counts.failed), (0, 4));
        let errors =
            batches::batch_file_lines(&db, owner, id, BatchFile::Errors).await.unwrap().unwrap();
        let codes: Vec<&str> = errors.iter().filter_map(|e| e.error_code.as_deref()).collect();
        assert_eq!(codes.iter().filter(|c| **c == "batch_expired").count(), 3, "{codes:?}");
        assert!(codes.contains(&"upstream_failed"));
    }
}

#[tokio::test]
async fn claims_are_shared_between_batches_and_bounded_per_batch() {
    for (backend, test_db) in all_backends().await {
        let db = test_db.db.clone();
        let now = 1_800_000_000_000_i64;
        let (big, _) = new_batch(&db, 100, now).await;
        let (small, _) = new_batch(&db, 10, now).await;
        let worker = Uuid::now_v7();
        // 20 slots over two batches: 10 each, not 20 from the older one.
        let first = batches::claim_lines(&db, worker, now, 60_000, 20, 1_000).await.unwrap();
        let of = |lines: &[batches::ClaimedLine], batch: Uuid| {
            lines.iter().filter(|l| l.batch_id == batch).count()
        };
        assert_eq!((of(&first, big), of(&first, small)), (10, 10), "{backend}");
        // At most 15 of a batch run at once, whoever claims: 5 more of the big one, none of the
        // small one (it has none left).
        let second =
            batches::claim_lines(&db, Uuid::now_v7(), now + 1, 60_000, 50, 15).await.unwrap();
        assert_eq!(of(&second, big), 5, "{backend}");
        assert_eq!(second.len(), 5, "{backend}");
    }
}
