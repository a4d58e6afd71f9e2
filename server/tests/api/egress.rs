//! The agent HTTP client against real loopback listeners: refused destinations are never
//! contacted, names are pinned to vetted addresses, redirects are not followed, and replies
//! are bounded in time and size.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use server::egress::{
    AgentCall, AgentClient, CallError, EgressError, EgressPolicy, GuardedResolver, StaticLookup,
};

use crate::test_agent::{Behaviour, TestAgent};

fn client(allow: &[&str], dns: Vec<(&'static str, Vec<IpAddr>)>) -> AgentClient {
    let policy =
        EgressPolicy::new(&allow.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
    let resolver = GuardedResolver::new(Arc::new(policy), Arc::new(StaticLookup::new(dns)));
    let secrets = Arc::new(server::egress::SecretBox::new(&[0; 32]));
    AgentClient::new(resolver, Duration::from_secs(2), secrets).unwrap()
}

fn call(url: &str) -> AgentCall<'_> {
    AgentCall {
        url,
        body: b"{}".to_vec(),
        bearer: None,
        idempotency_key: None,
        first_byte_timeout: Duration::from_secs(5),
        total_timeout: Duration::from_secs(5),
        max_response_bytes: 1024 * 1024,
    }
}

fn loopback() -> IpAddr {
    "127.0.0.1".parse().unwrap()
}

#[tokio::test]
async fn a_loopback_agent_is_unreachable_without_the_opening_and_never_contacted() {
    let agent = TestAgent::start(Behaviour::Json(200, "{\"ok\":true}".into())).await;
    let closed = client(&[], vec![]);
    let result = closed.post_json(call(&agent.url)).await;
    assert!(
        matches!(result, Err(CallError::Blocked(EgressError::BlockedAddress("loopback")))),
        "{result:?}"
    );
    assert_eq!(agent.connections(), 0);

    let open = client(&["127.0.0.0/8"], vec![]);
    let reply = open.post_json(call(&agent.url)).await.unwrap();
    assert_eq!((reply.status, reply.body.as_slice()), (200, b"{\"ok\":true}".as_slice()));
    assert_eq!(agent.connections(), 1);
}

#[tokio::test]
async fn a_name_is_connected_only_to_the_addresses_that_were_vetted() {
    let agent = TestAgent::start(Behaviour::Json(200, "{}".into())).await;
    let port = agent.port();
    let public: IpAddr = "93.184.216.34".parse().unwrap();
    // A name that resolves to loopback is refused without the opening: no connection at all.
    let closed = client(
        &[],
        vec![
            ("agent.example.com", vec![loopback()]),
            ("mixed.example.com", vec![public, loopback()]),
        ],
    );
    for host in ["agent.example.com", "mixed.example.com"] {
        let url = format!("http://{host}:{port}/");
        let result = closed.post_json(call(&url)).await;
        assert!(matches!(result, Err(CallError::Blocked(_))), "{host}: {result:?}");
    }
    assert_eq!(agent.connections(), 0);
    // With the opening the same name works, and the connection goes to the vetted address.
    let open = client(&["127.0.0.0/8"], vec![("agent.example.com", vec![loopback()])]);
    let url = format!("http://agent.example.com:{port}/");
    assert_eq!(open.post_json(call(&url)).await.unwrap().status, 200);
    assert_eq!(agent.connections(), 1);
    // A name nobody can resolve is refused as such.
    let result = open.post_json(call(&format!("http://nowhere.example.com:{port}/"))).await;
    assert!(matches!(result, Err(CallError::Blocked(EgressError::Unresolvable))), "{result:?}");
}

#[tokio::test]
async fn redirects_are_not_followed() {
    let target = TestAgent::start(Behaviour::Json(200, "{}".into())).await;
    let redirector = TestAgent::start(Behaviour::Redirect(format!("{}/steal", target.url))).await;
    let open = client(&["127.0.0.0/8"], vec![]);
    let result = open.post_json(call(&redirector.url)).await;
    assert!(matches!(result, Err(CallError::Redirect(302))), "{result:?}");
    assert_eq!(target.connections(), 0);
}

#[tokio::test]
async fn replies_are_bounded_in_size_and_time() {
    let open = client(&["127.0.0.0/8"], vec![]);
    let big = TestAgent::start(Behaviour::Big(2 * 1024 * 1024)).await;
    let result = open.post_json(call(&big.url)).await;
    assert!(matches!(result, Err(CallError::TooLarge { limit: 1_048_576 })), "{result:?}");

    let slow = TestAgent::start(Behaviour::Slow(Duration::from_secs(5))).await;
    let mut impatient = call(&slow.url);
    impatient.first_byte_timeout = Duration::from_millis(200);
    let started = std::time::Instant::now();
    let result = open.post_json(impatient).await;
    assert!(matches!(result, Err(CallError::Timeout)), "{result:?}");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "gave up at the deadline, not after the agent"
    );
}

#[tokio::test]
async fn metadata_stays_closed_inside_the_opening() {
    let policy = EgressPolicy::new(&["169.254.0.0/16".into(), "fd00::/8".into()]).unwrap();
    for url in [
        "http://169.254.169.254/latest/meta-data/",
        "http://[fd00:ec2::254]/",
        "http://[::ffff:a9fe:a9fe]/",
    ] {
        assert_eq!(
            policy.check_url(url).err(),
            Some(EgressError::BlockedAddress("cloud metadata")),
            "{url}"
        );
    }
    assert!(policy.check_url("http://169.254.10.10/").is_ok());
}
