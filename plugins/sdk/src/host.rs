//! Safe wrappers over the `host` interface, one module per capability.

use crate::bindings::respawn::plugin::host as raw;

pub use raw::{CopyResult, ExecOutput, ObjectMeta};

pub mod log {
    use super::raw::{self, Level};
    pub fn trace(message: &str) {
        raw::log(Level::Trace, message)
    }
    pub fn debug(message: &str) {
        raw::log(Level::Debug, message)
    }
    pub fn info(message: &str) {
        raw::log(Level::Info, message)
    }
    pub fn warn(message: &str) {
        raw::log(Level::Warn, message)
    }
    pub fn error(message: &str) {
        raw::log(Level::Error, message)
    }
}

pub mod progress {
    /// Reports `done` of `total` units (bytes, items) with a short message.
    pub fn report(done: u64, total: Option<u64>, message: &str) {
        super::raw::progress(done, total, message)
    }
}

pub mod state {
    use super::raw;
    pub fn get(key: &str) -> Option<String> {
        raw::state_get(key)
    }
    pub fn set(key: &str, value: &str) {
        raw::state_set(key, value)
    }
    pub fn delete(key: &str) {
        raw::state_delete(key)
    }
    pub fn list() -> Vec<(String, String)> {
        raw::state_list()
    }
}

pub mod secrets {
    use crate::Failure;
    /// The value of a secret granted to the step. Never log it.
    pub fn get(name: &str) -> Result<String, Failure> {
        super::raw::secret(name)
    }
}

pub mod stores {
    use super::{CopyResult, ObjectMeta, raw};
    use crate::Failure;
    pub fn get(store: &str, key: &str) -> Result<Vec<u8>, Failure> {
        raw::store_get(store, key)
    }
    pub fn put(store: &str, key: &str, data: &[u8]) -> Result<(), Failure> {
        raw::store_put(store, key, data)
    }
    pub fn head(store: &str, key: &str) -> Result<Option<ObjectMeta>, Failure> {
        raw::store_head(store, key)
    }
    pub fn list(store: &str, prefix: &str) -> Result<Vec<ObjectMeta>, Failure> {
        raw::store_list(store, prefix)
    }
    pub fn delete(store: &str, key: &str) -> Result<(), Failure> {
        raw::store_delete(store, key)
    }
    /// Copies inside the host; the bytes never pass through the plugin.
    pub fn copy(
        from: (&str, &str),
        to: (&str, &str),
        expected_sha256: Option<&str>,
    ) -> Result<CopyResult, Failure> {
        raw::store_copy(from.0, from.1, to.0, to.1, expected_sha256)
    }
}

pub mod exec {
    use super::{ExecOutput, raw};
    use crate::Failure;

    /// A program run; build with [`Command::new`].
    pub struct Command {
        request: raw::ExecRequest,
    }

    impl Command {
        pub fn new(program: &str) -> Command {
            Command {
                request: raw::ExecRequest {
                    program: program.into(),
                    args: Vec::new(),
                    cwd: None,
                    env: Vec::new(),
                    timeout_ms: None,
                },
            }
        }
        pub fn arg(mut self, arg: &str) -> Command {
            self.request.args.push(arg.into());
            self
        }
        pub fn args<I: IntoIterator<Item = S>, S: Into<String>>(mut self, args: I) -> Command {
            self.request.args.extend(args.into_iter().map(Into::into));
            self
        }
        pub fn cwd(mut self, dir: &str) -> Command {
            self.request.cwd = Some(dir.into());
            self
        }
        pub fn env(mut self, key: &str, value: &str) -> Command {
            self.request.env.push((key.into(), value.into()));
            self
        }
        pub fn timeout_ms(mut self, ms: u64) -> Command {
            self.request.timeout_ms = Some(ms);
            self
        }
        /// Runs to completion and captures (capped) output.
        pub fn output(&self) -> Result<ExecOutput, Failure> {
            raw::exec(&self.request)
        }
        /// Starts a tracked service; returns its pid.
        pub fn spawn_service(&self) -> Result<u32, Failure> {
            raw::spawn_service(&self.request)
        }
    }

    pub fn stop_service(pid: u32) -> Result<(), Failure> {
        raw::stop_service(pid)
    }
}

pub mod net {
    use crate::Failure;
    /// Connects to `host:port` inside the host and reports the connect time in microseconds.
    pub fn tcp_probe(host: &str, port: u16, timeout_ms: u32) -> Result<u64, Failure> {
        super::raw::tcp_probe(host, port, timeout_ms)
    }
}
