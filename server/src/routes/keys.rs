//! API keys: create (the secret is in this one response), list, revoke.

use actix_web::{HttpResponse, web};
use registry::{ApiKeyInfo, KeyName};
use serde::Deserialize;
use serde_json::json;
use uuid::Uuid;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::routes::parse_body;
use crate::state::AppState;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateKeyBody {
    name: String,
}

fn key_json(info: &ApiKeyInfo) -> serde_json::Value {
    json!({
        "id": info.id,
        "name": info.name,
        "prefix": info.prefix,
        "created_at": info.created_at,
        "last_used_at": info.last_used_at,
        "revoked_at": info.revoked_at,
    })
}

/// `POST /api/keys`: 201 with `key`, shown this once.
pub(crate) async fn create(
    caller: Caller,
    state: web::Data<AppState>,
    body: web::Json<serde_json::Value>,
) -> Result<HttpResponse, ApiError> {
    let body: CreateKeyBody = parse_body(body.into_inner())?;
    let name = KeyName::parse(&body.name)?;
    let created =
        registry::create_api_key(&state.db, caller.user_id, name, Uuid::now_v7(), state.now())
            .await?;
    let mut response = key_json(&created.info);
    response["key"] = json!(created.secret);
    Ok(HttpResponse::Created().json(response))
}

/// `GET /api/keys`: the caller's keys, by prefix; never a secret.
pub(crate) async fn list(
    caller: Caller,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let keys = registry::list_api_keys(&state.db, caller.user_id).await?;
    let data: Vec<_> = keys.iter().map(key_json).collect();
    Ok(HttpResponse::Ok().json(json!({"object": "list", "data": data})))
}

/// `DELETE /api/keys/{id}`: 204; the key stops working on the next request. Someone else's
/// key is a 404 and stays valid.
pub(crate) async fn revoke(
    caller: Caller,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let key_id = Uuid::parse_str(&path).map_err(|_| ApiError::NotFound { what: "api key" })?;
    registry::revoke_api_key(&state.db, caller.user_id, key_id, state.now()).await?;
    Ok(HttpResponse::NoContent().finish())
}
