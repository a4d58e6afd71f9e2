//! Reading what callers send, below both `routes` and `jobs`: a JSON value parsed into a
//! request type with the failing field's path named in the error, and amounts of credits sent as
//! a string or a number.

use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::error::ApiError;

/// Parses a JSON value into a request type, naming the failing field's path on error
/// (`pricing.per_call: invalid type...`). Used after the body parsed as JSON at all, so a
/// failure here is a 422, not a 400.
pub fn parse_body<T: DeserializeOwned>(value: serde_json::Value) -> Result<T, ApiError> {
    serde_path_to_error::deserialize(value).map_err(|err| {
        let path = err.path().to_string();
        let inner = err.into_inner().to_string();
        let field = match path.as_str() {
            "." => missing_or_unknown_field(&inner).unwrap_or_else(|| "body".to_owned()),
            _ => path,
        };
        ApiError::validation(field, inner)
    })
}

/// An amount of credits sent as a JSON string (`"0.5"`) or number (`0.5`), as decimal text for
/// `MicroCredits::parse_decimal`. Absent or `null` is `None`.
pub fn decimal_text(field: &'static str, value: Option<Value>) -> Result<Option<String>, ApiError> {
    match value {
        None | Some(Value::Null) => Ok(None),
        // "-0" is zero, but no amount a caller or owner sends is signed.
        Some(Value::String(text)) if text.starts_with('-') => {
            Err(ApiError::validation(field, "must not be negative"))
        }
        Some(Value::String(text)) => Ok(Some(text)),
        Some(Value::Number(number)) => Ok(Some(number.to_string())),
        Some(_) => {
            Err(ApiError::validation(field, "must be a decimal number of credits, e.g. \"0.5\""))
        }
    }
}

/// serde reports a missing or unknown field at the parent's path; the name is in the message
/// between backticks.
fn missing_or_unknown_field(message: &str) -> Option<String> {
    let start = message.find('`')? + 1;
    let end = start + message[start..].find('`')?;
    Some(message[start..end].to_owned())
}
