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
    /// Not before: checked when present.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<i64>,
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
        validation.validate_nbf = true;
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
            nbf: None,
        };
        self.sign(&claims)
    }

    /// Signs arbitrary claims (tests use it to forge expired tokens with the real key).
    pub fn sign(&self, claims: &Claims) -> Result<String, jsonwebtoken::errors::Error> {
        encode(&Header::new(Algorithm::HS256), claims, &self.encoding)
    }

    /// The user a valid token names, or `None` for any invalid, expired or foreign token, a
    /// token not yet valid (`nbf`, or `iat` in the future), or one made to live longer than
    /// this server issues them for (`exp - iat` above `auth.token_ttl_secs`).
    pub fn verify(&self, token: &str) -> Option<Uuid> {
        let claims = decode::<Claims>(token, &self.decoding, &self.validation).ok()?.claims;
        let now = Utc::now().timestamp();
        let leeway = self.validation.leeway as i64;
        if claims.iat > now + leeway || claims.exp - claims.iat > self.ttl_secs + leeway {
            return None;
        }
        Uuid::parse_str(&claims.sub).ok()
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
    fn tokens_not_yet_valid_or_made_to_live_too_long_are_refused() {
        let keys = JwtKeys::new(b"0123456789abcdef0123456789abcdef", 3600);
        let now = Utc::now().timestamp();
        let claims = |iat: i64, exp: i64, nbf: Option<i64>| Claims {
            sub: Uuid::new_v4().to_string(),
            iss: TOKEN_ISSUER.into(),
            aud: TOKEN_AUDIENCE.into(),
            exp,
            iat,
            nbf,
        };
        let ok = keys.sign(&claims(now, now + 3600, Some(now - 1))).unwrap();
        assert!(keys.verify(&ok).is_some());
        let early = keys.sign(&claims(now, now + 3600, Some(now + 600))).unwrap();
        assert_eq!(keys.verify(&early), None, "nbf in the future");
        let forever = keys.sign(&claims(now, now + 365 * 86_400, None)).unwrap();
        assert_eq!(keys.verify(&forever), None, "longer than the configured lifetime");
        let future = keys.sign(&claims(now + 600, now + 1200, None)).unwrap();
        assert_eq!(keys.verify(&future), None, "issued in the future");
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
            nbf: None,
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
