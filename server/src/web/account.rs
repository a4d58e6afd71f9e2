//! Sign-up, login and logout pages. A failed form is shown again with the error at its
//! field; the password is never put back into the page.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use askama::Template;
use chrono::Duration;
use serde::Deserialize;

use crate::auth::{log_in, peer_key, sign_up};
use crate::error::ApiError;
use crate::state::AppState;
use crate::web::home::Nav;
use crate::web::session::{
    FORM_COOKIE, SESSION_COOKIE, SESSION_DAYS, Visitor, check_form_token, expired_cookie,
    form_token, session_cookie,
};
use crate::web::{PageError, render, see_other};

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage {
    nav: Option<Nav>,
    csrf: String,
    email: String,
    error: Option<String>,
}

#[derive(Template)]
#[template(path = "signup.html")]
struct SignupPage {
    nav: Option<Nav>,
    csrf: String,
    email: String,
    handle: String,
    /// `(field, message)`: the field the error belongs to.
    error: Option<(String, String)>,
}

#[derive(Deserialize)]
pub(crate) struct LoginForm {
    csrf: String,
    email: String,
    password: String,
}

#[derive(Deserialize)]
pub(crate) struct SignupForm {
    csrf: String,
    email: String,
    password: String,
    handle: Option<String>,
}

#[derive(Deserialize)]
pub(crate) struct CsrfForm {
    pub(crate) csrf: String,
}

/// Answers a form page, setting the double-submit cookie when the browser had none.
fn form_page(
    req: &HttpRequest,
    page: impl FnOnce(String) -> Result<HttpResponse, PageError>,
) -> Result<HttpResponse, PageError> {
    let (token, cookie) = form_token(req);
    let mut response = page(token)?;
    if let Some(cookie) = cookie {
        response.add_cookie(&cookie).map_err(|e| PageError::Api(ApiError::internal(e)))?;
    }
    Ok(response)
}

pub(crate) async fn login_form(req: HttpRequest) -> Result<HttpResponse, PageError> {
    form_page(&req, |csrf| {
        render(StatusCode::OK, &LoginPage { nav: None, csrf, email: String::new(), error: None })
    })
}

pub(crate) async fn signup_form(req: HttpRequest) -> Result<HttpResponse, PageError> {
    form_page(&req, |csrf| {
        let page = SignupPage {
            nav: None,
            csrf,
            email: String::new(),
            handle: String::new(),
            error: None,
        };
        render(StatusCode::OK, &page)
    })
}

pub(crate) async fn login(
    req: HttpRequest,
    state: web::Data<AppState>,
    form: web::Form<LoginForm>,
) -> Result<HttpResponse, PageError> {
    check_form_token(&req, &form.csrf)?;
    let form = form.into_inner();
    match log_in(&state, &peer_key(&req), &form.email, form.password).await {
        Ok(user) => start_session(&req, &state, user.id).await,
        Err(ApiError::InvalidLogin) => {
            let page = LoginPage {
                nav: None,
                csrf: form.csrf,
                email: form.email,
                error: Some("Invalid email or password.".to_owned()),
            };
            render(StatusCode::UNAUTHORIZED, &page)
        }
        Err(other) => Err(other.into()),
    }
}

pub(crate) async fn signup(
    req: HttpRequest,
    state: web::Data<AppState>,
    form: web::Form<SignupForm>,
) -> Result<HttpResponse, PageError> {
    check_form_token(&req, &form.csrf)?;
    let form = form.into_inner();
    let handle = form.handle.as_deref().map(str::trim).filter(|h| !h.is_empty());
    match sign_up(&state, &peer_key(&req), &form.email, form.password, handle).await {
        Ok(user) => start_session(&req, &state, user.id).await,
        Err(err) => {
            let (status, field, message) = match &err {
                ApiError::Validation { field, message } => {
                    (StatusCode::UNPROCESSABLE_ENTITY, field.clone(), message.clone())
                }
                ApiError::Conflict { code: "email_taken", message } => {
                    (StatusCode::CONFLICT, "email".to_owned(), message.clone())
                }
                ApiError::Conflict { code: "handle_taken", message } => {
                    (StatusCode::CONFLICT, "handle".to_owned(), message.clone())
                }
                _ => return Err(err.into()),
            };
            let page = SignupPage {
                nav: None,
                csrf: form.csrf,
                email: form.email,
                handle: handle.unwrap_or_default().to_owned(),
                error: Some((field, message)),
            };
            render(status, &page)
        }
    }
}

/// Opens a session and sends the browser to the dashboard with its cookie.
async fn start_session(
    req: &HttpRequest,
    state: &AppState,
    user: registry::UserId,
) -> Result<HttpResponse, PageError> {
    let session = registry::web_sessions::open_web_session(
        &state.db,
        user,
        Duration::days(SESSION_DAYS),
        state.now(),
    )
    .await?;
    let mut response = see_other("/");
    let add = |response: &mut HttpResponse, cookie| {
        response.add_cookie(&cookie).map_err(|e| PageError::Api(ApiError::internal(e)))
    };
    add(&mut response, session_cookie(req, session.token))?;
    add(&mut response, expired_cookie(FORM_COOKIE))?;
    Ok(response)
}

pub(crate) async fn logout(
    visitor: Visitor,
    state: web::Data<AppState>,
    form: web::Form<CsrfForm>,
) -> Result<HttpResponse, PageError> {
    visitor.check_csrf(&form.csrf)?;
    registry::web_sessions::end_web_session(&state.db, &visitor.token).await?;
    let mut response = see_other("/login");
    response
        .add_cookie(&expired_cookie(SESSION_COOKIE))
        .map_err(|e| PageError::Api(ApiError::internal(e)))?;
    Ok(response)
}
