//! Building and running the application: database, migrations, secrets, shared state, the
//! HTTP server and its background workers.
//!
//! `Application::build` binds before it returns, so a test that asks for port 0 learns the
//! real port from `port()`.

use registry::Bank;
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::Server;
use actix_web::middleware::from_fn;
use actix_web::{App, HttpServer, web};
use anyhow::Context;
use migrations::{Migrator, MigratorTrait};
use rand::RngCore;
use registry::DatabaseConnection;

use crate::auth::{HashingPool, JwtKeys};
use crate::configuration::ResolvedSettings;
use crate::data_lock::{DataLock, lock_database};
use crate::egress::{AgentClient, EgressPolicy, GuardedResolver, Lookup, SecretBox, SystemLookup};
use crate::error::openai_error_shape;
use crate::metrics;
use crate::rate_limit::{Budget, RateLimiter};
use crate::routes;
use crate::state::AppState;

/// Default lifetime of an access token: one day.
const DEFAULT_TOKEN_TTL_SECS: u64 = 24 * 3600;

/// A bound, not yet running, server.
pub struct Application {
    port: u16,
    server: Server,
    state: web::Data<AppState>,
    /// The operator's door on a SQLite file; closed (its file removed) when the server goes.
    _door: Option<crate::local_admin::AdminDoor>,
    /// One server per SQLite file, for as long as this one runs.
    _data_lock: Option<Arc<DataLock>>,
}

impl Application {
    /// Builds the application with the system's DNS resolver.
    pub async fn build(settings: ResolvedSettings) -> anyhow::Result<Application> {
        Application::build_with_lookup(settings, Arc::new(SystemLookup)).await
    }

    /// Builds the application with a given name lookup (tests script DNS with it).
    pub async fn build_with_lookup(
        settings: ResolvedSettings,
        lookup: Arc<dyn Lookup>,
    ) -> anyhow::Result<Application> {
        let listener = listen(settings.bind)?;
        Application::build_on(settings, listener, lookup).await
    }

    /// Builds the application on a socket already bound with `listen`.
    pub async fn build_on(
        settings: ResolvedSettings,
        listener: TcpListener,
        lookup: Arc<dyn Lookup>,
    ) -> anyhow::Result<Application> {
        let data_lock = lock_database(&settings.database_url)?;
        let db = connect_and_migrate(&settings).await?;
        let policy = EgressPolicy::new(&settings.raw.egress.allow_cidrs)
            .map_err(|e| anyhow::anyhow!("egress.allow_cidrs: {e}"))?
            .with_own_address(listener.local_addr()?);
        if !settings.raw.egress.allow_cidrs.is_empty() {
            tracing::warn!(
                allow_cidrs = ?settings.raw.egress.allow_cidrs,
                "egress.allow_cidrs opens the SSRF guard to these ranges (metadata addresses stay closed)"
            );
        }
        let resolver = GuardedResolver::new(Arc::new(policy), lookup);
        let secrets = Arc::new(SecretBox::new(&secrets_key(&settings)?));
        let agent_client = AgentClient::new(resolver, Duration::from_secs(3), secrets)
            .context("could not build the agent HTTP client")?;
        let jwt_secret = jwt_secret(&settings)?;
        let ttl = settings.raw.auth.token_ttl_secs.unwrap_or(DEFAULT_TOKEN_TTL_SECS);
        let jwt = JwtKeys::new(
            &jwt_secret,
            i64::try_from(ttl).context("auth.token_ttl_secs is too large")?,
        );

        let auth_budget = Budget::auth(&settings.raw.rate_limit);
        let (redis, rate_limiter, auth_limiter) = match &settings.raw.redis.url {
            Some(url) => {
                let client = redis::Client::open(url.as_str())
                    .context("redis.url is not a valid Redis URL")?;
                let connection = redis::aio::ConnectionManager::new(client)
                    .await
                    .with_context(|| "could not connect to Redis at redis.url")?;
                let prefix = &settings.raw.redis.key_prefix;
                let limiter =
                    RateLimiter::redis(connection.clone(), prefix, &settings.raw.rate_limit);
                let auth = RateLimiter::redis_with(
                    connection.clone(),
                    &format!("{prefix}auth:"),
                    auth_budget,
                );
                (Some(connection), limiter, auth)
            }
            None => (
                None,
                RateLimiter::in_process(&settings.raw.rate_limit),
                RateLimiter::in_process_with(auth_budget),
            ),
        };

        let port = listener.local_addr()?.port();
        let workers = settings.raw.server.workers;
        let api_body_limit = settings.raw.server.api_body_limit;
        let v1_body_limit = settings.raw.server.v1_body_limit;
        let bank = Bank::new(db.clone(), &settings.database_url)
            .await
            .context("could not load the ledger into the bank")?;
        // On a SQLite file this process is the authority for money: the operator's CLI comes
        // in through a door on loopback rather than writing to the file behind its back.
        let door = match (
            &data_lock,
            bank.is_authority(),
            registry::sqlite_file(&settings.database_url),
        ) {
            (Some(_), true, Some(database)) => Some(
                crate::local_admin::open(&database, listener.local_addr()?)
                    .context("could not write the admin door file next to the database")?,
            ),
            _ => None,
        };
        let mut state = AppState::new(
            db,
            bank,
            agent_client,
            redis,
            jwt,
            rate_limiter,
            auth_limiter,
            HashingPool::new(std::thread::available_parallelism().map_or(1, |n| n.get()))
                .context("could not start the password hashing threads")?,
            settings,
        );
        state.local_admin_token = door.as_ref().map(|door| door.token.clone());
        if state.bank.is_authority() {
            // The one server on its file: every agent change is made, and announced, here.
            state.agent_index.trust_announcements();
        }
        let state = web::Data::new(state);

        let server_state = state.clone();
        let mut server = HttpServer::new(move || {
            App::new()
                .app_data(server_state.clone())
                .app_data(
                    web::JsonConfig::default()
                        .limit(api_body_limit)
                        .error_handler(routes::json_error),
                )
                .app_data(web::PathConfig::default().error_handler(routes::path_error))
                .app_data(web::QueryConfig::default().error_handler(routes::query_error))
                .wrap(from_fn(crate::body_timeout::limit_body_idle))
                .wrap(from_fn(openai_error_shape))
                .wrap(from_fn(metrics::record))
                .configure(|cfg| routes::configure(cfg, v1_body_limit))
                .configure(crate::web::configure)
                .default_service(web::to(routes::no_route))
        })
        .shutdown_timeout(30);
        if workers > 0 {
            server = server.workers(workers);
        }
        let server = server.listen(listener)?.run();
        end_dead_instances(&state).await?;
        spawn_workers(state.clone());
        crate::batches::spawn_worker(state.clone());
        Ok(Application { port, server, state, _door: door, _data_lock: data_lock })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The shared state, for tests that inspect the database directly.
    pub fn state(&self) -> web::Data<AppState> {
        self.state.clone()
    }

    /// A handle to stop the server (gracefully, with `stop(true)`), for tests and embedders.
    pub fn handle(&self) -> actix_web::dev::ServerHandle {
        self.server.handle()
    }

    /// Serves until stopped (SIGINT/SIGTERM, or the handle). A graceful stop takes no new
    /// connections, lets in-flight requests finish and settle (up to 30 s), then waits for
    /// streaming relays to settle too.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let state = self.state.clone();
        self.server.await?;
        state.relays.close();
        if tokio::time::timeout(Duration::from_secs(30), state.relays.wait()).await.is_err() {
            tracing::warn!("some streams were still running at shutdown; their holds will expire");
        }
        Ok(())
    }
}

/// Binds the server's address. Done first, before anything is opened or written, so that a
/// busy port is the first and only thing a start reports.
pub fn listen(address: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(address).map_err(|err| {
        if err.kind() == std::io::ErrorKind::AddrInUse {
            let other = SocketAddr::new(address.ip(), address.port().wrapping_add(1).max(1));
            anyhow::anyhow!(
                "{address} is already in use: another program (perhaps another Gavel) listens \
                 there. Stop it, or start on another address: GAVEL__SERVER__BIND={other}"
            )
        } else {
            anyhow::Error::new(err).context(format!("could not listen on {address}"))
        }
    })
}

/// Opens the database (creating the SQLite data directory if needed) and applies every
/// pending migration.
pub async fn connect_and_migrate(
    settings: &ResolvedSettings,
) -> anyhow::Result<DatabaseConnection> {
    if settings.database_url.starts_with("sqlite:") {
        std::fs::create_dir_all(&settings.raw.server.data_dir).with_context(|| {
            format!("could not create data_dir {}", settings.raw.server.data_dir.display())
        })?;
    }
    let db = registry::connect(&settings.database_url, settings.raw.database.max_connections)
        .await
        .context("could not connect to database.url")?;
    Migrator::up(&db, None).await.context("could not apply migrations")?;
    Ok(db)
}

/// The configured secret, or one generated on first start and kept in `data_dir/jwt_secret`
/// (mode 0600) so tokens survive a restart.
fn jwt_secret(settings: &ResolvedSettings) -> anyhow::Result<Vec<u8>> {
    if let Some(secret) = &settings.raw.auth.jwt_secret {
        anyhow::ensure!(secret.len() >= 32, "auth.jwt_secret must be at least 32 characters");
        return Ok(secret.as_bytes().to_vec());
    }
    let dir = &settings.raw.server.data_dir;
    std::fs::create_dir_all(dir)
        .with_context(|| format!("could not create data_dir {}", dir.display()))?;
    let path = dir.join("jwt_secret");
    if path.exists() {
        let secret =
            std::fs::read(&path).with_context(|| format!("could not read {}", path.display()))?;
        anyhow::ensure!(
            secret.len() >= 32,
            "{} is too short; delete it to generate a new one",
            path.display()
        );
        return Ok(secret);
    }
    let mut bytes = [0_u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    let secret = hex::encode(bytes).into_bytes();
    write_private(&path, &secret)?;
    Ok(secret)
}

/// The key that seals agents' upstream keys: `auth.secrets_key` (64 hex characters), or one
/// generated on first start and kept in `data_dir/secrets_key` (mode 0600). Losing it makes the
/// stored upstream keys unreadable (their agents' calls then fail with `credential_unreadable`
/// until their owners set the keys again).
fn secrets_key(settings: &ResolvedSettings) -> anyhow::Result<[u8; 32]> {
    let parse = |text: &str, origin: &str| -> anyhow::Result<[u8; 32]> {
        let bytes = hex::decode(text.trim())
            .map_err(|_| anyhow::anyhow!("{origin} must be 64 hex characters"))?;
        <[u8; 32]>::try_from(bytes.as_slice())
            .map_err(|_| anyhow::anyhow!("{origin} must be 64 hex characters"))
    };
    if let Some(key) = &settings.raw.auth.secrets_key {
        return parse(key, "auth.secrets_key");
    }
    let dir = &settings.raw.server.data_dir;
    std::fs::create_dir_all(dir)
        .with_context(|| format!("could not create data_dir {}", dir.display()))?;
    let path = dir.join("secrets_key");
    if path.exists() {
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("could not read {}", path.display()))?;
        return parse(&text, &path.display().to_string());
    }
    let mut key = [0_u8; 32];
    rand::rng().fill_bytes(&mut key);
    write_private(&path, hex::encode(key).as_bytes())?;
    Ok(key)
}

/// Writes a new file only its owner can read (a secret kept in `data_dir`).
pub(crate) fn write_private(path: &Path, contents: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file =
        options.open(path).with_context(|| format!("could not create {}", path.display()))?;
    file.write_all(contents)?;
    Ok(())
}

/// How long an instance may go without a heartbeat before its work is taken as abandoned.
const INSTANCE_LEASE: chrono::TimeDelta = chrono::TimeDelta::seconds(15);
/// How often an instance renews its heartbeat and looks for dead ones.
const HEARTBEAT: Duration = Duration::from_secs(5);

/// Registers this process and ends the work of dead ones at once: on SQLite (one node) every
/// earlier instance is dead; on Postgres those past their lease. So after a `kill -9` and a
/// restart no job stays `running`, no hold blocks credits and no `Idempotency-Key` answers
/// 409 for the dead process's requests.
async fn end_dead_instances(state: &AppState) -> anyhow::Result<()> {
    let now = state.now();
    registry::instances::register(&state.db, state.instance_id, now)
        .await
        .context("could not register this instance")?;
    let single_node = state.settings.database_url.starts_with("sqlite:");
    let stale_before = (!single_node).then(|| now - INSTANCE_LEASE);
    let reaped = registry::instances::reap_dead(&state.db, state.instance_id, stale_before, now)
        .await
        .context("could not end the work of earlier instances")?;
    if reaped != registry::instances::Reaped::default() {
        tracing::warn!(?reaped, "ended the work of instances that stopped without finishing it");
    }
    Ok(())
}

/// Background upkeep: renews this instance's heartbeat and ends dead instances' work, voids
/// expired holds, marks abandoned jobs failed, forgets idle rate-limit buckets.
fn spawn_workers(state: web::Data<AppState>) {
    let lease_state = state.clone();
    tokio::spawn(async move {
        let state = lease_state;
        let mut tick = tokio::time::interval(HEARTBEAT);
        loop {
            tick.tick().await;
            let now = state.now();
            if let Err(err) =
                registry::instances::heartbeat(&state.db, state.instance_id, now).await
            {
                tracing::warn!(error = %err, "instance heartbeat failed");
            }
            let stale_before = Some(now - INSTANCE_LEASE);
            match registry::instances::reap_dead(&state.db, state.instance_id, stale_before, now)
                .await
            {
                Ok(reaped) if reaped != registry::instances::Reaped::default() => {
                    tracing::warn!(?reaped, "ended the work of instances that stopped");
                }
                Ok(_) => {}
                Err(err) => tracing::warn!(error = %err, "dead-instance sweep failed"),
            }
        }
    });
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(30));
        loop {
            tick.tick().await;
            match state.bank.reap_expired(state.now()).await {
                Ok(0) => {}
                Ok(voided) => {
                    state.metrics.holds_reaped.inc_by(voided);
                    tracing::info!(voided, "voided expired holds");
                }
                Err(err) => tracing::warn!(error = %err, "hold reaper failed"),
            }
            // No job runs longer than its hold: one still "running" long after any hold could
            // have expired was cut off by a crash.
            let cutoff = state.now() - chrono::Duration::hours(6);
            match registry::jobs::fail_abandoned_jobs(&state.db, cutoff, state.now()).await {
                Ok(0) => {}
                Ok(marked) => tracing::warn!(marked, "marked abandoned jobs as failed"),
                Err(err) => tracing::warn!(error = %err, "abandoned-job sweep failed"),
            }
            state.rate_limiter.forget_idle();
            state.auth_limiter.forget_idle();
        }
    });
}
