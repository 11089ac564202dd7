//! The vocabulary a run shares with the plugin ABI: its mode (`run.mode` in expressions) and the phase of a
//! step call.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The phase of a step call (mirrors the ABI's `phase`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    Plan,
    Apply,
    Verify,
    Destroy,
}

/// The mode of a run (mirrors the ABI's `mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Plan,
    Drill,
    Failover,
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Mode::Plan => "plan",
            Mode::Drill => "drill",
            Mode::Failover => "failover",
        })
    }
}
