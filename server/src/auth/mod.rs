//! Authentication: access tokens (JWT), API keys, the `Caller` extractor that accepts either
//! on every authenticated route, and the password rules of sign-up and login.

mod caller;
mod hashing;
mod jwt;
mod password;

pub use caller::{Caller, Credential, MaybeCaller, peer_key};
pub use hashing::HashingPool;
pub use jwt::{Claims, JwtKeys, TOKEN_AUDIENCE, TOKEN_ISSUER};
pub(crate) use password::{log_in, sign_up};
