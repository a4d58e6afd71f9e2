//! The whole HTTP surface on one screen (`configure`), plus the glue shared by handlers: the
//! extractors' error handlers, `page_limit`, and the JSON fallbacks for unknown routes and
//! methods (with `Allow`). Parsing a JSON body is `crate::input`'s.

mod account;
pub(crate) mod agents;
pub(crate) mod batches;
mod credits;
mod feedback;
mod health;
mod internal;
mod keys;
pub(crate) mod mcp;
mod models;
pub mod openapi;
mod records;
pub(crate) mod v1;

use actix_web::error::{JsonPayloadError, PathError, QueryPayloadError};
use actix_web::{HttpRequest, HttpResponse, Resource, web};

use crate::auth::Caller;
use crate::error::ApiError;
use crate::jobs::service::Payer;

/// `object` of every list response.
#[derive(serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum ListObject {
    List,
}

/// Mounts every route.
pub fn configure(cfg: &mut web::ServiceConfig, v1_body_limit: usize) {
    // Chat requests carry whole conversations: `/v1` gets its own, larger body limit.
    let v1_json = web::JsonConfig::default().limit(v1_body_limit).error_handler(json_error);
    cfg.service(resource("/healthz", "GET").route(web::get().to(health::healthz)))
        .service(resource("/readyz", "GET").route(web::get().to(health::readyz)))
        .service(resource("/metrics", "GET").route(web::get().to(health::metrics)))
        .service(resource("/openapi.json", "GET").route(web::get().to(openapi::spec)))
        .service(resource("/internal/admin/grant", "POST").route(web::post().to(internal::grant)))
        .service(mcp::scope(v1_body_limit))
        .service(
            web::scope("/api")
                .service(resource("/auth/signup", "POST").route(web::post().to(account::signup)))
                .service(resource("/auth/login", "POST").route(web::post().to(account::login)))
                .service(resource("/me", "GET").route(web::get().to(account::me)))
                .service(
                    resource("/keys", "GET, POST")
                        .route(web::post().to(keys::create))
                        .route(web::get().to(keys::list)),
                )
                .service(resource("/keys/{id}", "DELETE").route(web::delete().to(keys::revoke)))
                .service(resource("/credits", "GET").route(web::get().to(credits::summary)))
                .service(resource("/credits/ledger", "GET").route(web::get().to(credits::ledger)))
                .service(
                    resource("/agents", "GET, POST")
                        .route(web::post().to(agents::register))
                        .route(web::get().to(agents::discover)),
                )
                .service(resource("/agents/mine", "GET").route(web::get().to(agents::mine)))
                .service(
                    resource("/agents/{id}", "DELETE, GET, PATCH")
                        .route(web::get().to(agents::get))
                        .route(web::patch().to(agents::update))
                        .route(web::delete().to(agents::delete)),
                )
                .service(
                    resource("/agents/{id}/pause", "POST").route(web::post().to(agents::pause)),
                )
                .service(
                    resource("/agents/{id}/resume", "POST").route(web::post().to(agents::resume)),
                )
                .service(resource("/auctions/{id}", "GET").route(web::get().to(records::auction)))
                .service(resource("/batches/{id}/bids", "POST").route(web::post().to(batches::bid)))
                .service(resource("/activity", "GET").route(web::get().to(records::activity)))
                .default_service(web::to(no_route)),
        )
        .service(
            web::scope("/v1")
                .app_data(v1_json)
                .service(resource("/models", "GET").route(web::get().to(models::list)))
                .service(resource("/models/{id:.+}", "GET").route(web::get().to(models::retrieve)))
                .service(
                    resource("/chat/completions", "POST")
                        .route(web::post().to(v1::chat_completions)),
                )
                .service(resource("/jobs", "POST").route(web::post().to(v1::create_job)))
                .service(resource("/jobs/{id}", "GET").route(web::get().to(v1::get_job)))
                .service(
                    resource("/jobs/{id}/feedback", "POST").route(web::post().to(feedback::rate)),
                )
                .service(resource("/generation", "GET").route(web::get().to(v1::generation)))
                .service(resource("/files", "POST").route(web::post().to(batches::upload)))
                .service(
                    resource("/files/{id}", "GET, DELETE")
                        .route(web::get().to(batches::retrieve_file))
                        .route(web::delete().to(batches::delete_file)),
                )
                .service(
                    resource("/files/{id}/content", "GET")
                        .route(web::get().to(batches::file_content)),
                )
                .service(
                    resource("/batches", "GET, POST")
                        .route(web::get().to(batches::list_batches))
                        .route(web::post().to(batches::create_batch)),
                )
                .service(
                    resource("/batches/{id}", "GET").route(web::get().to(batches::retrieve_batch)),
                )
                .service(
                    resource("/batches/{id}/cancel", "POST")
                        .route(web::post().to(batches::cancel_batch)),
                )
                .default_service(web::to(no_route)),
        );
}

/// A resource whose wrong-method answer is a JSON 405 with the `Allow` header RFC 9110 asks
/// for, not an empty body. `allow` lists the methods its routes take.
fn resource(path: &str, allow: &'static str) -> Resource {
    web::resource(path)
        .default_service(web::to(move |req: HttpRequest| method_not_allowed(req, allow)))
}

/// The JSON 404 for any path no route matches.
pub async fn no_route(req: HttpRequest) -> Result<HttpResponse, ApiError> {
    Err(ApiError::NoRoute { method: req.method().to_string(), path: truncated(req.path()) })
}

async fn method_not_allowed(
    req: HttpRequest,
    allow: &'static str,
) -> Result<HttpResponse, ApiError> {
    Err(ApiError::MethodNotAllowed {
        method: req.method().to_string(),
        path: truncated(req.path()),
        allow,
    })
}

/// Echoing a path is useful; echoing a megabyte of it is not.
fn truncated(path: &str) -> String {
    path.chars().take(200).collect()
}

/// Turns actix's JSON extractor failures into the API's errors: wrong content type 415,
/// oversized 413, malformed 400.
pub fn json_error(err: JsonPayloadError, _req: &HttpRequest) -> actix_web::Error {
    let api_error = match err {
        JsonPayloadError::ContentType => {
            ApiError::UnsupportedMediaType("Content-Type must be application/json".into())
        }
        JsonPayloadError::OverflowKnownLength { limit, .. }
        | JsonPayloadError::Overflow { limit } => ApiError::PayloadTooLarge { limit },
        JsonPayloadError::Deserialize(e) => ApiError::MalformedJson(format!("malformed JSON: {e}")),
        JsonPayloadError::Payload(actix_web::error::PayloadError::Io(e))
            if e.kind() == std::io::ErrorKind::TimedOut =>
        {
            ApiError::BodyTimeout
        }
        JsonPayloadError::Serialize(e) => ApiError::internal(e),
        other => ApiError::BadRequest(format!("could not read the request body: {other}")),
    };
    api_error.into()
}

/// A path segment that does not parse (e.g. a malformed id) names nothing that exists.
pub fn path_error(_err: PathError, _req: &HttpRequest) -> actix_web::Error {
    ApiError::NotFound { what: "resource" }.into()
}

pub fn query_error(err: QueryPayloadError, _req: &HttpRequest) -> actix_web::Error {
    ApiError::BadRequest(format!("invalid query string: {err}")).into()
}

/// A `limit` query parameter: absent means `default`, else an integer from 1 to `max`. An
/// empty value is refused like any other that is not such an integer: a query parameter is
/// either there and valid, or absent.
/// Who pays for a job the API runs: the caller, and the key it came with (per-key usage).
pub(crate) fn payer(caller: &Caller) -> Payer {
    Payer { user: caller.user_id, api_key: caller.api_key() }
}

pub(crate) fn page_limit(text: Option<&str>, default: u64, max: u64) -> Result<u64, ApiError> {
    match text {
        None => Ok(default),
        Some(text) => text.parse::<u64>().ok().filter(|n| (1..=max).contains(n)).ok_or_else(|| {
            ApiError::validation("limit", format!("must be an integer from 1 to {max}"))
        }),
    }
}
