//! The one wasmtime `Engine` of a process: pooling allocator, epoch interruption on a 10 ms tick.

use std::time::Duration;

use respawn_sandbox::limits::{
    EPOCH_TICK, MAX_CONCURRENT_INSTANCES, MAX_STEP_MEMORY, MAX_WASM_STACK,
};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

/// Bytes of a linear memory reset in place rather than returned to the kernel: what a small plugin touches.
const KEEP_RESIDENT: usize = 1 << 20;

pub fn new_engine() -> wasmtime::Result<Engine> {
    let mut pool = PoolingAllocationConfig::new();
    let n = MAX_CONCURRENT_INSTANCES as u32;
    pool.total_component_instances(n)
        // A Rust wasip2 component holds several core instances (the program plus the adapter shims).
        .total_core_instances(n * 8)
        .total_memories(n * 2)
        .total_tables(n * 4)
        .total_stacks(n)
        .max_memory_size(MAX_STEP_MEMORY as usize)
        .max_memories_per_module(1)
        .max_tables_per_module(1)
        .max_core_instances_per_component(16)
        .max_component_instance_size(1 << 20)
        .max_core_instance_size(1 << 20)
        // A step is a fresh instance, so a 10,000-step run frees 10,000 of them. Resetting a slot with `madvise`
        // costs a TLB shootdown on every core and the next instance refaults every page it touches (a third of
        // a no-op drill's time went there); resetting the pages actually touched with `memset` keeps them warm.
        // Only slots of instances that ran at once stay resident (no unused warm slots), so RSS is bounded by
        // the concurrency the run reached, not by the pool's size.
        .linear_memory_keep_resident(KEEP_RESIDENT)
        .table_keep_resident(KEEP_RESIDENT / 16)
        .pagemap_scan(wasmtime::Enabled::Auto)
        .max_unused_warm_slots(0);
    let mut config = Config::new();
    config
        .allocation_strategy(InstanceAllocationStrategy::Pooling(pool))
        .epoch_interruption(true)
        .max_wasm_stack(MAX_WASM_STACK as usize)
        .async_stack_size(MAX_WASM_STACK as usize * 2)
        .parallel_compilation(true);
    let engine = Engine::new(&config)?;
    start_ticker(&engine);
    Ok(engine)
}

/// Advances the epoch every tick for as long as the engine lives. Holds only a weak reference, so the thread
/// ends when the last engine clone is dropped.
fn start_ticker(engine: &Engine) {
    let weak = engine.weak();
    std::thread::Builder::new()
        .name("respawn-epoch".into())
        .spawn(move || {
            while let Some(engine) = weak.upgrade() {
                engine.increment_epoch();
                drop(engine);
                std::thread::sleep(EPOCH_TICK);
            }
        })
        .expect("spawn epoch ticker");
}

/// Epoch ticks for a deadline, at least one.
pub fn ticks(deadline: Duration) -> u64 {
    (deadline.as_millis() / EPOCH_TICK.as_millis()).max(1) as u64 + 1
}
