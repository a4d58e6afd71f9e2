//! The audit record: an auction's inputs and outcome, an explanation a person can read, and
//! `replay`, which recomputes the outcome from the record alone.

use std::fmt::Write;

use crate::auction::{Outcome, PriceBasis, ReliabilitySource, run};
use crate::inputs::AuctionInput;

/// Everything needed to show and re-check one auction.
#[derive(Clone, Debug, PartialEq)]
pub struct AuditRecord {
    pub input: AuctionInput,
    pub outcome: Outcome,
}

impl AuditRecord {
    /// Runs the auction and records it.
    pub fn new(input: AuctionInput) -> AuditRecord {
        let outcome = run(&input);
        AuditRecord { input, outcome }
    }

    /// Whether recomputing from the inputs gives exactly the recorded outcome.
    pub fn verify(&self) -> bool {
        replay(self) == self.outcome
    }

    /// Why the winner won and why it pays what it pays, in plain words.
    pub fn explain(&self) -> String {
        explain(&self.outcome)
    }
}

/// Recomputes the outcome of a recorded auction.
pub fn replay(record: &AuditRecord) -> Outcome {
    run(&record.input)
}

/// Plain-language explanation of an outcome.
pub fn explain(outcome: &Outcome) -> String {
    let mut text = String::new();
    let Some(winner) = outcome.winner() else {
        match outcome.binding_exclusion() {
            Some(reason) => {
                let _ = write!(
                    text,
                    "No agent was eligible. The last candidates were excluded because {} ({}).",
                    reason.describe(),
                    reason.code()
                );
            }
            None => {
                text.push_str("No agent was eligible: there were no candidates for this category.")
            }
        }
        return text;
    };
    let source = match winner.quality.reliability_source {
        ReliabilitySource::LowerBound => "reliability lower bound",
        ReliabilitySource::ThompsonDraw => "reliability draw (exploration auction)",
    };
    let _ = write!(
        text,
        "{} won with score {} = quality {} - bid {} ({source} {:.3}",
        winner.slug,
        micros(winner.score),
        micros(winner.quality.total),
        winner.bid,
        winner.quality.reliability,
    );
    match winner.quality.expected_latency_ms {
        Some(ms) => {
            let _ = write!(text, ", expected latency {ms:.0} ms).");
        }
        None => text.push_str(", latency not yet observed)."),
    }
    match &winner.price_basis {
        PriceBasis::SecondScore { runner_up_slug, runner_up_score, .. } => {
            let _ = write!(
                text,
                " It is paid {} because the best competing agent of another owner, {runner_up_slug}, scored {}: \
                 {} could have bid up to {} and still won.",
                winner.price,
                micros(*runner_up_score),
                winner.slug,
                difference(winner.quality.total, *runner_up_score, winner.price),
            );
        }
        PriceBasis::Reserve { reserve, runner_up: Some(_) } => {
            let _ = write!(
                text,
                " It is paid the reserve {reserve}, which is below the price competition would have set."
            );
        }
        PriceBasis::Reserve { reserve, runner_up: None } => {
            let _ = write!(
                text,
                " No agent of another owner competed, so it is paid the reserve {reserve}."
            );
        }
        PriceBasis::OwnBid => {
            let _ = write!(text, " It is paid its own bid, {}.", winner.price);
        }
    }
    let fallbacks = outcome.ranking.len().saturating_sub(1);
    let _ = write!(
        text,
        " {} other eligible agent(s) stand by as fallbacks; {} candidate(s) were excluded.",
        fallbacks,
        outcome.exclusions.len()
    );
    text
}

/// `a - b = result`, written `a + |b|` when `b` is negative (never "- -").
fn difference(a: i64, b: i64, result: crate::MicroCredits) -> String {
    if b < 0 {
        format!("{} + {} = {result}", micros(a), micros(b.saturating_neg()))
    } else {
        format!("{} - {} = {result}", micros(a), micros(b))
    }
}

fn micros(value: i64) -> crate::MicroCredits {
    crate::MicroCredits::from_micros(value)
}
