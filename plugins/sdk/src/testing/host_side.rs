//! The host side of the mock: what each import does, with grants enforced like the runner's capabilities.

use super::*;

impl MockHost {
    pub(super) fn tick(&mut self) -> i64 {
        self.clock += 1;
        self.clock
    }

    pub(super) fn read_only(&self) -> bool {
        self.phase == Phase::Plan
    }

    /// Records a denial and returns the failure the plugin sees.
    pub(super) fn deny(&mut self, denial: Denial) -> Failure {
        let failure = Failure::new(FailureKind::Denied, denial.to_string());
        self.denials.push(denial);
        failure
    }

    pub(super) fn open(
        &mut self,
        store: &str,
        key: &str,
        need: Need,
    ) -> Result<&mut Store, Failure> {
        let read_only = self.read_only();
        if let Err(denial) =
            respawn_sandbox::stores::check(&self.grants.stores, store, key, need, read_only)
        {
            return Err(self.deny(denial));
        }
        if key.starts_with('/') {
            return Err(Failure::invalid_input(format!(
                "invalid key `{key}`: keys are relative"
            )));
        }
        Ok(self.stores.entry(store.into()).or_default())
    }

    pub(super) fn store_get(&mut self, store: &str, key: &str) -> Result<Vec<u8>, Failure> {
        let s = self.open(store, key, Need::Read)?;
        let object = s
            .objects
            .get(key)
            .ok_or_else(|| Failure::not_found(format!("{store}:{key}: not found")))?;
        if object.data.len() as u64 > MAX_GET_BYTES {
            return Err(Failure::invalid_input(format!(
                "{store}:{key} is {} bytes; stores.get returns at most {MAX_GET_BYTES}, use stores.copy",
                object.data.len()
            )));
        }
        Ok(object.data.clone())
    }

    pub(super) fn store_get_range(
        &mut self,
        store: &str,
        key: &str,
        offset: u64,
        length: u64,
    ) -> Result<Vec<u8>, Failure> {
        let s = self.open(store, key, Need::Read)?;
        respawn_sandbox::stores::check_range_length(store, key, length)
            .map_err(Failure::invalid_input)?;
        let object = s
            .objects
            .get(key)
            .ok_or_else(|| Failure::not_found(format!("{store}:{key}: not found")))?;
        let range = respawn_sandbox::stores::clamp_range(offset, length, object.data.len() as u64);
        Ok(object.data[range.start as usize..range.end as usize].to_vec())
    }

    pub(super) fn store_put(&mut self, store: &str, key: &str, data: &[u8]) -> Result<(), Failure> {
        self.open(store, key, Need::Write)?;
        self.put_object(store, key, data);
        Ok(())
    }

    pub(super) fn store_head(
        &mut self,
        store: &str,
        key: &str,
    ) -> Result<Option<ObjectMeta>, Failure> {
        let s = self.open(store, key, Need::Read)?;
        Ok(s.objects.get(key).map(|o| meta(key, o)))
    }

    pub(super) fn store_list(
        &mut self,
        store: &str,
        prefix: &str,
    ) -> Result<Vec<ObjectMeta>, Failure> {
        let s = self.open(store, prefix, Need::Read)?;
        // Like object_store: a prefix names whole path segments (`a/b` lists `a/b/c`, not `a/bc`).
        let dir = prefix.trim_end_matches('/');
        Ok(s.objects
            .iter()
            .filter(|(k, _)| {
                dir.is_empty() || k.strip_prefix(dir).is_some_and(|r| r.starts_with('/'))
            })
            .map(|(k, o)| meta(k, o))
            .collect())
    }

    pub(super) fn store_delete(&mut self, store: &str, key: &str) -> Result<(), Failure> {
        let s = self.open(store, key, Need::Write)?;
        s.objects.remove(key);
        Ok(())
    }

    pub(super) fn store_copy(
        &mut self,
        from: (&str, &str),
        to: (&str, &str),
        expected_sha256: Option<&str>,
    ) -> Result<CopyResult, Failure> {
        let data = self
            .open(from.0, from.1, Need::Read)?
            .objects
            .get(from.1)
            .map(|o| o.data.clone());
        self.open(to.0, to.1, Need::Write)?;
        let data =
            data.ok_or_else(|| Failure::not_found(format!("{}:{}: not found", from.0, from.1)))?;
        let sha256 = sha256_hex(&data);
        if let Some(expected) = expected_sha256
            && !expected.eq_ignore_ascii_case(&sha256)
        {
            return Err(Failure::verification_failed(format!(
                "digest mismatch for {}: expected sha256:{expected}, got sha256:{sha256}",
                from.1
            )));
        }
        let bytes = data.len() as u64;
        self.put_object(to.0, to.1, data);
        Ok(CopyResult { bytes, sha256 })
    }

    pub(super) fn state_set(&mut self, key: &str, value: &str) {
        if self.read_only() {
            return;
        }
        if let Err(full) = respawn_sandbox::state::check_set(&self.state, key, value) {
            panic!("{full}: the runner traps the plugin");
        }
        self.state.insert(key.into(), value.into());
    }

    pub(super) fn state_delete(&mut self, key: &str) {
        if !self.read_only() {
            self.state.remove(key);
        }
    }

    pub(super) fn read_secret(&mut self, name: &str) -> Result<String, Failure> {
        if let Err(denial) = respawn_sandbox::secrets::check(&self.grants.secrets, name) {
            return Err(self.deny(denial));
        }
        match self.secrets.get(name) {
            Some(Some(value)) => Ok(value.clone()),
            _ => Err(Failure::not_found(format!(
                "secret `{name}` has no value in this run"
            ))),
        }
    }

    /// The answer for a program the plugin may run now, or the denial.
    pub(super) fn program(&mut self, request: &ExecRequest) -> Result<ExecHandler, Failure> {
        let read_only = self.read_only();
        let keys = request.env.iter().map(|(k, _)| k.as_str());
        let checked = exec_policy::check(
            &self.grants.exec,
            &request.program,
            &request.args,
            keys,
            read_only,
        );
        if let Err(denial) = checked {
            return Err(self.deny(denial));
        }
        Ok(self.programs[&request.program].clone())
    }

    pub(super) fn spawn_service(&mut self, request: &ExecRequest) -> Result<u32, Failure> {
        self.program(request)?;
        let pid = self.next_pid;
        self.next_pid += 1;
        self.services.insert(pid, request.clone());
        Ok(pid)
    }

    pub(super) fn stop_service(&mut self, pid: u32) -> Result<(), Failure> {
        if let Err(denial) = exec_policy::check_stop(pid, self.read_only()) {
            return Err(self.deny(denial));
        }
        if !self.services.contains_key(&pid) {
            return Err(self.deny(exec_policy::not_started_here(pid)));
        }
        self.services.remove(&pid);
        Ok(())
    }

    pub(super) fn tcp_probe(&mut self, host: &str, port: u16) -> Result<u64, Failure> {
        if let Err(denial) = http_policy::check_tcp(&self.grants.http, host, port) {
            return Err(self.deny(denial));
        }
        self.tcp[&(host.to_string(), port)].clone()
    }

    /// The answer for a request the plugin may send now, or the failure `wasi:http` gives a denied one.
    pub(super) fn url(&mut self, method: &str, url: &str) -> Result<HttpHandler, Failure> {
        let Some((scheme, host, port, path)) = split_url(url) else {
            return Err(Failure::invalid_input(format!("bad url `{url}`")));
        };
        let read_only = self.read_only();
        let checked = http_policy::check_request(
            &self.grants.http,
            method,
            (&scheme, &host, port),
            &path,
            read_only,
        );
        if let Err(denial) = checked {
            self.deny(denial);
            // What the plugin sees through wasi:http (`HttpRequestDenied`).
            return Err(Failure::new(
                FailureKind::Denied,
                format!("http: {url} denied"),
            ));
        }
        self.urls.get(url).cloned().ok_or_else(|| {
            Failure::unavailable(format!(
                "{method} {url}: the mock host has no answer for this URL"
            ))
        })
    }
}

/// `scheme://host[:port]/path` as (scheme, host, port, path), the port defaulted by scheme as the runner does.
pub(super) fn split_url(url: &str) -> Option<(String, String, u16, String)> {
    let (scheme, rest) = url.split_once("://")?;
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(end);
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) if !p.contains(']') => (h, Some(p.parse::<u16>().ok()?)),
        _ => (authority, None),
    };
    let port = match (port, scheme) {
        (Some(p), _) => p,
        (None, "https") => 443,
        (None, "http") => 80,
        (None, _) => return None,
    };
    let path = match path.split(['?', '#']).next() {
        Some("") | None => "/",
        Some(p) => p,
    };
    Some((scheme.to_string(), host.to_string(), port, path.to_string()))
}

pub(super) fn meta(key: &str, o: &Object) -> ObjectMeta {
    ObjectMeta {
        key: key.into(),
        size: o.data.len() as u64,
        last_modified: o.last_modified,
    }
}
