//! Bids from price sheets, and settlement arithmetic. All integer micro-credits, all checked.

use crate::MicroCredits;
use crate::inputs::PriceSheet;

/// The sheet's price for a job: `per_call + input x per_million_input / 1e6 + output x
/// per_million_output / 1e6`, each token term rounded up to a whole micro-credit. `None` on
/// overflow or a negative price.
pub fn sheet_price(
    sheet: &PriceSheet,
    input_tokens: u64,
    output_tokens: u64,
) -> Option<MicroCredits> {
    let token_term = |tokens: u64, per_million: MicroCredits| -> Option<i128> {
        let per_million = i128::from(per_million.micros());
        let product = i128::from(tokens).checked_mul(per_million)?;
        Some((product + 999_999).div_euclid(1_000_000))
    };
    if sheet.per_call.is_negative()
        || sheet.per_million_input_tokens.is_negative()
        || sheet.per_million_output_tokens.is_negative()
    {
        return None;
    }
    let total = i128::from(sheet.per_call.micros())
        .checked_add(token_term(input_tokens, sheet.per_million_input_tokens)?)?
        .checked_add(token_term(output_tokens, sheet.per_million_output_tokens)?)?;
    i64::try_from(total).ok().map(MicroCredits::from_micros)
}

/// Who pays and receives what when a job is delivered at `price`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Split {
    /// `price + call_fee`.
    pub caller_pays: MicroCredits,
    /// `price - win_fee`; negative when the fee exceeds the price.
    pub owner_receives: MicroCredits,
    /// `call_fee + win_fee`.
    pub platform_receives: MicroCredits,
}

/// Splits a delivered job's money. Conserved: `caller_pays = owner_receives +
/// platform_receives`. `None` on overflow.
pub fn split(price: MicroCredits, call_fee: MicroCredits, win_fee: MicroCredits) -> Option<Split> {
    Some(Split {
        caller_pays: price.checked_add(call_fee)?,
        owner_receives: price.checked_sub(win_fee)?,
        platform_receives: call_fee.checked_add(win_fee)?,
    })
}

/// What a token-priced job costs once the upstream reports its real usage.
///
/// The auction priced the job on estimates: the winner's sheet said `sheet_estimate` and it
/// was awarded `clearing_price`. The job settles at the sheet's price for the actual usage,
/// scaled by `clearing_price / sheet_estimate` (so a winner paid above its bid keeps that
/// margin in proportion), and never above `cap` (what the caller's hold covers).
pub fn settle_on_usage(
    clearing_price: MicroCredits,
    sheet_estimate: MicroCredits,
    actual_sheet_cost: MicroCredits,
    cap: MicroCredits,
) -> MicroCredits {
    if sheet_estimate.micros() <= 0 {
        return clearing_price.min(cap).max(MicroCredits::ZERO);
    }
    let scaled = i128::from(actual_sheet_cost.micros()) * i128::from(clearing_price.micros())
        / i128::from(sheet_estimate.micros());
    let scaled = i64::try_from(scaled).unwrap_or(i64::MAX);
    MicroCredits::from_micros(scaled).min(cap).max(MicroCredits::ZERO)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn credits(text: &str) -> MicroCredits {
        MicroCredits::parse_decimal(text).unwrap()
    }

    #[test]
    fn the_sheet_price_adds_call_and_token_terms() {
        let sheet = PriceSheet {
            per_call: credits("0.5"),
            per_million_input_tokens: credits("2"),
            per_million_output_tokens: credits("10"),
        };
        // 0.5 + 1000 * 2 / 1e6 + 500 * 10 / 1e6 = 0.5 + 0.002 + 0.005
        assert_eq!(sheet_price(&sheet, 1000, 500), Some(credits("0.507")));
        assert_eq!(sheet_price(&sheet, 0, 0), Some(credits("0.5")));
        // One token at 0.5 per million rounds up to one micro-credit.
        let tiny = PriceSheet { per_million_input_tokens: credits("0.5"), ..PriceSheet::default() };
        assert_eq!(sheet_price(&tiny, 1, 0), Some(MicroCredits::from_micros(1)));
    }

    #[test]
    fn overflowing_or_negative_sheets_have_no_price() {
        let huge = PriceSheet {
            per_call: MicroCredits::from_micros(i64::MAX),
            per_million_input_tokens: credits("1"),
            ..PriceSheet::default()
        };
        assert_eq!(sheet_price(&huge, 10_000_000, 0), None);
        let negative = PriceSheet { per_call: credits("-1"), ..PriceSheet::default() };
        assert_eq!(sheet_price(&negative, 0, 0), None);
    }

    #[test]
    fn a_split_conserves_money() {
        let s = split(credits("2.5"), credits("1"), credits("1")).unwrap();
        assert_eq!(s.caller_pays, credits("3.5"));
        assert_eq!(s.owner_receives, credits("1.5"));
        assert_eq!(s.platform_receives, credits("2"));
        assert_eq!(s.caller_pays, s.owner_receives.checked_add(s.platform_receives).unwrap());
    }

    #[test]
    fn usage_settlement_scales_and_caps() {
        // Estimated 1.0 at sheet rates, awarded 1.5; used half the estimate: pays 0.75.
        assert_eq!(
            settle_on_usage(credits("1.5"), credits("1"), credits("0.5"), credits("10")),
            credits("0.75")
        );
        // Used three times the estimate: capped by the hold.
        assert_eq!(
            settle_on_usage(credits("1.5"), credits("1"), credits("3"), credits("2")),
            credits("2")
        );
        assert_eq!(
            settle_on_usage(credits("1.5"), MicroCredits::ZERO, credits("3"), credits("2")),
            credits("1.5")
        );
    }
}
