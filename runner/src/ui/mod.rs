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
/// so that the CLI's own output stays readable, the line announcing a plugin's first compile (it can take a
/// minute, and would otherwise look like a hang), and off a terminal the progress lines of long restores.
pub fn init_logging(verbosity: u8, format: LogFormat) {
    let default = match verbosity {
        0 => "warn,respawn::compile=info,respawn::progress=info",
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

/// Secret values (and their JSON-escaped forms) that no log line may carry. Every log line, text or JSON, from
/// the runner, a plugin's `log` call or its captured output, passes through [`SuspendingStderr`], which replaces
/// them with `***`.
static SECRETS: std::sync::RwLock<Vec<String>> = std::sync::RwLock::new(Vec::new());

/// Keeps `values` out of every log line from now on.
pub fn redact_in_logs<'a>(values: impl IntoIterator<Item = &'a String>) {
    let mut secrets = SECRETS.write().unwrap_or_else(|e| e.into_inner());
    for value in values {
        let escaped = serde_json::Value::String(value.clone()).to_string();
        let escaped = escaped[1..escaped.len() - 1].to_string();
        for form in [value.clone(), escaped] {
            if !form.is_empty() && !secrets.contains(&form) {
                secrets.push(form);
            }
        }
    }
    // Longest first, so a secret that contains another is replaced whole.
    secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
}

/// `line` with every secret replaced by `***`; borrowed when it holds none.
fn redacted(line: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    let secrets = SECRETS.read().unwrap_or_else(|e| e.into_inner());
    if secrets.is_empty() {
        return std::borrow::Cow::Borrowed(line);
    }
    let text = String::from_utf8_lossy(line);
    if !secrets.iter().any(|s| text.contains(s.as_str())) {
        return std::borrow::Cow::Borrowed(line);
    }
    let mut text = text.into_owned();
    for secret in secrets.iter() {
        text = text.replace(secret.as_str(), "***");
    }
    std::borrow::Cow::Owned(text.into_bytes())
}

/// stderr, written with the progress bars suspended and secrets redacted. tracing hands each event over as one
/// buffer, so a secret is never split across two writes.
struct SuspendingStderr;

impl std::io::Write for SuspendingStderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let line = redacted(buf);
        progress::suspend(|| std::io::stderr().write_all(&line))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}
