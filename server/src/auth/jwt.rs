//! Access tokens: HS256 JWTs with `exp`, `iss`, `aud` and `sub` all required.
//!
//! One algorithm only: a token whose header names another (`none`, `RS256`...) is refused
//! before its signature is looked at.

use chrono::{DateTime, Utc};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation, decode, encode};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// `iss` of every token Gavel issues.
pub const TOKEN_ISSUER: &str = "gavel";
/// `aud` of every token Gavel issues.
pub const TOKEN_AUDIENCE: &str = "gavel-api";

/// The claims of an access token.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    pub iss: String,
    pub aud: String,
    pub exp: i64,
    pub iat: i64,
}

/// The signing and verification keys, derived from one secret.
#[derive(Clone)]
pub struct JwtKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    ttl_secs: i64,
}

impl JwtKeys {
    pub fn new(secret: &[u8], ttl_secs: i64) -> JwtKeys {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.set_issuer(&[TOKEN_ISSUER]);
        validation.set_audience(&[TOKEN_AUDIENCE]);
        validation.leeway = 5;
        JwtKeys {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
            ttl_secs,
        }
    }

    pub fn ttl_secs(&self) -> i64 {
        self.ttl_secs
    }

    /// Issues a token for `user` valid from `now` for the configured lifetime.
    pub fn issue(
        &self,
        user: Uuid,
        now: DateTime<Utc>,
    ) -> Result<String, jsonwebtoken::errors::Error> {
        let claims = Claims {
            sub: user.to_string(),
            iss: TOKEN_ISSUER.into(),
            aud: TOKEN_AUDIENCE.into(),
            iat: now.timestamp(),
            exp: now.timestamp() + self.ttl_secs,
        };
        self.sign(&claims)
    }

    /// Signs arbitrary claims (tests use it to forge expired tokens with the real key).
    pub fn sign(&self, claims: &Claims) -> Result<String, jsonwebtoken::errors::Error> {
        encode(&Header::new(Algorithm::HS256), claims, &self.encoding)
    }

    /// The user a valid token names, or `None` for any invalid, expired or foreign token.
    pub fn verify(&self, token: &str) -> Option<Uuid> {
        let data = decode::<Claims>(token, &self.decoding, &self.validation).ok()?;
        Uuid::parse_str(&data.claims.sub).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_verifies_only_with_its_key_and_before_expiry() {
        let keys = JwtKeys::new(b"0123456789abcdef0123456789abcdef", 3600);
        let user = Uuid::new_v4();
        let token = keys.issue(user, Utc::now()).unwrap();
        assert_eq!(keys.verify(&token), Some(user));

        let other = JwtKeys::new(b"another-secret-another-secret-xx", 3600);
        assert_eq!(other.verify(&token), None);

        let expired = keys.issue(user, Utc::now() - chrono::Duration::hours(2)).unwrap();
        assert_eq!(keys.verify(&expired), None);

        let mut tampered = token.clone();
        tampered.pop();
        tampered.push(if token.ends_with('A') { 'B' } else { 'A' });
        assert_eq!(keys.verify(&tampered), None);
    }

    #[test]
    fn tokens_missing_a_required_claim_or_with_a_wrong_audience_are_refused() {
        let keys = JwtKeys::new(b"0123456789abcdef0123456789abcdef", 3600);
        let now = Utc::now().timestamp();
        let base = Claims {
            sub: Uuid::new_v4().to_string(),
            iss: TOKEN_ISSUER.into(),
            aud: TOKEN_AUDIENCE.into(),
            exp: now + 60,
            iat: now,
        };
        let wrong_aud = Claims { aud: "someone-else".into(), ..base.clone() };
        assert_eq!(keys.verify(&keys.sign(&wrong_aud).unwrap()), None);
        let wrong_iss = Claims { iss: "evil".into(), ..base.clone() };
        assert_eq!(keys.verify(&keys.sign(&wrong_iss).unwrap()), None);

        #[derive(Serialize)]
        struct NoExp {
            sub: String,
            iss: String,
            aud: String,
        }
        let no_exp = encode(
            &Header::new(Algorithm::HS256),
            &NoExp { sub: base.sub.clone(), iss: base.iss.clone(), aud: base.aud.clone() },
            &EncodingKey::from_secret(b"0123456789abcdef0123456789abcdef"),
        )
        .unwrap();
        assert_eq!(keys.verify(&no_exp), None);
    }
}
