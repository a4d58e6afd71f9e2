//! The dashboard: HTML pages for people, served by the binary itself at `/`.
//!
//! Pages are askama templates (`web/templates/`, compiled in and autoescaped: a name like
//! `<script>` is printed as text) and one stylesheet (`web/static/`). There is no script at
//! all: forms post, charts are SVG drawn on the server, so the Content-Security-Policy can be
//! `default-src 'self'` with nothing inline. A page reads the same registry functions the API
//! does, scoped to the signed-in user in SQL (another user's job is a 404, not a 403).
//!
//! Sessions are cookies (`session`); the API keeps its Bearer keys and JWTs and never reads
//! a session cookie. This module sits beside `routes` and borrows its activity rows.

mod account;
mod agents;
mod batches;
mod chart;
mod home;
mod jobs;
mod market;
mod operator;
mod session;

use actix_web::body::BoxBody;
use actix_web::dev::{ServiceFactory, ServiceRequest, ServiceResponse};
use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::middleware::DefaultHeaders;
use actix_web::{HttpResponse, Resource, ResponseError, web};
use askama::Template;

use crate::error::ApiError;

/// The stylesheet, compiled in.
const STYLESHEET: &str = include_str!("../../../web/static/gavel.css");

/// Mounts every page.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(page("/").route(web::get().to(home::dashboard)))
        .service(
            page("/login")
                .route(web::get().to(account::login_form))
                .route(web::post().to(account::login)),
        )
        .service(
            page("/signup")
                .route(web::get().to(account::signup_form))
                .route(web::post().to(account::signup)),
        )
        .service(page("/logout").route(web::post().to(account::logout)))
        .service(page("/keys").route(web::post().to(home::create_key)))
        .service(page("/keys/{id}/revoke").route(web::post().to(home::revoke_key)))
        .service(page("/agents").route(web::get().to(agents::list)))
        .service(
            page("/agents/new")
                .route(web::get().to(agents::new_form))
                .route(web::post().to(agents::create)),
        )
        .service(
            page("/agents/{id}/edit")
                .route(web::get().to(agents::edit_form))
                .route(web::post().to(agents::update)),
        )
        .service(page("/agents/{id}/pause").route(web::post().to(agents::pause)))
        .service(page("/agents/{id}/resume").route(web::post().to(agents::resume)))
        .service(page("/batches").route(web::get().to(batches::list)))
        .service(page("/batches/{id}").route(web::get().to(batches::batch)))
        .service(page("/batches/{id}/cancel").route(web::post().to(batches::cancel)))
        .service(page("/batches/{id}/output.jsonl").route(web::get().to(batches::output)))
        .service(page("/batches/{id}/errors.jsonl").route(web::get().to(batches::errors)))
        .service(page("/jobs").route(web::get().to(jobs::log)))
        .service(page("/jobs.csv").route(web::get().to(jobs::csv)))
        .service(page("/jobs/{id}").route(web::get().to(jobs::job)))
        .service(page("/jobs/{id}/rating").route(web::post().to(jobs::rate)))
        .service(page("/operator").route(web::get().to(operator::overview)))
        .service(page("/market").route(web::get().to(market::browse)))
        .service(page("/market/try").route(web::post().to(market::try_it)))
        .service(page("/static/gavel.css").route(web::get().to(stylesheet)));
}

/// A page's resource: the security headers on every answer, an HTML 405 for other methods.
fn page(
    path: &str,
) -> Resource<
    impl ServiceFactory<
        ServiceRequest,
        Config = (),
        Response = ServiceResponse<BoxBody>,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    web::resource(path)
        .wrap(
            DefaultHeaders::new()
                .add((
                    header::CONTENT_SECURITY_POLICY,
                    "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; \
                     form-action 'self'; base-uri 'none'; object-src 'none'",
                ))
                .add((header::X_FRAME_OPTIONS, "DENY"))
                .add((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
                .add((header::REFERRER_POLICY, "same-origin")),
        )
        .default_service(web::to(|| async { Err::<HttpResponse, _>(PageError::MethodNotAllowed) }))
}

async fn stylesheet() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/css; charset=utf-8")
        .insert_header((header::CACHE_CONTROL, "public, max-age=300"))
        .body(STYLESHEET)
}

/// Renders a page; pages show balances and keys, so no cache keeps them.
fn render(status: StatusCode, page: &impl Template) -> Result<HttpResponse, PageError> {
    let html = page.render().map_err(|e| PageError::Api(ApiError::internal(e)))?;
    Ok(HttpResponse::build(status)
        .content_type("text/html; charset=utf-8")
        .insert_header((header::CACHE_CONTROL, HeaderValue::from_static("no-store")))
        .body(html))
}

/// A 303 to `location` (after a form: the browser then GETs it).
fn see_other(location: &str) -> HttpResponse {
    HttpResponse::SeeOther().insert_header((header::LOCATION, location.to_owned())).finish()
}

/// Everything a page can fail with.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PageError {
    /// No live session: to the login page.
    #[error("sign in first")]
    SignIn,
    /// A form without its CSRF token, or with another session's.
    #[error("this form has expired or did not come from this site")]
    Csrf,
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error(transparent)]
    Api(#[from] ApiError),
}

impl From<registry::RegistryError> for PageError {
    fn from(err: registry::RegistryError) -> PageError {
        PageError::Api(err.into())
    }
}

/// The error page.
#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage {
    nav: Option<home::Nav>,
    status: u16,
    title: &'static str,
    message: String,
}

impl ResponseError for PageError {
    fn status_code(&self) -> StatusCode {
        match self {
            PageError::SignIn => StatusCode::SEE_OTHER,
            PageError::Csrf => StatusCode::FORBIDDEN,
            PageError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            PageError::Api(err) => err.status_code(),
        }
    }

    fn error_response(&self) -> HttpResponse {
        if let PageError::SignIn = self {
            return see_other("/login");
        }
        let status = self.status_code();
        let message = match self {
            PageError::Api(ApiError::Internal(err)) => {
                tracing::error!(error = %err, "a dashboard page failed");
                "Something went wrong on our side. Try again in a moment.".to_owned()
            }
            PageError::Csrf => {
                "This form has expired or did not come from this site: reload the page and \
                 submit it again."
                    .to_owned()
            }
            other => other.to_string(),
        };
        let title = status.canonical_reason().unwrap_or("Error");
        let page = ErrorPage { nav: None, status: status.as_u16(), title, message };
        render(status, &page).unwrap_or_else(|_| HttpResponse::build(status).finish())
    }
}
