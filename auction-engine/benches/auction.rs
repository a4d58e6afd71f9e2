//! How long one auction takes to rank and price N candidates.
//!
//! `cargo bench -p auction-engine`. The target (DESIGN §9) is 1,000 candidates in 100 µs.

// Test code: a panic is how a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

use std::hint::black_box;

use auction_engine::reputation::Outcome as Attempt;
use auction_engine::{
    AgentId, AgentStatus, AuctionInput, Candidate, Constraints, Job, MicroCredits, OwnerId,
    Parameters, PriceSheet, ReputationStats, run,
};
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};

const NOW: i64 = 1_800_000_000_000;

fn candidates(n: usize) -> Vec<Candidate> {
    (0..n)
        .map(|i| {
            let mut reputation = ReputationStats::default();
            for k in 0..(i % 7) {
                let attempt = if k % 5 == 4 { Attempt::Error } else { Attempt::Success };
                reputation = reputation.record(
                    attempt,
                    100.0 + (i % 13) as f64 * 50.0,
                    NOW - 10_000 + k as i64,
                    7 * 86_400_000,
                );
            }
            Candidate {
                agent_id: AgentId(i as u128 * 7919 + 1),
                owner_id: OwnerId((i % 97) as u128),
                slug: format!("owner{}/agent{i}", i % 97).into(),
                categories: vec!["chat".into()],
                features: vec![],
                regions: vec![],
                max_latency_ms: None,
                context_length: Some(128_000),
                sheet: PriceSheet {
                    per_call: MicroCredits::from_micros(100_000 + (i as i64 * 7_777) % 900_000),
                    per_million_input_tokens: MicroCredits::from_micros(1_000_000),
                    per_million_output_tokens: MicroCredits::from_micros(3_000_000),
                },
                live_bid: None,
                reputation,
                status: AgentStatus::Active,
                ratings: auction_engine::Ratings::default(),
                owner_can_pay_win_fee: true,
            }
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("auction");
    for n in [10_usize, 100, 1_000, 10_000] {
        let input = AuctionInput {
            nonce: 1,
            seed: 2,
            now_ms: NOW,
            job: Job {
                category: "chat".into(),
                input_tokens: 500,
                output_tokens: 500,
                required_features: vec![],
            },
            constraints: Constraints {
                max_price: Some(MicroCredits::from_micros(2_000_000)),
                ..Constraints::default()
            },
            candidates: candidates(n),
            retired: vec![],
            parameters: Parameters { exploration_rate: 0.0, ..Parameters::default() },
        };
        group.bench_with_input(BenchmarkId::new("rank_and_price", n), &input, |b, input| {
            b.iter(|| run(black_box(input)))
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
