//! Parse, don't validate: the domain values that cross `registry`'s API.
//!
//! Each type has a private field and one way in, `parse`, which names the offending field in
//! its error. Code holding an `Email` never re-checks it.

use std::fmt;

use uuid::Uuid;
use validator::ValidateEmail;

use crate::RegistryError;

/// A user's id; also the id of the user's wallet account.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UserId(pub Uuid);

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A lower-cased, syntactically valid email address of at most 254 bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Email(String);

impl Email {
    pub fn parse(raw: &str) -> Result<Email, RegistryError> {
        let email = raw.trim().to_lowercase();
        if email.is_empty() {
            return Err(RegistryError::invalid("email", "must not be empty"));
        }
        if email.len() > 254 {
            return Err(RegistryError::invalid("email", "must be at most 254 characters"));
        }
        if !email.validate_email() {
            return Err(RegistryError::invalid("email", "is not a valid email address"));
        }
        Ok(Email(email))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A public handle: 3 to 32 of `a-z 0-9 - _`, starting with a letter or digit. Agents are
/// named `handle/name`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Handle(String);

impl Handle {
    pub const MIN_LEN: usize = 3;
    pub const MAX_LEN: usize = 32;

    pub fn parse(raw: &str) -> Result<Handle, RegistryError> {
        let handle = raw.trim().to_lowercase();
        let len = handle.chars().count();
        if !(Self::MIN_LEN..=Self::MAX_LEN).contains(&len) {
            return Err(RegistryError::invalid("handle", "must be 3 to 32 characters"));
        }
        if !handle
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
        {
            return Err(RegistryError::invalid(
                "handle",
                "may contain only letters, digits, '-' and '_'",
            ));
        }
        if !handle.starts_with(|c: char| c.is_ascii_alphanumeric()) {
            return Err(RegistryError::invalid("handle", "must start with a letter or digit"));
        }
        Ok(Handle(handle))
    }

    /// A handle derived from an email's local part, for sign-ups that did not choose one.
    /// `suffix` disambiguates when the plain form is taken.
    pub fn from_email(email: &Email, suffix: Option<&str>) -> Handle {
        let local = email.as_str().split('@').next().unwrap_or_default();
        let mut base: String = local
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '-' })
            .collect::<String>()
            .trim_matches('-')
            .chars()
            .take(Self::MAX_LEN - 9)
            .collect();
        while base.chars().count() < Self::MIN_LEN {
            base.push('0');
        }
        if let Some(suffix) = suffix {
            base.push('-');
            base.push_str(suffix);
        }
        Handle(base)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A password of 12 to 128 characters. Never displayed; `Debug` is redacted.
#[derive(Clone)]
pub struct Password(String);

impl Password {
    pub const MIN_LEN: usize = 12;
    pub const MAX_LEN: usize = 128;

    pub fn parse(raw: String) -> Result<Password, RegistryError> {
        let len = raw.chars().count();
        if len < Self::MIN_LEN {
            return Err(RegistryError::invalid("password", "must be at least 12 characters"));
        }
        if len > Self::MAX_LEN {
            return Err(RegistryError::invalid("password", "must be at most 128 characters"));
        }
        Ok(Password(raw))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(<redacted>)")
    }
}

/// An API key's label: 1 to 100 characters, trimmed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyName(String);

impl KeyName {
    pub fn parse(raw: &str) -> Result<KeyName, RegistryError> {
        // The bound is on what was sent, before trimming: an input's size is bounded as sent.
        if raw.chars().count() > 100 {
            return Err(RegistryError::invalid("name", "must be at most 100 characters"));
        }
        let name = raw.trim();
        if name.is_empty() {
            return Err(RegistryError::invalid("name", "must not be empty"));
        }
        if name.chars().count() > 100 {
            return Err(RegistryError::invalid("name", "must be at most 100 characters"));
        }
        if name.chars().any(char::is_control) {
            return Err(RegistryError::invalid("name", "must not contain control characters"));
        }
        Ok(KeyName(name.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_normalised_and_checked() {
        assert_eq!(Email::parse(" Ada@Example.COM ").unwrap().as_str(), "ada@example.com");
        for bad in ["", "ada", "ada@", "@example.com", "a b@example.com"] {
            assert!(Email::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn handles_follow_the_charset() {
        assert_eq!(Handle::parse("Ada_L").unwrap().as_str(), "ada_l");
        for bad in ["ab", "-ada", "ada lovelace", "ada/x", &"a".repeat(33)] {
            assert!(Handle::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn derived_handles_parse() {
        let email = Email::parse("a.b+c@example.com").unwrap();
        let handle = Handle::from_email(&email, None);
        assert_eq!(Handle::parse(handle.as_str()).unwrap(), handle);
        let email = Email::parse("x@example.com").unwrap();
        let handle = Handle::from_email(&email, Some("a1b2"));
        assert_eq!(Handle::parse(handle.as_str()).unwrap(), handle);
    }

    #[test]
    fn password_length_is_bounded() {
        assert!(Password::parse("short".into()).is_err());
        assert!(Password::parse("x".repeat(129)).is_err());
        assert!(Password::parse("correct horse battery".into()).is_ok());
        assert_eq!(
            format!("{:?}", Password::parse("secretsecret".into()).unwrap()),
            "Password(<redacted>)"
        );
    }
}
