//! Settings: compiled-in defaults, then an optional `gavel.toml`, then `GAVEL__SECTION__KEY`
//! environment variables, later layers winning.
//!
//! Every struct denies unknown fields, so a typo in the file or the environment
//! (`GAVEL__SERVR__BIND`) stops start-up with an error naming the key instead of being
//! silently ignored. Raw settings are plain data; `Settings::resolve` turns them into what the
//! server runs with (database URL defaulted from the data directory, amounts parsed).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use auction_engine::MicroCredits;
use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Deserializer, Serialize};

/// The whole configuration tree, as read.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    pub server: ServerSettings,
    pub database: DatabaseSettings,
    pub redis: RedisSettings,
    pub auth: AuthSettings,
    pub egress: EgressSettings,
    pub credits: CreditSettings,
    pub rate_limit: RateLimitSettings,
    pub dispatch: DispatchSettings,
    pub mcp: McpSettings,
    pub admin: AdminSettings,
    pub batch: BatchSettings,
}

/// The Batch API (`/v1/files`, `/v1/batches`) and its workers.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct BatchSettings {
    /// Largest batch input file accepted, in bytes.
    pub max_file_bytes: usize,
    /// Lines this process runs at once, over all batches (shared fairly between them).
    pub concurrency: usize,
    /// Lines of one batch running at once, over all instances.
    pub per_batch_concurrency: u64,
    /// Batch lines one agent serves at once in this process (a line waits for its auction's
    /// winner to have a free slot).
    pub per_agent_concurrency: usize,
    /// How long a claimed line stays this worker's without a renewal, in milliseconds. A
    /// worker renews its leases every third of this; a line whose worker died is free again
    /// after it.
    pub lease_ms: u64,
    /// How often an idle worker looks for lines, in milliseconds (a new batch wakes this
    /// process's worker at once).
    pub poll_ms: u64,
}

impl Default for BatchSettings {
    fn default() -> BatchSettings {
        BatchSettings {
            max_file_bytes: 100 * 1024 * 1024,
            concurrency: 32,
            per_batch_concurrency: 32,
            per_agent_concurrency: 16,
            lease_ms: 30_000,
            poll_ms: 500,
        }
    }
}

/// The operator.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdminSettings {
    /// The accounts (by email) that see the operator's page, `/operator`: a comma list in the
    /// environment or an array in `gavel.toml`. Empty: nobody does.
    #[serde(deserialize_with = "comma_list")]
    pub emails: Vec<String>,
}

/// The MCP endpoint, `/mcp`.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct McpSettings {
    /// Browser origins (`https://app.example.com`) allowed to call `/mcp`, besides this
    /// machine's own (`localhost`, `127.0.0.1`, `[::1]`). A request carrying any other
    /// `Origin` is refused (403); requests without one (every non-browser client) pass.
    pub allowed_origins: Vec<String>,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct DispatchSettings {
    /// How long an agent may take to answer when it declares no `max_latency_ms`.
    pub timeout_ms: u64,
    /// Largest agent response accepted, in bytes.
    pub max_response_bytes: usize,
    /// How long live bidders have to answer; the job never waits longer for bids.
    pub bid_deadline_ms: u64,
    /// Consecutive failures that open an agent's circuit.
    pub breaker_failures: u32,
    /// How long an open circuit keeps the agent out before it is tried again.
    pub breaker_cooldown_ms: u64,
    /// While a streaming caller waits for the first byte, a `: keep-alive` comment this often.
    pub keepalive_ms: u64,
    /// A stream that sends nothing for this long is cut.
    pub stream_idle_ms: u64,
}

impl Default for DispatchSettings {
    fn default() -> DispatchSettings {
        DispatchSettings {
            timeout_ms: 120_000,
            max_response_bytes: 8 * 1024 * 1024,
            bid_deadline_ms: 150,
            breaker_failures: 5,
            breaker_cooldown_ms: 30_000,
            keepalive_ms: 2_000,
            stream_idle_ms: 30_000,
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerSettings {
    /// Address to listen on; port 0 picks a free one.
    pub bind: String,
    /// Where the SQLite database and the generated JWT secret live.
    pub data_dir: PathBuf,
    /// Largest accepted body on `/api/*`, in bytes.
    pub api_body_limit: usize,
    /// Largest accepted body on `/v1/*` (chat requests carry whole conversations), in bytes.
    pub v1_body_limit: usize,
    /// HTTP worker threads; 0 means one per core.
    pub workers: usize,
    /// The longest a client may take between two pieces of a request body, in milliseconds:
    /// a body that trickles in slower is cut off (408) rather than holding a connection.
    pub body_idle_ms: u64,
}

impl Default for ServerSettings {
    fn default() -> ServerSettings {
        ServerSettings {
            bind: "127.0.0.1:8080".into(),
            data_dir: PathBuf::from("./data"),
            api_body_limit: 64 * 1024,
            v1_body_limit: 4 * 1024 * 1024,
            workers: 0,
            body_idle_ms: 10_000,
        }
    }
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseSettings {
    /// `sqlite://...` or `postgres://...`; unset means `sqlite://<data_dir>/gavel.db?mode=rwc`.
    pub url: Option<String>,
    pub max_connections: Option<u32>,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedisSettings {
    /// Unset: rate limits and other shared state stay in this process.
    pub url: Option<String>,
    /// Prefix of every key Gavel writes, so that several deployments can share one Redis.
    pub key_prefix: String,
}

impl Default for RedisSettings {
    fn default() -> RedisSettings {
        RedisSettings { url: None, key_prefix: "gavel:".into() }
    }
}

#[derive(Clone, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthSettings {
    /// HMAC secret for access tokens. Unset: generated once and kept in `data_dir`. Set it
    /// explicitly when several instances must accept each other's tokens.
    pub jwt_secret: Option<String>,
    /// Lifetime of an access token, in seconds (default one day).
    pub token_ttl_secs: Option<u64>,
    /// Key sealing agents' upstream API keys at rest: 64 hex characters. Unset: generated once
    /// and kept in `data_dir`. Set it when several instances share one database.
    pub secrets_key: Option<String>,
}

impl std::fmt::Debug for AuthSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthSettings")
            .field("jwt_secret", &self.jwt_secret.as_ref().map(|_| "<redacted>"))
            .field("token_ttl_secs", &self.token_ttl_secs)
            .field("secrets_key", &self.secrets_key.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct EgressSettings {
    /// CIDRs outbound calls may reach despite the SSRF guard: a comma list in the environment
    /// (`127.0.0.0/8,10.0.0.0/8`) or an array in `gavel.toml`.
    #[serde(deserialize_with = "comma_list")]
    pub allow_cidrs: Vec<String>,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct CreditSettings {
    /// Free credits per user per calendar month (UTC).
    #[serde(deserialize_with = "credits_amount")]
    pub monthly_grant: String,
    /// What the caller pays per auction call.
    #[serde(deserialize_with = "credits_amount")]
    pub call_fee: String,
    /// What the winning agent's owner pays per win.
    #[serde(deserialize_with = "credits_amount")]
    pub win_fee: String,
    /// How long a job's hold lives before the reaper voids it, in seconds.
    pub hold_ttl_secs: u64,
}

impl Default for CreditSettings {
    fn default() -> CreditSettings {
        CreditSettings {
            monthly_grant: "100".into(),
            call_fee: "1".into(),
            win_fee: "1".into(),
            hold_ttl_secs: 900,
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimitSettings {
    /// Sustained requests per second per API key (or per user for tokens, per IP for login).
    pub per_second: u32,
    /// Requests allowed in a burst above the sustained rate.
    pub burst: u32,
    /// Sign-ups and log-ins per minute, per IP and (log-ins) per account: a budget of its own,
    /// much tighter than the API's, because each one costs a password hash.
    pub auth_per_minute: u32,
    /// Sign-ups and log-ins allowed in a burst above `auth_per_minute`.
    pub auth_burst: u32,
}

impl Default for RateLimitSettings {
    fn default() -> RateLimitSettings {
        RateLimitSettings { per_second: 200, burst: 2000, auth_per_minute: 30, auth_burst: 10 }
    }
}

/// Why the configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration: {0}")]
    Load(#[from] Box<figment::Error>),
    #[error("configuration: {key}: {message}")]
    Invalid { key: &'static str, message: String },
}

/// Settings ready to run with: every default applied and every value parsed.
#[derive(Clone, Debug)]
pub struct ResolvedSettings {
    pub raw: Settings,
    pub bind: SocketAddr,
    pub database_url: String,
    pub monthly_grant: MicroCredits,
    pub call_fee: MicroCredits,
    pub win_fee: MicroCredits,
    /// `admin.emails`, parsed.
    pub admin_emails: Vec<registry::Email>,
}

impl Settings {
    /// Loads defaults, then `config_file` if it exists (a missing file is fine unless it was
    /// named explicitly), then the environment.
    pub fn load(config_file: Option<&Path>) -> Result<Settings, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Settings::default()));
        match config_file {
            Some(path) => {
                if !path.exists() {
                    return Err(ConfigError::Invalid {
                        key: "--config",
                        message: format!("{} does not exist", path.display()),
                    });
                }
                figment = figment.merge(Toml::file(path));
            }
            None => figment = figment.merge(Toml::file("gavel.toml")),
        }
        figment = figment.merge(Env::prefixed("GAVEL__").split("__"));
        figment.extract().map_err(|e| ConfigError::Load(Box::new(e)))
    }

    pub fn resolve(self) -> Result<ResolvedSettings, ConfigError> {
        let bind = self.server.bind.parse().map_err(|_| ConfigError::Invalid {
            key: "server.bind",
            message: format!("`{}` is not an address like 127.0.0.1:8080", self.server.bind),
        })?;
        let database_url = match &self.database.url {
            Some(url) => url.clone(),
            None => format!("sqlite://{}/gavel.db?mode=rwc", self.server.data_dir.display()),
        };
        if registry::Backend::of_url(&database_url).is_none() {
            return Err(ConfigError::Invalid {
                key: "database.url",
                message: "must start with sqlite: or postgres://".into(),
            });
        }
        let amount = |key: &'static str, text: &str| {
            let parsed = MicroCredits::parse_decimal(text)
                .map_err(|e| ConfigError::Invalid { key, message: e.to_string() })?;
            if parsed.is_negative() {
                return Err(ConfigError::Invalid { key, message: "must not be negative".into() });
            }
            Ok(parsed)
        };
        let monthly_grant = amount("credits.monthly_grant", &self.credits.monthly_grant)?;
        let call_fee = amount("credits.call_fee", &self.credits.call_fee)?;
        let win_fee = amount("credits.win_fee", &self.credits.win_fee)?;
        if self.rate_limit.per_second == 0 || self.rate_limit.burst == 0 {
            return Err(ConfigError::Invalid {
                key: "rate_limit",
                message: "per_second and burst must be at least 1".into(),
            });
        }
        for cidr in &self.egress.allow_cidrs {
            if cidr.parse::<ipnet::IpNet>().is_err() {
                return Err(ConfigError::Invalid {
                    key: "egress.allow_cidrs",
                    message: format!("`{cidr}` is not a CIDR like 127.0.0.0/8"),
                });
            }
        }
        let admin_emails = self
            .admin
            .emails
            .iter()
            .map(|email| {
                registry::Email::parse(email.trim()).map_err(|err| ConfigError::Invalid {
                    key: "admin.emails",
                    message: format!("`{email}`: {err}"),
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(ResolvedSettings {
            raw: self,
            bind,
            database_url,
            monthly_grant,
            call_fee,
            win_fee,
            admin_emails,
        })
    }
}

/// Accepts `"a,b"` or `["a", "b"]`.
fn comma_list<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum ListOrString {
        List(Vec<String>),
        Text(String),
    }
    Ok(match ListOrString::deserialize(deserializer)? {
        ListOrString::List(items) => items,
        ListOrString::Text(text) => {
            text.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned).collect()
        }
    })
}

/// Accepts `100`, `0.5` or `"0.5"`, kept as text and parsed exactly in `resolve`.
fn credits_amount<'de, D: Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Amount {
        Integer(i64),
        Float(f64),
        Text(String),
    }
    Ok(match Amount::deserialize(deserializer)? {
        Amount::Integer(n) => n.to_string(),
        Amount::Float(x) => x.to_string(),
        Amount::Text(text) => text,
    })
}
