//! Money: integer micro-credits.
//!
//! One credit is 1,000,000 micro-credits. Every amount in Gavel (bids, prices, fees, balances,
//! ledger entries) is a [`MicroCredits`], an `i64` with checked arithmetic. Floating point never
//! touches money: JSON carries amounts as decimal strings (`"2.5"`), parsed here exactly.

use std::fmt;
use std::str::FromStr;

/// Micro-credits per credit.
pub const MICROS_PER_CREDIT: i64 = 1_000_000;

/// An amount of credits, in integer micro-credits. May be negative (a ledger debit).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MicroCredits(i64);

/// Why a decimal string is not an amount of credits.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MoneyParseError {
    #[error("amount is empty")]
    Empty,
    #[error("amount `{0}` is not a decimal number of credits (e.g. \"2.5\")")]
    Malformed(String),
    #[error("amount `{0}` has more than 6 decimal places (the smallest unit is 0.000001 credit)")]
    TooPrecise(String),
    #[error("amount `{0}` is too large")]
    TooLarge(String),
}

impl MicroCredits {
    pub const ZERO: MicroCredits = MicroCredits(0);

    /// Wraps a raw number of micro-credits.
    pub const fn from_micros(micros: i64) -> MicroCredits {
        MicroCredits(micros)
    }

    /// Whole credits; `None` on overflow.
    pub const fn from_credits(credits: i64) -> Option<MicroCredits> {
        match credits.checked_mul(MICROS_PER_CREDIT) {
            Some(m) => Some(MicroCredits(m)),
            None => None,
        }
    }

    pub const fn micros(self) -> i64 {
        self.0
    }

    pub const fn is_negative(self) -> bool {
        self.0 < 0
    }

    pub fn checked_add(self, other: MicroCredits) -> Option<MicroCredits> {
        self.0.checked_add(other.0).map(MicroCredits)
    }

    pub fn checked_sub(self, other: MicroCredits) -> Option<MicroCredits> {
        self.0.checked_sub(other.0).map(MicroCredits)
    }

    pub fn checked_neg(self) -> Option<MicroCredits> {
        self.0.checked_neg().map(MicroCredits)
    }

    /// Parses a decimal string of credits: `"2"`, `"2.5"`, `"-0.000001"`. At most six decimals,
    /// no exponent, no thousands separators, no surrounding whitespace.
    pub fn parse_decimal(text: &str) -> Result<MicroCredits, MoneyParseError> {
        if text.is_empty() {
            return Err(MoneyParseError::Empty);
        }
        let malformed = || MoneyParseError::Malformed(text.to_owned());
        let (negative, unsigned) = match text.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, text),
        };
        let (whole, fraction) = match unsigned.split_once('.') {
            Some((w, f)) => (w, f),
            None => (unsigned, ""),
        };
        let all_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
        if whole.is_empty() || !all_digits(whole) || !all_digits(fraction) {
            return Err(malformed());
        }
        if unsigned.contains('.') && fraction.is_empty() {
            return Err(malformed());
        }
        if fraction.len() > 6 {
            return Err(MoneyParseError::TooPrecise(text.to_owned()));
        }
        let too_large = || MoneyParseError::TooLarge(text.to_owned());
        let whole: i64 = whole.parse().map_err(|_| too_large())?;
        let mut fraction_micros: i64 = 0;
        for (idx, digit) in fraction.bytes().enumerate() {
            let place = 10_i64.pow(5 - idx as u32);
            fraction_micros += i64::from(digit - b'0') * place;
        }
        let micros = whole
            .checked_mul(MICROS_PER_CREDIT)
            .and_then(|w| w.checked_add(fraction_micros))
            .ok_or_else(too_large)?;
        Ok(MicroCredits(if negative { -micros } else { micros }))
    }
}

impl MicroCredits {
    /// The amount in credits as the nearest `f64`, for clients that read money as a JSON
    /// number (OpenAI-shaped `usage.cost`). Below 2^53 micro-credits the division is exact
    /// before rounding, so the shortest form of the result reads back as this amount's decimal
    /// (`1002049` micros prints `1.002049`).
    pub fn as_credits_f64(self) -> f64 {
        self.0 as f64 / MICROS_PER_CREDIT as f64
    }
}

impl fmt::Display for MicroCredits {
    /// Shortest exact decimal: `2500000` micros is `2.5`, `-1` is `-0.000001`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.0 < 0 { "-" } else { "" };
        let abs = self.0.unsigned_abs();
        let per = MICROS_PER_CREDIT.unsigned_abs();
        let whole = abs / per;
        let mut fraction = abs % per;
        if fraction == 0 {
            return write!(f, "{sign}{whole}");
        }
        // Trailing zeros off by arithmetic, not by trimming a formatted string: an audit record
        // writes some fifty amounts, and this ran an allocation for each.
        let mut width = 6;
        while fraction.is_multiple_of(10) {
            fraction /= 10;
            width -= 1;
        }
        write!(f, "{sign}{whole}.{fraction:0width$}")
    }
}

impl FromStr for MicroCredits {
    type Err = MoneyParseError;

    fn from_str(text: &str) -> Result<MicroCredits, MoneyParseError> {
        MicroCredits::parse_decimal(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimal_strings_round_trip() {
        for (text, micros) in [
            ("0", 0),
            ("2", 2_000_000),
            ("2.5", 2_500_000),
            ("0.000001", 1),
            ("-0.000001", -1),
            ("100", 100_000_000),
            ("1.23", 1_230_000),
            ("1.00001", 1_000_010),
            ("0.05", 50_000),
            ("-2.000301", -2_000_301),
            ("9223372036854.775807", i64::MAX),
        ] {
            let parsed = MicroCredits::parse_decimal(text).unwrap();
            assert_eq!(parsed.micros(), micros, "{text}");
            assert_eq!(parsed.to_string(), text, "{text}");
        }
    }

    #[test]
    fn bad_amounts_are_refused_with_a_reason() {
        assert_eq!(MicroCredits::parse_decimal(""), Err(MoneyParseError::Empty));
        for bad in ["abc", "1.", ".5", "1e3", " 1", "1,000", "--1", "+1", "1.2.3", "-"] {
            assert!(
                matches!(MicroCredits::parse_decimal(bad), Err(MoneyParseError::Malformed(_))),
                "{bad}"
            );
        }
        assert!(matches!(
            MicroCredits::parse_decimal("0.0000001"),
            Err(MoneyParseError::TooPrecise(_))
        ));
        assert!(matches!(
            MicroCredits::parse_decimal("99999999999999999"),
            Err(MoneyParseError::TooLarge(_))
        ));
    }

    #[test]
    fn credits_as_numbers_print_as_the_exact_decimal() {
        for micros in [0, 1, 6_099, 1_002_049, 2_500_000, 3_000_000, 123_456_789_012, -1_000_001] {
            let amount = MicroCredits::from_micros(micros);
            assert_eq!(amount.as_credits_f64().to_string(), amount.to_string(), "{micros}");
        }
    }

    #[test]
    fn i64_extremes_display() {
        assert_eq!(MicroCredits::from_micros(i64::MIN).to_string(), "-9223372036854.775808");
        assert_eq!(MicroCredits::from_micros(i64::MAX).to_string(), "9223372036854.775807");
    }
}
