//! A request body must keep arriving: a middleware puts an idle deadline on every piece of it,
//! so a client that sends a short body slowly (or a `content-length` it never fills) is cut
//! off with a 408 instead of holding a connection and a worker's attention indefinitely.
//! (actix's own timeout covers only the request head.)

use std::time::Duration;

use actix_web::HttpMessage;
use actix_web::body::MessageBody;
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::error::PayloadError;
use actix_web::middleware::Next;
use futures::StreamExt;

/// Middleware: wraps the request's payload so that each read waits at most `idle`.
pub async fn limit_body_idle(
    mut req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let idle = req
        .app_data::<actix_web::web::Data<crate::state::AppState>>()
        .map_or(Duration::from_secs(10), |state| {
            Duration::from_millis(state.settings.raw.server.body_idle_ms.max(1))
        });
    let payload = req.take_payload();
    let guarded =
        futures::stream::unfold((payload, false), move |(mut payload, done)| async move {
            if done {
                return None;
            }
            match tokio::time::timeout(idle, payload.next()).await {
                Ok(Some(item)) => Some((item, (payload, false))),
                Ok(None) => None,
                Err(_) => Some((
                    Err(PayloadError::Io(std::io::ErrorKind::TimedOut.into())),
                    (payload, true),
                )),
            }
        })
        // A multipart reader polls once more after the end: a fused stream answers `None`
        // again instead of panicking.
        .fuse();
    req.set_payload(Payload::from(
        Box::pin(guarded) as std::pin::Pin<Box<dyn futures::Stream<Item = _>>>
    ));
    next.call(req).await
}
