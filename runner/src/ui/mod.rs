//! Terminal-facing setup: logging through tracing to stderr, and progress bars.

pub mod progress;

use tracing_subscriber::EnvFilter;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Installs the global subscriber. `RUST_LOG` wins over `-v`; without either, only warnings and errors show,
/// so that the CLI's own output stays readable.
pub fn init_logging(verbosity: u8, format: LogFormat) {
    let default = match verbosity {
        0 => "warn",
        1 => "info,respawn=debug",
        _ => "debug,respawn=trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colour_wanted())
        // Log lines hide the progress bars while they print, so the two never interleave.
        .with_writer(|| SuspendingStderr);
    let result = match format {
        LogFormat::Text => builder.with_target(false).try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
    // A second init (tests) keeps the first subscriber.
    let _ = result;
}

/// Colour only on a terminal, and never when `NO_COLOR` is set to anything (no-color.org).
fn colour_wanted() -> bool {
    use std::io::IsTerminal;
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// stderr, written with the progress bars suspended.
struct SuspendingStderr;

impl std::io::Write for SuspendingStderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        progress::suspend(|| std::io::stderr().write(buf))
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}
