//! Host capabilities, one module each, all denied unless the step's grants allow them. This file wires the
//! generated `host` trait to them.

pub mod exec;
pub mod files;
pub mod http;
pub mod images;
pub mod log;
pub mod secrets;
pub mod services;
pub mod state;
pub mod stores;

use super::bindings::host_api::{
    self, CompareResult, CopyResult, ExecOutput, ExecRequest, Level, ObjectMeta, UnpackResult,
};
use super::bindings::types::{self, Failure};
use super::state::StepState;

type Answer<T> = wasmtime::Result<Result<T, Failure>>;

impl types::Host for StepState {}

impl host_api::Host for StepState {
    async fn log(&mut self, level: Level, message: String) -> wasmtime::Result<()> {
        log::log(self, level, &message);
        Ok(())
    }

    async fn progress(
        &mut self,
        done: u64,
        total: Option<u64>,
        message: String,
    ) -> wasmtime::Result<()> {
        log::progress(self, done, total, &message);
        Ok(())
    }

    async fn store_get(&mut self, store: String, key: String) -> Answer<Vec<u8>> {
        Ok(stores::get(self, &store, &key).await)
    }

    async fn store_put(&mut self, store: String, key: String, data: Vec<u8>) -> Answer<()> {
        Ok(stores::put(self, &store, &key, data).await)
    }

    async fn store_head(&mut self, store: String, key: String) -> Answer<Option<ObjectMeta>> {
        Ok(stores::head(self, &store, &key).await)
    }

    async fn store_list(&mut self, store: String, prefix: String) -> Answer<Vec<ObjectMeta>> {
        Ok(stores::list(self, &store, &prefix).await)
    }

    async fn store_delete(&mut self, store: String, key: String) -> Answer<()> {
        Ok(stores::delete(self, &store, &key).await)
    }

    async fn store_copy(
        &mut self,
        from_store: String,
        from_key: String,
        to_store: String,
        to_key: String,
        expected_sha256: Option<String>,
    ) -> Answer<CopyResult> {
        Ok(stores::copy(
            self,
            (&from_store, &from_key),
            (&to_store, &to_key),
            expected_sha256.as_deref(),
        )
        .await)
    }

    async fn state_get(&mut self, key: String) -> wasmtime::Result<Option<String>> {
        Ok(state::get(self, &key))
    }

    async fn state_set(&mut self, key: String, value: String) -> wasmtime::Result<()> {
        state::set(self, key.clone(), value.clone())?;
        state::journal(self, &key, Some(&value)).await
    }

    async fn state_delete(&mut self, key: String) -> wasmtime::Result<()> {
        state::delete(self, &key)?;
        state::journal(self, &key, None).await
    }

    async fn state_list(&mut self) -> wasmtime::Result<Vec<(String, String)>> {
        Ok(state::list(self))
    }

    async fn secret(&mut self, name: String) -> Answer<String> {
        Ok(secrets::get(self, &name))
    }

    async fn exec(&mut self, request: ExecRequest) -> Answer<ExecOutput> {
        Ok(exec::run(self, request).await)
    }

    async fn spawn_service(&mut self, request: ExecRequest) -> Answer<u32> {
        let program = request.program.clone();
        let pid = exec::spawn_service(self, request);
        if let (Ok(pid), Some(journal)) = (&pid, self.run.journal.clone()) {
            let started = respawn_journal::EventBody::ServiceStarted {
                step: self.step_id.clone(),
                pid: *pid,
                program,
                start_ticks: services::process_start_ticks(*pid),
            };
            if let Err(e) = journal.append(started).await {
                // No event names it, so no later runner would take it over: it must not outlive this one.
                let _ = self.run.services.stop(*pid).await;
                wasmtime::bail!("{e}");
            }
        }
        Ok(pid)
    }

    async fn stop_service(&mut self, pid: u32) -> Answer<()> {
        Ok(exec::stop_service(self, pid).await)
    }

    async fn image_unpack(
        &mut self,
        store: String,
        prefix: String,
        tag: String,
        dir: String,
    ) -> Answer<UnpackResult> {
        Ok(images::unpack(self, &store, &prefix, &tag, &dir).await)
    }

    async fn image_compare(
        &mut self,
        store: String,
        prefix: String,
        tag: String,
        dir: String,
    ) -> Answer<CompareResult> {
        Ok(images::compare(self, &store, &prefix, &tag, &dir).await)
    }

    async fn tcp_probe(&mut self, host: String, port: u16, timeout_ms: u32) -> Answer<u64> {
        Ok(http::tcp_probe(self, &host, port, timeout_ms).await)
    }
}

/// A failure of the given kind.
pub(crate) fn failure(kind: types::FailureKind, message: impl Into<String>) -> Failure {
    let retryable = matches!(kind, types::FailureKind::Unavailable);
    Failure {
        kind,
        message: message.into(),
        retryable,
    }
}
