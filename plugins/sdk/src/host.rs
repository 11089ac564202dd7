//! Safe wrappers over the capability interfaces of the ABI, one module per capability.
//!
//! On wasm32 every call goes to the component's imports (one WIT interface per capability). Natively (plugin unit
//! tests) it goes to the `MockHost` that `respawn_plugin_sdk::testing::MockHost::invoke` installs for the duration
//! of the call.

use crate::bindings::respawn::plugin as abi;
// Where host calls go: the real imports in a component, the thread-local mock in native tests. Both offer the
// same functions.
#[cfg(target_arch = "wasm32")]
use self::wasm as imp;
#[cfg(not(target_arch = "wasm32"))]
use crate::testing::imports as imp;

pub use abi::exec::{ExecOutput, ExecRequest};
pub use abi::images::{CompareResult, UnpackResult};
pub use abi::log::Level;
pub use abi::stores::{CopyResult, ObjectMeta};

/// The component's imports under the names the mock host uses.
#[cfg(target_arch = "wasm32")]
mod wasm {
    use super::abi::{exec, images, log as logs, net, secrets, state, stores};
    pub use exec::{run as exec, spawn_service, stop_service};
    pub use images::{
        compare as image_compare, unpack as image_unpack, unpack_as as image_unpack_as,
    };
    pub use logs::{log, progress};
    pub use net::tcp_probe;
    pub use secrets::get as secret;
    pub use state::{
        delete as state_delete, fencing_token, get as state_get, list as state_list,
        set as state_set,
    };
    pub use stores::{
        copy as store_copy, delete as store_delete, get as store_get, get_range as store_get_range,
        head as store_head, list as store_list, put as store_put,
    };
}

pub mod log {
    use super::{Level, imp};
    pub fn trace(message: &str) {
        imp::log(Level::Trace, message)
    }
    pub fn debug(message: &str) {
        imp::log(Level::Debug, message)
    }
    pub fn info(message: &str) {
        imp::log(Level::Info, message)
    }
    pub fn warn(message: &str) {
        imp::log(Level::Warn, message)
    }
    pub fn error(message: &str) {
        imp::log(Level::Error, message)
    }
}

pub mod progress {
    /// Reports `done` of `total` units (bytes, items) with a short message.
    pub fn report(done: u64, total: Option<u64>, message: &str) {
        super::imp::progress(done, total, message)
    }
}

pub mod state {
    use super::imp;
    pub fn get(key: &str) -> Option<String> {
        imp::state_get(key)
    }
    pub fn set(key: &str, value: &str) {
        imp::state_set(key, value)
    }
    pub fn delete(key: &str) {
        imp::state_delete(key)
    }
    pub fn list() -> Vec<(String, String)> {
        imp::state_list()
    }
    /// The run's fencing token (its lease epoch): grows each time another runner resumes or takes over the
    /// run. Pass it to systems that accept one, so a runner that lost the run cannot overwrite its successor's
    /// work; 0 in `respawn plan`.
    pub fn fencing_token() -> u64 {
        imp::fencing_token()
    }
}

pub mod secrets {
    use crate::Failure;
    /// The value of a secret granted to the step. Never log it.
    pub fn get(name: &str) -> Result<String, Failure> {
        super::imp::secret(name)
    }
}

pub mod stores {
    use super::{CopyResult, ObjectMeta, imp};
    use crate::Failure;
    pub fn get(store: &str, key: &str) -> Result<Vec<u8>, Failure> {
        imp::store_get(store, key)
    }
    /// Reads `length` bytes of an object from `offset`: fewer at its end, none past it. `length` is at most 16 MiB
    /// (the runner's `MAX_GET_RANGE_BYTES`); asking more is `invalid-input`. Same grant as [`get`]. This is how an
    /// object too large for `get` passes through a plugin: chunk by chunk, never whole in its memory.
    pub fn get_range(store: &str, key: &str, offset: u64, length: u64) -> Result<Vec<u8>, Failure> {
        imp::store_get_range(store, key, offset, length)
    }
    pub fn put(store: &str, key: &str, data: &[u8]) -> Result<(), Failure> {
        imp::store_put(store, key, data)
    }
    pub fn head(store: &str, key: &str) -> Result<Option<ObjectMeta>, Failure> {
        imp::store_head(store, key)
    }
    pub fn list(store: &str, prefix: &str) -> Result<Vec<ObjectMeta>, Failure> {
        imp::store_list(store, prefix)
    }
    pub fn delete(store: &str, key: &str) -> Result<(), Failure> {
        imp::store_delete(store, key)
    }
    /// Copies inside the host; the bytes never pass through the plugin.
    pub fn copy(
        from: (&str, &str),
        to: (&str, &str),
        expected_sha256: Option<&str>,
    ) -> Result<CopyResult, Failure> {
        imp::store_copy(from.0, from.1, to.0, to.1, expected_sha256)
    }
}

pub mod exec {
    use super::{ExecOutput, ExecRequest, imp};
    use crate::Failure;

    /// A program run; build with [`Command::new`].
    pub struct Command {
        request: ExecRequest,
    }

    impl Command {
        pub fn new(program: &str) -> Command {
            Command {
                request: ExecRequest {
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
            imp::exec(&self.request)
        }
        /// Starts a tracked service; returns its pid.
        pub fn spawn_service(&self) -> Result<u32, Failure> {
            imp::spawn_service(&self.request)
        }
    }

    pub fn stop_service(pid: u32) -> Result<(), Failure> {
        imp::stop_service(pid)
    }
}

pub mod net {
    use crate::Failure;
    /// Connects to `host:port` inside the host and reports the connect time in microseconds.
    pub fn tcp_probe(host: &str, port: u16, timeout_ms: u32) -> Result<u64, Failure> {
        super::imp::tcp_probe(host, port, timeout_ms)
    }
}

pub mod images {
    use super::{CompareResult, UnpackResult, imp};
    use crate::Failure;

    /// Restores the image `tag` stored under `prefix` of `store` into `dir`, inside the host: streamed, verified
    /// blob by blob, refusing path traversal and symlink escapes.
    pub fn unpack(
        store: &str,
        prefix: &str,
        tag: &str,
        dir: &str,
    ) -> Result<UnpackResult, Failure> {
        imp::image_unpack(store, prefix, tag, dir)
    }

    /// [`unpack`], then everything restored belongs to `user` and `dir` gets mode 0700 (a server such as
    /// PostgreSQL refuses a data directory it does not own). `user` must be one the step's `exec` grant runs a
    /// program as.
    pub fn unpack_as(
        store: &str,
        prefix: &str,
        tag: &str,
        dir: &str,
        user: &str,
    ) -> Result<UnpackResult, Failure> {
        imp::image_unpack_as(store, prefix, tag, dir, user)
    }

    /// Re-hashes every regular file of the image against `dir`.
    pub fn compare(
        store: &str,
        prefix: &str,
        tag: &str,
        dir: &str,
    ) -> Result<CompareResult, Failure> {
        imp::image_compare(store, prefix, tag, dir)
    }
}
