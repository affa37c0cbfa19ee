//! What every request handler shares.

use std::collections::HashMap;
use std::sync::RwLock;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

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
    pub metrics: std::sync::Arc<Metrics>,
    pub started_at: DateTime<Utc>,
    /// Tenant settings, re-read at most every [`SETTINGS_TTL`].
    pub tenant_settings: RwLock<HashMap<TenantId, (TenantSettings, Instant)>>,
}

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
