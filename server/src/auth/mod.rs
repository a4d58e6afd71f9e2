//! Authentication: access tokens (JWT), API keys, and the `Caller` extractor that accepts
//! either on every authenticated route.

mod caller;
mod hashing;
mod jwt;

pub use caller::{Caller, Credential, MaybeCaller, peer_key};
pub use hashing::HashingPool;
pub use jwt::{Claims, JwtKeys, TOKEN_AUDIENCE, TOKEN_ISSUER};
