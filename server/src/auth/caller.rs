//! `Caller`: the authenticated user behind a request.
//!
//! Taking a `Caller` argument is how a handler says it needs authentication. The extractor
//! reads `Authorization: Bearer <token>`; a token starting with `gvl_` is an API key (looked up
//! by its SHA-256 on every request, so a revocation takes effect on the next one), anything
//! else must be a valid access token. It then applies the per-key rate limit and makes sure
//! the month's free credits are in.

use std::future::Future;
use std::pin::Pin;

use actix_web::http::header;
use actix_web::{FromRequest, HttpRequest, dev::Payload, web};
use registry::UserId;
use uuid::Uuid;

use crate::error::ApiError;
use crate::state::AppState;

/// Which credential authenticated the request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Credential {
    ApiKey(Uuid),
    AccessToken,
}

/// The authenticated user of a request.
#[derive(Clone, Copy, Debug)]
pub struct Caller {
    pub user_id: UserId,
    pub credential: Credential,
}

impl Caller {
    /// The API key the request came with; `None` for an access token.
    pub fn api_key(&self) -> Option<Uuid> {
        match self.credential {
            Credential::ApiKey(id) => Some(id),
            Credential::AccessToken => None,
        }
    }
}

impl FromRequest for Caller {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Caller, ApiError>>>>;

    fn from_request(req: &HttpRequest, _payload: &mut Payload) -> Self::Future {
        let state = req.app_data::<web::Data<AppState>>().cloned();
        let token = bearer_token(req);
        Box::pin(async move {
            let state = state.ok_or_else(|| ApiError::internal(anyhow::anyhow!("no app state")))?;
            let token = token.ok_or(ApiError::Unauthenticated)?;
            let caller = authenticate(&state, &token).await?;
            let rate_key = match caller.credential {
                Credential::ApiKey(key_id) => format!("key:{key_id}"),
                Credential::AccessToken => format!("user:{}", caller.user_id),
            };
            state.rate_limiter.check(&rate_key).await?;
            state.ensure_monthly_grant(caller.user_id).await?;
            Ok(caller)
        })
    }
}

async fn authenticate(state: &AppState, token: &str) -> Result<Caller, ApiError> {
    let now = state.now();
    if token.starts_with(registry::API_KEY_PREFIX) {
        // The one server on its file sees every revoke: it may remember keys.
        let owner = if state.bank.is_authority() {
            state.api_keys.authenticate(&state.db, token, now).await?
        } else {
            registry::authenticate_api_key(&state.db, token, now).await?
        };
        let owner = owner.ok_or(ApiError::Unauthenticated)?;
        return Ok(Caller { user_id: owner.user_id, credential: Credential::ApiKey(owner.key_id) });
    }
    let user = state.jwt.verify(token).ok_or(ApiError::Unauthenticated)?;
    // A token outlives nothing: a user removed from the database is not authenticated.
    if registry::find_user(&state.db, UserId(user)).await?.is_none() {
        return Err(ApiError::Unauthenticated);
    }
    Ok(Caller { user_id: UserId(user), credential: Credential::AccessToken })
}

/// The authenticated user of a request, or nobody: for routes that anonymous visitors may
/// read (public discovery). A credential that is present must be valid; without one the
/// budget is the client address's.
#[derive(Clone, Copy, Debug)]
pub struct MaybeCaller(pub Option<Caller>);

impl FromRequest for MaybeCaller {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<MaybeCaller, ApiError>>>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        if req.headers().contains_key(header::AUTHORIZATION) {
            let caller = Caller::from_request(req, payload);
            return Box::pin(async move { caller.await.map(|c| MaybeCaller(Some(c))) });
        }
        let state = req.app_data::<web::Data<AppState>>().cloned();
        let peer = peer_key(req);
        Box::pin(async move {
            let state = state.ok_or_else(|| ApiError::internal(anyhow::anyhow!("no app state")))?;
            state.rate_limiter.check(&peer).await?;
            Ok(MaybeCaller(None))
        })
    }
}

/// The rate-limit key of an unauthenticated client: its address (the socket's, not a header
/// a client could forge).
pub fn peer_key(req: &HttpRequest) -> String {
    let peer =
        req.peer_addr().map(|addr| addr.ip().to_string()).unwrap_or_else(|| "unknown".into());
    format!("ip:{peer}")
}

fn bearer_token(req: &HttpRequest) -> Option<String> {
    let value = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let token = token.trim();
    (!token.is_empty() && token.len() <= 4096).then(|| token.to_owned())
}
