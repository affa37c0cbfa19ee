//! Who is calling: Hearth's access tokens, SMART Backend Services client authentication,
//! identity providers' tokens, and SMART scopes. Knows JWTs, keys and scopes, not HTTP.

pub mod client_auth;
pub mod fetch;
pub mod idp;
pub mod jwt;
pub mod launch;
pub mod registration;
pub mod scopes;
pub mod seal;
mod tokens;

pub use scopes::{Interaction, ResourceScope, ScopeContext, ScopeSet};
pub use tokens::{
    AccessClaims, TokenContext, TokenError, TokenService, claims_hearth_issuer,
    generate_signing_key,
};

use crate::tenant::TenantId;

/// Who issued the token a caller presented.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenIssuer {
    /// Hearth's own token endpoint (Backend Services) or CLI.
    Hearth,
    /// A tenant's trusted identity provider, by issuer URL.
    IdentityProvider(String),
}

/// An authenticated caller of one tenant's API.
#[derive(Debug, Clone)]
pub struct Principal {
    pub tenant: TenantId,
    /// The token's `sub`: a client id or a user.
    pub subject: String,
    pub scopes: ScopeSet,
    /// The token's `jti`, if it has one.
    pub token_id: String,
    pub issuer: TokenIssuer,
    /// The OAuth client the token was issued to.
    pub client_id: Option<String>,
    /// SMART launch context: the id of the patient `patient/` scopes are confined to.
    pub patient: Option<String>,
    /// The user as a FHIR reference (`Practitioner/123`), from the `fhirUser` claim.
    pub fhir_user: Option<String>,
    /// A Backend Services client confined to the members of this Group.
    pub patient_group: Option<String>,
}

impl Principal {
    pub fn from_claims(tenant: TenantId, claims: AccessClaims) -> Self {
        Principal {
            tenant,
            subject: claims.sub,
            scopes: ScopeSet::parse(&claims.scope),
            token_id: claims.jti,
            issuer: TokenIssuer::Hearth,
            client_id: claims.client_id,
            patient: claims.patient,
            fhir_user: claims.fhir_user,
            patient_group: claims.hearth_patient_group,
        }
    }

    pub fn from_external(tenant: TenantId, token: idp::ExternalToken) -> Self {
        let scope = token.claims.scope_text();
        // A patient in context is an id; accept `Patient/123` too.
        let patient = token
            .claims
            .patient
            .as_deref()
            .map(|p| p.strip_prefix("Patient/").unwrap_or(p).to_owned());
        Principal {
            tenant,
            subject: token.claims.sub,
            scopes: ScopeSet::parse(&scope),
            token_id: token.claims.jti.unwrap_or_default(),
            issuer: TokenIssuer::IdentityProvider(token.claims.iss),
            client_id: token.claims.client_id,
            patient,
            fhir_user: token.fhir_user,
            patient_group: None,
        }
    }
}
