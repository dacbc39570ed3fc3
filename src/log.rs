//! Log lines: an RFC 3339 timestamp (UTC), a level, then the message, one line per event on
//! standard error, through `tracing`.
//!
//! ```text
//! 2026-11-26T19:05:00.123456Z  INFO ringport: shutting down (a signal again to exit at once)
//! 2026-11-26T19:05:01.002113Z  WARN ringport: 12 connections refused over the cap ...
//! ```
//!
//! Which lines are written is chosen by a filter in the syntax of `RUST_LOG` without span
//! filters: a level (`error`, `warn`, `info`, `debug`, `trace`, `off`), or comma-separated
//! `target=level` directives such as `warn,ringport::proxy=debug`. A line that cannot be
//! written (standard error full or closed) is dropped; the server goes on.

use std::fmt;
use std::io;
use std::str::FromStr;

use tracing::{Event, Subscriber};
use tracing_subscriber::filter::Targets;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer as _;

/// The level written when neither `--log-level` nor `RUST_LOG` says otherwise.
pub const DEFAULT_FILTER: &str = "info";

/// A log filter, checked before the logger is installed.
#[derive(Debug, Clone)]
pub struct LogFilter(Targets);

impl FromStr for LogFilter {
    type Err = String;
    fn from_str(s: &str) -> Result<LogFilter, String> {
        let s = s.trim();
        if s.is_empty() {
            return Err(
                "an empty log filter (expected error, warn, info, debug, trace or off)".into(),
            );
        }
        const LEVELS: [&str; 6] = ["error", "warn", "info", "debug", "trace", "off"];
        // A bare word that is not a level would enable a target of that name: refuse it.
        if let Some(word) = s
            .split(',')
            .map(str::trim)
            .filter(|d| !d.is_empty())
            .find(|d| {
                // `target=level` or a bare level.
                let level = d.rsplit_once('=').map_or(*d, |(_, l)| l);
                !LEVELS.contains(&level.to_ascii_lowercase().as_str())
            })
        {
            return Err(format!(
                "'{word}' is not a level (expected error, warn, info, debug, trace or off, \
                 or directives such as warn,ringport=debug)"
            ));
        }
        s.parse::<Targets>().map(LogFilter).map_err(|e| {
            format!(
                "'{s}' is not a log filter ({e}); expected a level (error, warn, info, debug, \
                 trace, off) or directives such as warn,ringport=debug"
            )
        })
    }
}

/// The filter in force: `flag` when given, else `RUST_LOG` when set and not empty, else
/// [`DEFAULT_FILTER`].
///
/// # Errors
/// `RUST_LOG` set to something that is not a filter (the message names the variable).
pub fn resolve(
    flag: Option<LogFilter>,
    env: Option<std::ffi::OsString>,
) -> Result<LogFilter, String> {
    if let Some(f) = flag {
        return Ok(f);
    }
    match env {
        Some(v) if !v.to_string_lossy().trim().is_empty() => {
            let v = v.to_string_lossy();
            v.parse().map_err(|e| format!("RUST_LOG: {e}"))
        }
        _ => Ok(DEFAULT_FILTER.parse().expect("the default filter parses")),
    }
}

/// One line per event: `TIMESTAMP LEVEL ringport: message fields`.
struct Line;

impl<S, N> FormatEvent<S, N> for Line
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut w: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        SystemTime.format_time(&mut w)?;
        write!(w, " {:>5} ringport: ", event.metadata().level())?;
        ctx.field_format().format_fields(w.by_ref(), event)?;
        writeln!(w)
    }
}

/// Install the logger for the whole process (once; later calls do nothing).
pub fn init(filter: LogFilter) {
    let layer = tracing_subscriber::fmt::layer()
        .event_format(Line)
        .with_writer(io::stderr);
    let _ = tracing_subscriber::registry()
        .with(layer.with_filter(filter.0))
        .try_init();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_come_from_the_flag_then_rust_log() {
        let env = |v: &str| Some(std::ffi::OsString::from(v));
        let lvl = |f: LogFilter| f.0.default_level();
        assert_eq!(
            lvl(resolve(None, None).unwrap()),
            Some(tracing::level_filters::LevelFilter::INFO)
        );
        assert_eq!(
            lvl(resolve(None, env("debug")).unwrap()),
            Some(tracing::level_filters::LevelFilter::DEBUG)
        );
        assert_eq!(
            lvl(resolve(Some("error".parse().unwrap()), env("debug")).unwrap()),
            Some(tracing::level_filters::LevelFilter::ERROR)
        );
        assert_eq!(
            lvl(resolve(None, env("  ")).unwrap()),
            Some(tracing::level_filters::LevelFilter::INFO)
        );
        assert!(resolve(None, env("loud="))
            .unwrap_err()
            .starts_with("RUST_LOG: "));
        assert!("".parse::<LogFilter>().is_err());
        assert!("verbose"
            .parse::<LogFilter>()
            .unwrap_err()
            .contains("not a level"));
        assert!("warn,ringport=debug".parse::<LogFilter>().is_ok());
    }
}
