//! The bearer-token extractor: every FHIR handler but `metadata` takes an
//! [`Authenticated`] caller, and asks it (through `access`) what it may do and see.

use std::collections::{BTreeSet, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use actix_web::{FromRequest, HttpRequest, dev::Payload, http::header, web};

use super::audit_trail::{self, AuditNote, AuditScope, CallerContext};
use super::outcome::FhirError;
use crate::access::{self, AccessPolicy, Decision, DenyAs, Subject, Visibility};
use crate::auth::{Interaction, Principal, TokenError, claims_hearth_issuer};
use crate::state::AppState;
use crate::store::{Store, StoredVersion};
use crate::tenant::TenantId;

/// The caller, authenticated for the tenant named in the URL, with what the access decision
/// needs to know about them.
pub struct Authenticated {
    pub principal: Principal,
    /// The tenant's FHIR base with a trailing slash.
    local_base: String,
    pub policy: Arc<AccessPolicy>,
    /// Specialties of the user's current PractitionerRoles (empty for other callers).
    specialties: Vec<String>,
    /// The purpose of use the request asserts (`X-Purpose-Of-Use`; the policy's default).
    pub purpose: String,
    /// The request's audit scope (decision reasons and what the handler touched go there).
    audit: Option<Arc<AuditScope>>,
}

/// The request header asserting the purpose of use (v3 PurposeOfUse code).
pub const PURPOSE_HEADER: &str = "x-purpose-of-use";

impl Authenticated {
    pub fn tenant(&self) -> &TenantId {
        &self.principal.tenant
    }

    fn subject(&self) -> Subject<'_> {
        Subject {
            principal: &self.principal,
            policy: &self.policy,
            specialties: self.specialties.clone(),
            purpose: self.purpose.clone(),
        }
    }

    /// The access decision for `interaction` on `resource_type`; 403 if nothing is allowed.
    pub fn decision(
        &self,
        resource_type: &str,
        interaction: Interaction,
    ) -> Result<Decision, FhirError> {
        let decision = access::decide(
            &self.subject(),
            resource_type,
            interaction,
            &self.local_base,
        );
        if let Some(scope) = &self.audit {
            match &decision {
                Ok(d) => scope.add_reasons(&d.reasons),
                Err(denied) => scope.add_reasons(std::slice::from_ref(&denied.0)),
            }
        }
        decision.map_err(|denied| FhirError::forbidden(denied.0))
    }

    /// Mark this request's audit record high severity (break-glass, sensitive refusals).
    pub fn flag_high_severity(&self) {
        if let Some(scope) = &self.audit {
            scope.flag_high_severity();
        }
    }

    /// Record this request's read in `tx`, the transaction that reads (no-op when the
    /// audit trail is off).
    pub async fn record_read_in(
        &self,
        tx: &mut crate::store::TenantTx,
        event: &'static str,
        action: crate::audit::AuditAction,
    ) -> Result<(), FhirError> {
        if let Some(scope) = &self.audit {
            scope.record_read_in(tx, event, action).await?;
        }
        Ok(())
    }

    /// Tell the audit trail what this request touched.
    /// The caller as the access decision sees it, for work outside this module (summaries).
    pub fn owned_subject(&self) -> access::OwnedSubject {
        access::OwnedSubject {
            principal: self.principal.clone(),
            policy: self.policy.clone(),
            specialties: self.specialties.clone(),
            purpose: self.purpose.clone(),
            local_base: self.local_base.clone(),
        }
    }

    pub fn note(&self, f: impl FnOnce(&mut AuditNote)) {
        if let Some(scope) = &self.audit {
            scope.note(f);
        }
    }

    /// Note the patients and entities of resources served to the caller.
    pub fn note_served<'a>(&self, versions: impl IntoIterator<Item = &'a StoredVersion>) {
        let base = self.local_base.clone();
        self.note(|n| {
            for v in versions {
                n.entities.push(format!(
                    "{}/{}/_history/{}",
                    v.resource_type, v.id, v.version_id
                ));
                if let Some(content) = v.content.as_deref()
                    && let Ok(value) = serde_json::from_str::<serde_json::Value>(content)
                {
                    for p in access::patients_of(&v.resource_type, &value, &base) {
                        if !n.patients.contains(&p) {
                            n.patients.push(p);
                        }
                    }
                }
            }
        });
    }

    /// What of `resource_type` the caller may see for `interaction`; 403 if nothing.
    pub fn visibility(
        &self,
        resource_type: &str,
        interaction: Interaction,
    ) -> Result<Visibility, FhirError> {
        Ok(self.decision(resource_type, interaction)?.visibility)
    }

    /// 403 unless the caller may do `interaction` on every resource of `resource_type`:
    /// for interactions that cannot apply a filtered decision (the audit log, readable only
    /// whole), so a filter is refused rather than silently widened.
    pub fn require(&self, resource_type: &str, interaction: Interaction) -> Result<(), FhirError> {
        match self.visibility(resource_type, interaction)? {
            Visibility::All => Ok(()),
            Visibility::Filtered(_) => Err(FhirError::forbidden(format!(
                "the token's scopes allow {interaction:?} on {resource_type} only within a patient compartment or granular criteria, which this interaction does not support"
            ))),
        }
    }
}

impl Authenticated {
    /// 403 unless the caller may see `resource_type/id` (judged on its current version).
    pub async fn check_visible(
        &self,
        store: &Store,
        visibility: &Visibility,
        resource_type: &str,
        id: &str,
    ) -> Result<(), FhirError> {
        let Visibility::Filtered(filter) = visibility else {
            return Ok(());
        };
        let ids = [id.to_owned()];
        let visible = store
            .visible_ids(self.tenant(), resource_type, &ids, filter)
            .await?;
        if visible.contains(id) {
            Ok(())
        } else {
            Err(self.outside(resource_type, id))
        }
    }

    /// Before changing `resource_type/id` under a filtered decision: if it exists, the
    /// caller must be allowed to see it now (the guard checks the new state at commit).
    pub async fn check_existing_visible(
        &self,
        store: &Store,
        visibility: &Visibility,
        resource_type: &str,
        id: &str,
    ) -> Result<(), FhirError> {
        let Visibility::Filtered(filter) = visibility else {
            return Ok(());
        };
        if store
            .is_hidden(self.tenant(), resource_type, id, filter)
            .await?
        {
            return Err(self.outside(resource_type, id));
        }
        Ok(())
    }

    /// The refusal of one resource outside the decision: 403, or 404 where the tenant's
    /// policy hides existence.
    pub fn outside(&self, resource_type: &str, id: &str) -> FhirError {
        if self.policy.deny_as == DenyAs::NotFound {
            FhirError::not_found("resource not found")
        } else {
            FhirError::forbidden(format!(
                "{resource_type}/{id} is outside what this caller may see (patient compartment, care relationships, security labels or granular criteria)"
            ))
        }
    }

    /// Keep only the versions the caller may read, type by type.
    pub async fn retain_readable(
        &self,
        store: &Store,
        versions: &mut Vec<StoredVersion>,
    ) -> Result<(), FhirError> {
        let types: BTreeSet<String> = versions.iter().map(|v| v.resource_type.clone()).collect();
        let mut hidden: HashSet<(String, String)> = HashSet::new();
        for t in types {
            let of_type = versions.iter().filter(|v| v.resource_type == t);
            match access::decide(&self.subject(), &t, Interaction::Read, &self.local_base)
                .map(|d| d.visibility)
            {
                Ok(Visibility::All) => {}
                Ok(Visibility::Filtered(filter)) => {
                    let ids: Vec<String> = of_type.map(|v| v.id.clone()).collect();
                    let visible = store.visible_ids(self.tenant(), &t, &ids, &filter).await?;
                    hidden.extend(
                        ids.into_iter()
                            .filter(|id| !visible.contains(id))
                            .map(|id| (t.clone(), id)),
                    );
                }
                Err(_) => hidden.extend(of_type.map(|v| (t.clone(), v.id.clone()))),
            }
        }
        versions.retain(|v| !hidden.contains(&(v.resource_type.clone(), v.id.clone())));
        Ok(())
    }
}

fn bearer_token(req: &HttpRequest) -> Result<String, FhirError> {
    // RFC 6750 allows a token in the query; Hearth does not: URLs are logged and cached.
    if req
        .query_string()
        .split('&')
        .any(|p| p.split('=').next() == Some("access_token"))
    {
        return Err(FhirError::unauthorized(
            "invalid_request",
            "send the token in the Authorization header; tokens in URLs are refused",
        ));
    }
    let value = req
        .headers()
        .get(header::AUTHORIZATION)
        .ok_or_else(|| FhirError::unauthorized("invalid_request", "a bearer token is required"))?;
    let text = value.to_str().map_err(|_| {
        FhirError::unauthorized("invalid_request", "malformed Authorization header")
    })?;
    match text.split_once(' ') {
        Some((scheme, token))
            if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() =>
        {
            Ok(token.trim().to_owned())
        }
        _ => Err(FhirError::unauthorized(
            "invalid_request",
            "the Authorization header must be 'Bearer <token>'",
        )),
    }
}

/// The 401/403 for a token that did not verify. The description names the check, never
/// the token.
pub fn token_rejection(e: TokenError) -> FhirError {
    match e {
        TokenError::WrongTenant => FhirError::forbidden("the token was issued for another tenant"),
        TokenError::Expired => FhirError::unauthorized("invalid_token", "the token has expired"),
        TokenError::Revoked => {
            FhirError::unauthorized("invalid_token", "the token has been revoked")
        }
        TokenError::NotYetValid => {
            FhirError::unauthorized("invalid_token", "the token is not yet valid")
        }
        TokenError::UntrustedIssuer => FhirError::unauthorized(
            "invalid_token",
            "the token's issuer is not trusted by this tenant",
        ),
        TokenError::Algorithm(alg) => FhirError::unauthorized(
            "invalid_token",
            format!("the token's algorithm {alg} is not accepted"),
        ),
        TokenError::Store(store) => FhirError::from(store),
        TokenError::Keys(_) => FhirError::unauthorized(
            "invalid_token",
            "the identity provider's keys could not be obtained",
        ),
        _ => FhirError::unauthorized("invalid_token", "the token is not valid"),
    }
}

/// Verify a bearer token for `tenant`: Hearth's own, or a trusted identity provider's.
pub async fn authenticate(
    state: &AppState,
    tenant: &TenantId,
    token: &str,
) -> Result<Principal, TokenError> {
    let base = state.fhir_base(tenant);
    if claims_hearth_issuer(token) {
        let claims = state
            .tokens
            .verify(token, tenant, |t| state.fhir_base(t))
            .await?;
        Ok(Principal::from_claims(tenant.clone(), claims))
    } else {
        let skew = state.config.auth.clock_skew_secs;
        let external = state
            .identity_providers
            .verify(&state.key_documents, token, tenant, &base, skew)
            .await?;
        Ok(Principal::from_external(tenant.clone(), external))
    }
}

impl FromRequest for Authenticated {
    type Error = FhirError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, FhirError>>>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let req = req.clone();
        Box::pin(async move {
            let state = req
                .app_data::<web::Data<AppState>>()
                .ok_or_else(FhirError::internal)?
                .clone();
            let tenant = req
                .match_info()
                .get("tenant")
                .and_then(|t| TenantId::parse(t).ok())
                .ok_or_else(|| FhirError::not_found("unknown tenant"))?;
            let token = bearer_token(&req)?;
            let principal = match authenticate(&state, &tenant, &token).await {
                Ok(p) => p,
                Err(e) => {
                    state.metrics.auth_failure(auth_failure_reason(&e));
                    return Err(token_rejection(e));
                }
            };
            let local_base = format!("{}/", state.fhir_base(&tenant));
            let policy = state.access_policy(&tenant).await?;
            let purpose = match req.headers().get(PURPOSE_HEADER) {
                None => policy.purposes.default.clone(),
                Some(v) => v
                    .to_str()
                    .map(|v| v.trim().to_owned())
                    .map_err(|_| FhirError::bad_request("X-Purpose-Of-Use must be a code"))?,
            };
            let audit = audit_trail::scope_of(&req);
            if let Some(scope) = &audit {
                scope.set_caller(CallerContext {
                    agent: Some(audit_trail::agent_of(&principal)),
                    purpose: Some(purpose.clone()),
                    reasons: Vec::new(),
                    high_severity: purpose == "ETREAT",
                });
            }
            if let Err(denied) = access::check_purpose(&principal, &policy, &purpose) {
                state.metrics.auth_failure("purpose");
                if let Some(scope) = &audit {
                    scope.add_reasons(std::slice::from_ref(&denied.0));
                }
                return Err(FhirError::forbidden(denied.0));
            }
            let specialties_of = match principal
                .fhir_user
                .as_deref()
                .and_then(|u| u.strip_prefix("Practitioner/"))
            {
                Some(practitioner) => {
                    state
                        .practitioner_specialties(&tenant, practitioner)
                        .await?
                }
                None => Vec::new(),
            };
            let specialties = specialties_of;
            if let Some(scope) = &audit {
                scope.set_subject(access::OwnedSubject {
                    principal: principal.clone(),
                    policy: policy.clone(),
                    specialties: specialties.clone(),
                    purpose: purpose.clone(),
                    local_base: local_base.clone(),
                });
            }
            Ok(Authenticated {
                principal,
                local_base,
                policy,
                specialties,
                purpose,
                audit,
            })
        })
    }
}

/// A metrics label for a failed authentication (bounded set, no token content).
pub fn auth_failure_reason(e: &TokenError) -> &'static str {
    match e {
        TokenError::Malformed => "malformed",
        TokenError::UnknownKey => "unknown_key",
        TokenError::Invalid(_) => "invalid",
        TokenError::Expired => "expired",
        TokenError::WrongTenant => "wrong_tenant",
        TokenError::Revoked => "revoked",
        TokenError::UntrustedIssuer => "untrusted_issuer",
        TokenError::Algorithm(_) => "algorithm",
        TokenError::NotYetValid => "not_yet_valid",
        TokenError::Keys(_) => "keys_unavailable",
        TokenError::Key(_) | TokenError::Store(_) => "server_error",
    }
}
