//! API keys: create (the secret is in this one response), list, revoke.

use actix_web::{HttpResponse, web};
use chrono::{DateTime, Utc};
use registry::{ApiKeyInfo, KeyName};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::auth::Caller;
use crate::error::{ApiError, ErrorBody};
use crate::input::parse_body;
use crate::routes::ListObject;
use crate::state::AppState;

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateKeyBody {
    /// 1 to 100 characters.
    #[schema(min_length = 1, max_length = 100)]
    name: String,
}

/// An API key, by its prefix; never its secret.
#[derive(Serialize, ToSchema)]
pub(crate) struct KeyView {
    id: Uuid,
    name: String,
    /// The key's first characters, to recognise it.
    prefix: String,
    created_at: DateTime<Utc>,
    last_used_at: Option<DateTime<Utc>>,
    revoked_at: Option<DateTime<Utc>>,
}

impl KeyView {
    fn new(info: &ApiKeyInfo) -> KeyView {
        KeyView {
            id: info.id,
            name: info.name.clone(),
            prefix: info.prefix.clone(),
            created_at: info.created_at,
            last_used_at: info.last_used_at,
            revoked_at: info.revoked_at,
        }
    }
}

/// A key just created: the secret `key` is in this response only.
#[derive(Serialize, ToSchema)]
pub(crate) struct CreatedKey {
    #[serde(flatten)]
    info: KeyView,
    key: String,
}

#[derive(Serialize, ToSchema)]
pub(crate) struct KeyList {
    object: ListObject,
    data: Vec<KeyView>,
}

/// `POST /api/keys`: 201 with `key`, shown this once.
#[utoipa::path(post, path = "/api/keys", operation_id = "create_key", tag = "keys", security(("bearer" = [])), request_body = CreateKeyBody,
    responses((status = 415, body = ErrorBody), (status = 413, body = ErrorBody), (status = 400, body = ErrorBody), (status = 201, body = CreatedKey,
            links(("RevokeKey" = (operation_id = "revoke_key", parameters(("id" = "$response.body#/id")))))),
        (status = 401, body = ErrorBody), (status = 422, body = ErrorBody)))]
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
    Ok(HttpResponse::Created()
        .json(CreatedKey { info: KeyView::new(&created.info), key: created.secret }))
}

/// `GET /api/keys`: the caller's keys, by prefix; never a secret.
#[utoipa::path(get, path = "/api/keys", operation_id = "list_keys", tag = "keys", security(("bearer" = [])),
    responses((status = 200, body = KeyList), (status = 401, body = ErrorBody)))]
pub(crate) async fn list(
    caller: Caller,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let keys = registry::list_api_keys(&state.db, caller.user_id).await?;
    let data = keys.iter().map(KeyView::new).collect();
    Ok(HttpResponse::Ok().json(KeyList { object: ListObject::List, data }))
}

/// `DELETE /api/keys/{id}`: 204; the key stops working on the next request. Someone else's
/// key is a 404 and stays valid.
#[utoipa::path(delete, path = "/api/keys/{id}", operation_id = "revoke_key", tag = "keys", security(("bearer" = [])),
    params(("id" = String, Path, description = "The key's id")),
    responses((status = 204, description = "Revoked"), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub(crate) async fn revoke(
    caller: Caller,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let key_id = Uuid::parse_str(&path).map_err(|_| ApiError::NotFound { what: "api key" })?;
    registry::revoke_api_key(&state.db, caller.user_id, key_id, state.now()).await?;
    state.api_keys.forget(key_id);
    Ok(HttpResponse::NoContent().finish())
}
