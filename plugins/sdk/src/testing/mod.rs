//! Testing a plugin without the runner: a native (non-wasm) stand-in for the host.
//!
//! Built for any target but wasm32, the SDK's host helpers ([`crate::stores`], [`crate::state`],
//! [`crate::secrets`], [`crate::exec`], [`crate::net`], [`crate::http`], [`crate::log`], [`crate::progress`])
//! answer from the [`MockHost`] that [`MockHost::invoke`] installs on the current thread for the duration of the
//! call. The builder methods fill in a step's grants, and the mock checks every call with the runner's own checks
//! (the `respawn-sandbox` crate), so a plugin's tests see exactly the denials a run would give:
//!
//! - a store, secret, program, URL origin or TCP address the mock was not given is denied: the plugin gets a
//!   [`Failure`] of kind [`FailureKind::Denied`] whose message names the capability (`stores denied: ...`,
//!   `secrets denied: ...`, `exec denied: ...`; HTTP gets `http: URL denied` as through `wasi:http`), and the
//!   denial is recorded ([`MockHost::denials`]);
//! - in [`Phase::Plan`] store writes, `exec`, services and HTTP other than GET/HEAD are denied, and state writes
//!   are silently dropped;
//! - state persists across invocations of the same mock, like a step's journaled state across attempts.
//!
//! ```
//! use respawn_plugin_sdk::testing::{Access, MockHost};
//! use respawn_plugin_sdk::{Context, Failure, Phase, Plugin, PluginInfo, operation};
//! use serde_json::json;
//!
//! struct Counter;
//! impl Plugin for Counter {
//!     fn describe() -> PluginInfo {
//!         PluginInfo::new("counter", "0.1.0").operation(operation("bump", "Count", "{}"))
//!     }
//!     fn invoke(_ctx: Context, _params: &str) -> Result<String, Failure> {
//!         let n: u64 = respawn_plugin_sdk::state::get("n").and_then(|v| v.parse().ok()).unwrap_or(0);
//!         respawn_plugin_sdk::state::set("n", &(n + 1).to_string());
//!         respawn_plugin_sdk::stores::put("out", "n.txt", (n + 1).to_string().as_bytes())?;
//!         respawn_plugin_sdk::outputs(&json!({ "n": n + 1 }))
//!     }
//! }
//!
//! let mut host = MockHost::new().store("out", Access::Write);
//! assert_eq!(host.invoke::<Counter>("bump", Phase::Apply, json!({})).unwrap(), json!({ "n": 1 }));
//! assert_eq!(host.invoke::<Counter>("bump", Phase::Apply, json!({})).unwrap(), json!({ "n": 2 }));
//! assert_eq!(host.state_get("n"), Some("2"));
//! assert_eq!(host.object("out", "n.txt"), Some(&b"2"[..]));
//! // Plan may not write: the put is denied, and the state write before it was dropped.
//! let denied = host.invoke::<Counter>("bump", Phase::Plan, json!({})).unwrap_err();
//! assert!(denied.message.starts_with("stores denied"));
//! assert_eq!(host.state_get("n"), Some("2"));
//! ```
//!
//! Not modelled: `files` grants (a native test touches the real filesystem directly), the working directory
//! check of `exec`, log volume caps, timeouts and memory limits.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fmt;
use std::rc::Rc;

use serde_json::Value;

use respawn_sandbox::stores::{Need, StoreGrant};
use respawn_sandbox::{Grants, exec as exec_policy, http as http_policy};

pub use crate::bindings::respawn::plugin::exec::{ExecOutput, ExecRequest};
pub use crate::bindings::respawn::plugin::log::Level;
pub use crate::bindings::respawn::plugin::stores::{CopyResult, ObjectMeta};
pub use crate::http::Response;
use crate::{Context, Failure, FailureKind, Mode, Phase, Plugin};
/// A capability the host refused, as the runner reports it (`stores`, `secrets`, `exec` or `http`).
pub use respawn_sandbox::Denial;
/// The runner's own limits (state bounds, `stores.get` size, `stores.get-range` length), from the table the runner
/// enforces.
pub use respawn_sandbox::limits::{
    MAX_GET_BYTES, MAX_GET_RANGE_BYTES, MAX_STATE_KEYS, MAX_STATE_VALUE_BYTES,
};
/// What a step's grant allows on a store.
pub use respawn_sandbox::stores::StoreAccess as Access;

mod host_side;
mod native;
use host_side::split_url;
#[doc(hidden)]
pub use native::imports;
use native::{Installed, sha256_hex};

/// One `progress::report`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Progress {
    pub done: u64,
    pub total: Option<u64>,
    pub message: String,
}

/// One HTTP request that reached a configured answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpCall {
    pub method: String,
    pub url: String,
    pub headers: crate::http::Headers,
    pub body: Option<Vec<u8>>,
}

/// A service started with `spawn_service` and not stopped yet.
#[derive(Debug, Clone)]
pub struct Service {
    pub pid: u32,
    pub request: ExecRequest,
}

type ExecHandler = Rc<dyn Fn(&ExecRequest) -> Result<ExecOutput, Failure>>;
type HttpHandler = Rc<dyn Fn(&HttpCall) -> Result<Response, Failure>>;

#[derive(Clone)]
struct Object {
    data: Vec<u8>,
    last_modified: i64,
}

#[derive(Clone, Default)]
struct Store {
    objects: BTreeMap<String, Object>,
}

/// An in-memory host for native plugin tests. Configure it with the builder methods (each grants what it
/// names), run the plugin with [`MockHost::invoke`], then inspect state, stores and what was captured.
pub struct MockHost {
    run_id: String,
    step_id: String,
    /// What `state::fencing_token` answers: 1, as for the runner that started the run.
    fencing_token: u64,
    mode: Mode,
    attempt: u32,
    /// The phase of the call in progress.
    phase: Phase,
    /// Seconds since the epoch stamped on the next write; advances by one per write.
    clock: i64,
    /// What the builder granted, in the shape of a step's `grants:`; checked by the runner's own checks.
    grants: Grants,
    stores: BTreeMap<String, Store>,
    state: BTreeMap<String, String>,
    secrets: BTreeMap<String, Option<String>>,
    programs: BTreeMap<String, ExecHandler>,
    urls: BTreeMap<String, HttpHandler>,
    tcp: BTreeMap<(String, u16), Result<u64, Failure>>,
    next_pid: u32,
    services: BTreeMap<u32, ExecRequest>,
    logs: Vec<(Level, String)>,
    progress: Vec<Progress>,
    exec_calls: Vec<ExecRequest>,
    http_calls: Vec<HttpCall>,
    denials: Vec<Denial>,
}

impl Default for MockHost {
    fn default() -> MockHost {
        MockHost::new()
    }
}

impl fmt::Debug for MockHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MockHost")
            .field("step_id", &self.step_id)
            .field("stores", &self.stores.keys().collect::<Vec<_>>())
            .field("state", &self.state)
            .field("secrets", &self.secrets.keys().collect::<Vec<_>>())
            .field("programs", &self.programs.keys().collect::<Vec<_>>())
            .field("urls", &self.urls.keys().collect::<Vec<_>>())
            .field("denials", &self.denials)
            .finish_non_exhaustive()
    }
}

/// Builder: each method grants what it names (nothing is granted by default except state, log and progress).
impl MockHost {
    /// A host that grants nothing; run `test-run`, step `test-step`, mode drill, attempt 1.
    pub fn new() -> MockHost {
        MockHost {
            run_id: "test-run".into(),
            fencing_token: 1,
            step_id: "test-step".into(),
            mode: Mode::Drill,
            attempt: 1,
            phase: Phase::Apply,
            clock: 1_700_000_000,
            grants: Grants::default(),
            stores: BTreeMap::new(),
            state: BTreeMap::new(),
            secrets: BTreeMap::new(),
            programs: BTreeMap::new(),
            urls: BTreeMap::new(),
            tcp: BTreeMap::new(),
            next_pid: 4000,
            services: BTreeMap::new(),
            logs: Vec::new(),
            progress: Vec::new(),
            exec_calls: Vec::new(),
            http_calls: Vec::new(),
            denials: Vec::new(),
        }
    }

    /// The fencing token the plugin sees, as for a run resumed by its `token`th runner.
    pub fn fencing_token(mut self, token: u64) -> MockHost {
        self.fencing_token = token;
        self
    }

    pub fn run_id(mut self, run_id: &str) -> MockHost {
        self.run_id = run_id.into();
        self
    }

    pub fn step_id(mut self, step_id: &str) -> MockHost {
        self.step_id = step_id.into();
        self
    }

    pub fn mode(mut self, mode: Mode) -> MockHost {
        self.mode = mode;
        self
    }

    /// The attempt number the next invocations see (1 by default).
    pub fn attempt(mut self, attempt: u32) -> MockHost {
        self.attempt = attempt;
        self
    }

    /// Grants an (empty) store.
    pub fn store(self, name: &str, access: Access) -> MockHost {
        self.store_grant(name, access, None)
    }

    /// Grants a store for keys under `prefix` only.
    pub fn store_under(self, name: &str, access: Access, prefix: &str) -> MockHost {
        self.store_grant(name, access, Some(prefix.into()))
    }

    fn store_grant(mut self, name: &str, access: Access, prefix: Option<String>) -> MockHost {
        self.stores.entry(name.into()).or_default();
        self.grants
            .stores
            .insert(name.into(), StoreGrant { access, prefix });
        self
    }

    fn grant<T: PartialEq>(list: &mut Vec<T>, entry: T) {
        if !list.contains(&entry) {
            list.push(entry);
        }
    }

    /// Makes the exec grant of `program` (given with [`MockHost::exec`] or a sibling) run it as `user`, like the
    /// grant entry `{ program, user }`.
    pub fn run_as(mut self, program: &str, user: &str) -> MockHost {
        use respawn_sandbox::exec::{ExecGrant, ProgramAs};
        self.grants.exec.retain(|e| e.program() != program);
        self.grants.exec.push(ExecGrant::As(ProgramAs {
            program: program.into(),
            user: Some(user.into()),
            ..ProgramAs::default()
        }));
        self
    }

    /// Puts an object into a store granted with [`MockHost::store`] (panics if it was not).
    pub fn with_object(mut self, store: &str, key: &str, data: impl Into<Vec<u8>>) -> MockHost {
        self.put_object(store, key, data);
        self
    }

    /// Seeds the step's state, as if an earlier attempt had recorded it.
    pub fn state(mut self, key: &str, value: &str) -> MockHost {
        self.state.insert(key.into(), value.into());
        self
    }

    /// Grants a secret with its value.
    pub fn secret(mut self, name: &str, value: &str) -> MockHost {
        Self::grant(&mut self.grants.secrets, name.into());
        self.secrets.insert(name.into(), Some(value.into()));
        self
    }

    /// Grants a secret that has no value in the run: reading it fails with `not-found`.
    pub fn secret_unset(mut self, name: &str) -> MockHost {
        Self::grant(&mut self.grants.secrets, name.into());
        self.secrets.insert(name.into(), None);
        self
    }

    /// Grants `program`; every run of it returns `output`.
    pub fn exec(self, program: &str, output: ExecOutput) -> MockHost {
        self.exec_with(program, move |_| Ok(output.clone()))
    }

    /// Grants `program`; every run of it fails with `failure` (e.g. a timeout is `unavailable`).
    pub fn exec_failure(self, program: &str, failure: Failure) -> MockHost {
        self.exec_with(program, move |_| Err(failure.clone()))
    }

    /// Grants `program`; runs are answered by `answer`, which sees the request (args, env, cwd).
    pub fn exec_with(
        mut self,
        program: &str,
        answer: impl Fn(&ExecRequest) -> Result<ExecOutput, Failure> + 'static,
    ) -> MockHost {
        Self::grant(&mut self.grants.exec, program.into());
        self.programs.insert(program.into(), Rc::new(answer));
        self
    }

    /// Grants `url`'s origin (as the grant `scheme://host:port`) and answers requests to `url` (exact, e.g.
    /// `https://api.example.com/health`, any method) with `status` and `body`. Other URLs of a granted origin get
    /// `unavailable`, as from a server that does not answer them.
    pub fn http(self, url: &str, status: u16, body: impl Into<Vec<u8>>) -> MockHost {
        let response = Response::new(status, body);
        self.http_with(url, move |_| Ok(response.clone()))
    }

    /// Grants `url`; requests fail with `failure` (e.g. [`Failure::unavailable`] for a connection refused).
    pub fn http_failure(self, url: &str, failure: Failure) -> MockHost {
        self.http_with(url, move |_| Err(failure.clone()))
    }

    /// Grants `url`; requests are answered by `answer`, which sees the method and body.
    pub fn http_with(
        mut self,
        url: &str,
        answer: impl Fn(&HttpCall) -> Result<Response, Failure> + 'static,
    ) -> MockHost {
        if let Some((scheme, host, port, _)) = split_url(url) {
            Self::grant(&mut self.grants.http, format!("{scheme}://{host}:{port}"));
        }
        self.urls.insert(url.into(), Rc::new(answer));
        self
    }

    /// Grants `tcp://host:port`; probes report a connect time of `micros`.
    pub fn tcp(mut self, host: &str, port: u16, micros: u64) -> MockHost {
        Self::grant(&mut self.grants.http, format!("tcp://{host}:{port}"));
        self.tcp.insert((host.into(), port), Ok(micros));
        self
    }

    /// Grants `tcp://host:port`; probes fail with `failure` (the runner says `unavailable` for refused or slow).
    pub fn tcp_failure(mut self, host: &str, port: u16, failure: Failure) -> MockHost {
        Self::grant(&mut self.grants.http, format!("tcp://{host}:{port}"));
        self.tcp.insert((host.into(), port), Err(failure));
        self
    }
}

/// Running a plugin.
impl MockHost {
    /// Calls `P::invoke` for `operation` in `phase` with `params` as the runner would, with this mock answering
    /// the plugin's host calls. Returns the outputs, or the plugin's failure. Panics, like the runner refuses,
    /// when `P::describe` does not list `operation` or the outputs are not a JSON object.
    ///
    /// [`MockHost::denials`] holds the denials of this call only (the runner reports a failed step that was
    /// denied something as denied, whatever the plugin returned); everything else accumulates across calls.
    pub fn invoke<P: Plugin>(
        &mut self,
        operation: &str,
        phase: Phase,
        params: Value,
    ) -> Result<Value, Failure> {
        let out = self.invoke_raw::<P>(operation, phase, &params.to_string())?;
        let name = P::describe().name;
        let value: Value = serde_json::from_str(&out).unwrap_or_else(|e| {
            panic!("plugin `{name}` `{operation}`: outputs are not JSON ({e}): {out}")
        });
        assert!(
            value.is_object(),
            "plugin `{name}` `{operation}`: outputs must be a JSON object, got {value}"
        );
        Ok(value)
    }

    /// Like [`MockHost::invoke`] with params as raw text (to test how a plugin takes malformed JSON) and the
    /// outputs unchecked.
    pub fn invoke_raw<P: Plugin>(
        &mut self,
        operation: &str,
        phase: Phase,
        params: &str,
    ) -> Result<String, Failure> {
        let info = P::describe();
        assert!(
            info.operations.iter().any(|o| o.name == operation),
            "plugin `{}` has no operation `{operation}` (describe lists {:?})",
            info.name,
            info.operations.iter().map(|o| &o.name).collect::<Vec<_>>()
        );
        self.denials.clear();
        let ctx = self.context(operation, phase);
        self.enter(phase, || P::invoke(ctx, params))
    }

    /// The context [`MockHost::invoke`] passes to the plugin.
    pub fn context(&self, operation: &str, phase: Phase) -> Context {
        Context {
            run_id: self.run_id.clone(),
            step_id: self.step_id.clone(),
            operation: operation.into(),
            phase,
            attempt: self.attempt,
            mode: self.mode,
        }
    }

    /// Runs `f` with this mock answering host calls made on this thread, as in `phase`: for testing a plugin's
    /// helpers on their own. Calls may nest (an inner mock answers until it returns).
    pub fn enter<T>(&mut self, phase: Phase, f: impl FnOnce() -> T) -> T {
        self.phase = phase;
        let installed = Installed::new(self);
        let result = f();
        drop(installed);
        result
    }
}

/// Inspection and changes between calls.
impl MockHost {
    /// A value of the step's state.
    pub fn state_get(&self, key: &str) -> Option<&str> {
        self.state.get(key).map(String::as_str)
    }

    /// The step's whole state.
    pub fn state_map(&self) -> &BTreeMap<String, String> {
        &self.state
    }

    /// Changes the step's state between calls (as a resume from an edited journal would).
    pub fn set_state(&mut self, key: &str, value: Option<&str>) {
        match value {
            Some(v) => self.state.insert(key.into(), v.into()),
            None => self.state.remove(key),
        };
    }

    /// The bytes of an object, if the store has it.
    pub fn object(&self, store: &str, key: &str) -> Option<&[u8]> {
        let store = self.stores.get(store)?;
        store.objects.get(key).map(|o| o.data.as_slice())
    }

    /// The keys of a store, sorted.
    pub fn object_keys(&self, store: &str) -> Vec<&str> {
        self.stores
            .get(store)
            .map(|s| s.objects.keys().map(String::as_str).collect())
            .unwrap_or_default()
    }

    /// Puts an object into a granted store between calls (panics if the store was not granted).
    pub fn put_object(&mut self, store: &str, key: &str, data: impl Into<Vec<u8>>) {
        let now = self.tick();
        let Some(s) = self.stores.get_mut(store) else {
            panic!("MockHost: grant store `{store}` with .store(..) before putting objects in it");
        };
        s.objects.insert(
            key.into(),
            Object {
                data: data.into(),
                last_modified: now,
            },
        );
    }

    /// Removes an object between calls (as if someone deleted it behind the plugin's back).
    pub fn remove_object(&mut self, store: &str, key: &str) {
        if let Some(s) = self.stores.get_mut(store) {
            s.objects.remove(key);
        }
    }

    /// Everything logged, in order.
    pub fn logs(&self) -> &[(Level, String)] {
        &self.logs
    }

    /// The messages logged, in order, whatever their level.
    pub fn log_messages(&self) -> Vec<&str> {
        self.logs.iter().map(|(_, m)| m.as_str()).collect()
    }

    /// Progress reports, in order.
    pub fn progress(&self) -> &[Progress] {
        &self.progress
    }

    /// Programs run (granted requests only), in order.
    pub fn exec_calls(&self) -> &[ExecRequest] {
        &self.exec_calls
    }

    /// Services started and not stopped.
    pub fn services(&self) -> Vec<Service> {
        self.services
            .iter()
            .map(|(pid, request)| Service {
                pid: *pid,
                request: request.clone(),
            })
            .collect()
    }

    /// HTTP requests that reached a granted URL, in order.
    pub fn http_calls(&self) -> &[HttpCall] {
        &self.http_calls
    }

    /// What the last invocation was denied, in order.
    pub fn denials(&self) -> &[Denial] {
        &self.denials
    }

    /// The first denial of the last invocation: what the runner would report the step as denied.
    pub fn denial(&self) -> Option<&Denial> {
        self.denials.first()
    }

    /// Forgets captured logs, progress, exec and HTTP calls and denials (not state, stores or grants).
    pub fn clear_captured(&mut self) {
        self.logs.clear();
        self.progress.clear();
        self.exec_calls.clear();
        self.http_calls.clear();
        self.denials.clear();
    }
}

/// An `ExecOutput` with `status` and UTF-8 stdout and stderr, for [`MockHost::exec`].
pub fn output(status: i32, stdout: &str, stderr: &str) -> ExecOutput {
    ExecOutput {
        status,
        stdout: stdout.as_bytes().to_vec(),
        stderr: stderr.as_bytes().to_vec(),
        truncated: false,
    }
}
