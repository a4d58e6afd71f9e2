//! Regression tests for the attacks and faults of the hardening issue: each one reproduces a
//! finding (it failed before its fix) and checks what must hold now.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::helpers::{TestApp, json_body, spawn_app_with};
use crate::jobs::chat_agent;
use crate::test_agent::{Behaviour, TestAgent};

async fn app() -> TestApp {
    spawn_app_with(|s| {
        s.egress.allow_cidrs = vec!["127.0.0.0/8".into()];
        s.dispatch.max_response_bytes = 4 * 1024 * 1024;
    })
    .await
}

fn ask_stream(model: &str) -> Value {
    json!({"model": model, "stream": true, "messages": [{"role": "user", "content": "hi"}]})
}

/// Finding 1: a stream that never ends an event (or floods comments, or usage-only chunks)
/// is cut at a byte cap within its deadline, the server stays responsive meanwhile, and the
/// job falls back to an honest agent; nothing is charged for the flood.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooding_stream_is_cut_and_the_server_stays_responsive() {
    let floods = [
        ("endless-line", "data: ", "x", "event_too_large"),
        ("comments", "", ": keep reading this\n", "response_too_large"),
        (
            "usage-only",
            "",
            "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":1}}\n\n",
            "response_too_large",
        ),
    ];
    for (name, head, unit, code) in floods {
        let app = app().await;
        let caller = app.signup().await;
        let (bad_owner, good_owner) = (app.signup().await, app.signup().await);
        let flood =
            TestAgent::start(Behaviour::Flood { head: head.into(), unit: unit.into() }).await;
        let (flood_slug, _) =
            chat_agent(&app, &bad_owner, name, &flood, "0.1", json!({"max_latency_ms": 3000}))
                .await;
        let honest = TestAgent::start(Behaviour::Stream {
            pieces: vec!["honest".into()],
            first_after: Duration::ZERO,
            gap: Duration::ZERO,
            cut: false,
            usage: Some((1, 1)),
        })
        .await;
        chat_agent(&app, &good_owner, "honest", &honest, "0.2", json!({})).await;

        let started = Instant::now();
        let mut body = ask_stream("auction");
        body["auction"] = json!({"objective": "cost"});
        let request = app.post_json("/v1/chat/completions", &body, Some(&caller.token));
        let health = async {
            // Meanwhile the server answers its health check promptly, again and again.
            for _ in 0..5 {
                tokio::time::sleep(Duration::from_millis(100)).await;
                let asked = Instant::now();
                let response = app.get("/healthz", None).await;
                assert_eq!(response.status(), 200);
                assert!(
                    asked.elapsed() < Duration::from_secs(1),
                    "{name}: /healthz took {:?}",
                    asked.elapsed()
                );
            }
        };
        let (response, ()) = tokio::join!(request, health);
        assert_eq!(response.status(), 200, "{name}");
        let text = response.text().await.unwrap();
        assert!(text.contains("honest"), "{name}: the honest agent served: {text}");
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{name}: took {:?}",
            started.elapsed()
        );
        // The cap is 4 MiB read; loopback socket buffers hold a few MiB more in flight.
        assert!(
            flood.pieces_sent() <= 24 * 1024 * 1024,
            "{name}: {} bytes of the flood written",
            flood.pieces_sent()
        );
        let job = text.lines().find_map(|l| l.strip_prefix("data: ")).unwrap();
        let job: Value = serde_json::from_str(job).unwrap();
        let generation = json_body(
            app.get(
                &format!("/v1/generation?id={}", job["id"].as_str().unwrap()),
                Some(&caller.token),
            )
            .await,
        )
        .await;
        let attempts = generation["data"]["attempts"].as_array().unwrap();
        assert_eq!(attempts[0]["agent"], flood_slug.as_str(), "{name}");
        assert_ne!(attempts[0]["outcome"], "success", "{name}: {generation}");
        assert_eq!(attempts[0]["error"], code, "{name}: {generation}");
        assert_eq!(
            generation["data"]["agent_cost"], "0.2",
            "{name}: only the honest agent is paid"
        );
    }
}
