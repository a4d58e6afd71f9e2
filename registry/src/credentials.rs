//! Password hashing (argon2id) and API-key material (random, SHA-256 at rest).
//!
//! These are pure, CPU-bound functions. Hashing costs ~19 MiB and tens of milliseconds, so the
//! server runs them on a few threads of its own, never on a request's async worker. Each
//! thread hashes in one reusable 19 MiB buffer: allocating a fresh one per hash fragmented the
//! heap, and RSS grew by about one buffer per login, for good.

use std::cell::RefCell;
use std::sync::OnceLock;

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{Output, ParamsString, PasswordHash, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};
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

thread_local! {
    /// This thread's argon2 working memory, reused from hash to hash.
    static MEMORY: RefCell<Vec<Block>> = const { RefCell::new(Vec::new()) };
}

/// The working memory is allocated with room for this many bytes, above glibc's largest
/// dynamic mmap threshold (32 MiB on 64-bit, `mallopt(3)`), so it is always a mapping of its
/// own: freeing it unmaps it at once. A 19 MiB buffer freed once raises glibc's thresholds
/// (mmap to 19 MiB, trim to twice that), after which the next one comes from the heap and
/// may never go back to the OS. Only the 19 MiB that are used are ever touched, so the
/// spare capacity costs address space, not memory.
const MAPPED_BYTES: usize = 33 << 20;

/// Runs argon2 over this thread's reusable working memory of `params`' size.
fn hash_into(
    hasher: &Argon2<'_>,
    params: &Params,
    password: &[u8],
    salt: &[u8],
    out: &mut [u8],
) -> Result<(), argon2::Error> {
    MEMORY.with(|memory| {
        let mut memory = memory.borrow_mut();
        if memory.len() != params.block_count() {
            let blocks = params.block_count();
            let mut fresh = Vec::with_capacity(blocks.max(MAPPED_BYTES / size_of::<Block>()));
            fresh.resize(blocks, Block::default());
            *memory = fresh;
        }
        hasher.hash_password_into_with_memory(password, salt, out, memory.as_mut_slice())
    })
}

/// Frees this thread's argon2 working memory (19 MiB); the next hash on this thread allocates
/// it again. For hashing threads that have been idle a while.
pub fn release_hash_memory() {
    MEMORY.with(|memory| *memory.borrow_mut() = Vec::new());
}

/// Hashes a password into a PHC string (`$argon2id$v=19$m=19456,t=2,p=1$...`).
pub fn hash_password(password: &Password) -> Result<String, RegistryError> {
    hash_bytes(password.expose().as_bytes())
}

fn hash_bytes(password: &[u8]) -> Result<String, RegistryError> {
    let failed = |e: String| RegistryError::PasswordHash(e);
    let salt = SaltString::generate(&mut OsRng);
    let mut salt_bytes = [0_u8; 64];
    let raw_salt = salt.as_salt().decode_b64(&mut salt_bytes).map_err(|e| failed(e.to_string()))?;
    let hasher = argon2id()?;
    let params = hasher.params().clone();
    let mut out = [0_u8; Params::DEFAULT_OUTPUT_LEN];
    hash_into(&hasher, &params, password, raw_salt, &mut out).map_err(|e| failed(e.to_string()))?;
    let phc = PasswordHash {
        algorithm: argon2::ARGON2ID_IDENT,
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(&params).map_err(|e| failed(e.to_string()))?,
        salt: Some(salt.as_salt()),
        hash: Some(Output::new(&out).map_err(|e| failed(e.to_string()))?),
    };
    Ok(phc.to_string())
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
    let (Some(expected), Some(salt)) = (parsed.hash, parsed.salt) else {
        return false;
    };
    let Ok(params) = Params::try_from(&parsed) else {
        return false;
    };
    let Ok(algorithm) = Algorithm::try_from(parsed.algorithm) else {
        return false;
    };
    let version = parsed.version.map_or(Ok(Version::V0x13), Version::try_from);
    let Ok(version) = version else {
        return false;
    };
    let mut salt_bytes = [0_u8; 64];
    let Ok(raw_salt) = salt.decode_b64(&mut salt_bytes) else {
        return false;
    };
    let hasher = Argon2::new(algorithm, version, params.clone());
    let mut out = vec![0_u8; expected.len()];
    if hash_into(&hasher, &params, candidate.as_bytes(), raw_salt, &mut out).is_err() {
        return false;
    }
    // `Output`'s equality is constant-time.
    let matches = Output::new(&out).is_ok_and(|computed| computed == expected);
    matches && known
}

/// A real argon2id hash, with the production parameters, of a random password nobody knows.
/// Made once per process so that checking an unknown user costs what checking a real one does.
fn dummy_hash() -> &'static str {
    static DUMMY: OnceLock<String> = OnceLock::new();
    DUMMY.get_or_init(|| {
        let mut bytes = [0_u8; 24];
        rand::rng().fill_bytes(&mut bytes);
        hash_bytes(&bytes).unwrap_or_default()
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
    let hash = hash_secret(&secret);
    GeneratedKey { secret, prefix, hash }
}

/// 256 random bits, hex-encoded: a browser session's token or its CSRF token.
pub fn random_token() -> String {
    let mut bytes = [0_u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// The SHA-256 of a key or a session token, hex-encoded. Both are high-entropy random
/// secrets, so a fast hash is enough.
pub(crate) fn hash_secret(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// Compares two hashes in constant time.
pub(crate) fn hashes_match(a: &str, b: &str) -> bool {
    a.as_bytes().ct_eq(b.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// This process's resident memory, in MiB (Linux).
    fn rss_mib() -> u64 {
        let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
        let pages: u64 = statm.split_whitespace().nth(1).and_then(|p| p.parse().ok()).unwrap_or(0);
        pages * 4096 / (1 << 20)
    }

    /// Released working memory goes back to the OS every time, not only the first: a freed
    /// 19 MiB buffer raises glibc's thresholds, and the next one must not land in the heap.
    #[test]
    fn released_hash_memory_leaves_the_process_every_time() {
        let password = Password::parse("correct horse battery".into()).unwrap();
        // On a thread of its own, as a hashing thread: its own arena, like the server's.
        std::thread::spawn(move || {
            for round in 0..3 {
                hash_password(&password).unwrap();
                let busy = rss_mib();
                release_hash_memory();
                let idle = rss_mib();
                assert!(busy >= idle + 15, "round {round}: {busy} MiB hashing, {idle} MiB after");
            }
        })
        .join()
        .unwrap();
    }

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
    fn hashes_agree_with_the_argon2_crates_own_hasher_and_verifier() {
        use argon2::password_hash::{PasswordHasher, PasswordVerifier};
        // Hashes stored before the reusable buffer (made by the crate's hasher) still verify,
        // and ours verify with the crate's verifier.
        let salt = SaltString::generate(&mut OsRng);
        let theirs = argon2id().unwrap().hash_password(b"an older password", &salt).unwrap();
        assert!(verify_password("an older password", Some(&theirs.to_string())));
        assert!(!verify_password("an older passwore", Some(&theirs.to_string())));
        let ours = hash_bytes(b"a newer password").unwrap();
        let parsed = PasswordHash::new(&ours).unwrap();
        assert!(argon2id().unwrap().verify_password(b"a newer password", &parsed).is_ok());
        assert!(argon2id().unwrap().verify_password(b"a newer passwore", &parsed).is_err());
    }

    #[test]
    fn api_keys_are_prefixed_random_and_hashed() {
        let a = generate_api_key();
        let b = generate_api_key();
        assert!(a.secret.starts_with("gvl_") && a.secret.len() == 52);
        assert_ne!(a.secret, b.secret);
        assert_eq!(a.prefix, &a.secret[..12]);
        assert_eq!(a.hash, hash_secret(&a.secret));
        assert!(hashes_match(&a.hash, &hash_secret(&a.secret)));
        assert!(!hashes_match(&a.hash, &b.hash));
    }
}
