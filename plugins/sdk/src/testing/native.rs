//! Installing the mock on the current thread, and the native side of every `host` import.

use super::*;

thread_local! {
    static CURRENT: RefCell<Option<MockHost>> = const { RefCell::new(None) };
}

/// Moves a mock into the thread-local slot and back when dropped (also when the plugin panics).
pub(super) struct Installed<'a> {
    home: &'a mut MockHost,
    outer: Option<MockHost>,
}

impl<'a> Installed<'a> {
    pub(super) fn new(home: &'a mut MockHost) -> Installed<'a> {
        let mock = std::mem::take(home);
        let outer = CURRENT.with(|c| c.replace(Some(mock)));
        Installed { home, outer }
    }
}

impl Drop for Installed<'_> {
    fn drop(&mut self) {
        let mock = CURRENT.with(|c| c.replace(self.outer.take()));
        *self.home = mock.expect("the installed MockHost is still in place");
    }
}

fn with_mock<T>(call: &str, f: impl FnOnce(&mut MockHost) -> T) -> T {
    CURRENT.with(|c| {
        let mut slot = c.try_borrow_mut().unwrap_or_else(|_| {
            panic!("host call `{call}` while the MockHost is busy with another call")
        });
        let mock = slot.as_mut().unwrap_or_else(|| {
            panic!(
                "host call `{call}` outside MockHost::invoke: a native build of a plugin has no host; \
                 run it through respawn_plugin_sdk::testing::MockHost"
            )
        });
        f(mock)
    })
}

/// The native side of every `host` import, with the signatures of the generated wasm imports.
#[doc(hidden)]
pub mod imports {
    use super::{CopyResult, ExecOutput, ExecRequest, HttpCall, Level, ObjectMeta, Progress};
    use super::{Response, with_mock};
    use crate::Failure;

    pub fn log(level: Level, message: &str) {
        with_mock("log.log", |m| m.logs.push((level, message.into())))
    }

    pub fn progress(done: u64, total: Option<u64>, message: &str) {
        with_mock("log.progress", |m| {
            m.progress.push(Progress {
                done,
                total,
                message: message.into(),
            })
        })
    }

    pub fn store_get(store: &str, key: &str) -> Result<Vec<u8>, Failure> {
        with_mock("stores.get", |m| m.store_get(store, key))
    }

    pub fn store_get_range(
        store: &str,
        key: &str,
        offset: u64,
        length: u64,
    ) -> Result<Vec<u8>, Failure> {
        with_mock("stores.get-range", |m| {
            m.store_get_range(store, key, offset, length)
        })
    }

    pub fn store_put(store: &str, key: &str, data: &[u8]) -> Result<(), Failure> {
        with_mock("stores.put", |m| m.store_put(store, key, data))
    }

    pub fn store_head(store: &str, key: &str) -> Result<Option<ObjectMeta>, Failure> {
        with_mock("stores.head", |m| m.store_head(store, key))
    }

    pub fn store_list(store: &str, prefix: &str) -> Result<Vec<ObjectMeta>, Failure> {
        with_mock("stores.list", |m| m.store_list(store, prefix))
    }

    pub fn store_delete(store: &str, key: &str) -> Result<(), Failure> {
        with_mock("stores.delete", |m| m.store_delete(store, key))
    }

    pub fn store_copy(
        from_store: &str,
        from_key: &str,
        to_store: &str,
        to_key: &str,
        expected_sha256: Option<&str>,
    ) -> Result<CopyResult, Failure> {
        with_mock("stores.copy", |m| {
            m.store_copy((from_store, from_key), (to_store, to_key), expected_sha256)
        })
    }

    pub fn state_get(key: &str) -> Option<String> {
        with_mock("state.get", |m| m.state.get(key).cloned())
    }

    pub fn state_set(key: &str, value: &str) {
        with_mock("state.set", |m| m.state_set(key, value))
    }

    pub fn state_delete(key: &str) {
        with_mock("state.delete", |m| m.state_delete(key))
    }

    pub fn fencing_token() -> u64 {
        with_mock("state.fencing-token", |m| m.fencing_token)
    }

    pub fn state_list() -> Vec<(String, String)> {
        with_mock("state.list", |m| {
            m.state
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        })
    }

    pub fn secret(name: &str) -> Result<String, Failure> {
        with_mock("secrets.get", |m| m.read_secret(name))
    }

    pub fn exec(request: &ExecRequest) -> Result<ExecOutput, Failure> {
        let answer = with_mock("exec.run", |m| m.program(request))?;
        // Outside the borrow: the answer may itself make host calls.
        let result = answer(request);
        with_mock("exec.run", |m| m.exec_calls.push(request.clone()));
        result
    }

    pub fn spawn_service(request: &ExecRequest) -> Result<u32, Failure> {
        with_mock("exec.spawn-service", |m| m.spawn_service(request))
    }

    pub fn stop_service(pid: u32) -> Result<(), Failure> {
        with_mock("exec.stop-service", |m| m.stop_service(pid))
    }

    pub fn tcp_probe(host: &str, port: u16, _timeout_ms: u32) -> Result<u64, Failure> {
        with_mock("net.tcp-probe", |m| m.tcp_probe(host, port))
    }

    /// Images are not modelled: a plugin test that restores one gets `internal`, saying so.
    pub fn image_unpack(
        store: &str,
        prefix: &str,
        _tag: &str,
        _dir: &str,
    ) -> Result<crate::bindings::respawn::plugin::images::UnpackResult, Failure> {
        with_mock("images.unpack", |_| {
            Err(Failure::internal(format!(
                "MockHost does not model images ({store}:{prefix})"
            )))
        })
    }

    /// `images.unpack-as`: the user check the runner makes, then what [`image_unpack`] says.
    pub fn image_unpack_as(
        store: &str,
        prefix: &str,
        tag: &str,
        dir: &str,
        user: &str,
    ) -> Result<crate::bindings::respawn::plugin::images::UnpackResult, Failure> {
        with_mock("images.unpack-as", |m| {
            let read_only = m.read_only();
            match respawn_sandbox::exec::check_user(&m.grants.exec, user, read_only) {
                Ok(()) => Ok(()),
                Err(denial) => Err(m.deny(denial)),
            }
        })?;
        image_unpack(store, prefix, tag, dir)
    }

    pub fn image_compare(
        store: &str,
        prefix: &str,
        _tag: &str,
        _dir: &str,
    ) -> Result<crate::bindings::respawn::plugin::images::CompareResult, Failure> {
        with_mock("images.compare", |_| {
            Err(Failure::internal(format!(
                "MockHost does not model images ({store}:{prefix})"
            )))
        })
    }

    /// `wasi:http` outgoing-handler, for [`crate::http::Client::send`]: one exchange, no redirects or retries.
    pub fn http_send(
        method: &str,
        url: &str,
        headers: &crate::http::Headers,
        body: Option<Vec<u8>>,
    ) -> Result<Response, Failure> {
        let answer = with_mock("wasi:http", |m| m.url(method, url))?;
        let call = HttpCall {
            method: method.into(),
            url: url.into(),
            headers: headers.clone(),
            body,
        };
        let result = answer(&call);
        with_mock("wasi:http", |m| m.http_calls.push(call));
        result
    }
}

pub(super) fn sha256_hex(data: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::sha256_hex;

    #[test]
    fn sha256_matches_known_digests() {
        assert_eq!(
            sha256_hex(b""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        // Padding boundaries: 55 bytes fit one block with the length, 56 and 64 need a second.
        for (n, digest) in [
            (
                55,
                "9f4390f8d30c2dd92ec9f095b65e2b9ae9b0a925a5258e241c9f1e910f734318",
            ),
            (
                56,
                "b35439a4ac6f0948b6d6f9e3c6af0f5f590ce20f1bde7090ef7970686ec6738a",
            ),
            (
                64,
                "ffe054fe7ae0cb6dc65c3af9b61d5209f439851db43d0ba5997337df154668eb",
            ),
            (
                1_000,
                "41edece42d63e8d9bf515a9ba6932e1c20cbc9f5a5d134645adb5db1b9737ea3",
            ),
        ] {
            assert_eq!(sha256_hex(&vec![b'a'; n]), digest, "{n} bytes");
        }
    }
}
