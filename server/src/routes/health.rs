//! Liveness, readiness and metrics.

use actix_web::{HttpResponse, web};
use serde::Serialize;
use utoipa::ToSchema;

use crate::error::{ApiError, ErrorBody};
use crate::state::AppState;

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Live {
    Ok,
}

#[derive(Serialize, ToSchema)]
pub(crate) struct Liveness {
    status: Live,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Ready {
    Ready,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Dependency {
    Ok,
    /// Not configured (a single instance on SQLite runs without Redis).
    Disabled,
}

#[derive(Serialize, ToSchema)]
pub(crate) struct Readiness {
    status: Ready,
    database: Dependency,
    redis: Dependency,
}

/// The process is up.
#[utoipa::path(get, path = "/healthz", operation_id = "healthz", tag = "operations", responses((status = 200, body = Liveness)))]
pub(crate) async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(Liveness { status: Live::Ok })
}

/// The process can serve: the database answers, and Redis too when configured.
#[utoipa::path(get, path = "/readyz", operation_id = "readyz", tag = "operations",
    responses((status = 200, body = Readiness), (status = 503, body = ErrorBody)))]
pub(crate) async fn readyz(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    state.db.ping().await.map_err(|e| ApiError::Unavailable(format!("database: {e}")))?;
    let redis = match &state.redis {
        Some(connection) => {
            let mut connection = connection.clone();
            let pong: Result<String, _> = redis::cmd("PING").query_async(&mut connection).await;
            pong.map_err(|e| ApiError::Unavailable(format!("redis: {e}")))?;
            Dependency::Ok
        }
        None => Dependency::Disabled,
    };
    Ok(HttpResponse::Ok().json(Readiness { status: Ready::Ready, database: Dependency::Ok, redis }))
}

/// Prometheus text exposition.
#[utoipa::path(get, path = "/metrics", operation_id = "metrics", tag = "operations",
    responses((status = 200, description = "Prometheus text exposition", content_type = "text/plain", body = String)))]
pub(crate) async fn metrics(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let text = state.metrics.render().map_err(ApiError::internal)?;
    Ok(HttpResponse::Ok().content_type("text/plain; version=0.0.4; charset=utf-8").body(text))
}
