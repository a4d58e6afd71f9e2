//! `ApiError`: every error the HTTP API returns, mapped exhaustively to a status code and
//! rendered in one of two shapes.
//!
//! * `/api/*` (the marketplace): `{"error":{"code":"snake_case","message":"..."}}`.
//! * `/v1/*` (OpenAI-compatible): `{"error":{"message","type","param","code"}}`, so OpenAI SDKs
//!   raise their usual exceptions.
//!
//! Handlers and extractors return `ApiError` without knowing the route's flavour;
//! `openai_error_shape` (a middleware on the whole app) re-renders errors under `/v1/`. Internal
//! errors are logged with their cause chain and reach the client as an opaque 500.

use std::fmt;

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{HttpResponse, ResponseError};
use registry::RegistryError;
use serde::Serialize;
use utoipa::ToSchema;

/// One agent tried, as the error of a failed job lists it.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct FailedAttempt {
    pub rank: u32,
    pub agent: String,
    /// `success`, `error`, `timeout` or `invalid_output`.
    pub outcome: String,
    pub http_status: Option<u16>,
    pub error: Option<String>,
    pub latency_ms: u64,
}

/// The marketplace error shape, `{"error": {...}}` (every `/api/*` error and the plain routes).
#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Serialize, ToSchema)]
pub struct ErrorDetail {
    /// A stable snake_case code (`invalid_request`, `not_found`, `rate_limited`, ...).
    pub code: &'static str,
    pub message: String,
    /// The request field at fault, for validation errors.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// Every agent tried, for `all_agents_failed` and `rejected_by_agents`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attempts: Option<Vec<FailedAttempt>>,
}

/// OpenAI's error shape, `{"error": {"message","type","param","code"}}` (every `/v1/*` error),
/// so that OpenAI SDKs raise their usual exceptions.
#[derive(Serialize, ToSchema)]
pub struct OpenAiErrorBody {
    pub error: OpenAiErrorDetail,
}

#[derive(Serialize, ToSchema)]
pub struct OpenAiErrorDetail {
    pub message: String,
    /// OpenAI's error type (`invalid_request_error`, `authentication_error`, ...).
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub param: Option<String>,
    pub code: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attempts: Option<Vec<FailedAttempt>>,
}

/// Every error the API can answer with.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    MalformedJson(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("request body is larger than the {limit}-byte limit")]
    PayloadTooLarge { limit: usize },
    /// The body stopped arriving for longer than `server.body_idle_ms`.
    #[error("the request body stopped arriving; send it at once")]
    BodyTimeout,
    /// Input that parsed but is not acceptable; `field` names it.
    #[error("{field}: {message}")]
    Validation { field: String, message: String },
    #[error("missing or invalid credentials")]
    Unauthenticated,
    #[error("invalid email or password")]
    InvalidLogin,
    #[error("{what} not found")]
    NotFound { what: &'static str },
    /// `GET /v1/models/{id}` for an id that is no model (OpenAI's `model_not_found`).
    #[error("the model `{model}` does not exist")]
    ModelNotFound { model: String },
    #[error("{message}")]
    Forbidden { message: String },
    #[error("no route for {method} {path}")]
    NoRoute { method: String, path: String },
    #[error("method {method} is not allowed on {path}")]
    MethodNotAllowed { method: String, path: String, allow: &'static str },
    #[error("{message}")]
    Conflict { code: &'static str, message: String },
    #[error("{message}")]
    InsufficientCredits { message: String },
    /// The auction found nobody; `constraint` is the request field that excluded the last
    /// candidates.
    #[error("{message}")]
    NoEligibleAgent { constraint: String, message: String },
    /// Every agent tried failed; `attempts` lists them.
    #[error("{message}")]
    UpstreamFailed { message: String, attempts: Vec<FailedAttempt> },
    /// Every agent tried rejected the request itself (400, 413, 415, 422): the input is at
    /// fault, and no agent's record takes the blame.
    #[error("every agent rejected the request as invalid: {message}")]
    RejectedByAgents { message: String, attempts: Vec<FailedAttempt> },
    /// A job request that came from a Gavel (it carries the hop header): running it would let
    /// an agent pointed back at Gavel loop.
    #[error("this request came from a Gavel agent call; Gavel does not run it as a job")]
    LoopDetected,
    #[error("rate limit exceeded; retry in {retry_after_secs} s")]
    RateLimited { retry_after_secs: u64 },
    #[error("a dependency is unavailable: {0}")]
    Unavailable(String),
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

impl ApiError {
    pub fn internal(err: impl Into<anyhow::Error>) -> ApiError {
        ApiError::Internal(err.into())
    }

    pub fn validation(field: impl Into<String>, message: impl Into<String>) -> ApiError {
        ApiError::Validation { field: field.into(), message: message.into() }
    }

    /// The stable machine-readable code of the marketplace shape.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::MalformedJson(_) => "malformed_json",
            ApiError::BadRequest(_) => "bad_request",
            ApiError::UnsupportedMediaType(_) => "unsupported_media_type",
            ApiError::PayloadTooLarge { .. } => "payload_too_large",
            ApiError::BodyTimeout => "body_timeout",
            ApiError::Validation { .. } => "invalid_request",
            ApiError::Unauthenticated => "unauthenticated",
            ApiError::InvalidLogin => "invalid_credentials",
            ApiError::NotFound { .. } | ApiError::NoRoute { .. } => "not_found",
            ApiError::ModelNotFound { .. } => "model_not_found",
            ApiError::Forbidden { .. } => "forbidden",
            ApiError::MethodNotAllowed { .. } => "method_not_allowed",
            ApiError::Conflict { code, .. } => code,
            ApiError::InsufficientCredits { .. } => "insufficient_credits",
            ApiError::NoEligibleAgent { .. } => "no_eligible_agent",
            ApiError::UpstreamFailed { .. } => "all_agents_failed",
            ApiError::RejectedByAgents { .. } => "rejected_by_agents",
            ApiError::LoopDetected => "loop_detected",
            ApiError::RateLimited { .. } => "rate_limited",
            ApiError::Unavailable(_) => "unavailable",
            ApiError::Internal(_) => "internal_error",
        }
    }

    /// OpenAI's `type` for the same error.
    fn openai_type(&self) -> &'static str {
        match self {
            ApiError::Unauthenticated | ApiError::InvalidLogin => "authentication_error",
            ApiError::Forbidden { .. } => "permission_error",
            ApiError::NotFound { .. } | ApiError::NoRoute { .. } => "not_found_error",
            ApiError::RateLimited { .. } => "rate_limit_error",
            ApiError::InsufficientCredits { .. } => "insufficient_quota",
            ApiError::Internal(_) | ApiError::Unavailable(_) | ApiError::UpstreamFailed { .. } => {
                "server_error"
            }
            ApiError::NoEligibleAgent { .. }
            | ApiError::ModelNotFound { .. }
            | ApiError::RejectedByAgents { .. }
            | ApiError::LoopDetected => "invalid_request_error",
            ApiError::MalformedJson(_)
            | ApiError::BadRequest(_)
            | ApiError::UnsupportedMediaType(_)
            | ApiError::PayloadTooLarge { .. }
            | ApiError::BodyTimeout
            | ApiError::Validation { .. }
            | ApiError::MethodNotAllowed { .. }
            | ApiError::Conflict { .. } => "invalid_request_error",
        }
    }

    /// The request field at fault, if one is.
    pub(crate) fn param(&self) -> Option<&str> {
        match self {
            ApiError::Validation { field, .. } => Some(field),
            ApiError::NoEligibleAgent { constraint, .. } => {
                (!constraint.is_empty()).then_some(constraint.as_str())
            }
            ApiError::ModelNotFound { .. } => Some("model"),
            _ => None,
        }
    }

    /// The message a client sees; internal errors say nothing about their cause.
    fn public_message(&self) -> String {
        self.to_string()
    }

    fn attempts(&self) -> Option<Vec<FailedAttempt>> {
        match self {
            ApiError::UpstreamFailed { attempts, .. }
            | ApiError::RejectedByAgents { attempts, .. } => Some(attempts.clone()),
            _ => None,
        }
    }

    fn openai_body(&self) -> OpenAiErrorBody {
        OpenAiErrorBody {
            error: OpenAiErrorDetail {
                message: self.public_message(),
                kind: self.openai_type(),
                param: self.param().map(str::to_owned),
                code: self.code(),
                attempts: self.attempts(),
            },
        }
    }

    fn marketplace_body(&self) -> ErrorBody {
        ErrorBody {
            error: ErrorDetail {
                code: self.code(),
                message: self.public_message(),
                field: self.param().map(str::to_owned),
                attempts: self.attempts(),
            },
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::MalformedJson(_) | ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            ApiError::Validation { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Unauthenticated | ApiError::InvalidLogin => StatusCode::UNAUTHORIZED,
            ApiError::NotFound { .. }
            | ApiError::NoRoute { .. }
            | ApiError::ModelNotFound { .. } => StatusCode::NOT_FOUND,
            ApiError::Forbidden { .. } => StatusCode::FORBIDDEN,
            ApiError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Conflict { .. } => StatusCode::CONFLICT,
            ApiError::InsufficientCredits { .. } => StatusCode::PAYMENT_REQUIRED,
            ApiError::NoEligibleAgent { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::UpstreamFailed { .. } => StatusCode::BAD_GATEWAY,
            ApiError::RejectedByAgents { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::LoopDetected => StatusCode::LOOP_DETECTED,
            ApiError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse<BoxBody> {
        if let ApiError::Internal(cause) = self {
            tracing::error!(error.cause_chain = %CauseChain(cause.as_ref()), "internal error");
        }
        let mut response = HttpResponse::build(self.status_code());
        if let ApiError::RateLimited { retry_after_secs } = self {
            response.insert_header((header::RETRY_AFTER, retry_after_secs.to_string()));
        }
        if let ApiError::Unauthenticated = self {
            response.insert_header((header::WWW_AUTHENTICATE, "Bearer"));
        }
        if let ApiError::MethodNotAllowed { allow, .. } = self {
            response.insert_header((header::ALLOW, *allow));
        }
        response.json(self.marketplace_body())
    }
}

impl From<RegistryError> for ApiError {
    fn from(err: RegistryError) -> ApiError {
        match err {
            RegistryError::Invalid { field, message } => ApiError::validation(field, message),
            RegistryError::EmailTaken => ApiError::Conflict {
                code: "email_taken",
                message: "email is already registered".into(),
            },
            RegistryError::HandleTaken => ApiError::Conflict {
                code: "handle_taken",
                message: "handle is already taken".into(),
            },
            RegistryError::NotFound { what } => ApiError::NotFound { what },
            RegistryError::AgentNameTaken => ApiError::Conflict {
                code: "agent_name_taken",
                message: "you already have an agent with this name".into(),
            },
            RegistryError::Forbidden { .. } => ApiError::Forbidden { message: err.to_string() },
            RegistryError::PriceChangeLimited { retry_after_secs } => {
                ApiError::RateLimited { retry_after_secs }
            }
            RegistryError::Conflict(_) => {
                ApiError::Conflict { code: "conflict", message: err.to_string() }
            }
            RegistryError::AlreadyRated { .. } => {
                ApiError::Conflict { code: "already_rated", message: err.to_string() }
            }
            RegistryError::InsufficientCredits { .. } => {
                ApiError::InsufficientCredits { message: err.to_string() }
            }
            RegistryError::HoldExists { .. } | RegistryError::HoldNotActive { .. } => {
                ApiError::Conflict { code: "conflict", message: err.to_string() }
            }
            RegistryError::AccountCannotCover { .. }
            | RegistryError::Unbalanced(_)
            | RegistryError::Overflow
            | RegistryError::PasswordHash(_)
            | RegistryError::Database(_)
            | RegistryError::Sqlite(_)
            | RegistryError::Storage(_) => ApiError::internal(err),
        }
    }
}

/// Middleware: re-renders `ApiError`s under `/v1/` in OpenAI's error shape.
pub async fn openai_error_shape(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let openai = req.path().starts_with("/v1/") || req.path() == "/v1";
    let response = next.call(req).await?.map_into_boxed_body();
    if !openai {
        return Ok(response);
    }
    let Some(api_error) = response.response().error().and_then(|e| e.as_error::<ApiError>()) else {
        return Ok(response);
    };
    let body = serde_json::to_string(&api_error.openai_body()).map_err(ApiError::internal)?;
    let status = response.status();
    let (request, old) = response.into_parts();
    let mut new = HttpResponse::build(status);
    for (name, value) in old.headers() {
        if name != header::CONTENT_LENGTH {
            new.append_header((name.clone(), value.clone()));
        }
    }
    new.insert_header((header::CONTENT_TYPE, HeaderValue::from_static("application/json")));
    Ok(ServiceResponse::new(request, new.body(body)))
}

/// Formats an error and its whole `source()` chain, for logs.
pub struct CauseChain<'a>(pub &'a (dyn std::error::Error + 'static));

impl fmt::Display for CauseChain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(cause) = source {
            write!(f, ": {cause}")?;
            source = cause.source();
        }
        Ok(())
    }
}
