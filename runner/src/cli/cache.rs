//! `respawn cache ls | prune`: the compile cache of precompiled plugins (docs/plugin-abi.md, "Compile cache").

use clap::Subcommand;
use respawn::host::cache::{self, format_size};

use super::{Usage, exit};

#[derive(Debug, Subcommand)]
pub enum CacheCommand {
    /// List the compiled plugins: key (sha256-engine), size in bytes, last used (RFC 3339), plugin source,
    /// most recently used first; entries another respawn or wasmtime version compiled are marked `(other engine)`.
    Ls,
    /// Delete the least recently used entries until the cache fits its cap (RESPAWN_CACHE_MAX, default 2GiB).
    Prune {
        /// The size to prune to instead of the cap, e.g. 500MiB.
        #[arg(long, value_name = "SIZE", value_parser = cache::parse_size, conflicts_with = "all")]
        max_size: Option<u64>,
        /// Delete every entry.
        #[arg(long)]
        all: bool,
    },
}

pub fn run(command: CacheCommand) -> anyhow::Result<u8> {
    let dir = cache::default_dir().ok_or_else(|| {
        Usage("no cache directory: set RESPAWN_CACHE_DIR, XDG_CACHE_HOME or HOME".into())
    })?;
    match command {
        CacheCommand::Ls => ls(&dir),
        CacheCommand::Prune { max_size, all } => {
            let max = if all {
                0
            } else {
                max_size.unwrap_or_else(cache::max_bytes_from_env)
            };
            prune(&dir, max)
        }
    }
}

fn ls(dir: &std::path::Path) -> anyhow::Result<u8> {
    let entries = cache::list(dir)?;
    // Only an engine built like the host's has the key this respawn reads; build one to mark the others.
    let engine = respawn::host::wasm_engine::new_engine()
        .map_err(|e| anyhow::anyhow!("cannot start the WebAssembly engine: {e:#}"))?;
    let current = cache::CompileCache::new(&engine, None);
    for e in &entries {
        let last_used = humantime::format_rfc3339_seconds(e.last_used);
        let source = e.source.as_deref().unwrap_or("-");
        let other = if e.engine_key == current.engine_key() {
            ""
        } else {
            " (other engine)"
        };
        out!("{}\t{}\t{last_used}\t{source}{other}", e.key, e.size);
    }
    let total: u64 = entries.iter().map(|e| e.size).sum();
    eprintln!(
        "{} entr{}, {} of a {} cap, in {}",
        entries.len(),
        if entries.len() == 1 { "y" } else { "ies" },
        format_size(total),
        format_size(cache::max_bytes_from_env()),
        cache::entries_dir(dir).display()
    );
    Ok(exit::OK)
}

fn prune(dir: &std::path::Path, max: u64) -> anyhow::Result<u8> {
    let pruned = cache::prune(dir, max)?;
    for e in &pruned.removed {
        out!(
            "removed\t{}\t{}\t{}",
            e.key,
            e.size,
            e.source.as_deref().unwrap_or("-")
        );
    }
    let freed: u64 = pruned.removed.iter().map(|e| e.size).sum();
    eprintln!(
        "removed {} entr{} ({}); {} left ({}), within {}",
        pruned.removed.len(),
        if pruned.removed.len() == 1 {
            "y"
        } else {
            "ies"
        },
        format_size(freed),
        pruned.kept,
        format_size(pruned.kept_bytes),
        format_size(max)
    );
    Ok(exit::OK)
}
