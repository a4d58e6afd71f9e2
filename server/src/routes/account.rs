//! Sign-up, login and `/api/me`.

use actix_web::{HttpRequest, HttpResponse, web};
use registry::UserId;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::auth::{Caller, log_in, peer_key, sign_up};
use crate::error::{ApiError, ErrorBody};
use crate::input::parse_body;
use crate::state::AppState;

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct SignupBody {
    #[schema(example = "ada@example.com")]
    email: String,
    /// 12 to 128 characters.
    #[schema(min_length = 12, max_length = 128)]
    password: String,
    /// A public name for the user's agents' slugs (`handle/agent`): 3 to 32 lowercase
    /// letters, digits and dashes; derived from the email when absent.
    #[schema(min_length = 3, max_length = 32)]
    handle: Option<String>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct LoginBody {
    email: String,
    password: String,
}

/// The JWT scheme of every token Gavel issues.
#[derive(Serialize, ToSchema)]
pub(crate) enum TokenType {
    Bearer,
}

/// A user as its owner sees it.
#[derive(Serialize, ToSchema)]
pub(crate) struct UserView {
    id: Uuid,
    email: String,
    handle: String,
}

#[derive(Serialize, ToSchema)]
pub(crate) struct SignedUp {
    user: UserView,
    access_token: String,
    token_type: TokenType,
    /// Seconds until the token expires.
    expires_in: i64,
}

#[derive(Serialize, ToSchema)]
pub(crate) struct LoggedIn {
    access_token: String,
    token_type: TokenType,
    expires_in: i64,
}

/// `GET /api/me`: the user and its wallet; amounts are decimal strings of credits.
#[derive(Serialize, ToSchema)]
pub(crate) struct Me {
    id: Uuid,
    email: String,
    handle: String,
    balance: String,
    held: String,
    available: String,
}

/// `POST /api/auth/signup`: 201 with the user and an access token.
#[utoipa::path(post, path = "/api/auth/signup", operation_id = "signup", tag = "account", request_body = SignupBody,
    responses((status = 415, body = ErrorBody), (status = 413, body = ErrorBody), (status = 400, body = ErrorBody), (status = 201, body = SignedUp), (status = 409, description = "email or handle taken", body = ErrorBody),
        (status = 422, body = ErrorBody), (status = 429, body = ErrorBody)))]
pub(crate) async fn signup(
    req: HttpRequest,
    state: web::Data<AppState>,
    body: web::Json<serde_json::Value>,
) -> Result<HttpResponse, ApiError> {
    let body: SignupBody = parse_body(body.into_inner())?;
    let user = sign_up(&state, &peer_key(&req), &body.email, body.password, body.handle.as_deref())
        .await?;
    let now = state.now();
    let token = state.jwt.issue(user.id.0, now).map_err(ApiError::internal)?;
    Ok(HttpResponse::Created().json(SignedUp {
        user: UserView { id: user.id.0, email: user.email, handle: user.handle },
        access_token: token,
        token_type: TokenType::Bearer,
        expires_in: state.jwt.ttl_secs(),
    }))
}

/// `POST /api/auth/login`: 200 with an access token, or the same 401 whether the email is
/// unknown or the password wrong (and in about the same time).
#[utoipa::path(post, path = "/api/auth/login", operation_id = "login", tag = "account", request_body = LoginBody,
    responses((status = 415, body = ErrorBody), (status = 413, body = ErrorBody), (status = 400, body = ErrorBody), (status = 200, body = LoggedIn), (status = 401, body = ErrorBody),
        (status = 422, body = ErrorBody), (status = 429, body = ErrorBody)))]
pub(crate) async fn login(
    req: HttpRequest,
    state: web::Data<AppState>,
    body: web::Json<serde_json::Value>,
) -> Result<HttpResponse, ApiError> {
    let body: LoginBody = parse_body(body.into_inner())?;
    let user = log_in(&state, &peer_key(&req), &body.email, body.password).await?;
    let token = state.jwt.issue(user.id.0, state.now()).map_err(ApiError::internal)?;
    Ok(HttpResponse::Ok().json(LoggedIn {
        access_token: token,
        token_type: TokenType::Bearer,
        expires_in: state.jwt.ttl_secs(),
    }))
}

/// `GET /api/me`: who I am and what I can spend.
#[utoipa::path(get, path = "/api/me", operation_id = "me", tag = "account", security(("bearer" = [])),
    responses((status = 200, body = Me), (status = 401, body = ErrorBody)))]
pub(crate) async fn me(
    caller: Caller,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let user =
        registry::find_user(&state.db, caller.user_id).await?.ok_or(ApiError::Unauthenticated)?;
    let balance = state.bank.balance(UserId(user.id.0)).await?;
    Ok(HttpResponse::Ok().json(Me {
        id: user.id.0,
        email: user.email,
        handle: user.handle,
        balance: balance.balance.to_string(),
        held: balance.held.to_string(),
        available: balance.available.to_string(),
    }))
}
