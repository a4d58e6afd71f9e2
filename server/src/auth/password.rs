//! Signing up and logging in with a password: the rules the API's `/api/auth/*` and the
//! dashboard's forms share, so the two cannot drift (the same limits, the same hashing pool,
//! the same answer for an unknown email and a wrong password).

use registry::{Email, Handle, NewUser, Password, User};
use uuid::Uuid;

use crate::error::ApiError;
use crate::state::AppState;

/// Creates a user (and their first month's credits). `peer` keys the auth rate limit.
pub(crate) async fn sign_up(
    state: &AppState,
    peer: &str,
    email: &str,
    password: String,
    handle: Option<&str>,
) -> Result<User, ApiError> {
    state.auth_limiter.check(peer).await?;
    let email = Email::parse(email)?;
    let password = Password::parse(password)?;
    let handle = handle.map(Handle::parse).transpose()?;
    let password_hash = state.hashing.run(move || registry::hash_password(&password)).await??;
    let new_user = NewUser { email, handle, password_hash };
    let user = registry::create_user(&state.db, new_user, Uuid::now_v7(), state.now()).await?;
    state.ensure_monthly_grant(user.id).await?;
    Ok(user)
}

/// The user whose email and password these are, or `InvalidLogin` whether the email is
/// unknown or the password wrong (in about the same time: an unknown email is checked against
/// a dummy hash). Limited per peer and per account, so guesses spread over many addresses
/// still meet a limit on each.
pub(crate) async fn log_in(
    state: &AppState,
    peer: &str,
    email: &str,
    password: String,
) -> Result<User, ApiError> {
    state.auth_limiter.check(peer).await?;
    let email = Email::parse(email).ok();
    if let Some(email) = &email {
        state.auth_limiter.check(&format!("account:{}", email.as_str())).await?;
    }
    let credentials = match &email {
        Some(email) => registry::find_credentials_by_email(&state.db, email).await?,
        None => None,
    };
    let stored_hash = credentials.as_ref().map(|c| c.password_hash.clone());
    let verified = state
        .hashing
        .run(move || registry::verify_password(&password, stored_hash.as_deref()))
        .await?;
    match (verified, credentials) {
        (true, Some(credentials)) => Ok(credentials.user),
        _ => Err(ApiError::InvalidLogin),
    }
}
