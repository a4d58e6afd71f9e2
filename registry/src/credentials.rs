//! Password hashing (argon2id) and API-key material (random, SHA-256 at rest).
//!
//! These are pure, CPU-bound functions. Hashing costs ~19 MiB and tens of milliseconds, so the
//! server runs them on the blocking pool, never on a request's async worker.

use std::sync::OnceLock;

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::{Password, RegistryError};

/// The prefix every Gavel API key starts with; lets a bearer token be told from a JWT.
pub const API_KEY_PREFIX: &str = "gvl_";

/// How many leading characters of a key are stored and shown to identify it.
const DISPLAY_PREFIX_LEN: usize = 12;

fn argon2id() -> Result<Argon2<'static>, RegistryError> {
    // OWASP's first recommended argon2id setting: 19 MiB, 2 passes, 1 lane.
    let params = Params::new(19 * 1024, 2, 1, None)
        .map_err(|e| RegistryError::PasswordHash(e.to_string()))?;
    Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
}

/// Hashes a password into a PHC string (`$argon2id$v=19$m=19456,t=2,p=1$...`).
pub fn hash_password(password: &Password) -> Result<String, RegistryError> {
    let salt = SaltString::generate(&mut OsRng);
    argon2id()?
        .hash_password(password.expose().as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(|e| RegistryError::PasswordHash(e.to_string()))
}

/// Checks a password against a stored PHC hash. `stored` is `None` for an unknown user: the
/// check then runs against a fixed hash so that the time taken does not reveal whether the
/// account exists.
pub fn verify_password(candidate: &str, stored: Option<&str>) -> bool {
    let (hash_text, known) = match stored {
        Some(hash) => (hash, true),
        None => (dummy_hash(), false),
    };
    let Ok(parsed) = PasswordHash::new(hash_text) else {
        return false;
    };
    let Ok(hasher) = argon2id() else {
        return false;
    };
    let matches = hasher.verify_password(candidate.as_bytes(), &parsed).is_ok();
    matches && known
}

/// A real argon2id hash, with the production parameters, of a random password nobody knows.
/// Made once per process so that checking an unknown user costs what checking a real one does.
fn dummy_hash() -> &'static str {
    static DUMMY: OnceLock<String> = OnceLock::new();
    DUMMY.get_or_init(|| {
        let mut bytes = [0_u8; 24];
        rand::rng().fill_bytes(&mut bytes);
        let salt = SaltString::generate(&mut OsRng);
        argon2id()
            .ok()
            .and_then(|hasher| hasher.hash_password(&bytes, &salt).ok().map(|h| h.to_string()))
            .unwrap_or_default()
    })
}

/// A freshly generated API key: the full secret (shown once), its display prefix and its hash.
pub(crate) struct GeneratedKey {
    pub secret: String,
    pub prefix: String,
    pub hash: String,
}

/// Generates `gvl_` followed by 48 hex characters (192 random bits).
pub(crate) fn generate_api_key() -> GeneratedKey {
    let mut bytes = [0_u8; 24];
    rand::rng().fill_bytes(&mut bytes);
    let secret = format!("{API_KEY_PREFIX}{}", hex::encode(bytes));
    let prefix = secret.chars().take(DISPLAY_PREFIX_LEN).collect();
    let hash = hash_api_key(&secret);
    GeneratedKey { secret, prefix, hash }
}

/// The SHA-256 of a key, hex-encoded. Keys are high-entropy, so a fast hash is enough.
pub(crate) fn hash_api_key(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// Compares two hashes in constant time.
pub(crate) fn hashes_match(a: &str, b: &str) -> bool {
    a.as_bytes().ct_eq(b.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_password_verifies_against_its_own_hash_only() {
        let password = Password::parse("correct horse battery".into()).unwrap();
        let hash = hash_password(&password).unwrap();
        assert!(hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"));
        assert!(verify_password("correct horse battery", Some(&hash)));
        assert!(!verify_password("correct horse batterY", Some(&hash)));
        assert!(!verify_password("correct horse battery", None));
    }

    #[test]
    fn api_keys_are_prefixed_random_and_hashed() {
        let a = generate_api_key();
        let b = generate_api_key();
        assert!(a.secret.starts_with("gvl_") && a.secret.len() == 52);
        assert_ne!(a.secret, b.secret);
        assert_eq!(a.prefix, &a.secret[..12]);
        assert_eq!(a.hash, hash_api_key(&a.secret));
        assert!(hashes_match(&a.hash, &hash_api_key(&a.secret)));
        assert!(!hashes_match(&a.hash, &b.hash));
    }
}
