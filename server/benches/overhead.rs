//! The overhead benchmark (DESIGN §9): a zero-delay mock agent, called directly and through
//! Gavel (API-key auth, a 10-agent auction, the hold, dispatch, settlement on every request),
//! at concurrency 1 (p50, p99) and 64 (throughput, p99), plus Gavel's idle RSS.
//!
//! Run with `scripts/bench`, which builds the release binary first. Gavel runs as its own
//! process (`GAVEL_BIN`, default `target/release/gavel`) on SQLite in a temporary directory;
//! the load generator and the mock agent run here. Everything shares the machine's cores, so
//! quote medians and ratios from one run.
//!
//! `GAVEL__DATABASE__URL=postgres://...` runs it on Postgres; with `BENCH_INSTANCES=2` as well,
//! a second Gavel on the same database takes every other connection of the c=64 run. After
//! the run Gavel is killed (`SIGKILL`) and the ledger is checked: one capture per 200 the load
//! generator received, every balance the sum of its entries. Before that, the caller of all
//! those jobs logs in to the dashboard and its pages are timed (DESIGN §9: under 50 ms for an
//! account with 100,000 jobs, with `BENCH_JOBS=100000`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout, clippy::print_stderr)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

mod support;
use support::{bench_env, gavel_bin, seed_market, start_gavel, start_mock_agent};

/// Jobs at concurrency 1; `BENCH_SEQUENTIAL` overrides (more, to profile that phase).
fn sequential_total() -> usize {
    std::env::var("BENCH_SEQUENTIAL").ok().and_then(|n| n.parse().ok()).unwrap_or(2_000)
}
const CONCURRENT: usize = 64;
/// Jobs at concurrency 64; `BENCH_JOBS` overrides (100,000 for the RSS figure).
fn concurrent_total() -> usize {
    std::env::var("BENCH_JOBS").ok().and_then(|n| n.parse().ok()).unwrap_or(20_000)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let agent = start_mock_agent().await;
    let forwarder = start_bare_forwarder(&agent);
    let data = tempfile::tempdir().unwrap();
    let bin = gavel_bin();
    let env = bench_env(data.path());
    let instances: usize =
        std::env::var("BENCH_INSTANCES").ok().and_then(|n| n.parse().ok()).unwrap_or(1);
    let (mut gavel, base) = start_gavel(&bin, &env);
    let mut others = Vec::new();
    let mut bases = vec![base.clone()];
    for _ in 1..instances {
        let (other, other_base) = start_gavel(&bin, &env);
        bases.push(other_base);
        others.push(other);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let idle_rss_kib = rss_kib(gavel.id());

    let client = reqwest::Client::builder().pool_max_idle_per_host(256).build().unwrap();
    let (caller, winning_owner) = seed_market(&client, &bin, &env, &base, &agent, "caller").await;
    let key: Value = client
        .post(format!("{base}/api/keys"))
        .bearer_auth(&caller.1)
        .json(&json!({"name": "bench"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let key = key["key"].as_str().unwrap().to_owned();

    let direct_url = format!("{agent}/v1/chat/completions");
    let forwarder_url = format!("{forwarder}/v1/chat/completions");
    let gavel_url = format!("{base}/v1/chat/completions");
    let gavel_urls: Vec<String> =
        bases.iter().map(|base| format!("{base}/v1/chat/completions")).collect();
    let direct_body =
        json!({"model": "mock", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 16});
    let gavel_body = json!({"model": "auction", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 16, "auction": {"max_price": "2"}});

    // Warm both paths (connections, caches, the index).
    sequential(&client, &direct_url, &direct_body, None, 200).await;
    sequential(&client, &forwarder_url, &direct_body, None, 200).await;
    sequential(&client, &gavel_url, &gavel_body, Some(&key), 200).await;

    let sequential_jobs = sequential_total();
    let direct_c1 = sequential(&client, &direct_url, &direct_body, None, sequential_jobs).await;
    let forwarder_c1 =
        sequential(&client, &forwarder_url, &direct_body, None, sequential_jobs).await;
    let gavel_c1 = sequential(&client, &gavel_url, &gavel_body, Some(&key), sequential_jobs).await;
    let direct_c64 =
        concurrent(&client, std::slice::from_ref(&direct_url), &direct_body, None).await;
    let forwarder_c64 =
        concurrent(&client, std::slice::from_ref(&forwarder_url), &direct_body, None).await;
    let gavel_c64 = concurrent(&client, &gavel_urls, &gavel_body, Some(&key)).await;

    // Every Gavel request above was a settled job: check the ledger agrees.
    let activity: Value = client
        .get(format!("{base}/api/activity?role=caller&status=delivered&limit=1"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let busy_rss_kib = rss_kib(gavel.id());
    let latest_job = activity["data"][0]["id"].as_str().unwrap_or_default().to_owned();
    let caller_paths = ["/".to_owned(), "/jobs".to_owned(), format!("/jobs/{latest_job}")];
    let mut pages = dashboard_pages(&client, &base, &caller.0, &caller_paths).await;
    // The owner whose agent served them all: its agents' figures, and its front page.
    let owner_paths = ["/agents".to_owned(), "/".to_owned()];
    for (path, latencies) in dashboard_pages(&client, &base, &winning_owner, &owner_paths).await {
        pages.push((format!("{path} (the winning owner)"), latencies));
    }
    let pages_rss_kib = rss_kib(gavel.id());
    // The SQLite WAL must stay bounded under load (it once grew by every job's pages).
    let file_bytes = |name: &str| std::fs::metadata(data.path().join(name)).map_or(0, |m| m.len());
    let (wal_bytes, db_bytes) = (file_bytes("gavel.db-wal"), file_bytes("gavel.db"));
    // SIGKILL: whatever a caller was answered for is already committed.
    let _ = gavel.kill();
    let _ = gavel.wait();
    for mut other in others {
        let _ = other.kill();
        let _ = other.wait();
    }
    // Every 200 above is one capture on the ledger, and every balance is the sum of its
    // entries.
    let answered = 200 + gavel_c1.len() + gavel_c64.1.len();
    let database = std::env::var("GAVEL__DATABASE__URL")
        .unwrap_or_else(|_| format!("sqlite://{}/gavel.db", data.path().display()));
    let db = registry::connect(&database, Some(1)).await.unwrap();
    let audit = registry::ledger::audit_ledger(&db).await.unwrap();
    let captures = registry::ledger::count_transfers(&db, "capture").await.unwrap();

    let p = |v: &[Duration], q: f64| v[((v.len() as f64 - 1.0) * q).round() as usize];
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    println!(
        "\nGavel overhead benchmark ({} sequential, {} at concurrency {}; {} instance(s) on {})",
        sequential_jobs,
        concurrent_total(),
        CONCURRENT,
        instances,
        if std::env::var_os("GAVEL__DATABASE__URL").is_some() { "Postgres" } else { "SQLite" }
    );
    println!("| path | c=1 p50 | c=1 p99 | c=64 throughput | c=64 p99 |");
    println!("|---|---|---|---|---|");
    for (name, c1, c64) in [
        ("direct to mock agent", &direct_c1, &direct_c64),
        ("bare forwarder (the floor)", &forwarder_c1, &forwarder_c64),
        ("through Gavel (10-agent auction)", &gavel_c1, &gavel_c64),
    ] {
        println!(
            "| {name} | {:.0} us | {:.0} us | {:.0} req/s | {:.0} us |",
            us(p(c1, 0.5)),
            us(p(c1, 0.99)),
            c64.0,
            us(p(&c64.1, 0.99))
        );
    }
    println!(
        "| overhead | {:.0} us | {:.0} us | | |",
        us(p(&gavel_c1, 0.5)) - us(p(&direct_c1, 0.5)),
        us(p(&gavel_c1, 0.99)) - us(p(&direct_c1, 0.99))
    );
    println!(
        "| of which the floor adds | {:.0} us | {:.0} us | | |",
        us(p(&forwarder_c1, 0.5)) - us(p(&direct_c1, 0.5)),
        us(p(&forwarder_c1, 0.99)) - us(p(&direct_c1, 0.99))
    );
    println!(
        "| ratio (Gavel / direct) | {:.1}x | {:.1}x | {:.2}x | |",
        us(p(&gavel_c1, 0.5)) / us(p(&direct_c1, 0.5)),
        us(p(&gavel_c1, 0.99)) / us(p(&direct_c1, 0.99)),
        gavel_c64.0 / direct_c64.0
    );
    println!(
        "\nidle RSS {:.1} MiB, after {} jobs {:.1} MiB",
        idle_rss_kib as f64 / 1024.0,
        answered,
        busy_rss_kib as f64 / 1024.0
    );
    if std::env::var_os("GAVEL__DATABASE__URL").is_none() {
        println!(
            "SQLite after {answered} jobs: WAL {:.1} MiB, database {:.1} MiB ({:.1} KiB a job)",
            wal_bytes as f64 / 1048576.0,
            db_bytes as f64 / 1048576.0,
            db_bytes as f64 / 1024.0 / answered as f64
        );
    }
    println!(
        "ledger: {answered} answered 200, {captures} captures; {} accounts checked, {} mismatches, entries sum to {}, {} hours of the rollup differ from the entries",
        audit.accounts_checked,
        audit.mismatches.len(),
        audit.total,
        audit.flow_mismatches.len()
    );
    assert_eq!(captures, answered as u64, "one capture per 200");
    assert!(
        audit.mismatches.is_empty() && audit.total == 0 && audit.flow_mismatches.is_empty(),
        "{audit:?}"
    );
    println!("latest settled job: {}", activity["data"][0]["id"]);
    println!(
        "\nDashboard pages for the caller of all {answered} jobs, and for the owner whose agent \
         served them ({PAGE_SAMPLES} loads each, signed in, measured at the client on loopback)"
    );
    println!("RSS after the page loads: {:.1} MiB", pages_rss_kib as f64 / 1024.0);
    println!("| page | p50 | max |");
    println!("|---|---|---|");
    for (page, latencies) in &pages {
        println!(
            "| {page} | {:.1} ms | {:.1} ms |",
            p(latencies, 0.5).as_secs_f64() * 1e3,
            latencies[latencies.len() - 1].as_secs_f64() * 1e3
        );
    }
}

/// Loads of each dashboard page.
const PAGE_SAMPLES: usize = 30;

/// Logs in as `email` through the login form and loads each of `paths` for that account;
/// each page's sorted latencies.
async fn dashboard_pages(
    client: &reqwest::Client,
    base: &str,
    email: &str,
    paths: &[String],
) -> Vec<(String, Vec<Duration>)> {
    let cookie_of = |response: &reqwest::Response, name: &str| {
        response
            .headers()
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find(|c| c.starts_with(&format!("{name}=")))
            .and_then(|c| c.split(';').next())
            .unwrap()
            .to_owned()
    };
    let form = client.get(format!("{base}/login")).send().await.unwrap();
    let form_cookie = cookie_of(&form, "gavel_form");
    let page = form.text().await.unwrap();
    let at = page.find("name=\"csrf\" value=\"").unwrap() + 19;
    let body = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("csrf", &page[at..at + 64])
        .append_pair("email", email)
        .append_pair("password", "benchmark password 1")
        .finish();
    let no_redirects =
        reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let login = no_redirects
        .post(format!("{base}/login"))
        .header("cookie", form_cookie)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), 303, "the bench's caller logs in");
    let session = cookie_of(&login, "gavel_session");
    let mut pages = Vec::new();
    for path in paths {
        let mut latencies = Vec::with_capacity(PAGE_SAMPLES);
        for _ in 0..PAGE_SAMPLES {
            let started = Instant::now();
            let response = no_redirects
                .get(format!("{base}{path}"))
                .header("cookie", &session)
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 200, "{path}");
            response.bytes().await.unwrap();
            latencies.push(started.elapsed());
        }
        latencies.sort();
        pages.push((path.clone(), latencies));
    }
    pages
}

/// `n` requests one after another; sorted latencies.
async fn sequential(
    client: &reqwest::Client,
    url: &str,
    body: &Value,
    key: Option<&str>,
    n: usize,
) -> Vec<Duration> {
    let mut latencies = Vec::with_capacity(n);
    for _ in 0..n {
        let started = Instant::now();
        let mut request = client.post(url).json(body);
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        let response = request.send().await.unwrap();
        assert!(response.status().is_success(), "{}", response.text().await.unwrap());
        response.bytes().await.unwrap();
        latencies.push(started.elapsed());
    }
    latencies.sort();
    latencies
}

/// `concurrent_total()` requests over `CONCURRENT` workers; (requests per second, sorted latencies).
async fn concurrent(
    client: &reqwest::Client,
    urls: &[String],
    body: &Value,
    key: Option<&str>,
) -> (f64, Vec<Duration>) {
    let total = concurrent_total();
    let started = Instant::now();
    let counter = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let workers: Vec<_> = (0..CONCURRENT)
        .map(|worker| {
            let (client, url, body, key, counter) = (
                client.clone(),
                urls[worker % urls.len()].clone(),
                body.clone(),
                key.map(str::to_owned),
                Arc::clone(&counter),
            );
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                while counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < total {
                    let begun = Instant::now();
                    let mut request = client.post(&url).json(&body);
                    if let Some(key) = &key {
                        request = request.bearer_auth(key);
                    }
                    let response = request.send().await.unwrap();
                    assert!(response.status().is_success(), "{}", response.text().await.unwrap());
                    response.bytes().await.unwrap();
                    latencies.push(begun.elapsed());
                }
                latencies
            })
        })
        .collect();
    let mut all = Vec::with_capacity(total);
    for worker in workers {
        all.extend(worker.await.unwrap());
    }
    let throughput = all.len() as f64 / started.elapsed().as_secs_f64();
    all.sort();
    (throughput, all)
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// The floor: actix-web in, reqwest out, on a thread and two workers of its own, forwarding
/// each body to the agent and its answer back. Returns its base URL.
fn start_bare_forwarder(agent: &str) -> String {
    let target = format!("{agent}/v1/chat/completions");
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        actix_web::rt::System::new().block_on(async move {
            let client = reqwest::Client::new();
            let server = actix_web::HttpServer::new(move || {
                let (client, target) = (client.clone(), target.clone());
                actix_web::App::new().route(
                    "/v1/chat/completions",
                    actix_web::web::post().to(move |body: actix_web::web::Bytes| {
                        let (client, target) = (client.clone(), target.clone());
                        async move {
                            let answer = client
                                .post(target)
                                .header("content-type", "application/json")
                                .body(body)
                                .send()
                                .await
                                .unwrap()
                                .bytes()
                                .await
                                .unwrap();
                            actix_web::HttpResponse::Ok()
                                .content_type("application/json")
                                .body(answer)
                        }
                    }),
                )
            })
            .workers(2)
            .bind("127.0.0.1:0")
            .unwrap();
            sender.send(format!("http://{}", server.addrs()[0])).unwrap();
            server.run().await.unwrap();
        });
    });
    receiver.recv_timeout(Duration::from_secs(10)).unwrap()
}
