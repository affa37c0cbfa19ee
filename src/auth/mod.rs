//! Who is calling: access tokens and their scopes. Knows JWTs and scopes, not HTTP.

pub mod scopes;
mod tokens;

pub use scopes::{Interaction, ScopeSet};
pub use tokens::{AccessClaims, TokenError, TokenService, generate_signing_key};

use crate::tenant::TenantId;

/// An authenticated caller of one tenant's API.
#[derive(Debug, Clone)]
pub struct Principal {
    pub tenant: TenantId,
    /// The token's `sub`: a client id or a user.
    pub subject: String,
    pub scopes: ScopeSet,
    /// The token's `jti`.
    pub token_id: String,
}

impl Principal {
    pub fn from_claims(tenant: TenantId, claims: AccessClaims) -> Self {
        Principal {
            tenant,
            subject: claims.sub,
            scopes: ScopeSet::parse(&claims.scope),
            token_id: claims.jti,
        }
    }
}
