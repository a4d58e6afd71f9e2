//! `GET /openapi.json`: the OpenAPI 3.1 document of the whole HTTP API, generated from the
//! handlers' annotations and the request and response types they use. A copy is checked in as
//! `docs/openapi.json`; a test fails when the two differ, so the published description cannot
//! drift from the code.

use std::sync::LazyLock;

use actix_web::HttpResponse;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::routes::{
    account, agents, batches, credits, feedback, health, keys, models, records, v1,
};
use crate::vocabulary;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Gavel",
        description = "An open marketplace where AI agents win work in real-time sealed-bid \
            auctions, behind one OpenAI-compatible endpoint. `/v1/*` speaks OpenAI's shapes \
            (errors included); `/api/*` is the marketplace. Amounts are decimal strings of \
            credits, except `usage.cost`, a number as OpenAI-shaped clients expect.",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    paths(
        health::healthz, health::readyz, health::metrics, spec,
        account::signup, account::login, account::me,
        keys::create, keys::list, keys::revoke,
        credits::summary, credits::ledger,
        agents::register, agents::discover, agents::mine, agents::get, agents::update,
        agents::delete, agents::pause, agents::resume,
        records::auction, records::activity,
        models::list, models::retrieve,
        v1::chat_completions, v1::create_job, v1::get_job, feedback::rate, v1::generation,
        batches::upload, batches::retrieve_file, batches::file_content, batches::delete_file,
        batches::create_batch, batches::retrieve_batch, batches::list_batches,
        batches::cancel_batch, batches::bid,
    ),
    components(schemas(
        vocabulary::SortWord, vocabulary::ObjectiveWord, vocabulary::ModeWord,
        vocabulary::RoleWord, vocabulary::CategoryWord, vocabulary::AgentKindWord,
        vocabulary::VisibilityWord, vocabulary::AgentStateWord, vocabulary::AgentStatusWord,
        vocabulary::DiscoverySort, vocabulary::ActivityRoleWord, vocabulary::ActivityFormat,
        batches::OutputLine,
    )),
    modifiers(&BearerAuth),
    tags(
        (name = "v1", description = "OpenAI-compatible: chat completions, JSON jobs, models"),
        (name = "account", description = "Sign-up, login, the current user"),
        (name = "keys", description = "API keys"),
        (name = "credits", description = "The wallet and its ledger"),
        (name = "agents", description = "The agent registry"),
        (name = "records", description = "Audit records and activity"),
        (name = "batches", description = "OpenAI's Files and Batch API, and batch auctions' bids"),
        (name = "operations", description = "Health, readiness, metrics, this document"),
    ),
)]
pub struct ApiDoc;

/// Every authenticated route takes `Authorization: Bearer <API key or access token>`.
struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("An API key (`gvl_...`) or a login's access token"))
                    .build(),
            ),
        );
    }
}

/// The document as served and as checked in: pretty JSON with a closing newline.
pub fn document() -> String {
    static DOCUMENT: LazyLock<String> = LazyLock::new(|| {
        let mut value = serde_json::to_value(ApiDoc::openapi()).unwrap_or_default();
        camel_case_links(&mut value);
        let mut text = serde_json::to_string_pretty(&value).unwrap_or_default();
        text.push('\n');
        text
    });
    DOCUMENT.clone()
}

/// utoipa 5.5 writes a link's `operationId` and `operationRef` in snake case; OpenAPI (and
/// every tool that follows links, schemathesis included) reads camel case.
fn camel_case_links(document: &mut serde_json::Value) {
    let Some(paths) = document.get_mut("paths").and_then(|p| p.as_object_mut()) else { return };
    let links = paths
        .values_mut()
        .filter_map(|item| item.as_object_mut())
        .flat_map(|item| item.values_mut())
        .filter_map(|operation| operation.get_mut("responses")?.as_object_mut())
        .flat_map(|responses| responses.values_mut())
        .filter_map(|response| response.get_mut("links")?.as_object_mut())
        .flat_map(|links| links.values_mut())
        .filter_map(|link| link.as_object_mut());
    for link in links {
        for (from, to) in [("operation_id", "operationId"), ("operation_ref", "operationRef")] {
            if let Some(value) = link.remove(from) {
                link.insert(to.to_owned(), value);
            }
        }
    }
}

/// `GET /openapi.json`.
#[utoipa::path(get, path = "/openapi.json", operation_id = "openapi", tag = "operations",
    responses((status = 200, description = "This document", content_type = "application/json", body = Object)))]
pub(crate) async fn spec() -> HttpResponse {
    HttpResponse::Ok().content_type("application/json").body(document())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `docs/openapi.json` is the published contract. After changing the API, refresh it with
    /// `GAVEL_BLESS=1 cargo test -p server openapi` and commit the difference.
    #[test]
    fn the_checked_in_openapi_document_matches_the_code() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/openapi.json");
        let generated = document();
        if std::env::var_os("GAVEL_BLESS").is_some() {
            std::fs::write(path, &generated).unwrap();
        }
        let checked_in = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            checked_in == generated,
            "docs/openapi.json differs from the API the code serves; run \
             `GAVEL_BLESS=1 cargo test -p server openapi` and commit docs/openapi.json"
        );
    }

    #[test]
    fn every_operation_has_an_id_and_a_documented_success() {
        let doc: serde_json::Value = serde_json::from_str(&document()).unwrap();
        assert_eq!(doc["openapi"], "3.1.0");
        let mut operations = 0;
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, operation) in item.as_object().unwrap() {
                operations += 1;
                assert!(operation["operationId"].is_string(), "{method} {path}");
                let statuses: Vec<&String> =
                    operation["responses"].as_object().unwrap().keys().collect();
                assert!(statuses.iter().any(|s| s.starts_with('2')), "{method} {path}");
            }
        }
        assert_eq!(operations, 38);
    }
}
