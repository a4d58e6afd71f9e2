//! Who is looking at a page: the user of the session cookie, and the CSRF token every form of
//! that session carries.
//!
//! The session cookie is HttpOnly (no script reads it), SameSite=Strict (no other site's page
//! sends it) and Secure when the request came over HTTPS. Forms are still checked against the
//! session's CSRF token, because SameSite is a browser's promise, not the server's. The login
//! and sign-up forms, which have no session yet, use a double-submit token: a random value in
//! its own SameSite=Strict cookie that the form must repeat.

use std::future::Future;
use std::pin::Pin;

use actix_web::cookie::{Cookie, SameSite, time};
use actix_web::{FromRequest, HttpRequest, dev::Payload, web};
use registry::UserId;
use subtle::ConstantTimeEq;

use crate::state::AppState;
use crate::web::PageError;

/// The session cookie's name.
pub(crate) const SESSION_COOKIE: &str = "gavel_session";
/// The login and sign-up forms' double-submit cookie.
pub(crate) const FORM_COOKIE: &str = "gavel_form";
/// How long a session lasts from login.
pub(crate) const SESSION_DAYS: i64 = 7;

/// The signed-in user of a page request. Taking a `Visitor` is how a page says it needs a
/// session: without one the visitor is sent to `/login`.
pub(crate) struct Visitor {
    pub(crate) user: UserId,
    pub(crate) csrf: String,
    /// The session cookie's value, to end the session at logout.
    pub(crate) token: String,
}

impl Visitor {
    /// Refuses a form whose CSRF token is not the session's.
    pub(crate) fn check_csrf(&self, token: &str) -> Result<(), PageError> {
        if tokens_match(&self.csrf, token) { Ok(()) } else { Err(PageError::Csrf) }
    }
}

impl FromRequest for Visitor {
    type Error = PageError;
    type Future = Pin<Box<dyn Future<Output = Result<Visitor, PageError>>>>;

    fn from_request(req: &HttpRequest, _payload: &mut Payload) -> Self::Future {
        let state = req.app_data::<web::Data<AppState>>().cloned();
        let token = req.cookie(SESSION_COOKIE).map(|c| c.value().to_owned());
        Box::pin(async move {
            let (Some(state), Some(token)) = (state, token) else {
                return Err(PageError::SignIn);
            };
            let session = registry::web_sessions::find_web_session(&state.db, &token, state.now())
                .await?
                .ok_or(PageError::SignIn)?;
            state.ensure_monthly_grant(session.user).await?;
            Ok(Visitor { user: session.user, csrf: session.csrf_token, token })
        })
    }
}

fn tokens_match(expected: &str, given: &str) -> bool {
    !expected.is_empty() && bool::from(expected.as_bytes().ct_eq(given.as_bytes()))
}

/// True when the request came over HTTPS (directly or, as the proxy says, through it).
fn secure(req: &HttpRequest) -> bool {
    req.connection_info().scheme() == "https"
}

/// The cookie that carries a new session.
pub(crate) fn session_cookie(req: &HttpRequest, token: String) -> Cookie<'static> {
    Cookie::build(SESSION_COOKIE, token)
        .path("/")
        .http_only(true)
        .same_site(SameSite::Strict)
        .secure(secure(req))
        .max_age(time::Duration::days(SESSION_DAYS))
        .finish()
}

/// A cookie that tells the browser to forget `name`.
pub(crate) fn expired_cookie(name: &'static str) -> Cookie<'static> {
    let mut cookie = Cookie::build(name, "").path("/").http_only(true).finish();
    cookie.make_removal();
    cookie
}

/// The double-submit token of the login and sign-up forms: the browser's own, if it has
/// one, else a new one with the cookie to set.
pub(crate) fn form_token(req: &HttpRequest) -> (String, Option<Cookie<'static>>) {
    if let Some(cookie) = req.cookie(FORM_COOKIE)
        && cookie.value().len() == 64
        && cookie.value().bytes().all(|b| b.is_ascii_hexdigit())
    {
        return (cookie.value().to_owned(), None);
    }
    let token = registry::random_token();
    let cookie = Cookie::build(FORM_COOKIE, token.clone())
        .path("/")
        .http_only(true)
        .same_site(SameSite::Strict)
        .secure(secure(req))
        .finish();
    (token, Some(cookie))
}

/// Refuses a login or sign-up form whose token is not its cookie's.
pub(crate) fn check_form_token(req: &HttpRequest, given: &str) -> Result<(), PageError> {
    let expected = req.cookie(FORM_COOKIE).map(|c| c.value().to_owned()).unwrap_or_default();
    if tokens_match(&expected, given) { Ok(()) } else { Err(PageError::Csrf) }
}
