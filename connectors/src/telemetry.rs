//! Connector telemetry in one place, like Vector's internal events: every vendor call, every
//! wait on the outbound limiter and every token fetch is counted here, so a vendor module never
//! names a metric. Every label is a closed set: the vendor, the call's limiter tier (a
//! `&'static str` of the connector's own code) and the error class.

use crate::error::{ConnectorError, ErrorClass};

/// Vendor calls by vendor, API tier and outcome (`ok` or the error class).
pub const CALLS: &str = "huitong_connector_calls_total";
/// Calls that had to wait for the outbound limiter, by vendor and API tier.
pub const RATE_LIMIT_WAITS: &str = "huitong_connector_rate_limit_waits_total";
/// Access tokens fetched, by vendor.
pub const TOKEN_FETCHES: &str = "huitong_connector_token_fetches_total";

fn class_label(e: Option<&ConnectorError>) -> &'static str {
    match e.map(ConnectorError::class) {
        None => "ok",
        Some(ErrorClass::Retryable) => "retryable",
        Some(ErrorClass::RateLimited) => "rate_limited",
        Some(ErrorClass::AuthExpired) => "auth_expired",
        Some(ErrorClass::Permanent) => "permanent",
    }
}

/// Describes the connector metrics (once per process is enough; repeating is harmless).
pub fn describe() {
    metrics::describe_counter!(
        CALLS,
        "Vendor API calls by vendor, API tier and outcome (ok, retryable, rate_limited, auth_expired, permanent)."
    );
    metrics::describe_counter!(
        RATE_LIMIT_WAITS,
        "Vendor calls that waited for the outbound rate limiter, by vendor and API tier."
    );
    metrics::describe_counter!(TOKEN_FETCHES, "Vendor access tokens fetched, by vendor.");
}

/// One vendor call answered (or failed in transport).
pub fn call(vendor: &'static str, api: &'static str, error: Option<&ConnectorError>) {
    metrics::counter!(CALLS, "vendor" => vendor, "api" => api, "class" => class_label(error))
        .increment(1);
}

/// One call that had to wait for the limiter.
pub fn rate_limit_wait(vendor: &'static str, api: &'static str) {
    metrics::counter!(RATE_LIMIT_WAITS, "vendor" => vendor, "api" => api).increment(1);
}

/// One token fetched.
pub fn token_fetch(vendor: &'static str) {
    metrics::counter!(TOKEN_FETCHES, "vendor" => vendor).increment(1);
}
