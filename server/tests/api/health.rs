//! Liveness, readiness and metrics.

use crate::helpers::{json_body, spawn_app};

#[tokio::test]
async fn health_readiness_and_metrics_answer() {
    let app = spawn_app().await;
    assert_eq!(json_body(app.get("/healthz", None).await).await["status"], "ok");
    let ready = json_body(app.get("/readyz", None).await).await;
    assert_eq!(ready["database"], "ok");
    assert_eq!(ready["redis"], "disabled");

    let metrics = app.get("/metrics", None).await;
    assert_eq!(metrics.status(), 200);
    assert!(metrics.headers()["content-type"].to_str().unwrap().starts_with("text/plain"));
    let text = metrics.text().await.unwrap();
    assert!(
        text.contains(
            "gavel_http_requests_total{method=\"GET\",route=\"/readyz\",status=\"200\"} 1"
        ),
        "{text}"
    );
    assert!(text.contains("# EOF"));
}
