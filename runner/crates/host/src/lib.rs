//! The WebAssembly plugin host: one wasmtime engine, a compiled `InstancePre` per plugin per run, and a fresh
//! `Store` per step attempt holding only the capabilities the step was granted.
//!
//! Implements [`respawn_engine::StepExecutor`].

mod bindings;
pub mod cache;
mod cache_trust;
pub mod caps;
pub mod context;
pub mod limits;
pub mod params_check;
pub mod sources;
pub mod step;
pub mod wasm_engine;
pub mod workflow_plugins;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Instant;

use serde::Serialize;
use wasmtime::component::{Linker, ResourceTable};
use wasmtime::{Engine, Store, Trap};
use wasmtime_wasi::WasiCtxBuilder;
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi_http::WasiHttpCtx;

use self::bindings::ProviderPre;
use self::bindings::abi::types::{self, FailureKind};
use self::cache::{CacheOutcome, CompileCache};
use self::context::StepContext;
pub use self::context::{Denial, ProgressSink, RunResources};
use self::limits::{MemoryLimitExceeded, MemoryLimiter, StepLimits};
pub use self::sources::PluginBytes;
use self::step::StepState;
use self::step::{RunCaps, StepCaps};
use respawn_engine::driver::RunHost;
use respawn_engine::{Mode, Phase, StepCall, StepError, StepExecutor, StepResult};

#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error("cannot start the WebAssembly engine: {0}")]
    Engine(String),
    #[error("plugin `{alias}` ({source_url}): not a valid component: {message}")]
    Compile {
        alias: String,
        source_url: String,
        message: String,
    },
    #[error("plugin `{alias}` ({source_url}) does not fit the respawn:plugin ABI: {message}")]
    Abi {
        alias: String,
        source_url: String,
        message: String,
    },
    #[error("plugin `{alias}` ({source_url}) describes itself wrongly: {}", problems.join("; "))]
    BadDescribe {
        alias: String,
        source_url: String,
        problems: Vec<String>,
    },
    #[error("plugin `{alias}`: describe failed: {message}")]
    Describe { alias: String, message: String },
}

/// What `describe` said, checked for consistency.
#[derive(Debug, Clone, Serialize)]
pub struct PluginDescription {
    pub name: String,
    pub version: String,
    pub operations: Vec<OperationDescription>,
    pub capabilities: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct OperationDescription {
    pub name: String,
    pub description: String,
    pub params_schema: serde_json::Value,
}

/// A plugin ready to instantiate.
pub struct LoadedPlugin {
    pub alias: String,
    pub source: String,
    pub sha256: String,
    pub description: PluginDescription,
    pub compile: CacheOutcome,
    pre: ProviderPre<StepState>,
}

/// The plugin host of one run.
pub struct Host {
    engine: Engine,
    linker: Linker<StepState>,
    cache: CompileCache,
    plugins: RwLock<HashMap<String, Arc<LoadedPlugin>>>,
    run: RunResources,
    caps: Arc<RunCaps>,
}

use respawn_sandbox::limits::DESCRIBE_TIMEOUT;

impl Host {
    /// A host with the default compile cache directory.
    pub fn new(run: RunResources) -> Result<Host, HostError> {
        Host::with_cache_dir(run, cache::default_dir())
    }

    /// A host caching compiled plugins in `cache_dir` (`None`: no cache).
    pub fn with_cache_dir(
        run: RunResources,
        cache_dir: Option<PathBuf>,
    ) -> Result<Host, HostError> {
        let engine = wasm_engine::new_engine().map_err(|e| HostError::Engine(format!("{e:#}")))?;
        let mut linker: Linker<StepState> = Linker::new(&engine);
        let link =
            |r: wasmtime::Result<()>| r.map_err(|e| HostError::Engine(format!("linking: {e:#}")));
        link(wasmtime_wasi::p2::add_to_linker_async(&mut linker))?;
        link(wasmtime_wasi_http::p2::add_only_http_to_linker_async(
            &mut linker,
        ))?;
        link(step::link_all(&mut linker))?;
        let caps = Arc::new(RunCaps::configure(&run));
        let cache = CompileCache::new(&engine, cache_dir);
        Ok(Host {
            engine,
            linker,
            cache,
            plugins: RwLock::default(),
            run,
            caps,
        })
    }

    /// The services this run's steps started (resume adopts or stops a dead runner's).
    pub fn services(&self) -> &caps::services::Services {
        &self.caps.exec
    }

    /// Compiles (or loads from cache) and describes a plugin, registering it under `alias`.
    pub async fn load(
        &self,
        alias: &str,
        plugin: &PluginBytes,
    ) -> Result<Arc<LoadedPlugin>, HostError> {
        let source_url = plugin.source.clone();
        let compile_err = |message: String| HostError::Compile {
            alias: alias.into(),
            source_url: source_url.clone(),
            message,
        };
        let (component, compile) = self
            .cache
            .load(&self.engine, &plugin.bytes, &plugin.sha256, &plugin.source)
            .map_err(|e| compile_err(format!("{e:#}")))?;
        let abi = |message: String| HostError::Abi {
            alias: alias.into(),
            source_url: source_url.clone(),
            message,
        };
        let instance_pre = self
            .linker
            .instantiate_pre(&component)
            .map_err(|e| abi(format!("{e:#}")))?;
        let pre = ProviderPre::new(instance_pre).map_err(|e| abi(format!("{e:#}")))?;
        let description = self.describe(alias, &plugin.source, &pre).await?;
        let loaded = Arc::new(LoadedPlugin {
            alias: alias.into(),
            source: plugin.source.clone(),
            sha256: plugin.sha256.clone(),
            description,
            compile,
            pre,
        });
        self.plugins
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(alias.into(), loaded.clone());
        Ok(loaded)
    }

    pub fn plugin(&self, alias: &str) -> Option<Arc<LoadedPlugin>> {
        self.plugins
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(alias)
            .cloned()
    }

    async fn describe(
        &self,
        alias: &str,
        source: &str,
        pre: &ProviderPre<StepState>,
    ) -> Result<PluginDescription, HostError> {
        let fail = |message: String| HostError::Describe {
            alias: alias.into(),
            message,
        };
        let describe = StepCall {
            run_id: String::new(),
            step_id: "(describe)".into(),
            plugin: alias.into(),
            operation: String::new(),
            phase: Phase::Plan,
            mode: Mode::Plan,
            attempt: 1,
            params: serde_json::Value::Null,
            grants: Default::default(),
            limits: Default::default(),
            timeout: DESCRIBE_TIMEOUT,
            state: Default::default(),
        };
        let (mut store, _, _) = self.new_store(&describe).map_err(|e| fail(e.to_string()))?;
        let call = async {
            let provider = pre.instantiate_async(&mut store).await?;
            provider.call_describe(&mut store).await
        };
        let info = match tokio::time::timeout(DESCRIBE_TIMEOUT, call).await {
            Ok(Ok(info)) => info,
            Ok(Err(e)) => return Err(fail(format!("{e:#}"))),
            Err(_) => return Err(fail(format!("no answer within {DESCRIBE_TIMEOUT:?}"))),
        };
        check_description(alias, source, info)
    }

    /// The sandbox for one call: its WASI context, hooks, limits and a copy of the step's state.
    fn new_store(
        &self,
        call: &StepCall,
    ) -> std::io::Result<(Store<StepState>, MemoryOutputPipe, MemoryOutputPipe)> {
        let limits = StepLimits::from(&call.limits);
        let stdout = MemoryOutputPipe::new(limits.log as usize);
        let stderr = MemoryOutputPipe::new(limits.log as usize);
        let mut wasi = WasiCtxBuilder::new();
        // Deny by default: no environment, no args, no stdin, no sockets, no name lookups.
        wasi.stdout(stdout.clone())
            .stderr(stderr.clone())
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .socket_addr_check(|_, _| Box::pin(async { false }));
        let caps = StepCaps::prepare(call, &self.run, &mut wasi)?;
        let timeout = call.timeout;
        let data = StepState {
            ctx: StepContext {
                run_id: call.run_id.clone(),
                step_id: call.step_id.clone(),
                plugin: call.plugin.clone(),
                phase: call.phase,
                mode: call.mode,
                limits,
                run: self.run.clone(),
                deadline: Instant::now() + timeout,
                denial: None,
            },
            caps,
            run_caps: self.caps.clone(),
            wasi: wasi.build(),
            http: WasiHttpCtx::new(),
            table: ResourceTable::new(),
            limiter: MemoryLimiter {
                limit: limits.memory as usize,
            },
        };
        let mut store = Store::new(&self.engine, data);
        store.limiter(|s| &mut s.limiter);
        store.set_epoch_deadline(wasm_engine::ticks(timeout));
        store.epoch_deadline_trap();
        Ok((store, stdout, stderr))
    }

    async fn run_call(&self, call: &StepCall) -> StepResult {
        let plugin_name = call.plugin.clone();
        let step = call.step_id.clone();
        let host_err = |message: String| StepResult {
            outcome: Err(StepError::Host {
                step: step.clone(),
                message,
            }),
            state: call.state.clone(),
        };
        let Some(plugin) = self.plugin(&call.plugin) else {
            return host_err(format!("plugin `{}` is not loaded", call.plugin));
        };
        if !plugin
            .description
            .operations
            .iter()
            .any(|o| o.name == call.operation)
        {
            return host_err(format!(
                "plugin `{}` has no operation `{}`",
                call.plugin, call.operation
            ));
        }
        let limits = StepLimits::from(&call.limits);
        let store = self.new_store(call);
        let (mut store, stdout, stderr) = match store {
            Ok(s) => s,
            Err(e) => return host_err(format!("preparing the sandbox: {e}")),
        };
        let ctx = types::Context {
            run_id: call.run_id.clone(),
            step_id: call.step_id.clone(),
            operation: call.operation.clone(),
            phase: abi_phase(call.phase),
            attempt: call.attempt,
            mode: abi_mode(call.mode),
        };
        let params = call.params.to_string();
        let started = Instant::now();
        let invoke = async {
            let provider = plugin.pre.instantiate_async(&mut store).await?;
            provider.call_invoke(&mut store, &ctx, &params).await
        };
        // Epochs interrupt running wasm; the wall-clock timeout also covers a plugin blocked in a host call.
        let raw = tokio::time::timeout(
            call.timeout + respawn_sandbox::limits::EPOCH_TICK * 5,
            invoke,
        )
        .await;
        let data = store.data_mut();
        let denial = data.take_denial();
        let state = std::mem::take(&mut data.caps.state);
        drop(store);
        log_output(&step, &stdout, &stderr);
        let seconds = started.elapsed().as_secs_f64();
        let outcome = match raw {
            Err(_) => Err(StepError::Timeout {
                plugin: plugin_name,
                step,
                seconds,
            }),
            Ok(Err(trap)) => Err(classify_trap(&trap, &plugin_name, &step, seconds, &stderr)),
            Ok(Ok(Err(failure))) => Err(classify_failure(failure, denial, &plugin_name, &step)),
            Ok(Ok(Ok(json))) => check_outputs(&json, limits.output, &plugin_name, &step),
        };
        StepResult { outcome, state }
    }
}

impl StepExecutor for Host {
    async fn execute(&self, call: StepCall) -> StepResult {
        use tracing::Instrument;
        let span = tracing::info_span!("step", id = %call.step_id, phase = ?call.phase, attempt = call.attempt);
        self.run_call(&call).instrument(span).await
    }
}

impl RunHost for Host {
    async fn stop_services(&self) {
        self.caps.exec.stop_all().await;
    }

    fn release_services(&self) {
        self.caps.exec.release_all();
    }

    fn restored_images(&self) -> Vec<respawn_engine::recovery::RestoredImage> {
        self.caps
            .images
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

fn abi_phase(p: Phase) -> types::Phase {
    match p {
        Phase::Plan => types::Phase::Plan,
        Phase::Apply => types::Phase::Apply,
        Phase::Verify => types::Phase::Verify,
        Phase::Destroy => types::Phase::Destroy,
    }
}

fn abi_mode(m: Mode) -> types::Mode {
    match m {
        Mode::Plan => types::Mode::Plan,
        Mode::Drill => types::Mode::Drill,
        Mode::Failover => types::Mode::Failover,
    }
}

fn failure_kind(kind: FailureKind) -> &'static str {
    match kind {
        FailureKind::InvalidInput => "invalid-input",
        FailureKind::Denied => "denied",
        FailureKind::NotFound => "not-found",
        FailureKind::Conflict => "conflict",
        FailureKind::Unavailable => "unavailable",
        FailureKind::VerificationFailed => "verification-failed",
        FailureKind::Internal => "internal",
    }
}

/// A denial recorded by the host wins: the plugin may have swallowed or reworded it.
fn classify_failure(
    failure: types::Failure,
    denial: Option<Denial>,
    plugin: &str,
    step: &str,
) -> StepError {
    if let Some(d) = denial {
        return StepError::Denied {
            plugin: plugin.into(),
            step: step.into(),
            capability: d.capability,
            asked: d.asked,
        };
    }
    if failure.kind == FailureKind::Denied {
        // Denied by WASI itself (e.g. a path outside every preopen): the plugin names the capability before the
        // first `:`, and the rest is what was asked (so the capability is named once, not "files: files: …").
        let (capability, asked) = match failure.message.split_once(':') {
            Some((capability, asked)) => (capability.trim().to_string(), asked.trim().to_string()),
            None => ("unknown".to_string(), failure.message.clone()),
        };
        return StepError::Denied {
            plugin: plugin.into(),
            step: step.into(),
            capability,
            asked,
        };
    }
    StepError::Plugin {
        plugin: plugin.into(),
        step: step.into(),
        failure_kind: failure_kind(failure.kind).into(),
        message: failure.message,
        retryable: failure.retryable,
    }
}

fn classify_trap(
    err: &wasmtime::Error,
    plugin: &str,
    step: &str,
    seconds: f64,
    stderr: &MemoryOutputPipe,
) -> StepError {
    if let Some(oom) = err.downcast_ref::<MemoryLimitExceeded>() {
        return StepError::OutOfMemory {
            plugin: plugin.into(),
            step: step.into(),
            limit_bytes: oom.limit as u64,
        };
    }
    if let Some(Trap::Interrupt) = err.downcast_ref::<Trap>() {
        return StepError::Timeout {
            plugin: plugin.into(),
            step: step.into(),
            seconds,
        };
    }
    let mut message = match err.downcast_ref::<Trap>() {
        Some(Trap::StackOverflow) => "stack overflow".to_string(),
        Some(Trap::UnreachableCodeReached) => "unreachable executed (a panic or abort)".to_string(),
        Some(trap) => trap.to_string(),
        None => format!("{err:#}"),
    };
    // A Rust panic prints "thread … panicked at FILE:LINE:" and its message to stderr just before trapping.
    let captured = stderr.contents();
    let text = String::from_utf8_lossy(&captured);
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("note: run with"))
        .collect();
    if !lines.is_empty() {
        let tail = lines[lines.len().saturating_sub(2)..].join(" ");
        message.push_str(&format!(
            "; stderr: {}",
            tail.chars().take(500).collect::<String>()
        ));
    }
    StepError::Trap {
        plugin: plugin.into(),
        step: step.into(),
        message,
    }
}

fn check_outputs(
    json: &str,
    cap: u64,
    plugin: &str,
    step: &str,
) -> Result<serde_json::Value, StepError> {
    let contract = |message: String| StepError::Contract {
        plugin: plugin.into(),
        step: step.into(),
        message,
    };
    if json.len() as u64 > cap {
        return Err(contract(format!(
            "outputs are {} bytes; the limit is {cap}",
            json.len()
        )));
    }
    let value: serde_json::Value =
        serde_json::from_str(json).map_err(|e| contract(format!("outputs are not JSON: {e}")))?;
    if !value.is_object() {
        return Err(contract("outputs must be a JSON object".into()));
    }
    Ok(value)
}

fn log_output(step: &str, stdout: &MemoryOutputPipe, stderr: &MemoryOutputPipe) {
    for (stream, pipe) in [("stdout", stdout), ("stderr", stderr)] {
        let bytes = pipe.contents();
        if !bytes.is_empty() {
            tracing::debug!(target: "respawn::plugin", step, stream, "{}", String::from_utf8_lossy(&bytes));
        }
    }
}

/// Checks what `describe` returned: a name, a semver version, unique operation names and JSON schemas.
fn check_description(
    alias: &str,
    source: &str,
    info: types::PluginInfo,
) -> Result<PluginDescription, HostError> {
    let mut problems = Vec::new();
    if info.name.is_empty()
        || !info
            .name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        problems.push(format!(
            "name `{}` must be non-empty letters, digits, `-` or `_`",
            info.name
        ));
    }
    if semver::Version::parse(&info.version).is_err() {
        problems.push(format!("version `{}` is not semver", info.version));
    }
    let mut operations = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for op in info.operations {
        if op.name.is_empty() {
            problems.push("an operation has an empty name".into());
        }
        if !seen.insert(op.name.clone()) {
            problems.push(format!("operation `{}` is listed twice", op.name));
        }
        match serde_json::from_str::<serde_json::Value>(&op.params_schema) {
            Ok(schema) if schema.is_object() || schema.is_boolean() => {
                operations.push(OperationDescription {
                    name: op.name,
                    description: op.description,
                    params_schema: schema,
                })
            }
            _ => problems.push(format!(
                "operation `{}` has a params schema that is not a JSON Schema",
                op.name
            )),
        }
    }
    if problems.is_empty() {
        Ok(PluginDescription {
            name: info.name,
            version: info.version,
            operations,
            capabilities: info.capabilities,
        })
    } else {
        Err(HostError::BadDescribe {
            alias: alias.into(),
            source_url: source.into(),
            problems,
        })
    }
}
