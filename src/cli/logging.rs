//! Logging and error reporting for the command line and the daemon.

use std::io;

/// The error and its causes, each said once: our errors often already include their source's text
/// (`cannot open alert file X: No such file ...`), and `{:#}` would repeat it.
pub fn error_chain(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

/// Structured logs to stderr and, on macOS, to the unified log (`log show --predicate
/// 'subsystem == "com.kextwatch"'`), where the daemon's logs are read: launchd gives neither the
/// LaunchDaemon nor the system extension a log file. A panic is logged there too. KEXTWATCH_LOG
/// overrides the level.
pub fn init_logging(daemon: bool) {
    use tracing_subscriber::prelude::*;
    let default = if daemon { "info" } else { "warn" };
    let filter = tracing_subscriber::EnvFilter::try_from_env("KEXTWATCH_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let ansi = log_colour(
        io::IsTerminal::is_terminal(&io::stderr()),
        std::env::var_os("NO_COLOR").as_deref(),
    );
    let registry = tracing_subscriber::registry().with(filter).with(
        tracing_subscriber::fmt::layer()
            .with_writer(io::stderr)
            .with_ansi(ansi),
    );
    #[cfg(target_os = "macos")]
    let registry = registry.with(tracing_oslog::OsLogger::new("com.kextwatch", "default"));
    registry.init();
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        tracing::error!(panic = %info, "kextwatch panicked");
        default_hook(info);
    }));
}

/// Colour only for a person at a terminal: never in launchd's log file or a pipe, and never when
/// `NO_COLOR` is set to anything (no-color.org).
fn log_colour(stderr_is_terminal: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
    stderr_is_terminal && no_color.is_none_or(|v| v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::log_colour;
    use std::ffi::OsStr;

    #[test]
    fn an_os_error_is_said_once_and_distinct_causes_all_are() {
        let io = std::io::Error::from_raw_os_error(2);
        let e = anyhow::Error::new(kextwatch::output::OutputError::Open {
            path: "/x/alerts.jsonl".into(),
            source: io,
        });
        assert_eq!(
            super::error_chain(&e),
            "cannot open alert file /x/alerts.jsonl: No such file or directory (os error 2)"
        );
        let e = anyhow::anyhow!("disk gone").context("cannot save state");
        assert_eq!(super::error_chain(&e), "cannot save state: disk gone");
    }

    #[test]
    fn logs_are_coloured_only_for_a_terminal_without_no_color() {
        assert!(log_colour(true, None));
        assert!(
            log_colour(true, Some(OsStr::new(""))),
            "an empty NO_COLOR does not count"
        );
        assert!(!log_colour(true, Some(OsStr::new("1"))));
        assert!(!log_colour(false, None), "launchd's log file, a pipe");
    }
}
