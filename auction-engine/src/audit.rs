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
    let quality = &winner.quality;
    let source = match quality.reliability_source {
        ReliabilitySource::Mean => "estimated reliability",
        ReliabilitySource::ThompsonDraw => "reliability drawn for exploration",
    };
    let _ = write!(
        text,
        "{} won with an effective price of {} = bid {} / quality {:.4} ({source} {:.3} from {:.1} \
         observation(s) on a prior of {:.3}; latency {:.0} ms{}{}).",
        winner.slug,
        micros(winner.effective_price),
        winner.bid,
        quality.factor,
        quality.reliability,
        quality.evidence,
        quality.prior_mean,
        quality.latency_ms,
        if quality.expected_latency_ms.is_none() { ", assumed from its peers" } else { "" },
        if quality.rating_factor == 1.0 {
            String::new()
        } else {
            format!("; callers' ratings x {:.4}", quality.rating_factor)
        },
    );
    match &winner.price_basis {
        PriceBasis::SecondScore { runner_up, runner_up_effective_price } => {
            let runner_up_slug = outcome.slug_of(*runner_up).map_or("?", |slug| slug.as_ref());
            let _ = write!(
                text,
                " It is paid {} because the best competing agent of another owner, {runner_up_slug}, \
                 had an effective price of {}: {} could have bid up to {} x {:.4} = {} and still won.",
                winner.price,
                micros(*runner_up_effective_price),
                winner.slug,
                micros(*runner_up_effective_price),
                quality.factor,
                winner.price,
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
                " No agent of another owner competed, so it is paid {reserve}, the category's \
                 price when owners compete."
            );
        }
        PriceBasis::OwnBid => {
            let _ = write!(text, " It is paid its own bid, {}.", winner.price);
        }
    }
    if let Some(proven) = outcome.proven_price {
        let _ = write!(
            text,
            " This was an exploration auction: unmeasured agents were scored on draws, and no \
             price could exceed {proven}, what the measured agents alone would have cleared at."
        );
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

fn micros(value: i64) -> crate::MicroCredits {
    crate::MicroCredits::from_micros(value)
}
