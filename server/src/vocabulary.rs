//! The vocabularies of the API's string fields and amounts, as OpenAPI schemas. Handlers read
//! these fields as text and parse them with an error that names the field; these types exist
//! so that `/openapi.json` states the words each field accepts. A test keeps the category
//! list equal to the registry's.

use utoipa::ToSchema;
use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Schema, Type};

/// The schema of an amount of credits, as `decimal_text` reads one: a decimal string of at most
/// six decimals (`"0.5"`), or a non-negative JSON number, or null (absent).
pub fn credits_schema() -> Schema {
    OneOfBuilder::new()
        .item(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .pattern(Some(r"^[0-9]{1,7}(\.[0-9]{1,6})?$"))
                .examples([serde_json::json!("0.5")]),
        )
        .item(
            ObjectBuilder::new()
                .schema_type(Type::Number)
                .minimum(Some(0.0))
                .maximum(Some(1_000_000.0)),
        )
        .item(ObjectBuilder::new().schema_type(Type::Null))
        .description(Some(
            "An amount of credits: a decimal string (at most six decimals) or a number",
        ))
        .into()
}

/// The words `provider.sort` accepts (`throughput` is read as `reputation`).
#[derive(ToSchema)]
#[schema(rename_all = "snake_case")]
pub enum SortWord {
    Price,
    Latency,
    Reputation,
    Throughput,
}

#[derive(ToSchema)]
#[schema(rename_all = "snake_case")]
pub enum ObjectiveWord {
    Balanced,
    Cost,
    Quality,
    Latency,
}

#[derive(ToSchema)]
#[schema(rename_all = "snake_case")]
pub enum ModeWord {
    Execute,
    Recommend,
}

#[derive(ToSchema)]
#[schema(rename_all = "snake_case")]
pub enum RoleWord {
    System,
    Developer,
    User,
    Assistant,
    Tool,
    Function,
}

/// The categories a job can be auctioned in (`registry::agents::CATEGORIES`).
#[derive(ToSchema)]
#[schema(rename_all = "kebab-case")]
pub enum CategoryWord {
    Chat,
    Completion,
    Embedding,
    Ocr,
    Transcription,
    Image,
    Audio,
    Scrape,
    CodeReview,
}

/// How Gavel talks to an agent.
#[derive(ToSchema)]
pub enum AgentKindWord {
    #[schema(rename = "openai-chat")]
    OpenAiChat,
    #[schema(rename = "json")]
    Json,
}

#[derive(ToSchema)]
#[schema(rename_all = "snake_case")]
pub enum VisibilityWord {
    Public,
    Private,
}

/// The states an owner may set.
#[derive(ToSchema)]
#[schema(rename_all = "snake_case")]
pub enum AgentStateWord {
    Active,
    Paused,
}

/// An agent's status as shown: `circuit_open` while this instance's breaker keeps it out.
#[derive(ToSchema)]
#[schema(rename_all = "snake_case")]
pub enum AgentStatusWord {
    Active,
    Paused,
    CircuitOpen,
}

#[derive(ToSchema)]
#[schema(rename_all = "snake_case")]
pub enum DiscoverySort {
    Newest,
    Price,
    Reputation,
}

#[derive(ToSchema)]
#[schema(rename_all = "snake_case")]
pub enum ActivityRoleWord {
    Caller,
    Owner,
    All,
}

#[derive(ToSchema)]
#[schema(rename_all = "snake_case")]
pub enum ActivityFormat {
    Json,
    Csv,
}

#[cfg(test)]
mod tests {
    use utoipa::PartialSchema;

    use super::*;

    #[test]
    fn the_category_schema_lists_the_registry_categories() {
        let schema = serde_json::to_value(CategoryWord::schema()).unwrap();
        let words: Vec<&str> =
            schema["enum"].as_array().unwrap().iter().map(|w| w.as_str().unwrap()).collect();
        assert_eq!(words, registry::agents::CATEGORIES);
    }
}
