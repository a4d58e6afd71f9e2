//! Liveness, readiness and metrics.

use actix_web::{HttpResponse, web};
use serde_json::json;

use crate::error::ApiError;
use crate::state::AppState;

/// The process is up.
pub(crate) async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

/// The process can serve: the database answers, and Redis too when configured.
pub(crate) async fn readyz(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    state.db.ping().await.map_err(|e| ApiError::Unavailable(format!("database: {e}")))?;
    let redis = match &state.redis {
        Some(connection) => {
            let mut connection = connection.clone();
            let pong: Result<String, _> = redis::cmd("PING").query_async(&mut connection).await;
            pong.map_err(|e| ApiError::Unavailable(format!("redis: {e}")))?;
            "ok"
        }
        None => "disabled",
    };
    Ok(HttpResponse::Ok().json(json!({"status": "ready", "database": "ok", "redis": redis})))
}

/// Prometheus text exposition.
pub(crate) async fn metrics(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let text = state.metrics.render().map_err(ApiError::internal)?;
    Ok(HttpResponse::Ok().content_type("text/plain; version=0.0.4; charset=utf-8").body(text))
}
