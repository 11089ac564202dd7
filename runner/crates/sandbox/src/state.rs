//! The state capability: a small per-step key-value map, always granted, journaled on every write. It records
//! resource ids, not data, so it is bounded ([`limits::MAX_STATE_KEYS`], [`limits::MAX_STATE_VALUE_BYTES`]).
//!
//! [`limits::MAX_STATE_KEYS`]: crate::limits::MAX_STATE_KEYS
//! [`limits::MAX_STATE_VALUE_BYTES`]: crate::limits::MAX_STATE_VALUE_BYTES

use std::collections::BTreeMap;

use crate::limits::{MAX_STATE_KEYS, MAX_STATE_VALUE_BYTES};

/// A write past the state's bounds. The runner traps the plugin: one that keeps data in its state is broken, and
/// silently losing the write would be worse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateFull;

impl std::fmt::Display for StateFull {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "state limit exceeded ({MAX_STATE_KEYS} keys of at most {MAX_STATE_VALUE_BYTES} bytes)"
        )
    }
}

impl std::error::Error for StateFull {}

/// Whether `key` may be set to `value` in `state`.
pub fn check_set(
    state: &BTreeMap<String, String>,
    key: &str,
    value: &str,
) -> Result<(), StateFull> {
    if value.len() > MAX_STATE_VALUE_BYTES
        || (!state.contains_key(key) && state.len() >= MAX_STATE_KEYS)
    {
        return Err(StateFull);
    }
    Ok(())
}
