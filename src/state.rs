//! What every request handler shares.

use chrono::{DateTime, Utc};

use crate::auth::TokenService;
use crate::config::Config;
use crate::ops::Metrics;
use crate::store::Store;
use crate::tenant::TenantId;

pub struct AppState {
    pub config: Config,
    pub store: Store,
    pub tokens: TokenService,
    pub metrics: std::sync::Arc<Metrics>,
    pub started_at: DateTime<Utc>,
}

impl AppState {
    pub fn fhir_base(&self, tenant: &TenantId) -> String {
        self.config.fhir_base(tenant)
    }
}
