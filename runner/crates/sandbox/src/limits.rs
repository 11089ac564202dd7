//! Every limit a step runs under, in one place, each with the reason for its value.
//!
//! The constants are what the code uses; [`LIMITS`] lists them for people. The limits section of
//! `docs/plugin-abi.md` is rendered from [`LIMITS`] by [`markdown_table`], and a test fails when the two
//! disagree, so the documented numbers are the enforced ones.

use std::fmt;
use std::time::Duration;

const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;
const TIB: u64 = 1 << 40;

/// Linear memory of a step when its `limits.memory` is unset.
pub const DEFAULT_STEP_MEMORY: u64 = 256 * MIB;
/// Largest `limits.memory` a step may ask for.
pub const MAX_STEP_MEMORY: u64 = GIB;
/// JSON outputs of a step when its `limits.output` is unset.
pub const DEFAULT_STEP_OUTPUT: u64 = MIB;
/// Log volume of an attempt, and captured stdout/stderr of each program (per stream), when `limits.log` is unset.
pub const DEFAULT_STEP_LOG: u64 = MIB;
/// Deadline of one attempt when the step sets no `timeout`.
pub const DEFAULT_STEP_TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// Longest `timeout` a step may set.
pub const MAX_STEP_TIMEOUT: Duration = Duration::from_secs(24 * 3600);
/// Longest `retry.backoff` a step may set.
pub const MAX_RETRY_BACKOFF: Duration = Duration::from_secs(3600);
/// Longest wait between two attempts: the backoff doubles up to this.
pub const MAX_RETRY_DELAY: Duration = Duration::from_secs(300);
/// How often wasmtime's epoch advances: the granularity of every deadline.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);
/// Wasm stack of a plugin.
pub const MAX_WASM_STACK: u64 = MIB;
/// Elements a plugin's table may grow to.
pub const MAX_TABLE_ELEMENTS: u64 = 100_000;
/// Steps that can run at once in one process (pooling allocator slots).
pub const MAX_CONCURRENT_INSTANCES: u64 = 64;
/// Size of a plugin component, from any source.
pub const MAX_COMPONENT_BYTES: u64 = 64 * MIB;
/// Deadline of a plugin's `describe`.
pub const DESCRIBE_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest object `stores.get` returns into guest memory.
pub const MAX_GET_BYTES: u64 = 64 * MIB;
/// Largest `length` of one `stores.get-range` call: one chunk of an object a plugin streams.
pub const MAX_GET_RANGE_BYTES: u64 = 16 * MIB;
/// Keys of a step's state.
pub const MAX_STATE_KEYS: usize = 256;
/// Bytes of one state value.
pub const MAX_STATE_VALUE_BYTES: usize = 64 * KIB as usize;
/// Connect timeout of a plugin's HTTP request, and the cap of a TCP probe's timeout.
pub const HTTP_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Time to the first byte of an HTTP response.
pub const HTTP_FIRST_BYTE_TIMEOUT: Duration = Duration::from_secs(30);
/// Time between bytes of an HTTP response.
pub const HTTP_BETWEEN_BYTES_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest HTTP response body a plugin may receive when its step's `limits.http_response` is unset.
pub const DEFAULT_STEP_HTTP_RESPONSE: u64 = 64 * MIB;
/// Largest `limits.http_response` a step may ask for.
pub const MAX_STEP_HTTP_RESPONSE: u64 = TIB;
/// Size of a workflow file.
pub const MAX_WORKFLOW_BYTES: u64 = MIB;
/// Size of one JSON document of an OCI image layout (index, manifest, config).
pub const MAX_OCI_JSON_BYTES: u64 = 4 * MIB;

/// One limit, for people: what it is, its value and why.
#[derive(Debug, Clone, Copy)]
pub struct Limit {
    pub name: &'static str,
    pub value: Value,
    pub why: &'static str,
}

/// A limit's value, printed as the docs print it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Value {
    Bytes(u64),
    Time(Duration),
    Count(u64),
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Value::Bytes(b) if b >= TIB && b % TIB == 0 => write!(f, "{} TiB", b / TIB),
            Value::Bytes(b) if b >= GIB && b % GIB == 0 => write!(f, "{} GiB", b / GIB),
            Value::Bytes(b) if b >= MIB && b % MIB == 0 => write!(f, "{} MiB", b / MIB),
            Value::Bytes(b) if b >= KIB && b % KIB == 0 => write!(f, "{} KiB", b / KIB),
            Value::Bytes(b) => write!(f, "{b} bytes"),
            Value::Time(d) if d.as_secs() >= 3600 && d.as_secs() % 3600 == 0 => {
                write!(f, "{} h", d.as_secs() / 3600)
            }
            Value::Time(d) if d.as_secs() >= 60 && d.as_secs() % 60 == 0 => {
                write!(f, "{} min", d.as_secs() / 60)
            }
            Value::Time(d) if d.subsec_millis() == 0 => write!(f, "{} s", d.as_secs()),
            Value::Time(d) => write!(f, "{} ms", d.as_millis()),
            Value::Count(n) => write!(f, "{n}"),
        }
    }
}

/// Every limit, in the order the docs list them.
pub const LIMITS: &[Limit] = &[
    Limit {
        name: "linear memory, default (`limits.memory`)",
        value: Value::Bytes(DEFAULT_STEP_MEMORY),
        why: "room for a plugin that streams; bulk data moves inside the host and never enters guest memory",
    },
    Limit {
        name: "linear memory, largest a step may ask for",
        value: Value::Bytes(MAX_STEP_MEMORY),
        why: "the pooling allocator reserves this much address space for every instance slot",
    },
    Limit {
        name: "outputs, default (`limits.output`)",
        value: Value::Bytes(DEFAULT_STEP_OUTPUT),
        why: "outputs are journaled and rendered into later steps: ids and URLs, not data",
    },
    Limit {
        name: "log volume per attempt and captured output per stream, default (`limits.log`)",
        value: Value::Bytes(DEFAULT_STEP_LOG),
        why: "enough to diagnose a failure; a chatty or hostile plugin cannot flood the runner's memory or logs",
    },
    Limit {
        name: "deadline of an attempt, default (`timeout`)",
        value: Value::Time(DEFAULT_STEP_TIMEOUT),
        why: "restores of large images are slow, yet a hung plugin must not block a run forever",
    },
    Limit {
        name: "deadline of an attempt, largest a step may set",
        value: Value::Time(MAX_STEP_TIMEOUT),
        why: "a recovery step that takes longer is stuck; deadlines past it would also overflow timer arithmetic",
    },
    Limit {
        name: "`retry.backoff`, largest a step may set",
        value: Value::Time(MAX_RETRY_BACKOFF),
        why: "a run must not sleep for days between attempts because of a typo",
    },
    Limit {
        name: "wait between attempts, at most (the backoff doubles up to it)",
        value: Value::Time(MAX_RETRY_DELAY),
        why: "keeps retrying a flaky service every few minutes instead of drifting into hours",
    },
    Limit {
        name: "epoch tick (deadline granularity)",
        value: Value::Time(EPOCH_TICK),
        why: "fine enough for a prompt timeout, coarse enough that the ticker thread costs nothing",
    },
    Limit {
        name: "wasm stack",
        value: Value::Bytes(MAX_WASM_STACK),
        why: "deep enough for real code; runaway recursion traps as a stack overflow instead of crashing the host",
    },
    Limit {
        name: "table elements",
        value: Value::Count(MAX_TABLE_ELEMENTS),
        why: "far above what a compiled plugin needs; stops table growth used as a memory bomb",
    },
    Limit {
        name: "concurrent instances per process",
        value: Value::Count(MAX_CONCURRENT_INSTANCES),
        why: "the pooling allocator's slots: 64 steps at once, each with its full memory reservation",
    },
    Limit {
        name: "component size, from any source",
        value: Value::Bytes(MAX_COMPONENT_BYTES),
        why: "a plugin is code, not data; refusing larger ones bounds what a bad source can make the runner load",
    },
    Limit {
        name: "`describe` deadline",
        value: Value::Time(DESCRIBE_TIMEOUT),
        why: "describe only returns constants; a plugin that takes longer is broken or hostile",
    },
    Limit {
        name: "`stores.get` result",
        value: Value::Bytes(MAX_GET_BYTES),
        why: "larger objects move with `stores.copy`, streaming inside the host, or in chunks with `stores.get-range`",
    },
    Limit {
        name: "`stores.get-range` result (its `length`)",
        value: Value::Bytes(MAX_GET_RANGE_BYTES),
        why: "one chunk of a stream: large enough for throughput, small enough that a multi-GiB object never sits in guest memory",
    },
    Limit {
        name: "state keys per step",
        value: Value::Count(MAX_STATE_KEYS as u64),
        why: "state records resource ids for resume and destroy, and every write is journaled",
    },
    Limit {
        name: "state value",
        value: Value::Bytes(MAX_STATE_VALUE_BYTES as u64),
        why: "ids, tokens and offsets fit; data does not belong in the journal",
    },
    Limit {
        name: "HTTP connect timeout, and TCP probe timeout cap",
        value: Value::Time(HTTP_CONNECT_TIMEOUT),
        why: "a reachable server answers within it; a plugin may ask for less, never more",
    },
    Limit {
        name: "HTTP time to first byte",
        value: Value::Time(HTTP_FIRST_BYTE_TIMEOUT),
        why: "covers slow APIs; a plugin may ask for less, never more",
    },
    Limit {
        name: "HTTP time between bytes",
        value: Value::Time(HTTP_BETWEEN_BYTES_TIMEOUT),
        why: "a stalled transfer fails instead of holding the step to its deadline",
    },
    Limit {
        name: "HTTP response body, default (`limits.http_response`)",
        value: Value::Bytes(DEFAULT_STEP_HTTP_RESPONSE),
        why: "API answers fit; a step that streams large downloads (registry blobs) asks for more",
    },
    Limit {
        name: "HTTP response body, largest a step may ask for",
        value: Value::Bytes(MAX_STEP_HTTP_RESPONSE),
        why: "the guest reads a body in chunks, so memory is not the bound; this stops a runaway or hostile server",
    },
    Limit {
        name: "workflow file",
        value: Value::Bytes(MAX_WORKFLOW_BYTES),
        why: "refused before parsing, so a huge or hostile file cannot exhaust memory",
    },
    Limit {
        name: "OCI index, manifest or config document",
        value: Value::Bytes(MAX_OCI_JSON_BYTES),
        why: "real ones are kilobytes; a larger one is refused before it is parsed",
    },
];

/// The limits as the markdown table of `docs/plugin-abi.md`.
pub fn markdown_table() -> String {
    let mut out = String::from("| limit | value | why |\n|---|---|---|\n");
    for limit in LIMITS {
        out.push_str(&format!(
            "| {} | {} | {} |\n",
            limit.name, limit.value, limit.why
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_print_in_their_natural_unit() {
        assert_eq!(Value::Bytes(256 * MIB).to_string(), "256 MiB");
        assert_eq!(Value::Bytes(GIB).to_string(), "1 GiB");
        assert_eq!(Value::Bytes(TIB).to_string(), "1 TiB");
        assert_eq!(Value::Bytes(2048 * GIB).to_string(), "2 TiB");
        assert_eq!(Value::Bytes(64 * KIB).to_string(), "64 KiB");
        assert_eq!(Value::Bytes(1000).to_string(), "1000 bytes");
        assert_eq!(Value::Time(Duration::from_secs(1800)).to_string(), "30 min");
        assert_eq!(Value::Time(Duration::from_secs(10)).to_string(), "10 s");
        assert_eq!(Value::Time(Duration::from_millis(10)).to_string(), "10 ms");
    }

    /// The limits section of the ABI docs is this table, verbatim.
    #[test]
    fn the_abi_docs_list_exactly_these_limits() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../../docs/plugin-abi.md");
        let docs = std::fs::read_to_string(path).expect("read docs/plugin-abi.md");
        let table = markdown_table();
        assert!(
            docs.contains(&table),
            "docs/plugin-abi.md must hold the limits table as the code has it; paste this under `## Limits`:\n\n{table}"
        );
    }
}
