//! Logs (tracing) and metrics (Prometheus text format).

use std::io::IsTerminal;
use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::config::LogFormat;

/// Whether human-readable logs are coloured: only when stderr is a terminal and `NO_COLOR`
/// is unset or empty (<https://no-color.org>).
pub fn colour(stderr_is_terminal: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
    stderr_is_terminal && no_color.is_none_or(|v| v.is_empty())
}

/// Install the global tracing subscriber. Logs go to stderr so that command
/// output on stdout stays machine-readable; colour only on a terminal (see [`colour`]).
pub fn init_logging(level: &str, format: LogFormat) {
    let filter = EnvFilter::try_new(level).unwrap_or_else(|_| EnvFilter::new("info"));
    let registry = tracing_subscriber::registry().with(filter);
    let ansi = colour(
        std::io::stderr().is_terminal(),
        std::env::var_os("NO_COLOR").as_deref(),
    );
    let result = match format {
        LogFormat::Human => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .with_ansi(ansi)
                    .with_writer(std::io::stderr),
            )
            .try_init(),
        LogFormat::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(false)
                    .with_writer(std::io::stderr),
            )
            .try_init(),
    };
    // A second initialisation (tests) keeps the first subscriber.
    let _ = result;
}

static METRICS: OnceLock<PrometheusHandle> = OnceLock::new();

/// The process-wide Prometheus recorder, installed on first use.
pub fn metrics() -> &'static PrometheusHandle {
    METRICS.get_or_init(|| {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        // If another recorder was installed first (embedding), our handle still
        // renders, just without the other recorder's series.
        let _ = metrics::set_global_recorder(recorder);
        describe();
        handle
    })
}

fn describe() {
    huitong_connectors::telemetry::describe();
    metrics::describe_counter!(
        "huitong_http_requests_total",
        "HTTP requests served, by route and status."
    );
    metrics::describe_histogram!(
        "huitong_http_request_seconds",
        "HTTP request latency, by route."
    );
    metrics::describe_counter!(
        "huitong_echo_suppressed_total",
        "Vendor events dropped as echoes of huitong's own writes, by connector."
    );
    metrics::describe_gauge!("huitong_build_info", "Always 1; labels carry the version.");
    metrics::gauge!("huitong_build_info", "version" => env!("CARGO_PKG_VERSION")).set(1.0);
}

/// One vendor event recognised as the echo of huitong's own write and dropped.
pub fn echo_suppressed(connector: &str) {
    metrics::counter!("huitong_echo_suppressed_total", "connector" => connector.to_owned())
        .increment(1);
}

/// An admin's mapping file reloaded by `serve` (`ok`), or refused because it does not compile.
pub fn mapping_reloaded(connector: &str, ok: bool) {
    metrics::counter!("huitong_mapping_reloads_total", "connector" => connector.to_owned(),
        "outcome" => if ok { "reloaded" } else { "refused" })
    .increment(1);
}

#[cfg(test)]
mod tests {
    use super::colour;
    use std::ffi::OsStr;

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        assert!(colour(true, None));
        assert!(
            colour(true, Some(OsStr::new(""))),
            "an empty NO_COLOR is unset"
        );
        assert!(!colour(true, Some(OsStr::new("1"))));
        assert!(!colour(false, None));
        assert!(!colour(false, Some(OsStr::new("1"))));
    }
}
