//! Parsed agent specifications: what `POST /api/agents` and `PATCH` become once every field
//! is known good. Each parse error names the field on the wire (`pricing.per_call`).

use std::fmt;

use auction_engine::{MicroCredits, PriceSheet};

use crate::RegistryError;

/// The categories a job can be auctioned in.
pub const CATEGORIES: [&str; 9] = [
    "chat",
    "completion",
    "embedding",
    "ocr",
    "transcription",
    "image",
    "audio",
    "scrape",
    "code-review",
];

/// How Gavel talks to an agent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AgentKind {
    /// An OpenAI-compatible base URL: Gavel POSTs `{endpoint}/chat/completions`.
    OpenAiChat,
    /// Any JSON endpoint: Gavel POSTs the job's `input` to `endpoint`.
    Json,
}

impl AgentKind {
    pub fn parse(raw: &str) -> Result<AgentKind, RegistryError> {
        match raw {
            "openai-chat" => Ok(AgentKind::OpenAiChat),
            "json" => Ok(AgentKind::Json),
            other => Err(RegistryError::invalid(
                "kind",
                format!("`{other}` is not one of: openai-chat, json"),
            )),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            AgentKind::OpenAiChat => "openai-chat",
            AgentKind::Json => "json",
        }
    }
}

/// Who can see and call an agent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Visibility {
    /// Listed in discovery and `/v1/models`; anyone may call it.
    Public,
    /// Seen and called by its owner only.
    Private,
}

impl Visibility {
    pub fn parse(raw: &str) -> Result<Visibility, RegistryError> {
        match raw {
            "public" => Ok(Visibility::Public),
            "private" => Ok(Visibility::Private),
            other => Err(RegistryError::invalid(
                "visibility",
                format!("`{other}` is not one of: public, private"),
            )),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Visibility::Public => "public",
            Visibility::Private => "private",
        }
    }
}

/// Whether the owner has the agent taking jobs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AgentState {
    Active,
    Paused,
}

impl AgentState {
    pub fn parse(raw: &str) -> Result<AgentState, RegistryError> {
        match raw {
            "active" => Ok(AgentState::Active),
            "paused" => Ok(AgentState::Paused),
            other => Err(RegistryError::invalid(
                "status",
                format!("`{other}` is not one of: active, paused"),
            )),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            AgentState::Active => "active",
            AgentState::Paused => "paused",
        }
    }
}

/// An agent's name, the part after `handle/`: 1 to 64 of `a-z 0-9 . _ -`, starting with a
/// letter or digit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgentName(String);

impl AgentName {
    pub fn parse(raw: &str) -> Result<AgentName, RegistryError> {
        // Not trimmed: a name is a slug's part, and a space around it is a typo to point out.
        let name = raw.to_lowercase();
        if name.is_empty() || name.len() > 64 {
            return Err(RegistryError::invalid("name", "must be 1 to 64 characters"));
        }
        if !name.starts_with(|c: char| c.is_ascii_alphanumeric()) {
            return Err(RegistryError::invalid("name", "must start with a letter or digit"));
        }
        if !name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')) {
            return Err(RegistryError::invalid(
                "name",
                "may contain only letters, digits, '.', '_' and '-'",
            ));
        }
        Ok(AgentName(name))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A secret that must never be shown: `Debug` is redacted and there is no `Display`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: String) -> Secret {
        Secret(value)
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// Raw agent fields, as text, before parsing. `None` means "not given".
#[derive(Clone, Debug, Default)]
pub struct RawAgentSpec {
    pub name: Option<String>,
    pub description: Option<String>,
    pub kind: Option<String>,
    pub categories: Option<Vec<String>>,
    pub tags: Option<Vec<String>>,
    pub endpoint: Option<String>,
    pub upstream_model: Option<String>,
    pub upstream_api_key: Option<String>,
    pub bid_url: Option<String>,
    pub max_latency_ms: Option<i64>,
    pub regions: Option<Vec<String>>,
    pub features: Option<Vec<String>>,
    pub context_length: Option<i64>,
    pub visibility: Option<String>,
    pub pricing: Option<RawPricing>,
}

/// Prices as decimal text (`"0.5"`); a JSON number is turned into its text by the caller.
#[derive(Clone, Debug, Default)]
pub struct RawPricing {
    pub per_call: Option<String>,
    pub per_million_input_tokens: Option<String>,
    pub per_million_output_tokens: Option<String>,
}

/// A complete, valid agent specification.
#[derive(Clone, Debug)]
pub struct AgentSpec {
    pub name: AgentName,
    pub description: String,
    pub kind: AgentKind,
    pub categories: Vec<String>,
    pub tags: Vec<String>,
    /// Already vetted by the egress policy (the server does that: it can resolve names).
    pub endpoint: String,
    pub upstream_model: Option<String>,
    pub upstream_api_key: Option<Secret>,
    pub bid_url: Option<String>,
    pub max_latency_ms: Option<u32>,
    pub regions: Vec<String>,
    pub features: Vec<String>,
    pub context_length: Option<u64>,
    pub visibility: Visibility,
    pub pricing: PriceSheet,
}

impl AgentSpec {
    /// Parses a registration. `endpoint` and `bid_url` must already have passed the egress
    /// check; here they are only checked for presence and length.
    pub fn parse(raw: RawAgentSpec) -> Result<AgentSpec, RegistryError> {
        let name = AgentName::parse(raw.name.as_deref().ok_or_else(|| missing("name"))?)?;
        let kind = AgentKind::parse(raw.kind.as_deref().ok_or_else(|| missing("kind"))?)?;
        let endpoint = parse_url("endpoint", raw.endpoint.ok_or_else(|| missing("endpoint"))?)?;
        let upstream_model =
            raw.upstream_model.map(|m| parse_text("upstream_model", &m, 1, 200)).transpose()?;
        if kind == AgentKind::OpenAiChat && upstream_model.is_none() {
            return Err(RegistryError::invalid(
                "upstream_model",
                "is required for kind openai-chat",
            ));
        }
        let pricing = parse_pricing(raw.pricing.ok_or_else(|| missing("pricing"))?, None)?;
        Ok(AgentSpec {
            name,
            description: parse_text(
                "description",
                raw.description.as_deref().unwrap_or(""),
                0,
                2000,
            )?,
            kind,
            categories: parse_categories(raw.categories.ok_or_else(|| missing("categories"))?)?,
            tags: parse_labels("tags", raw.tags.unwrap_or_default(), 20, 32)?,
            endpoint,
            upstream_model,
            upstream_api_key: raw.upstream_api_key.map(|k| parse_secret(&k)).transpose()?,
            bid_url: raw.bid_url.map(|u| parse_url("bid_url", u)).transpose()?,
            max_latency_ms: raw.max_latency_ms.map(parse_latency).transpose()?,
            regions: parse_labels("regions", raw.regions.unwrap_or_default(), 20, 32)?,
            features: parse_labels("features", raw.features.unwrap_or_default(), 32, 48)?,
            context_length: raw.context_length.map(parse_context).transpose()?,
            visibility: Visibility::parse(raw.visibility.as_deref().unwrap_or("public"))?,
            pricing,
        })
    }
}

pub(crate) fn missing(field: &'static str) -> RegistryError {
    RegistryError::invalid(field, "is required")
}

pub(crate) fn parse_text(
    field: &'static str,
    raw: &str,
    min: usize,
    max: usize,
) -> Result<String, RegistryError> {
    let text = raw.trim();
    let len = text.chars().count();
    // The upper bound is on what was sent, before trimming.
    if len < min || raw.chars().count() > max {
        return Err(RegistryError::invalid(field, format!("must be {min} to {max} characters")));
    }
    if text.chars().any(|c| c.is_control() && c != '\n' && c != '\t') {
        return Err(RegistryError::invalid(field, "must not contain control characters"));
    }
    Ok(text.to_owned())
}

/// Checks an upstream API key as its owner typed it: 1 to 1024 printable characters.
pub fn check_upstream_key(raw: &str) -> Result<(), RegistryError> {
    if raw.is_empty() || raw.len() > 1024 || raw.chars().any(char::is_control) {
        return Err(RegistryError::invalid(
            "upstream_api_key",
            "must be 1 to 1024 printable characters",
        ));
    }
    Ok(())
}

/// An upstream key as stored: the server seals keys before storing them, so what arrives here
/// is the sealed text (a 1024-character key seals to about 1,430), or a key typed directly.
pub(crate) fn parse_secret(raw: &str) -> Result<Secret, RegistryError> {
    if raw.is_empty() || raw.len() > 2048 || raw.chars().any(char::is_control) {
        return Err(RegistryError::invalid(
            "upstream_api_key",
            "must be 1 to 2048 printable characters as stored",
        ));
    }
    Ok(Secret::new(raw.to_owned()))
}

pub(crate) fn parse_url(field: &'static str, raw: String) -> Result<String, RegistryError> {
    if raw.is_empty() || raw.len() > 2048 {
        return Err(RegistryError::invalid(field, "must be a URL of at most 2048 characters"));
    }
    if !(raw.starts_with("http://") || raw.starts_with("https://")) {
        return Err(RegistryError::invalid(field, "must be an http or https URL"));
    }
    Ok(raw)
}

pub(crate) fn parse_latency(raw: i64) -> Result<u32, RegistryError> {
    u32::try_from(raw)
        .ok()
        .filter(|ms| (1..=600_000).contains(ms))
        .ok_or_else(|| RegistryError::invalid("max_latency_ms", "must be from 1 to 600000"))
}

pub(crate) fn parse_context(raw: i64) -> Result<u64, RegistryError> {
    u64::try_from(raw)
        .ok()
        .filter(|n| (1..=100_000_000).contains(n))
        .ok_or_else(|| RegistryError::invalid("context_length", "must be from 1 to 100000000"))
}

pub(crate) fn parse_categories(raw: Vec<String>) -> Result<Vec<String>, RegistryError> {
    if raw.is_empty() {
        return Err(RegistryError::invalid("categories", "must name at least one category"));
    }
    let mut categories = Vec::new();
    for category in raw {
        let category = category.trim().to_lowercase();
        if !CATEGORIES.contains(&category.as_str()) {
            return Err(RegistryError::invalid(
                "categories",
                format!("`{category}` is not one of: {}", CATEGORIES.join(", ")),
            ));
        }
        if !categories.contains(&category) {
            categories.push(category);
        }
    }
    Ok(categories)
}

/// Free-form labels (tags, regions, features): lower-cased, de-duplicated, bounded.
pub(crate) fn parse_labels(
    field: &'static str,
    raw: Vec<String>,
    max_items: usize,
    max_len: usize,
) -> Result<Vec<String>, RegistryError> {
    if raw.len() > max_items {
        return Err(RegistryError::invalid(field, format!("may have at most {max_items} items")));
    }
    let mut labels = Vec::new();
    for label in raw {
        let label = label.trim().to_lowercase();
        if label.is_empty() || label.len() > max_len {
            return Err(RegistryError::invalid(
                field,
                format!("items must be 1 to {max_len} characters"),
            ));
        }
        if !label
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':' | '/'))
        {
            return Err(RegistryError::invalid(
                field,
                format!("`{label}` may contain only letters, digits and - _ . : /"),
            ));
        }
        if !labels.contains(&label) {
            labels.push(label);
        }
    }
    Ok(labels)
}

/// Parses a price sheet. With `base`, missing prices keep the base's values (a PATCH).
pub(crate) fn parse_pricing(
    raw: RawPricing,
    base: Option<PriceSheet>,
) -> Result<PriceSheet, RegistryError> {
    let price = |field: &'static str,
                 text: Option<String>,
                 current: Option<MicroCredits>|
     -> Result<MicroCredits, RegistryError> {
        match (text, current) {
            (Some(text), _) => {
                let amount = MicroCredits::parse_decimal(&text)
                    .map_err(|e| RegistryError::invalid(field, e.to_string()))?;
                if amount.is_negative() {
                    return Err(RegistryError::invalid(field, "must not be negative"));
                }
                if amount > MicroCredits::from_micros(1_000_000 * 1_000_000) {
                    return Err(RegistryError::invalid(field, "must be at most 1000000 credits"));
                }
                Ok(amount)
            }
            (None, Some(current)) => Ok(current),
            (None, None) => Ok(MicroCredits::ZERO),
        }
    };
    let sheet = PriceSheet {
        per_call: price("pricing.per_call", raw.per_call, base.map(|b| b.per_call))?,
        per_million_input_tokens: price(
            "pricing.per_million_input_tokens",
            raw.per_million_input_tokens,
            base.map(|b| b.per_million_input_tokens),
        )?,
        per_million_output_tokens: price(
            "pricing.per_million_output_tokens",
            raw.per_million_output_tokens,
            base.map(|b| b.per_million_output_tokens),
        )?,
    };
    Ok(sheet)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn valid() -> RawAgentSpec {
        RawAgentSpec {
            name: Some("Fast-OCR".into()),
            kind: Some("json".into()),
            categories: Some(vec!["ocr".into()]),
            endpoint: Some("https://ocr.example.com/run".into()),
            pricing: Some(RawPricing { per_call: Some("0.25".into()), ..RawPricing::default() }),
            ..RawAgentSpec::default()
        }
    }

    fn field_of(raw: RawAgentSpec) -> &'static str {
        match AgentSpec::parse(raw) {
            Err(RegistryError::Invalid { field, .. }) => field,
            other => panic!("expected an invalid field, got {other:?}"),
        }
    }

    #[test]
    fn a_minimal_json_agent_parses_with_defaults() {
        let spec = AgentSpec::parse(valid()).unwrap();
        assert_eq!(spec.name.as_str(), "fast-ocr");
        assert_eq!(spec.visibility, Visibility::Public);
        assert_eq!(spec.pricing.per_call, MicroCredits::parse_decimal("0.25").unwrap());
        assert_eq!(spec.pricing.per_million_input_tokens, MicroCredits::ZERO);
    }

    #[test]
    fn each_bad_field_is_named() {
        let cases: Vec<(RawAgentSpec, &str)> = vec![
            (RawAgentSpec { name: None, ..valid() }, "name"),
            (RawAgentSpec { name: Some("a b".into()), ..valid() }, "name"),
            (RawAgentSpec { kind: Some("grpc".into()), ..valid() }, "kind"),
            (RawAgentSpec { endpoint: None, ..valid() }, "endpoint"),
            (RawAgentSpec { categories: Some(vec![]), ..valid() }, "categories"),
            (RawAgentSpec { categories: Some(vec!["astrology".into()]), ..valid() }, "categories"),
            (RawAgentSpec { pricing: None, ..valid() }, "pricing"),
            (
                RawAgentSpec {
                    pricing: Some(RawPricing {
                        per_call: Some("-1".into()),
                        ..RawPricing::default()
                    }),
                    ..valid()
                },
                "pricing.per_call",
            ),
            (
                RawAgentSpec {
                    pricing: Some(RawPricing {
                        per_million_input_tokens: Some("1.2.3".into()),
                        ..RawPricing::default()
                    }),
                    ..valid()
                },
                "pricing.per_million_input_tokens",
            ),
            (RawAgentSpec { kind: Some("openai-chat".into()), ..valid() }, "upstream_model"),
            (RawAgentSpec { max_latency_ms: Some(0), ..valid() }, "max_latency_ms"),
            (RawAgentSpec { context_length: Some(-5), ..valid() }, "context_length"),
            (RawAgentSpec { visibility: Some("secret".into()), ..valid() }, "visibility"),
            (RawAgentSpec { tags: Some(vec!["has space".into()]), ..valid() }, "tags"),
            (RawAgentSpec { description: Some("x".repeat(2001)), ..valid() }, "description"),
        ];
        for (raw, field) in cases {
            assert_eq!(field_of(raw), field);
        }
    }
}
