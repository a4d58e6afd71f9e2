//! The operator's door into a running server on a SQLite file.
//!
//! On a SQLite file the server is the authority for money (`registry::Bank`): a grant written
//! to the file behind its back would not be in its book. So `gavel admin grant` beside a
//! running server asks the server. At start the server writes `<database>.admin`, readable by
//! its user only, with its loopback address and a random token made for this run; the CLI
//! finds the file's lock taken (`data_lock`), reads the door and posts the grant to
//! `POST /internal/admin/grant` with the token. The route answers only on loopback, only with
//! that token, and only when a door is open (never on Postgres, where the database is the
//! authority and the CLI writes to it directly). With no server running the CLI works on the
//! file itself, holding the lock so that no server starts halfway through.

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use rand::RngCore;
use serde::{Deserialize, Serialize};

/// What the door file holds.
#[derive(Debug, Serialize, Deserialize)]
pub struct DoorFile {
    pub url: String,
    pub token: String,
}

/// A running server's open door; the file goes when the server stops cleanly (after a crash
/// the next server replaces it, and a CLI only reads it while the lock is taken).
#[derive(Debug)]
pub struct AdminDoor {
    pub token: String,
    path: PathBuf,
}

impl Drop for AdminDoor {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// `<database>.admin`.
fn door_path(database: &Path) -> PathBuf {
    let mut name = database.as_os_str().to_owned();
    name.push(".admin");
    PathBuf::from(name)
}

/// Opens the door of a server on `database` listening on `address`.
pub fn open(database: &Path, address: SocketAddr) -> std::io::Result<AdminDoor> {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    let token = hex::encode(bytes);
    // Reached over loopback whatever the server binds (an unspecified or loopback address).
    let host = if address.ip().is_unspecified() || address.ip().is_loopback() {
        "127.0.0.1".to_owned()
    } else {
        address.ip().to_string()
    };
    let door = DoorFile { url: format!("http://{host}:{}", address.port()), token: token.clone() };
    let path = door_path(database);
    let _ = std::fs::remove_file(&path);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(&path)?;
    file.write_all(&serde_json::to_vec(&door).map_err(std::io::Error::other)?)?;
    Ok(AdminDoor { token, path })
}

/// The door of the server running on `database`, as its file says.
pub fn find(database: &Path) -> anyhow::Result<DoorFile> {
    let path = door_path(database);
    let text = std::fs::read(&path).map_err(|err| {
        anyhow::anyhow!(
            "a server is running on {} but its admin door {} cannot be read ({err}); \
             run this command as the server's user",
            database.display(),
            path.display()
        )
    })?;
    serde_json::from_slice(&text)
        .map_err(|err| anyhow::anyhow!("the admin door {} is not valid: {err}", path.display()))
}

/// A grant asked of a running server.
#[derive(Debug, Serialize, Deserialize)]
pub struct GrantRequest {
    pub email: String,
    /// Decimal credits.
    pub credits: String,
    /// Makes a retried request grant once.
    pub transfer_id: uuid::Uuid,
}

/// The wallet after the grant, in decimal credits.
#[derive(Debug, Serialize, Deserialize)]
pub struct GrantReply {
    pub balance: String,
    pub available: String,
}

/// Posts `request` through `door`.
pub async fn grant(door: &DoorFile, request: &GrantRequest) -> anyhow::Result<GrantReply> {
    let response = reqwest::Client::builder()
        .no_proxy()
        .timeout(std::time::Duration::from_secs(30))
        .build()?
        .post(format!("{}/internal/admin/grant", door.url))
        .bearer_auth(&door.token)
        .json(request)
        .send()
        .await
        .map_err(|err| {
            anyhow::anyhow!("the running server did not answer at {}: {err}", door.url)
        })?;
    let status = response.status();
    let body = response.text().await?;
    anyhow::ensure!(status.is_success(), "the running server refused the grant ({status}): {body}");
    Ok(serde_json::from_str(&body)?)
}
