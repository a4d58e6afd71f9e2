//! The agent registry against every backend: storage round trips, access rules, price
//! versions, soft deletes, the candidate index and concurrent reputation updates.

use std::sync::Arc;

use auction_engine::MicroCredits;
use auction_engine::reputation::Outcome;
use chrono::Utc;
use registry::RegistryError;
use registry::agents::{
    self, AgentIndex, AgentSpec, AgentState, RawAgentPatch, RawAgentSpec, RawPricing, Visibility,
};
use uuid::Uuid;

use crate::helpers::{all_backends, user};

fn spec(name: &str, visibility: &str) -> AgentSpec {
    AgentSpec::parse(RawAgentSpec {
        name: Some(name.into()),
        kind: Some("openai-chat".into()),
        upstream_model: Some("model-x".into()),
        upstream_api_key: Some("sk-secret".into()),
        categories: Some(vec!["chat".into(), "completion".into()]),
        endpoint: Some("https://chat.example.com/v1".into()),
        regions: Some(vec!["eu".into()]),
        features: Some(vec!["json_mode".into()]),
        context_length: Some(128_000),
        visibility: Some(visibility.into()),
        pricing: Some(RawPricing {
            per_call: Some("0.01".into()),
            per_million_input_tokens: Some("1.5".into()),
            per_million_output_tokens: Some("6".into()),
        }),
        ..RawAgentSpec::default()
    })
    .unwrap()
}

#[tokio::test]
async fn agents_round_trip_with_access_rules_and_price_versions() {
    for (backend, test_db) in all_backends().await {
        let db = test_db.db.clone();
        let owner = user(&db).await;
        let stranger = user(&db).await;
        let public =
            agents::register_agent(&db, owner, spec("pub", "public"), Uuid::now_v7(), Utc::now())
                .await
                .unwrap();
        let private =
            agents::register_agent(&db, owner, spec("priv", "private"), Uuid::now_v7(), Utc::now())
                .await
                .unwrap();
        assert!(public.slug.ends_with("/pub"), "{backend}");
        assert_eq!(public.categories, vec!["chat", "completion"]);
        assert_eq!(public.regions, vec!["eu"]);
        assert_eq!(public.context_length, Some(128_000));
        assert_eq!(public.upstream_api_key.as_ref().map(|k| k.expose()), Some("sk-secret"));
        assert_eq!(format!("{:?}", public.upstream_api_key), "Some(Secret(<redacted>))");
        assert!(matches!(
            agents::register_agent(&db, owner, spec("pub", "public"), Uuid::now_v7(), Utc::now())
                .await,
            Err(RegistryError::AgentNameTaken)
        ));

        // Visibility and ownership.
        assert!(agents::find_visible_agent(&db, Some(stranger), public.id).await.is_ok());
        assert!(agents::find_visible_agent(&db, None, public.id).await.is_ok());
        assert!(matches!(
            agents::find_visible_agent(&db, Some(stranger), private.id).await,
            Err(RegistryError::NotFound { .. })
        ));
        let patch =
            || RawAgentPatch { description: Some("mine now".into()), ..RawAgentPatch::default() };
        assert!(matches!(
            agents::update_agent(&db, stranger, public.id, patch(), Utc::now()).await,
            Err(RegistryError::Forbidden { .. })
        ));
        assert!(matches!(
            agents::update_agent(&db, stranger, private.id, patch(), Utc::now()).await,
            Err(RegistryError::NotFound { .. })
        ));
        assert!(matches!(
            agents::delete_agent(&db, stranger, public.id, Utc::now()).await,
            Err(RegistryError::Forbidden { .. })
        ));

        // A price change is a new version; the old one stays readable for audits.
        let repriced = RawAgentPatch {
            pricing: Some(RawPricing { per_call: Some("0.02".into()), ..RawPricing::default() }),
            status: Some("paused".into()),
            ..RawAgentPatch::default()
        };
        let updated =
            agents::update_agent(&db, owner, public.id, repriced, Utc::now()).await.unwrap();
        assert_eq!(updated.price_version, 2, "{backend}");
        assert_eq!(updated.state, AgentState::Paused);
        assert_eq!(updated.pricing.per_call, MicroCredits::parse_decimal("0.02").unwrap());
        assert_eq!(
            updated.pricing.per_million_output_tokens,
            MicroCredits::parse_decimal("6").unwrap(),
            "unchanged prices are kept"
        );
        let v1 = agents::price_version(&db, public.id, 1).await.unwrap().unwrap();
        assert_eq!(v1.per_call, MicroCredits::parse_decimal("0.01").unwrap());
        // The owner's price history: both sheets of the repriced agent, newest first; the
        // other agent's one. A stranger's is empty.
        let histories = agents::price_histories(&db, owner).await.unwrap();
        let public_history: Vec<(u32, MicroCredits)> =
            histories[&public.id].iter().map(|p| (p.version, p.sheet.per_call)).collect();
        assert_eq!(
            public_history,
            vec![
                (2, MicroCredits::parse_decimal("0.02").unwrap()),
                (1, MicroCredits::parse_decimal("0.01").unwrap())
            ],
            "{backend}"
        );
        assert_eq!(histories[&private.id].len(), 1, "{backend}");
        assert!(histories[&public.id][0].since >= histories[&public.id][1].since);
        assert!(agents::price_histories(&db, stranger).await.unwrap().is_empty(), "{backend}");

        // Soft delete: gone from listings and reads, still loadable for history.
        agents::delete_agent(&db, owner, private.id, Utc::now()).await.unwrap();
        assert!(matches!(
            agents::find_visible_agent(&db, Some(owner), private.id).await,
            Err(RegistryError::NotFound { .. })
        ));
        assert!(agents::load_agent(&db, private.id).await.unwrap().unwrap().deleted_at.is_some());
        let mine = agents::list_own_agents(&db, owner).await.unwrap();
        assert_eq!(mine.iter().map(|a| a.id).collect::<Vec<_>>(), vec![public.id], "{backend}");
        assert_eq!(mine[0].visibility, Visibility::Public);
    }
}

#[tokio::test]
async fn the_index_follows_every_change_and_refreshes_reputation() {
    for (backend, test_db) in all_backends().await {
        let db = test_db.db.clone();
        let owner = user(&db).await;
        let index = AgentIndex::new();
        let now = Utc::now().timestamp_millis();
        assert!(index.snapshot(&db, now).await.unwrap().agents().is_empty());

        let agent =
            agents::register_agent(&db, owner, spec("a", "public"), Uuid::now_v7(), Utc::now())
                .await
                .unwrap();
        let snapshot = index.snapshot(&db, now).await.unwrap();
        assert_eq!(snapshot.in_category("chat").len(), 1, "{backend}");
        assert_eq!(snapshot.in_category("completion").len(), 1);
        assert!(snapshot.in_category("ocr").is_empty());
        assert_eq!(snapshot.by_slug(&agent.slug).map(|a| a.id), Some(agent.id));
        assert_eq!(snapshot.public_categories(), vec!["chat", "completion"]);

        // Unchanged registry: the same snapshot is served.
        let again = index.snapshot(&db, now).await.unwrap();
        assert!(Arc::ptr_eq(&snapshot, &again));

        let patch =
            RawAgentPatch { categories: Some(vec!["ocr".into()]), ..RawAgentPatch::default() };
        agents::update_agent(&db, owner, agent.id, patch, Utc::now()).await.unwrap();
        let moved = index.snapshot(&db, now).await.unwrap();
        assert!(
            moved.in_category("chat").is_empty() && moved.in_category("ocr").len() == 1,
            "{backend}"
        );

        // Reputation: recorded outcomes appear once the refresh interval has passed.
        let half_life = 7 * 24 * 3600 * 1000;
        agents::record_attempt(&db, agent.id, Outcome::Success, 120.0, now, half_life)
            .await
            .unwrap();
        let stale = index.snapshot(&db, now + 10).await.unwrap();
        assert_eq!(stale.by_id(agent.id).unwrap().reputation.total_successes, 0);
        let fresh = index.snapshot(&db, now + 2_000).await.unwrap();
        assert_eq!(fresh.by_id(agent.id).unwrap().reputation.total_successes, 1, "{backend}");

        agents::delete_agent(&db, owner, agent.id, Utc::now()).await.unwrap();
        assert!(index.snapshot(&db, now + 2_000).await.unwrap().agents().is_empty());
    }
}

/// Snapshots share reads of the generation under load, yet a change committed before a call
/// began is always in that call's snapshot: 32 tasks take snapshots without pause while agents
/// are registered one by one, and each registration is seen by the first snapshot after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shared_reads_never_serve_a_snapshot_older_than_the_call() {
    for (backend, test_db) in all_backends().await {
        let db = test_db.db.clone();
        let owner = user(&db).await;
        let index = Arc::new(AgentIndex::new());
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let load: Vec<_> = (0..32)
            .map(|_| {
                let (index, db, stop) = (Arc::clone(&index), db.clone(), Arc::clone(&stop));
                tokio::spawn(async move {
                    let mut calls = 0_u64;
                    while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                        index.snapshot(&db, Utc::now().timestamp_millis()).await.unwrap();
                        calls += 1;
                    }
                    calls
                })
            })
            .collect();
        for i in 0..20 {
            let name = format!("agent{i}");
            let agent = agents::register_agent(
                &db,
                owner,
                spec(&name, "public"),
                Uuid::now_v7(),
                Utc::now(),
            )
            .await
            .unwrap();
            let snapshot = index.snapshot(&db, Utc::now().timestamp_millis()).await.unwrap();
            assert!(snapshot.by_id(agent.id).is_some(), "{backend}: agent {i} not seen");
            assert_eq!(snapshot.in_category("chat").len(), i + 1, "{backend}");
        }
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        let mut calls = 0;
        for task in load {
            calls += task.await.unwrap();
        }
        assert!(calls > 100, "{backend}: the load ran ({calls} snapshots)");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_outcomes_are_all_counted() {
    for (backend, test_db) in all_backends().await {
        let db = test_db.db.clone();
        let owner = user(&db).await;
        let agent =
            agents::register_agent(&db, owner, spec("busy", "public"), Uuid::now_v7(), Utc::now())
                .await
                .unwrap();
        let now = Utc::now().timestamp_millis();
        let tasks: Vec<_> = (0..40)
            .map(|i| {
                let db = db.clone();
                tokio::spawn(async move {
                    let outcome = if i % 4 == 0 { Outcome::Timeout } else { Outcome::Success };
                    agents::record_attempt(
                        &db,
                        agent.id,
                        outcome,
                        100.0,
                        now + i,
                        7 * 24 * 3600 * 1000,
                    )
                    .await
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap().unwrap();
        }
        let stats = agents::load_agent(&db, agent.id).await.unwrap().unwrap().reputation;
        assert_eq!(
            (stats.total_successes, stats.total_timeouts),
            (30, 10),
            "{backend}: no lost update"
        );
    }
}
