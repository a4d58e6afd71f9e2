//! `gavel serve` as a child process: the real binary on a data directory of the test's, its
//! stderr kept for the test to read, killable with SIGKILL. For what only the real process
//! shows: crash recovery, peak RSS, what is logged.

use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::json_body;

pub(crate) struct Served {
    pub(crate) child: Child,
    pub(crate) base: String,
    log: Arc<Mutex<Vec<String>>>,
}

impl Served {
    /// On SQLite in `dir`, with the test defaults.
    pub(crate) fn start(dir: &std::path::Path) -> Served {
        Served::start_with(dir, &[])
    }

    /// With extra `GAVEL__*` settings (a Postgres URL, Redis, ...). `RUST_LOG` is left unset,
    /// so the binary's default log filter is what is tested.
    pub(crate) fn start_with(dir: &std::path::Path, env: &[(&str, &str)]) -> Served {
        let mut child = Served::command(dir, env).spawn().unwrap();
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let (sender, receiver) = std::sync::mpsc::channel();
        std::thread::spawn({
            let log = log.clone();
            move || {
                use std::io::BufRead;
                for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
                    if let Some(idx) = line.find("listening on http://") {
                        let _ = sender.send(line[idx + "listening on ".len()..].trim().to_owned());
                    }
                    log.lock().unwrap().push(line);
                }
            }
        });
        let base = match receiver.recv_timeout(Duration::from_secs(60)) {
            Ok(base) => base,
            Err(_) => panic!("gavel did not start: {:?}", log.lock().unwrap()),
        };
        Served { child, base, log }
    }

    /// `gavel serve` on `dir` with the test defaults and `env`, not started.
    pub(crate) fn command(dir: &std::path::Path, env: &[(&str, &str)]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_gavel"));
        command
            .current_dir(dir)
            .env_clear()
            .env("GAVEL__SERVER__BIND", "127.0.0.1:0")
            .env("GAVEL__EGRESS__ALLOW_CIDRS", "127.0.0.0/8")
            .env("GAVEL__AUTH__JWT_SECRET", crate::helpers::TEST_JWT_SECRET)
            .env("GAVEL__RATE_LIMIT__AUTH_PER_MINUTE", "600000")
            .env("GAVEL__RATE_LIMIT__AUTH_BURST", "10000")
            .stderr(Stdio::piped());
        for (name, value) in env {
            command.env(name, value);
        }
        command
    }

    /// Every line the process has written to stderr so far.
    pub(crate) fn log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    /// Peak resident memory so far, in MiB (`VmHWM`).
    pub(crate) fn peak_rss_mib(&self) -> u64 {
        self.status_mib("VmHWM:")
    }

    /// Resident memory now, in MiB (`VmRSS`).
    pub(crate) fn rss_mib(&self) -> u64 {
        self.status_mib("VmRSS:")
    }

    /// A `/proc/<pid>/status` line given in kB, in MiB.
    fn status_mib(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .unwrap_or_else(|| panic!("{field} in /proc/<pid>/status"))
            / 1024
    }

    /// SIGKILL: no graceful shutdown, no settlement.
    pub(crate) fn kill_9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `command` to its end, its output kept, but for no longer than `limit`: a child that
/// hangs is killed and the test fails, rather than the whole run waiting on it.
pub(crate) fn output_within(command: &mut Command, limit: Duration) -> Output {
    let mut child = command.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let read = |pipe: Option<Box<dyn std::io::Read + Send>>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_end(&mut bytes);
            }
            bytes
        })
    };
    let stdout = read(child.stdout.take().map(|p| Box::new(p) as Box<dyn std::io::Read + Send>));
    let stderr = read(child.stderr.take().map(|p| Box::new(p) as Box<dyn std::io::Read + Send>));
    let deadline = std::time::Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{command:?} ran past {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    Output { status, stdout: stdout.join().unwrap(), stderr: stderr.join().unwrap() }
}

/// A client with a deadline on every request.
pub(crate) fn client() -> reqwest::Client {
    reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap()
}

/// Signs a user up on the server at `base`; its access token.
pub(crate) async fn signup(base: &str, email: &str) -> String {
    let body = json!({"email": email, "password": "correct horse battery staple"});
    let response =
        client().post(format!("{base}/api/auth/signup")).json(&body).send().await.unwrap();
    assert_eq!(response.status(), 201);
    json_body(response).await["access_token"].as_str().unwrap().to_owned()
}

/// Registers `agent` as the user of `token`; the agent as created.
pub(crate) async fn register(base: &str, token: &str, agent: Value) -> Value {
    let response = client()
        .post(format!("{base}/api/agents"))
        .bearer_auth(token)
        .json(&agent)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    json_body(response).await
}

/// `GET path` as the user of `token`, as JSON.
pub(crate) async fn get(base: &str, token: &str, path: &str) -> Value {
    json_body(client().get(format!("{base}{path}")).bearer_auth(token).send().await.unwrap()).await
}
