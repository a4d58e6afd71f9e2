//! `SecretBox`: agents' upstream API keys are sealed at rest with XChaCha20-Poly1305 (a random
//! 24-byte nonce per value), under a key from `auth.secrets_key` or, unset, generated once
//! into `<data_dir>/secrets_key`. Stored as `gvs1:` + base64(nonce ‖ ciphertext ‖ tag).
//!
//! The registry stores and returns the sealed text; the server seals before storing and opens
//! only at the moment it calls the agent. A value stored before sealing existed (no prefix)
//! is used as it is, and sealed on its next update.

use base64::Engine;
use base64::engine::general_purpose::STANDARD_NO_PAD;
use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::RngCore;

const PREFIX: &str = "gvs1:";
const NONCE_LEN: usize = 24;

pub struct SecretBox {
    cipher: XChaCha20Poly1305,
}

impl SecretBox {
    /// A box under a 32-byte key.
    pub fn new(key: &[u8; 32]) -> SecretBox {
        SecretBox { cipher: XChaCha20Poly1305::new(key.into()) }
    }

    /// Seals a secret for storage.
    pub fn seal(&self, secret: &str) -> Result<String, anyhow::Error> {
        let mut nonce = [0_u8; NONCE_LEN];
        rand::rng().fill_bytes(&mut nonce);
        let sealed = self
            .cipher
            .encrypt(&XNonce::from(nonce), secret.as_bytes())
            .map_err(|_| anyhow::anyhow!("could not seal a secret"))?;
        let mut bytes = nonce.to_vec();
        bytes.extend_from_slice(&sealed);
        Ok(format!("{PREFIX}{}", STANDARD_NO_PAD.encode(bytes)))
    }

    /// Opens a stored secret; a value stored before sealing (no prefix) is returned as it is.
    /// `None` when a sealed value does not open (another key, or tampered).
    pub fn open(&self, stored: &str) -> Option<String> {
        let Some(encoded) = stored.strip_prefix(PREFIX) else {
            return Some(stored.to_owned());
        };
        let bytes = STANDARD_NO_PAD.decode(encoded).ok()?;
        if bytes.len() < NONCE_LEN {
            return None;
        }
        let (nonce, sealed) = bytes.split_at(NONCE_LEN);
        let nonce: [u8; NONCE_LEN] = nonce.try_into().ok()?;
        let plain = self.cipher.decrypt(&XNonce::from(nonce), sealed).ok()?;
        String::from_utf8(plain).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_secrets_open_only_under_their_key_and_hide_the_secret() {
        let secret_box = SecretBox::new(&[7; 32]);
        let sealed = secret_box.seal("sk-upstream-key").unwrap();
        assert!(sealed.starts_with("gvs1:") && !sealed.contains("sk-upstream"));
        assert_ne!(sealed, secret_box.seal("sk-upstream-key").unwrap(), "a fresh nonce each time");
        assert_eq!(secret_box.open(&sealed).as_deref(), Some("sk-upstream-key"));
        assert_eq!(SecretBox::new(&[8; 32]).open(&sealed), None, "another key");
        let mut tampered = sealed.clone();
        tampered.pop();
        tampered.push(if sealed.ends_with('A') { 'B' } else { 'A' });
        assert_eq!(secret_box.open(&tampered), None);
        assert_eq!(secret_box.open("legacy-clear").as_deref(), Some("legacy-clear"));
    }
}
