//! What operators see: health, readiness, metrics, request logging.

mod health;
mod metrics;
mod request_log;

pub use health::{healthz, readyz};
pub use metrics::{Metrics, metrics_endpoint};
pub use request_log::{RequestId, request_log};
