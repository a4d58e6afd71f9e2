//! `POST /mcp`: Gavel as an MCP server (Streamable HTTP), on the server's own port.
//!
//! The wire protocol is rmcp's (the official Rust SDK), mounted in actix-web by
//! `rmcp-actix-web`: both spec eras clients speak today, the stateless 2026-07-28 revision
//! (`server/discover`, per-request `MCP-Protocol-Version` / `Mcp-Method` / `Mcp-Name`) and
//! 2025-11-25 (`initialize`, `notifications/initialized`). Sessions are off: no request depends
//! on an earlier one reaching the same instance, so any instance answers any request, and
//! `GET`/`DELETE` are 405.
//!
//! In front of rmcp sits [`admit`], the same gate `/v1` has: an `Origin` other than this
//! machine's or the configured ones is 403 (a foreign page cannot drive /mcp), the caller's
//! API key (or access token) is checked on every request (401 with `WWW-Authenticate: Bearer`
//! when missing or revoked), the per-key rate limit applies, and the month's free credits are
//! granted. The body cap is `/v1`'s. The tools ([`tools`]) run the same jobs as `/v1`, charged
//! and recorded the same way.

mod tools;

use std::sync::Arc;

use actix_web::body::MessageBody;
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::middleware::{Next, from_fn};
use actix_web::{FromRequest, HttpMessage, web};
use rmcp_actix_web::transport::{LocalSessionManager, StreamableHttpService};

use crate::auth::Caller;
use crate::error::ApiError;
use crate::state::AppState;

pub(crate) use tools::GavelTools;

/// `/mcp`, with `/v1`'s body limit.
pub(crate) fn scope(
    body_limit: usize,
) -> actix_web::Scope<
    impl actix_web::dev::ServiceFactory<
        ServiceRequest,
        Config = (),
        Response = ServiceResponse<impl MessageBody>,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    let service = StreamableHttpService::builder()
        .service_factory(Arc::new(|| Ok(GavelTools::new())))
        .session_manager(Arc::new(LocalSessionManager::default()))
        // No sessions: any instance answers any request.
        .stateful_mode(false)
        // A tool call answers with one JSON body (SSE only if a tool emitted a notification).
        .json_response(true)
        .max_request_body_bytes(body_limit)
        // rmcp's Host check defaults to loopback names, which would refuse every deployment
        // reached by its own hostname. Its purpose (a browser page rebinding a name to this
        // server) is served by `admit`'s Origin check, and no request here is authorised by
        // anything a browser sends on its own (cookies): each needs the caller's Bearer key.
        .allowed_hosts(Vec::new())
        // What the tools need from the request: the caller `admit` let in, and the state.
        .on_request_fn(|request, extensions| {
            if let Some(caller) = request.extensions().get::<Caller>() {
                extensions.insert(*caller);
            }
            if let Some(state) = request.app_data::<web::Data<AppState>>() {
                extensions.insert(state.clone());
            }
        })
        .build();
    service.scope_with_path("/mcp").wrap(from_fn(admit))
}

/// The gate in front of rmcp: Origin, credentials, rate limit, the month's grant. The caller
/// it admits travels to the tools in the request's extensions.
async fn admit(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let state = req
        .app_data::<web::Data<AppState>>()
        .cloned()
        .ok_or_else(|| ApiError::internal(anyhow::anyhow!("no app state")))?;
    if let Some(origin) = req.headers().get(actix_web::http::header::ORIGIN) {
        let allowed = origin.to_str().is_ok_and(|origin| {
            is_loopback_origin(origin)
                || state.settings.raw.mcp.allowed_origins.iter().any(|o| o == origin)
        });
        if !allowed {
            return Err(ApiError::Forbidden {
                message: "this Origin may not call /mcp (see the mcp.allowed_origins setting)"
                    .into(),
            }
            .into());
        }
    }
    let caller = Caller::from_request(req.request(), &mut Payload::None).await?;
    req.extensions_mut().insert(caller);
    next.call(req).await
}

/// A page served from this machine (`localhost`, `127.0.0.1`, `[::1]`, any port): local
/// software the user runs, as the MCP spec's DNS-rebinding rule allows. A rebinding attack
/// arrives with its own site's origin, which is refused.
fn is_loopback_origin(origin: &str) -> bool {
    let Ok(url) = url::Url::parse(origin) else { return false };
    matches!(url.scheme(), "http" | "https")
        && match url.host() {
            Some(url::Host::Domain(name)) => name.eq_ignore_ascii_case("localhost"),
            Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
            Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
            None => false,
        }
}

#[cfg(test)]
mod tests {
    use super::is_loopback_origin;

    #[test]
    fn only_this_machines_pages_are_loopback_origins() {
        for origin in ["http://localhost:5173", "http://127.0.0.1", "https://[::1]:8443"] {
            assert!(is_loopback_origin(origin), "{origin}");
        }
        for origin in [
            "http://localhost.evil.example",
            "http://evil.example",
            "http://127.0.0.1.nip.io",
            "null",
            "file:///etc/passwd",
        ] {
            assert!(!is_loopback_origin(origin), "{origin}");
        }
    }
}
