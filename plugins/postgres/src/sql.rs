//! Talking to a server with `psql`: over its Unix socket as the OS user the step's exec grant runs psql as (peer
//! authentication, the usual way an administrator reaches a local server), or over TCP with a password from a
//! granted secret, passed in psql's environment and never on its command line.

use respawn_plugin_sdk::{Failure, exec, secrets};
use serde::Deserialize;

/// How to reach a server.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Connection {
    /// `127.0.0.1` for TCP; absent for the Unix socket in `socket_dir`.
    #[serde(default)]
    pub host: Option<String>,
    pub port: u16,
    /// The database role; `postgres` by default.
    #[serde(default = "default_user")]
    pub user: String,
    /// A granted secret with the role's password (TCP only).
    #[serde(default)]
    pub password_secret: Option<String>,
    #[serde(default = "default_database")]
    pub database: String,
    /// Where the server's Unix socket is when `host` is absent.
    #[serde(default = "default_socket_dir")]
    pub socket_dir: String,
}

pub fn default_user() -> String {
    "postgres".into()
}
pub fn default_database() -> String {
    "postgres".into()
}
pub fn default_socket_dir() -> String {
    "/tmp".into()
}

impl Connection {
    /// `postgresql://user@host:port/database`, never with a password.
    pub fn dsn(&self) -> String {
        let host = self.host.clone().unwrap_or_else(|| "localhost".into());
        let socket = if self.host.is_none() {
            format!("?host={}", self.socket_dir)
        } else {
            String::new()
        };
        format!(
            "postgresql://{}@{host}:{}/{}{socket}",
            self.user, self.port, self.database
        )
    }

    pub fn with_database(&self, database: &str) -> Connection {
        Connection {
            database: database.to_string(),
            ..self.clone()
        }
    }
}

/// A `psql` of `bindir`.
pub struct Psql<'a> {
    pub bindir: &'a str,
    pub conn: &'a Connection,
}

/// What a query failed with.
#[derive(Debug)]
pub enum SqlError {
    /// The server answered with an error (bad SQL, a failed check): its message.
    Server(String),
    /// No answer: the server is not (yet) reachable.
    Unreachable(String),
    Failure(Failure),
}

impl SqlError {
    pub fn into_failure(self, what: &str) -> Failure {
        match self {
            SqlError::Server(m) => Failure::invalid_input(format!("{what}: the server says: {m}")),
            SqlError::Unreachable(m) => Failure::unavailable(format!("{what}: {m}")),
            SqlError::Failure(f) => f,
        }
    }
}

impl Psql<'_> {
    /// Runs `sql` and returns its rows, each a list of fields (unaligned, tab-separated, no headers).
    pub fn query(&self, sql: &str) -> Result<Vec<Vec<String>>, SqlError> {
        let program = format!("{}/psql", self.bindir);
        let host = self
            .conn
            .host
            .clone()
            .unwrap_or_else(|| self.conn.socket_dir.clone());
        let port = self.conn.port.to_string();
        let mut cmd = exec::Command::new(&program)
            .args(["-X", "-q", "-A", "-t", "-F", "\t", "-v", "ON_ERROR_STOP=1"])
            .args([
                "-h",
                &host,
                "-p",
                &port,
                "-U",
                &self.conn.user,
                "-d",
                &self.conn.database,
            ])
            .args(["-c", sql])
            .env("PGCONNECT_TIMEOUT", "5")
            .env("PGAPPNAME", "respawn");
        if let Some(secret) = &self.conn.password_secret {
            let password = secrets::get(secret).map_err(SqlError::Failure)?;
            cmd = cmd.env("PGPASSWORD", &password);
        }
        let out = cmd
            .timeout_ms(120_000)
            .output()
            .map_err(SqlError::Failure)?;
        let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
        if out.status != 0 {
            // psql exits 2 when it could not connect, 1 or 3 when the server refused the SQL.
            let unreachable = out.status == 2
                || stderr.contains("could not connect")
                || stderr.contains("Connection refused")
                || stderr.contains("the database system is starting up")
                || stderr.contains("the database system is shutting down")
                || stderr.contains("No such file or directory");
            let message = stderr.lines().take(5).collect::<Vec<_>>().join(" / ");
            return Err(if unreachable {
                SqlError::Unreachable(message)
            } else {
                SqlError::Server(message)
            });
        }
        let text = String::from_utf8_lossy(&out.stdout);
        Ok(text
            .lines()
            .filter(|l| !l.is_empty())
            .map(|l| l.split('\t').map(str::to_string).collect())
            .collect())
    }

    /// The single value of a one-row, one-column query.
    pub fn value(&self, sql: &str) -> Result<Option<String>, SqlError> {
        Ok(self
            .query(sql)?
            .into_iter()
            .next()
            .and_then(|row| row.into_iter().next()))
    }
}
