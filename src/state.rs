//! What every request handler shares.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use crate::access::AccessPolicy;
use crate::auth::TokenService;
use crate::config::Config;
use crate::ops::Metrics;
use crate::resource::ValidationPolicy;
use crate::store::{Store, StoreError, TenantSettings};
use crate::tenant::TenantId;

pub struct AppState {
    pub config: Config,
    pub store: Store,
    pub tokens: TokenService,
    /// Client JWKS URLs and identity providers' discovery documents and keys, cached.
    pub key_documents: crate::auth::fetch::DocumentFetcher,
    pub identity_providers: crate::auth::idp::IdentityProviders,
    /// Group-commit writer of the audit rows of reads.
    pub audit_writer: crate::audit::batch::AuditWriter,
    pub metrics: std::sync::Arc<Metrics>,
    pub started_at: DateTime<Utc>,
    /// Tenant settings, re-read at most every [`SETTINGS_TTL`].
    pub tenant_settings: RwLock<HashMap<TenantId, (TenantSettings, Instant)>>,
    /// Tenant access policies (default + overrides), re-read at most every [`SETTINGS_TTL`].
    pub access_policies: RwLock<HashMap<TenantId, (Arc<AccessPolicy>, Instant)>>,
    /// Practitioners' current specialties, re-read at most every [`SPECIALTIES_TTL`].
    pub specialties: RwLock<SpecialtiesCache>,
    /// The SMART app's session secrets key.
    pub app_sealer: crate::auth::seal::Sealer,
    /// EHRs' SMART configurations and JWKS, cached (the app's launches).
    pub ehr_documents: crate::auth::fetch::DocumentFetcher,
    /// Token requests and FHIR API calls to EHRs (no redirects followed).
    pub ehr_http: reqwest::Client,
    /// Amazon Bedrock (summaries), when `[ai] bedrock_region` is configured.
    pub bedrock: Option<crate::clinical::bedrock::BedrockSettings>,
    /// The demo EHR's launches and codes (demo mode only).
    pub demo_ehr: crate::demo_ehr::DemoEhr,
}

/// (tenant, practitioner id) → (specialties, when read).
pub type SpecialtiesCache = HashMap<(TenantId, String), (Vec<String>, Instant)>;

/// A new or ended PractitionerRole changes what its practitioner may see within this.
const SPECIALTIES_TTL: Duration = Duration::from_secs(10);

/// How long a tenant's settings are cached: a change reaches every server within this.
const SETTINGS_TTL: Duration = Duration::from_secs(30);

impl AppState {
    pub fn fhir_base(&self, tenant: &TenantId) -> String {
        self.config.fhir_base(tenant)
    }

    pub async fn settings(&self, tenant: &TenantId) -> Result<TenantSettings, StoreError> {
        if let Ok(cache) = self.tenant_settings.read()
            && let Some((settings, at)) = cache.get(tenant)
            && at.elapsed() < SETTINGS_TTL
        {
            return Ok(*settings);
        }
        let settings = self.store.tenant_settings(tenant).await?;
        if let Ok(mut cache) = self.tenant_settings.write() {
            cache.insert(tenant.clone(), (settings, Instant::now()));
        }
        Ok(settings)
    }

    /// The tenant's access policy.
    pub async fn access_policy(&self, tenant: &TenantId) -> Result<Arc<AccessPolicy>, StoreError> {
        if let Ok(cache) = self.access_policies.read()
            && let Some((policy, at)) = cache.get(tenant)
            && at.elapsed() < SETTINGS_TTL
        {
            return Ok(policy.clone());
        }
        let overrides = self.store.tenant_access_policy(tenant).await?;
        let policy = match AccessPolicy::with_overrides(&overrides) {
            Ok(p) => p,
            Err(e) => {
                // A broken override must not open anything: fall back to the default.
                tracing::error!(tenant = %tenant, error = %e, "tenant access policy override is invalid; using the default");
                AccessPolicy::with_overrides(&serde_json::json!({}))
                    .map_err(|_| StoreError::Corrupt("default access policy"))?
            }
        };
        let policy = Arc::new(policy);
        if let Ok(mut cache) = self.access_policies.write() {
            cache.insert(tenant.clone(), (policy.clone(), Instant::now()));
        }
        Ok(policy)
    }

    /// Specialties of a practitioner's current roles.
    pub async fn practitioner_specialties(
        &self,
        tenant: &TenantId,
        practitioner: &str,
    ) -> Result<Vec<String>, StoreError> {
        let key = (tenant.clone(), practitioner.to_owned());
        if let Ok(cache) = self.specialties.read()
            && let Some((list, at)) = cache.get(&key)
            && at.elapsed() < SPECIALTIES_TTL
        {
            return Ok(list.clone());
        }
        let list = self
            .store
            .practitioner_specialties(tenant, practitioner)
            .await?;
        if let Ok(mut cache) = self.specialties.write() {
            if cache.len() > 10_000 {
                cache.clear();
            }
            cache.insert(key, (list.clone(), Instant::now()));
        }
        Ok(list)
    }

    /// The validation policy of a tenant's writes.
    pub async fn validation_policy(
        &self,
        tenant: &TenantId,
    ) -> Result<ValidationPolicy, StoreError> {
        let s = self.settings(tenant).await?;
        Ok(ValidationPolicy {
            mode: s.validation,
            implied: s.validate_implied,
        })
    }
}
