//! JSON logs via `tracing`. What may be logged: route patterns, statuses, latencies, ids of
//! requests, tenants and SQLSTATEs. What may not: names, identifiers, birth dates, resource
//! bodies, message text, query strings, database error text.

use tracing_subscriber::EnvFilter;

/// Install the global JSON subscriber writing to stdout.
pub fn init(filter: &str) {
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info"));
    // A second init (tests) keeps the first subscriber.
    let _ = tracing_subscriber::fmt()
        .json()
        .with_env_filter(filter)
        .with_current_span(true)
        .with_span_list(false)
        .with_writer(std::io::stdout)
        .try_init();
}
