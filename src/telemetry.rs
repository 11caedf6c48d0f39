//! Logging and tracing set-up: human-readable or JSON lines on stderr,
//! filtered by `RUST_LOG` (default `info`). Called once from `main`.
//!
//! `PROJECTSYNC_LOG_SPANS=close` also logs every span as it closes, with
//! the time it was busy and idle: where a reconcile's milliseconds went
//! (per stage, per source request, per store call), read off the log of a
//! running operator without a profiler.

use tracing_subscriber::{EnvFilter, fmt, fmt::format::FmtSpan, prelude::*};

/// The variable that turns on span-close lines.
pub const SPANS_VARIABLE: &str = "PROJECTSYNC_LOG_SPANS";

/// The span events `PROJECTSYNC_LOG_SPANS` asks for: `close` (with
/// durations), `full` (open, enter, exit and close), anything else none.
fn span_events() -> FmtSpan {
    match std::env::var(SPANS_VARIABLE).as_deref() {
        Ok("close") => FmtSpan::CLOSE,
        Ok("full") => FmtSpan::FULL,
        _ => FmtSpan::NONE,
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// Installs the global subscriber. Spans (per reconcile, per stage) are
/// printed with their fields so a log line says which resource and run it is about.
pub fn init(format: LogFormat) {
    init_with_default(format, "info");
}

/// Installs the global subscriber with `default` as the filter when
/// `RUST_LOG` is unset (user commands default to `warn`, so their stderr
/// carries progress and errors, not the store's info lines).
pub fn init_with_default(format: LogFormat, default: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let registry = tracing_subscriber::registry().with(filter);
    match format {
        LogFormat::Text => registry
            .with(
                fmt::layer()
                    .with_span_events(span_events())
                    .with_writer(std::io::stderr),
            )
            .init(),
        LogFormat::Json => registry
            .with(
                fmt::layer()
                    .json()
                    .with_current_span(true)
                    .with_span_events(span_events())
                    .with_writer(std::io::stderr),
            )
            .init(),
    }
}
