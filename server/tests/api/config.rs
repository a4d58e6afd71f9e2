//! The `gavel` binary itself: configuration layering, unknown keys, the CLI commands, and a
//! zero-configuration start.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

fn gavel() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_gavel"));
    // The tests' own GAVEL__ variables, if any, must not leak into the child.
    for (name, _) in std::env::vars() {
        if name.starts_with("GAVEL") {
            command.env_remove(name);
        }
    }
    command.env("RUST_LOG", "info");
    command
}

#[test]
fn an_unknown_environment_key_stops_start_up_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let output = gavel()
        .current_dir(dir.path())
        .env("GAVEL__SERVER__BIDN", "127.0.0.1:0")
        .arg("migrate")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("bidn"), "{stderr}");
}

#[test]
fn an_unknown_file_key_stops_start_up_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("gavel.toml"), "[credits]\nmonthly_grnat = 5\n").unwrap();
    let output = gavel().current_dir(dir.path()).arg("migrate").output().unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("monthly_grnat"), "{stderr}");
}

#[test]
fn invalid_values_are_refused_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    for (key, value, named) in [
        ("GAVEL__CREDITS__CALL_FEE", "-1", "credits.call_fee"),
        ("GAVEL__CREDITS__WIN_FEE", "0.0000001", "credits.win_fee"),
        ("GAVEL__SERVER__BIND", "localhost", "server.bind"),
        ("GAVEL__EGRESS__ALLOW_CIDRS", "127.0.0.0/8,not-a-cidr", "egress.allow_cidrs"),
        ("GAVEL__DATABASE__URL", "mysql://x", "database.url"),
    ] {
        let output =
            gavel().current_dir(dir.path()).env(key, value).arg("migrate").output().unwrap();
        assert!(!output.status.success(), "{key}={value}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(named), "{key}={value}: {stderr}");
    }
}

#[test]
fn migrate_then_admin_grant_credits_a_user() {
    let dir = tempfile::tempdir().unwrap();
    let status = gavel().current_dir(dir.path()).arg("migrate").status().unwrap();
    assert!(status.success());
    assert!(dir.path().join("data/gavel.db").exists(), "SQLite under ./data by default");

    let output = gavel()
        .current_dir(dir.path())
        .args(["admin", "grant", "--email", "nobody@example.com", "--credits", "5"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("no user with email nobody@example.com")
    );

    let output = gavel()
        .current_dir(dir.path())
        .args(["admin", "grant", "--email", "a@example.com", "--credits", "lots"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("--credits"));
}

/// `gavel` with no arguments and no configuration serves; here on port 0 so the test does not
/// collide with anything on 8080, which is the only setting given.
#[test]
fn serve_starts_with_nothing_but_a_port_and_answers_health_checks() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = gavel()
        .current_dir(dir.path())
        .env("GAVEL__SERVER__BIND", "127.0.0.1:0")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    // Keep draining the child's log on a thread: closing the pipe would break its logging.
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(idx) = line.find("listening on http://") {
                let _ = sender.send(line[idx + "listening on ".len()..].trim().to_owned());
            }
        }
    });
    let address = receiver.recv_timeout(Duration::from_secs(60)).ok();
    let address = address.expect("gavel printed its address");
    let body = reqwest::blocking_get(&format!("{address}/healthz"));
    let _ = child.kill();
    let _ = child.wait();
    assert!(body.contains("\"ok\""), "{body}");
    assert!(dir.path().join("data/gavel.db").exists());
    assert!(dir.path().join("data/jwt_secret").exists());
}

mod reqwest {
    /// A tiny blocking GET over a fresh runtime: the test above is synchronous.
    pub(super) fn blocking_get(url: &str) -> String {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        runtime.block_on(async {
            let client = ::reqwest::Client::builder()
                .timeout(super::Duration::from_secs(10))
                .build()
                .unwrap();
            client.get(url).send().await.unwrap().text().await.unwrap()
        })
    }
}

/// `gavel demo` brings up sample agents and prints a working quickstart: follow it.
#[test]
fn demo_serves_a_real_auction_from_its_printed_quickstart() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = gavel()
        .current_dir(dir.path())
        .env("GAVEL__SERVER__BIND", "127.0.0.1:0")
        .arg("demo")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let (mut base, mut key) = (None, None);
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(rest) = line.strip_prefix("Gavel demo is running at ") {
                base = rest.split_whitespace().next().map(str::to_owned);
            }
            if let Some(idx) = line.find("gvl_") {
                key.get_or_insert_with(|| {
                    line[idx..].split_whitespace().next().unwrap_or_default().to_owned()
                });
            }
            if base.is_some() && key.is_some() {
                let _ =
                    sender.send((base.take().unwrap_or_default(), key.clone().unwrap_or_default()));
            }
        }
    });
    let (base, key) = receiver
        .recv_timeout(Duration::from_secs(60))
        .expect("the demo printed its address and key");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (chat, ocr) = runtime.block_on(async {
        let client = ::reqwest::Client::builder().timeout(Duration::from_secs(20)).build().unwrap();
        let ask = serde_json::json!({"model": "auction", "messages": [{"role": "user", "content": "Hello!"}], "auction": {"max_price": "0.01"}});
        let chat: serde_json::Value =
            client.post(format!("{base}/v1/chat/completions")).bearer_auth(&key).json(&ask).send().await.unwrap().json().await.unwrap();
        let job = serde_json::json!({"category": "ocr", "input": {"image_url": "https://example.com/scan.png"}});
        let ocr: serde_json::Value = client.post(format!("{base}/v1/jobs")).bearer_auth(&key).json(&job).send().await.unwrap().json().await.unwrap();
        (chat, ocr)
    });
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        chat["choices"][0]["message"]["content"]
            .as_str()
            .unwrap_or_default()
            .contains("you said \"Hello!\""),
        "{chat}"
    );
    assert!(
        ["acme/swift-chat", "globex/deep-chat"]
            .contains(&chat["model"].as_str().unwrap_or_default()),
        "{chat}"
    );
    assert_eq!(chat["auction"]["candidates"], 2);
    assert_eq!(ocr["status"], "delivered", "{ocr}");
    assert_eq!(ocr["agent"], "globex/paper-ocr");
    assert!(ocr["output"]["text"].as_str().unwrap_or_default().contains("scan.png"));
}
